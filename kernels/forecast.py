"""Kernels of the forecasting family: candidate forecasters, the learnt models' inputs, backtest errors.

``hist`` (float64 [B, T]) holds one series per row, right-padded, ``lengths`` (int64 [B]) each row's valid
length.  Task ``n`` forecasts row ``rows[n]`` from its first ``c = cutoffs[n] >= 2`` values ``hist[rows[n], :c]``
over indices ``c .. c + H - 1``.  Season lengths ``m`` are int64 per task (per row in :func:`mase_scale`);
``m = 1``: no seasonality (``m < 1`` reads as 1).  Every kernel takes N = 0 tasks, looping in one thread.

Forecasters (``(hist, rows, cutoffs, m, H) -> float64 [N, H]``):

``snaive``        seasonal naive: the value of the same phase in the last season (naive when ``c < m``).
``linear_trend``  least squares on the last points: intercept, trend and seasonal dummies.
``arima``         fixed (S)ARIMA coefficients as expanded lag polynomials, conditional-sum-of-squares residuals;
                  :func:`expand_sarima` builds the polynomials from statsmodels' SARIMAX parameter names.

Inputs of the learnt models:

``windows``       the last ``W`` known values per task, normalised: ``(z, mask, level, scale)``.
``gbm_features``  one feature row per (task, step) from the windows; names in ``GBM_FEATURES``.
``snaive_z``      the seasonal naive forecast in window units (the LSTM's base forecast).

Scoring: ``mase_scale`` (per-row MASE denominator), ``backtest_errors`` (MASE and sMAPE per task) and
``scaled_errors`` (per step).

The kernels compile on first call; :func:`warm_up` does it ahead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final, TypeAlias

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["GBM_FEATURES", "arima", "backtest_errors", "expand_sarima", "gbm_feature_names", "gbm_features",
           "linear_trend", "mase_scale", "scaled_errors", "snaive", "snaive_z", "warm_up", "windows"]

_F64: TypeAlias = NDArray[np.float64]
_F32: TypeAlias = NDArray[np.float32]
_I64: TypeAlias = NDArray[np.int64]

_SCALE_FLOOR: Final = 1e-8  # scales are floored at _SCALE_FLOOR * (mean |y| + 1)
_MIN_TREND_WINDOW: Final = 24  # linear_trend fits at least this many points when there are that many


def gbm_feature_names(lags: int = 24) -> tuple[str, ...]:
    """Column names of :func:`gbm_features` with ``lags`` lag columns."""
    lag_names = tuple(f"lag_{i}" for i in range(1, lags + 1))
    return ("h", "log_m", "snaive", "snaive2", *lag_names, "mean_season", "std_season", "mean_all", "phase_sin",
            "phase_cos")


GBM_FEATURES: Final[tuple[str, ...]] = gbm_feature_names()


# --- shared helpers ------------------------------------------------------------------------------------------


@njit(cache=False, nogil=True)
def _season(m: int) -> int:
    return max(m, 1)


@njit(cache=False, nogil=True)
def _scale(y: _F64, lo: int, hi: int, m: int) -> float:
    """Mean |y[t] - y[t - lag]| over ``y[lo:hi]``, lag ``m`` (1 when ``hi - lo <= m + 1``), floored."""
    lag = m if hi - lo > m + 1 else 1
    diffs = 0.0
    total = 0.0
    for t in range(lo, hi):
        total += abs(y[t])
        diffs += abs(y[t] - y[t - lag]) if t - lag >= lo else 0.0
    mean_diff = diffs / (hi - lo - lag) if hi - lo > lag else 0.0
    return max(mean_diff, _SCALE_FLOOR * (total / max(hi - lo, 1) + 1.0))


@njit(cache=False, nogil=True)
def _spread(y: _F64, lo: int, hi: int) -> float:
    """Population standard deviation of ``y[lo:hi]``, floored like :func:`_scale`."""
    win = y[lo:hi]
    return max(float(np.std(win)), _SCALE_FLOOR * (float(np.mean(np.abs(win))) + 1.0))


@njit(cache=False, nogil=True)
def mase_scale(hist: _F64, lengths: _I64, m: _I64) -> _F64:
    """Per row: mean |y_t - y_{t-m}| over the valid values (lag 1 when length <= m + 1), floored above 0."""
    out = np.empty(hist.shape[0])
    for r in range(hist.shape[0]):
        out[r] = _scale(hist[r], 0, lengths[r], _season(m[r]))
    return out


# --- forecasters ---------------------------------------------------------------------------------------------


@njit(cache=False, nogil=True)
def snaive(hist: _F64, rows: _I64, cutoffs: _I64, m: _I64, H: int) -> _F64:
    """yhat[n, h] = y[c - m + h % m]; the last value when ``c < m``."""
    out = np.empty((rows.shape[0], H))
    for n in range(rows.shape[0]):
        y = hist[rows[n]]
        c = cutoffs[n]
        s = _season(m[n])
        for h in range(H):
            out[n, h] = y[c - s + h % s] if c >= s else y[c - 1]
    return out


@njit(cache=False, nogil=True)
def _trend_task(y: _F64, c: int, s: int, H: int, seasons: int, min_points: int, out: _F64) -> None:
    """Intercept + trend + (s - 1) phase dummies span the same space as one intercept per phase and a common
    slope, whose least squares solution is closed-form: the slope of the phase-demeaned points, then each
    phase's mean.  With ``g = 1`` group: the ordinary line.  Every group has >= 2 points, so ``sxx > 0``."""
    length = min(c, max(seasons * s, _MIN_TREND_WINDOW))
    g = s if s > 1 and length >= 2 * s and length >= min_points else 1
    t_mean = np.zeros(g)
    y_mean = np.zeros(g)
    size = np.zeros(g)
    for t in range(c - length, c):
        size[t % g] += 1.0
        t_mean[t % g] += t - c
        y_mean[t % g] += y[t]
    t_mean /= size
    y_mean /= size
    sxx = 0.0
    sxy = 0.0
    for t in range(c - length, c):
        dt = t - c - t_mean[t % g]
        sxx += dt * dt
        sxy += dt * (y[t] - y_mean[t % g])
    slope = sxy / sxx
    for h in range(H):
        out[h] = y_mean[(c + h) % g] + slope * (h - t_mean[(c + h) % g])


@njit(cache=False, nogil=True)
def linear_trend(
    hist: _F64, rows: _I64, cutoffs: _I64, m: _I64, H: int, seasons: int = 3, min_points: int = 8
) -> _F64:
    """Least squares on the last ``min(c, max(seasons * m, 24))`` points: intercept, time and, when ``m > 1`` and
    there are ``2 m`` points, m - 1 dummies of the phase ``t % m``; intercept and time only below
    ``min_points`` points.  A non-finite value in the window gives NaN forecasts."""
    out = np.empty((rows.shape[0], H))
    for n in range(rows.shape[0]):
        _trend_task(hist[rows[n]], cutoffs[n], _season(m[n]), H, seasons, min_points, out[n])
    return out


@njit(cache=False, nogil=True)
def _arma_mean(w: _F64, e: _F64, t: int, d: int, ar: _F64, ma: _F64, mu: float) -> float:
    """mu + sum_j ar_j (w_{t-j} - mu) + sum_j ma_j e_{t-j}; pre-sample (t - j < d) terms are 0."""
    v = mu
    for j in range(1, min(ar.shape[0], t - d) + 1):
        v += ar[j - 1] * (w[t - j] - mu)
    for j in range(1, min(ma.shape[0], t - d) + 1):
        v += ma[j - 1] * e[t - j]
    return v


@njit(cache=False, nogil=True)
def _arima_task(y: _F64, w: _F64, e: _F64, c: int, H: int, diff: _F64, ar: _F64, ma: _F64, mu: float) -> None:
    """Fill ``y[c:c + H]`` from ``y[:c]``: CSS residuals over the past, then the recursion with e = 0."""
    d = diff.shape[0] - 1
    for t in range(d, c + H):
        if t < c:
            wt = 0.0
            for j in range(d + 1):
                wt += diff[j] * y[t - j]
            w[t] = wt
            e[t] = wt - _arma_mean(w, e, t, d, ar, ma, mu)
        else:
            w[t] = _arma_mean(w, e, t, d, ar, ma, mu)
            e[t] = 0.0
            yt = w[t]
            for j in range(1, d + 1):
                yt -= diff[j] * y[t - j]
            y[t] = yt


@njit(cache=False, nogil=True)
def arima(
    hist: _F64, rows: _I64, cutoffs: _I64, diff: _F64, ar: _F64, ma: _F64, mu: float, H: int
) -> _F64:
    """Forecasts of fixed ARIMA coefficients: ``w = diff(B) y`` and ``w_t - mu = sum ar_j (w_{t-j} - mu) + e_t +
    sum ma_j e_{t-j}`` (statsmodels' signs).  The naive last value when ``c <= len(diff)``."""
    out = np.empty((rows.shape[0], H))
    size = hist.shape[1] + H
    y = np.empty(size)
    w = np.empty(size)
    e = np.empty(size)
    for n in range(rows.shape[0]):
        src = hist[rows[n]]
        c = cutoffs[n]
        if c <= diff.shape[0]:
            out[n, :] = src[c - 1]
            continue
        y[:c] = src[:c]
        _arima_task(y, w, e, c, H, diff, ar, ma, mu)
        out[n, :] = y[c:c + H]
    return out


def expand_sarima(
    order: tuple[int, int, int], seasonal_order: tuple[int, int, int, int], params: Mapping[str, float]
) -> tuple[_F64, _F64, _F64]:
    """``(diff, ar, ma)`` for :func:`arima` from a SARIMAX ``(p, d, q) x (P, D, Q, s)`` fit: ``params`` by
    statsmodels' names (``ar.L1``, ``ma.L2``, ``ar.S.L12``, ``ma.S.L24``, ...; a missing one is 0, others such
    as ``sigma2`` are ignored).  The lag polynomials are multiplied out: ``diff`` = (1-B)^d (1-B^s)^D,
    ``ar`` = phi with (1 - sum phi_j B^j) = phi_p(B) Phi_P(B^s), ``ma`` = theta with (1 + sum theta_j B^j) =
    theta_q(B) Theta_Q(B^s).  A constant is not covered: pass ``mu`` to :func:`arima` separately."""
    p, d, q = order
    sp, sd, sq, s = seasonal_order
    if (sp or sd or sq) and s < 2:
        raise ValueError(f"seasonal order {seasonal_order} needs a season length s >= 2")

    def poly(sign: float, names: list[str], step: int) -> _F64:
        coef = np.zeros(len(names) * step + 1)
        coef[0] = 1.0
        for i, name in enumerate(names, 1):
            coef[i * step] = sign * float(params.get(name, 0.0))
        return coef

    ar_poly = np.convolve(poly(-1.0, [f"ar.L{i}" for i in range(1, p + 1)], 1),
                          poly(-1.0, [f"ar.S.L{i * s}" for i in range(1, sp + 1)], s))
    ma_poly = np.convolve(poly(1.0, [f"ma.L{i}" for i in range(1, q + 1)], 1),
                          poly(1.0, [f"ma.S.L{i * s}" for i in range(1, sq + 1)], s))
    diff = np.ones(1)
    for _ in range(d):
        diff = np.convolve(diff, [1.0, -1.0])
    for _ in range(sd):
        diff = np.convolve(diff, np.r_[1.0, np.zeros(s - 1), -1.0])
    return diff, -ar_poly[1:], ma_poly[1:].copy()


# --- inputs of the learnt models -----------------------------------------------------------------------------


@njit(cache=False, nogil=True)
def windows(hist: _F64, rows: _I64, cutoffs: _I64, m: _I64, W: int) -> tuple[_F32, _F32, _F64, _F64]:
    """The last ``k = min(c, W)`` known values right-aligned in ``W`` slots: ``z = (y - level) / scale`` and
    ``mask`` = 1 there, both 0 in the left padding.  ``level``: mean of the last ``min(c, m)`` known values;
    ``scale``: the standard deviation of the window's values, floored above 0 (not the seasonal difference of
    :func:`mase_scale`: a nearly periodic series has almost none, and its z would leave any training range)."""
    n_tasks = rows.shape[0]
    z = np.zeros((n_tasks, W), np.float32)
    mask = np.zeros((n_tasks, W), np.float32)
    level = np.empty(n_tasks)
    scale = np.empty(n_tasks)
    for n in range(n_tasks):
        y = hist[rows[n]]
        c = cutoffs[n]
        s = _season(m[n])
        k = min(c, W)
        level[n] = np.mean(y[c - min(c, s):c])
        scale[n] = _spread(y, c - k, c)
        for i in range(k):
            z[n, W - k + i] = (y[c - k + i] - level[n]) / scale[n]
            mask[n, W - k + i] = 1.0
    return z, mask, level, scale


@njit(cache=False, nogil=True)
def _snaive_at(zr: _F32, k: int, s: int, h: int, seasons_back: int) -> float:
    """z of phase ``h % s`` ``seasons_back`` seasons back; the last real z when there are fewer real values."""
    W = zr.shape[0]
    if k == 0:
        return 0.0
    if seasons_back * s <= k:
        return float(zr[W - seasons_back * s + h % s])
    return float(zr[W - 1])


@njit(cache=False, nogil=True)
def snaive_z(z: _F32, mask: _F32, m: _I64, H: int) -> _F32:
    """The seasonal naive forecast in window units: the ``"snaive"`` column of :func:`gbm_features`."""
    out = np.empty((z.shape[0], H), np.float32)
    for n in range(z.shape[0]):
        k = np.sum(mask[n] > 0.0)  # the real values: right-aligned
        for h in range(H):
            out[n, h] = _snaive_at(z[n], k, _season(m[n]), h, 1)
    return out


@njit(cache=False, nogil=True)
def _task_features(zr: _F32, k: int, s: int, c: int, lags: int, out: _F32) -> None:
    """Rows ``out[h]`` of one task (see :func:`gbm_features`)."""
    W = zr.shape[0]
    ks = min(k, s)
    mean_season = 0.0
    mean_all = 0.0
    for i in range(W - k, W):
        mean_all += zr[i] / k
        if i >= W - ks:
            mean_season += zr[i] / ks
    var = 0.0
    for i in range(W - ks, W):
        var += (zr[i] - mean_season) ** 2 / ks
    for h in range(out.shape[0]):
        row = out[h]
        row[0] = h + 1
        row[1] = math.log(s)
        row[2] = _snaive_at(zr, k, s, h, 1)
        row[3] = _snaive_at(zr, k, s, h, 2) if 2 * s <= k else row[2]
        for i in range(lags):
            row[4 + i] = zr[W - 1 - i] if i < k else 0.0
        row[4 + lags] = mean_season
        row[5 + lags] = math.sqrt(var)
        row[6 + lags] = mean_all
        angle = 2.0 * math.pi * ((c + h) % s) / s
        row[7 + lags] = math.sin(angle)
        row[8 + lags] = math.cos(angle)


@njit(cache=False, nogil=True)
def gbm_features(z: _F32, mask: _F32, m: _I64, cutoffs: _I64, H: int, lags: int = 24) -> _F32:
    """float32 [N * H, F] features, row ``n * H + h`` for task n and step h, columns ``gbm_feature_names(lags)``:
    step, log m, the snaive z of the last and the second last season, the last ``lags`` z (0 where masked),
    mean and population std of the last season's real z, the mean real z, and sin/cos of the target's phase
    ``(c + h) % m``."""
    out = np.zeros((z.shape[0] * H, lags + 9), np.float32)
    for n in range(z.shape[0]):
        k = np.sum(mask[n] > 0.0)
        _task_features(z[n], k, _season(m[n]), cutoffs[n], lags, out[n * H:(n + 1) * H])
    return out


# --- scoring -------------------------------------------------------------------------------------------------


@njit(cache=False, nogil=True)
def backtest_errors(
    hist: _F64, rows: _I64, cutoffs: _I64, lengths: _I64, forecasts: _F64, scale: _F64
) -> tuple[_F64, _F64, _I64]:
    """Per task, over the steps whose actual is known (inside the row's length and finite): MASE (mean |y - yhat|
    / scale[row]), sMAPE (mean 200 |y - yhat| / (|y| + |yhat|), a 0/0 term counts 0) and the step count; NaN
    errors when no step is known or a forecast of a known step is not finite."""
    n_tasks = rows.shape[0]
    mase = np.full(n_tasks, np.nan)
    smape = np.full(n_tasks, np.nan)
    count = np.zeros(n_tasks, np.int64)
    for n in range(n_tasks):
        y = hist[rows[n]]
        abs_err = 0.0
        rel_err = 0.0
        finite = True
        for h in range(forecasts.shape[1]):
            t = cutoffs[n] + h
            if t >= lengths[rows[n]] or not np.isfinite(y[t]):
                continue
            f = forecasts[n, h]
            finite = finite and np.isfinite(f)
            err = abs(y[t] - f)
            den = abs(y[t]) + abs(f)
            abs_err += err
            rel_err += 200.0 * err / den if den > 0.0 else 0.0
            count[n] += 1
        if count[n] > 0 and finite:
            mase[n] = abs_err / count[n] / scale[rows[n]]
            smape[n] = rel_err / count[n]
    return mase, smape, count


@njit(cache=False, nogil=True)
def scaled_errors(hist: _F64, rows: _I64, cutoffs: _I64, lengths: _I64, forecasts: _F64, scale: _F64) -> _F64:
    """|y - yhat| / scale[row] per task and step; NaN where the actual lies past the row's length."""
    out = np.full(forecasts.shape, np.nan)
    for n in range(rows.shape[0]):
        r = rows[n]
        for h in range(forecasts.shape[1]):
            t = cutoffs[n] + h
            if t < lengths[r]:
                out[n, h] = abs(hist[r, t] - forecasts[n, h]) / scale[r]
    return out


def warm_up() -> None:
    """Compile every kernel now (a few seconds) rather than on the first real batch."""
    hist = np.arange(60.0).reshape(2, 30) % 7.0
    lengths, rows, cutoffs, m = (np.array(v, np.int64) for v in ([30, 25], [0, 1], [20, 25], [1, 4]))
    scale = mase_scale(hist, lengths, m)
    fc = snaive(hist, rows, cutoffs, m, 3)
    linear_trend(hist, rows, cutoffs, m, 3)
    diff, ar, ma = expand_sarima((1, 1, 1), (0, 1, 1, 4), {"ar.L1": 0.5, "ma.L1": -0.3, "ma.S.L4": -0.5})
    arima(hist, rows, cutoffs, diff, ar, ma, 0.0, 3)
    z, mask, _, _ = windows(hist, rows, cutoffs, m, 8)
    gbm_features(z, mask, m, cutoffs, 3)
    snaive_z(z, mask, m, 3)
    backtest_errors(hist, rows, cutoffs, lengths, fc, scale)
    scaled_errors(hist, rows, cutoffs, lengths, fc, scale)
