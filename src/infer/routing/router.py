"""The deployments in force, looked up per request; changed through the control plane."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from infer.core.lru import BoundedLRU
from infer.core.types import InferRequest
from infer.errors import NotFound
from infer.observability.metrics import DeploymentFigures, LinkFigures
from infer.routing.experiment import VariantStats
from infer.routing.policies import Canary, Deployment, Target, Variant, plan

Array = npt.NDArray[np.generic]

__all__ = ["CanaryWindow", "LinkStats", "Router", "ShadowStats", "canary_percent"]

MAX_SHADOWS_IN_FLIGHT = 256
MAX_ASSIGNMENTS = 100_000  # request ids remembered for outcome reports


@dataclass(slots=True)
class ShadowStats:
    compared: int = 0
    matched: int = 0
    mismatched: int = 0
    errors: int = 0
    skipped: int = 0
    max_abs_diff: float = 0.0

    def compare(self, live: Mapping[str, Array], shadow: Mapping[str, Array], tolerance: float) -> None:
        worst = 0.0
        same = True
        for name, a in live.items():
            b = shadow.get(name)
            if b is None or a.shape != b.shape:
                same = False
                continue
            if a.dtype == object or b.dtype == object:
                same = same and bool(np.array_equal(a, b))
                continue
            diff = _max_abs_diff(a, b)
            worst = max(worst, diff)
            same = same and diff <= tolerance
        self.compared += 1
        self.max_abs_diff = max(self.max_abs_diff, worst)
        if same:
            self.matched += 1
        else:
            self.mismatched += 1


def _max_abs_diff(a: Array, b: Array) -> float:
    """Largest absolute difference, where NaN against NaN and an infinity against the same one are equal (a model
    answering NaN in the same places agrees with itself) and NaN against anything else differs without bound."""
    if not a.size:
        return 0.0
    x, y = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.where((x == y) | (np.isnan(x) & np.isnan(y)), 0.0, np.abs(x - y))
    worst = float(np.max(diff))
    return np.inf if worst != worst else worst  # NaN against a number


@dataclass(slots=True)
class CanaryWindow:
    """The canary target's outcomes in the current stage."""

    started: float
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies, 99)) * 1e3 if self.latencies else 0.0


@dataclass(slots=True)
class LinkStats:
    """Every attempt on one target of a deployment (variant, canary or fallback link)."""

    attempts: int = 0
    errors: int = 0
    latency_s: float = 0.0


class Router:
    def __init__(self, deployments: Iterable[Deployment] = (), seed: int | None = None) -> None:
        self._deployments: dict[str, Deployment] = {}
        self.links: dict[str, dict[Target, LinkStats]] = {}
        self.default_answers: dict[str, int] = {}
        self._rng = random.Random(seed)
        self.shadow_stats: dict[str, ShadowStats] = {}
        self.canary_windows: dict[str, CanaryWindow] = {}
        self.variant_stats: dict[str, dict[Target, VariantStats]] = {}
        self._assignments: BoundedLRU[tuple[str, Target]] = BoundedLRU(MAX_ASSIGNMENTS)  # request id -> who answered
        self.shadows_in_flight = 0
        for d in deployments:
            self.put(d)

    def __contains__(self, name: str) -> bool:
        return name in self._deployments

    def get(self, name: str) -> Deployment | None:
        return self._deployments.get(name)

    def all(self) -> list[Deployment]:
        return [self._deployments[n] for n in sorted(self._deployments)]

    def put(self, dep: Deployment) -> None:
        old = self._deployments.get(dep.name)
        self._deployments[dep.name] = dep
        if old is None or old.variants != dep.variants:
            self.variant_stats[dep.name] = {}  # a new experiment starts from zero
        if old is None or old.shadow != dep.shadow:
            self.shadow_stats[dep.name] = ShadowStats()  # a new comparison starts from zero
        c = dep.canary
        if c is None:
            self.canary_windows.pop(dep.name, None)
        elif old is None or old.canary is None or (old.canary.stage, old.canary.status) != (c.stage, c.status):
            self.canary_windows[dep.name] = CanaryWindow(started=time.monotonic())  # a stage starts afresh

    def observe(self, name: str, target: Target, ok: bool, seconds: float, request_id: str = "") -> None:
        """One attempt's outcome: per-variant statistics of an A/B test, the canary's stage window."""
        dep = self._deployments.get(name)
        if dep is None:
            return
        link = self.links.setdefault(name, {}).get(target)
        if link is None:
            link = self.links[name][target] = LinkStats()
        link.attempts += 1
        if ok:
            link.latency_s += seconds
        else:
            link.errors += 1
        if dep.variants:
            vs = self.variant_stats.setdefault(name, {}).setdefault(target, VariantStats())
            vs.requests += 1
            if ok:
                vs.latency_s += seconds
                if request_id:
                    self._assignments.put(request_id, (name, target))
            else:
                vs.errors += 1
        window = self.canary_windows.get(name)
        if dep.canary is None or window is None or target != dep.canary.canary:
            return
        window.requests += 1
        if not ok:
            window.errors += 1
        elif len(window.latencies) < 10_000:
            window.latencies.append(seconds)

    def observe_default(self, name: str) -> None:
        self.default_answers[name] = self.default_answers.get(name, 0) + 1

    def figures(self) -> list[DeploymentFigures]:
        """Every deployment's counters, for the metrics scrape."""
        out = []
        for dep in self.all():
            variants = self.variant_stats.get(dep.name, {})
            links = tuple(
                LinkFigures(t.label(), s.attempts, s.errors, s.latency_s,
                            variants[t].outcomes if t in variants else 0,
                            variants[t].outcome_sum if t in variants else 0.0)
                for t, s in sorted(self.links.get(dep.name, {}).items(), key=lambda kv: kv[0].label())
            )
            sh = self.shadow_stats.get(dep.name)
            shadow = {} if dep.shadow is None or sh is None else {
                "matched": sh.matched, "mismatched": sh.mismatched, "error": sh.errors, "skipped": sh.skipped}
            c = dep.canary
            out.append(DeploymentFigures(
                dep.name, links, self.default_answers.get(dep.name, 0), shadow,
                canary_stage=-1 if c is None else c.stage,
                canary_percent=0.0 if c is None else canary_percent(c),
                canary_status="" if c is None else c.status,
            ))
        return out

    def variant_stats_of(self, dep: Deployment, variants: Sequence[Variant]) -> list[tuple[Variant, VariantStats]]:
        """Each variant with a copy of its A/B statistics (zeros before its first request), in the given order."""
        stats = self.variant_stats.get(dep.name, {})
        return [(v, replace(stats.get(v.target, VariantStats()))) for v in variants]

    def report_outcome(self, request_id: str, value: float) -> tuple[str, Target]:
        """Credit an outcome to the variant that answered ``request_id``."""
        found = self._assignments.get(request_id)
        if found is None:
            raise NotFound(f"request_id '{request_id[:100]}': no A/B-routed request with this id is remembered")
        name, target = found
        self.variant_stats.setdefault(name, {}).setdefault(target, VariantStats()).add_outcome(value)
        return found

    def remove(self, name: str) -> bool:
        self.links.pop(name, None)
        self.default_answers.pop(name, None)
        self.shadow_stats.pop(name, None)
        self.canary_windows.pop(name, None)
        self.variant_stats.pop(name, None)
        return self._deployments.pop(name, None) is not None

    def route(self, request: InferRequest) -> tuple[Deployment, list[Target]] | None:
        """The deployment and the targets to try, or None when the name is a plain model."""
        dep = self._deployments.get(request.model_name)
        if dep is None or request.model_version:
            return None
        raw = request.parameters.get(dep.sticky_key) if dep.sticky_key else None
        return dep, plan(dep, None if raw is None else str(raw), self._rng)


def canary_percent(c: Canary) -> float:
    """The share of traffic a canary gets now."""
    if c.status == "PROMOTED":
        return 100.0
    return 0.0 if c.status == "ROLLED_BACK" else c.stages[c.stage][0]
