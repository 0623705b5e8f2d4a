"""Data drift: the reference's rules and file, the statistics, and measured error rates.

The rates are measured with a fixed seed on a realistic reference (ten features: log-normal latencies, heavy-
tailed sizes, a Gaussian load, Poisson concurrency, two categorical inputs, four correlated matrix columns):
300 unshifted windows of 1000 rows give the false-positive rate, 100 shifted windows per scenario the
detection rate. The measured figures are printed (``pytest -s``) and recorded as test properties.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import signal, stats

from infer.errors import ModelConfigError
from infer.observability.drift import (
    OTHER,
    DriftMonitor,
    DriftReference,
    DriftSettings,
    FeatureDrift,
    build_reference,
    extract,
    reference_markdown,
)
from infer.observability.drift_reference import bin_counts

Draw = Callable[..., dict[str, np.ndarray]]
FILE_TYPES = np.array([b"pdf", b"docx", b"png", b"zip", b"csv", b"exe"], object)
FILE_MIX = [0.4, 0.25, 0.15, 0.1, 0.07, 0.03]
NAMESPACES = np.array([f"ns{i}".encode() for i in range(20)], object)
NS_MIX = (1 / np.arange(1, 21)) / (1 / np.arange(1, 21)).sum()
COV = np.array([[1, 0.6, 0.2, 0], [0.6, 1, 0.3, 0], [0.2, 0.3, 1, 0], [0, 0, 0, 1.0]])


def make_draw(rng: np.random.Generator) -> Draw:
    def draw(n: int, shift: float = 0.0, scale: float = 1.0, mix: list[float] | None = None) -> dict[str, Any]:
        return {
            "latency": np.exp(rng.normal(3, 0.5 * scale, (n, 1))).astype(np.float32),
            "size": np.exp(rng.normal(10, 2, n)).astype(np.int64),
            "load": rng.normal(5 + 2 * shift, 2, (n, 1)),  # sd 2: shift is in standard deviations
            "concurrency": rng.poisson(4, n).astype(np.int32),
            "file_type": rng.choice(FILE_TYPES, p=mix or FILE_MIX, size=(n, 1)),
            "namespace": rng.choice(NAMESPACES, p=NS_MIX, size=(n, 1)),
            "x": rng.multivariate_normal(np.zeros(4), COV, n),
        }
    return draw


@pytest.fixture(scope="module")
def world() -> tuple[DriftReference, Draw]:
    draw = make_draw(np.random.default_rng(20261127))
    return build_reference(draw(50_000), names={"x": ["x0", "x1", "x2", "x3"]}, source="test"), draw


def _windows(ref: DriftReference, draw: Draw, count: int, psi: float = 0.2, **shift: Any) -> float:
    """Share of ``count`` windows of 1000 rows (requests of 50) reported drifted."""
    mon = DriftMonitor(ref, window_rows=1000, psi_threshold=psi)
    hits = 0
    for _ in range(count):
        d = draw(1000, **shift)
        for i in range(0, 1000, 50):
            mon.observe({k: v[i:i + 50] for k, v in d.items()})
        report = mon.evaluate(mon.window())
        assert report.evaluated and report.rows == 1000
        hits += report.drifted
    return hits / count


# ---- rules and extraction ---------------------------------------------------------------------------


def test_rules_are_chosen_from_the_training_inputs() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    words = np.array([b"a few words", b"several more words here", b"short one"], object)
    ref = build_reference({
        "v": rng.normal(size=(n, 1)), "m": rng.normal(size=(n, 3)), "wide": rng.normal(size=(n, 100)),
        "img": rng.normal(size=(n, 2, 4, 4)), "cat": rng.choice(np.array([b"x", b"y"], object), n),
        "code": rng.integers(0, 5, n), "uid": np.array([f"u{i:06d}".encode() for i in range(n)], object),
        "text": np.array([w + f" {i}".encode() for i, w in enumerate(rng.choice(words, n))], object),
        "skip": rng.normal(size=n),
    }, categorical=("code",), ignore=("skip",), names={"m": ["m_a", "m_b"]})
    rules = {f.name: (f.input, f.kind, f.reduce, f.column) for f in ref.features}
    assert rules == {
        "v": ("v", "numeric", "value", None),
        "m_a": ("m", "numeric", "column", 0), "m_b": ("m", "numeric", "column", 1),
        "m[2]": ("m", "numeric", "column", 2),
        **{f"wide.{r}": ("wide", "numeric", r, None) for r in ("mean", "std", "last")},
        **{f"img.{r}": ("img", "numeric", r, None) for r in ("mean", "std", "last")},
        "cat": ("cat", "categorical", "value", None), "code": ("code", "categorical", "value", None),
        "text.length": ("text", "numeric", "length", None),  # free text: its length; "uid": an identifier
    }
    cat = next(f for f in ref.features if f.name == "cat")
    assert cat.categories[-1] == OTHER and math.isclose(float(cat.fractions.sum()), 1.0)
    assert len(next(f for f in ref.features if f.name == "v").sample) == 2000


def test_extract_applies_the_recorded_rules() -> None:
    rng = np.random.default_rng(1)
    hist = rng.normal(size=(500, 8))
    ref = build_reference({"history": hist, "length": np.full(500, 8), "kind": rng.choice(np.array(
        [b"a", b"b", b"c"], object), 500), "m": rng.normal(size=(500, 2))}, summarize=("history",),
        lengths={"history": "length"})
    assert {f.name for f in ref.features} == {"history.mean", "history.std", "history.last", "kind", "m[0]", "m[1]"}
    live_hist = np.array([[1.0, 2.0, 3.0, 0.0], [4.0, 4.0, 4.0, 4.0]])
    out = extract(ref, {"history": live_hist, "length": np.array([[3], [4]]),
                        "kind": np.array([[b"b"], [b"zzz"]], object), "m": np.array([[1.0, 2.0], [3.0, 4.0]])})
    np.testing.assert_allclose(out["history.mean"], [2.0, 4.0])
    np.testing.assert_allclose(out["history.std"], [float(np.std([1.0, 2.0, 3.0])), 0.0])
    np.testing.assert_allclose(out["history.last"], [3.0, 4.0])  # within each row's length, not the padding
    kind = next(f for f in ref.features if f.name == "kind")
    assert [kind.categories[c] for c in out["kind"]] == ["b", OTHER]  # unseen -> pooled
    np.testing.assert_allclose(out["m[1]"], [2.0, 4.0])
    # a missing input drops its features; without the length input rows are summarised whole
    out = extract(ref, {"history": live_hist})
    assert set(out) == {"history.mean", "history.std", "history.last"}
    np.testing.assert_allclose(out["history.last"], [0.0, 4.0])
    # str and bytes name the same category; a column past the live width is skipped
    out = extract(ref, {"kind": np.array(["a", b"c"], object), "m": np.ones((2, 1))})
    assert [kind.categories[c] for c in out["kind"]] == ["a", "c"] and "m[1]" not in out


def test_text_length_is_in_bytes() -> None:
    texts = np.array([f"{'é' * (i % 7)} word {i}" for i in range(300)], object)
    ref = build_reference({"t": texts}, text=("t",))
    out = extract(ref, {"t": np.array(["é", b"abc"], object)})
    np.testing.assert_allclose(out["t.length"], [2.0, 3.0])


# ---- the file ----------------------------------------------------------------------------------------


def test_reference_round_trip(world: tuple[DriftReference, Draw], tmp_path: Path) -> None:
    ref, _ = world
    ref.save(tmp_path / "drift_reference.json")
    back = DriftReference.load(tmp_path / "drift_reference.json")
    assert back.to_dict() == json.loads(json.dumps(ref.to_dict()))
    assert back.inputs == ("latency", "size", "load", "concurrency", "file_type", "namespace", "x")
    table = reference_markdown(back.describe(), back.rows)
    assert "| file_type | file_type | pdf 40" in table and "| x2 | x[:, 2] | mean" in table


def _doc(world: tuple[DriftReference, Draw]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(world[0].to_dict()))
    return doc


@pytest.mark.parametrize(("damage", "named"), [
    (lambda d: d.update(schema="other"), "schema"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.update(features=[]), "features"),
    (lambda d: d["features"][0].pop("input"), "features[0].input"),
    (lambda d: d["features"][0].update(kind="ordinal"), "features[0].kind"),
    (lambda d: d["features"][0].update(reduce="median"), "features[0].reduce"),
    (lambda d: d["features"][0].update(edges=[3, 2, 1]), "features[0].edges"),
    (lambda d: d["features"][0].update(fractions=[0.5, 0.6]), "features[0].fractions"),
    (lambda d: d["features"][0].update(sample=["a"]), "features[0].sample"),
    (lambda d: d["features"][0].update(mean=float("nan")), "features[0].mean"),
    (lambda d: d["features"][4]["categories"].pop(OTHER), "features[4].categories"),
    (lambda d: d["features"][7].update(column=-1), "features[7].column"),
    (lambda d: d["features"][1].update(name="latency"), "features[1].name"),
    (lambda d: d["features"][0].update(quantiles={"p05": None}), "features[0].quantiles"),
    (lambda d: d["features"][4].update(categories={"a": "x", OTHER: 1.0}), "features[4].categories"),
])
def test_bad_reference_files_name_the_field(world: tuple[DriftReference, Draw], tmp_path: Path,
                                           damage: Callable[[dict[str, Any]], Any], named: str) -> None:
    doc = _doc(world)
    damage(doc)
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelConfigError, match=named.replace("[", r"\[").replace("]", r"\]")) as e:
        DriftReference.load(path)
    assert str(path) in str(e.value)


def test_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "ref.json"
    path.write_text("{not json")
    with pytest.raises(ModelConfigError, match="not valid JSON"):
        DriftReference.load(path)


# ---- statistics --------------------------------------------------------------------------------------


def test_psi_ks_and_wasserstein_against_hand_and_scipy() -> None:
    ref = build_reference({"a": np.arange(100.0)}, bins=4)
    f = ref.features[0]
    np.testing.assert_allclose(f.edges, [24.75, 49.5, 74.25])
    np.testing.assert_allclose(f.fractions, [0.25, 0.25, 0.25, 0.25])
    live = np.concatenate([np.full(150, 10.0), np.full(50, 60.0)])  # bins: 0.75, 0, 0.25, 0
    mon = DriftMonitor(ref, window_rows=200, min_rows=100)
    mon.observe({"a": live})
    r = mon.evaluate(mon.window(), at=123.0).features[0]
    eps = 1e-4
    hand = (0.75 - 0.25) * math.log(0.75 / 0.25) + 2 * (eps - 0.25) * math.log(eps / 0.25)
    assert r.psi is not None and math.isclose(r.psi, hand, rel_tol=1e-12)
    ks = stats.ks_2samp(np.arange(100.0), live, method="asymp")
    assert r.ks == pytest.approx(ks.statistic) and r.ks_p == pytest.approx(ks.pvalue)
    w = stats.wasserstein_distance(np.arange(100.0), live)
    assert r.wasserstein_raw == pytest.approx(w) and r.wasserstein == pytest.approx(w / np.arange(100.0).std())


def test_values_on_bin_edges_fall_alike_in_training_and_serving() -> None:
    """Discrete values sit on the quantile edges: training and serving must bin them by one rule (each edge
    closes its bin on the right), or an unchanged stream shows PSI."""
    counts = np.random.default_rng(4).poisson(4, 5000).astype(np.float64)
    ref = build_reference({"c": counts})
    f = ref.features[0]
    assert np.isin(f.edges, counts).all()  # every edge is a value the data holds
    np.testing.assert_array_equal(bin_counts(f.edges, counts),
                                  np.bincount(np.digitize(counts, f.edges, right=True), minlength=len(f.edges) + 1))
    mon = DriftMonitor(ref, window_rows=5000, min_rows=100)
    mon.observe({"c": counts})
    r = mon.evaluate(mon.window()).features[0]
    assert r.psi == 0.0 and not r.drifted


def test_chi2_against_scipy_and_pooling() -> None:
    cats = np.array([b"a"] * 500 + [b"b"] * 300 + [b"c"] * 200, object)
    ref = build_reference({"k": cats})
    f = ref.features[0]
    live = np.array([b"a"] * 100 + [b"b"] * 300 + [b"c"] * 100, object)
    mon = DriftMonitor(ref, window_rows=500, min_rows=100)
    mon.observe({"k": live})
    r = mon.evaluate(mon.window()).features[0]
    smooth = (np.array([0.5, 0.3, 0.2, 0.0]) * 1000 + 0.5) / (1000 + 0.5 * 4)
    # the empty __other__ cell (expected 0.25 rows) is pooled into the smallest cell, "c"
    expected = np.array([smooth[0], smooth[1], smooth[2] + smooth[3]]) * 500
    chi = stats.chisquare([100, 300, 100], expected * 500 / expected.sum())
    assert r.chi2 == pytest.approx(chi.statistic) and r.chi2_p == pytest.approx(chi.pvalue)
    fr = np.maximum(f.fractions, 1e-4)
    q = np.maximum(np.array([0.2, 0.6, 0.2, 0.0]), 1e-4)
    assert r.psi == pytest.approx(float(np.sum((q - fr) * np.log(q / fr))))
    assert r.drifted and "k (PSI" in mon.evaluate(mon.window()).reason


# ---- the window --------------------------------------------------------------------------------------


def test_window_keeps_references_and_drops_whole_old_batches() -> None:
    ref = build_reference({"a": np.random.default_rng(2).normal(size=1000)})
    mon = DriftMonitor(ref, window_rows=1000, min_rows=300)
    arrays = [np.random.default_rng(i).normal(size=(100, 1)) for i in range(30)]
    for a in arrays[:2]:
        mon.observe({"a": a, "unused": a})
    early = mon.evaluate(mon.window())
    assert not early.evaluated and not early.drifted and "200 rows" in early.reason
    for a in arrays[2:]:
        mon.observe({"a": a})
    w = mon.window()
    assert w.rows == 1000 and len(w.batches) == 10 and w.batches[-1]["a"] is arrays[-1]
    assert set(w.batches[0]) == {"a"}
    mon.observe({"other": np.ones(5)})  # no input the reference reads: ignored
    mon.observe({"a": np.ones((50, 1))})
    assert mon.rows == 1050 and mon.window().rows == 1050 and w.rows == 1000  # snapshots do not move
    assert mon.evaluate(mon.window()).rows == 1000  # the newest 1000 rows, the oldest batch cut


def test_window_bounded_in_bytes() -> None:
    ref = build_reference({"img": np.random.default_rng(3).normal(size=(200, 3, 8, 8))})
    mon = DriftMonitor(ref, window_rows=1000, min_rows=10, max_bytes=100 * 3 * 8 * 8 * 8)
    for _ in range(20):
        mon.observe({"img": np.zeros((20, 3, 8, 8))})
    assert mon.rows == 100


def test_report_dict_matches_the_dashboard_contract(world: tuple[DriftReference, Draw]) -> None:
    ref, draw = world
    mon = DriftMonitor(ref)
    mon.observe(draw(1000, shift=1.5))
    body = mon.evaluate(mon.window(), at=1.5e9).to_dict()
    assert {"drifted", "at", "rows", "features", "reason"} <= set(body)
    assert body["drifted"] and body["at"] == 1.5e9 and body["rows"] == 1000
    assert "load" in body["reason"] and "latency" not in body["reason"]
    keys = {"feature", "kind", "psi", "ks", "ks_p", "wasserstein", "chi2", "chi2_p", "drifted"}
    assert all(keys <= set(f) for f in body["features"])
    json.dumps(body)


# ---- measured error rates ----------------------------------------------------------------------------


def test_false_positive_rate_on_unshifted_windows(world: tuple[DriftReference, Draw],
                                                 record_property: Callable[[str, Any], None]) -> None:
    ref, draw = world
    rate = _windows(ref, draw, 300)
    rate_low_psi = _windows(ref, draw, 100, psi=0.1)
    print(f"\ndrift false-positive rate: {rate:.2%} of 300 windows (psi 0.2), {rate_low_psi:.2%} of 100 (psi 0.1)")
    record_property("false_positive_rate", rate)
    assert rate <= 0.01 and rate_low_psi <= 0.02


@pytest.mark.parametrize(("shift", "psi"), [
    ({"shift": 0.75}, 0.2),  # mean +0.75 sd on one feature: PSI about 0.5
    ({"shift": 0.5}, 0.1),  # +0.5 sd gives PSI about 0.22: a 0.1 threshold catches it every time (0.2: ~93%)
    ({"scale": 2.0}, 0.2),  # a log-normal's sd doubled
    ({"mix": [0.2, 0.2, 0.2, 0.2, 0.1, 0.1]}, 0.2),  # the file-type mix changed: PSI about 0.33
])
def test_shifts_are_detected(world: tuple[DriftReference, Draw], shift: dict[str, Any], psi: float,
                             record_property: Callable[[str, Any], None]) -> None:
    ref, draw = world
    rate = _windows(ref, draw, 100, psi=psi, **shift)
    print(f"\ndrift detection rate {shift} psi {psi}: {rate:.0%} of 100 windows")
    record_property("detection_rate", rate)
    assert rate >= 0.99


def test_autocorrelated_stationary_inputs(record_property: Callable[[str, Any], None]) -> None:
    """AR(1), phi 0.9: windows of 1000 consecutive values hold about 50 independent ones. KS alone (it assumes
    independent rows) rejects about 40% of them; the PSI threshold keeps the alarm quiet."""
    rng = np.random.default_rng(5)
    phi = 0.9

    def ar(n: int) -> np.ndarray:
        return np.asarray(signal.lfilter([1.0], [1.0, -phi], rng.normal(size=n + 500) * math.sqrt(1 - phi * phi))[500:])

    ref = build_reference({"a": ar(100_000), "b": rng.normal(size=100_000)})
    mon = DriftMonitor(ref)
    series = ar(200_000)
    alarms = ks_rejects = 0
    for w in range(200):
        mon.observe({"a": series[w * 1000:(w + 1) * 1000], "b": rng.normal(size=1000)})
        report = mon.evaluate(mon.window())
        alarms += report.drifted
        ks_rejects += (report.features[0].ks_p or 1.0) < 0.005
    print(f"\nAR(1) phi 0.9: drift reported in {alarms / 200:.1%} of 200 windows (KS alone: {ks_rejects / 200:.0%})")
    record_property("ar1_false_positive_rate", alarms / 200)
    assert alarms / 200 <= 0.01


# ---- settings ----------------------------------------------------------------------------------------


def test_settings_from_params() -> None:
    assert DriftSettings.from_params({}) == DriftSettings()
    s = DriftSettings.from_params({"infer.drift.window": "5000", "infer.drift.min_rows": "500",
                                   "infer.drift.alpha": "0.001", "infer.drift.psi": "0.1",
                                   "infer.drift.every_s": "2.5", "infer.drift.degrade": "true",
                                   "infer.drift.reference": "ref/drift.json", "other": "x"})
    assert s == DriftSettings("ref/drift.json", 5000, 500, 0.001, 0.1, 2.5, True)
    assert DriftSettings.from_params({"infer.drift.window": "100"}).min_rows == 100


@pytest.mark.parametrize(("key", "value"), [
    ("window", "lots"), ("window", "5"), ("window", "1.5"), ("min_rows", "2000"), ("alpha", "0"),
    ("alpha", "0.9"), ("psi", "nan"), ("psi", "-1"), ("every_s", "0"), ("degrade", "maybe"),
])
def test_bad_settings_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ModelConfigError, match=f"infer.drift.{key}"):
        DriftSettings.from_params({f"infer.drift.{key}": value})


def test_monitor_arguments_are_checked(world: tuple[DriftReference, Draw]) -> None:
    with pytest.raises(ValueError, match="min_rows"):
        DriftMonitor(world[0], window_rows=100, min_rows=200)
    with pytest.raises(ValueError, match="no input gave a feature"):
        build_reference({"id": np.array([f"id{i}".encode() for i in range(100)], object)})


def test_anomaly_event_reference_at_the_pipeline_window(record_property: Callable[[str, Any], None]) -> None:
    """The anomaly build's reference and window on its own event generator: quiet on anomaly-free traffic
    from the training population (load follows the hour and the weekday: shorter windows alarm), raised by
    a population with other habits."""
    from infer.tasks.anomaly import events as ev
    from infer.tasks.anomaly.pipeline import DRIFT_CATEGORICAL, DRIFT_IGNORED, DRIFT_WINDOW

    split = ev.generate_split(60_000, 1_000, 60_000, 0, n_users=50, same_population=False)
    later = ev.generate(60_000, 7, population=split.train.population, start=split.train.end, anomaly_fraction=0.0)
    ref = build_reference(split.train.events, ignore=DRIFT_IGNORED, categorical=DRIFT_CATEGORICAL)
    mon = DriftMonitor(ref, window_rows=DRIFT_WINDOW, min_rows=DRIFT_WINDOW)

    def alarms(events: dict[str, np.ndarray]) -> tuple[int, int]:
        hits = count = 0
        for end in range(DRIFT_WINDOW, len(events["timestamp"]) + 1, 5_000):
            mon.reset()
            mon.observe({k: v[end - DRIFT_WINDOW:end].reshape(-1, 1) for k, v in events.items()})
            hits += mon.evaluate(mon.window()).drifted
            count += 1
        return hits, count

    quiet, other = alarms(later.events), alarms(split.test.events)
    print(f"\nanomaly events, windows of {DRIFT_WINDOW}: {quiet[0]}/{quiet[1]} alarms on the training population, "
          f"{other[0]}/{other[1]} on another")
    record_property("anomaly_false_alarms", quiet)
    assert quiet[0] == 0 and other[0] == other[1]


def test_inputs_that_do_not_fit_a_rule_are_skipped_not_fatal() -> None:
    rng = np.random.default_rng(9)
    ref = build_reference({"a": rng.normal(size=500), "m": rng.normal(size=(500, 3)), "h": rng.normal(size=(500, 80))})
    mon = DriftMonitor(ref, min_rows=10)
    mon.observe({"a": np.array([b"x"] * 20, object), "m": np.zeros((20, 0)), "h": np.full((20, 80), 1e300)})
    mon.observe({"a": np.float64(3.0)})  # a scalar counts as one row
    report = mon.evaluate(mon.window())
    by = {f.feature: f for f in report.features}
    assert by["a"].rows == 1 and by["a"].psi is None and by["m[0]"].rows == 0
    assert by["h.mean"].drifted and by["h.last"].drifted
    json.dumps(report.to_dict(), allow_nan=False)
    assert FeatureDrift("f", "numeric", 5, psi=1.0, wasserstein=math.inf).to_dict()["wasserstein"] is None
