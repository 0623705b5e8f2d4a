"""Training the forecasting family's fitted candidates (see :mod:`infer.runtimes.forecasting` for what each is).

``fit_arima_profiles``  statsmodels SARIMAX per training series (values scaled to unit variance: ARIMA is linear,
                        so coefficients do not depend on scale), the median coefficient per season length.
``train_gbm``           LightGBM on :func:`kernels.forecast.gbm_features` rows, exported with onnxmltools.
``train_lstm``          a small PyTorch LSTM on normalised windows, exported with ``torch.onnx.export``.

All three learn from the *fit* part of each series only (the build keeps the last horizons apart for calibration
and the very last one for the held-out evaluation). statsmodels, lightgbm + onnxmltools and torch are build-time
dependencies (the ``forecast`` and ``torch`` extras); serving needs none of them.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

__all__ = ["TrainingSet", "fit_arima_profiles", "has", "train_gbm", "train_lstm", "training_set"]

log = logging.getLogger(__name__)
F64 = NDArray[np.float64]
OPSET = 17


def has(module: str) -> bool:
    """Whether an optional build dependency imports."""
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# -- ARIMA ----------------------------------------------------------------------------------------------------
def _spec(m: int) -> tuple[tuple[int, int, int], tuple[int, int, int, int]]:
    return ((1, 1, 1), (0, 0, 0, 0)) if m == 1 else ((0, 1, 1), (0, 1, 1, m))


def _fit_one(values: F64, m: int) -> dict[str, float] | None:
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    order, seasonal = _spec(m)
    y = values[-min(len(values), max(12 * m, 300)):]
    y = (y - y.mean()) / (y.std() or 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and frequency warnings: judged by the result below
        try:
            res = SARIMAX(y, order=order, seasonal_order=seasonal, simple_differencing=True).fit(disp=False)
        except (ValueError, np.linalg.LinAlgError):
            return None
    params = {k: float(v) for k, v in zip(res.model.param_names, res.params, strict=True) if k != "sigma2"}
    if not all(np.isfinite(v) and abs(v) < 1.0 for v in params.values()):
        return None  # non-stationary or non-invertible: left out of the median
    return params


def fit_arima_profiles(series: Sequence[tuple[F64, int]], per_m: int, seed: int = 0) -> dict[str, Any]:
    """One profile per season length (plus m = 1, fitted on every source): {"profiles": {m: {...}},
    "default": {"ma.L1", "ma.S"}} with the median of each coefficient over up to ``per_m`` series."""
    rng = np.random.default_rng(seed)
    seasons = sorted({m for _, m in series} | {1})
    profiles: dict[str, Any] = {}
    for m in seasons:
        pool = [v for v, mm in series if mm == m or m == 1]
        pool = [v for v in pool if len(v) >= 3 * m + 10]
        picked = [pool[i] for i in rng.permutation(len(pool))[:per_m]]
        fits = [p for p in (_fit_one(v, m) for v in picked) if p is not None]
        if not fits:
            log.info("ARIMA: no usable fit for m=%d (of %d series); left out", m, len(picked))
            continue
        order, seasonal = _spec(m)
        params = {k: float(np.median([f[k] for f in fits])) for k in fits[0]}
        profiles[str(m)] = {"order": list(order), "seasonal_order": list(seasonal), "params": params,
                            "fitted_series": len(fits)}
    seasonal_fits = [p["params"] for k, p in profiles.items() if k != "1"]
    seasonal_ma = [next(v for n, v in p.items() if n.startswith("ma.S.")) for p in seasonal_fits]
    default = ({"ma.L1": float(np.median([p["ma.L1"] for p in seasonal_fits])), "ma.S": float(np.median(seasonal_ma))}
               if seasonal_fits else {"ma.L1": -0.4, "ma.S": -0.6})  # the airline model's classic values
    if "1" not in profiles:
        raise ValueError("ARIMA: the m=1 profile could not be fitted on any series")
    return {"profiles": profiles, "default": default}


# -- training windows -----------------------------------------------------------------------------------------
@dataclass
class TrainingSet:
    """Normalised windows cut from the fit parts: inputs, the target's z [N, H] and where it is known."""

    z: NDArray[np.float32]
    mask: NDArray[np.float32]
    m: NDArray[np.int64]
    cutoffs: NDArray[np.int64]
    target: NDArray[np.float32]
    known: NDArray[np.bool_]


def training_set(series: Sequence[tuple[F64, int]], count: int, horizon: int, window: int, seed: int = 0,
                 min_fit: int = 8) -> TrainingSet:
    """``count`` windows at random cut-offs (uniform over series, then over cut-offs), targets the next
    ``horizon`` values where the fit part still has them (z-scored like the window, clipped to +-30)."""
    from kernels import forecast as fk

    rng = np.random.default_rng(seed)
    width = max(len(v) for v, _ in series)
    hist = np.zeros((len(series), width))
    lengths = np.array([len(v) for v, _ in series], np.int64)
    for i, (v, _) in enumerate(series):
        hist[i, :len(v)] = v
    seasons = np.array([m for _, m in series], np.int64)
    lo = np.maximum(min_fit, seasons + 2)
    usable = np.flatnonzero(lengths - 1 >= lo)
    rows = usable[rng.integers(0, len(usable), count)]
    cutoffs = rng.integers(lo[rows], lengths[rows]).astype(np.int64)
    m = seasons[rows]
    z, mask, level, scale = fk.windows(hist, rows.astype(np.int64), cutoffs, m, window)
    steps = cutoffs[:, None] + np.arange(horizon)[None, :]
    known = steps < lengths[rows][:, None]
    actual = hist[rows[:, None], np.minimum(steps, width - 1)]
    target = np.clip((actual - level[:, None]) / scale[:, None], -30, 30)
    return TrainingSet(z, mask, m, cutoffs, np.where(known, target, 0.0).astype(np.float32), known)


# -- gradient boosting ----------------------------------------------------------------------------------------
def train_gbm(ts: TrainingSet, horizon: int, lags: int, trees: int,
              seed: int = 0) -> tuple[onnx.ModelProto, dict[str, float]]:
    """LightGBM (L1 loss: MASE is an absolute error) on one row per (window, step); the ONNX graph takes
    ``features`` FP32 [N, F]. Returns the graph and the gain importance of each feature (summing to 1)."""
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    from kernels import forecast as fk

    x = fk.gbm_features(ts.z, ts.mask, ts.m, ts.cutoffs, horizon, lags)
    keep = ts.known.reshape(-1)
    x, y = x[keep], ts.target.reshape(-1)[keep]
    model = lgb.LGBMRegressor(objective="l1", n_estimators=trees, learning_rate=0.05, num_leaves=31,
                              min_child_samples=40, subsample=0.8, subsample_freq=1, colsample_bytree=0.9,
                              # one thread: with torch loaded in the process (the LSTM), two OpenMP runtimes
                              # fight over the cores and n_jobs=2 took 43 s where n_jobs=1 takes 0.5 s
                              random_state=seed, n_jobs=1, verbose=-1)
    names = list(fk.gbm_feature_names(lags))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's feature-name notices
        model.fit(x, y)
        graph = convert_lightgbm(model, initial_types=[("features", FloatTensorType([None, x.shape[1]]))],
                                 target_opset=15, zipmap=False)  # the converter's highest
    gain = model.booster_.feature_importance("gain").astype(np.float64)
    importance = dict(zip(names, (gain / (gain.sum() or 1.0)).tolist(), strict=True))
    return graph, importance


# -- LSTM -----------------------------------------------------------------------------------------------------
def lstm_inputs(ts_z: NDArray[np.float32], mask: NDArray[np.float32], m: NDArray[np.int64],
                cutoffs: NDArray[np.int64]) -> NDArray[np.float32]:
    """[N, W, 4]: z, mask and the season phase (sin, cos) of each window position, as served."""
    w = ts_z.shape[1]
    pos = cutoffs[:, None] - w + np.arange(w)[None, :]
    phase = 2.0 * np.pi * (pos % m[:, None]) / m[:, None]
    return np.stack([ts_z, mask, np.sin(phase).astype(np.float32), np.cos(phase).astype(np.float32)], axis=2)


def train_lstm(ts: TrainingSet, horizon: int, *, epochs: int, hidden: int = 48, seed: int = 0) -> onnx.ModelProto:
    """An LSTM over the window whose last state, with the seasonal-naive base, predicts a correction of the
    base for every step at once (masked L1 in z units). Inputs ``x`` [N, W, 4] and ``base`` [N, H]."""
    import torch
    from torch import nn

    from kernels import forecast as fk

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    x = torch.from_numpy(lstm_inputs(ts.z, ts.mask, ts.m, ts.cutoffs))
    base = torch.from_numpy(np.ascontiguousarray(fk.snaive_z(ts.z, ts.mask, ts.m, horizon), np.float32))
    target, known = torch.from_numpy(ts.target), torch.from_numpy(ts.known.astype(np.float32))

    class Net(nn.Module):  # type: ignore[misc,unused-ignore]  # Any when torch is not installed
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, hidden, batch_first=True)
            self.head = nn.Sequential(nn.Linear(hidden + horizon, 128), nn.ReLU(), nn.Linear(128, horizon))

        def forward(self, x: Any, base: Any) -> Any:
            _, (h, _) = self.lstm(x)
            return base + self.head(torch.cat([h[-1], base], dim=1))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    n, batch = x.shape[0], 256
    try:
        for _ in range(epochs):
            for idx in torch.randperm(n).split(batch):  # type: ignore[no-untyped-call]
                loss = ((net(x[idx], base[idx]) - target[idx]).abs() * known[idx]).sum() / known[idx].sum().clamp(min=1)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
    finally:
        torch.set_num_threads(threads)
    return _export_lstm(net.eval(), x[:2], base[:2])


def _export_lstm(net: Any, x: Any, base: Any) -> onnx.ModelProto:
    import torch

    kwargs: dict[str, Any] = {"input_names": ["x", "base"], "output_names": ["z"], "opset_version": OPSET,
                              "dynamic_axes": {"x": {0: "batch"}, "base": {0: "batch"}, "z": {0: "batch"}}}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the torch.export-based exporter needs onnxscript, which we do not install
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and LSTM batch-size notices
        path = Path(tmp) / "lstm.onnx"
        torch.onnx.export(net, (x, base), str(path), **kwargs)
        return onnx.load(str(path))
