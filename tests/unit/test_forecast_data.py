"""The forecasting family's series (M4, ETT, statsmodels, AirPassengers, synthetic) and the statsforecast peer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from infer.tasks.forecast import data, peer

SEASONS = {  # source -> (m, horizon); statsmodels varies per data set (see STATSMODELS)
    "m4-hourly": (24, 48),
    "m4-weekly": (52, 13),
    "ett": (24, 48),
    "airpassengers": (12, 12),
    "synthetic": (24, 48),
}
ORDER = ["m4-hourly", "m4-weekly", "ett", "statsmodels", "airpassengers", "synthetic"]  # as load_series returns
STATSMODELS = {"co2": (12, 18), "elnino": (12, 18), "sunspots": (1, 6), "nile": (1, 6), "realgdp": (4, 8)}
DATA_DIR = data.default_data_dir()
HAVE_FILES = DATA_DIR is not None and all(
    (DATA_DIR / f).is_file() for f in ("m4/Hourly-train.csv", "m4/Weekly-train.csv", "ett/ETTh1.csv")
)
needs_data = pytest.mark.skipif(not HAVE_FILES, reason="no M4 / ETT files (../shared/data/forecast)")


def _acf(x: NDArray[np.float64], lag: int) -> float:
    x = x - x.mean()
    return float(np.dot(x[:-lag], x[lag:]) / np.dot(x, x))


def _check(series: list[data.Series]) -> None:
    assert len({s.name for s in series}) == len(series)
    for s in series:
        assert s.name.startswith(f"{s.source}/")
        assert s.values.dtype == np.float64 and s.values.ndim == 1 and np.isfinite(s.values).all()
        assert s.values.shape[0] >= 3 * s.m + s.horizon
        expected = STATSMODELS[s.name.split("/")[1]] if s.source == "statsmodels" else SEASONS[s.source]
        assert (s.m, s.horizon) == expected, s.name


@pytest.fixture(scope="module")
def small() -> list[data.Series]:
    return data.load_series(DATA_DIR, small=True, seed=0)


def test_small_without_data_dir() -> None:
    series = data.load_series(None, small=True)
    _check(series)
    sources = {s.source for s in series}
    assert not sources & {"m4-hourly", "m4-weekly", "ett"}
    assert sum(s.source == "synthetic" for s in series) == 10
    pytest.importorskip("statsmodels")
    assert {s.name for s in series if s.source == "statsmodels"} == {f"statsmodels/{n}" for n in STATSMODELS}


@needs_data
def test_small_with_data_dir(small: list[data.Series]) -> None:
    _check(small)
    counts = {src: sum(s.source == src for s in small) for src in SEASONS}
    assert counts["m4-hourly"] == counts["m4-weekly"] == 10
    ett = [s for s in small if s.source == "ett"]
    assert len(ett) == 7 and all(s.name.endswith("#3") and s.values.shape == (960,) for s in ett)
    order = [s.source for s in small]
    assert order == sorted(order, key=ORDER.index)


@needs_data
def test_deterministic_and_seeded(small: list[data.Series]) -> None:
    again = data.load_series(DATA_DIR, small=True, seed=0)
    assert [s.name for s in again] == [s.name for s in small]
    assert all(np.array_equal(a.values, b.values) for a, b in zip(small, again, strict=True))
    other = data.load_series(DATA_DIR, small=True, seed=1)
    assert {s.name for s in other if s.source == "m4-hourly"} != {s.name for s in small if s.source == "m4-hourly"}


def test_env_var_sets_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert data.default_data_dir() == tmp_path
    assert not any(s.source.startswith(("m4", "ett")) for s in data.load_series(tmp_path, small=True))


def test_synthetic_ops_shape_positivity_and_seasonality() -> None:
    series = data.synthetic_ops(20, seed=3)
    assert [s.name for s in series] == [f"synthetic/ops-{i:02d}" for i in range(20)]
    assert data.synthetic_ops(5, seed=3)[4].values.tolist() == series[4].values.tolist()  # (seed, i) decides
    assert data.synthetic_ops(5, seed=4)[0].values.tolist() != series[0].values.tolist()
    daily, weekly = [], []
    for s in series:
        assert s.values.shape == (24 * 35,) and (s.values > 0).all() and (s.m, s.horizon) == (24, 48)
        log = np.log(s.values)
        detrended = (log - np.convolve(log, np.ones(24) / 24, mode="same"))[24:-24]
        assert _acf(detrended, 24) > 0.05 and _acf(detrended, 12) < 0  # a daily cycle, in every series
        daily.append(_acf(detrended, 24))
        weekly.append(_acf(log.reshape(-1, 24).mean(axis=1), 7))  # daily means repeat weekly
    assert np.mean(daily) > 0.5 and np.median(weekly) > 0.4
    assert data.synthetic_ops(2, length=100)[0].values.shape == (100,)


def test_split() -> None:
    s = data.Series("x/y", "synthetic", np.arange(20.0), 1, 5)
    train, test = data.split(s)
    assert train.tolist() == list(range(15)) and test.tolist() == list(range(15, 20))


@pytest.mark.skipif(not peer.available(), reason="statsforecast not installed")
def test_run_peer_on_air_passengers_like_series() -> None:
    t = np.arange(132, dtype=np.float64)
    rng = np.random.default_rng(0)
    train = (100 + 2 * t) * (1 + 0.2 * np.sin(2 * np.pi * t / 12)) * np.exp(rng.normal(0, 0.03, t.shape[0]))
    results = peer.run_peer(train, 12, 12)
    assert [r.name for r in results] == ["AutoETS", "AutoARIMA"]
    for r in results:
        assert r.mean.shape == r.lower.shape == r.upper.shape == (12,)
        assert np.isfinite(r.mean).all() and (r.lower <= r.mean).all() and (r.mean <= r.upper).all()
        assert r.seconds > 0
        assert np.abs(r.mean / (100 + 2 * np.arange(132, 144)) - 1).max() < 0.5  # in the right range
