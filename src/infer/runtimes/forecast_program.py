"""The ``forecast`` kernel program (see :mod:`infer.runtimes.kernel`): a batch of series in, forecasts with
intervals, the chosen model and its backtest scores out; the arithmetic is :mod:`infer.runtimes.forecasting`.

Inputs (batch dimension first; all but ``history`` optional)::

    history   FP32  [B, T]  the recent values, right-padded when series differ in length
    length    INT32 [B, 1]  valid values per row (default T)
    horizon   INT32 [B, 1]  steps to forecast, the same for every row of a request (default: the model's)
    levels    FP32  [B, L]  interval levels in percent, e.g. 80 and 95 (default: the model's)
    season    INT32 [B, 1]  season length in steps, e.g. 24 for hourly data with a daily cycle (default: the model's)
    scenario  FP32  [B, H]  what-if: a multiplier on the series per future step (1.5 = a launch adding 50%)

Outputs::

    mean FP32 [B, H]; lower, upper FP32 [B, L, H]; model BYTES [B, 1] (the chosen candidate);
    mase, smape FP32 [B, 1] (its backtest scores; NaN when the history was too short for one);
    scores FP32 [B, K] (every candidate's backtest MASE, in the order of the config's ``candidates``);
    scenario_mean FP32 [B, H], scenario_lower, scenario_upper FP32 [B, L, H] (the baseline without ``scenario``)

Requests are batched only with requests of the same horizon (:meth:`batch_key`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from infer.core.types import DataType, TensorSpec
from infer.errors import InvalidArgument
from infer.runtimes.base import Array
from infer.runtimes.forecasting import Forecaster
from infer.runtimes.kernel import inside_version

__all__ = ["ForecastProgram", "forecast"]

MAX_SEASON: Final = 10_000
OPTIONAL_INPUTS: Final = ("length", "horizon", "levels", "season", "scenario")


def _spec(name: str, dt: DataType, *dims: int) -> TensorSpec:
    return TensorSpec(name, dt, (-1, *dims))


class ForecastProgram:
    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        import json

        spec = json.loads(inside_version(directory, params.get("spec", "forecast.json")).read_text())
        self.forecaster = Forecaster(directory, spec)
        self.table = str(spec.get("interval_table", "auto"))
        self.horizon = int(spec.get("default_horizon", 24))
        self.season = int(spec.get("default_season", 24))
        self.levels = np.asarray(spec.get("default_levels", [80.0, 95.0]), np.float64)
        if not 1 <= self.horizon <= self.forecaster.max_horizon:
            raise ValueError(f"default_horizon {self.horizon} outside 1..{self.forecaster.max_horizon}")
        self.names = np.array([c.encode() for c in self.forecaster.candidates], dtype=object)
        k = len(self.names)
        self.inputs: tuple[TensorSpec, ...] = (
            _spec("history", DataType.FP32, -1), _spec("length", DataType.INT32, 1),
            _spec("horizon", DataType.INT32, 1), _spec("levels", DataType.FP32, -1),
            _spec("season", DataType.INT32, 1), _spec("scenario", DataType.FP32, -1),
        )
        band = (-1, -1)
        self.outputs: tuple[TensorSpec, ...] = (
            _spec("mean", DataType.FP32, -1), _spec("lower", DataType.FP32, *band),
            _spec("upper", DataType.FP32, *band), _spec("model", DataType.BYTES, 1),
            _spec("mase", DataType.FP32, 1), _spec("smape", DataType.FP32, 1), _spec("scores", DataType.FP32, k),
            _spec("scenario_mean", DataType.FP32, -1), _spec("scenario_lower", DataType.FP32, *band),
            _spec("scenario_upper", DataType.FP32, *band),
        )

    # -- per request, before batching ----------------------------------------------------------------------
    def prepare(self, inputs: Mapping[str, Array]) -> None:
        hist = np.asarray(inputs["history"])
        if hist.ndim != 2 or hist.shape[1] < 2:
            raise InvalidArgument(f"input 'history' must be [batch, T] with T >= 2 values (got {list(hist.shape)})")
        b, t = hist.shape
        lengths = self._lengths(inputs, b, t)
        bad = ~np.isfinite(hist) & (np.arange(t)[None, :] < lengths[:, None])
        if bad.any():
            r, i = np.argwhere(bad)[0]
            raise InvalidArgument(f"input 'history': row {r} has a non-finite value at index {i}, within its length")
        h = self._horizon(inputs)
        if not 1 <= h <= self.forecaster.max_horizon:
            raise InvalidArgument(f"input 'horizon' must be within 1..{self.forecaster.max_horizon} (got {h})")
        if "horizon" in inputs and not (np.asarray(inputs["horizon"]) == h).all():
            raise InvalidArgument("input 'horizon' must be the same for every row of a request")
        if "levels" in inputs:
            lv = np.asarray(inputs["levels"], np.float64)
            if lv.shape[1] == 0 or not ((lv > 0) & (lv < 100)).all():
                raise InvalidArgument("input 'levels': give at least one level, each strictly between 0 and 100")
        if "season" in inputs:
            s = np.asarray(inputs["season"], np.int64)
            if not ((s >= 1) & (s <= MAX_SEASON)).all():
                raise InvalidArgument(f"input 'season' must be within 1..{MAX_SEASON}")
        if "scenario" in inputs:
            sc = np.asarray(inputs["scenario"], np.float64)
            if sc.shape[1] != h or not np.isfinite(sc).all():
                raise InvalidArgument(f"input 'scenario' must hold {h} finite multipliers per row (the horizon)")

    def batch_key(self, inputs: Mapping[str, Array]) -> Hashable:
        """The horizon: it fixes the outputs' width, so only requests that agree on it share a batch."""
        return self._horizon(inputs)

    def _horizon(self, inputs: Mapping[str, Array]) -> int:
        h = inputs.get("horizon")
        return self.horizon if h is None or np.size(h) == 0 else int(np.asarray(h).reshape(-1)[0])

    @staticmethod
    def _lengths(inputs: Mapping[str, Array], b: int, t: int) -> np.ndarray:
        if "length" not in inputs:
            return np.full(b, t, np.int64)
        lengths = np.asarray(inputs["length"]).reshape(-1).astype(np.int64)
        if lengths.shape[0] != b or not ((lengths >= 2) & (lengths <= t)).all():
            raise InvalidArgument(f"input 'length' must give one value per row within 2..{t} (the history's width)")
        return lengths

    # -- a batch --------------------------------------------------------------------------------------------
    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        hist = np.asarray(inputs["history"], np.float64)  # the kernels read no value past a row's length
        b, t = hist.shape
        lengths = self._lengths(inputs, b, t)
        h = self._horizon(inputs)
        m = (np.asarray(inputs["season"]).reshape(-1).astype(np.int64) if "season" in inputs
             else np.full(b, self.season, np.int64))
        levels = (np.asarray(inputs["levels"], np.float64) if "levels" in inputs
                  else np.broadcast_to(self.levels, (b, len(self.levels))))
        sel = self.forecaster.select(hist, lengths, m, h)
        mean = sel.mean
        lower, upper = self.forecaster.intervals(self.table, mean, sel.scale, levels)
        mult = np.asarray(inputs["scenario"], np.float64) if "scenario" in inputs else np.ones((b, h))
        at = np.arange(b)
        out = {
            "mean": mean, "lower": lower, "upper": upper,
            "model": self.names[sel.chosen].reshape(-1, 1),
            "mase": sel.mase[at, sel.chosen].reshape(-1, 1), "smape": sel.smape[at, sel.chosen].reshape(-1, 1),
            "scores": sel.mase,
            "scenario_mean": mean * mult,
            "scenario_lower": np.minimum(lower * mult[:, None, :], upper * mult[:, None, :]),
            "scenario_upper": np.maximum(lower * mult[:, None, :], upper * mult[:, None, :]),
        }
        return {k: (v if v.dtype == object else v.astype(np.float32)) for k, v in out.items()}


def forecast(directory: Path, params: dict[str, Any]) -> ForecastProgram:
    return ForecastProgram(directory, params)
