"""Drift detection on a served model: a reference stored beside the model, live traffic through the real server.

Unshifted traffic (fresh draws from the training distribution) is not flagged; shifting one feature's mean is
flagged on that feature alone, exported as metrics, reported by GetDrift, and (with ``infer.drift.degrade``)
moves the version to DEGRADED while it still answers; unshifted traffic again clears it back to ACTIVE.
The false-positive rate of the test itself on unshifted windows is measured in tests/unit/test_drift.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fixtures import ServerProcess, metric_value, model_state, scrape_metrics, write_double

from infer.client import InferClient
from infer.observability.drift import build_reference

CONFIG = """
name: "watched"
platform: "onnxruntime_onnx"
max_batch_size: 64
parameters { key: "infer.drift.every_s" value { string_value: "0.2" } }
parameters { key: "infer.drift.window" value { string_value: "400" } }
parameters { key: "infer.drift.min_rows" value { string_value: "200" } }
parameters { key: "infer.drift.degrade" value { string_value: "true" } }
"""

MEANS = np.array([0.0, 5.0, -3.0, 100.0])
SCALES = np.array([1.0, 2.0, 0.5, 10.0])


def _draw(rng: np.random.Generator, rows: int, shift: float = 0.0) -> np.ndarray:
    x = MEANS + SCALES * rng.standard_normal((rows, 4))
    x[:, 2] += shift * SCALES[2]
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("drift-repo")
    write_double(repo, "watched", config=CONFIG)
    reference = build_reference({"x": _draw(np.random.default_rng(1), 5000)}, seed=1)
    reference.save(repo / "watched" / "1" / "drift_reference.json")
    with ServerProcess(repo) as srv:
        yield srv






def _send(client: InferClient, rng: np.random.Generator, shift: float, requests: int = 10) -> None:
    for _ in range(requests):
        x = _draw(rng, 50, shift)
        got = client.infer("watched", {"x": x})["y"]
        np.testing.assert_allclose(got, 2 * x, rtol=1e-6)  # still answering, DEGRADED or not


def _after_fresh_evaluations(srv: ServerProcess, timeout: float = 20.0) -> str:
    """The metrics once two evaluations ran after the traffic sent so far (the first may have begun before)."""
    start = metric_value(scrape_metrics(srv.metrics_port), "infer_drift_evaluations_total", model="watched") or 0.0
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = scrape_metrics(srv.metrics_port)
        if (metric_value(text, "infer_drift_evaluations_total", model="watched") or 0.0) >= start + 2:
            return text
        time.sleep(0.1)
    raise AssertionError(f"no drift evaluation within {timeout}s:\n{srv.output()[-2000:]}")



def test_drift_detected_on_the_shifted_feature_only_and_cleared(server: ServerProcess, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    with InferClient(server.address, timeout=30) as client:
        _send(client, rng, 0.0)
        text = _after_fresh_evaluations(server)
        assert metric_value(text, "infer_drift_detected", model="watched") == 0.0
        assert metric_value(text, "infer_drift_window_rows", model="watched") == 400.0
        assert model_state(text, "watched") == "ACTIVE"
        report = client.drift("watched")
        assert not report.drifted and report.rows == 400 and len(report.features) == 4

        _send(client, rng, 1.0)  # one standard deviation on the third column
        text = _after_fresh_evaluations(server)
        assert metric_value(text, "infer_drift_detected", model="watched") == 1.0
        drifted = sorted(f.feature for f in client.drift("watched").features if f.drifted)
        assert len(drifted) == 1 and "2" in drifted[0], drifted
        assert metric_value(text, "infer_drift_feature_drifted", model="watched", feature=drifted[0]) == 1.0
        psi = metric_value(text, "infer_drift_statistic", model="watched", feature=drifted[0], statistic="psi")
        assert psi is not None and psi > 0.2
        assert model_state(text, "watched") == "DEGRADED"
        report = client.drift("watched")
        assert report.drifted and drifted[0] in report.reason

        _send(client, rng, 0.0)
        text = _after_fresh_evaluations(server)
        assert metric_value(text, "infer_drift_detected", model="watched") == 0.0
        assert model_state(text, "watched") == "ACTIVE"
    assert "data drift" in server.output()
