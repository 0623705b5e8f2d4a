"""Unmodified tritonclient against the anomaly pipeline: raw events with BYTES fields in, verdicts out (the
README's quickstart), through the ensemble and its stage models."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as tc
from fixtures import ServerProcess

from infer.tasks.anomaly.pipeline import BuildConfig, build_pipeline

V2 = {np.float64: "FP64", np.float32: "FP32", np.int64: "INT64", np.int32: "INT32", np.object_: "BYTES"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tc.InferenceServerClient]:
    repo = tmp_path_factory.mktemp("anomaly") / "repo"
    cfg = BuildConfig(n_train=4000, n_validation=3000, n_test=1000, n_users=10, capacity=256, lof_rows=500,
                      ae_epochs=1, max_batch_size=32, with_autoencoder=False)
    build_pipeline(repo, "anomaly", cfg, progress=False, evaluate=False)
    with ServerProcess(repo) as srv:
        yield tc.InferenceServerClient(srv.address)


def test_the_readme_quickstart_runs(client: tc.InferenceServerClient) -> None:
    events = {  # the README's two events
        "timestamp": np.array([[time.time()], [time.time() + 1]], np.float64),
        "user": np.array([[b"alice"], [b"bob"]], object),
        "namespace": np.array([[b"finance"], [b"secrets"]], object),
        "file_type": np.array([[b"pdf"], [b"exe"]], object),
        "content_hash": np.array([[b"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
                                  [b"0" * 64]], object),
        "file_size": np.array([[250_000], [2_000_000_000]], np.int64),
        "hash_time_ms": np.array([[12.5], [900.0]], np.float32),
        "api_latency_ms": np.array([[85.0], [4000.0]], np.float32),
        "concurrency": np.array([[8], [120]], np.int32),
    }
    inputs = []
    for name, value in events.items():
        inputs.append(tc.InferInput(name, list(value.shape), V2[value.dtype.type]))
        inputs[-1].set_data_from_numpy(value)
    result = client.infer("anomaly", inputs)
    score = result.as_numpy("score")
    assert score.shape == (2, 1) and ((score >= 0) & (score <= 1)).all()
    assert result.as_numpy("is_anomalous").dtype == np.bool_
    assert set(result.as_numpy("severity").ravel()) <= {b"NONE", b"LOW", b"MEDIUM", b"HIGH", b"CRITICAL"}
    top = result.as_numpy("top_features")
    assert top.shape == (2, 3) and all(isinstance(t, bytes) and t for t in top.ravel())
    md = client.get_model_metadata("anomaly", as_json=True)
    assert md["platform"] == "ensemble"
    assert {i["name"]: i["datatype"] for i in md["inputs"]}["user"] == "BYTES"
    stats = client.get_inference_statistics("anomaly_features", as_json=True)
    assert int(stats["model_stats"][0]["inference_stats"]["success"]["count"]) >= 1
