"""The anomaly ensemble's last stage: detector probabilities combined into one score, a decision, a severity
that adapts to each series' recent scores, an anomaly type and the features that drove it.

Pure NumPy on arrays (no per-event Python); the per-series history is a :mod:`kernels.streaming` z-score state
over the logit of each series' scores, so a series whose scores run high needs more to be called severe.

``combine``        score = sigmoid(bias + sum_d w_d * logit(p_d) + sum_f v_f * log1p(z_f)): a logistic model over
                   the detectors' calibrated probabilities and each feature's robust z-score (the per-feature
                   statistical detector); weights learnt on labelled validation data, or set by hand.
``contributions``  |x_f - centre_f| / scale_f per feature (robust z against the training distribution).
``classify``       anomaly type = argmax of a linear model over [contributions, detector logits].
``severity``       NONE below the decision threshold; else LOW / MEDIUM / HIGH / CRITICAL from global
                   thresholds on the score's logit, moved one level down when the score is ordinary for its
                   series (z < ``calm_z``) and one up when it is extreme for it (z > ``alarm_z``).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from kernels.streaming import SeriesState, score_series

__all__ = ["SEVERITIES", "classify", "combine", "combiner_inputs", "contributions", "logit", "severity",
           "top_features"]

SEVERITIES: Final[tuple[str, ...]] = ("NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_EPS: Final = 1e-4


def logit(p: NDArray[np.floating]) -> NDArray[np.float64]:
    q = np.clip(np.asarray(p, np.float64), _EPS, 1.0 - _EPS)
    return np.log(q / (1.0 - q))


def combiner_inputs(probs: NDArray[np.floating], contrib: NDArray[np.float32] | None = None) -> NDArray[np.float64]:
    """The logistic combiner's inputs: each detector's logit and, with ``contrib`` (:func:`contributions`), each
    feature's robust z-score as log1p: the per-feature statistical detector. The detectors' calibrated
    probabilities saturate near 1 beyond what training saw; the per-feature deviations keep ranking those
    events, and say which kind of deviation matters."""
    lg = logit(probs)
    if contrib is None:
        return lg
    return np.concatenate([lg, np.log1p(contrib.astype(np.float64))], axis=1)


def combine(
    probs: NDArray[np.floating], weights: NDArray[np.floating], bias: float,
    contrib: NDArray[np.float32] | None = None,
) -> NDArray[np.float64]:
    """Ensemble score in (0, 1) per row of ``probs`` [N, D]; ``weights`` has D entries, or D + F (then
    ``contrib`` [N, F] is needed) for the per-feature inputs of :func:`combiner_inputs`."""
    w = np.asarray(weights, np.float64)
    extended = w.shape[0] != probs.shape[1]
    if extended and (contrib is None or w.shape[0] != probs.shape[1] + contrib.shape[1]):
        raise ValueError(f"{w.shape[0]} weights need the detectors' probabilities and the feature contributions")
    z = bias + combiner_inputs(probs, contrib if extended else None) @ w
    return 1.0 / (1.0 + np.exp(-z))


def contributions(
    features: NDArray[np.floating], centre: NDArray[np.floating], scale: NDArray[np.floating]
) -> NDArray[np.float32]:
    return (np.abs(np.asarray(features, np.float64) - centre) / scale).astype(np.float32)


def top_features(contrib: NDArray[np.float32], k: int) -> NDArray[np.intp]:
    """Column indices of the ``k`` largest contributions per row, largest first."""
    k = min(k, contrib.shape[1])
    part = np.argpartition(-contrib, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(contrib, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def classify(
    contrib: NDArray[np.float32], probs: NDArray[np.floating], weights: NDArray[np.floating],
    bias: NDArray[np.floating],
) -> NDArray[np.intp]:
    """Index of the most likely anomaly type per row (a linear model over contributions and detector logits)."""
    x = np.concatenate([np.log1p(contrib.astype(np.float64)), logit(probs)], axis=1)
    return np.argmax(x @ np.asarray(weights, np.float64) + bias, axis=1)


def severity(
    score: NDArray[np.floating],
    series: NDArray[np.uint64],
    state: SeriesState,
    thresholds: NDArray[np.floating],
    *,
    calm_z: float = 2.0,
    alarm_z: float = 6.0,
) -> NDArray[np.int8]:
    """Severity level per event (an index into :data:`SEVERITIES`), advancing each series' history.

    ``thresholds``: the decision threshold then the MEDIUM, HIGH and CRITICAL ones, on the score's logit,
    ascending. Rows must come in event order (the history is updated as it goes).
    """
    lg = logit(score)
    z = score_series(series, lg, state, backend="cpu")  # each score against its series' history, then folded in
    level = np.zeros(lg.shape, np.int8)
    anomalous = lg >= thresholds[0]
    base = 1 + (lg[:, None] >= np.asarray(thresholds[1:])[None, :]).sum(axis=1)
    warmed = np.isfinite(z) & (z > 0)
    adjust = np.where(warmed & (z < calm_z), -1, 0) + np.where(z > alarm_z, 1, 0)
    level[anomalous] = np.clip(base + adjust, 1, len(SEVERITIES) - 1)[anomalous]
    return level
