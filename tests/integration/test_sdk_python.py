"""The Python SDK (``infer.client``) against the real server: a small repository (the anomaly pipeline and the
forecaster built small, tiny vision and NLP models of the real programs, every V2 datatype through an identity
model) served with bearer tokens; health, metadata, inference and the task helpers; bad requests by field; retries
on UNAVAILABLE counted (a stopped server, a server started while the client retries); deadlines; tokens; the
control plane; the README's quickstart run as written; the async client through the same scenario."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures import ROOT, ServerProcess, write_double, write_identity_all
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from infer.client import (
    AsyncInferClient,
    DeadlineExceeded,
    InferClient,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RetryPolicy,
    TLSConfig,
    Unauthenticated,
    Unavailable,
    fallback_chain,
    model_version,
)

ADMIN, READER = "sdk-admin-token", "sdk-reader-token"
SEVERITIES = {"NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL"}
TYPES = {"statistical", "behavioural", "temporal", "performance", "content", "security"}
V2 = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
      "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
      "FP32": np.float32, "FP64": np.float64}
HIDDEN = 384  # the NLP programs' embedding width


# ---- tiny models of the real vision and NLP programs ---------------------------------------------


def _save(graph: Any, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _tiny_classifier(path: Path) -> Path:
    """pixels [N, 3, S, S] -> embedding = mean colour [N, 3], logits = colour scores [N, 4] (red, green, blue, grey)."""
    w = np.array([[1, 0, 0, 0.3], [0, 1, 0, 0.3], [0, 0, 1, 0.3]], np.float32) * 10
    nodes = [helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["embedding"]),
             helper.make_node("MatMul", ["embedding", "w"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tiny_classifier", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])], [numpy_helper.from_array(w, "w")])
    return _save(graph, path)


def _tiny_encoder(path: Path) -> Path:
    """token ids -> [count of 'good', count of 'bad', 0, ...] (ids 4 and 5), 384 wide."""
    widen = np.zeros((2, HIDDEN), np.float32)
    widen[0, 0] = widen[1, 1] = 1.0
    nodes = [helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT)]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1"), numpy_helper.from_array(widen, "widen")]
    for word, tid in (("good", 4), ("bad", 5)):
        inits.append(numpy_helper.from_array(np.array(tid, np.int64), f"id_{word}"))
        nodes += [helper.make_node("Equal", ["input_ids", f"id_{word}"], [f"is_{word}"]),
                  helper.make_node("Cast", [f"is_{word}"], [f"f_{word}"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"f_{word}", "mask"], [f"m_{word}"]),
                  helper.make_node("ReduceSum", [f"m_{word}", "axis1"], [f"n_{word}"], keepdims=1)]
    nodes += [helper.make_node("Concat", ["n_good", "n_bad"], ["counts"], axis=1),
              helper.make_node("MatMul", ["counts", "widen"], ["embedding"])]
    graph = helper.make_graph(
        nodes, "tiny_encoder", [helper.make_tensor_value_info(n, TensorProto.INT64, ["N", "T"])
                                for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", HIDDEN])], inits)
    return _save(graph, path)


def _tiny_head(path: Path) -> Path:
    """embedding [N, 384] -> probabilities [N, 2] (negative, positive): 'good' pushes positive, 'bad' negative."""
    w = np.zeros((HIDDEN, 2), np.float32)
    w[0, 1] = w[1, 0] = 3.0
    nodes = [helper.make_node("MatMul", ["embedding", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "tiny_head", [helper.make_tensor_value_info("embedding", TensorProto.FLOAT,
                                                                                 ["N", HIDDEN])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(w, "w")])
    return _save(graph, path)


def _tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1, "the": 2, "film": 3, "good": 4, "bad": 5, "was": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def _write_small_vision_and_nlp(repo: Path, work: Path) -> None:
    from infer.core.files import write_atomic
    from infer.runtimes.nlp_heads import ClassifyProgram
    from infer.tasks.kernel_models import kernel_config
    from infer.tasks.nlp.encoder import write_encoder_model
    from infer.tasks.vision.build import write_classifier_model
    from infer.tasks.vision.quality import write_quality_model

    write_classifier_model(repo, "vision_classify", _tiny_classifier(work / "classifier.onnx"),
                           ["red", "green", "blue", "grey"], mean=[0, 0, 0], std=[1, 1, 1], size=32, resize=32,
                           top_k=2, max_batch_size=8)
    write_quality_model(repo, max_batch_size=8)
    encoder, tokenizer = _tiny_encoder(work / "encoder.onnx"), _tokenizer(work / "tokenizer.json")
    write_encoder_model(repo, "nlp_embed", encoder, tokenizer, max_length=32, max_batch_size=8)
    version = repo / "nlp_classify" / "1"
    for name, src in (("model.onnx", encoder), ("tokenizer.json", tokenizer),
                      ("sentiment.onnx", _tiny_head(work / "head.onnx"))):
        write_atomic(version / name, src.read_bytes())
    params = {"model": "model.onnx", "tokenizer": "tokenizer.json", "max_length": 32,
              "heads": {"sentiment": {"model": "sentiment.onnx", "labels": ["negative", "positive"]}}}
    write_atomic(version / "kernel.json", json.dumps({"program": "nlp_classify", "params": params}).encode())
    program = ClassifyProgram(version, params)
    write_atomic(repo / "nlp_classify" / "config.pbtxt",
                 kernel_config("nlp_classify", program.inputs, program.outputs, max_batch_size=8).encode())


# ---- the server ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from infer.tasks.anomaly.pipeline import BuildConfig, build_pipeline
    from infer.tasks.forecast.build import BuildConfig as ForecastConfig
    from infer.tasks.forecast.build import build_forecast

    work = tmp_path_factory.mktemp("sdk")
    repo = work / "repo"
    build_pipeline(repo, "anomaly", BuildConfig(n_train=4000, n_validation=3000, n_test=1000, n_users=10, capacity=256,
                                                lof_rows=500, ae_epochs=1, max_batch_size=32, with_autoencoder=False),
                   progress=False, evaluate=False)
    build_forecast(repo, "forecast", ForecastConfig(data_dir=None, peer=False, kinds=("snaive", "linear"))
                   .scaled_down())
    write_double(repo)
    write_identity_all(repo)
    _write_small_vision_and_nlp(repo, work)
    tokens = [{"name": "admin", "token": ADMIN, "roles": ["admin"]}, {"name": "reader", "token": READER,
                                                                        "roles": ["read"]}]
    (work / "tokens.json").write_text(json.dumps({"tokens": tokens}))
    srv = ServerProcess(repo, "--auth-tokens", str(work / "tokens.json")).wait_ready()
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest.fixture
def client(served: ServerProcess) -> Iterator[InferClient]:
    with InferClient(served.address, token=ADMIN, timeout=60) as c:
        yield c


def _events(n: int, start: float = 1.75e9) -> list[dict[str, Any]]:
    return [{"timestamp": start + 30 * i, "user": f"user{i % 3}", "namespace": ("finance", "secrets")[i % 2],
             "file_type": ("pdf", "exe")[i % 2], "content_hash": f"{i:064x}", "file_size": 250_000 * (1 + i),
             "hash_time_ms": 12.5 + i, "api_latency_ms": 85.0 * (1 + i), "concurrency": 8 + i} for i in range(n)]


def _series(count: int, length: int = 24 * 10, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return [(500 + 200 * np.sin(2 * np.pi * t / 24) + 10 * rng.standard_normal(length)).astype(np.float32)
            for _ in range(count)]


def _png(rgb: tuple[int, int, int], size: tuple[int, int] = (40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _small_repo(tmp: Path) -> Path:
    write_double(tmp / "repo")
    return tmp / "repo"


# ---- the blocking client -------------------------------------------------------------------------


def test_health_metadata_and_repository(client: InferClient) -> None:
    assert client.server_live() and client.server_ready() and client.model_ready("anomaly")
    assert client.model_ready("forecast", "1") and not client.model_ready("forecast", "7")
    assert [client.health(s) for s in ("", "ready", "model/forecast")] == ["SERVING"] * 3
    assert client.server_metadata().name == "infer"
    md = client.model_metadata("anomaly")
    assert [t.name for t in md.inputs][:3] == ["timestamp", "user", "namespace"] and md.platform == "ensemble"
    assert client.model_config("double").name == "double"
    index = {m.name: m.state for m in client.repository_index()}
    assert index["anomaly"] == "READY" and index["nlp_classify"] == "READY"
    assert client.model_statistics("double")[0].name == "double"


def _every_datatype() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inputs: dict[str, np.ndarray] = {}
    for dt, kind in V2.items():
        inputs[f"in_{dt}"] = rng.random((2, 3)) > 0.5 if kind is np.bool_ else (rng.random((2, 3)) * 100).astype(kind)
    inputs["in_BYTES"] = np.array([["a", "", "ü"], [b"\x00\x01", b"xyz", "long" * 50]], dtype=object)  # ONNX: UTF-8
    return inputs


def _same(inputs: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> None:
    for name, arr in inputs.items():
        got = out[name.replace("in_", "out_")]
        if arr.dtype == object:
            assert got.tolist() == [[v.encode() if isinstance(v, str) else v for v in row] for row in arr.tolist()]
        else:
            assert got.dtype == arr.dtype and got.shape == arr.shape
            np.testing.assert_array_equal(got, arr)


def test_every_datatype_round_trips_through_the_server(client: InferClient) -> None:
    inputs = _every_datatype()
    out = client.infer("identity_all", inputs)
    assert out.model_name == "identity_all" and out.model_version == "1"
    _same(inputs, out)
    only = client.infer("identity_all", inputs, outputs=["out_FP16"])
    assert list(only) == ["out_FP16"]


def test_anomaly_helper(client: InferClient) -> None:
    scores = client.anomaly.score(_events(6))
    assert len(scores) == 6 and scores.model_version == "1"
    assert scores.score.dtype == np.float32 and np.all((scores.score >= 0) & (scores.score <= 1))
    assert scores.is_anomalous.dtype == np.bool_ and set(scores.severity) <= SEVERITIES
    assert set(scores.anomaly_type) <= TYPES and all(len(f) == 3 for f in scores.top_features)
    assert scores.detector_probs.shape[0] == 6 and set(scores.anomalies()) <= set(range(6))
    columns = {k: [e[k] for e in _events(2, start=1.76e9)] for k in _events(1)[0]}
    assert len(client.anomaly.score(columns)) == 2


def test_forecast_helper_matches_the_raw_call(client: InferClient) -> None:
    series = _series(3)
    ragged = [series[0], series[1][:150], series[2][:200]]
    fc = client.forecast.predict(ragged, 12, levels=(80, 95), season=24, scenario=np.full(12, 1.5, np.float32))
    assert fc.mean.shape == (3, 12) and fc.lower.shape == fc.upper.shape == (3, 2, 12) and len(fc) == 3
    assert set(fc.model) <= {"snaive", "linear"} and fc.scores.shape == (3, 2)
    assert np.all(fc.lower[:, 1] <= fc.lower[:, 0]) and np.all(fc.upper[:, 1] >= fc.upper[:, 0])
    assert fc.scenario_mean is not None
    np.testing.assert_allclose(fc.scenario_mean, fc.mean * 1.5, rtol=1e-5)
    lo, hi = fc.interval(95)
    assert np.all(lo <= fc.mean) and np.all(fc.mean <= hi)
    hist = np.full((3, 240), np.nan, np.float32)
    for row, s in zip(hist, ragged, strict=True):
        row[:len(s)] = s
    raw = client.infer("forecast", {"history": hist, "length": np.array([[240], [150], [200]], np.int32),
                                    "horizon": np.full((3, 1), 12, np.int32),
                                    "levels": np.tile(np.array([[80, 95]], np.float32), (3, 1)),
                                    "season": np.full((3, 1), 24, np.int32)})
    np.testing.assert_allclose(fc.mean, raw["mean"], rtol=1e-6)
    one = client.forecast.predict(series[0], 6)
    assert one.mean.shape == (1, 6) and one.scenario_mean is None


def test_vision_and_nlp_helpers(client: InferClient, tmp_path: Path) -> None:
    (tmp_path / "blue.png").write_bytes(_png((10, 20, 240)))
    found = client.vision.classify([_png((250, 5, 5)), _png((0, 230, 10)), tmp_path / "blue.png"])
    assert [labels[0] for labels in found.labels] == ["red", "green", "blue"]
    assert found.scores.shape == (3, 2) and found.embedding.shape == (3, 3) and found.size.tolist()[0] == [48, 40]
    quality = client.vision.quality([_png((120, 120, 120))])
    assert quality.quality.shape == (1,) and quality.components.shape == (1, 4)
    emb = client.nlp.embed(["the film was good good", "bad", ""])
    assert emb.embedding.shape == (3, HIDDEN) and emb.tokens.tolist() == [5, 1, 0]
    assert not emb.truncated.any()
    verdict = client.nlp.classify(["a good film", "a bad film"])
    assert verdict.heads == ("sentiment",) and verdict.labels["sentiment"] == ["positive", "negative"]
    assert np.all(verdict.scores["sentiment"] > 0.9)


def test_bad_requests_name_the_field_and_are_not_retried(served: ServerProcess) -> None:
    retries: list[int] = []
    policy = RetryPolicy(on_retry=lambda attempt, err, delay: retries.append(attempt))
    with InferClient(served.address, token=ADMIN, retries=policy, timeout=30) as c:
        with pytest.raises(NotFound, match="no_such_model") as nf:
            c.infer("no_such_model", {"x": np.ones((1, 4), np.float32)})
        assert nf.value.code.name == "NOT_FOUND"
        with pytest.raises(InvalidArgument, match="input 'x'") as bad:
            c.infer("double", {"x": np.ones((1, 4), np.float64)})
        assert "FP64" in bad.value.message
        with pytest.raises(InvalidArgument, match="'nope'"):
            c.infer("double", {"x": np.ones((1, 4), np.float32), "nope": np.ones((1, 4), np.float32)})
        with pytest.raises(InvalidArgument, match="input 'horizon' must be within"):
            c.forecast.predict(np.ones(50, np.float32), horizon=1000)
        with pytest.raises(NotFound):
            c.model_metadata("no_such_model")
    assert retries == []


def test_deadlines(served: ServerProcess) -> None:
    with InferClient(served.address, token=ADMIN, timeout=1e-4) as c:  # the client's default deadline
        with pytest.raises(DeadlineExceeded):
            c.forecast.predict(_series(8), 24)
        assert c.server_live(timeout=10)  # a call's own deadline overrides it
    with InferClient(served.address, token=ADMIN) as c, pytest.raises(DeadlineExceeded):
        c.anomaly.score(_events(16), timeout=1e-4)


def test_tokens(served: ServerProcess) -> None:
    with InferClient(served.address) as anonymous:
        assert anonymous.health("ready") == "SERVING"  # probes need no token
        with pytest.raises(Unauthenticated, match="Bearer"):
            anonymous.infer("double", {"x": np.ones((1, 4), np.float32)})
    with InferClient(served.address, token="wrong") as wrong, pytest.raises(Unauthenticated):
        wrong.server_metadata()
    with InferClient(served.address, token=READER) as reader:
        assert reader.model_metadata("double").name == "double"
        with pytest.raises(PermissionDenied, match="'reader' lacks the 'infer' role"):
            reader.infer("double", {"x": np.ones((1, 4), np.float32)})


def test_retries_against_a_stopped_server_are_counted_and_bounded() -> None:
    seen: list[tuple[int, float]] = []
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.02, max_backoff=0.1,
                         on_retry=lambda attempt, err, delay: seen.append((attempt, delay)))
    with InferClient(f"127.0.0.1:{_free_port()}", retries=policy) as c:
        t0 = time.monotonic()
        with pytest.raises(Unavailable):
            c.server_live(timeout=20)
    assert [a for a, _ in seen] == [1, 2, 3] and all(0 <= d <= 0.1 for _, d in seen)
    assert time.monotonic() - t0 < 10
    with InferClient(f"127.0.0.1:{_free_port()}", retries=None) as c, pytest.raises(Unavailable):
        c.server_live(timeout=20)


def test_a_server_started_while_the_client_retries_is_reached(tmp_path: Path) -> None:
    port = _free_port()
    retried = threading.Event()
    attempts: list[int] = []

    def on_retry(attempt: int, err: Any, delay: float) -> None:
        attempts.append(attempt)
        retried.set()

    policy = RetryPolicy(max_attempts=1000, initial_backoff=0.05, max_backoff=0.3, on_retry=on_retry)
    answer: list[Any] = []
    with InferClient(f"127.0.0.1:{port}", retries=policy) as c:
        caller = threading.Thread(target=lambda: answer.append(c.server_live(timeout=120)))
        caller.start()
        assert retried.wait(30)
        with ServerProcess(_small_repo(tmp_path), "--grpc-port", str(port)):
            caller.join(60)
            assert answer == [True]
    assert len(attempts) >= 1


def _make_pki(d: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sdk-ca", "-keyout", "ca.key",
            "-out", "ca.pem")
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out",
                f"{name}.csr")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days",
                "2", "-out", f"{name}.pem", *(["-extfile", "san.cnf"] if name == "server" else []))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_mutual_tls_from_pem_files(tmp_path: Path) -> None:
    _make_pki(tmp_path)
    tls = ["--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"), "--tls-client-ca",
           str(tmp_path / "ca.pem")]
    with ServerProcess(_small_repo(tmp_path), *tls) as srv:
        # the certificate names localhost only: server_name checks it against that name while dialling 127.0.0.1
        mtls = TLSConfig(ca=tmp_path / "ca.pem", cert=tmp_path / "client.pem", key=tmp_path / "client.key",
                         server_name="localhost")
        with InferClient(srv.address, tls=mtls, timeout=30) as c:
            assert c.server_ready()
            assert c.infer("double", {"x": np.ones((1, 4), np.float32)})["y"].tolist() == [[2.0] * 4]
        no_cert = TLSConfig(ca=str(tmp_path / "ca.pem"), server_name="localhost")
        with InferClient(srv.address, tls=no_cert, timeout=30, retries=None) as c, pytest.raises(Unavailable):
            c.server_ready()


def test_repository_and_control_plane(client: InferClient, tmp_path: Path) -> None:
    client.unload_model("double")
    assert not client.model_ready("double")
    client.load_model("double")
    assert client.model_ready("double")
    client.load_model("double", config={"max_batch_size": 4})
    assert client.model_config("double").max_batch_size == 4

    dep = client.control.set_deployment(fallback_chain("sdk-safe", "no_such_model:1", "double:1",
                                                       default={"y": np.zeros(4, np.float32)}))
    assert dep.revision >= 1
    out = client.infer("sdk-safe", {"x": np.ones((2, 4), np.float32)}, request_id="sdk-1")
    assert out.parameters["infer.deployment"] == "sdk-safe" and out.parameters["infer.target"] == "double:1"
    np.testing.assert_array_equal(out["y"], np.full((2, 4), 2.0, np.float32))
    assert "sdk-safe" in {d.name for d in client.control.list_deployments()}
    assert client.control.get_deployment("sdk-safe").fallback[0].model == "double"
    client.control.delete_deployment("sdk-safe")
    with pytest.raises(NotFound):
        client.control.get_deployment("sdk-safe")

    (tmp_path / "model.onnx").write_bytes(b"not really a model")
    v1 = client.control.register_version(model_version("sdk-model", "1.0.0", model_type="anomaly", framework="onnx",
                                                       metrics={"auc": 0.91}, hyperparameters={"trees": 100}),
                                         tmp_path / "model.onnx", reason="first")
    assert v1.status == "REGISTERED" and len(v1.artifact_sha256) == 64
    client.control.register_version(model_version("sdk-model", "1.1.0", model_type="anomaly", framework="onnx",
                                                  metrics={"auc": 0.95}, parent_version="1.0.0"),
                                    b"bytes of v2")
    assert [v.version for v in client.control.list_versions("sdk-model", where="auc>=0.94")] == ["1.1.0"]
    moved = client.control.transition_version("sdk-model", "1.1.0", "REGISTERED", "ACTIVE", reason="better")
    assert moved.status == "ACTIVE"
    assert [t.target for t in client.control.version_history("sdk-model", "1.1.0")] == ["REGISTERED", "ACTIVE"]
    assert {m.name for m in client.control.compare_versions("sdk-model", "1.0.0", "1.1.0").metrics} == {"auc"}
    assert any(e.actor == "admin" for e in client.control.audit_log(10))
    moves = [t.target for t in client.control.serving_history("double")]
    assert "ACTIVE" in moves and "UNLOADED" in moves


def test_the_readme_quickstart_runs_as_written(served: ServerProcess) -> None:
    quickstart = ROOT / "clients" / "python" / "quickstart.py"
    assert quickstart.read_text() in (ROOT / "clients" / "python" / "README.md").read_text()
    env = {**os.environ, "INFER_TARGET": served.address, "INFER_TOKEN": ADMIN}
    run = subprocess.run([sys.executable, str(quickstart)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] in {"snaive", "linear"}


# ---- the async client: the same scenario -----------------------------------------------------------


async def test_async_client_same_scenario(served: ServerProcess, tmp_path: Path) -> None:
    async with AsyncInferClient(served.address, token=ADMIN, timeout=60) as c:
        assert await c.server_live() and await c.server_ready() and await c.model_ready("anomaly")
        assert await c.health("ready") == "SERVING" and (await c.server_metadata()).name == "infer"
        assert (await c.model_metadata("forecast")).inputs[0].name == "history"
        _same(_every_datatype(), await c.infer("identity_all", _every_datatype()))
        scores, fc, found, verdict = await asyncio.gather(
            c.anomaly.score(_events(4)), c.forecast.predict(_series(2), 6),
            c.vision.classify([_png((250, 5, 5))]), c.nlp.classify(["good"]))
        assert len(scores) == 4 and set(scores.severity) <= SEVERITIES
        assert fc.mean.shape == (2, 6) and found.labels[0][0] == "red"
        assert verdict.labels["sentiment"] == ["positive"]
        assert (await c.nlp.embed(["bad bad"])).embedding[0, 1] == 2.0
        with pytest.raises(NotFound, match="no_such_model"):
            await c.infer("no_such_model", {"x": np.ones((1, 4), np.float32)})
        with pytest.raises(InvalidArgument, match="input 'x'"):
            await c.infer("double", {"x": np.ones((1, 4), np.int32)})
        with pytest.raises(DeadlineExceeded):
            await c.forecast.predict(_series(8), 24, timeout=1e-4)
        assert isinstance(await c.control.list_deployments(), list)
    async with AsyncInferClient(served.address) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.infer("double", {"x": np.ones((1, 4), np.float32)})


async def test_async_retries_are_counted_and_reach_a_late_server(tmp_path: Path) -> None:
    seen: list[int] = []
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.02, max_backoff=0.1,
                         on_retry=lambda attempt, err, delay: seen.append(attempt))
    async with AsyncInferClient(f"127.0.0.1:{_free_port()}", retries=policy) as c:
        with pytest.raises(Unavailable):
            await c.server_live(timeout=20)
    assert seen == [1, 2]

    port, retried = _free_port(), asyncio.Event()
    patient = RetryPolicy(max_attempts=1000, initial_backoff=0.05, max_backoff=0.3,
                          on_retry=lambda attempt, err, delay: retried.set())
    async with AsyncInferClient(f"127.0.0.1:{port}", retries=patient) as c:
        call = asyncio.ensure_future(c.server_live(timeout=120))
        await asyncio.wait_for(retried.wait(), 30)
        srv = await asyncio.to_thread(lambda: ServerProcess(_small_repo(tmp_path), "--grpc-port", str(port))
                                      .wait_ready())
        try:
            assert await asyncio.wait_for(call, 60) is True
        finally:
            assert srv.stop() == 0, srv.output()
