"""ModelWatch: versions attached from their parameters and directory, the hot path's bookkeeping, drift evaluation
and its listener, ground truth routed by request id, and the Prometheus families it exports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infer.core.clock import ManualClock
from infer.errors import FailedPrecondition, NotFound
from infer.observability.drift import DriftReport, build_reference
from infer.observability.watch import ModelWatch

ANOMALY_OUTPUTS = ("score", "is_anomalous", "severity", "anomaly_type")
FORECAST_OUTPUTS = ("mean", "lower", "upper")




def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _reference_dir(tmp_path: Path, rng: np.random.Generator) -> Path:
    d = tmp_path / "m" / "1"
    d.mkdir(parents=True)
    build_reference({"x": rng.standard_normal((4000, 3)).astype(np.float32)}, seed=0).save(
        d / "drift_reference.json")
    return d


def test_drift_is_evaluated_when_due_and_the_listener_hears_changes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    clock = ManualClock(1000.0)
    watch = ModelWatch(clock.now)
    heard: list[tuple[str, str, bool, bool]] = []
    watch.on_drift = lambda n, v, r, degrade: heard.append((n, v, r.drifted, degrade))
    params = {"infer.drift.every_s": "5", "infer.drift.window": "600", "infer.drift.degrade": "true"}
    w = watch.attach("m", "1", params, _reference_dir(tmp_path, rng), ["y"])
    assert w.drift is not None and w.accuracy is None and w.family == ""
    for _ in range(6):
        watch.observe(w, "", {"x": rng.standard_normal((100, 3)).astype(np.float32)}, {"y": np.zeros(100)})
    asyncio.run(watch.evaluate_due())
    assert w.report is None  # not due yet
    clock.advance(5)
    asyncio.run(watch.evaluate_due())
    assert w.report is not None and not w.report.drifted and w.evaluations == 1 and heard == []
    for _ in range(6):
        x = rng.standard_normal((100, 3)).astype(np.float32)
        x[:, 1] += 1.5
        watch.observe(w, "", {"x": x}, {"y": np.zeros(100)})
    clock.advance(5)
    asyncio.run(watch.evaluate_due())
    assert heard == [("m", "1", True, True)]
    report = watch.drift_report("m")
    assert report["drifted"] and report["version"] == "1"
    assert [f["drifted"] for f in report["features"]] == [False, True, False]
    reg = CollectorRegistry()
    watch.register(reg)
    got = _samples(reg)
    assert got[("infer_drift_detected", (("model", "m"), ("version", "1")))] == 1.0
    assert got[("infer_drift_evaluations_total", (("model", "m"), ("version", "1")))] == 2.0
    flagged = [k for k, v in got.items() if k[0] == "infer_drift_feature_drifted" and v == 1.0]
    assert len(flagged) == 1


def test_a_bad_reference_is_reported_not_fatal(tmp_path: Path) -> None:
    d = tmp_path / "m" / "1"
    d.mkdir(parents=True)
    (d / "drift_reference.json").write_text("{not json")
    watch = ModelWatch()
    w = watch.attach("m", "1", {}, d, ["y"])
    assert w.drift is None and w.drift_error
    with pytest.raises(FailedPrecondition, match="no drift detection"):
        watch.drift_report("m")
    with pytest.raises(Exception, match="outside the model"):
        from infer.observability.watch import _reference_path
        _reference_path("../../../etc/passwd", d)


def test_anomaly_timeline_keeps_flagged_rows_only() -> None:
    clock = ManualClock(1000.0)
    watch = ModelWatch(clock.now)
    w = watch.attach("anomaly", "1", {}, None, ANOMALY_OUTPUTS)
    assert w.family == "anomaly" and w.accuracy is not None  # binary on is_anomalous by default
    outputs = {"score": np.array([[0.1], [0.97], [0.5]], np.float32),
               "is_anomalous": np.array([[False], [True], [False]]),
               "severity": np.array([[b"NONE"], [b"CRITICAL"], [b"LOW"]], object),
               "anomaly_type": np.array([[b""], [b"exfiltration"], [b"burst"]], object)}
    watch.observe(w, "r1", {}, outputs)
    events = watch.anomalies()
    assert [(e["severity"], e["type"], round(e["score"], 2)) for e in events] == [
        ("CRITICAL", "exfiltration", 0.97), ("LOW", "burst", 0.5)]
    assert all(e["t"] == clock.now() and e["model"] == "anomaly" for e in events)
    # an ensemble step's answer is the ensemble's: not in the timeline, not remembered for ground truth
    watch.observe(w, "r2", {}, outputs, step=True)
    assert len(watch.anomalies()) == 2
    with pytest.raises(NotFound, match="request_id 'r2'"):
        watch.report_truth("r2", ["true", "false", "false"], None)
    model, version, rows = watch.report_truth("r1", ["false", "true", "true"], None)
    assert (model, version, rows) == ("anomaly", "1", 3)
    perf = watch.performance("anomaly")
    assert perf["samples"] == 3 and perf["precision"] == 1.0 and perf["recall"] == 0.5


def test_forecasts_are_kept_with_their_actuals() -> None:
    watch = ModelWatch(ManualClock(1000.0).now)
    w = watch.attach("forecast", "2", {}, None, FORECAST_OUTPUTS)
    history = np.arange(200, dtype=np.float32)[None, :]
    mean = np.array([[1.0, 2.0, 3.0]], np.float32)
    lower = np.array([[[0.5, 1.5, 2.5], [0.0, 1.0, 2.0]]], np.float32)  # levels 80, 95
    upper = lower + 3
    watch.observe(w, "f1", {"history": history}, {"mean": mean, "lower": lower, "upper": upper})
    watch.observe(w, "", {"history": history}, {"mean": mean, "lower": lower, "upper": upper})
    [f] = watch.forecasts()  # requests without an id cannot get actuals: not kept
    assert f["lower"] == [0.0, 1.0, 2.0] and f["upper"] == [3.0, 4.0, 5.0] and f["actual"] is None
    assert len(f["history"]) == 96 and f["history"][-1] == 199.0
    watch.report_truth("f1", None, [1.5, 2.0, 2.0])
    assert watch.forecasts()[0]["actual"] == [1.5, 2.0, 2.0]
    assert watch.performance("forecast", "2")["mae"] == pytest.approx(0.5)


def test_accuracy_needs_asking_and_bad_parameters_do_not_stop_serving() -> None:
    watch = ModelWatch()
    plain = watch.attach("plain", "1", {}, None, ["y"])
    assert not plain.observed  # nothing to watch: the data plane never calls observe for it
    with pytest.raises(FailedPrecondition, match=r"infer\.accuracy\.kind"):
        watch.performance("plain")
    w = watch.attach("bad", "1", {"infer.accuracy.kind": "astrology"}, None, ["y"])
    assert w.accuracy is None and "astrology" in w.accuracy_error
    with pytest.raises(NotFound, match="'ghost'"):
        watch.performance("ghost")
    watch.detach("plain", "1")
    with pytest.raises(NotFound):
        watch.drift_report("plain")


def test_unmatched_reports_are_counted() -> None:
    watch = ModelWatch()
    reg = CollectorRegistry()
    watch.register(reg)
    with pytest.raises(NotFound):
        watch.report_truth("nobody", ["1"], None)
    assert _samples(reg)[("infer_ground_truth_unmatched_total", ())] == 1.0


def test_listener_errors_in_statistics_do_not_end_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    clock = ManualClock(1000.0)
    watch = ModelWatch(clock.now)
    w = watch.attach("m", "1", {"infer.drift.every_s": "1"}, _reference_dir(tmp_path, rng), ["y"])
    assert w.drift is not None

    def broken(*_: object) -> DriftReport:
        raise RuntimeError("boom")

    monkeypatch.setattr(w.drift, "evaluate", broken)
    clock.advance(2)
    asyncio.run(watch.evaluate_due())
    assert w.report is None and w.evaluations == 0
