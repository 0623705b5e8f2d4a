"""Traffic policies as pure functions: which model version(s) a request for a deployment goes to.

A deployment puts a policy on a name clients call (``ModelInfer(model_name=<deployment>)``):
* A/B split: weighted variants; sticky when the request carries the deployment's key parameter (the
  same key always lands on the same variant, by a hash into [0, 1));
* fallback chain: targets tried in order after the chosen one fails (error, timeout, unloaded or
  DEGRADED), the response naming the link that answered; a rule-based model (:mod:`infer.runtimes.rules`)
  is a target like any other, and a fixed default answer can end the chain;
* canary: baseline and canary split by stages (5, 10, 25, ... percent) that advance while the canary
  stays within its error-rate and p99 bounds and roll back at once when it does not (judged by
  :mod:`infer.controlplane.canary`);
* shadow: a target that receives a copy of every request; its answers are compared with the live
  ones and never returned (blue-green: switching is one SetDeployment call each way).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from infer.core.types import DataType
from infer.errors import InvalidArgument

__all__ = ["Canary", "DefaultAnswer", "DefaultOutput", "Deployment", "Target", "Variant", "plan", "unit_hash"]


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
class Canary:
    """A staged rollout of ``canary`` beside ``baseline``; ``status``/``stage`` move as it is judged."""

    baseline: Target
    canary: Target
    stages: tuple[tuple[float, float], ...]  # (percent, duration_s)
    max_error_rate: float = 0.05
    max_p99_ms: float = 0.0
    min_requests: int = 20
    status: str = "RUNNING"  # RUNNING, PROMOTED, ROLLED_BACK
    stage: int = 0
    reason: str = "started"

    def __post_init__(self) -> None:
        percents = [p for p, _ in self.stages]
        if not percents or percents != sorted(percents) or percents[0] <= 0 or percents[-1] > 100:
            raise InvalidArgument("canary.stages: percents must rise within (0, 100]")
        if any(d <= 0 for _, d in self.stages):
            raise InvalidArgument("canary.stages: every duration_s must be positive")
        if not 0 <= self.max_error_rate <= 1 or self.max_p99_ms < 0 or self.min_requests < 1:
            raise InvalidArgument("canary: max_error_rate within 0..1, max_p99_ms >= 0, min_requests >= 1")
        if self.status not in ("RUNNING", "PROMOTED", "ROLLED_BACK") or not 0 <= self.stage < len(self.stages):
            raise InvalidArgument(f"canary: bad status {self.status!r} or stage {self.stage}")

    def variants(self) -> tuple[Variant, ...]:
        if self.status == "PROMOTED":
            return (Variant(self.canary, 1.0),)
        if self.status == "ROLLED_BACK":
            return (Variant(self.baseline, 1.0),)
        percent = self.stages[self.stage][0]
        return (Variant(self.baseline, 100.0 - percent), Variant(self.canary, percent))


@dataclass(frozen=True, slots=True)
class DefaultOutput:
    """One output of a deployment's default answer, per request row (no batch dimension)."""

    name: str
    datatype: str  # V2 name: FP32, INT64, BOOL, BYTES, ...
    shape: tuple[int, ...]
    values: tuple[float | str, ...]  # row-major; strings for BYTES

    def __post_init__(self) -> None:
        where = f"default_answer output '{self.name}'"
        if not self.name:
            raise InvalidArgument("default_answer.outputs: every output needs a name")
        try:
            dt = DataType(self.datatype)
        except ValueError:
            raise InvalidArgument(f"{where}: unknown datatype {self.datatype!r}") from None
        if any(d < 1 for d in self.shape) or math.prod(self.shape) != len(self.values):
            raise InvalidArgument(f"{where}: {len(self.values)} values do not fill shape {list(self.shape)}")
        numeric = dt is not DataType.BYTES
        if any(isinstance(v, str) == numeric for v in self.values):
            raise InvalidArgument(f"{where}: give {'numbers' if numeric else 'strings'} for {self.datatype}")

    def array(self, rows: int | None) -> npt.NDArray[np.generic]:
        """The answer for a request: ``rows`` copies along a leading batch dimension (None: as it is)."""
        dt = DataType(self.datatype)
        if dt is DataType.BYTES:
            one = np.array([str(v).encode() for v in self.values], dtype=object).reshape(self.shape)
        else:
            one = np.array(self.values, dtype=dt.numpy).reshape(self.shape)
        return one if rows is None else np.broadcast_to(one, (rows, *self.shape)).copy()


@dataclass(frozen=True, slots=True)
class DefaultAnswer:
    """The last link of a fallback chain: a fixed answer when every target failed."""

    outputs: tuple[DefaultOutput, ...]
    batched: bool = True  # repeat the outputs along the batch dimension of the request's first input

    def __post_init__(self) -> None:
        names = [o.name for o in self.outputs]
        if not names or len(set(names)) != len(names):
            raise InvalidArgument("default_answer.outputs: give at least one output, each name once")


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    variants: tuple[Variant, ...] = ()
    sticky_key: str = ""  # request parameter naming the caller, e.g. "user_id"
    fallback: tuple[Target, ...] = ()
    link_timeout_us: int = 0  # per-attempt budget (all but the last link), so a slow link leaves time for the next
    shadow: Target | None = None  # gets a copy of each request; answers compared, never returned
    shadow_tolerance: float = 0.0
    canary: Canary | None = None  # replaces variants with a staged rollout
    promote_when_p_below: float = 0.0  # A/B: promote the winner once the test's p-value is below this
    promote_min_samples: int = 100
    default_answer: DefaultAnswer | None = None  # answered when every target failed (after the fallback chain)

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgument("deployment.name: required")
        if self.shadow is not None and self.shadow.model == self.name:
            raise InvalidArgument(f"deployment '{self.name}': the shadow cannot be the deployment itself")
        if not 0 <= self.promote_when_p_below < 1 or self.promote_min_samples < 1:
            raise InvalidArgument(f"deployment '{self.name}': promote_when_p_below within [0, 1), min samples >= 1")
        if self.canary is not None and self.variants:
            raise InvalidArgument(f"deployment '{self.name}': give variants or a canary, not both")
        if not self.variants and not self.fallback and self.canary is None:
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
    variants = dep.canary.variants() if dep.canary is not None else dep.variants
    variants = tuple(v for v in variants if v.weight > 0)
    if variants:
        total = sum(v.weight for v in variants)
        point = (unit_hash(f"{dep.name}\0{key}") if key else rng.random()) * total
        acc = 0.0
        pick = variants[-1].target
        for v in variants:
            acc += v.weight
            if point < acc:
                pick = v.target
                break
        chosen.append(pick)
    for t in dep.fallback:
        if t not in chosen:
            chosen.append(t)
    return chosen
