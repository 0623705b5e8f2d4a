"""``infer models build forecast``: train, calibrate, evaluate and write the forecasting models.

Each series is cut in three, in time order: the *fit* part (ARIMA, GBM and LSTM learn from it), ``cal_horizons``
horizons for *calibration* (the conformal interval tables come from forecasts made there, with the served code)
and the last horizon, *held out* for the evaluation in the model card. The repository gets:

``forecast``         every candidate and the backtest selector (:mod:`infer.runtimes.forecasting`)
``forecast_<kind>``  each candidate served on its own (same inputs and outputs; ``model`` always names it)

A candidate whose build dependency is missing (statsmodels for ``arima``, lightgbm + onnxmltools for ``gbm``,
torch for ``lstm``) is left out, with a log line; the models' ``candidates`` parameter says what they hold.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infer.core.files import write_atomic
from infer.observability.drift import REFERENCE_FILE as DRIFT_REFERENCE
from infer.observability.drift import DriftReference, build_reference
from infer.runtimes.forecasting import KINDS, QUANTILE_GRID, Forecaster
from infer.tasks.forecast import train
from infer.tasks.forecast.data import Series, load_series

__all__ = ["BuildConfig", "build_forecast", "calibration_tables", "clean_repository_model", "drift_reference",
           "split_parts"]

log = logging.getLogger(__name__)
FILES = {"lstm": "lstm.onnx", "gbm": "gbm.onnx"}
DRIFT_WINDOWS_PER_SERIES = 32


@dataclass
class BuildConfig:
    data_dir: Path | None = None  # M4 / ETT files (see data.py); None: package and generated series only
    small: bool = False  # a few series of each source, fewer trees and epochs (tests, the default repository)
    seed: int = 0
    max_horizon: int = 48
    window: int = 96
    lags: int = 24
    origins: int = 3
    # four horizons: with two, the 80% quantile of a 16-series build came from 32 correlated forecasts and its
    # intervals covered 86% of fresh series; with four, 80%
    cal_horizons: int = 4
    default_horizon: int = 24
    default_season: int = 24
    default_levels: tuple[float, ...] = (80.0, 95.0)
    arima_per_m: int = 8
    gbm_windows: int = 6000
    gbm_trees: int = 300
    lstm_windows: int = 20000
    lstm_epochs: int = 8
    max_batch_size: int = 64
    kinds: tuple[str, ...] = field(default=KINDS)  # wanted; those without their dependency are left out
    peer: bool = True  # statsforecast AutoETS / AutoARIMA in the evaluation, when installed

    def scaled_down(self) -> BuildConfig:
        return BuildConfig(**{**self.__dict__, "small": True, "arima_per_m": 3, "gbm_windows": 800,
                              "gbm_trees": 60, "lstm_windows": 2000, "lstm_epochs": 3})


NEEDS = {"arima": ("statsmodels",), "gbm": ("lightgbm", "onnxmltools"), "lstm": ("torch",)}


def available_kinds(wanted: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for k in wanted:
        missing = [m for m in NEEDS.get(k, ()) if not train.has(m)]
        if missing:
            log.info("forecast: candidate %s left out (%s not installed)", k, ", ".join(missing))
        else:
            out.append(k)
    return tuple(out)


def split_parts(s: Series, cfg: BuildConfig) -> tuple[int, int, int]:
    """(learn, calibration start, train) lengths. train = all but the held-out horizon; calibration forecasts
    start at ``train - cal_horizons * horizon``; the fitted candidates learn from the values before the
    calibration start's own backtest origins (``origins`` horizons earlier), so that the selector's backtests,
    at calibration as at serve time, never score a model on what it learnt from. A series too short for that
    gives up the gap, then calibration."""
    floor = 3 * s.m + 8
    train_len = len(s.values) - s.horizon
    cal = train_len - cfg.cal_horizons * s.horizon
    if cal < floor:
        return train_len, train_len, train_len
    learn = cal - cfg.origins * s.horizon
    return (learn if learn >= floor else cal), cal, train_len


def _spec(cfg: BuildConfig, kinds: tuple[str, ...]) -> dict[str, Any]:
    return {"candidates": list(kinds), "max_horizon": cfg.max_horizon, "window": cfg.window, "lags": cfg.lags,
            "origins": cfg.origins, "default_horizon": cfg.default_horizon, "default_season": cfg.default_season,
            "default_levels": list(cfg.default_levels), "interval_table": "auto"}


def _by_horizon(items: list[tuple[np.ndarray, int, int]]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, (_, _, h) in enumerate(items):
        groups.setdefault(h, []).append(i)
    return groups


def forecast_histories(fc: Forecaster, items: list[tuple[np.ndarray, int, int]]) -> list[dict[str, Any]]:
    """Run the selector on (history, m, horizon) items, grouped by horizon; per item the candidates' forecasts
    [K, H], the chosen index, the MASE scale and the seconds its group took per series."""
    out: list[dict[str, Any]] = [{} for _ in items]
    for h, idx in _by_horizon(items).items():
        width = max(len(items[i][0]) for i in idx)
        hist = np.zeros((len(idx), width))
        for r, i in enumerate(idx):
            hist[r, :len(items[i][0])] = items[i][0]
        lengths = np.array([len(items[i][0]) for i in idx], np.int64)
        m = np.array([items[i][1] for i in idx], np.int64)
        t0 = time.perf_counter()
        sel = fc.select(hist, lengths, m, h)
        took = (time.perf_counter() - t0) / len(idx)
        for r, i in enumerate(idx):
            out[i] = {"forecasts": sel.forecasts[:, r], "chosen": int(sel.chosen[r]), "scale": float(sel.scale[r]),
                      "seconds": took}
    return out


def calibration_tables(fc: Forecaster, series: list[Series], cfg: BuildConfig) -> dict[str, np.ndarray]:
    """Quantiles of |actual - forecast| / scale per step, over forecasts from the calibration cut-offs, for every
    candidate and for the selector ("auto"): [len(QUANTILE_GRID), max_horizon] each."""
    items, actuals = [], []
    for s in series:
        _, cal, train_len = split_parts(s, cfg)
        for c in range(cal, train_len - 1, s.horizon):
            h = min(s.horizon, train_len - c)
            items.append((s.values[:c], s.m, h))
            actuals.append(s.values[c:c + h])
    runs = forecast_histories(fc, items)
    errors: dict[str, list[np.ndarray]] = {k: [] for k in (*fc.candidates, "auto")}
    for run, actual in zip(runs, actuals, strict=True):
        pad = np.full(cfg.max_horizon, np.nan)
        for j, k in enumerate(fc.candidates):
            e = pad.copy()
            e[:len(actual)] = np.abs(actual - run["forecasts"][j]) / run["scale"]
            errors[k].append(e)
        e = pad.copy()
        e[:len(actual)] = np.abs(actual - run["forecasts"][run["chosen"]]) / run["scale"]
        errors["auto"].append(e)
    tables = {}
    for k, rows in errors.items():
        mat = np.vstack(rows)
        table = np.full((len(QUANTILE_GRID), cfg.max_horizon), np.nan)
        for h in range(cfg.max_horizon):
            col = mat[:, h][np.isfinite(mat[:, h])]
            if len(col):
                table[:, h] = np.quantile(col, QUANTILE_GRID)
            elif h:
                table[:, h] = table[:, h - 1]
        tables[k] = table
    return tables


def _write_json(path: Path, doc: Any) -> None:
    write_atomic(path, json.dumps(doc, indent=1) + "\n")


def _config(name: str, kinds: tuple[str, ...], cfg: BuildConfig, importance: dict[str, float] | None) -> str:
    opt = "".join(f'input {{ name: "{n}" data_type: {t} dims: [ {d} ] optional: true }}\n'
                  for n, t, d in (("length", "TYPE_INT32", "1"), ("horizon", "TYPE_INT32", "1"),
                                  ("levels", "TYPE_FP32", "-1"), ("season", "TYPE_INT32", "1"),
                                  ("scenario", "TYPE_FP32", "-1")))
    outs = [("mean", "TYPE_FP32", "-1"), ("lower", "TYPE_FP32", "-1, -1"), ("upper", "TYPE_FP32", "-1, -1"),
            ("model", "TYPE_STRING", "1"), ("mase", "TYPE_FP32", "1"), ("smape", "TYPE_FP32", "1"),
            ("scores", "TYPE_FP32", str(len(kinds))), ("scenario_mean", "TYPE_FP32", "-1"),
            ("scenario_lower", "TYPE_FP32", "-1, -1"), ("scenario_upper", "TYPE_FP32", "-1, -1")]
    params = {"candidates": ",".join(kinds), "infer.warmup": "false"}
    if importance:
        top = sorted(importance.items(), key=lambda kv: -kv[1])[:8]
        params["feature_importance"] = ",".join(f"{k}={v:.3f}" for k, v in top)
    return (f'name: "{name}"\nbackend: "kernel"\nmax_batch_size: {cfg.max_batch_size}\n'
            'input { name: "history" data_type: TYPE_FP32 dims: [ -1 ] }\n' + opt
            + "".join(f'output {{ name: "{n}" data_type: {t} dims: [ {d} ] }}\n' for n, t, d in outs)
            + "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
            + "".join(f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in params.items()))


def build_forecast(repo: Path, name: str = "forecast", cfg: BuildConfig | None = None) -> dict[str, Any]:
    """Write ``name`` and ``name_<kind>`` into ``repo``; return the evaluation summary (see evaluate.py)."""
    from infer.tasks.forecast.evaluate import evaluate

    cfg = cfg or BuildConfig()
    t0 = time.perf_counter()
    series = load_series(cfg.data_dir, small=cfg.small, seed=cfg.seed)
    kinds = available_kinds(cfg.kinds)
    fits = [(s.values[:split_parts(s, cfg)[0]], s.m) for s in series]
    version = repo / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    spec = _spec(cfg, kinds)
    timings: dict[str, float] = {}
    importance: dict[str, float] | None = None
    if "arima" in kinds:
        t = time.perf_counter()
        spec["arima"] = train.fit_arima_profiles(fits, cfg.arima_per_m, cfg.seed)
        timings["arima"] = time.perf_counter() - t
    if "gbm" in kinds:
        t = time.perf_counter()
        ts = train.training_set(fits, cfg.gbm_windows, cfg.max_horizon, cfg.window, cfg.seed)
        graph, importance = train.train_gbm(ts, cfg.max_horizon, cfg.lags, cfg.gbm_trees, cfg.seed)
        write_atomic(version / FILES["gbm"], graph.SerializeToString())
        spec["gbm"] = FILES["gbm"]
        _write_json(version / "feature_importance.json", importance)
        timings["gbm"] = time.perf_counter() - t
    if "lstm" in kinds:
        t = time.perf_counter()
        ts = train.training_set(fits, cfg.lstm_windows, cfg.max_horizon, cfg.window, cfg.seed + 1)
        write_atomic(version / FILES["lstm"], train.train_lstm(ts, cfg.max_horizon, epochs=cfg.lstm_epochs,
                                                                seed=cfg.seed).SerializeToString())
        spec["lstm"] = FILES["lstm"]
        timings["lstm"] = time.perf_counter() - t
    t = time.perf_counter()
    tables = calibration_tables(Forecaster(version, spec), series, cfg)
    with (version / "calibration.npz").open("wb") as f:
        np.savez(f, **tables)  # type: ignore[arg-type]  # the stubs mistake ** for allow_pickle
    spec["calibration"] = "calibration.npz"
    timings["calibration"] = time.perf_counter() - t
    _write_json(version / "forecast.json", spec)
    _write_json(version / "kernel.json", {"program": "forecast", "params": {"spec": "forecast.json"}})
    write_atomic(repo / name / "config.pbtxt", _config(name, kinds, cfg, importance))
    drift = drift_reference(series, cfg)
    drift.save(version / DRIFT_REFERENCE)
    for kind in kinds:
        _single(repo, name, kind, spec, cfg, importance if kind == "gbm" else None)
    timings["build"] = time.perf_counter() - t0
    summary = evaluate(Forecaster(version, spec), series, cfg)
    summary.update(drift_reference={"file": f"{name}/1/{DRIFT_REFERENCE}", "rows": drift.rows,
                                    "features": drift.describe()})
    summary.update(name=name, kinds=list(kinds), timings=timings, importance=importance or {},
                   arima=spec.get("arima"), config={k: v for k, v in cfg.__dict__.items() if k != "data_dir"},
                   data_dir=str(cfg.data_dir) if cfg.data_dir else None)
    return summary


def drift_reference(series: list[Series], cfg: BuildConfig) -> DriftReference:
    """The drift reference of the ``history`` input: the mean, standard deviation and last value of histories
    of up to ``cfg.window`` values ending at random points of each series' fit part (what the models learnt
    from), ``DRIFT_WINDOWS_PER_SERIES`` per series; a request's ``length`` input bounds its right-padded row."""
    rng = np.random.default_rng(cfg.seed)
    rows: list[np.ndarray] = []
    for s in series:
        fit = s.values[:split_parts(s, cfg)[0]]
        width = min(cfg.window, len(fit))
        if width < 2:
            continue
        ends = rng.integers(width, len(fit) + 1, size=min(DRIFT_WINDOWS_PER_SERIES, len(fit) - width + 1))
        rows += [fit[e - width:e] for e in ends]
    width = max(len(r) for r in rows)
    history = np.zeros((len(rows), width))
    for i, r in enumerate(rows):
        history[i, :len(r)] = r
    lengths = np.array([len(r) for r in rows], np.int64)
    return build_reference({"history": history, "length": lengths}, summarize=("history",),
                           lengths={"history": "length"}, seed=cfg.seed,
                           source=f"forecast: {len(rows)} training histories of up to {cfg.window} values")


def _single(repo: Path, name: str, kind: str, spec: dict[str, Any], cfg: BuildConfig,
            importance: dict[str, float] | None) -> None:
    target = repo / f"{name}_{kind}" / "1"
    target.mkdir(parents=True, exist_ok=True)
    one = {**{k: v for k, v in spec.items() if k not in KINDS}, "candidates": [kind], "interval_table": kind}
    if kind in spec:
        one[kind] = spec[kind]
    for f in (FILES.get(kind), "calibration.npz", DRIFT_REFERENCE,
              "feature_importance.json" if kind == "gbm" else None):
        if f:
            shutil.copyfile(repo / name / "1" / f, target / f)
    _write_json(target / "forecast.json", one)
    _write_json(target / "kernel.json", {"program": "forecast", "params": {"spec": "forecast.json"}})
    write_atomic(target.parent / "config.pbtxt", _config(f"{name}_{kind}", (kind,), cfg, importance))


def clean_repository_model(repo: Path, name: str) -> None:
    """Remove what :func:`build_forecast` writes for ``name`` (before a rebuild)."""
    for suffix in ("", *(f"_{k}" for k in KINDS)):
        shutil.rmtree(repo / f"{name}{suffix}", ignore_errors=True)
