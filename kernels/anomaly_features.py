"""Feature kernels for the anomaly family: raw upload events in, ``float32[N, F]`` features out.

Training and serving call the same :func:`extract` with a :class:`FeatureState`, so both compute exactly the
same features: per-key rolling state lives in bounded preallocated arrays, each event's features use the
state *before* the event and then fold the event in, in input order.  A stream gives identical features
whether it is extracted in one call or in consecutive chunks of any size, and the state after training
warm-up can be saved beside the model (:meth:`FeatureState.save`) and loaded at serve time.

Raw events are a mapping of equal-length arrays: ``timestamp`` (float64 s since the epoch, UTC), ``user``,
``namespace``, ``file_type`` (lowercase extension, "" for none) and ``content_hash`` (normally 64 lowercase
hex chars) as str arrays, ``file_size`` (int64 bytes), ``hash_time_ms`` and ``api_latency_ms`` (float32),
``concurrency`` (int32).  :func:`encode_events` turns the strings into fixed-width bytes and 64-bit FNV-1a
hashes once; :func:`extract` accepts raw or encoded events.  Numeric inputs that are negative or not finite
are read as 0; timestamps must be finite and should be non-decreasing (a gap below zero counts as zero).

Features (``FEATURE_NAMES`` order; *stateful* ones marked with a star):

temporal
  ``hour_sin``, ``hour_cos``         time of day (UTC) on the unit circle, period 24 h
  ``day_of_week``                    0 = Monday ... 6 = Sunday (UTC)
  ``log_seconds_since_user_last`` *  log1p(seconds since the user's previous event), gaps capped at 30 days;
                                     a user's first event gets the cap, log1p(2592000) = 14.77
  ``user_events_last_hour`` *        the user's earlier events, each weighted exp(-age / 1 h)
content
  ``log_file_size``                  log1p(bytes)
  ``file_type_code``                 1 + index into ``FILE_TYPES``; 0 = none or not in the vocabulary
  ``user_file_type_novelty`` *       1 - share of this file type among the user's earlier events (weights
                                     decay with a 7-day time constant); 1 for the user's first event
  ``hash_hex_entropy``               Shannon entropy (bits, 0..4) of the hash's hex digits (either case)
  ``hash_nonhex_fraction``           share of the hash's bytes that are not hex digits (1 for an empty hash)
  ``hash_max_run``                   longest run of one repeated byte / hash length (1 for an empty hash)
  ``hash_length_ok``                 1 if the hash is exactly 64 hex digits, else 0
performance
  ``hash_time_ms``                   milliseconds spent hashing, as given
  ``log_api_latency_ms``             log1p(API latency in ms)
  ``concurrency``                    requests in flight, as given
  ``hash_ms_per_mb``                 hash_time_ms / max(file_size / 1e6, 0.1): ms per MB, sizes under 0.1 MB
                                     count as 0.1 MB so tiny files do not explode the ratio
behavioural
  ``user_rate_per_hour`` *           the user's earlier events weighted exp(-age / 24 h), divided by 24:
                                     mean events per hour over about the last day
  ``namespace_rate_per_hour`` *      the namespace's earlier events weighted exp(-age / 1 h)
  ``user_namespace_entropy`` *       entropy (bits, 0..4) of the user's earlier events over 16 namespace
                                     buckets (hashed), weights decaying with a 7-day time constant
  ``user_namespace_novelty`` *       1 - share of this namespace's bucket in that distribution (1 if empty)
  ``user_size_zscore`` *             (log_file_size - mean) / sqrt(var + 0.01) over the user's earlier events,
                                     0 until the user has 5 events
  ``user_latency_zscore`` *          the same for log_api_latency_ms

Running means and variances use the weight ``a = max(0.02, 1 / n)`` for the user's ``n``-th event (exact
Welford averages over the first 50 events, exponential forgetting after): ``d = x - mean; mean += a * d;
var = (1 - a) * (var + a * d**2)``.

State (:class:`FeatureState`, ``capacity`` slots per table, a power of two): users and namespaces are
hashed (FNV-1a of their first ``KEY_WIDTH`` UTF-8 bytes) into set-associative tables with
:data:`kernels.streaming.WAYS` slots per set (:func:`kernels.streaming.find_slot`).  A key keeps its slot
while it stays among the ``WAYS`` most recently active keys of its set; a newcomer to a full set evicts the
least recently active key, whose state is dropped, so an evicted user that comes back starts afresh (first
event, novelty 1).  Two keys share a state only when their 64-bit hashes are equal.  Memory is fixed by
``capacity`` (about 22 MiB at the default 65536, see :attr:`FeatureState.nbytes`).  A state is not meant to
be shared by concurrent streams; :func:`extract` holds its lock while updating it.

:func:`extract_reference` computes the same features with plain NumPy and Python loops (for the tests and
benchmarks); :mod:`kernels._cuda` has a ``numba.cuda`` variant of the stateless part, used by ``backend=
"auto"`` for large batches when a GPU is present.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

from .streaming import _find_slot_py, _fmix64_py, find_slot, fmix64

__all__ = [
    "FEATURE_GROUPS",
    "FEATURE_NAMES",
    "FILE_TYPES",
    "STATEFUL_FEATURES",
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

FEATURE_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "temporal": ("hour_sin", "hour_cos", "day_of_week", "log_seconds_since_user_last", "user_events_last_hour"),
    "content": (
        "log_file_size",
        "file_type_code",
        "user_file_type_novelty",
        "hash_hex_entropy",
        "hash_nonhex_fraction",
        "hash_max_run",
        "hash_length_ok",
    ),
    "performance": ("hash_time_ms", "log_api_latency_ms", "concurrency", "hash_ms_per_mb"),
    "behavioural": (
        "user_rate_per_hour",
        "namespace_rate_per_hour",
        "user_namespace_entropy",
        "user_namespace_novelty",
        "user_size_zscore",
        "user_latency_zscore",
    ),
}
FEATURE_NAMES: Final[tuple[str, ...]] = tuple(n for group in FEATURE_GROUPS.values() for n in group)
STATEFUL_FEATURES: Final[tuple[str, ...]] = (
    "log_seconds_since_user_last",
    "user_events_last_hour",
    "user_file_type_novelty",
    "user_rate_per_hour",
    "namespace_rate_per_hour",
    "user_namespace_entropy",
    "user_namespace_novelty",
    "user_size_zscore",
    "user_latency_zscore",
)
FILE_TYPES: Final[tuple[str, ...]] = (  # 47 types + "none/unknown" = 48 per-user buckets
    *("exe", "dll", "so", "msi", "jar", "scr", "apk", "dmg", "iso"),  # executables and images of them
    *("sh", "ps1", "bat", "vbs", "js", "py", "go", "java", "sql"),  # scripts and code
    *("zip", "tar", "gz", "7z", "rar"),  # archives
    *("pdf", "doc", "docx", "xls", "xlsx", "pptx", "txt", "csv", "md", "html"),  # documents
    *("jpg", "png", "gif", "svg", "psd", "mp4", "mov", "mp3", "wav"),  # images and media
    *("json", "xml", "yaml", "parquet"),  # data
    "log",
)
KEY_WIDTH: Final[int] = 64  # bytes of a user / namespace name that are hashed
FILE_TYPE_WIDTH: Final[int] = 16
HASH_WIDTH: Final[int] = 72  # bytes of content_hash kept (a 64-char hash plus room to see it is too long)
NS_BUCKETS: Final[int] = 16  # per-user namespace distribution: top 4 bits of fmix64(namespace hash)
FT_BUCKETS: Final[int] = len(FILE_TYPES) + 1  # per-user file-type distribution, by file_type_code
HOUR: Final[float] = 3600.0
DAY: Final[float] = 86400.0
PROFILE_TAU: Final[float] = 7 * DAY
MAX_GAP: Final[float] = 30 * DAY
Z_ALPHA: Final[float] = 0.02
Z_WARMUP: Final[float] = 5.0
Z_VAR_FLOOR: Final[float] = 0.01
MIN_MB: Final[float] = 0.1
PARALLEL_MIN_EVENTS: Final[int] = 8192  # smaller batches run the stateless kernel on one thread
CUDA_MIN_EVENTS: Final[int] = 262144  # backend="auto" uses the GPU from this batch size on

_STATE_VERSION: Final[int] = 1
_SCHEMA: Final[str] = repr(
    (_STATE_VERSION, FEATURE_NAMES, FILE_TYPES, KEY_WIDTH, NS_BUCKETS, PROFILE_TAU, MAX_GAP, Z_ALPHA, Z_WARMUP)
)
# columns of FeatureState.user_vals
U_N, U_C1H, U_C24H, U_SIZE_MEAN, U_SIZE_VAR, U_LAT_MEAN, U_LAT_VAR = range(7)
# output columns (compile-time constants in the kernels)
_C = {name: i for i, name in enumerate(FEATURE_NAMES)}
C_HOUR_SIN, C_HOUR_COS, C_DOW = _C["hour_sin"], _C["hour_cos"], _C["day_of_week"]
C_SINCE_LAST, C_LAST_HOUR = _C["log_seconds_since_user_last"], _C["user_events_last_hour"]
C_LOG_SIZE, C_FT_CODE, C_FT_NOVELTY = _C["log_file_size"], _C["file_type_code"], _C["user_file_type_novelty"]
C_ENTROPY, C_NONHEX, C_MAX_RUN, C_LEN_OK = (
    _C[n] for n in ("hash_hex_entropy", "hash_nonhex_fraction", "hash_max_run", "hash_length_ok")
)
C_HASH_MS, C_LOG_LAT, C_CONC, C_MS_PER_MB = (
    _C[n] for n in ("hash_time_ms", "log_api_latency_ms", "concurrency", "hash_ms_per_mb")
)
C_USER_RATE, C_NS_RATE, C_NS_ENTROPY, C_NS_NOVELTY, C_SIZE_Z, C_LAT_Z = (_C[n] for n in FEATURE_GROUPS["behavioural"])
_STATEFUL_COLS: Final[tuple[int, ...]] = tuple(_C[n] for n in STATEFUL_FEATURES)

_FNV_OFFSET: Final = np.uint64(0xCBF29CE484222325)
_FNV_PRIME: Final = np.uint64(0x100000001B3)
_S60: Final = np.uint64(60)


# --- encoding ------------------------------------------------------------------------------------------------


def encode_strings(values: ArrayLike, width: int) -> NDArray[np.uint8]:
    """UTF-8 bytes of each string, truncated or zero-padded to ``width``: ``uint8[N, width]``.

    Vectorised through NumPy's ``S`` dtype (ASCII fast path, UTF-8 otherwise).  Trailing NULs of a string
    are lost, like padding; the kernels read a row up to its first NUL.
    """
    arr = np.asarray(values)
    if arr.dtype.kind != "S":
        if arr.dtype.kind not in "OU":
            arr = arr.astype(str)
        try:
            arr = arr.astype(f"S{width}")
        except UnicodeEncodeError:
            arr = np.char.encode(arr.astype(str), "utf-8")
    enc = np.ascontiguousarray(arr.reshape(-1).astype(f"S{width}"))
    return enc.view(np.uint8).reshape(enc.size, width)


@njit(nogil=True)
def fnv1a64(mat: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """64-bit FNV-1a hash of each row of bytes, up to its first NUL (the padding)."""
    n, w = mat.shape
    out = np.empty(n, np.uint64)
    for i in range(n):
        h = _FNV_OFFSET
        for j in range(w):
            b = mat[i, j]
            if b == 0:
                break
            h = (h ^ np.uint64(b)) * _FNV_PRIME
        out[i] = h
    return out


def _fnv1a64_py(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _padded_bytes(s: object, width: int) -> bytes:
    """Reference encoding: the UTF-8 bytes the kernels see for ``s`` (up to ``width`` and the first NUL)."""
    return str(s).encode("utf-8")[:width].split(b"\0", 1)[0]


_FT_CODE: Final[dict[bytes, int]] = {t.encode(): i + 1 for i, t in enumerate(FILE_TYPES)}
_FT_HASHES = np.array([_fnv1a64_py(t) for t in _FT_CODE], np.uint64)
_FT_ORDER = np.argsort(_FT_HASHES)
_FT_HASH_SORTED = _FT_HASHES[_FT_ORDER]
_FT_CODE_SORTED = np.array(list(_FT_CODE.values()), np.int32)[_FT_ORDER]
assert np.unique(_FT_HASHES).size == len(FILE_TYPES)
assert HASH_WIDTH < 256  # hex digit counts are packed into 8-bit lanes
_CLOG2C = np.array([0.0] + [c * math.log2(c) for c in range(1, 256)], np.float64)


@njit(nogil=True)
def file_type_codes(mat: NDArray[np.uint8]) -> NDArray[np.int32]:
    """``file_type_code`` of each encoded file type: 1 + index into FILE_TYPES, 0 if not in it."""
    h = fnv1a64(mat)
    k = np.searchsorted(_FT_HASH_SORTED, h)
    out = np.zeros(h.size, np.int32)
    for i in range(h.size):
        if k[i] < _FT_HASH_SORTED.size and _FT_HASH_SORTED[k[i]] == h[i]:
            out[i] = _FT_CODE_SORTED[k[i]]
    return out


class EncodedEvents(NamedTuple):
    """Events with strings replaced by hashes, codes and fixed-width bytes (see :func:`encode_events`)."""

    timestamp: NDArray[np.float64]
    user: NDArray[np.uint64]  # FNV-1a of the name's first KEY_WIDTH bytes
    namespace: NDArray[np.uint64]
    file_type: NDArray[np.int32]  # file_type_code
    content_hash: NDArray[np.uint8]  # (N, HASH_WIDTH) bytes
    file_size: NDArray[np.int64]
    hash_time_ms: NDArray[np.float32]
    api_latency_ms: NDArray[np.float32]
    concurrency: NDArray[np.int32]

    @property
    def num_events(self) -> int:
        return int(self.timestamp.size)

    def slice(self, start: int, stop: int) -> EncodedEvents:
        return EncodedEvents._make(a[start:stop] for a in self)


def _numeric(events: Mapping[str, Any]) -> dict[str, NDArray[Any]]:
    return {
        "timestamp": np.ascontiguousarray(events["timestamp"], np.float64),
        "file_size": np.ascontiguousarray(events["file_size"], np.int64),
        "hash_time_ms": np.ascontiguousarray(events["hash_time_ms"], np.float32),
        "api_latency_ms": np.ascontiguousarray(events["api_latency_ms"], np.float32),
        "concurrency": np.ascontiguousarray(events["concurrency"], np.int32),
    }


def encode_events(events: Mapping[str, Any] | EncodedEvents) -> EncodedEvents:
    """Encode raw events (the module docstring's schema) once, for one or more :func:`extract` calls."""
    if isinstance(events, EncodedEvents):
        return events
    num = _numeric(events)
    enc = EncodedEvents(
        timestamp=num["timestamp"],
        user=fnv1a64(encode_strings(events["user"], KEY_WIDTH)),
        namespace=fnv1a64(encode_strings(events["namespace"], KEY_WIDTH)),
        file_type=file_type_codes(encode_strings(events["file_type"], FILE_TYPE_WIDTH)),
        content_hash=encode_strings(events["content_hash"], HASH_WIDTH),
        file_size=num["file_size"],
        hash_time_ms=num["hash_time_ms"],
        api_latency_ms=num["api_latency_ms"],
        concurrency=num["concurrency"],
    )
    _check_encoded(enc)
    return enc


def _check_encoded(enc: EncodedEvents) -> None:
    n = enc.timestamp.size
    if any(a.shape[0] != n for a in enc) or enc.content_hash.ndim != 2:
        raise ValueError("event fields must all have the same length")
    if enc.content_hash.shape[1] >= 256:
        raise ValueError("content_hash rows must be narrower than 256 bytes")
    if n and not np.isfinite(enc.timestamp).all():
        raise ValueError("timestamps must be finite")


# --- state ---------------------------------------------------------------------------------------------------

_ARRAYS: Final[tuple[str, ...]] = (
    "user_keys",
    "user_last",
    "user_vals",
    "user_ns",
    "user_ft",
    "ns_keys",
    "ns_last",
    "ns_rate",
)


@dataclass(eq=False)
class FeatureState:
    """Per-user and per-namespace rolling state, ``capacity`` slots each (see the module docstring)."""

    user_keys: NDArray[np.uint64]  # (C,) user hash per slot, 0 = free
    user_last: NDArray[np.float64]  # (C,) timestamp of the user's last event (also the eviction order)
    user_vals: NDArray[np.float64]  # (C, 7) U_N, U_C1H, U_C24H, U_SIZE_MEAN, U_SIZE_VAR, U_LAT_MEAN, U_LAT_VAR
    user_ns: NDArray[np.float32]  # (C, NS_BUCKETS) decayed namespace-bucket counts as of user_last
    user_ft: NDArray[np.float32]  # (C, FT_BUCKETS) decayed file-type counts as of user_last
    ns_keys: NDArray[np.uint64]  # (C,) namespace hash per slot, 0 = free
    ns_last: NDArray[np.float64]  # (C,) timestamp of the namespace's last event
    ns_rate: NDArray[np.float64]  # (C,) decayed (1 h) event count as of ns_last
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
            if str(z["schema"]) != _SCHEMA:
                raise ValueError(f"{path}: feature state schema differs from this version of kernels")
            arrays: dict[str, Any] = {name: np.ascontiguousarray(z[name]) for name in _ARRAYS}
            state = cls(**arrays)
        _check_state(state)
        return state


def new_state(capacity: int = 65536) -> FeatureState:
    """Empty state with ``capacity`` (a power of two >= 4) slots for users and for namespaces."""
    if capacity < 4 or capacity & (capacity - 1):
        raise ValueError(f"capacity must be a power of two >= 4, not {capacity}")
    state = FeatureState(
        user_keys=np.zeros(capacity, np.uint64),
        user_last=np.zeros(capacity, np.float64),
        user_vals=np.zeros((capacity, 7), np.float64),
        user_ns=np.zeros((capacity, NS_BUCKETS), np.float32),
        user_ft=np.zeros((capacity, FT_BUCKETS), np.float32),
        ns_keys=np.zeros(capacity, np.uint64),
        ns_last=np.zeros(capacity, np.float64),
        ns_rate=np.zeros(capacity, np.float64),
    )
    _check_state(state)
    return state


def _check_state(s: FeatureState) -> None:
    c = s.capacity
    shapes = {
        "user_keys": ((c,), np.uint64),
        "user_last": ((c,), np.float64),
        "user_vals": ((c, 7), np.float64),
        "user_ns": ((c, NS_BUCKETS), np.float32),
        "user_ft": ((c, FT_BUCKETS), np.float32),
        "ns_keys": ((c,), np.uint64),
        "ns_last": ((c,), np.float64),
        "ns_rate": ((c,), np.float64),
    }
    for name, (shape, dtype) in shapes.items():
        a = getattr(s, name)
        if a.shape != shape or a.dtype != dtype or not a.flags.c_contiguous:
            raise ValueError(f"state.{name} must be C-contiguous {np.dtype(dtype)}{shape}, not {a.dtype}{a.shape}")
    if c < 4 or c & (c - 1):
        raise ValueError(f"capacity must be a power of two >= 4, not {c}")


# --- stateless features (leaf functions: compiled for the CPU here and for CUDA in kernels._cuda) -------------


def _temporal_impl(t: float) -> tuple[float, float, float]:
    day = math.floor(t / DAY)
    angle = 2.0 * math.pi * ((t - day * DAY) / DAY)
    d = day + 3.0  # 1970-01-01 was a Thursday
    return math.sin(angle), math.cos(angle), d - 7.0 * math.floor(d / 7.0)


def _perf_impl(size: float, ht: float, lat: float, conc: float) -> tuple[float, float, float, float, float]:
    size = size if 0.0 < size < math.inf else 0.0
    ht = ht if 0.0 < ht < math.inf else 0.0
    lat = lat if 0.0 < lat < math.inf else 0.0
    conc = conc if 0.0 < conc < math.inf else 0.0
    return math.log1p(size), ht, math.log1p(lat), conc, ht / max(size / 1e6, MIN_MB)


def _hash_stats_impl(mat: Any, i: int, clog2c: Any) -> tuple[float, float, float, float]:
    """(hex entropy bits, non-hex fraction, longest run / length, 1 if 64 hex digits) of row ``i``.

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
    if nhex > 0:  # H = log2(n) - sum(c log2 c) / n over the digit counts c, with c log2 c from a table
        total = 0.0
        for d in range(16):
            lane = lo if d < 8 else hi
            total += clog2c[np.int64((lane >> np.uint64(8 * (d % 8))) & np.uint64(255))]
        entropy = max(math.log2(nhex) - total / nhex, 0.0)
    ok = 1.0 if length == 64 and nhex == 64 else 0.0
    return entropy, (length - nhex) / length, max_run / length, ok


_temporal = njit(nogil=True)(_temporal_impl)
_perf = njit(nogil=True)(_perf_impl)
_hash_stats = njit(nogil=True)(_hash_stats_impl)


def _stateless_impl(t, size, ht, lat, conc, ft, hmat, out):
    for i in prange(t.size):
        hour_sin, hour_cos, dow = _temporal(t[i])
        log_size, hash_ms, log_lat, c, ms_per_mb = _perf(
            np.float64(size[i]), np.float64(ht[i]), np.float64(lat[i]), np.float64(conc[i])
        )
        entropy, nonhex, max_run, ok = _hash_stats(hmat, i, _CLOG2C)
        out[i, C_HOUR_SIN] = hour_sin
        out[i, C_HOUR_COS] = hour_cos
        out[i, C_DOW] = dow
        out[i, C_LOG_SIZE] = log_size
        out[i, C_FT_CODE] = ft[i]
        out[i, C_ENTROPY] = entropy
        out[i, C_NONHEX] = nonhex
        out[i, C_MAX_RUN] = max_run
        out[i, C_LEN_OK] = ok
        out[i, C_HASH_MS] = hash_ms
        out[i, C_LOG_LAT] = log_lat
        out[i, C_CONC] = c
        out[i, C_MS_PER_MB] = ms_per_mb


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
def _profile(row: NDArray[np.float32], k: Any, decay: float, with_entropy: bool) -> tuple[float, float]:
    """Decay a bucket-count row in place; return (1 - share of bucket k, entropy in bits) before the event."""
    total = 0.0
    for j in range(row.size):
        row[j] = row[j] * decay
        total += row[j]
    if total <= 0.0:
        return 1.0, 0.0
    entropy = 0.0
    if with_entropy:
        for j in range(row.size):
            if row[j] > 0.0:
                p = row[j] / total
                entropy -= p * math.log2(p)
    return 1.0 - row[k] / total, entropy


@njit(nogil=True)
def _ew_z(x: float, n: float, mean: float, var: float) -> tuple[float, float, float]:
    z = (x - mean) / math.sqrt(var + Z_VAR_FLOOR) if n >= Z_WARMUP else 0.0
    a = max(Z_ALPHA, 1.0 / (n + 1.0))
    d = x - mean
    return z, mean + a * d, (1.0 - a) * (var + a * d * d)


@njit(nogil=True)
def _stateful_kernel(t, uh, nh, ft, size, lat, keys, last, vals, ns_tab, ft_tab, ns_keys, ns_last, ns_rate, out):
    for i in range(t.size):
        ti = t[i]
        s, fresh = find_slot(keys, last, uh[i])
        if fresh:
            vals[s, :] = 0.0
            ns_tab[s, :] = 0.0
            ft_tab[s, :] = 0.0
            dt = MAX_GAP
            last[s] = ti
        else:
            dt = min(max(ti - last[s], 0.0), MAX_GAP)
            last[s] = max(last[s], ti)
        c1 = vals[s, U_C1H] * math.exp(-dt / HOUR)
        c24 = vals[s, U_C24H] * math.exp(-dt / DAY)
        decay = math.exp(-dt / PROFILE_TAU)
        bucket = np.int64(fmix64(nh[i]) >> _S60)
        ns_novelty, ns_entropy = _profile(ns_tab[s], bucket, decay, True)
        ft_novelty, _ = _profile(ft_tab[s], ft[i], decay, False)
        n = vals[s, U_N]
        x_size = math.log1p(max(np.float64(size[i]), 0.0))
        x_lat = np.float64(lat[i])
        x_lat = math.log1p(x_lat) if 0.0 < x_lat < math.inf else 0.0
        z_size, vals[s, U_SIZE_MEAN], vals[s, U_SIZE_VAR] = _ew_z(x_size, n, vals[s, U_SIZE_MEAN], vals[s, U_SIZE_VAR])
        z_lat, vals[s, U_LAT_MEAN], vals[s, U_LAT_VAR] = _ew_z(x_lat, n, vals[s, U_LAT_MEAN], vals[s, U_LAT_VAR])
        vals[s, U_N] = n + 1.0
        vals[s, U_C1H] = c1 + 1.0
        vals[s, U_C24H] = c24 + 1.0
        ns_tab[s, bucket] += 1.0
        ft_tab[s, ft[i]] += 1.0

        q, fresh_ns = find_slot(ns_keys, ns_last, nh[i])
        if fresh_ns:
            ns_c = 0.0
            ns_last[q] = ti
        else:
            ns_c = ns_rate[q] * math.exp(-max(ti - ns_last[q], 0.0) / HOUR)
            ns_last[q] = max(ns_last[q], ti)
        ns_rate[q] = ns_c + 1.0

        out[i, C_SINCE_LAST] = math.log1p(dt)
        out[i, C_LAST_HOUR] = c1
        out[i, C_FT_NOVELTY] = ft_novelty
        out[i, C_USER_RATE] = c24 / 24.0
        out[i, C_NS_RATE] = ns_c
        out[i, C_NS_ENTROPY] = ns_entropy
        out[i, C_NS_NOVELTY] = ns_novelty
        out[i, C_SIZE_Z] = z_size
        out[i, C_LAT_Z] = z_lat


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
            enc.file_size,
            enc.api_latency_ms,
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


# --- reference (plain NumPy and Python; slow, for tests and benchmarks) --------------------------------------


def encode_events_reference(events: Mapping[str, Any]) -> EncodedEvents:
    """:func:`encode_events` in plain Python (one string at a time)."""
    num = _numeric(events)
    hashes = [_padded_bytes(s, HASH_WIDTH).ljust(HASH_WIDTH, b"\0") for s in events["content_hash"]]
    mat = np.frombuffer(b"".join(hashes), np.uint8).reshape(len(hashes), HASH_WIDTH)
    return EncodedEvents(
        timestamp=num["timestamp"],
        user=np.array([_fnv1a64_py(_padded_bytes(s, KEY_WIDTH)) for s in events["user"]], np.uint64),
        namespace=np.array([_fnv1a64_py(_padded_bytes(s, KEY_WIDTH)) for s in events["namespace"]], np.uint64),
        file_type=np.array([_FT_CODE.get(_padded_bytes(s, FILE_TYPE_WIDTH), 0) for s in events["file_type"]], np.int32),
        content_hash=mat.copy(),
        file_size=num["file_size"],
        hash_time_ms=num["hash_time_ms"],
        api_latency_ms=num["api_latency_ms"],
        concurrency=num["concurrency"],
    )


def _hash_stats_reference(mat: NDArray[np.uint8]) -> tuple[NDArray[np.float64], ...]:
    valid = np.cumprod(mat != 0, axis=1).astype(bool)  # the bytes before the first NUL
    length = valid.sum(axis=1)
    lut = np.full(256, -1, np.int8)
    lut[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
    lut[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
    digit = np.where(valid, lut[mat], -1)
    counts = np.stack([(digit == d).sum(axis=1) for d in range(16)], axis=1)
    nhex = counts.sum(axis=1)
    p = counts / np.maximum(nhex, 1)[:, None]
    entropy = -(p * np.log2(np.where(p > 0, p, 1.0))).sum(axis=1)
    run = np.zeros(mat.shape[0], np.int64)
    max_run = np.zeros(mat.shape[0], np.int64)
    for j in range(mat.shape[1]):
        same = (mat[:, j] == mat[:, j - 1]) if j else np.zeros(mat.shape[0], bool)
        run = np.where(valid[:, j], np.where(same, run + 1, 1), 0)
        max_run = np.maximum(max_run, run)
    empty = length == 0
    denom = np.maximum(length, 1)
    nonhex = np.where(empty, 1.0, (length - nhex) / denom)
    max_run_frac = np.where(empty, 1.0, max_run / denom)
    ok = ((length == 64) & (nhex == 64)).astype(np.float64)
    return entropy, nonhex, max_run_frac, ok


def stateless_features_reference(enc: EncodedEvents) -> NDArray[np.float32]:
    """:func:`stateless_features` in vectorised NumPy (stateful columns left at 0)."""
    out = np.zeros((enc.num_events, len(FEATURE_NAMES)), np.float32)
    t = enc.timestamp
    day = np.floor(t / DAY)
    angle = 2.0 * np.pi * ((t - day * DAY) / DAY)
    out[:, C_HOUR_SIN], out[:, C_HOUR_COS] = np.sin(angle), np.cos(angle)
    out[:, C_DOW] = (day + 3.0) % 7.0

    def clean(x: NDArray[Any]) -> NDArray[np.float64]:
        x = x.astype(np.float64)
        return np.where((x > 0) & (x < np.inf), x, 0.0)

    size, ht, lat = clean(enc.file_size), clean(enc.hash_time_ms), clean(enc.api_latency_ms)
    out[:, C_LOG_SIZE] = np.log1p(size)
    out[:, C_FT_CODE] = enc.file_type
    entropy, nonhex, max_run, ok = _hash_stats_reference(enc.content_hash)
    out[:, C_ENTROPY], out[:, C_NONHEX], out[:, C_MAX_RUN], out[:, C_LEN_OK] = entropy, nonhex, max_run, ok
    out[:, C_HASH_MS] = ht
    out[:, C_LOG_LAT] = np.log1p(lat)
    out[:, C_CONC] = clean(enc.concurrency)
    out[:, C_MS_PER_MB] = ht / np.maximum(size / 1e6, MIN_MB)
    return out


def _profile_reference(row: NDArray[np.float32], k: int, decay: float) -> tuple[float, float]:
    row[:] = (row.astype(np.float64) * decay).astype(np.float32)
    total = 0.0
    for v in row.tolist():  # in order, as the kernel sums
        total += v
    if total <= 0.0:
        return 1.0, 0.0
    entropy = -sum((v / total) * math.log2(v / total) for v in row.tolist() if v > 0.0)
    return 1.0 - float(row[k]) / total, entropy


def _ew_z_reference(x: float, n: float, mean: float, var: float) -> tuple[float, float, float]:
    z = (x - mean) / math.sqrt(var + Z_VAR_FLOOR) if n >= Z_WARMUP else 0.0
    a = max(Z_ALPHA, 1.0 / (n + 1.0))
    d = x - mean
    return z, mean + a * d, (1.0 - a) * (var + a * d * d)


def stateful_features_reference(
    enc: EncodedEvents, state: FeatureState, out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """:func:`stateful_features` as a plain Python loop over the events (slow)."""
    out = _new_out(enc.num_events, out)
    vals = state.user_vals
    for i in range(enc.num_events):
        t = float(enc.timestamp[i])
        s, fresh = _find_slot_py(state.user_keys, state.user_last, int(enc.user[i]))
        if fresh:
            vals[s], state.user_ns[s], state.user_ft[s] = 0.0, 0.0, 0.0
            dt = MAX_GAP
            state.user_last[s] = t
        else:
            dt = min(max(t - float(state.user_last[s]), 0.0), MAX_GAP)
            state.user_last[s] = max(float(state.user_last[s]), t)
        c1 = float(vals[s, U_C1H]) * math.exp(-dt / HOUR)
        c24 = float(vals[s, U_C24H]) * math.exp(-dt / DAY)
        decay = math.exp(-dt / PROFILE_TAU)
        bucket = _fmix64_py(int(enc.namespace[i])) >> 60
        ns_novelty, ns_entropy = _profile_reference(state.user_ns[s], bucket, decay)
        ft_novelty, _ = _profile_reference(state.user_ft[s], int(enc.file_type[i]), decay)
        n = float(vals[s, U_N])
        x_size = math.log1p(max(float(enc.file_size[i]), 0.0))
        x_lat = float(enc.api_latency_ms[i])
        x_lat = math.log1p(x_lat) if 0.0 < x_lat < math.inf else 0.0
        z_size, vals[s, U_SIZE_MEAN], vals[s, U_SIZE_VAR] = _ew_z_reference(
            x_size, n, *vals[s, [U_SIZE_MEAN, U_SIZE_VAR]]
        )
        z_lat, vals[s, U_LAT_MEAN], vals[s, U_LAT_VAR] = _ew_z_reference(x_lat, n, *vals[s, [U_LAT_MEAN, U_LAT_VAR]])
        vals[s, [U_N, U_C1H, U_C24H]] = n + 1.0, c1 + 1.0, c24 + 1.0
        state.user_ns[s, bucket] = np.float32(float(state.user_ns[s, bucket]) + 1.0)
        state.user_ft[s, enc.file_type[i]] = np.float32(float(state.user_ft[s, enc.file_type[i]]) + 1.0)

        q, fresh_ns = _find_slot_py(state.ns_keys, state.ns_last, int(enc.namespace[i]))
        ns_c = 0.0 if fresh_ns else float(state.ns_rate[q]) * math.exp(-max(t - float(state.ns_last[q]), 0.0) / HOUR)
        state.ns_last[q] = t if fresh_ns else max(float(state.ns_last[q]), t)
        state.ns_rate[q] = ns_c + 1.0

        row = (math.log1p(dt), c1, ft_novelty, c24 / 24.0, ns_c, ns_entropy, ns_novelty, z_size, z_lat)
        out[i, list(_STATEFUL_COLS)] = row
    return out


def extract_reference(events: Mapping[str, Any], state: FeatureState) -> NDArray[np.float32]:
    """:func:`extract` computed with plain NumPy and Python from the raw events (slow)."""
    enc = encode_events_reference(events)
    return stateful_features_reference(enc, state, stateless_features_reference(enc))
