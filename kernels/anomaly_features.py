"""Feature kernels for the anomaly family: raw upload events in, ``float32[N, F]`` features out.

Training and serving call the same :func:`extract` with a :class:`FeatureState`, so both compute exactly the
same features: rolling state lives in bounded preallocated arrays, each event's features use the state
*before* the event and then fold the event in, in input order.  A stream gives identical features whether
it is extracted in one call or in consecutive chunks of any size, and the state after training warm-up can
be saved beside the model (:meth:`FeatureState.save`) and loaded at serve time.

Raw events are a mapping of equal-length arrays: ``timestamp`` (float64 s since the epoch, UTC), ``user``,
``namespace``, ``file_type`` (lowercase extension, "" for none) and ``content_hash`` (normally 64 lowercase
hex chars) as str arrays, ``file_size`` (int64 bytes), ``hash_time_ms`` and ``api_latency_ms`` (float32),
``concurrency`` (int32).  :func:`encode_events` turns the strings into fixed-width bytes and 64-bit FNV-1a
hashes once; :func:`extract` accepts raw or encoded events.  Numeric inputs that are negative or not finite
are read as 0; timestamps must be finite and should be non-decreasing (a gap below zero counts as zero, and
a day or week earlier than the user's latest counts as that latest one).

Features (``FEATURE_NAMES`` order; *stateful* ones marked with a star).  The novelty features compare with
the user's *earlier* days or weeks only, so an episode does not make itself look usual while it lasts.

temporal
  ``hour_sin``, ``hour_cos``         time of day (UTC) on the unit circle, period 24 h
  ``weekend``                        1 on Saturday and Sunday (UTC), else 0
  ``user_hour_novelty`` *            how unusual this hour is for the user: the larger of (a) 1 - the share of
                                     the user's earlier active days (up to 31, UTC days) on which they were
                                     active in this hour of the day or a neighbouring one, and (b) the same
                                     over the user's earlier active weeks (up to 7) for this hour of the week,
                                     from ``MIN_WEEKS`` such weeks on (weekends of weekday users); 0 for a user
                                     without an earlier active day
content
  ``log_file_size``                  log1p(bytes)
  ``file_type_code``                 1 + index into ``FILE_TYPES``; 0 = none or not in the vocabulary
  ``user_file_type_novelty`` *       1 - share of the user's earlier active days (up to 31) on which they sent
                                     this file type; 0 for a user without an earlier active day
  ``size_type_zscore`` *             (log_file_size - mean) / sqrt(var + 0.01) over earlier files of this
                                     type (all users; weight ``max(0.001, 1 / n)``), 0 for the first 5 of a type
performance
  ``log_hash_time_ms``               log1p(milliseconds spent hashing)
  ``log_api_latency_ms``             log1p(API latency in ms)
  ``concurrency``                    requests in flight, as given
  ``hash_ms_per_mb``                 hash_time_ms / max(file_size / 1e6, 0.1): ms per MB, sizes under 0.1 MB
                                     count as 0.1 MB so tiny files do not explode the ratio
  ``user_latency_residual_zscore`` * log latency against the user's running regression of log latency on
                                     log size: ``(dl - b * ds) / sqrt(var_l - b * cov + 0.01)`` with ``ds``,
                                     ``dl`` the deviations from the user's means, ``b = cov / (var_s + 0.01)``;
                                     a slow call, not a big file; 0 until the user has 5 events
  ``concurrency_zscore`` *           z-score of log1p(concurrency) against earlier events in the same hour of
                                     the week (all users; weight ``max(0.01, 1 / n)``), 0 for the first 5
  ``latency_drift`` *                running mean (weight 0.1: about the last 10 events, of all users) of the
                                     earlier events' user_latency_residual_zscore, each clipped to +-4: the
                                     service as a whole slowing down
behavioural
  ``user_events_last_hour`` *        the user's earlier events, each weighted exp(-age / 1 h)
  ``user_minute_rate_excess`` *      max(0, log1p(c) - log1p(p)): ``c`` the user's earlier events weighted
                                     exp(-age / 1 min), ``p`` the user's peak of ``c`` + 1 on earlier days
                                     (decaying with a 7-day time constant); bursts unlike the user's own
  ``user_namespace_novelty`` *       1 - share of the user's earlier active days (up to 31) on which they used
                                     this namespace; 0 for a user without an earlier active day
security
  ``hash_hex_entropy``               Shannon entropy (bits, 0..4) of the hash's hex digits (either case)
  ``hash_nonhex_fraction``           share of the hash's bytes that are not hex digits (1 for an empty hash)
  ``hash_max_run``                   longest run of one repeated byte / hash length (1 for an empty hash)
  ``hash_well_formed``               1 if the hash is exactly 64 hex digits with at least 9 distinct digits
                                     (a random SHA-256 shows about 15), else 0
  ``hash_other_users`` *             other users that sent the same content recently: arrivals of the hash
                                     from a user other than its last two distinct senders, each weighted
                                     exp(-age / 6 h), less one if this user is one of those two
  ``log_seconds_since_hash_seen`` *  log1p(seconds since the hash's previous event), capped at 30 days;
                                     log1p(2592000) = 14.77 for a hash not seen (or no longer held)
activity (added after the groups above, so that their columns keep their indices)
  ``day_of_week``                    0 = Monday ... 6 = Sunday (UTC), as a number
  ``log_seconds_since_user_last`` *  log1p(seconds since the user's previous event), capped at 30 days;
                                     log1p(2592000) = 14.77 for the user's first event (or an evicted user)
  ``user_rate_per_hour`` *           the user's earlier events, each weighted exp(-age / 24 h), divided by 24:
                                     about the mean events per hour over the last day
  ``namespace_rate_per_hour`` *      the namespace's earlier events (all users), each weighted exp(-age / 1 h)
  ``user_namespace_entropy`` *       Shannon entropy (bits, 0..4) of the user's earlier events over 16
                                     namespace buckets (the top 4 bits of fmix64 of the namespace hash),
                                     weights decaying with a 7-day time constant; 0 for the first event

Running means and variances use the weight ``a = max(alpha, 1 / n)`` for the ``n``-th value (exact averages
at first, exponential forgetting after): ``d = x - mean; mean += a * d; var = (1 - a) * (var + a * d**2)``,
and the covariance likewise; the user statistics use ``alpha = 0.02``.

State (:class:`FeatureState`): users, namespaces, (user, namespace) pairs and content hashes are hashed
(FNV-1a of their first ``KEY_WIDTH`` UTF-8 bytes; the hash's first ``HASH_WIDTH`` bytes) into set-associative
tables with :data:`kernels.streaming.WAYS` slots per set (:func:`kernels.streaming.find_slot`): ``capacity``
slots for users, namespaces and hashes, ``PAIR_FACTOR * capacity`` for pairs.  A key keeps its slot while it
stays among the ``WAYS`` most recently active keys of its set; a newcomer to a full set evicts the least
recently active one, whose state is dropped, so an evicted user that comes back starts afresh (no earlier
days, novelty 0), an evicted hash counts as never seen and an evicted namespace as idle.  Two keys share a
state only when their 64-bit hashes are equal.  Day and week histories are bit masks (bit k: k days / weeks
ago); the user's namespace distribution is 16 float32 decayed counts.  Small global tables hold the size
statistics per file type, the concurrency statistics per hour of the week and the latency drift.  Memory is
fixed by ``capacity``: about 53 MiB at the default 65536, 6.6 MiB at 8192 (:attr:`FeatureState.nbytes`).
A state is not meant to be shared by concurrent streams; :func:`extract` holds its lock while updating it.

:func:`extract_reference` (in :mod:`kernels._features_reference`, importable from here) computes the same
features with plain NumPy and Python loops (for the tests and benchmarks); :mod:`kernels._cuda` has a
``numba.cuda`` variant of the stateless part (the same leaf functions compiled as device functions), used by
``backend="auto"`` for large batches when a GPU is present.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

# the encoding and state names stay importable from here (the reference, kernels._cuda and the tests read them)
from ._features_encoding import (  # noqa: F401
    _FNV_OFFSET,
    _FT_CODE,
    FILE_TYPE_WIDTH,
    FILE_TYPES,
    HASH_WIDTH,
    KEY_WIDTH,
    EncodedEvents,
    _check_encoded,
    _fnv1a64_py,
    _numeric,
    _padded_bytes,
    encode_events,
    encode_strings,
    file_type_codes,
    fnv1a64,
)
from ._features_state import (  # noqa: F401
    _ARRAYS,
    _DAY_MASK,
    _SCHEMA,
    _WEEK_MASK,
    CONC_ALPHA,
    DAY,
    DAY_BITS,
    DRIFT_ALPHA,
    DRIFT_CLIP,
    FEATURE_GROUPS,
    FEATURE_NAMES,
    FT_BUCKETS,
    HASH_TAU,
    HOUR,
    HOW_BUCKETS,
    M_DAY,
    M_DAYS,
    M_WEEK,
    M_WEEKS,
    MAX_GAP,
    MIN_WEEKS,
    MINUTE,
    MONDAY,
    N_USER_VALS,
    NS_BUCKETS,
    NS_RATE_TAU,
    NS_TAU,
    PAIR_FACTOR,
    PEAK_TAU,
    TYPE_ALPHA,
    U_C1D,
    U_C1H,
    U_C1M,
    U_L_MEAN,
    U_L_VAR,
    U_N,
    U_PEAK_PRIOR,
    U_PEAK_TODAY,
    U_S_MEAN,
    U_S_VAR,
    U_SL_COV,
    USER_RATE_TAU,
    WEEK_BITS,
    Z_ALPHA,
    Z_VAR_FLOOR,
    Z_WARMUP,
    FeatureState,
    _age,
    _hour_novelty,
    _novelty,
    _popcount,
    _shifted,
    new_state,
)
from .streaming import find_slot, fmix64

__all__ = [
    "FEATURE_GROUPS",
    "FEATURE_NAMES",
    "FILE_TYPES",
    "STATEFUL_FEATURES",
    "STATELESS_FEATURES",
    "EncodedEvents",
    "FeatureState",
    "encode_events",
    "encode_events_reference",
    "encode_strings",
    "extract",
    "extract_reference",
    "file_type_codes",
    "fnv1a64",
    "new_state",
    "stateful_features",
    "stateful_features_reference",
    "stateless_features",
    "stateless_features_reference",
    "warm_up",
]

STATELESS_FEATURES: Final[tuple[str, ...]] = (  # the columns the stateless kernels write
    *("hour_sin", "hour_cos", "weekend", "log_file_size", "file_type_code"),
    *("hash_hex_entropy", "hash_nonhex_fraction", "hash_max_run", "hash_well_formed"),
    *("log_hash_time_ms", "log_api_latency_ms", "concurrency", "hash_ms_per_mb"),
    "day_of_week",
)
STATEFUL_FEATURES: Final[tuple[str, ...]] = tuple(n for n in FEATURE_NAMES if n not in STATELESS_FEATURES)
MIN_MB: Final[float] = 0.1
MIN_DISTINCT_DIGITS: Final[int] = 9
PARALLEL_MIN_EVENTS: Final[int] = 8192  # smaller batches run the stateless kernel on one thread
# backend="auto" uses the GPU from this batch size on.  Measured on an H200 with 16 CPU cores (benchmarks/RESULTS.md,
# "GPU"), the CPU kernels beat the numba.cuda ones at 1M events (copies dominate), so "auto" stays on the CPU for
# any batch the server forms; backend="cuda" still asks for the GPU.
CUDA_MIN_EVENTS: Final[int] = 1 << 26

# output columns (compile-time constants in the kernels), in STATELESS_FEATURES and STATEFUL_FEATURES order
_C = {name: i for i, name in enumerate(FEATURE_NAMES)}
C_HOUR_SIN, C_HOUR_COS, C_WEEKEND, C_LOG_SIZE, C_FT_CODE = (_C[n] for n in STATELESS_FEATURES[:5])
C_ENTROPY, C_NONHEX, C_MAX_RUN, C_WELL_FORMED = (_C[n] for n in STATELESS_FEATURES[5:9])
C_LOG_HASH_MS, C_LOG_LAT, C_CONC, C_MS_PER_MB = (_C[n] for n in STATELESS_FEATURES[9:13])
C_DAY_OF_WEEK = _C["day_of_week"]
_STATEFUL_COLS: Final[tuple[int, ...]] = tuple(_C[n] for n in STATEFUL_FEATURES)
C_HOUR_NOVELTY, C_FT_NOVELTY, C_SIZE_Z, C_LAT_Z, C_CONC_Z, C_DRIFT = _STATEFUL_COLS[:6]
C_LAST_HOUR, C_MINUTE_EXCESS, C_NS_NOVELTY, C_HASH_USERS, C_SINCE_HASH = _STATEFUL_COLS[6:11]
C_SINCE_USER, C_USER_RATE, C_NS_RATE, C_NS_ENTROPY = _STATEFUL_COLS[11:]
_ACTIVITY: Final = ("log_seconds_since_user_last", "user_rate_per_hour", "namespace_rate_per_hour")
assert _STATEFUL_COLS[11:] == tuple(_C[n] for n in (*_ACTIVITY, "user_namespace_entropy"))
_S60: Final = np.uint64(64 - 4)  # the namespace bucket: the top 4 bits of fmix64(namespace hash)
assert NS_BUCKETS == 16

assert HASH_WIDTH < 256  # hex digit counts are packed into 8-bit lanes
_CLOG2C = np.array([0.0] + [c * math.log2(c) for c in range(1, 256)], np.float64)


# --- stateless features (leaf functions: compiled for the CPU here and for CUDA in kernels._cuda) -------------


def _temporal_impl(t: float) -> tuple[float, float, float]:
    day = math.floor(t / DAY)
    angle = 2.0 * math.pi * ((t - day * DAY) / DAY)
    d = day + 3.0  # 1970-01-01 was a Thursday
    dow = d - 7.0 * math.floor(d / 7.0)
    return math.sin(angle), math.cos(angle), 1.0 if dow >= 5.0 else 0.0


def _perf_impl(size: float, ht: float, lat: float, conc: float) -> tuple[float, float, float, float, float]:
    size = size if 0.0 < size < math.inf else 0.0
    ht = ht if 0.0 < ht < math.inf else 0.0
    lat = lat if 0.0 < lat < math.inf else 0.0
    conc = conc if 0.0 < conc < math.inf else 0.0
    return math.log1p(size), math.log1p(ht), math.log1p(lat), conc, ht / max(size / 1e6, MIN_MB)


def _hash_stats_impl(mat: Any, i: int, clog2c: Any) -> tuple[float, float, float, float]:
    """(hex entropy bits, non-hex fraction, longest run / length, well-formed flag) of row ``i``.

    Well-formed: exactly 64 hex digits, at least MIN_DISTINCT_DIGITS of the 16 digits present.
    ``clog2c`` is :data:`_CLOG2C` (``c * log2(c)`` for c in 0..255), passed in so that the CUDA variant can
    hold it in device memory.
    """
    lo = np.uint64(0)  # counts of hex digits 0-7, one per 8-bit lane
    hi = np.uint64(0)  # counts of hex digits 8-f
    length = 0
    nhex = 0
    run = 0
    max_run = 0
    prev = -1
    for j in range(mat.shape[1]):
        c = np.int64(mat[i, j])
        if c == 0:
            break
        length += 1
        run = run + 1 if c == prev else 1
        max_run = max(max_run, run)
        prev = c
        d = -1
        if 48 <= c <= 57:
            d = c - 48
        elif 97 <= c <= 102:
            d = c - 87
        elif 65 <= c <= 70:
            d = c - 55
        if d >= 0:
            nhex += 1
            if d < 8:
                lo += np.uint64(1) << np.uint64(8 * d)
            else:
                hi += np.uint64(1) << np.uint64(8 * (d - 8))
    if length == 0:
        return 0.0, 1.0, 1.0, 0.0
    entropy = 0.0
    distinct = 0
    if nhex > 0:  # H = log2(n) - sum(c log2 c) / n over the digit counts c, with c log2 c from a table
        total = 0.0
        for d in range(16):
            lane = lo if d < 8 else hi
            count = np.int64((lane >> np.uint64(8 * (d % 8))) & np.uint64(255))
            total += clog2c[count]
            if count > 0:
                distinct += 1
        entropy = max(math.log2(nhex) - total / nhex, 0.0)
    ok = 1.0 if length == 64 and nhex == 64 and distinct >= MIN_DISTINCT_DIGITS else 0.0
    return entropy, (length - nhex) / length, max_run / length, ok


def _day_of_week_impl(t: float) -> float:
    """0 = Monday ... 6 = Sunday (UTC)."""
    d = math.floor(t / DAY) + 3.0  # 1970-01-01 was a Thursday
    return d - 7.0 * math.floor(d / 7.0)


_temporal = njit(nogil=True)(_temporal_impl)
_day_of_week = njit(nogil=True)(_day_of_week_impl)
_perf = njit(nogil=True)(_perf_impl)
_hash_stats = njit(nogil=True)(_hash_stats_impl)


def _stateless_impl(t, size, ht, lat, conc, ft, hmat, out):
    for i in prange(t.size):
        hour_sin, hour_cos, weekend = _temporal(t[i])
        log_size, log_hash_ms, log_lat, c, ms_per_mb = _perf(
            np.float64(size[i]), np.float64(ht[i]), np.float64(lat[i]), np.float64(conc[i])
        )
        entropy, nonhex, max_run, ok = _hash_stats(hmat, i, _CLOG2C)
        out[i, C_HOUR_SIN] = hour_sin
        out[i, C_HOUR_COS] = hour_cos
        out[i, C_WEEKEND] = weekend
        out[i, C_LOG_SIZE] = log_size
        out[i, C_FT_CODE] = ft[i]
        out[i, C_ENTROPY] = entropy
        out[i, C_NONHEX] = nonhex
        out[i, C_MAX_RUN] = max_run
        out[i, C_WELL_FORMED] = ok
        out[i, C_LOG_HASH_MS] = log_hash_ms
        out[i, C_LOG_LAT] = log_lat
        out[i, C_CONC] = c
        out[i, C_MS_PER_MB] = ms_per_mb
        out[i, C_DAY_OF_WEEK] = _day_of_week(t[i])


_stateless_seq = njit(nogil=True)(_stateless_impl)
_stateless_par = njit(nogil=True, parallel=True)(_stateless_impl)
_PARALLEL_LOCK = threading.Lock()  # numba's workqueue threading layer must not run two parallel regions at once


def _new_out(n: int, out: NDArray[np.float32] | None) -> NDArray[np.float32]:
    if out is None:
        return np.zeros((n, len(FEATURE_NAMES)), np.float32)
    if out.shape != (n, len(FEATURE_NAMES)) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32[{n}, {len(FEATURE_NAMES)}]")
    return out


def stateless_features(
    events: Mapping[str, Any] | EncodedEvents, out: NDArray[np.float32] | None = None, *, backend: str = "auto"
) -> NDArray[np.float32]:
    """Fill the stateless columns of ``out`` (allocated if None). ``backend``: "cpu", "cuda" or "auto"."""
    enc = encode_events(events)
    _check_encoded(enc)
    n = enc.num_events
    out = _new_out(n, out)
    if backend not in ("auto", "cpu", "cuda"):
        raise ValueError(f"backend must be 'auto', 'cpu' or 'cuda', not {backend!r}")
    if backend == "cuda" or (backend == "auto" and n >= CUDA_MIN_EVENTS and _cuda_available()):
        from . import _cuda

        _cuda.stateless_features(enc, out)
        return out
    args = (enc.timestamp, enc.file_size, enc.hash_time_ms, enc.api_latency_ms, enc.concurrency, enc.file_type)
    if n >= PARALLEL_MIN_EVENTS:
        with _PARALLEL_LOCK:
            _stateless_par(*args, enc.content_hash, out)
    else:
        _stateless_seq(*args, enc.content_hash, out)
    return out


def _cuda_available() -> bool:
    from . import _cuda

    return _cuda.available()


# --- stateful features ---------------------------------------------------------------------------------------


@njit(nogil=True)
def _ew_z(x: float, n: float, mean: float, var: float, alpha: float) -> tuple[float, float, float]:
    """z-score of ``x`` against ``n`` earlier values (0 in warm-up), and the updated mean and variance."""
    z = (x - mean) / math.sqrt(var + Z_VAR_FLOOR) if n >= Z_WARMUP else 0.0
    a = max(alpha, 1.0 / (n + 1.0))
    d = x - mean
    return z, mean + a * d, (1.0 - a) * (var + a * d * d)


@njit(nogil=True)
def _residual_z(vals: Any, xs: float, xl: float) -> float:
    """z-score of ``xl`` given ``xs`` by the running regression in ``vals`` (a user row), then updates it."""
    n = vals[U_N]
    b = vals[U_SL_COV] / (vals[U_S_VAR] + Z_VAR_FLOOR)
    ds = xs - vals[U_S_MEAN]
    dl = xl - vals[U_L_MEAN]
    var = max(vals[U_L_VAR] - b * vals[U_SL_COV], 0.0)
    z = (dl - b * ds) / math.sqrt(var + Z_VAR_FLOOR) if n >= Z_WARMUP else 0.0
    a = max(Z_ALPHA, 1.0 / (n + 1.0))
    vals[U_S_MEAN] += a * ds
    vals[U_L_MEAN] += a * dl
    vals[U_S_VAR] = (1.0 - a) * (vals[U_S_VAR] + a * ds * ds)
    vals[U_L_VAR] = (1.0 - a) * (vals[U_L_VAR] + a * dl * dl)
    vals[U_SL_COV] = (1.0 - a) * (vals[U_SL_COV] + a * ds * dl)
    return z


@njit(nogil=True)
def _pair_key(user: np.uint64, namespace: np.uint64) -> np.uint64:
    return fmix64(user ^ fmix64(namespace ^ _FNV_OFFSET))


@njit(nogil=True)
def _user_step(
    u, ti, code, bucket, x_size, x_lat, keys, last, user_vals, user_marks, types, day_hours, week_hours, user_ns, row
):
    """Advance user ``u`` over one event (namespace bucket ``bucket``), writing the user features into ``row``.

    Returns the user's day (the latest one seen), the number of earlier active days and the latency residual.
    """
    hours = np.int64(math.floor((ti - MONDAY) / HOUR))
    week, day = hours // HOW_BUCKETS, (hours + 96) // 24  # MONDAY is 96 h after the epoch
    how, hod = hours - week * HOW_BUCKETS, hours + 96 - day * 24
    s, fresh = find_slot(keys, last, u)
    vals, marks = user_vals[s], user_marks[s]
    if fresh:
        vals[:], types[s, :], day_hours[s, :], week_hours[s, :], user_ns[s, :] = 0.0, 0, 0, 0, 0.0
        marks[M_DAY], marks[M_DAYS], marks[M_WEEK], marks[M_WEEKS] = day, 0, week, 0
        dt = MAX_GAP
        last[s] = ti
    else:
        dt = min(max(ti - last[s], 0.0), MAX_GAP)
        last[s] = max(last[s], ti)
    if day > marks[M_DAY]:  # a new day: age the day masks, today's busiest minute joins the earlier days'
        k = day - marks[M_DAY]
        marks[M_DAY], marks[M_DAYS] = day, _shifted(marks[M_DAYS], k, _DAY_MASK)
        _age(types[s], k, _DAY_MASK)
        _age(day_hours[s], k, _DAY_MASK)
        vals[U_PEAK_PRIOR] = max(vals[U_PEAK_PRIOR] * math.exp(-k * DAY / PEAK_TAU), vals[U_PEAK_TODAY])
        vals[U_PEAK_TODAY] = 0.0
    if week > marks[M_WEEK]:
        k = week - marks[M_WEEK]
        marks[M_WEEK], marks[M_WEEKS] = week, _shifted(marks[M_WEEKS], k, _WEEK_MASK)
        _age(week_hours[s], k, _WEEK_MASK)
    prior_days, prior_weeks = _popcount(marks[M_DAYS] >> 1), _popcount(marks[M_WEEKS] >> 1)
    hour_novelty = _hour_novelty(day_hours[s], hod, prior_days)
    if prior_weeks >= MIN_WEEKS:
        hour_novelty = max(hour_novelty, _hour_novelty(week_hours[s], how, prior_weeks))
    row[C_HOUR_NOVELTY] = hour_novelty
    row[C_FT_NOVELTY] = _novelty(np.int64(types[s, code]), prior_days)
    marks[M_DAYS] |= 1
    marks[M_WEEKS] |= 1
    types[s, code] |= np.uint32(1)
    day_hours[s, hod] |= np.uint32(1)
    week_hours[s, how] |= np.uint8(1)
    c1m = vals[U_C1M] * math.exp(-dt / MINUTE)
    c1h = vals[U_C1H] * math.exp(-dt / HOUR)
    row[C_LAST_HOUR] = c1h
    row[C_MINUTE_EXCESS] = max(math.log1p(c1m) - math.log1p(vals[U_PEAK_PRIOR]), 0.0)
    z_lat = _residual_z(vals, x_size, x_lat)
    row[C_LAT_Z] = z_lat
    vals[U_N] += 1.0
    vals[U_C1M], vals[U_C1H] = c1m + 1.0, c1h + 1.0
    vals[U_PEAK_TODAY] = max(vals[U_PEAK_TODAY], c1m + 1.0)
    row[C_SINCE_USER] = math.log1p(dt)
    c1d = vals[U_C1D] * math.exp(-dt / USER_RATE_TAU)
    row[C_USER_RATE] = c1d / (USER_RATE_TAU / HOUR)
    vals[U_C1D] = c1d + 1.0
    row[C_NS_ENTROPY] = _decayed_entropy(user_ns[s], math.exp(-dt / NS_TAU))
    user_ns[s, bucket] += np.float32(1.0)
    return marks[M_DAY], prior_days, z_lat


@njit(nogil=True)
def _decayed_entropy(counts: Any, decay: float) -> float:
    """Decay a row of bucket counts in place; the entropy (bits) of their distribution, 0 when all are 0."""
    total = 0.0
    for j in range(counts.size):
        counts[j] = counts[j] * decay
        total += np.float64(counts[j])
    entropy = 0.0
    if total > 0.0:
        for j in range(counts.size):
            c = np.float64(counts[j])
            if c > 0.0:
                p = c / total
                entropy -= p * math.log2(p)
    return max(entropy, 0.0)


@njit(nogil=True)
def _ns_rate(keys, last, rate, key, ti) -> float:
    """namespace_rate_per_hour from the namespace's decayed count, which then takes the event in."""
    q, fresh = find_slot(keys, last, key)
    if fresh:
        c = 0.0
        last[q] = ti
    else:
        c = rate[q] * math.exp(-min(max(ti - last[q], 0.0), MAX_GAP) / NS_RATE_TAU)
        last[q] = max(last[q], ti)
    rate[q] = c + 1.0
    return c


@njit(nogil=True)
def _pair_novelty(keys, last, pair_marks, key, ti, day, prior_days) -> float:
    """user_namespace_novelty from the (user, namespace) pair's day mask, which then takes today in."""
    q, fresh = find_slot(keys, last, key)
    if fresh:
        pair_marks[q, 0], pair_marks[q, 1] = day, 0
        last[q] = ti
    else:
        if day > pair_marks[q, 0]:
            pair_marks[q, 1] = _shifted(pair_marks[q, 1], day - pair_marks[q, 0], _DAY_MASK)
            pair_marks[q, 0] = day
        last[q] = max(last[q], ti)
    novelty = _novelty(pair_marks[q, 1], prior_days)
    pair_marks[q, 1] |= 1
    return novelty


@njit(nogil=True)
def _hash_step(keys, last, hash_users, hash_count, key, u, ti, row) -> None:
    """The content-hash features into ``row``; the hash's slot then takes the event in."""
    h, fresh = find_slot(keys, last, key)
    if fresh:
        hash_users[h, 0], hash_users[h, 1] = 0, 0
        gap, users = MAX_GAP, 0.0
        last[h] = ti
    else:
        gap = min(max(ti - last[h], 0.0), MAX_GAP)
        users = hash_count[h] * math.exp(-gap / HASH_TAU)
        last[h] = max(last[h], ti)
    if hash_users[h, 0] == u or hash_users[h, 1] == u:
        row[C_HASH_USERS] = max(users - 1.0, 0.0)
    else:
        row[C_HASH_USERS] = users
        users += 1.0
        hash_users[h, 1], hash_users[h, 0] = hash_users[h, 0], u
    hash_count[h] = users
    row[C_SINCE_HASH] = math.log1p(gap)


@njit(nogil=True)
def _zscore_in(stats: Any, x: float, alpha: float) -> float:
    """:func:`_ew_z` against a row [count, mean, variance], which then takes ``x`` in."""
    z, stats[1], stats[2] = _ew_z(x, stats[0], stats[1], stats[2], alpha)
    stats[0] += 1.0
    return z


@njit(nogil=True)
def _stateful_kernel(
    t, uh, nh, ft, hk, size, lat, conc,
    user_keys, user_last, user_vals, user_marks, user_types, user_day_hours, user_week_hours, user_ns,
    pair_keys, pair_last, pair_marks, ns_keys, ns_last, ns_rate,
    hash_keys, hash_last, hash_users, hash_count, type_stats, conc_stats, drift,
    out,
):  # fmt: skip
    for i in range(t.size):
        ti, row = t[i], out[i]
        x_size = np.float64(size[i])
        x_size = math.log1p(x_size) if x_size > 0.0 else 0.0
        x_lat = np.float64(lat[i])
        x_lat = math.log1p(x_lat) if 0.0 < x_lat < math.inf else 0.0
        x_conc = np.float64(conc[i])
        x_conc = math.log1p(x_conc) if x_conc > 0.0 else 0.0
        user_tables = (user_keys, user_last, user_vals, user_marks, user_types, user_day_hours, user_week_hours)
        bucket = np.int64(fmix64(nh[i]) >> _S60)
        day, prior_days, z_lat = _user_step(uh[i], ti, ft[i], bucket, x_size, x_lat, *user_tables, user_ns, row)
        pair = _pair_key(uh[i], nh[i])
        row[C_NS_NOVELTY] = _pair_novelty(pair_keys, pair_last, pair_marks, pair, ti, day, prior_days)
        row[C_NS_RATE] = _ns_rate(ns_keys, ns_last, ns_rate, nh[i], ti)
        _hash_step(hash_keys, hash_last, hash_users, hash_count, hk[i], uh[i], ti, row)
        # global baselines: size per file type, concurrency per hour of the week, recent latency residuals
        row[C_SIZE_Z] = _zscore_in(type_stats[ft[i]], x_size, TYPE_ALPHA)
        how = np.int64(math.floor((ti - MONDAY) / HOUR)) % HOW_BUCKETS
        row[C_CONC_Z] = _zscore_in(conc_stats[how], x_conc, CONC_ALPHA)
        row[C_DRIFT] = drift[0]
        drift[0] += DRIFT_ALPHA * (min(max(z_lat, -DRIFT_CLIP), DRIFT_CLIP) - drift[0])


def stateful_features(
    events: Mapping[str, Any] | EncodedEvents, state: FeatureState, out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """Fill the stateful columns of ``out`` (allocated if None), advancing ``state`` over the events in order."""
    enc = encode_events(events)
    _check_encoded(enc)
    out = _new_out(enc.num_events, out)
    if enc.file_type.size and (enc.file_type.min() < 0 or enc.file_type.max() >= FT_BUCKETS):
        raise ValueError(f"file_type codes must lie in [0, {FT_BUCKETS})")
    with state.lock:
        _stateful_kernel(
            enc.timestamp,
            enc.user,
            enc.namespace,
            enc.file_type,
            enc.content_key,
            enc.file_size,
            enc.api_latency_ms,
            enc.concurrency,
            *(getattr(state, name) for name in _ARRAYS),
            out,
        )
    return out


def extract(
    events: Mapping[str, Any] | EncodedEvents, state: FeatureState, *, backend: str = "auto"
) -> NDArray[np.float32]:
    """Features ``float32[N, len(FEATURE_NAMES)]`` of a batch or stream of events, advancing ``state``."""
    enc = encode_events(events)
    out = stateless_features(enc, backend=backend)
    return stateful_features(enc, state, out)


def warm_up() -> None:
    """Compile the CPU kernels now (a few seconds) rather than on the first real batch."""
    n = 2
    events = {
        "timestamp": np.arange(n, dtype=np.float64),
        "user": ["a"] * n,
        "namespace": ["n"] * n,
        "file_type": ["pdf"] * n,
        "content_hash": ["0" * 64] * n,
        "file_size": np.ones(n, np.int64),
        "hash_time_ms": np.ones(n, np.float32),
        "api_latency_ms": np.ones(n, np.float32),
        "concurrency": np.ones(n, np.int32),
    }
    enc = encode_events(events)
    out = extract(enc, new_state(4), backend="cpu")
    args = (enc.timestamp, enc.file_size, enc.hash_time_ms, enc.api_latency_ms, enc.concurrency, enc.file_type)
    with _PARALLEL_LOCK:
        _stateless_par(*args, enc.content_hash, out)


# the plain NumPy/Python references live beside this module (they use its definitions)
from ._features_reference import (  # noqa: E402
    encode_events_reference,
    extract_reference,
    stateful_features_reference,
    stateless_features_reference,
)
