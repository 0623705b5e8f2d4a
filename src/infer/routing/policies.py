"""Traffic policies as pure functions: which model version(s) a request for a deployment goes to.

A deployment puts a policy on a name clients call (``ModelInfer(model_name=<deployment>)``):
* A/B split: weighted variants; sticky when the request carries the deployment's key parameter (the
  same key always lands on the same variant, by a hash into [0, 1));
* fallback chain: targets tried in order after the chosen one fails (error, timeout, unloaded or
  DEGRADED), the response naming the link that answered;
* shadow: a target that receives a copy of every request; its answers are compared with the live
  ones and never returned (blue-green: switching is one SetDeployment call each way).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from infer.errors import InvalidArgument

__all__ = ["Deployment", "Target", "Variant", "plan", "unit_hash"]


@dataclass(frozen=True, slots=True)
class Target:
    model: str
    version: str = ""  # "" = the model's newest ready version

    def label(self) -> str:
        return f"{self.model}:{self.version or 'latest'}"


@dataclass(frozen=True, slots=True)
class Variant:
    target: Target
    weight: float


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    variants: tuple[Variant, ...] = ()
    sticky_key: str = ""  # request parameter naming the caller, e.g. "user_id"
    fallback: tuple[Target, ...] = ()
    link_timeout_us: int = 0  # per-attempt budget (all but the last link), so a slow link leaves time for the next
    shadow: Target | None = None  # gets a copy of each request; answers compared, never returned
    shadow_tolerance: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgument("deployment.name: required")
        if self.shadow is not None and self.shadow.model == self.name:
            raise InvalidArgument(f"deployment '{self.name}': the shadow cannot be the deployment itself")
        if not self.variants and not self.fallback:
            raise InvalidArgument(f"deployment '{self.name}': give variants, a fallback chain, or both")
        weights = [v.weight for v in self.variants]
        if any(w < 0 for w in weights) or (weights and sum(weights) <= 0):
            raise InvalidArgument(f"deployment '{self.name}': variant weights must be >= 0 with a positive sum")
        if any(t.model == self.name for t in [v.target for v in self.variants] + list(self.fallback)):
            raise InvalidArgument(f"deployment '{self.name}': a target cannot be the deployment itself")


def unit_hash(text: str) -> float:
    """A stable number in [0, 1) for a key."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def plan(dep: Deployment, key: str | None, rng: random.Random) -> list[Target]:
    """Targets to try in order: the chosen variant (if any), then the fallback chain, without repeats."""
    chosen: list[Target] = []
    if dep.variants:
        total = sum(v.weight for v in dep.variants)
        point = (unit_hash(f"{dep.name}\0{key}") if key else rng.random()) * total
        acc = 0.0
        pick = dep.variants[-1].target
        for v in dep.variants:
            acc += v.weight
            if point < acc:
                pick = v.target
                break
        chosen.append(pick)
    for t in dep.fallback:
        if t not in chosen:
            chosen.append(t)
    return chosen
