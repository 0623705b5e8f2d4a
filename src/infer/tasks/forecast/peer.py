"""statsforecast's AutoETS and AutoARIMA as a peer for the evaluation, fitted per series.

statsforecast is optional (evaluation only) and imported inside the functions; :func:`available` says whether
it is installed.  Both models are called directly (``model.forecast(y=..., h=..., level=[...])``), with their
warnings silenced locally, and timed fit plus predict with ``time.perf_counter``.  A model that raises or
returns non-finite values on a series is logged and left out of the result.

Settings, chosen after timing statsforecast 2.1.1 on M4 series (2 CPU cores; seconds per series):

* **AutoETS** gets ``season_length=m`` for ``m <= 24`` (about 0.4-0.9 s at m = 24, length 700-960).  For
  ``m > 24`` its seasonal states are not supported (its likelihood skips them), so the search ends on a
  non-seasonal model anyway, slower and with worse initial states than asking for one: it gets
  ``season_length=1``, as R's ``ets`` does above 24.
* **AutoARIMA** uses the stepwise search with ``approximation`` on where R's ``auto.arima`` turns it on by
  default (more than 150 observations or m > 12); statsforecast's default, exact likelihood throughout, took
  7-50 s per hourly series and up to 8 minutes for a weekly one.  With it: about 1-2 s at m = 24.  For
  ``m > 24`` the seasonal orders are capped at ``P, Q <= 1`` (the default 2 puts lag-104 polynomials in the
  state space): 0.2-14 s per M4 weekly series, mean about 4 s; this seasonal model was clearly more accurate
  on M4 weekly than a non-seasonal ARIMA (median MASE 0.72 against 1.94 on 24 series).
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["PeerResult", "available", "run_peer"]

_log = logging.getLogger(__name__)

_ETS_MAX_SEASON: Final = 24  # statsforecast's ETS (like R's) has no seasonal states beyond this


@dataclass
class PeerResult:
    """One peer model's forecast of one series."""

    name: str  # "AutoETS" or "AutoARIMA"
    mean: NDArray[np.float64]  # [horizon]
    lower: NDArray[np.float64]  # [horizon], lower bound of the central `level` % interval
    upper: NDArray[np.float64]  # [horizon]
    seconds: float  # fit + predict wall time


def available() -> bool:
    """Whether statsforecast is importable."""
    return importlib.util.find_spec("statsforecast") is not None


def _models(n: int, m: int) -> list[tuple[str, Any]]:
    from statsforecast.models import AutoARIMA, AutoETS

    ets = AutoETS(season_length=m if m <= _ETS_MAX_SEASON else 1)
    arima_kw: dict[str, Any] = {"approximation": n > 150 or m > 12}
    if m > _ETS_MAX_SEASON:
        arima_kw |= {"max_P": 1, "max_Q": 1}
    return [("AutoETS", ets), ("AutoARIMA", AutoARIMA(season_length=m, **arima_kw))]


def run_peer(train: NDArray[Any], m: int, horizon: int, level: float = 80.0) -> list[PeerResult]:
    """AutoETS then AutoARIMA fitted on ``train`` (season length ``m``), forecasting ``horizon`` steps with a
    central ``level`` % interval.  Only the models that succeed are returned (failures are logged)."""
    y = np.ascontiguousarray(train, dtype=np.float64)
    lv: float | int = int(level) if float(level).is_integer() else float(level)
    out: list[PeerResult] = []
    for name, model in _models(y.shape[0], m):
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                fc = model.forecast(y=y, h=horizon, level=[lv])
            seconds = time.perf_counter() - start
            mean, lower, upper = (np.asarray(fc[k], dtype=np.float64) for k in ("mean", f"lo-{lv}", f"hi-{lv}"))
        except Exception as exc:  # a peer failing on one series must not stop the evaluation
            _log.info("peer %s failed (n=%d, m=%d): %s: %s", name, y.shape[0], m, type(exc).__name__, exc)
            continue
        if not (mean.shape == lower.shape == upper.shape == (horizon,) and np.isfinite([mean, lower, upper]).all()):
            _log.info("peer %s gave a non-finite or misshapen forecast (n=%d, m=%d)", name, y.shape[0], m)
            continue
        out.append(PeerResult(name, mean, lower, upper, seconds))
    return out
