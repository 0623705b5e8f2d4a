"""The deployments in force, looked up per request; changed through the control plane."""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from infer.core.types import InferRequest
from infer.errors import NotFound
from infer.routing.experiment import VariantStats
from infer.routing.policies import Deployment, Target, plan

Array = npt.NDArray[np.generic]

__all__ = ["CanaryWindow", "Router", "ShadowStats"]

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
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
            worst = max(worst, diff)
            same = same and diff <= tolerance
        self.compared += 1
        self.max_abs_diff = max(self.max_abs_diff, worst)
        if same:
            self.matched += 1
        else:
            self.mismatched += 1


@dataclass(slots=True)
class CanaryWindow:
    """The canary target's outcomes in the current stage."""

    started: float
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies, 99)) * 1e3 if self.latencies else 0.0


class Router:
    def __init__(self, deployments: Iterable[Deployment] = (), seed: int | None = None) -> None:
        self._deployments: dict[str, Deployment] = {}
        self._rng = random.Random(seed)
        self.shadow_stats: dict[str, ShadowStats] = {}
        self.canary_windows: dict[str, CanaryWindow] = {}
        self.variant_stats: dict[str, dict[Target, VariantStats]] = {}
        self._assignments: OrderedDict[str, tuple[str, Target]] = OrderedDict()  # request id -> who answered
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
        if dep.variants:
            vs = self.variant_stats.setdefault(name, {}).setdefault(target, VariantStats())
            vs.requests += 1
            if ok:
                vs.latency_s += seconds
                if request_id:
                    self._assignments[request_id] = (name, target)
                    if len(self._assignments) > MAX_ASSIGNMENTS:
                        self._assignments.popitem(last=False)
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

    def report_outcome(self, request_id: str, value: float) -> tuple[str, Target]:
        """Credit an outcome to the variant that answered ``request_id``."""
        found = self._assignments.get(request_id)
        if found is None:
            raise NotFound(f"request_id '{request_id[:100]}': no A/B-routed request with this id is remembered")
        name, target = found
        self.variant_stats.setdefault(name, {}).setdefault(target, VariantStats()).add_outcome(value)
        return found

    def remove(self, name: str) -> bool:
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
