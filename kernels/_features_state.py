"""The rolling state of :mod:`kernels.anomaly_features` and the feature definitions a saved state belongs to.

:class:`FeatureState` holds the bounded tables the stateful features read and update; its ``.npz`` files carry
a schema string built from the definitions below, so a state is only loaded by kernels that compute the same
features.  The njit helpers at the end age and read its day and week bit masks.  Import the public names
from ``kernels.anomaly_features`` (its docstring describes the state).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numba import njit
from numpy.typing import NDArray

from ._features_encoding import FILE_TYPES, HASH_WIDTH, KEY_WIDTH

__all__ = ["FEATURE_GROUPS", "FEATURE_NAMES", "FeatureState", "new_state"]

FEATURE_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "temporal": ("hour_sin", "hour_cos", "weekend", "user_hour_novelty"),
    "content": ("log_file_size", "file_type_code", "user_file_type_novelty", "size_type_zscore"),
    "performance": (
        *("log_hash_time_ms", "log_api_latency_ms", "concurrency", "hash_ms_per_mb"),
        *("user_latency_residual_zscore", "concurrency_zscore", "latency_drift"),
    ),
    "behavioural": ("user_events_last_hour", "user_minute_rate_excess", "user_namespace_novelty"),
    "security": (
        *("hash_hex_entropy", "hash_nonhex_fraction", "hash_max_run", "hash_well_formed"),
        *("hash_other_users", "log_seconds_since_hash_seen"),
    ),
    # appended last so that the columns above keep their indices (kernels._cuda and callers index them)
    "activity": (
        *("day_of_week", "log_seconds_since_user_last", "user_rate_per_hour", "namespace_rate_per_hour"),
        "user_namespace_entropy",
    ),
}
FEATURE_NAMES: Final[tuple[str, ...]] = tuple(n for group in FEATURE_GROUPS.values() for n in group)
FT_BUCKETS: Final[int] = len(FILE_TYPES) + 1  # per-user file-type day masks, by file_type_code
HOW_BUCKETS: Final[int] = 168  # hours of the week, from Monday 00:00 UTC
PAIR_FACTOR: Final[int] = 4  # (user, namespace) slots per user slot
MINUTE: Final[float] = 60.0
HOUR: Final[float] = 3600.0
DAY: Final[float] = 86400.0
MONDAY: Final[float] = 4 * DAY  # 1970-01-05 00:00 UTC, the first Monday of the epoch
DAY_BITS: Final[int] = 32  # day masks: today and the 31 days before
WEEK_BITS: Final[int] = 8  # week masks: this week and the 7 weeks before
MIN_WEEKS: Final[int] = 2  # the hour-of-week part of user_hour_novelty needs this many earlier active weeks
MAX_GAP: Final[float] = 30 * DAY
PEAK_TAU: Final[float] = 7 * DAY
HASH_TAU: Final[float] = 6 * HOUR
USER_RATE_TAU: Final[float] = DAY  # user_rate_per_hour
NS_RATE_TAU: Final[float] = HOUR  # namespace_rate_per_hour
NS_BUCKETS: Final[int] = 16  # user_namespace_entropy: namespaces hashed to 16 buckets (top 4 bits of fmix64)
NS_TAU: Final[float] = 7 * DAY  # decay of the per-user namespace-bucket counts
Z_ALPHA: Final[float] = 0.02  # per-user running statistics
TYPE_ALPHA: Final[float] = 0.001  # size per file type
CONC_ALPHA: Final[float] = 0.01  # concurrency per hour of the week
DRIFT_ALPHA: Final[float] = 0.1
DRIFT_CLIP: Final[float] = 4.0
Z_WARMUP: Final[float] = 5.0
Z_VAR_FLOOR: Final[float] = 0.01
_DAY_MASK: Final[int] = (1 << DAY_BITS) - 1
_WEEK_MASK: Final[int] = (1 << WEEK_BITS) - 1

_STATE_VERSION: Final[int] = 3
_SCHEMA: Final[str] = repr(
    (
        *(_STATE_VERSION, FEATURE_NAMES, FILE_TYPES, KEY_WIDTH, HASH_WIDTH, PAIR_FACTOR, DAY_BITS, WEEK_BITS),
        *(MIN_WEEKS, MAX_GAP, PEAK_TAU, HASH_TAU, Z_ALPHA, TYPE_ALPHA, CONC_ALPHA, DRIFT_ALPHA, DRIFT_CLIP),
        *(Z_WARMUP, Z_VAR_FLOOR, USER_RATE_TAU, NS_RATE_TAU, NS_BUCKETS, NS_TAU),
    )
)
# columns of FeatureState.user_vals: event count; decayed counts (1 min, 1 h); the busiest minute today and on
# earlier days; running means, variances and covariance of log size and log latency; decayed count (1 day)
U_N, U_C1M, U_C1H, U_PEAK_TODAY, U_PEAK_PRIOR, U_S_MEAN, U_S_VAR, U_L_MEAN, U_L_VAR, U_SL_COV, U_C1D = range(11)
N_USER_VALS: Final[int] = 11
# columns of FeatureState.user_marks: the day and week that bit 0 of the user's masks stands for, and the
# user's active days and weeks as masks
M_DAY, M_DAYS, M_WEEK, M_WEEKS = range(4)


def _layout(c: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """Shape and dtype of each state array for ``c`` slots."""
    p = PAIR_FACTOR * c
    return {
        "user_keys": ((c,), np.uint64),
        "user_last": ((c,), np.float64),
        "user_vals": ((c, N_USER_VALS), np.float64),
        "user_marks": ((c, 4), np.int64),
        "user_types": ((c, FT_BUCKETS), np.uint32),
        "user_day_hours": ((c, 24), np.uint32),
        "user_week_hours": ((c, HOW_BUCKETS), np.uint8),
        "user_ns": ((c, NS_BUCKETS), np.float32),
        "pair_keys": ((p,), np.uint64),
        "pair_last": ((p,), np.float64),
        "pair_marks": ((p, 2), np.int64),
        "ns_keys": ((c,), np.uint64),
        "ns_last": ((c,), np.float64),
        "ns_rate": ((c,), np.float64),
        "hash_keys": ((c,), np.uint64),
        "hash_last": ((c,), np.float64),
        "hash_users": ((c, 2), np.uint64),
        "hash_count": ((c,), np.float64),
        "type_stats": ((FT_BUCKETS, 3), np.float64),
        "conc_stats": ((HOW_BUCKETS, 3), np.float64),
        "drift": ((1,), np.float64),
    }


_ARRAYS: Final[tuple[str, ...]] = tuple(_layout(4))


@dataclass(eq=False)
class FeatureState:
    """Rolling state of the stateful features, ``capacity`` slots per keyed table (see the module docstring)."""

    user_keys: NDArray[np.uint64]  # (C,) user hash per slot, 0 = free
    user_last: NDArray[np.float64]  # (C,) timestamp of the user's last event (also the eviction order)
    user_vals: NDArray[np.float64]  # (C, N_USER_VALS) counts, decayed counts, running means and variances
    user_marks: NDArray[np.int64]  # (C, 4) M_DAY, M_DAYS, M_WEEK, M_WEEKS
    user_types: NDArray[np.uint32]  # (C, FT_BUCKETS) per file type: days it was used (bit k: k days ago)
    user_day_hours: NDArray[np.uint32]  # (C, 24) per hour of the day (UTC): days the user was active then
    user_week_hours: NDArray[np.uint8]  # (C, HOW_BUCKETS) per hour of the week: weeks the user was active then
    user_ns: NDArray[np.float32]  # (C, NS_BUCKETS) decayed (NS_TAU) namespace-bucket counts, as of user_last
    pair_keys: NDArray[np.uint64]  # (PAIR_FACTOR * C,) hash of (user, namespace), 0 = free
    pair_last: NDArray[np.float64]  # (PAIR_FACTOR * C,) timestamp of the pair's last event
    pair_marks: NDArray[np.int64]  # (PAIR_FACTOR * C, 2) day of bit 0, days the user used the namespace
    ns_keys: NDArray[np.uint64]  # (C,) namespace hash per slot, 0 = free
    ns_last: NDArray[np.float64]  # (C,) timestamp of the namespace's last event
    ns_rate: NDArray[np.float64]  # (C,) decayed (NS_RATE_TAU) event count of the namespace, as of ns_last
    hash_keys: NDArray[np.uint64]  # (C,) content-hash key per slot, 0 = free
    hash_last: NDArray[np.float64]  # (C,) timestamp of the hash's last event
    hash_users: NDArray[np.uint64]  # (C, 2) the last two distinct users that sent the hash
    hash_count: NDArray[np.float64]  # (C,) decayed (HASH_TAU) count of arrivals from a new user, as of hash_last
    type_stats: NDArray[np.float64]  # (FT_BUCKETS, 3) per file type: count, mean and variance of log size
    conc_stats: NDArray[np.float64]  # (HOW_BUCKETS, 3) per hour of week: count, mean, variance of log concurrency
    drift: NDArray[np.float64]  # (1,) EW mean over events of the clipped user latency z-score
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def capacity(self) -> int:
        return int(self.user_keys.size)

    @property
    def nbytes(self) -> int:
        return sum(int(getattr(self, name).nbytes) for name in _ARRAYS)

    def copy(self) -> FeatureState:
        return FeatureState(**{name: getattr(self, name).copy() for name in _ARRAYS})

    def save(self, path: str | Path) -> None:
        """Write the state to one ``.npz`` file (with the feature schema it belongs to)."""
        with self.lock:
            arrays = {name: getattr(self, name) for name in _ARRAYS}
            np.savez(path, schema=np.str_(_SCHEMA), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> FeatureState:
        """Read a state written by :meth:`save`; refuses one written for other feature definitions."""
        with np.load(path, allow_pickle=False) as z:
            if "schema" not in z.files or str(z["schema"]) != _SCHEMA:
                raise ValueError(f"{path}: feature state schema differs from this version of kernels")
            arrays: dict[str, Any] = {name: np.ascontiguousarray(z[name]) for name in _ARRAYS}
            state = cls(**arrays)
        _check_state(state)
        return state


def new_state(capacity: int = 65536) -> FeatureState:
    """Empty state: ``capacity`` (a power of two >= 4) slots for users and hashes, ``PAIR_FACTOR`` x for pairs."""
    if capacity < 4 or capacity & (capacity - 1):
        raise ValueError(f"capacity must be a power of two >= 4, not {capacity}")
    state = FeatureState(**{name: np.zeros(shape, dtype) for name, (shape, dtype) in _layout(capacity).items()})
    _check_state(state)
    return state


def _check_state(s: FeatureState) -> None:
    c = s.capacity
    if c < 4 or c & (c - 1):
        raise ValueError(f"capacity must be a power of two >= 4, not {c}")
    for name, (shape, dtype) in _layout(c).items():
        a = getattr(s, name)
        if a.shape != shape or a.dtype != dtype or not a.flags.c_contiguous:
            raise ValueError(f"state.{name} must be C-contiguous {np.dtype(dtype)}{shape}, not {a.dtype}{a.shape}")


# --- the day and week masks (bit k: k days / weeks ago) ----------------------------------------------------


@njit(nogil=True)
def _popcount(x: int) -> int:
    n = 0
    while x:
        x &= x - 1
        n += 1
    return n


@njit(nogil=True)
def _shifted(mask: int, k: int, full: int) -> int:
    """``mask`` aged by ``k >= 0`` periods: bit j moves to bit j + k; bits beyond ``full`` drop out."""
    return (mask << k) & full if k < 64 else 0


@njit(nogil=True)
def _age(row: Any, k: int, full: int) -> None:
    for j in range(row.size):
        row[j] = _shifted(np.int64(row[j]), k, full)


@njit(nogil=True)
def _novelty(mask: int, prior: int) -> float:
    """1 - (earlier periods in ``mask``) / ``prior`` earlier active periods; 0 without any (bit 0 = now)."""
    if prior == 0:
        return 0.0
    return max(1.0 - _popcount(mask >> 1) / prior, 0.0)


@njit(nogil=True)
def _hour_novelty(row: Any, k: int, prior: int) -> float:
    """:func:`_novelty` of the busiest of buckets k - 1, k, k + 1 of a cyclic row of masks."""
    if prior == 0:
        return 0.0
    n = row.size
    best = 0
    for j in (k - 1, k, k + 1):
        best = max(best, _popcount(np.int64(row[(j + n) % n]) >> 1))
    return max(1.0 - best / prior, 0.0)
