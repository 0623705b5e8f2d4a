"""The anomaly task: data generator, ONNX export, Triton layout, metrics and the default repository."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from infer.tasks import default_repository
from infer.tasks.anomaly import data
from infer.tasks.anomaly.build import build_model, export_onnx, train_pipeline
from infer.tasks.anomaly.evaluate import main as evaluate_main

N_TRAIN = 2000  # measured held-out ROC AUC 0.922-0.934 over seeds 0-5 at this size
_ORT_TO_TRITON = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}
_TENSOR_RE = re.compile(r'\{\s*name:\s*"([^"]+)"\s+data_type:\s*(\w+)\s+dims:\s*\[([^\]]*)\]\s*\}')


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    repo = tmp_path_factory.mktemp("repo")
    return repo, build_model(repo, n_train=N_TRAIN, seed=0)


def _section(config: str, key: str) -> list[tuple[str, str, list[int]]]:
    match = re.search(rf"^{key}\s*\[(.*?)^\]", config, re.S | re.M)
    assert match, f"no {key} section in config"
    return [(n, t, [int(d) for d in dims.split(",")]) for n, t, dims in _TENSOR_RE.findall(match.group(1))]


def test_features_shape_dtype_and_determinism() -> None:
    assert len(data.FEATURE_NAMES) == 16 == len(set(data.FEATURE_NAMES))
    ds = data.make_dataset(5000, np.random.default_rng(7), anomaly_fraction=0.1)
    again = data.make_dataset(5000, np.random.default_rng(7), anomaly_fraction=0.1)
    assert ds.x.dtype == np.float32 and ds.x.shape == (5000, 16)
    assert np.isfinite(ds.x).all()
    np.testing.assert_array_equal(ds.x, again.x)
    np.testing.assert_array_equal(ds.kind, again.kind)
    assert ds.y.sum() == 500 and set(np.unique(ds.kind)) == set(range(len(data.ANOMALY_KINDS) + 1))
    np.testing.assert_array_equal(ds.y, ds.kind > 0)


def test_normal_events_have_correlated_structure() -> None:
    x = data.make_normal(20000, np.random.default_rng(0))
    corr = np.asarray(np.corrcoef(x, rowvar=False))
    col = {name: i for i, name in enumerate(data.FEATURE_NAMES)}
    assert corr[col["log_file_size"], col["log_hash_ms"]] > 0.8
    assert corr[col["concurrency"], col["log_namespace_rate"]] > 0.5
    assert corr[col["hour_cos"], col["concurrency"]] < -0.4  # busier in the afternoon


def test_injected_anomalies_change_only_their_rows() -> None:
    rng = np.random.default_rng(3)
    events = data.generate_events(2000, rng)
    spiked, kind = data.inject_anomalies(events, rng, fraction=0.2, kinds=("latency_spike",))
    before, after = data.featurize(events), data.featurize(spiked)
    latency = data.FEATURE_NAMES.index("log_api_latency_ms")
    np.testing.assert_array_equal(before[kind == 0], after[kind == 0])
    assert (after[kind > 0, latency] > before[kind > 0, latency] + 1.9).all()
    with pytest.raises(ValueError):
        data.inject_anomalies(events, rng, kinds=("no_such_kind",))


def test_files_and_config_match_onnx_signature(built: tuple[Path, dict[str, Any]]) -> None:
    repo, _ = built
    model_dir = repo / "anomaly"
    assert (model_dir / "1" / "model.onnx").is_file() and (model_dir / "metrics.json").is_file()
    config = (model_dir / "config.pbtxt").read_text()
    assert re.search(r'^name:\s*"anomaly"$', config, re.M)
    assert re.search(r'^platform:\s*"onnxruntime_onnx"$', config, re.M)
    max_batch = int(re.search(r"^max_batch_size:\s*(\d+)$", config, re.M).group(1))  # type: ignore[union-attr]
    assert max_batch == 1024

    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    for key, args in (("input", session.get_inputs()), ("output", session.get_outputs())):
        expected = [(a.name, _ORT_TO_TRITON[a.type], list(a.shape[1:])) for a in args]
        assert _section(config, key) == expected
        assert all(isinstance(a.shape[0], str) for a in args)  # dynamic batch dimension
    assert [a.name for a in session.get_inputs()] == ["features"]
    assert [a.name for a in session.get_outputs()] == ["label", "score"]

    x = data.make_normal(7, np.random.default_rng(1))
    label, score = session.run(None, {"features": x})
    assert label.dtype == np.int64 and label.shape == (7, 1)
    assert score.dtype == np.float32 and score.shape == (7, 1)
    np.testing.assert_array_equal(label, (score > 0).astype(np.int64))


def test_held_out_metrics(built: tuple[Path, dict[str, Any]]) -> None:
    repo, metrics = built
    assert json.loads((repo / "anomaly" / "metrics.json").read_text()) == metrics
    assert metrics["n_eval"] == 20000 and metrics["n_anomalies"] == 1000
    assert metrics["roc_auc"] > 0.9
    assert metrics["average_precision"] > 0.6
    assert metrics["precision"] > 0.6 and metrics["recall"] > 0.5
    assert metrics["false_positive_rate"] < 0.02  # threshold: 1% of normal training events
    for kind in ("latency_spike", "error_storm", "user_burst"):
        assert metrics["per_kind"][kind]["roc_auc"] > 0.97


def test_build_is_deterministic(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    repo, metrics = built
    again = build_model(tmp_path, n_train=N_TRAIN, seed=0)
    assert again == metrics
    for rel in ("1/model.onnx", "config.pbtxt"):
        assert (tmp_path / "anomaly" / rel).read_bytes() == (repo / "anomaly" / rel).read_bytes()
    other = build_model(tmp_path, name="other", n_train=N_TRAIN, seed=1)
    assert other["onnx_sha256"] != metrics["onnx_sha256"]


def test_onnx_export_matches_sklearn() -> None:
    pipeline = train_pipeline(data.make_normal(3000, np.random.default_rng(11)), random_state=5)
    session = ort.InferenceSession(export_onnx(pipeline).SerializeToString(), providers=["CPUExecutionProvider"])
    x = data.make_dataset(6000, np.random.default_rng(12), anomaly_fraction=0.3).x
    label, score = session.run(None, {"features": x})
    reference = -pipeline.decision_function(x.astype(np.float64))
    diff = np.abs(score[:, 0] - reference)
    # float32 affine map vs float64 sklearn: a rare split flips at a threshold, moving the score by ~1e-4
    assert np.mean(diff < 1e-5) > 0.99 and diff.max() < 5e-3
    flagged = pipeline.predict(x.astype(np.float64)) == -1
    disagree = label[:, 0] != flagged
    assert np.all(np.abs(reference[disagree]) < 5e-3)


def test_evaluate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_main(["--repo", str(tmp_path), "--n-train", "1000", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "anomaly" / "metrics.json").read_text())


def test_default_repository_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INFER_HOME", str(tmp_path / "home"))
    assert default_repository.default_repository_path() == tmp_path / "home" / "model_repository"
    monkeypatch.delenv("INFER_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_repository.default_repository_path() == tmp_path / ".cache" / "infer" / "model_repository"


def test_ensure_default_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []

    def small_anomaly(repo: Path) -> list[str]:
        calls.append(repo)
        build_model(repo, name="anomaly", n_train=1000)
        return ["anomaly"]

    monkeypatch.setattr(default_repository, "DEFAULT_BUILDERS", {"anomaly": small_anomaly})  # only this family
    monkeypatch.setenv("INFER_HOME", str(tmp_path))
    target = tmp_path / "model_repository"

    assert default_repository.ensure_default_repository() == target
    assert (target / "anomaly" / "1" / "model.onnx").is_file()
    assert calls[0].parent == tmp_path and calls[0] != target  # built beside it, then renamed
    assert default_repository.ensure_default_repository() == target and len(calls) == 1

    (target / "anomaly" / "1" / "model.onnx").unlink()  # incomplete: rebuilt
    assert default_repository.ensure_default_repository() == target and len(calls) == 2
    assert (target / "anomaly" / "1" / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_repository"]  # no leftovers


def test_failed_build_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(repo: Path) -> list[str]:
        (repo / "anomaly").mkdir()
        raise RuntimeError("boom")

    monkeypatch.setattr(default_repository, "DEFAULT_BUILDERS", {"anomaly": broken})  # only this family
    monkeypatch.setenv("INFER_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="boom"):
        default_repository.ensure_default_repository()
    assert list(tmp_path.iterdir()) == []


def test_build_default_repository_lists_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def small_anomaly(repo: Path) -> list[str]:
        build_model(repo, name="anomaly", n_train=1000)
        return ["anomaly"]

    monkeypatch.setattr(default_repository, "DEFAULT_BUILDERS", {"anomaly": small_anomaly})  # only this family
    names = default_repository.build_default_repository(tmp_path / "repo")
    assert names == ["anomaly"]
    assert (tmp_path / "repo" / "anomaly" / "config.pbtxt").is_file()
