"""The composition root's observability wiring: what the watch, the windows and the dashboard read from the
registry and the router, and what a drifting version does to its lifecycle.

It stands beside ``app.py`` (it knows every layer, as the composition root does) so that the layers themselves
only see the small observability interfaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sys
import time
from typing import Any

from infer.controlplane.service import ControlPlane
from infer.errors import InferError
from infer.observability.alerts import Alert, AlertManager
from infer.observability.dashboard import Dashboard, DashboardSources
from infer.observability.drift import DriftReport
from infer.observability.gpu import gpu_families
from infer.observability.metrics import Metrics
from infer.observability.watch import ModelWatch, family_of
from infer.observability.windows import Windows
from infer.registry.lifecycle import ModelState
from infer.registry.registry import LoadedVersion, ModelRegistry
from infer.routing.experiment import VariantStats, compare
from infer.routing.policies import Variant
from infer.routing.router import canary_percent

__all__ = ["Monitoring"]

log = logging.getLogger(__name__)


class Monitoring:
    """Owns the watch, the windows and the dashboard; listens to the registry for versions coming and going."""

    def __init__(self, metrics: Metrics, registry: ModelRegistry, control: ControlPlane,
                 alerts: AlertManager | None = None, step_s: float = 5.0) -> None:
        self.metrics = metrics
        self.registry = registry
        self.control = control
        self.alerts = alerts
        self.watch = ModelWatch()
        self.watch.on_drift = self._on_drift
        self.watch.register(metrics.registry)
        self.windows = Windows(metrics, step_s=step_s, cache_counts=self._cache_counts)
        self.dashboard = Dashboard(DashboardSources(
            models=self._models, latency=self.windows.latency_source, batch_sizes=self.windows.batch_sizes,
            anomalies=self.watch.anomalies, forecasts=self.watch.forecasts, drift=self.watch.drift,
            accuracy=self.watch.accuracy, deployments=self._deployments,
        ))
        self._step_s = step_s
        self._tasks: list[asyncio.Task[None]] = []

    # ---- registry listener -----------------------------------------------------------------

    async def version_ready(self, lv: LoadedVersion) -> None:
        params = {k: lv.config.parameter(k) for k in lv.config.parameters}
        directory = self.registry.repository.version_dir(lv.name, lv.version)
        w = self.watch.attach(lv.name, str(lv.version), params, directory, lv.output_names)
        lv.watched = w if w.observed else None
        m = self.metrics.version(lv.name, str(lv.version))
        m.max_batch_size = lv.config.max_batch_size
        m.memory_bytes = lv.memory_bytes

    async def version_retiring(self, lv: LoadedVersion) -> None:
        self.watch.detach(lv.name, str(lv.version))

    def version_state(self, lv: LoadedVersion) -> None:
        pass

    # ---- background work --------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.watch.run()), asyncio.create_task(self._sample())]
        # scipy's first import takes seconds: do it off the loop before a drift evaluation or the A/B panel
        self._tasks.append(asyncio.create_task(self._preload()))

    async def _preload(self) -> None:
        with contextlib.suppress(ImportError):
            await asyncio.to_thread(importlib.import_module, "scipy.stats")
        await asyncio.to_thread(lambda: list(gpu_families()))  # NVML's import and init, before the first scrape

    async def _sample(self) -> None:
        while True:
            self.windows.sample()
            await asyncio.sleep(self._step_s)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # ---- drift moves a version ------------------------------------------------------------

    def _on_drift(self, name: str, version: str, report: DriftReport, degrade: bool) -> None:
        if self.alerts is not None and report.drifted:
            psi = max((f.psi or 0.0 for f in report.features if f.drifted), default=0.0)
            self.alerts.submit(Alert(
                model=name, version=version, severity="HIGH", score=float(psi), anomaly_type="data_drift",
                dedup_key=f"drift:{name}:{version}", summary=f"{name} v{version}: data drift: {report.reason}",
                details={"features": [f.feature for f in report.features if f.drifted], "rows": report.rows},
                at=time.time()))
        if not degrade:
            return
        try:
            lv = self.registry.get(name, version)
        except InferError:
            return
        if report.drifted:
            lv.drift_hold = f"data drift: {report.reason}"
            self.registry.set_health(lv, ModelState.DEGRADED, lv.drift_hold)
        else:
            lv.drift_hold = ""
            self.registry.set_health(lv, ModelState.ACTIVE, "data drift cleared")

    # ---- dashboard sources ------------------------------------------------------------------

    def _cache_counts(self, name: str, version: str) -> tuple[int, int] | None:
        try:
            st = self.registry.get(name, version).stats
        except InferError:
            return None  # unknown for now (not a counter reset)
        return st.cache_hit.count, st.cache_miss.count

    def _models(self) -> list[dict[str, Any]]:
        loaded = {(lv.name, str(lv.version)): lv for lv in self.registry.loaded()}
        rows = []
        for e in self.registry.index():
            lv = loaded.get((e.name, e.version))
            rows.append({
                "name": e.name, "version": e.version,
                "state": lv.state.value if lv is not None else e.state, "reason": e.reason,
                "platform": (lv.config.platform or lv.config.backend) if lv is not None else "",
                "max_batch_size": lv.config.max_batch_size if lv is not None else 0,
                "family": family_of(lv.output_names) if lv is not None else "",
            })
        return rows

    def _deployments(self) -> list[dict[str, Any]]:
        router = self.control.router
        out = []
        for dep in router.all():
            rows = router.variant_stats_of(dep, dep.canary.variants() if dep.canary else dep.variants)
            shadow = router.shadow_stats.get(dep.name)
            out.append({
                "name": dep.name, "kind": "canary" if dep.canary else ("ab" if len(rows) > 1 else "single"),
                "variants": [_variant(v, s) for v, s in rows], "comparison": _comparison(rows),
                "canary": None if dep.canary is None else {
                    "stage": dep.canary.stage, "percent": canary_percent(dep.canary), "status": dep.canary.status,
                    "reason": dep.canary.reason, "stages": [p for p, _ in dep.canary.stages]},
                "shadow": None if shadow is None else {
                    "target": dep.shadow.label() if dep.shadow else "", "compared": shadow.compared,
                    "matched": shadow.matched, "mismatched": shadow.mismatched, "errors": shadow.errors},
                "fallback": [t.label() for t in dep.fallback],
            })
        return out


def _comparison(rows: list[tuple[Variant, VariantStats]]) -> dict[str, Any] | None:
    """The first two variants compared, once scipy is in (imported off the loop at start)."""
    if len(rows) < 2 or "scipy.stats" not in sys.modules:
        return None
    c = compare(rows[0][1], rows[1][1])
    return {"metric": c.metric, "difference": c.difference, "ci95_low": c.ci95_low, "ci95_high": c.ci95_high,
            "p_value": c.p_value}


def _variant(v: Variant, s: VariantStats) -> dict[str, Any]:
    return {"target": v.target.label(), "weight": v.weight, "requests": s.requests, "errors": s.errors,
            "error_rate": s.error_rate, "mean_latency_ms": (s.latency_s / max(1, s.requests - s.errors)) * 1e3,
            "outcomes": s.outcomes, "outcome_mean": s.outcome_mean if s.outcomes else None}
