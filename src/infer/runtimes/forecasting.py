"""The forecasting family's arithmetic at serve time: candidate forecasts, rolling-origin backtests, the
selector and the conformal intervals. Used by the ``forecast`` kernel program and, unchanged, by the build that
calibrates it (:mod:`infer.tasks.forecast`), so what is evaluated is what is served.

A batch holds right-padded series (``hist`` [B, T], ``lengths`` [B]) with a season length each. For every
series the candidates forecast from the whole history (the answer) and from ``origins`` earlier cut-offs, one
horizon apart (the backtest: each of those forecasts is compared with the values that followed). The selector
picks, per series, the candidate with the lowest backtest MASE (ties: the earlier in ``candidates``).

Candidates (``KINDS``):

``snaive``  seasonal naive: the value one season earlier.
``linear``  least squares on the last seasons: intercept, trend and seasonal dummies (:mod:`kernels.forecast`).
``arima``   ARIMA(1,1,1) for m = 1 and the airline model SARIMA(0,1,1)(0,1,1)_m otherwise, with coefficients
            fit by statsmodels at build time for each season length seen in training (pooled: the median
            over the training series), predicted by a numba recursion; an unseen m uses the median profile.
``lstm``    a global LSTM (ONNX) on the last ``window`` values, normalised per window, that corrects the
            seasonal naive forecast for every step of the horizon at once.
``gbm``     global gradient-boosted trees (LightGBM exported to ONNX) on lag, season and calendar features,
            one row per (series, step ahead).

Intervals are split-conformal: for each served model the build stores, per step ahead, quantiles of
|actual - forecast| / s over calibration cut-offs held out from training, where s is the series' MASE scale
(mean absolute seasonal difference of its history); the served half-width at level l is that quantile at
l/100 times the request's own s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from infer.runtimes.kernel import inside_version
from infer.runtimes.onnx import cpu_session

__all__ = ["KINDS", "QUANTILE_GRID", "Forecaster", "Selection", "Tasks", "interval_quantiles", "plan_tasks"]

KINDS: Final = ("snaive", "linear", "arima", "lstm", "gbm")
# probabilities at which the calibration tables store the scaled absolute error
QUANTILE_GRID: Final = np.concatenate([np.linspace(0.0, 0.99, 100), [0.995]])

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class Tasks:
    """Forecasts to make: series ``rows[n]`` from its first ``cutoffs[n]`` values; ``origin[n]`` is 0 for the
    answer (the whole history) and k > 0 for the k-th backtest origin."""

    rows: I64
    cutoffs: I64
    origin: I64


def plan_tasks(lengths: I64, m: I64, horizon: int, origins: int, min_fit: int = 8) -> Tasks:
    """The answer's task per series, then its backtest cut-offs ``length - k * horizon`` (k = 1..origins) that
    leave at least ``max(min_fit, m + 2)`` values to forecast from."""
    rows, cuts, orig = [], [], []
    b = len(lengths)
    rows.append(np.arange(b))
    cuts.append(lengths.astype(np.int64))
    orig.append(np.zeros(b, np.int64))
    floor = np.maximum(min_fit, m + 2)
    for k in range(1, origins + 1):
        c = lengths - k * horizon
        ok = np.flatnonzero(c >= floor)
        rows.append(ok)
        cuts.append(c[ok])
        orig.append(np.full(len(ok), k, np.int64))
    return Tasks(np.concatenate(rows).astype(np.int64), np.concatenate(cuts).astype(np.int64),
                 np.concatenate(orig).astype(np.int64))


@dataclass
class Selection:
    """One batch's answer: ``forecasts`` [K, B, H] from every candidate, the chosen index per series, each
    candidate's backtest MASE/sMAPE [B, K] (NaN without a backtest) and the MASE scale per series."""

    forecasts: F64
    chosen: I64
    mase: F64
    smape: F64
    scale: F64

    @property
    def mean(self) -> F64:
        return self.forecasts[self.chosen, np.arange(len(self.chosen))]


def interval_quantiles(table: F64, levels: F64, horizon: int) -> F64:
    """Half-widths in units of the MASE scale: ``table`` [len(QUANTILE_GRID), Hmax] at each level (percent)
    -> [B, L, horizon] (the last calibrated step is reused beyond the table)."""
    p = np.clip(np.asarray(levels, np.float64) / 100.0, 0.0, QUANTILE_GRID[-1])
    steps = np.minimum(np.arange(horizon), table.shape[1] - 1)
    out = np.empty((*p.shape, horizon))
    for j, h in enumerate(steps):
        out[..., j] = np.interp(p, QUANTILE_GRID, table[:, h])
    return out


class Forecaster:
    """The candidates of one served model and how to run them. ``spec`` is the model's ``forecast.json``; the
    files it names are read from ``directory``."""

    def __init__(self, directory: Path, spec: Mapping[str, Any]) -> None:
        from kernels import forecast as fk

        self._fk = fk
        self.candidates: tuple[str, ...] = tuple(spec["candidates"])
        unknown = [c for c in self.candidates if c not in KINDS]
        if not self.candidates or unknown:
            raise ValueError(f"candidates must be among {', '.join(KINDS)} (got {list(self.candidates)})")
        self.window = int(spec.get("window", 96))
        self.lags = int(spec.get("lags", 24))
        self.max_horizon = int(spec["max_horizon"])
        self.origins = int(spec.get("origins", 3))
        self.min_fit = int(spec.get("min_fit", 8))
        self._arima = _ArimaProfiles(spec["arima"]) if "arima" in self.candidates else None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = min(4, cores)
        self._sessions: dict[str, Any] = {k: cpu_session(inside_version(directory, spec[k]), threads)
                                          for k in ("lstm", "gbm") if k in self.candidates}
        self.tables: dict[str, F64] = {}
        if spec.get("calibration"):
            with np.load(inside_version(directory, spec["calibration"])) as cal:  # arrays only: allow_pickle stays off
                self.tables = {k: np.asarray(cal[k], np.float64) for k in cal.files}
        fk.warm_up()

    # -- candidates ---------------------------------------------------------------------------------------
    def candidate_forecasts(self, hist: F64, rows: I64, cutoffs: I64, m: I64, horizon: int) -> dict[str, F64]:
        """Every candidate's forecast [N, horizon] for the tasks (``m`` per task)."""
        fk = self._fk
        out: dict[str, F64] = {}
        for kind in self.candidates:
            if kind == "snaive":
                out[kind] = fk.snaive(hist, rows, cutoffs, m, horizon)
            elif kind == "linear":
                out[kind] = fk.linear_trend(hist, rows, cutoffs, m, horizon)
            elif kind == "arima":
                assert self._arima is not None
                out[kind] = self._arima.forecast(fk, hist, rows, cutoffs, m, horizon)
            else:
                out[kind] = self._global(kind, hist, rows, cutoffs, m, horizon)
        return out

    def _global(self, kind: str, hist: F64, rows: I64, cutoffs: I64, m: I64, horizon: int) -> F64:
        fk, n = self._fk, len(rows)
        if n == 0:
            return np.zeros((0, horizon))
        z, mask, level, scale = fk.windows(hist, rows, cutoffs, m, self.window)
        full = self.max_horizon
        if kind == "gbm":  # one row per step ahead: only the steps asked for
            feats = fk.gbm_features(z, mask, m, cutoffs, horizon, self.lags)
            pred = self._sessions[kind].run(None, {"features": feats})[0].reshape(n, horizon)
        else:
            base = fk.snaive_z(z, mask, m, full)
            pos = cutoffs[:, None] - self.window + np.arange(self.window)[None, :]
            phase = 2.0 * np.pi * (pos % m[:, None]) / m[:, None]
            x = np.stack([z, mask, np.sin(phase).astype(np.float32), np.cos(phase).astype(np.float32)], axis=2)
            pred = self._sessions[kind].run(None, {"x": x.astype(np.float32), "base": base})[0]
        return np.asarray(level[:, None] + scale[:, None] * np.asarray(pred[:, :horizon], np.float64), np.float64)

    # -- selection ------------------------------------------------------------------------------------------
    def select(self, hist: F64, lengths: I64, m: I64, horizon: int) -> Selection:
        """Forecast every series with every candidate, backtest them and choose (see the module docstring)."""
        fk, b, k = self._fk, len(lengths), len(self.candidates)
        tasks = plan_tasks(lengths, m, horizon, self.origins, self.min_fit)
        scale = fk.mase_scale(hist, lengths, m)
        fc = self.candidate_forecasts(hist, tasks.rows, tasks.cutoffs, m[tasks.rows], horizon)
        answer = tasks.origin == 0
        forecasts = np.stack([fc[c][answer] for c in self.candidates])  # rows 0..B-1 in order
        mase = np.full((b, k), np.nan)
        smape = np.full((b, k), np.nan)
        bt = ~answer
        rows = tasks.rows[bt]
        for j, c in enumerate(self.candidates):
            e_mase, e_smape, count = fk.backtest_errors(hist, rows, tasks.cutoffs[bt], lengths, fc[c][bt], scale)
            mase[:, j] = _mean_by_row(rows, e_mase, count, b)
            smape[:, j] = _mean_by_row(rows, e_smape, count, b)
        finite = np.isfinite(forecasts).all(axis=2).T  # [B, K]
        ranked = np.where(np.isfinite(mase) & finite, mase, np.inf)
        chosen = np.argmin(ranked, axis=1)
        # no backtest at all: the first candidate whose forecast is finite
        none = ~np.isfinite(ranked).any(axis=1)
        chosen[none] = np.argmax(finite[none], axis=1)
        return Selection(forecasts, chosen.astype(np.int64), mase, smape, scale)

    def intervals(self, table: str, mean: F64, scale: F64, levels: F64) -> tuple[F64, F64]:
        """Lower and upper bounds [B, L, H] around ``mean`` [B, H] from the calibration ``table``."""
        if table not in self.tables:
            raise ValueError(f"no calibration table '{table}' (have: {', '.join(sorted(self.tables))})")
        half = interval_quantiles(self.tables[table], levels, mean.shape[1]) * scale[:, None, None]
        return mean[:, None, :] - half, mean[:, None, :] + half


def _mean_by_row(rows: I64, values: F64, count: I64, b: int) -> F64:
    """Step-weighted mean of per-task errors per series; NaN where a series has no finite backtest."""
    ok = np.isfinite(values) & (count > 0)
    w = np.where(ok, count, 0).astype(np.float64)
    num = np.bincount(rows, weights=np.where(ok, values, 0.0) * w, minlength=b)
    den = np.bincount(rows, weights=w, minlength=b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


class _ArimaProfiles:
    """Fixed ARIMA coefficients per season length, expanded into lag polynomials once at load."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        from kernels.forecast import expand_sarima

        def expand(p: Mapping[str, Any]) -> tuple[F64, F64, F64, float]:
            diff, ar, ma = expand_sarima(tuple(p["order"]), tuple(p["seasonal_order"]), dict(p["params"]))
            return (np.asarray(diff, np.float64), np.asarray(ar, np.float64), np.asarray(ma, np.float64),
                    float(p["params"].get("intercept", 0.0)))

        self.profiles = {int(m): expand(p) for m, p in doc["profiles"].items()}
        # the airline model's (theta, Theta) for a season length not seen in training
        self.default = (float(doc["default"]["ma.L1"]), float(doc["default"]["ma.S"]))
        self._extra: dict[int, tuple[F64, F64, F64, float]] = {}

    def polys(self, m: int) -> tuple[F64, F64, F64, float]:
        if m in self.profiles:
            return self.profiles[m]
        if m not in self._extra:
            from kernels.forecast import expand_sarima

            theta, stheta = self.default
            order, seasonal = ((0, 1, 1), (0, 1, 1, m)) if m > 1 else ((0, 1, 1), (0, 0, 0, 0))
            diff, ar, ma = expand_sarima(order, seasonal, {"ma.L1": theta, f"ma.S.L{m}": stheta})
            self._extra[m] = (np.asarray(diff, np.float64), np.asarray(ar, np.float64),
                              np.asarray(ma, np.float64), 0.0)
        return self._extra[m]

    def forecast(self, fk: Any, hist: F64, rows: I64, cutoffs: I64, m: I64, horizon: int) -> F64:
        out = np.empty((len(rows), horizon))
        for season in np.unique(m):
            at = np.flatnonzero(m == season)
            diff, ar, ma, mu = self.polys(int(season))
            out[at] = fk.arima(hist, rows[at], cutoffs[at], diff, ar, ma, mu, horizon)
        return out
