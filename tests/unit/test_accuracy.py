"""Online accuracy: AccuracyConfig, AccuracyTracker and PredictionIndex (figures checked against scikit-learn)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, precision_recall_fscore_support

from infer.auth import required_role
from infer.controlplane.service import ControlPlane
from infer.errors import FailedPrecondition, InvalidArgument, ModelConfigError, NotFound
from infer.observability.accuracy import MAX_CLASSES, AccuracyConfig, AccuracyTracker, PredictionIndex
from infer.observability.watch import ModelWatch
from infer.registry.artifacts import LocalArtifactStore
from infer.registry.store import RegistryStore
from infer.transport.grpc.control_servicer import drift_to_pb, performance_to_pb


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def tracker(kind: str = "classification", output: str = "label", clock: Clock | None = None, **kw: Any
            ) -> AccuracyTracker:
    labels = tuple(kw.pop("labels", ()))
    positive = kw.pop("positive", "")
    return AccuracyTracker(AccuracyConfig(kind, output, labels, positive), clock=clock or Clock(), **kw)


def sk(y_true: list[Any], y_pred: list[Any], average: str, pos_label: Any = 1) -> dict[str, float]:
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=average, pos_label=pos_label,
                                                 zero_division=0)
    return {"accuracy": accuracy_score(y_true, y_pred), "precision": p, "recall": r, "f1": f}


def assert_figures(summary: dict[str, Any], expected: dict[str, float]) -> None:
    for k, v in expected.items():
        assert summary[k] == pytest.approx(v), k


# ---- config -------------------------------------------------------------------------------------


def test_config_from_params_and_family_defaults() -> None:
    assert AccuracyConfig.from_params({}, ["output"]) is None
    anomaly = AccuracyConfig.from_params({}, ["score", "severity", "is_anomalous", "anomaly_type"])
    assert anomaly == AccuracyConfig("classification", "is_anomalous")
    forecast = AccuracyConfig.from_params({}, ["mean", "lower", "upper"])
    assert forecast == AccuracyConfig("regression", "mean")
    cfg = AccuracyConfig.from_params({"infer.accuracy.kind": "Classification", "infer.accuracy.output": "probs",
                                      "infer.accuracy.labels": "cat, dog ,bird", "infer.accuracy.positive": "dog"},
                                     ["probs", "embedding"])
    assert cfg == AccuracyConfig("classification", "probs", ("cat", "dog", "bird"), "dog")
    assert AccuracyConfig.from_params({"infer.accuracy.kind": "regression"}, ["y"]) == AccuracyConfig("regression",
                                                                                                       "y")
    assert AccuracyConfig.from_params({"infer.accuracy.kind": "classification"},
                                      ["logits", "hidden"]).output == "logits"  # type: ignore[union-attr]


@pytest.mark.parametrize(("params", "outputs", "key"), [
    ({"infer.accuracy.kind": "ranking"}, ["y"], "infer.accuracy.kind"),
    ({"infer.accuracy.kind": "regression", "infer.accuracy.output": "nope"}, ["y"], "infer.accuracy.output"),
    ({"infer.accuracy.kind": "regression"}, ["a", "b"], "infer.accuracy.output"),
    ({"infer.accuracy.kind": "classification", "infer.accuracy.labels": "a,a"}, ["y"], "infer.accuracy.labels"),
    ({"infer.accuracy.kind": "regression", "infer.accuracy.labels": "a,b"}, ["y"], "infer.accuracy.labels"),
    ({"infer.accuracy.output": "y"}, ["y"], "infer.accuracy.kind"),
    ({"infer.accuracy.knd": "regression"}, ["y"], "infer.accuracy.knd"),
])
def test_config_errors_name_the_parameter(params: dict[str, str], outputs: list[str], key: str) -> None:
    with pytest.raises(ModelConfigError, match=key):
        AccuracyConfig.from_params(params, outputs)


# ---- classification ------------------------------------------------------------------------------


def test_binary_from_a_label_output_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    t = tracker()
    truth, preds = [], []
    for i in range(20):
        n = int(rng.integers(1, 9))
        pred = rng.integers(0, 2, n)
        true = np.where(rng.random(n) < 0.8, pred, 1 - pred)
        t.remember(f"r{i}", {"label": pred.astype(np.int64).reshape(n, 1)})
        assert t.report(f"r{i}", labels=[str(x) for x in true]) == n
        truth += true.tolist()
        preds += pred.tolist()
    s = t.summary()
    assert s["kind"] == "classification" and s["samples"] == len(truth)
    assert s["mae"] is None and s["rmse"] is None
    assert_figures(s, sk(truth, preds, "binary"))


def test_bool_output_and_true_false_labels() -> None:
    t = tracker(output="is_anomalous")
    t.remember("a", {"is_anomalous": np.array([True, False, True, True])})
    t.report("a", labels=["true", "false", "False", "TRUE"])
    assert_figures(t.summary(), sk([1, 0, 0, 1], [1, 0, 1, 1], "binary"))


def test_multiclass_is_macro_averaged() -> None:
    t = tracker()
    pred = np.array([b"cat", b"dog", b"bird", b"cat", b"dog", b"dog"], dtype=object)
    true = ["cat", "cat", "bird", "dog", "dog", "bird"]
    t.remember("m", {"label": pred})
    t.report("m", labels=true)
    assert_figures(t.summary(), sk(true, [p.decode() for p in pred], "macro"))


def test_argmax_over_scores_mapped_through_labels() -> None:
    t = tracker(output="probs", labels=("cat", "dog", "bird"))
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]], np.float32)
    t.remember("s", {"probs": scores})
    t.report("s", labels=["cat", "1", "bird", "dog"])  # an index names a class through the labels
    expected = sk(["cat", "dog", "bird", "dog"], ["cat", "dog", "bird", "cat"], "macro")
    assert_figures(t.summary(), expected)


def test_single_probability_column_is_thresholded() -> None:
    t = tracker(output="p")
    t.remember("p", {"p": np.array([[0.9], [0.2], [0.5], [0.49]], np.float32)})
    t.report("p", values=[1, 0, 0, 1])  # integral values are taken as classes
    assert_figures(t.summary(), sk([1, 0, 0, 1], [1, 0, 1, 0], "binary"))


def test_two_named_labels_make_the_second_positive_unless_told() -> None:
    t = tracker(output="y", labels=("ham", "spam"))
    t.remember("x", {"y": np.array([1, 1, 0, 0, 1])})
    t.report("x", labels=["spam", "ham", "ham", "spam", "spam"])
    assert_figures(t.summary(), sk(["s", "h", "h", "s", "s"], ["s", "s", "h", "h", "s"], "binary", "s"))
    u = tracker(output="y", labels=("ham", "spam"), positive="ham")
    u.remember("x", {"y": np.array([1, 1, 0, 0, 1])})
    u.report("x", labels=["spam", "ham", "ham", "spam", "spam"])
    assert_figures(u.summary(), sk(["s", "h", "h", "s", "s"], ["s", "s", "h", "h", "s"], "binary", "h"))


def test_one_class_seen_is_still_binary_for_the_positive_class() -> None:
    t = tracker()
    t.remember("z", {"label": np.array([0, 0, 1])})
    t.report("z", labels=["0", "0", "0"])
    assert_figures(t.summary(), sk([0, 0, 0], [0, 0, 1], "binary"))


# ---- regression -------------------------------------------------------------------------------


def test_regression_mae_rmse_with_forecast_rows_times_horizon() -> None:
    rng = np.random.default_rng(1)
    t = tracker("regression", "mean")
    preds, truths = [], []
    for i in range(5):
        mean = rng.normal(size=(3, 4)).astype(np.float32)
        actual = mean + rng.normal(scale=0.3, size=mean.shape)
        t.remember(f"f{i}", {"mean": mean, "lower": mean - 1, "upper": mean + 1})
        assert t.report(f"f{i}", values=actual.reshape(-1).tolist()) == 3
        preds.append(mean.astype(np.float64).reshape(-1))
        truths.append(actual.reshape(-1))
    s = t.summary()
    y, p = np.concatenate(truths), np.concatenate(preds)
    assert s["kind"] == "regression" and s["samples"] == 60 and s["f1"] is None and s["accuracy"] is None
    assert s["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert s["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, p)))


def test_regression_one_value_per_row() -> None:
    t = tracker("regression", "y")
    t.remember("r", {"y": np.array([[1.0], [2.0], [4.0]])})
    t.report("r", values=[1.5, 2.0, 1.0])
    s = t.summary()
    assert s["mae"] == pytest.approx((0.5 + 0 + 3) / 3)
    assert s["rmse"] == pytest.approx(math.sqrt((0.25 + 9) / 3))


# ---- bounds, windows, bad reports --------------------------------------------------------------


def test_predictions_are_forgotten_oldest_first_and_credited_once() -> None:
    t = tracker(capacity=3)
    for i in range(5):
        t.remember(f"r{i}", {"label": np.array([1])})
    assert t.pending == 3
    for gone in ("r0", "r1"):
        with pytest.raises(NotFound, match=f"request_id '{gone}'"):
            t.report(gone, labels=["1"])
    t.remember("r2", {"label": np.array([0])})  # remembered again: newest now, and the new prediction counts
    t.remember("r5", {"label": np.array([1])})
    with pytest.raises(NotFound):
        t.report("r3", labels=["1"])
    t.report("r2", labels=["0"])
    with pytest.raises(NotFound):
        t.report("r2", labels=["0"])  # credited once
    assert t.summary()["samples"] == 1 and t.summary()["accuracy"] == 1.0


def test_requests_without_the_output_are_not_remembered() -> None:
    t = tracker("regression", "mean")
    t.remember("a", {"other": np.ones(3)})
    t.remember("b", {"mean": np.array([b"x"], dtype=object)})  # not numbers: nothing to remember, no error
    assert t.pending == 0


def test_windows_and_series_by_slot() -> None:
    clock = Clock(6000.0)
    t = tracker(clock=clock, slot_s=60.0)
    t.remember("old", {"label": np.array([1, 1])})
    t.report("old", labels=["0", "0"])  # f1 0 at t=6000
    clock.t += 600  # 10 minutes later
    t.remember("new", {"label": np.array([1, 0])})
    t.report("new", labels=["1", "0"])  # f1 1 at t=6600
    assert t.summary(300)["samples"] == 2 and t.summary(300)["f1"] == 1.0
    whole = t.summary()
    assert whole["samples"] == 4 and whole["accuracy"] == 0.5
    assert whole["series"] == [{"t": 6000.0, "value": 0.0}, {"t": 6600.0, "value": 1.0}]
    assert t.summary(300)["series"] == [{"t": 6600.0, "value": 1.0}]
    clock.t += 3 * 3600  # past the retention: windows are empty, the totals remain
    t.remember("later", {"label": np.array([1])})
    t.report("later", labels=["1"])
    assert t.summary(3600)["samples"] == 1 and len(t.summary(3600)["series"]) == 1
    assert t.summary()["samples"] == 5 and len(t.summary()["series"]) == 1


def test_empty_summary() -> None:
    s = tracker("regression", "y").summary(300)
    assert s == {"kind": "regression", "samples": 0, "accuracy": None, "precision": None, "recall": None,
                 "f1": None, "mae": None, "rmse": None, "series": []}


@pytest.mark.parametrize(("kind", "labels", "values", "field"), [
    ("classification", ["1", "0"], None, "labels"),           # 3 rows
    ("classification", None, [1.0, 0.0, 1.5], "values"),      # not classes
    ("classification", ["1", "0"], [1.0], "labels / values"),  # both
    ("classification", None, None, "labels / values"),       # neither
    ("classification", ["1", "", "0"], None, "labels"),
    ("regression", None, [1.0, 2.0], "values"),
    ("regression", None, [1.0, math.nan, 2.0], "values"),
    ("regression", ["1", "2", "3"], None, "labels"),
])
def test_bad_reports_name_the_field_and_credit_nothing(kind: str, labels: list[str] | None,
                                                       values: list[float] | None, field: str) -> None:
    t = tracker(kind, "y")
    t.remember("r", {"y": np.array([1, 0, 1])})
    with pytest.raises(InvalidArgument, match=f"^{field}"):
        t.report("r", labels=labels, values=values)
    assert t.pending == 1 and t.summary()["samples"] == 0


def test_remember_is_one_numpy_operation_per_request() -> None:
    """The hot path keeps a copy of the prediction only (not a view that would pin the batch)."""
    t = tracker(output="probs")
    batch = np.random.default_rng(2).random((64, 10)).astype(np.float32)
    t.remember("q", {"probs": batch[:8]})
    kept = t._pending.get("q")
    assert kept is not None and kept.shape == (8,) and not np.shares_memory(kept, batch)
    r = tracker("regression", "mean")
    r.remember("q", {"mean": batch[:8]})
    assert not np.shares_memory(r._pending.get("q"), batch)


def test_a_flood_of_made_up_classes_is_refused() -> None:
    t = tracker()
    for i in range(MAX_CLASSES - 1):
        t.remember(f"r{i}", {"label": np.array([0])})
        t.report(f"r{i}", labels=[f"class-{i}"])
    t.remember("last", {"label": np.array([0, 1])})
    with pytest.raises(InvalidArgument, match=f"labels: more than {MAX_CLASSES}"):
        t.report("last", labels=["new-1", "new-2"])
    assert t.summary()["samples"] == MAX_CLASSES - 1


# ---- the control plane's side ---------------------------------------------------------------------


def served_watch() -> ModelWatch:
    """A real watch: "m" version 1 tracks regression on ``y`` and has answered request "r" (2 rows); "plain"
    version 2 tracks nothing and has no drift reference."""
    watch = ModelWatch(clock=Clock())
    w = watch.attach("m", "1", {"infer.accuracy.kind": "regression"}, None, ["y"])
    watch.observe(w, "r", {}, {"y": np.array([1.0, 3.0])})
    watch.attach("plain", "2", {}, None, ["y"])
    return watch


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(RegistryStore.sqlite(tmp_path / "r.db"), LocalArtifactStore(tmp_path / "a"))
    yield cp
    cp.close()


def test_control_plane_without_a_watch_is_failed_precondition(control: ControlPlane) -> None:
    with pytest.raises(FailedPrecondition, match="ReportGroundTruth"):
        control.report_ground_truth("r", ["1"], [])
    with pytest.raises(FailedPrecondition, match="GetModelPerformance"):
        control.performance("m", "", 0.0)
    with pytest.raises(FailedPrecondition, match="GetDrift"):
        control.drift_report("m", "")


def test_control_plane_checks_fields_then_asks_the_watch(control: ControlPlane) -> None:
    control.watch = served_watch()
    for args, field in [(("", ["1"], []), "request_id"), (("r", [], []), "labels"), (("r", ["1"], [1.0]), "labels"),
                        (("r", [], [math.inf]), "values"), (("unknown", [], [math.nan]), "values")]:
        with pytest.raises(InvalidArgument, match=f"^{field}"):  # fields first, then the id
            control.report_ground_truth(*args)
    assert control.report_ground_truth("r", [], [1.0, 2.0]) == ("m", "1", 2)
    got = control.performance("m", "01", 60.0)  # versions as the registry spells them
    assert (got["model"], got["version"], got["samples"], got["mae"]) == ("m", "1", 2, 0.5)
    for model, version, window, field in [("", "", 0.0, "model"), ("m", "v1", 0.0, "version"),
                                          ("m", "", -1.0, "window_s"), ("m", "", math.nan, "window_s")]:
        with pytest.raises(InvalidArgument, match=f"^{field}"):
            control.performance(model, version, window)
    with pytest.raises(FailedPrecondition, match=r"infer\.accuracy\.kind"):
        control.performance("plain", "", 0.0)
    with pytest.raises(FailedPrecondition, match=r"drift_reference\.json"):
        control.drift_report("m", "1")
    with pytest.raises(NotFound, match="nope"):
        control.drift_report("nope", "")


def test_wire_conversion_turns_unknown_figures_into_nan() -> None:
    t = tracker("regression", "y")
    t.remember("r", {"y": np.array([1.0, 3.0])})
    t.report("r", values=[2.0, 3.0])
    msg = performance_to_pb({"model": "m", "version": "2", **t.summary()})
    assert (msg.model, msg.version, msg.kind, msg.samples) == ("m", "2", "regression", 2)
    assert msg.mae == 0.5 and msg.rmse == pytest.approx(math.sqrt(0.5)) and math.isnan(msg.f1)
    assert [(p.t, p.value) for p in msg.series] == [(1_000_000.0 // 60 * 60, 0.5)]
    report = drift_to_pb({"model": "m", "version": "1", "drifted": True, "at": 12.5, "rows": 400, "reason": "x",
                          "evaluated": 3, "features": [{"feature": "x[2]", "kind": "numeric", "rows": 400,
                                                        "psi": 0.4, "ks": 0.2, "ks_p": 1e-9, "wasserstein": 1.0,
                                                        "chi2": None, "chi2_p": None, "drifted": True}]})
    assert report.drifted and report.evaluated_at == 12.5 and report.rows == 400
    f = report.features[0]
    assert (f.feature, f.kind, f.psi, f.drifted) == ("x[2]", "numeric", 0.4, True) and math.isnan(f.chi2_p)
    assert drift_to_pb({"model": "m", "version": "1", "at": None, "features": []}).evaluated_at == 0.0


# ---- index and roles ------------------------------------------------------------------------------


def test_prediction_index_is_bounded() -> None:
    idx = PredictionIndex(capacity=2)
    idx.put("a", ("m", "1"))
    idx.put("b", ("m", "2"))
    idx.put("a", ("m", "3"))  # refreshed: b is now the oldest
    idx.put("c", ("n", "1"))
    assert idx.get("b") is None and idx.get("a") == ("m", "3") and idx.get("c") == ("n", "1") and len(idx) == 2
    assert idx.pop("a") == ("m", "3") and idx.get("a") is None


def test_rpc_roles() -> None:
    control = "/infer.control.v1.ControlPlane/"
    assert required_role(control + "ReportGroundTruth") == required_role(control + "ReportOutcome") == "infer"
    assert required_role(control + "GetModelPerformance") == "read"
    assert required_role(control + "GetDrift") == "read"
