"""Streaming anomaly detectors with per-series state kept in bounded arrays.

Each detector scores a stream of ``(series id, value)`` pairs in order, one score per value, using the
series' state *before* the value and then folding the value into it.  State lives in preallocated
arrays indexed by a series *slot*, so memory is fixed by ``capacity`` however many series appear, and a
stream split into consecutive chunks scores exactly as in one call.

Detectors (``kind``):

``"zscore"``  exponentially weighted z-score: ``|x - mean| / std``, mean and variance of the series so far.
``"madev"``   moving-average deviation: ``|x - level| / mad``, level an EWMA of the series and ``mad`` an EW
              mean absolute deviation of the values from that level (more robust to heavy tails).

Both use the weight ``a = max(alpha, 1 / n)`` for the ``n``-th observation: exact running averages
(Welford) while ``n < 1 / alpha``, exponential forgetting afterwards.  For the z-score the variance
recurrence is ``var = (1 - a) * (var + a * d**2)`` (``d = x - mean``), which gives the population variance
during the Welford phase.  A series scores 0 until it has ``warmup`` observations; the scale is floored at
``min_scale`` so a constant series does not divide by zero.  A non-finite value scores NaN and leaves its
series' state untouched.  A spike is folded into the state like any value (no robust clipping).

Series ids are either

* ``uint64`` hashes (for example :func:`kernels.anomaly_features.fnv1a64` of encoded names), mapped to slots
  by a set-associative table (:func:`find_slot`: ``WAYS`` slots per set, the least recently seen series of a
  full set is evicted and the newcomer starts from empty state); or
* signed integers in ``[0, capacity)``, used as slots directly (no table, no eviction).

Use one kind of id per state.  A state is not thread-safe: serialise calls that share one.

Each detector has a plain NumPy/Python reference (``*_reference``) used by the tests, and
:mod:`kernels._cuda` has ``numba.cuda`` variants (one GPU thread per series).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "KINDS",
    "WAYS",
    "SeriesState",
    "ewm_zscore",
    "ewm_zscore_reference",
    "find_slot",
    "ma_deviation",
    "ma_deviation_reference",
    "new_series_state",
    "score_series",
    "score_series_reference",
    "warm_up",
]

KINDS: Final[tuple[str, ...]] = ("zscore", "madev")
WAYS: Final[int] = 4  # slots per set of a hashed state table
# backend="auto" uses the GPU from this batch size on.  Measured on an H200 with 16 CPU cores (benchmarks/RESULTS.md,
# "GPU"), the CPU kernels beat the numba.cuda ones at 1M events (copies dominate), so "auto" stays on the CPU for
# any batch the server forms; backend="cuda" still asks for the GPU.
CUDA_MIN_EVENTS: Final[int] = 1 << 26
_STATE_VERSION: Final[int] = 1
# columns of SeriesState.stats
COUNT: Final[int] = 0
CENTRE: Final[int] = 1  # mean (zscore) or level (madev)
SPREAD: Final[int] = 2  # variance (zscore) or mean absolute deviation (madev)

_M1: Final = np.uint64(0xFF51AFD7ED558CCD)
_M2: Final = np.uint64(0xC4CEB9FE1A85EC53)
_S33: Final = np.uint64(33)


# --- hashed slot tables (shared with kernels.anomaly_features) -----------------------------------------------


@njit(nogil=True)
def fmix64(h: np.uint64) -> np.uint64:
    """MurmurHash3's 64-bit finaliser: spreads every input bit over the output (for set/bucket indices)."""
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return h


@njit(nogil=True)
def find_slot(keys: NDArray[np.uint64], recency: NDArray[np.float64], h: np.uint64) -> tuple[int, bool]:
    """Slot of key ``h`` in a set-associative table, claiming one if needed; returns ``(slot, fresh)``.

    ``keys`` holds 0 for a free slot (a key of 0 is stored as 1).  The set is ``fmix64(h) % (len(keys) //
    WAYS)``; a key found there is returned with ``fresh=False``; otherwise the first free slot of the set,
    or else the one with the smallest ``recency`` (ties: the lowest), is given to ``h`` and returned with
    ``fresh=True``; the caller then resets that slot's state and sets its recency.
    """
    if h == 0:
        h = np.uint64(1)
    n_sets = keys.size // WAYS
    base = np.int64(fmix64(h) % np.uint64(n_sets)) * WAYS
    victim = base
    oldest = np.inf
    for w in range(WAYS):
        s = base + w
        k = keys[s]
        if k == h:
            return s, False
        if k == 0:
            keys[s] = h
            return s, True
        if recency[s] < oldest:
            oldest = recency[s]
            victim = s
    keys[victim] = h
    return victim, True


def _fmix64_py(h: int) -> int:
    mask = (1 << 64) - 1
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & mask
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & mask
    h ^= h >> 33
    return h


def _find_slot_py(keys: NDArray[np.uint64], recency: NDArray[np.float64], h: int) -> tuple[int, bool]:
    """Pure-Python :func:`find_slot` (the reference)."""
    h = h or 1
    base = (_fmix64_py(h) % (keys.size // WAYS)) * WAYS
    victim, oldest = base, math.inf
    for s in range(base, base + WAYS):
        k = int(keys[s])
        if k == h:
            return s, False
        if k == 0:
            keys[s] = h
            return s, True
        if recency[s] < oldest:
            oldest, victim = float(recency[s]), s
    keys[victim] = h
    return victim, True


# --- state ---------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class SeriesState:
    """State of one streaming detector for up to ``capacity`` series (see the module docstring)."""

    kind: str
    alpha: float
    warmup: int
    min_scale: float
    keys: NDArray[np.uint64]  # (capacity,) series hash per slot, 0 = free (hashed ids only)
    recency: NDArray[np.float64]  # (capacity,) clock value at the slot's last event (eviction order)
    stats: NDArray[np.float64]  # (capacity, 3): COUNT, CENTRE, SPREAD
    clock: NDArray[np.float64]  # (1,) events seen by this state

    @property
    def capacity(self) -> int:
        return int(self.keys.size)

    @property
    def nbytes(self) -> int:
        return sum(
            int(getattr(self, f.name).nbytes) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)
        )

    def copy(self) -> SeriesState:
        return SeriesState(**{f.name: _copy(getattr(self, f.name)) for f in fields(self)})

    def save(self, path: str | Path) -> None:
        """Write the state and its parameters to one ``.npz`` file."""
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        np.savez(path, version=np.int64(_STATE_VERSION), **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> SeriesState:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != _STATE_VERSION:
                raise ValueError(f"series state version {int(z['version'])} != {_STATE_VERSION}")
            state = cls(
                kind=str(z["kind"]),
                alpha=float(z["alpha"]),
                warmup=int(z["warmup"]),
                min_scale=float(z["min_scale"]),
                keys=z["keys"].astype(np.uint64),
                recency=z["recency"].astype(np.float64),
                stats=z["stats"].astype(np.float64),
                clock=z["clock"].astype(np.float64),
            )
        _check_state(state)
        return state


def _copy(v: Any) -> Any:
    return v.copy() if isinstance(v, np.ndarray) else v


def new_series_state(
    kind: str, capacity: int = 65536, *, alpha: float = 0.05, warmup: int = 10, min_scale: float = 1e-6
) -> SeriesState:
    """Empty state for detector ``kind`` (``"zscore"`` or ``"madev"``); ``capacity`` a power of two >= WAYS."""
    state = SeriesState(
        kind=kind,
        alpha=float(alpha),
        warmup=int(warmup),
        min_scale=float(min_scale),
        keys=np.zeros(capacity, np.uint64),
        recency=np.zeros(capacity, np.float64),
        stats=np.zeros((capacity, 3), np.float64),
        clock=np.zeros(1, np.float64),
    )
    _check_state(state)
    return state


def _check_state(state: SeriesState) -> None:
    cap = state.keys.size
    if state.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {state.kind!r}")
    if cap < WAYS or cap & (cap - 1):
        raise ValueError(f"capacity must be a power of two >= {WAYS}, not {cap}")
    if not 0.0 < state.alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], not {state.alpha}")
    if state.warmup < 1:
        raise ValueError(f"warmup must be >= 1, not {state.warmup}")
    if not state.min_scale > 0.0:
        raise ValueError(f"min_scale must be > 0, not {state.min_scale}")
    if state.recency.shape != (cap,) or state.stats.shape != (cap, 3) or state.clock.shape != (1,):
        raise ValueError("series state arrays have inconsistent shapes")


# --- one step of each detector (leaf functions: compiled for the CPU here and for CUDA in kernels._cuda) -------


def _zscore_step_impl(
    x: float, n: float, mean: float, var: float, alpha: float, warmup: float, min_scale: float
) -> tuple[float, float, float, float]:
    score = 0.0
    if n >= warmup:
        score = abs(x - mean) / max(math.sqrt(var), min_scale)
    a = max(alpha, 1.0 / (n + 1.0))
    d = x - mean
    mean = mean + a * d
    var = (1.0 - a) * (var + a * d * d)
    return score, n + 1.0, mean, var


def _madev_step_impl(
    x: float, n: float, level: float, mad: float, alpha: float, warmup: float, min_scale: float
) -> tuple[float, float, float, float]:
    score = 0.0
    if n >= warmup:
        score = abs(x - level) / max(mad, min_scale)
    if n == 0.0:
        level = x
        mad = 0.0
    else:
        e = x - level
        mad = mad + max(alpha, 1.0 / n) * (abs(e) - mad)
        level = level + max(alpha, 1.0 / (n + 1.0)) * e
    return score, n + 1.0, level, mad


_zscore_step = njit(nogil=True)(_zscore_step_impl)
_madev_step = njit(nogil=True)(_madev_step_impl)


# --- kernels -------------------------------------------------------------------------------------------------


@njit(nogil=True)
def _assign_slots(
    ids: NDArray[Any], hashed: bool, keys: NDArray[np.uint64], recency: NDArray[np.float64], clock: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Slot of each event and whether it starts the slot afresh; advances the table in event order."""
    n = ids.size
    slots = np.empty(n, np.int64)
    fresh = np.zeros(n, np.bool_)
    tick = clock[0]
    for i in range(n):
        tick += 1.0
        if hashed:
            s, f = find_slot(keys, recency, np.uint64(ids[i]))
            fresh[i] = f
        else:
            s = np.int64(ids[i])
        slots[i] = s
        recency[s] = tick
    clock[0] = tick
    return slots, fresh


@njit(nogil=True)
def _score_serial(
    slots: NDArray[np.int64],
    fresh: NDArray[np.bool_],
    values: NDArray[np.float64],
    stats: NDArray[np.float64],
    madev: bool,
    alpha: float,
    warmup: float,
    min_scale: float,
) -> NDArray[np.float64]:
    n = slots.size
    out = np.empty(n, np.float64)
    for i in range(n):
        s = slots[i]
        if fresh[i]:
            stats[s, COUNT] = 0.0
            stats[s, CENTRE] = 0.0
            stats[s, SPREAD] = 0.0
        x = values[i]
        if not np.isfinite(x):
            out[i] = np.nan
            continue
        if madev:
            r = _madev_step(x, stats[s, COUNT], stats[s, CENTRE], stats[s, SPREAD], alpha, warmup, min_scale)
        else:
            r = _zscore_step(x, stats[s, COUNT], stats[s, CENTRE], stats[s, SPREAD], alpha, warmup, min_scale)
        out[i] = r[0]
        stats[s, COUNT] = r[1]
        stats[s, CENTRE] = r[2]
        stats[s, SPREAD] = r[3]
    return out


def _prepare(ids: ArrayLike, values: ArrayLike, state: SeriesState) -> tuple[NDArray[Any], NDArray[Any], bool]:
    ids_a = np.ascontiguousarray(ids)
    vals = np.ascontiguousarray(values, dtype=np.float64)
    if ids_a.ndim != 1 or vals.shape != ids_a.shape:
        raise ValueError(f"ids and values must be 1-D of one length, not {ids_a.shape} and {vals.shape}")
    if ids_a.dtype == np.uint64:
        return ids_a, vals, True
    if ids_a.dtype.kind not in "iu" and ids_a.size:
        raise TypeError(f"series ids must be uint64 hashes or integer slots, not {ids_a.dtype}")
    ids_a = ids_a.astype(np.int64, copy=False)
    if ids_a.size and (ids_a.min() < 0 or ids_a.max() >= state.capacity):
        raise ValueError(f"integer series ids must lie in [0, {state.capacity})")
    return ids_a, vals, False


def score_series(
    ids: ArrayLike, values: ArrayLike, state: SeriesState, *, backend: str = "auto"
) -> NDArray[np.float64]:
    """Score each value against its series' state (``state.kind`` picks the detector), updating the state.

    ``backend``: "cpu", "cuda" (:mod:`kernels._cuda`, one GPU thread per series) or "auto" (the GPU for
    batches of ``CUDA_MIN_EVENTS`` or more when one is present).
    """
    if backend not in ("auto", "cpu", "cuda"):
        raise ValueError(f"backend must be 'auto', 'cpu' or 'cuda', not {backend!r}")
    if backend == "cuda" or (backend == "auto" and np.size(ids) >= CUDA_MIN_EVENTS and _cuda_available()):
        from . import _cuda

        return _cuda.score_series(ids, values, state)
    ids_a, vals, hashed = _prepare(ids, values, state)
    slots, fresh = _assign_slots(ids_a, hashed, state.keys, state.recency, state.clock)
    return _score_serial(
        slots, fresh, vals, state.stats, state.kind == "madev", state.alpha, float(state.warmup), state.min_scale
    )


def _cuda_available() -> bool:
    from . import _cuda

    return _cuda.available()


def ewm_zscore(ids: ArrayLike, values: ArrayLike, state: SeriesState, *, backend: str = "auto") -> NDArray[np.float64]:
    """Exponentially weighted z-score of each value (see the module docstring); ``state.kind`` must be zscore."""
    if state.kind != "zscore":
        raise ValueError(f"ewm_zscore needs a 'zscore' state, not {state.kind!r}")
    return score_series(ids, values, state, backend=backend)


def ma_deviation(
    ids: ArrayLike, values: ArrayLike, state: SeriesState, *, backend: str = "auto"
) -> NDArray[np.float64]:
    """Moving-average deviation of each value (see the module docstring); ``state.kind`` must be madev."""
    if state.kind != "madev":
        raise ValueError(f"ma_deviation needs a 'madev' state, not {state.kind!r}")
    return score_series(ids, values, state, backend=backend)


def warm_up() -> None:
    """Compile the CPU kernels now (a second or two) rather than on the first real batch."""
    for kind in KINDS:
        for ids in (np.zeros(2, np.uint64), np.zeros(2, np.int64)):
            score_series(ids, np.zeros(2), new_series_state(kind, WAYS), backend="cpu")


# --- references ----------------------------------------------------------------------------------------------


def score_series_reference(ids: ArrayLike, values: ArrayLike, state: SeriesState) -> NDArray[np.float64]:
    """Plain-Python :func:`score_series`, written out independently of the kernels (slow; for tests)."""
    ids_a, vals, hashed = _prepare(ids, values, state)
    madev, alpha, warmup, floor = state.kind == "madev", state.alpha, state.warmup, state.min_scale
    out = np.empty(ids_a.size, np.float64)
    stats = state.stats
    for i in range(ids_a.size):
        state.clock[0] += 1.0
        if hashed:
            s, fresh = _find_slot_py(state.keys, state.recency, int(ids_a[i]))
            if fresh:
                stats[s] = 0.0
        else:
            s = int(ids_a[i])
        state.recency[s] = state.clock[0]
        x = float(vals[i])
        if not math.isfinite(x):
            out[i] = math.nan
            continue
        n, centre, spread = (float(v) for v in stats[s])
        if madev:
            out[i] = abs(x - centre) / max(spread, floor) if n >= warmup else 0.0
            if n == 0:
                centre, spread = x, 0.0
            else:  # the n-th deviation from the level, then the (n+1)-th value into the level
                spread += max(alpha, 1.0 / n) * (abs(x - centre) - spread)
                centre += max(alpha, 1.0 / (n + 1)) * (x - centre)
        else:
            out[i] = abs(x - centre) / max(math.sqrt(spread), floor) if n >= warmup else 0.0
            a = max(alpha, 1.0 / (n + 1))
            d = x - centre
            centre += a * d
            spread = (1.0 - a) * (spread + a * d * d)
        stats[s] = (n + 1, centre, spread)
    return out


def ewm_zscore_reference(ids: ArrayLike, values: ArrayLike, state: SeriesState) -> NDArray[np.float64]:
    if state.kind != "zscore":
        raise ValueError(f"ewm_zscore needs a 'zscore' state, not {state.kind!r}")
    return score_series_reference(ids, values, state)


def ma_deviation_reference(ids: ArrayLike, values: ArrayLike, state: SeriesState) -> NDArray[np.float64]:
    if state.kind != "madev":
        raise ValueError(f"ma_deviation needs a 'madev' state, not {state.kind!r}")
    return score_series_reference(ids, values, state)
