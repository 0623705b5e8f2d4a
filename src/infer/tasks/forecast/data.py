"""The univariate series the forecasting family trains and evaluates on.

Every series carries its season length ``m`` and a held-out ``horizon``: :func:`split` keeps the last
``horizon`` values for evaluation.  Sources, in the order :func:`load_series` returns them:

==================  ======================================================  ===  =======  ==================
source              what                                                    m    horizon  count (full/small)
==================  ======================================================  ===  =======  ==================
``m4-hourly``       M4 competition, hourly training series (``m4/Hourly``)  24   48       120 / 10
``m4-weekly``       M4 competition, weekly training series (``m4/Weekly``)  52   13       120 / 10
``ett``             ETTh1 electricity transformer, 7 hourly columns; the    24   48       28 / 7
                    last 3840 rows cut into 4 chunks of 960
``statsmodels``     co2 (monthly means of the weekly Mauna Loa record),     12   18       5 / 5
                    elnino (monthly sea surface temperature)                12   18
                    sunspots (yearly), nile (yearly river volume)           1    6
                    realgdp (quarterly US real GDP, macrodata)              4    8
``airpassengers``   Box & Jenkins monthly airline passengers                12   12       1 / 1
``synthetic``       hourly operator metrics (requests/s, latency, CPU...)   24   48       40 / 10
                    with daily and weekly cycles, trend, level shifts and
                    spikes (:func:`synthetic_ops`)
==================  ======================================================  ===  =======  ==================

M4 series are drawn with a seeded RNG among those at least ``3 m + horizon`` long (shorter ones are dropped,
as is any series of any source); the small draw is a subset of the full one.  M4 and ETT are files under a
data directory (:func:`default_data_dir`); the statsmodels data sets ship inside statsmodels, AirPassengers
inside statsforecast, and the synthetic series are generated, so without a data directory or without those
packages the corresponding sources are skipped (logged at INFO) and the rest still load.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ENV_VAR",
    "Series",
    "default_data_dir",
    "load_series",
    "split",
    "synthetic_ops",
]

_log = logging.getLogger(__name__)

ENV_VAR: Final = "INFER_FORECAST_DATA"
_M4: Final = {"m4-hourly": ("Hourly-train.csv", 24, 48), "m4-weekly": ("Weekly-train.csv", 52, 13)}
_M4_COUNT: Final = (120, 10)  # (full, small) per M4 frequency
_ETT_CHUNK: Final = 960
_ETT_CHUNKS: Final = 4
_SYNTHETIC_COUNT: Final = (40, 10)
_OPS_KINDS: Final = ("requests", "latency", "cpu", "throughput", "queue_depth")


@dataclass(frozen=True)
class Series:
    """One univariate series: ``values`` are finite and 1-D; the last ``horizon`` are held out."""

    name: str  # unique, "<source>/<id>", e.g. "m4-hourly/H123", "ett/OT#2", "statsmodels/co2"
    source: str  # "m4-hourly", "m4-weekly", "ett", "statsmodels", "airpassengers", "synthetic"
    values: NDArray[np.float64]
    m: int  # season length (1 = none)
    horizon: int  # held-out horizon for evaluation


def _project_root() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def default_data_dir() -> Path | None:
    """``$INFER_FORECAST_DATA`` if set, else ``<project root>/../shared/data/forecast`` if it exists, else None."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    root = _project_root()
    if root is None:
        return None
    candidate = root.parent / "shared" / "data" / "forecast"
    return candidate if candidate.is_dir() else None


def split(series: Series) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(train, test)``: test is the last ``horizon`` values, train everything before."""
    return series.values[: -series.horizon], series.values[-series.horizon :]


def load_series(data_dir: Path | None = None, *, small: bool = False, seed: int = 0) -> list[Series]:
    """All available series in a stable order (see the module docstring); ``small`` for quick runs and tests.

    ``data_dir`` holds ``m4/`` and ``ett/``; None skips those two sources (pass :func:`default_data_dir` to use
    the shared copy).  ``seed`` picks the M4 series and generates the synthetic ones.
    """
    out: list[Series] = []
    if data_dir is None:
        _log.info("forecast data: no data directory, skipping M4 and ETT")
    else:
        for source in _M4:
            out += _m4(Path(data_dir), source, _M4_COUNT[small], seed)
        out += _ett(Path(data_dir), small)
    out += _statsmodels()
    out += _airpassengers()
    out += synthetic_ops(_SYNTHETIC_COUNT[small], seed=seed)
    kept = [s for s in out if s.values.shape[0] >= 3 * s.m + s.horizon and np.isfinite(s.values).all()]
    if len(kept) < len(out):
        _log.info("forecast data: dropped %d short or non-finite series", len(out) - len(kept))
    return kept


def _m4(data_dir: Path, source: str, count: int, seed: int) -> list[Series]:
    filename, m, horizon = _M4[source]
    path = data_dir / "m4" / filename
    if not path.is_file():
        _log.info("forecast data: %s not found, skipping %s", path, source)
        return []
    ids: list[str] = []
    rows: list[NDArray[np.float64]] = []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)  # header V1, V2, ...
        for row in reader:
            if not row:
                continue
            values = np.array([float(v) for v in row[1:] if v not in ("", "NA", "NaN")], dtype=np.float64)
            if values.shape[0] >= 3 * m + horizon and np.isfinite(values).all():
                ids.append(row[0])
                rows.append(values)
    # permute the eligible series once: the small draw is then a prefix of the full one
    pick = np.sort(np.random.default_rng([seed, m]).permutation(len(ids))[:count])
    return [Series(f"{source}/{ids[i]}", source, rows[i], m, horizon) for i in pick]


def _ett(data_dir: Path, small: bool) -> list[Series]:
    path = data_dir / "ett" / "ETTh1.csv"
    if not path.is_file():
        _log.info("forecast data: %s not found, skipping ett", path)
        return []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        table = np.array([[float(v) for v in row[1:]] for row in reader if row], dtype=np.float64)
    tail = table[-_ETT_CHUNK * _ETT_CHUNKS :]
    chunks = range(_ETT_CHUNKS - 1, _ETT_CHUNKS) if small else range(_ETT_CHUNKS)
    return [
        Series(f"ett/{col}#{k}", "ett", np.ascontiguousarray(tail[k * _ETT_CHUNK : (k + 1) * _ETT_CHUNK, j]), 24, 48)
        for j, col in enumerate(header[1:])
        for k in chunks
    ]


def _statsmodels() -> list[Series]:
    try:
        from statsmodels import datasets
    except ImportError:
        _log.info("forecast data: statsmodels not installed, skipping its data sets")
        return []

    def co2() -> NDArray[np.float64]:
        weekly = datasets.co2.load_pandas().data["co2"]
        return np.asarray(weekly.resample("MS").mean().interpolate().dropna(), dtype=np.float64)

    def elnino() -> NDArray[np.float64]:
        table = datasets.elnino.load_pandas().data
        return np.asarray(table.drop(columns="YEAR"), dtype=np.float64).ravel()  # rows are years, columns months

    loaders: list[tuple[str, Callable[[], NDArray[np.float64]], int, int]] = [
        ("co2", co2, 12, 18),
        ("elnino", elnino, 12, 18),
        ("sunspots", lambda: np.asarray(datasets.sunspots.load_pandas().data["SUNACTIVITY"], np.float64), 1, 6),
        ("nile", lambda: np.asarray(datasets.nile.load_pandas().data["volume"], np.float64), 1, 6),
        ("realgdp", lambda: np.asarray(datasets.macrodata.load_pandas().data["realgdp"], np.float64), 4, 8),
    ]
    out: list[Series] = []
    for name, load, m, horizon in loaders:
        try:
            values = load()
        except Exception as exc:  # a data set missing from this statsmodels version: skip it, keep the rest
            _log.info("forecast data: statsmodels %s unavailable (%s), skipping", name, exc)
            continue
        out.append(Series(f"statsmodels/{name}", "statsmodels", np.ascontiguousarray(values), m, horizon))
    return out


def _airpassengers() -> list[Series]:
    try:
        from statsforecast.utils import AirPassengers
    except ImportError:
        _log.info("forecast data: statsforecast not installed, skipping AirPassengers")
        return []
    values = np.array(AirPassengers, dtype=np.float64)
    return [Series("airpassengers/AirPassengers", "airpassengers", values, 12, 12)]


def synthetic_ops(count: int, *, length: int = 24 * 35, seed: int = 0) -> list[Series]:
    """``count`` hourly operator metrics, ``synthetic/ops-00`` ...; series ``i`` depends only on ``(seed, i)``.

    Each is positive: a level times a daily profile (peak in the working day, trough at night) whose amplitude
    shrinks on weekends, times a slow trend, 0-2 level shifts, a few short spikes and log-normal noise.  The
    kind (requests/s, latency, CPU %, throughput, queue depth) sets the level, depth of the cycle and noise.
    ``m`` = 24, ``horizon`` = 48.
    """
    children = np.random.SeedSequence(seed).spawn(count)
    return [
        Series(f"synthetic/ops-{i:02d}", "synthetic", _ops_series(np.random.default_rng(c), i, length), 24, 48)
        for i, c in enumerate(children)
    ]


def _ops_series(rng: np.random.Generator, index: int, length: int) -> NDArray[np.float64]:
    kind = _OPS_KINDS[index % len(_OPS_KINDS)]
    # (log10 level range, daily amplitude range, noise sigma range)
    level_log10, amp, sigma = {
        "requests": ((1.0, 3.5), (0.4, 0.8), (0.03, 0.08)),
        "latency": ((1.0, 2.5), (0.1, 0.35), (0.04, 0.12)),
        "cpu": ((1.0, 1.6), (0.25, 0.6), (0.03, 0.07)),
        "throughput": ((5.0, 8.0), (0.3, 0.7), (0.04, 0.10)),
        "queue_depth": ((0.3, 1.5), (0.3, 0.7), (0.08, 0.15)),
    }[kind]
    t = np.arange(length, dtype=np.float64)
    hour = (t + rng.integers(0, 24)) % 24  # random time zone offset
    day = ((t + rng.integers(0, 24 * 7)) // 24) % 7  # random start weekday; 5, 6 = weekend
    peak = rng.uniform(11.0, 16.0)
    phase = 2 * np.pi * (hour - peak) / 24
    profile = np.cos(phase) + rng.uniform(0.1, 0.4) * np.cos(2 * phase + rng.uniform(-0.5, 0.5))
    profile /= np.max(np.abs(profile))
    weekend = np.where(day >= 5, rng.uniform(0.3, 0.8), 1.0)  # weekends: a lower level and a flatter cycle
    a = rng.uniform(*amp)
    seasonal = weekend * (1.0 + a * weekend * profile)
    trend = np.exp(rng.uniform(-0.3, 0.4) * t / length)
    shifts = np.ones(length)
    for _ in range(rng.integers(0, 3)):
        shifts[rng.integers(length // 5, length) :] *= rng.uniform(0.7, 1.4)
    spikes = np.ones(length)
    for _ in range(rng.poisson(length / (24 * 7))):
        start = rng.integers(0, length)
        spikes[start : start + rng.integers(1, 4)] *= rng.uniform(1.5, 3.0)
    noise = np.exp(rng.normal(0.0, rng.uniform(*sigma), length))
    values = 10.0 ** rng.uniform(*level_log10) * seasonal * trend * shifts * spikes * noise
    if kind == "cpu":
        values = np.minimum(values, 100.0)
    return np.asarray(values, dtype=np.float64)
