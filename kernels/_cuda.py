"""``numba.cuda`` variants of the kernels, built on first use (``numba.cuda`` is never imported before that).

* :func:`stateless_features`: one GPU thread per event computes the stateless feature columns, from the
  same leaf functions as the CPU kernel (``kernels.anomaly_features._*_impl``, compiled as device functions).
  The stateful columns stay on the CPU: they are one sequential pass over the events.
* :func:`score_series`: the streaming detectors with one GPU thread per series.  Slots are assigned on the
  CPU (:func:`kernels.streaming._assign_slots`, a cheap sequential pass that also decides evictions), the
  events are grouped by slot (stable sort, so each series keeps its order) and each thread folds its
  series' events into that series' state in order.

Both give the CPU kernels' results up to floating-point contraction on the device (a few ulps).  The tests
run them on the CPU through the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""

from __future__ import annotations

import ctypes.util
import functools
import math
import os
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import anomaly_features as af
from . import streaming as st

__all__ = ["available", "score_series", "stateless_features"]

_THREADS = 128
cuda: Any = None  # numba.cuda once _kernels() ran; a module global so that the CUDA simulator can swap it


@functools.cache
def available() -> bool:
    """True when numba can compile for and run on a CUDA GPU (or the CUDA simulator is enabled)."""
    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    if not simulated and ctypes.util.find_library("cuda") is None and not os.path.exists("/dev/nvidiactl"):
        return False  # no driver: do not pay for importing numba.cuda
    try:
        from numba import cuda

        if not cuda.is_available():
            return False
        if simulated:
            return True
        from numba.cuda.cudadrv import nvvm

        return bool(nvvm.is_available())  # a driver without the NVVM compiler cannot build the kernels
    except Exception:  # a broken driver or toolkit means "no GPU", not a crash
        return False


@functools.cache
def _kernels() -> SimpleNamespace:
    global cuda
    from numba import cuda

    temporal = cuda.jit(device=True)(af._temporal_impl)
    day_of_week = cuda.jit(device=True)(af._day_of_week_impl)
    perf = cuda.jit(device=True)(af._perf_impl)
    hash_stats = cuda.jit(device=True)(af._hash_stats_impl)
    zscore_step = cuda.jit(device=True)(st._zscore_step_impl)
    madev_step = cuda.jit(device=True)(st._madev_step_impl)
    c_hour_sin, c_hour_cos, c_weekend, c_log_size, c_ft_code = (
        af.C_HOUR_SIN,
        af.C_HOUR_COS,
        af.C_WEEKEND,
        af.C_LOG_SIZE,
        af.C_FT_CODE,
    )
    c_entropy, c_nonhex, c_max_run, c_well_formed = af.C_ENTROPY, af.C_NONHEX, af.C_MAX_RUN, af.C_WELL_FORMED
    c_log_hash_ms, c_log_lat, c_conc, c_ms_per_mb = af.C_LOG_HASH_MS, af.C_LOG_LAT, af.C_CONC, af.C_MS_PER_MB
    c_day_of_week = af.C_DAY_OF_WEEK

    @cuda.jit
    def stateless(t, size, ht, lat, conc, ft, hmat, clog2c, out):
        i = cuda.grid(1)
        if i < t.size:
            hour_sin, hour_cos, weekend = temporal(t[i])
            log_size, log_hash_ms, log_lat, c, ms_per_mb = perf(
                np.float64(size[i]), np.float64(ht[i]), np.float64(lat[i]), np.float64(conc[i])
            )
            entropy, nonhex, max_run, ok = hash_stats(hmat, i, clog2c)
            out[i, c_hour_sin] = hour_sin
            out[i, c_hour_cos] = hour_cos
            out[i, c_weekend] = weekend
            out[i, c_log_size] = log_size
            out[i, c_ft_code] = ft[i]
            out[i, c_entropy] = entropy
            out[i, c_nonhex] = nonhex
            out[i, c_max_run] = max_run
            out[i, c_well_formed] = ok
            out[i, c_log_hash_ms] = log_hash_ms
            out[i, c_log_lat] = log_lat
            out[i, c_conc] = c
            out[i, c_ms_per_mb] = ms_per_mb
            out[i, c_day_of_week] = day_of_week(t[i])

    @cuda.jit
    def per_series(order, bounds, fresh, values, stats, madev, alpha, warmup, min_scale, out):
        k = cuda.grid(1)
        if k < bounds.size - 1:
            n, centre, spread = stats[k, 0], stats[k, 1], stats[k, 2]
            for j in range(bounds[k], bounds[k + 1]):
                i = order[j]
                if fresh[i]:
                    n, centre, spread = 0.0, 0.0, 0.0
                x = values[i]
                if not math.isfinite(x):
                    out[i] = math.nan
                    continue
                if madev:
                    score, n, centre, spread = madev_step(x, n, centre, spread, alpha, warmup, min_scale)
                else:
                    score, n, centre, spread = zscore_step(x, n, centre, spread, alpha, warmup, min_scale)
                out[i] = score
            stats[k, 0], stats[k, 1], stats[k, 2] = n, centre, spread

    return SimpleNamespace(cuda=cuda, stateless=stateless, per_series=per_series)


def _blocks(n: int) -> int:
    return max(1, (n + _THREADS - 1) // _THREADS)


def stateless_features(enc: af.EncodedEvents, out: NDArray[np.float32]) -> NDArray[np.float32]:
    """Fill the stateless columns of ``out`` (``float32[N, F]``) on the GPU."""
    k = _kernels()
    n = enc.num_events
    if n == 0:
        return out
    to_dev = k.cuda.to_device
    args = (enc.timestamp, enc.file_size, enc.hash_time_ms, enc.api_latency_ms, enc.concurrency, enc.file_type)
    d_out = to_dev(out)
    k.stateless[_blocks(n), _THREADS](*(to_dev(a) for a in args), to_dev(enc.content_hash), to_dev(af._CLOG2C), d_out)
    d_out.copy_to_host(out)
    return out


def score_series(ids: ArrayLike, values: ArrayLike, state: st.SeriesState) -> NDArray[np.float64]:
    """:func:`kernels.streaming.score_series` with one GPU thread per series."""
    k = _kernels()
    ids_a, vals, hashed = st._prepare(ids, values, state)
    slots, fresh = st._assign_slots(ids_a, hashed, state.keys, state.recency, state.clock)
    n = slots.size
    out = np.empty(n, np.float64)
    if n == 0:
        return out
    order = np.argsort(slots, kind="stable")
    by_slot = slots[order]
    starts = np.flatnonzero(np.concatenate(([True], by_slot[1:] != by_slot[:-1])))
    touched = by_slot[starts]
    bounds = np.append(starts, n).astype(np.int64)
    to_dev = k.cuda.to_device
    d_stats = to_dev(np.ascontiguousarray(state.stats[touched]))
    d_out = k.cuda.device_array(n, np.float64)
    k.per_series[_blocks(touched.size), _THREADS](
        to_dev(order),
        to_dev(bounds),
        to_dev(fresh),
        to_dev(vals),
        d_stats,
        state.kind == "madev",
        state.alpha,
        float(state.warmup),
        state.min_scale,
        d_out,
    )
    state.stats[touched] = d_stats.copy_to_host()
    return np.asarray(d_out.copy_to_host())
