"""ModelWatch: what the served models see and answer, watched per version.

The data plane hands every answered request to :meth:`ModelWatch.observe` (inputs and outputs as arrays). For
each version the watch keeps, when the version asks for it:

- a drift monitor (a reference distribution stored with the model at training time, ``drift_reference.json``,
  compared with a sliding window of live inputs by a periodic evaluation in a worker thread);
- an accuracy tracker (the predictions of requests that carried an id, matched with the ground truth callers
  report later through the control plane);
- for anomaly models, the events scored LOW or above (the dashboard's timeline); for forecasters, the latest
  forecasts with their intervals and, once reported, the actuals.

``observe`` runs on the event loop for every request, so it does only dictionary lookups and appends; the
statistics are computed by :meth:`run`'s evaluations and at scrape time. Observability sits beside the layers:
this module knows versions by name and number only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from infer.errors import FailedPrecondition, InferError, NotFound
from infer.observability.accuracy import AccuracyConfig, AccuracyTracker, PredictionIndex
from infer.observability.alerts import flagged_rows
from infer.observability.drift import REFERENCE_FILE, DriftMonitor, DriftReference, DriftReport, DriftSettings

__all__ = ["ModelWatch", "WatchedVersion", "family_of"]

log = logging.getLogger(__name__)

Array = npt.NDArray[Any]

TIMELINE_EVENTS = 5000  # anomaly events (LOW and above) kept for the dashboard
FORECASTS_KEPT = 40  # latest forecasts per version kept for the dashboard
HISTORY_TAIL = 96  # history values kept with each forecast
ACCURACY_WINDOWS = (("5m", 300.0), ("1h", 3600.0), ("all", 0.0))
DriftListener = Callable[[str, str, DriftReport, bool], None]  # name, version, report, degrade asked


@dataclass(slots=True)
class WatchedVersion:
    name: str
    version: str
    family: str = ""  # "anomaly", "forecast" or ""
    drift: DriftMonitor | None = None
    drift_settings: DriftSettings | None = None
    drift_error: str = ""  # why a reference could not be read
    report: DriftReport | None = None
    evaluations: int = 0
    next_eval: float = 0.0
    accuracy: AccuracyTracker | None = None
    accuracy_error: str = ""  # why the accuracy parameters were refused
    truth_reports: int = 0
    forecasts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=FORECASTS_KEPT))

    @property
    def observed(self) -> bool:
        """Whether its answers need :meth:`ModelWatch.observe` at all."""
        return self.drift is not None or self.accuracy is not None or bool(self.family)


def family_of(output_names: Sequence[str]) -> str:
    """``anomaly`` or ``forecast`` when the outputs are those of the family's models, else ``''``."""
    names = set(output_names)
    if {"score", "severity"} <= names:
        return "anomaly"
    if {"mean", "lower", "upper"} <= names:
        return "forecast"
    return ""


def _reference_path(given: str, directory: Path | None) -> Path | None:
    if directory is None:
        return None
    if given:
        path = (directory / given).resolve()
        root = directory.parent.resolve()
        if not path.is_relative_to(root):
            raise InferError(f"parameter 'infer.drift.reference': {given!r} is outside the model's directory")
        return path
    for candidate in (directory / REFERENCE_FILE, directory.parent / REFERENCE_FILE):
        if candidate.is_file():
            return candidate
    return None


class ModelWatch:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._versions: dict[tuple[str, str], WatchedVersion] = {}
        self._index = PredictionIndex()
        self.unmatched_reports = 0
        self.timeline: deque[dict[str, Any]] = deque(maxlen=TIMELINE_EVENTS)
        self.on_drift: DriftListener | None = None

    # ---- versions come and go ------------------------------------------------------------

    def attach(self, name: str, version: str, params: Mapping[str, str], directory: Path | None,
               output_names: Sequence[str]) -> WatchedVersion:
        """Start watching a version that became ready; a bad drift reference is reported, not fatal. Its answers
        need :meth:`observe` only when the returned version is ``observed``."""
        w = WatchedVersion(name, version, family_of(output_names))
        try:
            settings = DriftSettings.from_params(params)
            path = _reference_path(settings.reference, directory)
            if path is not None:
                w.drift = DriftMonitor(DriftReference.load(path), window_rows=settings.window,
                                       min_rows=settings.min_rows, alpha=settings.alpha,
                                       psi_threshold=settings.psi)
                w.drift_settings = settings
                w.next_eval = self._clock() + settings.every_s
        except (InferError, OSError, ValueError) as e:
            w.drift_error = str(e)
            log.warning("model %s version %s: no drift detection: %s", name, version, e)
        try:
            config = AccuracyConfig.from_params(params, output_names)
        except InferError as e:  # the model serves; its accuracy is not tracked, and the log says why
            w.accuracy_error = str(e)
            log.warning("model %s version %s: no accuracy tracking: %s", name, version, e)
            config = None
        if config is not None:
            w.accuracy = AccuracyTracker(config, clock=self._clock)
        self._versions[(name, version)] = w
        return w

    def detach(self, name: str, version: str) -> None:
        self._versions.pop((name, version), None)

    def watched(self) -> list[WatchedVersion]:
        return list(self._versions.values())

    # ---- the hot path -------------------------------------------------------------------

    def observe(self, w: WatchedVersion, request_id: str, inputs: Mapping[str, Array],
                outputs: Mapping[str, Array], step: bool = False) -> None:
        """One answered request of ``w`` (what :meth:`attach` returned). ``step``: a step of an ensemble, whose
        answer is the ensemble's to keep (only the step's drift is watched)."""
        if w.drift is not None:
            w.drift.observe(inputs)
        if step:
            return
        if w.accuracy is not None and request_id:
            w.accuracy.remember(request_id, outputs)
            self._index.put(request_id, (w.name, w.version))
        if w.family == "anomaly":
            self._anomalies(w, outputs)
        elif w.family == "forecast" and request_id and "mean" in outputs:
            self._forecast(w, request_id, inputs, outputs)

    def _anomalies(self, w: WatchedVersion, outputs: Mapping[str, Array]) -> None:
        severity = outputs.get("severity")
        score = outputs.get("score")
        if severity is None or score is None:
            return
        sev = severity.reshape(-1)
        flagged = flagged_rows(sev)
        if not len(flagged):
            return
        kinds = outputs.get("anomaly_type")
        kind = kinds.reshape(-1) if kinds is not None and kinds.size == sev.size else None
        scores = score.reshape(-1)
        now = self._clock()
        for i in flagged[:256]:  # a flood of anomalies in one request is shown by its first rows
            s = sev[i]
            k = kind[i] if kind is not None else b""
            self.timeline.append({
                "t": now, "model": w.name, "version": w.version, "score": float(scores[i]),
                "severity": s.decode(errors="replace") if isinstance(s, bytes) else str(s),
                "type": k.decode(errors="replace") if isinstance(k, bytes) else str(k),
            })

    def _forecast(self, w: WatchedVersion, request_id: str, inputs: Mapping[str, Array],
                  outputs: Mapping[str, Array]) -> None:
        mean = outputs["mean"]
        lower, upper = outputs.get("lower"), outputs.get("upper")
        history = inputs.get("history")

        def first(a: Array | None) -> list[float] | None:
            if a is None or not a.size:
                return None
            row = np.asarray(a[0], np.float64)
            values: list[float] = (row[-1] if row.ndim > 1 else row).tolist()  # the widest interval level
            return values

        w.forecasts.append({
            "t": self._clock(), "model": w.name, "version": w.version, "id": request_id,
            "history": None if history is None else np.asarray(history[0], np.float64)[-HISTORY_TAIL:].tolist(),
            "mean": first(mean), "lower": first(lower), "upper": first(upper), "actual": None,
        })

    # ---- ground truth -------------------------------------------------------------------

    def report_truth(self, request_id: str, labels: Sequence[str] | None, values: Sequence[float] | None
                     ) -> tuple[str, str, int]:
        """Credit ground truth to the version that answered ``request_id``; return (model, version, rows)."""
        key = self._index.get(request_id)
        w = self._versions.get(key) if key is not None else None
        if w is None or w.accuracy is None:
            self.unmatched_reports += 1
            raise NotFound(f"request_id '{request_id[:200]}': no prediction remembered for it (an id the server "
                           "never answered, answered by a model without accuracy tracking, or forgotten)")
        rows = w.accuracy.report(request_id, labels=labels, values=values)
        w.truth_reports += 1
        if values and w.family == "forecast":
            for f in w.forecasts:
                if f["id"] == request_id and f["mean"] is not None:
                    horizon = len(f["mean"])
                    f["actual"] = [float(v) for v in list(values)[:horizon]]
        return w.name, w.version, rows

    def _find(self, model: str, version: str) -> WatchedVersion:
        found = [w for (n, v), w in self._versions.items() if n == model and (not version or v == version)]
        if not found:
            raise NotFound(f"model '{model[:200]}'" + (f" version '{version[:40]}'" if version else "")
                           + " is not loaded")
        return max(found, key=lambda w: int(w.version) if w.version.isdigit() else -1)

    def performance(self, model: str, version: str = "", window_s: float = 0.0) -> dict[str, Any]:
        w = self._find(model, version)
        if w.accuracy is None:
            why = w.accuracy_error or "set parameter 'infer.accuracy.kind' in its config"
            raise FailedPrecondition(f"model '{model[:200]}' version {w.version} does not track accuracy ({why})")
        return {"model": w.name, "version": w.version, **w.accuracy.summary(window_s)}

    def drift_report(self, model: str, version: str = "") -> dict[str, Any]:
        w = self._find(model, version)
        if w.drift is None:
            why = w.drift_error or f"no {REFERENCE_FILE} beside the model"
            raise FailedPrecondition(f"model '{model[:200]}' version {w.version} has no drift detection: {why}")
        return _drift_body(w)

    # ---- periodic evaluation ------------------------------------------------------------

    async def run(self, tick_s: float = 0.25) -> None:
        """Evaluate each version's drift when due (in a worker thread), forever."""
        while True:
            await asyncio.sleep(tick_s)
            await self.evaluate_due()

    async def evaluate_due(self, force: bool = False) -> None:
        now = self._clock()
        for w in list(self._versions.values()):
            if w.drift is None or w.drift_settings is None or (not force and now < w.next_eval):
                continue
            w.next_eval = now + w.drift_settings.every_s
            window = w.drift.window()
            try:
                report = await asyncio.to_thread(w.drift.evaluate, window)
            except Exception:  # a statistics bug must not end the loop
                log.exception("model %s version %s: drift evaluation failed", w.name, w.version)
                continue
            was = w.report.drifted if w.report is not None else False
            w.report = report
            w.evaluations += 1
            if report.drifted != was and (w.name, w.version) in self._versions:
                log.warning("model %s version %s: %s", w.name, w.version,
                            f"data drift: {report.reason}" if report.drifted else "data drift cleared")
                if self.on_drift is not None:
                    self.on_drift(w.name, w.version, report, w.drift_settings.degrade)

    # ---- dashboard sources ----------------------------------------------------------------

    def anomalies(self) -> list[dict[str, Any]]:
        return list(self.timeline)

    def forecasts(self) -> list[dict[str, Any]]:
        return [f for w in self._versions.values() for f in w.forecasts]

    def drift(self) -> list[dict[str, Any]]:
        return [_drift_body(w) for w in self._versions.values() if w.drift is not None]

    def accuracy(self) -> list[dict[str, Any]]:
        return [{"model": w.name, "version": w.version, **w.accuracy.summary(3600.0)}
                for w in self._versions.values() if w.accuracy is not None]

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(_WatchCollector(self))


def _drift_body(w: WatchedVersion) -> dict[str, Any]:
    body: dict[str, Any] = {"drifted": False, "at": None, "rows": 0, "features": [], "reason": "not evaluated yet"}
    if w.report is not None:
        body = w.report.to_dict()
    return {"model": w.name, "version": w.version, **body}


class _WatchCollector(Collector):
    def __init__(self, watch: ModelWatch) -> None:
        self._w = watch

    def collect(self) -> Iterator[Metric]:
        mv = ["model", "version"]
        detected = GaugeMetricFamily("infer_drift_detected", "1 while a version's live inputs drift from its "
                                     "training reference.", labels=mv)
        feature = GaugeMetricFamily("infer_drift_feature_drifted", "1 for each feature found drifting.",
                                    labels=[*mv, "feature"])
        stat = GaugeMetricFamily("infer_drift_statistic", "Drift statistics per feature (psi, ks, wasserstein "
                                 "normalised by the reference's standard deviation, chi2).",
                                 labels=[*mv, "feature", "statistic"])
        pval = GaugeMetricFamily("infer_drift_p_value", "p-value of each feature's test (ks, chi2).",
                                 labels=[*mv, "feature", "test"])
        rows = GaugeMetricFamily("infer_drift_window_rows", "Live rows in the last drift evaluation.", labels=mv)
        evals = CounterMetricFamily("infer_drift_evaluations", "Drift evaluations run.", labels=mv)
        reports = CounterMetricFamily("infer_ground_truth_reports", "Ground-truth reports matched.", labels=mv)
        unmatched = CounterMetricFamily("infer_ground_truth_unmatched",
                                        "Ground-truth reports for ids no tracked prediction was remembered for.")
        online = GaugeMetricFamily("infer_online_metric", "Accuracy figures from reported ground truth.",
                                   labels=[*mv, "metric", "window"])
        for w in self._w.watched():
            lv = [w.name, w.version]
            if w.drift is not None:
                evals.add_metric(lv, w.evaluations)
                if w.report is not None:
                    detected.add_metric(lv, 1.0 if w.report.drifted else 0.0)
                    rows.add_metric(lv, w.report.rows)
                    self._features(lv, w.report, feature, stat, pval)
            if w.accuracy is not None:
                reports.add_metric(lv, w.truth_reports)
                for label, seconds in ACCURACY_WINDOWS:
                    s = w.accuracy.summary(seconds)
                    if not s.get("samples"):
                        continue
                    for metric in ("accuracy", "precision", "recall", "f1", "mae", "rmse"):
                        value = s.get(metric)
                        if value is not None:
                            online.add_metric([*lv, metric, label], float(value))
        unmatched.add_metric([], self._w.unmatched_reports)
        yield from (detected, feature, stat, pval, rows, evals, reports, unmatched, online)

    @staticmethod
    def _features(lv: list[str], report: DriftReport, feature: GaugeMetricFamily, stat: GaugeMetricFamily,
                  pval: GaugeMetricFamily) -> None:
        for f in report.to_dict()["features"]:
            name = str(f["feature"])
            feature.add_metric([*lv, name], 1.0 if f.get("drifted") else 0.0)
            for key in ("psi", "ks", "wasserstein", "chi2"):
                if f.get(key) is not None:
                    stat.add_metric([*lv, name, key], float(f[key]))
            for key, test in (("ks_p", "ks"), ("chi2_p", "chi2")):
                if f.get(key) is not None:
                    pval.add_metric([*lv, name, test], float(f[key]))
