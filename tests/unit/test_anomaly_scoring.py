"""The anomaly scorer's arithmetic (kernels/anomaly_scoring.py) and the kernel runtime's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infer.config.model import ModelConfig
from infer.errors import ModelConfigError
from infer.runtimes.base import RuntimeOptions, runtime_for
from infer.runtimes.kernel import KernelRuntime
from kernels import anomaly_scoring as sc
from kernels.streaming import new_series_state


def test_combine_is_a_logistic_model_over_logits_and_feature_deviations() -> None:
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.999, 0.999]])
    w, b = np.array([1.0, 2.0]), -0.5
    expected = 1 / (1 + np.exp(-(b + sc.logit(probs) @ w)))
    np.testing.assert_allclose(sc.combine(probs, w, b), expected)
    contrib = np.array([[0.0, 1.0, 3.0]] * 3, np.float32)
    w_ext = np.array([1.0, 2.0, 0.5, 0.0, -1.0])
    z = b + sc.logit(probs) @ w + np.log1p(contrib.astype(np.float64)) @ w_ext[2:]
    np.testing.assert_allclose(sc.combine(probs, w_ext, b, contrib), 1 / (1 + np.exp(-z)))
    with pytest.raises(ValueError, match="contributions"):
        sc.combine(probs, w_ext, b)


def test_contributions_and_top_features() -> None:
    feats = np.array([[0.0, 10.0, -3.0], [1.0, 0.0, 0.0]])
    contrib = sc.contributions(feats, np.zeros(3), np.array([1.0, 2.0, 1.0]))
    assert contrib.tolist() == [[0.0, 5.0, 3.0], [1.0, 0.0, 0.0]]
    top = sc.top_features(contrib, 2)
    assert top[0].tolist() == [1, 2] and top[1, 0] == 0  # largest first; row 1's runner-up is a tie


def test_classify_takes_the_most_likely_kind() -> None:
    contrib = np.array([[5.0, 0.0], [0.0, 5.0]], np.float32)
    probs = np.array([[0.5], [0.5]])
    weights = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # feature 0 -> kind 0, feature 1 -> kind 1
    assert sc.classify(contrib, probs, weights, np.zeros(2)).tolist() == [0, 1]


def test_severity_adapts_to_each_series_history() -> None:
    thresholds = np.array([0.0, 1.0, 2.0, 3.0])  # decision, MEDIUM, HIGH, CRITICAL on the score's logit
    state = new_series_state("zscore", 64, warmup=5)
    calm = np.full(20, 0.02)  # a quiet series
    noisy = np.linspace(0.3, 0.95, 20)  # a series whose scores run high
    ids = np.array([1] * 20 + [2] * 20, np.uint64)
    sc.severity(np.concatenate([calm, noisy]), ids, state, thresholds)
    spike = np.array([0.9, 0.9])  # the same score on both series
    level = sc.severity(spike, np.array([1, 2], np.uint64), state, thresholds)
    assert sc.SEVERITIES[level[0]] in ("HIGH", "CRITICAL")  # extreme for the quiet series: raised
    assert level[1] < level[0]  # ordinary for the noisy one: lowered
    assert sc.severity(np.array([0.3]), np.array([3], np.uint64), state, thresholds).tolist() == [0]  # below decision


def _open(tmp_path: Path, doc: object) -> KernelRuntime:
    (tmp_path / "kernel.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return KernelRuntime.open(tmp_path / "kernel.json", ModelConfig(name="k", backend="kernel"), RuntimeOptions())


def test_kernel_runtime_is_chosen_by_backend_and_refuses_bad_files(tmp_path: Path) -> None:
    assert runtime_for(ModelConfig(name="k", backend="kernel")) is KernelRuntime
    for doc, words in (("not json", "must be JSON"), ({"params": {}}, "must be JSON with a 'program'"),
                       ({"program": "nope"}, "unknown kernel program 'nope'"),
                       ({"program": "anomaly_scorer", "params": {"detectors": [["a", 1]]}}, "cannot load")):
        with pytest.raises(ModelConfigError) as e:
            _open(tmp_path, doc)
        assert words in e.value.message and "model 'k'" in e.value.message
