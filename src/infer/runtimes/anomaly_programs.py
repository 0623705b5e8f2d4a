"""Kernel programs of the anomaly pipeline (see :mod:`infer.runtimes.kernel`).

``anomaly_features``   raw event fields -> ``features`` FP32 [F] and ``series`` UINT64 [1] (the user's hash),
                       with the per-user/namespace rolling state of :mod:`kernels.anomaly_features`.
``anomaly_streaming``  features + series -> ``probs`` FP32 [2]: EW z-score and moving-average deviation of
                       chosen feature columns per user (:mod:`kernels.streaming`), as probabilities.
``anomaly_scorer``     features, series and every detector's probability -> score, is_anomalous, severity,
                       anomaly_type, top_features and the detectors' probabilities (:mod:`kernels.anomaly_scoring`).

Parameters and states come from the version directory, written by ``infer.tasks.anomaly`` at build time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import erf

from infer.core.types import DataType, TensorSpec
from infer.errors import InvalidArgument
from infer.runtimes.base import Array
from infer.runtimes.kernel import inside_version as _inside

__all__ = ["RAW_FIELDS", "anomaly_features", "anomaly_scorer", "anomaly_streaming"]

# V2 inputs of the pipeline: one value per event each
RAW_FIELDS: tuple[tuple[str, DataType], ...] = (
    ("timestamp", DataType.FP64), ("user", DataType.BYTES), ("namespace", DataType.BYTES),
    ("file_type", DataType.BYTES), ("content_hash", DataType.BYTES), ("file_size", DataType.INT64),
    ("hash_time_ms", DataType.FP32), ("api_latency_ms", DataType.FP32), ("concurrency", DataType.INT32),
)


MAX_CAPACITY = 1 << 22  # rolling-state slots a model file may ask for


def _capacity(params: dict[str, Any]) -> int:
    cap = int(params.get("capacity", 4096))
    if not 4 <= cap <= MAX_CAPACITY:
        raise ValueError(f"capacity {cap} outside 4..{MAX_CAPACITY}")
    return cap


def _spec(name: str, dt: DataType, width: int = 1) -> TensorSpec:
    return TensorSpec(name, dt, (-1, width))


class FeatureProgram:
    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        from kernels import anomaly_features as af

        self._af = af
        state = params.get("state")
        self.state = af.FeatureState.load(_inside(directory, state)) if state else af.new_state(_capacity(params))
        self.inputs = tuple(_spec(n, dt) for n, dt in RAW_FIELDS)
        self.outputs = (_spec("features", DataType.FP32, len(af.FEATURE_NAMES)), _spec("series", DataType.UINT64))
        af.warm_up()

    def prepare(self, inputs: Mapping[str, Array]) -> None:
        if not np.isfinite(np.asarray(inputs["timestamp"], np.float64)).all():
            raise InvalidArgument("input 'timestamp': every value must be a finite number of seconds")

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        events = {name: np.asarray(inputs[name]).reshape(-1) for name, _ in RAW_FIELDS}
        enc = self._af.encode_events(events)
        feats = self._af.extract(enc, self.state)
        return {"features": feats, "series": enc.user.reshape(-1, 1)}

    def save_state(self, directory: Path) -> None:
        self.state.save(directory / "state.npz")

    def load_state(self, directory: Path) -> None:
        self.state = self._af.FeatureState.load(directory / "state.npz")


def anomaly_features(directory: Path, params: dict[str, Any]) -> FeatureProgram:
    return FeatureProgram(directory, params)


def _z_prob(z: Array) -> Array:
    """|z| as a probability that the value is unusual: erf(|z| / sqrt(2)) (0 for z = 0, NaN -> 0)."""
    zz = np.nan_to_num(np.abs(np.asarray(z, np.float64)), nan=0.0)
    return erf(zz / math.sqrt(2.0))  # type: ignore[no-any-return]


class StreamingProgram:
    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        from kernels import anomaly_features as af
        from kernels import streaming

        self._streaming = streaming
        self.column_names = [str(c) for c in params["columns"]]
        self.columns = [af.FEATURE_NAMES.index(c) for c in self.column_names]
        self.states = {
            kind: [streaming.SeriesState.load(_inside(directory, f"{kind}_{c}.npz")) if params.get("states")
                   else streaming.new_series_state(kind, _capacity(params))
                   for c in params["columns"]]
            for kind in streaming.KINDS
        }
        self.inputs = (_spec("features", DataType.FP32, len(af.FEATURE_NAMES)), _spec("series", DataType.UINT64))
        self.outputs = (_spec("probs", DataType.FP32, len(streaming.KINDS)),)
        streaming.warm_up()

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        feats = np.asarray(inputs["features"], np.float64)
        series = np.ascontiguousarray(np.asarray(inputs["series"]).reshape(-1), np.uint64)
        probs = np.zeros((feats.shape[0], len(self.states)), np.float32)
        for k, states in enumerate(self.states.values()):
            for col, state in zip(self.columns, states, strict=True):
                z = self._streaming.score_series(series, feats[:, col], state, backend="cpu")
                probs[:, k] = np.maximum(probs[:, k], _z_prob(z))
        return {"probs": probs}

    def save(self, directory: Path, columns: Sequence[str]) -> None:
        for kind, states in self.states.items():
            for c, state in zip(columns, states, strict=True):
                state.save(directory / f"{kind}_{c}.npz")

    def save_state(self, directory: Path) -> None:
        self.save(directory, self.column_names)

    def load_state(self, directory: Path) -> None:
        load = self._streaming.SeriesState.load
        self.states = {kind: [load(directory / f"{kind}_{c}.npz") for c in self.column_names] for kind in self.states}


def anomaly_streaming(directory: Path, params: dict[str, Any]) -> StreamingProgram:
    return StreamingProgram(directory, params)


class ScorerProgram:
    """Combines the detectors: see :mod:`kernels.anomaly_scoring` for the arithmetic."""

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        from kernels import anomaly_features as af
        from kernels import anomaly_scoring, streaming

        self._sc = anomaly_scoring
        self.detectors: list[tuple[str, int]] = [(str(n), int(w)) for n, w in params["detectors"]]
        self.detector_columns: list[str] = list(params["detector_columns"])
        self.weights = np.asarray(params["weights"], np.float64)
        self.bias = float(params["bias"])
        self.thresholds = np.asarray(params["thresholds"], np.float64)
        self.centre = np.asarray(params["centre"], np.float64)
        self.scale = np.asarray(params["scale"], np.float64)
        self.type_weights = np.asarray(params["type_weights"], np.float64)
        self.type_bias = np.asarray(params["type_bias"], np.float64)
        self.kinds = np.array([k.encode() for k in params["kinds"]], dtype=object)
        self.names = np.array([n.encode() for n in af.FEATURE_NAMES], dtype=object)
        self.top_k = int(params.get("top_k", 3))
        self.calm_z, self.alarm_z = float(params.get("calm_z", 2.0)), float(params.get("alarm_z", 6.0))
        self.series_state = (streaming.SeriesState.load(_inside(directory, params["series_state"]))
                             if params.get("series_state") else streaming.new_series_state("zscore", 4096))
        self.levels = np.array([s.encode() for s in anomaly_scoring.SEVERITIES], dtype=object)
        d, f = len(self.detector_columns), len(af.FEATURE_NAMES)
        if self.weights.shape not in ((d,), (d + f,)) or self.type_weights.shape != (f + d, len(self.kinds)):
            raise ValueError(f"weights for {d} detector columns and {f} features do not fit the parameters")
        if sum(w for _, w in self.detectors) != d or self.thresholds.shape != (4,):
            raise ValueError("detector widths must add up to detector_columns; give 4 thresholds")
        self.inputs = (_spec("features", DataType.FP32, f), _spec("series", DataType.UINT64),
                       *(_spec(n, DataType.FP32, w) for n, w in self.detectors))
        self.outputs = (
            _spec("score", DataType.FP32), _spec("is_anomalous", DataType.BOOL), _spec("severity", DataType.BYTES),
            _spec("anomaly_type", DataType.BYTES), _spec("top_features", DataType.BYTES, self.top_k),
            _spec("detector_probs", DataType.FP32, d),
        )

    def save_state(self, directory: Path) -> None:
        self.series_state.save(directory / "series.npz")

    def load_state(self, directory: Path) -> None:
        from kernels import streaming

        self.series_state = streaming.SeriesState.load(directory / "series.npz")

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        sc = self._sc
        probs = np.concatenate([np.asarray(inputs[n], np.float64).reshape(-1, w) for n, w in self.detectors], axis=1)
        feats = np.asarray(inputs["features"], np.float64)
        series = np.ascontiguousarray(np.asarray(inputs["series"]).reshape(-1), np.uint64)
        contrib = sc.contributions(feats, self.centre, self.scale)
        score = sc.combine(probs, self.weights, self.bias, contrib)
        level = sc.severity(score, series, self.series_state, self.thresholds, calm_z=self.calm_z,
                            alarm_z=self.alarm_z)
        kind = sc.classify(contrib, probs, self.type_weights, self.type_bias)
        top = sc.top_features(contrib, self.top_k)
        anomalous = level > 0
        return {
            "score": score.astype(np.float32).reshape(-1, 1),
            "is_anomalous": anomalous.reshape(-1, 1),
            "severity": self.levels[level].reshape(-1, 1),
            "anomaly_type": np.where(anomalous, self.kinds[kind], b"").astype(object).reshape(-1, 1),
            "top_features": self.names[top],
            "detector_probs": probs.astype(np.float32),
        }


def anomaly_scorer(directory: Path, params: dict[str, Any]) -> ScorerProgram:
    return ScorerProgram(directory, params)
