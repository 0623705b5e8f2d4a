"""Held-out evaluation of the forecasting models and the model card's tables.

Every series' last horizon is held out; each candidate, the selector (``auto``) and, when statsforecast is
installed, its AutoETS and AutoARIMA (fitted per series in the same run) forecast it from everything before.
Metrics per series, then averaged over series: MASE (scale: the mean absolute seasonal difference of the
history, as in M4), sMAPE (percent), and the share of held-out points inside the 80% and 95% intervals.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from infer.runtimes.forecasting import Forecaster
from infer.tasks.forecast.build import BuildConfig, forecast_histories
from infer.tasks.forecast.data import Series

__all__ = ["evaluate", "markdown", "model_card"]

LEVELS = (80.0, 95.0)


def _metrics(actual: np.ndarray, mean: np.ndarray, scale: float,
             bands: dict[float, tuple[Any, Any]]) -> dict[str, float]:
    err = np.abs(actual - mean)
    den = np.abs(actual) + np.abs(mean)
    smape = float(np.mean(np.where(den > 0, 200.0 * err / np.where(den > 0, den, 1.0), 0.0)))
    out = {"mase": float(err.mean() / scale), "smape": smape, "points": float(len(actual))}
    for level, (lo, hi) in bands.items():
        out[f"inside{int(level)}"] = float(np.sum((actual >= lo) & (actual <= hi)))
    return out


def evaluate(fc: Forecaster, series: list[Series], cfg: BuildConfig) -> dict[str, Any]:
    """Per-method averages and per-source MASE on the held-out horizons (see the module docstring)."""
    items = [(s.values[:-s.horizon], s.m, s.horizon) for s in series]
    runs = forecast_histories(fc, items)
    levels = np.asarray(LEVELS)
    rows: list[dict[str, Any]] = []
    for s, run in zip(series, runs, strict=True):
        actual = s.values[-s.horizon:]
        scale = np.asarray([run["scale"]])
        for j, kind in enumerate((*fc.candidates, "auto")):
            mean = run["forecasts"][run["chosen"] if kind == "auto" else j][None, :]
            lo, hi = fc.intervals(kind, mean, scale, levels[None, :])
            bands = {lv: (lo[0, i], hi[0, i]) for i, lv in enumerate(LEVELS)}
            rows.append({"series": s.name, "source": s.source, "method": kind, "seconds": run["seconds"],
                         **_metrics(actual, mean[0], run["scale"], bands)})
    chosen = Counter(fc.candidates[r["chosen"]] for r in runs)
    if cfg.peer:
        rows += _peer_rows(series, runs)
    return {"rows": rows, "chosen": dict(chosen), "series": len(series),
            "sources": dict(Counter(s.source for s in series))}


def _peer_rows(series: list[Series], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """statsforecast per series, in a pool of fresh processes (one per core; each result's seconds are its own
    fit + predict, measured in its worker)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from infer.tasks.forecast import peer

    if not peer.available():
        return []
    jobs = [(s.values[:-s.horizon], s.m, s.horizon) for s in series]
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_run_peer, jobs, chunksize=4))
    rows = []
    for s, run, found in zip(series, runs, results, strict=True):
        actual = s.values[-s.horizon:]
        for res in found:
            rows.append({"series": s.name, "source": s.source, "method": res.name, "seconds": res.seconds,
                         **_metrics(actual, res.mean, run["scale"], {80.0: (res.lower, res.upper)})})
    return rows


def _run_peer(job: tuple[np.ndarray, int, int]) -> list[Any]:
    from infer.tasks.forecast import peer

    return peer.run_peer(*job, level=80.0)


def table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per method: MASE, sMAPE and seconds averaged over the series it ran on; coverage as the share
    of all held-out points inside the interval (so a 48-step series weighs four times a 12-step one)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in summary["rows"]:
        by.setdefault(r["method"], []).append(r)
    out = []
    for method, rs in by.items():
        line = {"method": method, "series": len(rs)}
        for k in ("mase", "smape", "seconds"):
            vals = [r[k] for r in rs if k in r and np.isfinite(r[k])]
            line[k] = float(np.mean(vals)) if vals else float("nan")
        for level in ("80", "95"):
            have = [r for r in rs if f"inside{level}" in r]
            points = sum(r["points"] for r in have)
            line[f"cover{level}"] = sum(r[f"inside{level}"] for r in have) / points if points else float("nan")
        out.append(line)
    return out


def by_source(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean MASE per (method, source)."""
    acc: dict[tuple[str, str], list[float]] = {}
    for r in summary["rows"]:
        acc.setdefault((r["method"], r["source"]), []).append(r["mase"])
    out: dict[str, dict[str, float]] = {}
    for (method, source), v in acc.items():
        out.setdefault(method, {})[source] = float(np.mean(v))
    return out


def _fmt(v: float, pct: bool = False) -> str:
    if not np.isfinite(v):
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def markdown(summary: dict[str, Any]) -> str:
    """The comparison table (and the MASE per source) as Markdown."""
    lines = ["| method | series | MASE | sMAPE | 80% coverage | 95% coverage | ms/series |",
             "|---|---|---|---|---|---|---|"]
    kinds = set(summary.get("kinds", ()))
    for t in table(summary):
        # the candidates run together inside the selector's batch: one time, on the auto line
        ms = "" if t["method"] in kinds else f"{1000 * t['seconds']:.2f}"
        lines.append(f"| {t['method']} | {t['series']} | {_fmt(t['mase'])} | {t['smape']:.2f} | "
                     f"{_fmt(t['cover80'], True)} | {_fmt(t['cover95'], True)} | {ms} |")
    src = by_source(summary)
    sources = sorted(summary["sources"])
    lines += ["", "| MASE by source | " + " | ".join(f"{s} ({summary['sources'][s]})" for s in sources) + " |",
              "|---|" + "---|" * len(sources)]
    for method, vals in src.items():
        lines.append(f"| {method} | " + " | ".join(_fmt(vals.get(s, float("nan"))) for s in sources) + " |")
    return "\n".join(lines)


def model_card(summary: dict[str, Any]) -> str:
    """The model card written beside the model (``MODEL_CARD.md``)."""
    t = {r["method"]: r for r in table(summary)}
    cfg = summary["config"]
    cal, origins = cfg["cal_horizons"], cfg["origins"]
    gap = cal + origins
    auto, naive = t["auto"]["mase"], t["snaive"]["mase"]
    chosen = ", ".join(f"{k} {v}" for k, v in sorted(summary["chosen"].items(), key=lambda kv: -kv[1]))
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in summary["timings"].items())
    imp = sorted(summary["importance"].items(), key=lambda kv: -kv[1])[:10]
    arima = summary.get("arima") or {}
    profiles = "; ".join(f"m={m}: " + ", ".join(f"{k} {v:.3f}" for k, v in p["params"].items())
                         + f" ({p['fitted_series']} series)" for m, p in arima.get("profiles", {}).items())
    return f"""# Model card: {summary['name']} (forecasting)

Built {time.strftime('%Y-%m-%d')} by `infer models build forecast`; candidates: {', '.join(summary['kinds'])}.
Data: {summary['series']} series ({', '.join(f'{k} {v}' for k, v in sorted(summary['sources'].items()))});
data directory: {summary['data_dir'] or 'none (package and generated series only)'}.

Each series' last horizon is held out (M4 hourly and ETTh1: 48 steps, M4 weekly: 13, monthly: 18 or 12,
quarterly: 8, yearly: 6). The conformal interval tables come from forecasts made over the
{cal} horizons before it, and the fitted candidates (ARIMA coefficients, GBM, LSTM) learn from what precedes
those horizons' own backtest origins ({gap} horizons before the held-out one), so no backtest, at calibration or
here, scores a model on data it learnt from (a series too short for that gap gives it up). Methods: each
candidate alone, `auto` (the selector: lowest MASE over {origins} rolling-origin backtests of the request's
own history) and statsforecast's AutoETS / AutoARIMA, fitted per series in the same run (their own 80%
intervals; for m > 24 AutoETS is non-seasonal and AutoARIMA uses the stepwise approximation with P, Q <= 1, see
`peer.py`). Times: ours is the batched predict per series (every candidate, every backtest, the selector), the
peers' fit + predict per series. Coverage is the share of all held-out points inside the interval. Our one-off
build (fits, training, calibration): {timing}.

## Held-out accuracy

{markdown(summary)}

The selector's mean MASE is {auto:.3f} against seasonal naive's {naive:.3f}
({'better' if auto < naive else 'NOT better'}); the 80% interval of `auto` covers
{100 * t['auto']['cover80']:.1f}% of held-out points. Chosen by the selector: {chosen}.

## Gradient boosting: feature importance (gain share)

{chr(10).join(f'- {k}: {v:.3f}' for k, v in imp) or '- (no gbm candidate in this build)'}

## ARIMA profiles (median statsmodels coefficients per season length)

{profiles or '(no arima candidate in this build)'}

## Limits

- ARIMA serves fixed coefficients per season length (pooled over the training series), not a fit per request.
- Intervals are symmetric and scaled by the series' seasonal-difference scale; series whose noise changes
  regime get intervals as wide as their history says, not their recent past. Coverage holds over all points,
  not for every source (per-series coverage varies with how the calibration horizons resemble the last one).
- Prophet is not a candidate (it fits per series at serve time; the engine's candidates predict from fixed
  parameters or global models).
- The backtest runs on the request's history: short histories (fewer than m + 2 + horizon points) get no
  backtest, and the first candidate (seasonal naive) is used.
""" + _drift_section(summary)


def _drift_section(summary: dict[str, Any]) -> str:
    from infer.observability.drift import reference_markdown

    d = summary.get("drift_reference")
    if not d:
        return ""
    return f"""
## Drift reference

`{d["file"]}` (copied into each `{summary["name"]}_<kind>` version) records each `history` row's mean, standard
deviation and last value (within its `length`) over training histories of up to {summary["config"]["window"]}
values taken from what the models learnt from. The server compares windows of live requests with it (KS test,
Bonferroni over the three, and PSI >= 0.2) and exports `infer_drift_*`. Series of new scales or levels show
as drift in the mean and last value; noisier ones in the standard deviation.

""" + reference_markdown(d["features"], d["rows"])


def main(argv: list[str] | None = None) -> int:
    """``python -m infer.tasks.forecast.evaluate --repo REPO``: the held-out table of an already built model."""
    import argparse
    import json
    from pathlib import Path

    from infer.tasks.forecast.data import default_data_dir, load_series

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--name", default="forecast")
    ap.add_argument("--data", type=Path, help="the M4/ETT directory (default: ../shared/data/forecast)")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--peer", action="store_true", help="also fit statsforecast's AutoETS and AutoARIMA")
    a = ap.parse_args(argv)
    version = a.repo / a.name / "1"
    spec = json.loads((version / "forecast.json").read_text())
    cfg = BuildConfig(data_dir=a.data or default_data_dir(), small=a.small, peer=a.peer)
    series = load_series(cfg.data_dir, small=cfg.small, seed=cfg.seed)
    summary = evaluate(Forecaster(version, spec), series, cfg)
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
