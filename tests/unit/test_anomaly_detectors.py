"""Anomaly detectors exported to ONNX (isolation forest, LOF, autoencoder FP32/INT8) and the ADBench runner.

The autoencoder tests need the ``torch`` extra and skip without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray
from scipy.stats import spearmanr

from infer.tasks.anomaly import adbench
from infer.tasks.anomaly import detectors as det

N_FEATURES = 5
DETECTORS = ["isolation_forest", "lof", "autoencoder", "autoencoder_int8"]


@pytest.fixture(scope="module")
def toy() -> dict[str, NDArray[np.float32]]:
    """Correlated Gaussian normals on varied scales; outliers 6-9 standard deviations out along random directions."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(N_FEATURES, N_FEATURES))
    scales = np.array([1.0, 10.0, 0.1, 100.0, 3.0])
    offset = rng.normal(size=N_FEATURES) * 50

    def normal(n: int) -> NDArray[np.float32]:
        rows: NDArray[np.float32] = ((rng.normal(size=(n, N_FEATURES)) @ mix) * scales + offset).astype(np.float32)
        return rows

    train, inliers = normal(500), normal(40)
    directions = rng.normal(size=(8, N_FEATURES))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    std = train.std(axis=0)
    outliers = (train.mean(axis=0) + directions * rng.uniform(6, 9, (8, 1)) * std * 3).astype(np.float32)
    return {"train": train, "inliers": inliers, "outliers": outliers}


@pytest.fixture(scope="module")
def classic(toy: dict[str, NDArray[np.float32]]) -> dict[str, det.FittedDetector]:
    return {
        "isolation_forest": det.fit_isolation_forest(toy["train"], 0, n_estimators=50),
        "lof": det.fit_lof(toy["train"], 0, n_neighbors=10),
    }


@pytest.fixture(scope="module")
def torch_ready() -> None:
    """Skip the autoencoder tests where torch (the optional ``torch`` extra) is not installed."""
    pytest.importorskip("torch")


@pytest.fixture(scope="module")
def autoencoders(torch_ready: None, toy: dict[str, NDArray[np.float32]]) -> dict[str, onnx.ModelProto]:
    fp32 = det.train_autoencoder(toy["train"], 0, epochs=5, min_steps=300)
    return {"autoencoder": fp32, "autoencoder_int8": det.quantize_int8(fp32, toy["train"])}


@pytest.fixture(params=DETECTORS)
def model(request: pytest.FixtureRequest, classic: dict[str, det.FittedDetector]) -> onnx.ModelProto:
    name: str = request.param
    if name.startswith("autoencoder"):
        built: dict[str, onnx.ModelProto] = request.getfixturevalue("autoencoders")
        return built[name]
    export = det.export_isolation_forest if name == "isolation_forest" else det.export_lof
    exported: onnx.ModelProto = export(classic[name])
    return exported


def _run(model: onnx.ModelProto, x: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    score, prob = sess.run([det.SCORE_NAME, det.PROB_NAME], {det.INPUT_NAME: x})
    return score, prob


def test_signature_is_x_to_score_and_prob_with_dynamic_batch(model: onnx.ModelProto) -> None:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("x", "tensor(float)", N_FEATURES)
    assert isinstance(inp.shape[0], str)  # symbolic batch dimension
    outs = {o.name: o for o in sess.get_outputs()}
    assert set(outs) == {"score", "prob"}
    for out in outs.values():
        assert out.type == "tensor(float)" and isinstance(out.shape[0], str) and out.shape[1] == 1


def test_batched_and_unbatched_agree(model: onnx.ModelProto, toy: dict[str, NDArray[np.float32]]) -> None:
    x = np.concatenate([toy["inliers"][:5], toy["outliers"][:3]])
    whole = _run(model, x)
    singles = [_run(model, x[i : i + 1]) for i in range(8)]
    seven_one = [_run(model, x[:7]), _run(model, x[7:])]
    for out in range(2):
        assert whole[out].shape == (8, 1) and whole[out].dtype == np.float32
        np.testing.assert_allclose(np.concatenate([s[out] for s in singles]), whole[out], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.concatenate([s[out] for s in seven_one]), whole[out], rtol=1e-5, atol=1e-7)


def test_outliers_score_higher_than_inliers(model: onnx.ModelProto, toy: dict[str, NDArray[np.float32]]) -> None:
    s_in, _ = det.score_onnx(model, toy["inliers"])
    s_out, p_out = det.score_onnx(model, toy["outliers"])
    assert s_out.min() > s_in.max()
    assert p_out.min() > 0.95


def test_prob_in_unit_interval_and_monotone_in_score(
    model: onnx.ModelProto, toy: dict[str, NDArray[np.float32]]
) -> None:
    # a ray from the training mean far past the outliers, plus every toy row
    centre, far = toy["train"].mean(axis=0), toy["outliers"][0]
    ray = centre + np.linspace(0.0, 3.0, 200)[:, None] * (far - centre)
    x = np.concatenate([ray.astype(np.float32), toy["train"], toy["inliers"], toy["outliers"]])
    score, prob = det.score_onnx(model, x)
    assert np.all((prob >= 0.0) & (prob <= 1.0))
    order = np.lexsort((prob, score))
    assert np.all(np.diff(prob[order]) >= 0.0)
    assert prob[order][-1] == 1.0  # beyond every training score


def _assert_uniform_prob(model: onnx.ModelProto, x: NDArray[np.float32]) -> None:
    """On the rows it was calibrated on, ``prob`` (their empirical CDF) is uniform on [0, 1]."""
    _, prob = det.score_onnx(model, x)
    np.testing.assert_allclose(np.sort(prob), (np.arange(prob.size) + 0.5) / prob.size, atol=0.03)


def test_prob_is_uniform_on_the_training_rows(
    classic: dict[str, det.FittedDetector], toy: dict[str, NDArray[np.float32]]
) -> None:
    _assert_uniform_prob(det.export_isolation_forest(classic["isolation_forest"]), toy["train"])


def test_autoencoder_prob_is_uniform_on_the_training_rows(
    autoencoders: dict[str, onnx.ModelProto], toy: dict[str, NDArray[np.float32]]
) -> None:
    _assert_uniform_prob(autoencoders["autoencoder"], toy["train"])


@pytest.mark.parametrize("whiten", [False, True])
def test_isolation_forest_matches_sklearn(toy: dict[str, NDArray[np.float32]], whiten: bool) -> None:
    fitted = det.fit_isolation_forest(toy["train"], 0, whiten=whiten, n_estimators=50)
    x = np.concatenate([toy["train"], toy["inliers"], toy["outliers"]])
    score, prob = det.score_onnx(det.export_isolation_forest(fitted), x)
    reference = -fitted.estimator.score_samples(fitted.features(x))
    np.testing.assert_allclose(score, reference, rtol=1e-4, atol=1e-6)
    n_in, n_out = len(toy["inliers"]), len(toy["outliers"])
    assert prob[-n_out:].min() > np.median(prob[-(n_in + n_out):-n_out])  # outliers rank above inliers
    if whiten:  # the rotation is real: the whitened training rows are uncorrelated with unit variance
        u = fitted.features(toy["train"])
        np.testing.assert_allclose(np.cov(u, rowvar=False), np.eye(u.shape[1]), atol=1e-3)


def test_lof_matches_sklearn(classic: dict[str, det.FittedDetector], toy: dict[str, NDArray[np.float32]]) -> None:
    fitted = classic["lof"]
    x = np.concatenate([toy["inliers"], toy["outliers"]])
    score, _ = det.score_onnx(det.export_lof(fitted), x, batch_size=16)
    reference = -fitted.estimator.score_samples(fitted.scaler.transform(x))
    np.testing.assert_allclose(score, reference, rtol=1e-5)
    np.testing.assert_allclose(np.sort(fitted.train_scores), np.sort(-fitted.estimator.negative_outlier_factor_))


def test_lof_rejects_metrics_the_graph_does_not_compute(toy: dict[str, NDArray[np.float32]]) -> None:
    with pytest.raises(ValueError, match="euclidean"):
        det.fit_lof(toy["train"], metric="manhattan")
    with pytest.raises(ValueError, match="2-D"):
        det.fit_lof(toy["train"][0])


def test_training_is_deterministic_for_a_seed(toy: dict[str, NDArray[np.float32]]) -> None:
    x = toy["train"]
    first = det.train_isolation_forest(x, 3, n_estimators=20).SerializeToString()
    assert det.train_isolation_forest(x, 3, n_estimators=20).SerializeToString() == first
    assert det.train_isolation_forest(x, 4, n_estimators=20).SerializeToString() != first
    assert det.train_lof(x, 0).SerializeToString() == det.train_lof(x, 0).SerializeToString()


def test_constant_column_and_score_onnx_inputs(toy: dict[str, NDArray[np.float32]], tmp_path: Path) -> None:
    x = toy["train"].copy()
    x[:, 2] = 7.0  # zero variance: the scaler keeps scale 1
    model = det.train_isolation_forest(x, 0, n_estimators=10)
    path = tmp_path / "if.onnx"
    path.write_bytes(model.SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    results = [det.score_onnx(m, x[:9], batch_size=4) for m in (model, path, str(path), path.read_bytes(), sess)]
    for score, prob in results:
        assert np.all(np.isfinite(score)) and score.shape == prob.shape == (9,)
        np.testing.assert_array_equal(score, results[0][0])
    props = {p.key: p.value for p in model.metadata_props}
    assert props["detector"] == "isolation_forest" and props["n_train"] == "500"


def test_autoencoder_is_deterministic_and_int8_is_static_qdq(
    autoencoders: dict[str, onnx.ModelProto], toy: dict[str, NDArray[np.float32]]
) -> None:
    again = det.train_autoencoder(toy["train"], 0, epochs=5, min_steps=300)
    assert again.graph.SerializeToString() == autoencoders["autoencoder"].graph.SerializeToString()
    int8 = autoencoders["autoencoder_int8"]
    assert {p.key: p.value for p in int8.metadata_props}["quantization"] == "static-qdq"
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Gemm"} <= ops


def test_int8_agrees_with_fp32(autoencoders: dict[str, onnx.ModelProto], toy: dict[str, NDArray[np.float32]]) -> None:
    x = np.concatenate([toy["inliers"], toy["outliers"], toy["train"][:200]])
    s32, _ = det.score_onnx(autoencoders["autoencoder"], x)
    s8, _ = det.score_onnx(autoencoders["autoencoder_int8"], x)
    assert spearmanr(s32, s8).statistic > 0.9


def test_compare_int8_reports_accuracy_and_speed(
    autoencoders: dict[str, onnx.ModelProto], toy: dict[str, NDArray[np.float32]]
) -> None:
    x = np.concatenate([toy["inliers"], toy["outliers"]])
    y = np.r_[np.zeros(len(toy["inliers"])), np.ones(len(toy["outliers"]))]
    report = det.compare_int8(
        autoencoders["autoencoder"],
        autoencoders["autoencoder_int8"],
        x,
        y,
        repeats=1,
        rows_batch1=10,
        rows_batch256=512,
    )
    for variant in ("fp32", "int8"):
        assert report[variant]["roc_auc"] == 1.0
        assert report[variant]["rows_per_s_batch1"] > 0 and report[variant]["rows_per_s_batch256"] > 0
    assert report["spearman"] > 0.9 and 0.0 <= report["prob_max_abs_diff"] <= 1.0
    assert report["speedup_batch256"] > 0


# ------------------------------------------------------------------------------------------------- adbench


def test_split_trains_on_normals_only() -> None:
    y = np.r_[np.zeros(100, int), np.ones(10, int)]
    train, test = adbench.split(y, seed=1)
    assert len(train) == 70 and not y[train].any()
    assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == 110
    assert y[test].sum() == 10
    again, _ = adbench.split(y, seed=1)
    other, _ = adbench.split(y, seed=2)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)


def _write_sets(directory: Path, toy: dict[str, NDArray[np.float32]]) -> None:
    x = np.concatenate([toy["train"][:150], toy["outliers"]]).astype(np.float64)
    y = np.r_[np.zeros(150, int), np.ones(len(toy["outliers"]), int)]
    np.savez(directory / "2_toy.npz", X=x, y=y)
    np.savez(directory / "10_toy.npz", X=x[::-1], y=y[::-1])


def test_adbench_main_prints_a_table_and_writes_json(
    tmp_path: Path, toy: dict[str, NDArray[np.float32]], capsys: pytest.CaptureFixture[str]
) -> None:
    _write_sets(tmp_path, toy)
    out = tmp_path / "results.json"
    assert adbench.main(["--data", str(tmp_path), "--out", str(out), "--detectors", "isolation_forest", "lof"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| set |") and "IF (ONNX)" in lines[0] and "sklearn IF (ref)" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["2_toy", "10_toy", "**mean**"]
    report: dict[str, Any] = json.loads(out.read_text())
    assert set(report["mean"]) == {"isolation_forest", "lof", adbench.REFERENCE}
    for result in report["sets"]["2_toy"]["results"].values():
        assert 0.9 <= result["roc_auc"] <= 1.0 and 0.0 < result["pr_auc"] <= 1.0


def test_adbench_without_data_skips_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(adbench.ENV_VAR, str(tmp_path / "absent"))
    assert adbench.default_data_dir() == tmp_path / "absent"
    assert adbench.main([]) == 0
    assert "not found" in capsys.readouterr().err


def test_with_columns_reads_the_wide_input_and_uses_the_chosen_columns(
    classic: dict[str, det.FittedDetector], toy: dict[str, NDArray[np.float32]]
) -> None:
    narrow = det.export_isolation_forest(classic["isolation_forest"])
    x = np.concatenate([toy["inliers"], toy["outliers"]])
    f = x.shape[1]
    wide = np.concatenate([np.full((len(x), 2), 99.0, np.float32), x, np.zeros((len(x), 1), np.float32)], axis=1)
    wrapped = det.with_columns(narrow, f + 3, list(range(2, 2 + f)))
    np.testing.assert_array_equal(det.score_onnx(wrapped, wide)[0], det.score_onnx(narrow, x)[0])
    with pytest.raises(ValueError, match="distinct indices"):
        det.with_columns(narrow, f, [f])
