"""kernels.forecast: every kernel against a plain NumPy/Python reference, arima against statsmodels' SARIMAX,
and hand-checked windows and features."""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np
import pytest
from numpy.typing import NDArray

from kernels import forecast as fc

H = 10
EMPTY = np.zeros(0, np.int64)
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


class Tasks(NamedTuple):
    hist: F64
    lengths: I64
    rows: I64
    cutoffs: I64
    m: I64


def random_tasks(seed: int, n_tasks: int = 40, n_rows: int = 6, T: int = 90) -> Tasks:
    """Seasonal random walks, NaN-padded past their lengths (the kernels must never read the padding)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, T + 1, n_rows)
    lengths[0] = T
    t = np.arange(T)
    hist = 50.0 + rng.normal(size=(n_rows, T)).cumsum(axis=1) + 5.0 * np.sin(2 * np.pi * t / 7.0)
    hist[0, 40] = 0.0  # a zero actual: its sMAPE term may have a zero denominator
    for r in range(n_rows):
        hist[r, lengths[r]:] = np.nan
    rows = rng.integers(0, n_rows, n_tasks)
    cutoffs = rng.integers(2, lengths[rows] + 1)
    cutoffs[:3] = np.minimum([2, 3, 5], lengths[rows[:3]])  # short pasts (c < m, naive fall-backs)
    cutoffs[3] = lengths[rows[3]]  # nothing left to backtest on
    m = rng.choice(np.array([1, 2, 4, 7, 12, 24, 40]), n_tasks)
    return Tasks(hist, lengths, rows, cutoffs.astype(np.int64), m.astype(np.int64))


# --- references ----------------------------------------------------------------------------------------------


def snaive_reference(hist: F64, rows: I64, cutoffs: I64, m: I64, horizon: int) -> F64:
    out = np.empty((len(rows), horizon))
    for n in range(len(rows)):
        y, c, s = hist[rows[n]], int(cutoffs[n]), max(int(m[n]), 1)
        for h in range(horizon):
            out[n, h] = y[c - s + h % s] if c >= s else y[c - 1]
    return out


def arima_reference(hist: F64, rows: I64, cutoffs: I64, diff: F64, ar: F64, ma: F64, mu: float,
                    horizon: int) -> F64:
    """CSS recursion written out: pre-sample w - mu and e are 0, future e are 0, y integrated back."""
    d = len(diff) - 1
    out = np.empty((len(rows), horizon))
    for n in range(len(rows)):
        c = int(cutoffs[n])
        y = [float(v) for v in hist[rows[n], :c]]
        if c <= d + 1:
            out[n] = y[-1]
            continue
        w: dict[int, float] = {}
        e: dict[int, float] = {}
        for t in range(d, c + horizon):
            pred = mu
            pred += sum(ar[j - 1] * (w[t - j] - mu) for j in range(1, len(ar) + 1) if t - j >= d)
            pred += sum(ma[j - 1] * e[t - j] for j in range(1, len(ma) + 1) if t - j >= d)
            if t < c:
                w[t] = sum(diff[j] * y[t - j] for j in range(d + 1))
                e[t] = w[t] - pred
            else:
                w[t], e[t] = pred, 0.0
                y.append(pred - sum(diff[j] * y[t - j] for j in range(1, d + 1)))
        out[n] = y[c:]
    return out


def trend_design(t: NDArray[np.int64], c: int, length: int, s: int, dummies: bool) -> F64:
    cols = [np.ones(len(t)), (t - c + 1) / length]
    if dummies:
        cols += [(t % s == p).astype(float) for p in range(1, s)]
    return np.stack(cols, axis=1)


def linear_trend_reference(hist: F64, rows: I64, cutoffs: I64, m: I64, horizon: int, seasons: int = 3,
                           min_points: int = 8) -> F64:
    out = np.empty((len(rows), horizon))
    for n in range(len(rows)):
        c, s = int(cutoffs[n]), max(int(m[n]), 1)
        length = min(c, max(seasons * s, 24))
        dummies = s > 1 and length >= 2 * s and length >= min_points
        past = np.arange(c - length, c)
        coef = np.linalg.lstsq(trend_design(past, c, length, s, dummies), hist[rows[n], past], rcond=None)[0]
        out[n] = trend_design(np.arange(c, c + horizon), c, length, s, dummies) @ coef
    return out


def scale_reference(y: F64, s: int) -> float:
    lag = s if len(y) > s + 1 else 1
    diffs = np.abs(y[lag:] - y[:-lag]) if len(y) > lag else np.zeros(1)
    return max(float(diffs.mean()), 1e-8 * (float(np.abs(y).mean()) + 1.0))


def windows_reference(hist: F64, rows: I64, cutoffs: I64, m: I64, width: int) -> tuple[F64, F64, F64, F64]:
    z, mask = np.zeros((len(rows), width)), np.zeros((len(rows), width))
    level, scale = np.empty(len(rows)), np.empty(len(rows))
    for n in range(len(rows)):
        c, s = int(cutoffs[n]), max(int(m[n]), 1)
        known = hist[rows[n], :c]
        win = known[-width:]
        level[n] = known[-s:].mean()
        scale[n] = max(float(win.std()), 1e-8 * (float(np.abs(win).mean()) + 1.0))
        z[n, width - len(win):] = (win - level[n]) / scale[n]
        mask[n, width - len(win):] = 1.0
    return z, mask, level, scale


def gbm_features_reference(z: NDArray[np.float32], mask: NDArray[np.float32], m: I64, cutoffs: I64,
                           horizon: int, lags: int = 24) -> F64:
    width = z.shape[1]
    rows = []
    for n in range(len(z)):
        s, k = max(int(m[n]), 1), int(mask[n].sum())
        real = z[n, width - k:].astype(np.float64)
        season = real[-s:]
        lag_values = [float(z[n, width - i]) if i <= k else 0.0 for i in range(1, lags + 1)]
        for h in range(horizon):
            snaive = real[k - s + h % s] if s <= k else real[-1]
            snaive2 = real[k - 2 * s + h % s] if 2 * s <= k else snaive
            angle = 2 * math.pi * ((int(cutoffs[n]) + h) % s) / s
            rows.append([h + 1, math.log(s), snaive, snaive2, *lag_values, season.mean(), season.std(),
                         real.mean(), math.sin(angle), math.cos(angle)])
    return np.array(rows, np.float64).reshape(len(z) * horizon, lags + 9)


def errors_reference(tasks: Tasks, forecasts: F64, scale: F64) -> tuple[F64, F64, I64, F64]:
    hist, lengths, rows, cutoffs, _ = tasks
    n_tasks = len(rows)
    mase, smape, count = np.full(n_tasks, np.nan), np.full(n_tasks, np.nan), np.zeros(n_tasks, np.int64)
    per_step = np.full(forecasts.shape, np.nan)
    for n in range(n_tasks):
        r, c = rows[n], int(cutoffs[n])
        k = max(0, min(forecasts.shape[1], int(lengths[r]) - c))
        y, f = hist[r, c:c + k], forecasts[n, :k]
        per_step[n, :k] = np.abs(y - f) / scale[r]
        count[n] = k
        if k and np.isfinite(f).all():
            mase[n] = np.abs(y - f).mean() / scale[r]
            den = np.abs(y) + np.abs(f)
            with np.errstate(invalid="ignore", divide="ignore"):
                smape[n] = np.where(den > 0, 200 * np.abs(y - f) / den, 0.0).mean()
    return mase, smape, count, per_step


# --- the kernels against the references ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=[0, 1, 2])
def tasks(request: pytest.FixtureRequest) -> Tasks:
    return random_tasks(request.param)


def test_snaive_matches_the_reference(tasks: Tasks) -> None:
    out = fc.snaive(tasks.hist, tasks.rows, tasks.cutoffs, tasks.m, H)
    np.testing.assert_array_equal(out, snaive_reference(tasks.hist, tasks.rows, tasks.cutoffs, tasks.m, H))
    assert np.isfinite(out).all()
    short = tasks.cutoffs < tasks.m
    assert short.any() and (tasks.m == 1).any()
    np.testing.assert_array_equal(out[short], np.repeat(tasks.hist[tasks.rows[short], tasks.cutoffs[short] - 1,
                                                                   None], H, axis=1))


def test_linear_trend_matches_the_reference(tasks: Tasks) -> None:
    out = fc.linear_trend(tasks.hist, tasks.rows, tasks.cutoffs, tasks.m, H)
    ref = linear_trend_reference(tasks.hist, tasks.rows, tasks.cutoffs, tasks.m, H)
    np.testing.assert_allclose(out, ref, rtol=1e-8, atol=1e-8)
    out = fc.linear_trend(tasks.hist, tasks.rows, tasks.cutoffs, tasks.m, H, 2, 12)
    ref = linear_trend_reference(tasks.hist, tasks.rows, tasks.cutoffs, tasks.m, H, 2, 12)
    np.testing.assert_allclose(out, ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("m", [1, 4, 7, 12])
def test_linear_trend_recovers_a_linear_seasonal_signal(m: int) -> None:
    rng = np.random.default_rng(m)
    t = np.arange(200)
    truth = 10.0 - 0.37 * t + rng.normal(0, 5, m)[t % m]
    hist = truth[None, :150]
    cutoffs = np.array([150, 101, 37, 5, 2], np.int64)  # the last two: too short for dummies / min_points
    rows = np.zeros(len(cutoffs), np.int64)
    out = fc.linear_trend(hist, rows, cutoffs, np.full(len(cutoffs), m, np.int64), 24)
    exact = cutoffs >= 2 * m if m > 1 else np.ones(len(cutoffs), bool)
    exact &= cutoffs >= 8
    expected = truth[cutoffs[:, None] + np.arange(24)]
    np.testing.assert_allclose(out[exact], expected[exact], atol=1e-6)
    two = fc.linear_trend(np.array([[1.0, 3.0]]), np.zeros(1, np.int64), np.array([2]), np.array([m]), 3)
    np.testing.assert_allclose(two, [[5.0, 7.0, 9.0]], atol=1e-9)  # the line through two points


def test_linear_trend_with_a_gap_in_the_window_is_nan() -> None:
    hist = np.arange(30.0)[None].copy()
    hist[0, 20] = np.nan
    rows, m = np.zeros(2, np.int64), np.ones(2, np.int64)
    out = fc.linear_trend(hist, rows, np.array([25, 18]), m, 3)
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


def arima_specs() -> list[tuple[F64, F64, F64, float]]:
    rng = np.random.default_rng(7)
    diff12 = np.r_[1.0, np.zeros(11), -1.0]
    return [
        (np.ones(1), rng.uniform(-0.5, 0.5, 2), rng.uniform(-0.5, 0.5, 1), 3.0),
        (np.array([1.0, -1.0]), np.array([0.5]), np.array([-0.3]), 0.2),
        (np.convolve([1.0, -1.0], diff12), np.zeros(0), np.convolve([1.0, -0.4], np.r_[1.0, np.zeros(11), -0.6])[1:],
         0.0),
        (np.convolve([1.0, -2.0, 1.0], [1.0, 0.0, -1.0]), np.array([0.3, 0.1, -0.2]), np.zeros(0), -0.1),
    ]


@pytest.mark.parametrize("spec", range(4))
def test_arima_matches_the_reference(tasks: Tasks, spec: int) -> None:
    diff, ar, ma, mu = arima_specs()[spec]
    out = fc.arima(tasks.hist, tasks.rows, tasks.cutoffs, diff, ar, ma, mu, H)
    ref = arima_reference(tasks.hist, tasks.rows, tasks.cutoffs, diff, ar, ma, mu, H)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    short = tasks.cutoffs <= len(diff)
    np.testing.assert_array_equal(out[short], np.repeat(tasks.hist[tasks.rows[short], tasks.cutoffs[short] - 1,
                                                                   None], H, axis=1))


def test_arima_white_noise_forecasts_the_mean() -> None:
    hist = np.random.default_rng(3).normal(size=(1, 50))
    out = fc.arima(hist, np.zeros(1, np.int64), np.array([50]), np.ones(1), np.zeros(0), np.zeros(0), 4.5, 6)
    np.testing.assert_array_equal(out, np.full((1, 6), 4.5))


def test_mase_scale_matches_numpy(tasks: Tasks) -> None:
    m = np.array([1, 7, 12, 100, 3, 24], np.int64)  # 100: longer than every row, so lag 1
    out = fc.mase_scale(tasks.hist, tasks.lengths, m)
    ref = [scale_reference(tasks.hist[r, :tasks.lengths[r]], int(m[r])) for r in range(len(m))]
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    flat = fc.mase_scale(np.full((2, 10), 3.0), np.array([10, 1], np.int64), np.array([2, 1], np.int64))
    np.testing.assert_allclose(flat, [4e-8, 4e-8])  # a flat (or one-value) row: the floor, never 0


@pytest.mark.parametrize("width", [1, 16, 64])
def test_windows_match_the_reference(tasks: Tasks, width: int) -> None:
    z, mask, level, scale = fc.windows(tasks.hist, tasks.rows, tasks.cutoffs, tasks.m, width)
    assert [a.dtype.name for a in (z, mask, level, scale)] == ["float32", "float32", "float64", "float64"]
    z_ref, mask_ref, level_ref, scale_ref = windows_reference(tasks.hist, tasks.rows, tasks.cutoffs, tasks.m, width)
    np.testing.assert_array_equal(mask, mask_ref)
    np.testing.assert_allclose(level, level_ref, rtol=1e-12)
    np.testing.assert_allclose(scale, scale_ref, rtol=1e-12)
    np.testing.assert_allclose(z, z_ref, rtol=1e-6, atol=1e-5)
    assert (z[mask == 0] == 0).all() and (scale > 0).all()


@pytest.mark.parametrize("lags", [24, 3])
def test_gbm_features_and_snaive_z_match_the_reference(tasks: Tasks, lags: int) -> None:
    z, mask, _, _ = fc.windows(tasks.hist, tasks.rows, tasks.cutoffs, tasks.m, 48)
    feats = fc.gbm_features(z, mask, tasks.m, tasks.cutoffs, H, lags)
    assert feats.dtype == np.float32 and feats.shape == (len(tasks.rows) * H, len(fc.gbm_feature_names(lags)))
    ref = gbm_features_reference(z, mask, tasks.m, tasks.cutoffs, H, lags)
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-5)
    base = fc.snaive_z(z, mask, tasks.m, H)
    assert base.dtype == np.float32
    np.testing.assert_array_equal(base.ravel(), feats[:, fc.gbm_feature_names(lags).index("snaive")])


def test_feature_names() -> None:
    assert fc.GBM_FEATURES == fc.gbm_feature_names(24)
    assert len(fc.GBM_FEATURES) == 33 and len(set(fc.GBM_FEATURES)) == 33
    assert fc.gbm_feature_names(2) == ("h", "log_m", "snaive", "snaive2", "lag_1", "lag_2", "mean_season",
                                       "std_season", "mean_all", "phase_sin", "phase_cos")


def test_windows_and_features_by_hand() -> None:
    hist = np.array([[1.0, 2, 3, 4, 5, 6, 7, 8], [3.0, 5, 4, 9, np.nan, np.nan, np.nan, np.nan]])
    rows, cutoffs, m = np.array([0, 1], np.int64), np.array([6, 3], np.int64), np.array([2, 1], np.int64)
    z, mask, level, scale = fc.windows(hist, rows, cutoffs, m, 8)
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1, 1]])
    np.testing.assert_allclose(level, [5.5, 4.0])  # mean of the last m known values
    s0, s1 = math.sqrt(35 / 12), math.sqrt(2 / 3)  # standard deviations of 1..6 and of 3, 5, 4
    np.testing.assert_allclose(scale, [s0, s1])
    np.testing.assert_allclose(z[0], [0, 0, *((np.arange(1, 7) - 5.5) / s0)], rtol=1e-6)
    np.testing.assert_allclose(z[1], [0, 0, 0, 0, 0, -1 / s1, 1 / s1, 0], rtol=1e-6)
    feats = fc.gbm_features(z, mask, m, cutoffs, 3, 4)
    names = fc.gbm_feature_names(4)
    first = {name: feats[:3, i] for i, name in enumerate(names)}
    np.testing.assert_allclose(first["h"], [1, 2, 3])
    np.testing.assert_allclose(first["log_m"], math.log(2))
    k0, k1 = 2 / s0, 1.5 / s1  # the values below were worked out in units of 2 and 1.5
    np.testing.assert_allclose(first["snaive"], np.multiply([-0.25, 0.25, -0.25], k0), rtol=1e-6)
    np.testing.assert_allclose(first["snaive2"], np.multiply([-1.25, -0.75, -1.25], k0), rtol=1e-6)
    np.testing.assert_allclose(feats[:3, 4:8], np.tile([0.25, -0.25, -0.75, -1.25], (3, 1)) * k0, rtol=1e-6)
    np.testing.assert_allclose(first["mean_season"], 0.0)
    np.testing.assert_allclose(first["std_season"], 0.25 * k0, rtol=1e-6)
    np.testing.assert_allclose(first["mean_all"], -1.0 * k0, rtol=1e-6)
    np.testing.assert_allclose(first["phase_sin"], [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(first["phase_cos"], [1, -1, 1])
    second = feats[3:]
    np.testing.assert_allclose(second[:, names.index("log_m")], 0.0)
    np.testing.assert_allclose(second[:, names.index("snaive2")], [2 / 3 * k1] * 3, rtol=1e-6)  # two steps back
    # lag_4 is masked: 0
    np.testing.assert_allclose(second[:, 4:8], np.tile([0, 2 / 3, -2 / 3, 0], (3, 1)) * k1, atol=1e-6)
    np.testing.assert_allclose(second[:, names.index("phase_cos")], 1.0)
    np.testing.assert_allclose(fc.snaive_z(z, mask, m, 3), [np.multiply([-0.25, 0.25, -0.25], k0), [0.0, 0.0, 0.0]],
                               atol=1e-6)


def test_backtest_errors_match_numpy(tasks: Tasks) -> None:
    forecasts = fc.snaive(tasks.hist, tasks.rows, tasks.cutoffs, tasks.m, H)
    forecasts[5, 0] = np.nan  # a non-finite forecast: NaN errors (if that step's actual is known)
    forecasts[6, -1] = -forecasts[6, -1]
    scale = fc.mase_scale(tasks.hist, tasks.lengths, np.full(len(tasks.lengths), 7, np.int64))
    mase, smape, count = fc.backtest_errors(tasks.hist, tasks.rows, tasks.cutoffs, tasks.lengths, forecasts, scale)
    mase_ref, smape_ref, count_ref, steps_ref = errors_reference(tasks, forecasts, scale)
    np.testing.assert_array_equal(count, count_ref)
    assert (count == 0).any() and (count == H).any()
    np.testing.assert_allclose(mase, mase_ref, rtol=1e-12)
    np.testing.assert_allclose(smape, smape_ref, rtol=1e-12)
    assert np.isnan(mase[count == 0]).all()
    steps = fc.scaled_errors(tasks.hist, tasks.rows, tasks.cutoffs, tasks.lengths, forecasts, scale)
    np.testing.assert_allclose(steps, steps_ref, rtol=1e-12)


def test_smape_zero_over_zero_counts_zero() -> None:
    hist = np.array([[1.0, 2.0, 0.0, 4.0]])
    mase, smape, count = fc.backtest_errors(hist, np.zeros(1, np.int64), np.array([2]), np.array([4]),
                                            np.array([[0.0, 2.0, 9.0]]), np.full(1, 2.0))
    assert count[0] == 2
    np.testing.assert_allclose(mase, [0.5])
    np.testing.assert_allclose(smape, [(0.0 + 200.0 * 2 / 6) / 2])


def test_every_kernel_takes_no_tasks() -> None:
    hist = np.ones((3, 20))
    lengths = np.full(3, 20, np.int64)
    empty_f = np.zeros((0, H))
    assert fc.snaive(hist, EMPTY, EMPTY, EMPTY, H).shape == (0, H)
    assert fc.linear_trend(hist, EMPTY, EMPTY, EMPTY, H).shape == (0, H)
    assert fc.arima(hist, EMPTY, EMPTY, np.array([1.0, -1.0]), np.zeros(1), np.zeros(1), 0.0, H).shape == (0, H)
    z, mask, level, scale = fc.windows(hist, EMPTY, EMPTY, EMPTY, 16)
    assert z.shape == mask.shape == (0, 16) and level.shape == scale.shape == (0,)
    assert fc.gbm_features(z, mask, EMPTY, EMPTY, H).shape == (0, len(fc.GBM_FEATURES))
    assert fc.snaive_z(z, mask, EMPTY, H).shape == (0, H)
    mase, smape, count = fc.backtest_errors(hist, EMPTY, EMPTY, lengths, empty_f, np.ones(3))
    assert mase.shape == smape.shape == count.shape == (0,)
    assert fc.scaled_errors(hist, EMPTY, EMPTY, lengths, empty_f, np.ones(3)).shape == (0, H)
    assert fc.mase_scale(np.zeros((0, 5)), EMPTY, EMPTY).shape == (0,)


def test_warm_up_and_exports() -> None:
    fc.warm_up()
    assert sorted(fc.__all__) == fc.__all__
    assert all(hasattr(fc, name) for name in fc.__all__)


# --- arima against statsmodels -------------------------------------------------------------------------------


def polynomials_of(res: Any, d: int, seasonal_diff: int, s: int) -> tuple[F64, F64, F64]:
    """diff / ar / ma for :func:`kernels.forecast.arima` from fitted SARIMAX results: statsmodels keeps the lag
    polynomials with signs ([1, -phi_1, ...], [1, theta_1, ...]); multiply the seasonal ones in and drop the 1."""
    ar_poly = np.convolve(res.polynomial_ar, res.polynomial_seasonal_ar)
    ma_poly = np.convolve(res.polynomial_ma, res.polynomial_seasonal_ma)
    diff = np.polynomial.polynomial.polypow([1.0, -1.0], d)
    if seasonal_diff:
        seasonal = np.zeros(s + 1)
        seasonal[[0, s]] = 1.0, -1.0
        diff = np.convolve(diff, np.polynomial.polynomial.polypow(seasonal, seasonal_diff))
    return np.asarray(diff, float), -ar_poly[1:], ma_poly[1:]


def simulate(diff: F64, ar: F64, ma: F64, n: int, rng: np.random.Generator, burn: int = 300) -> F64:
    e = rng.normal(size=n + burn)
    w = np.zeros(n + burn)
    for t in range(n + burn):
        w[t] = e[t] + sum(ar[j] * w[t - 1 - j] for j in range(len(ar)) if t > j)
        w[t] += sum(ma[j] * e[t - 1 - j] for j in range(len(ma)) if t > j)
    w = w[burn:]
    d = len(diff) - 1
    y = np.empty(n)
    y[:d] = 100.0 + rng.normal(0, 5, d)
    for t in range(d, n):
        y[t] = w[t] - diff[1:] @ y[t - d:t][::-1]
    return y


SARIMA_CASES = [
    ((1, 1, 1), (0, 0, 0, 0), {"ar.L1": 0.6, "ma.L1": -0.3}, 600),
    ((0, 1, 1), (0, 1, 1, 12), {"ma.L1": -0.4, "ma.S.L12": -0.6}, 600),
    ((1, 0, 1), (0, 1, 1, 24), {"ar.L1": 0.7, "ma.L1": -0.3, "ma.S.L24": -0.5}, 720),
]


@pytest.mark.parametrize(("order", "seasonal_order", "truth", "n"), SARIMA_CASES)
def test_arima_matches_statsmodels(order: tuple[int, int, int], seasonal_order: tuple[int, int, int, int],
                                   truth: dict[str, float], n: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sarimax = pytest.importorskip("statsmodels.tsa.statespace.sarimax")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    diff, ar, ma = fc.expand_sarima(order, seasonal_order, truth)
    y = simulate(diff, ar, ma, n, np.random.default_rng(sum(order) + n))
    horizon = 2 * max(seasonal_order[3], 6)
    model = sarimax.SARIMAX(y, order=order, seasonal_order=seasonal_order)
    start = [truth.get(name, 1.0) for name in model.param_names]  # a start at the truth: a quicker fit
    with warnings.catch_warnings(), threadpoolctl.threadpool_limits(1):  # BLAS threads only slow small filters
        warnings.simplefilter("ignore")
        res = model.fit(start_params=start, disp=False)
        expected = res.forecast(horizon)
        earlier = sarimax.SARIMAX(y[:n - 100], order=order, seasonal_order=seasonal_order).filter(res.params)
        expected_earlier = earlier.forecast(horizon)
    params = dict(zip(model.param_names, res.params, strict=True))
    diff, ar, ma = fc.expand_sarima(order, seasonal_order, params)
    for got, want in zip((diff, ar, ma), polynomials_of(res, order[1], seasonal_order[1], seasonal_order[3]),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    out = fc.arima(y[None], np.zeros(2, np.int64), np.array([n, n - 100]), diff, ar, ma, 0.0, horizon)
    sigma = math.sqrt(params["sigma2"])  # the exact filter and CSS differ only by start-up effects, long decayed
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-5 * sigma)
    np.testing.assert_allclose(out[1], expected_earlier, rtol=0, atol=1e-5 * sigma)


def test_expand_sarima_multiplies_the_polynomials() -> None:
    params = {"ar.L1": 0.5, "ar.S.L4": 0.2, "ma.L1": 0.3, "ma.L2": -0.1, "ma.S.L4": -0.4, "sigma2": 9.0}
    diff, ar, ma = fc.expand_sarima((1, 1, 2), (1, 1, 1, 4), params)
    np.testing.assert_allclose(diff, [1, -1, 0, 0, -1, 1])
    np.testing.assert_allclose(ar, [0.5, 0, 0, 0.2, -0.1])  # (1 - .5B)(1 - .2B^4) = 1 - .5B - .2B^4 + .1B^5
    np.testing.assert_allclose(ma, [0.3, -0.1, 0, -0.4, -0.12, 0.04])
    diff, ar, ma = fc.expand_sarima((0, 0, 0), (0, 0, 0, 0), {})
    assert diff.tolist() == [1.0] and ar.size == 0 and ma.size == 0
    with pytest.raises(ValueError, match="season length"):
        fc.expand_sarima((0, 0, 0), (0, 1, 0, 1), {})
