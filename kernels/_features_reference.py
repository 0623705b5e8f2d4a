"""Plain NumPy/Python references of :mod:`kernels.anomaly_features` (slow; for the tests and benchmarks).

Each function computes what its kernel counterpart computes, one string or one event at a time, written
from the feature definitions in the kernel module's docstring; the tests compare the two exactly (up to
float32 rounding).  Import them from :mod:`kernels.anomaly_features`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import anomaly_features as af
from .streaming import _find_slot_py, _fmix64_py

__all__ = [
    "encode_events_reference",
    "extract_reference",
    "stateful_features_reference",
    "stateless_features_reference",
]

_FNV_OFFSET = 0xCBF29CE484222325


def encode_events_reference(events: Mapping[str, Any]) -> af.EncodedEvents:
    """:func:`~kernels.anomaly_features.encode_events` in plain Python (one string at a time)."""
    num = af._numeric(events)
    hashes = [af._padded_bytes(s, af.HASH_WIDTH) for s in events["content_hash"]]
    mat = np.frombuffer(b"".join(h.ljust(af.HASH_WIDTH, b"\0") for h in hashes), np.uint8)
    ft_codes = [af._FT_CODE.get(af._padded_bytes(s, af.FILE_TYPE_WIDTH), 0) for s in events["file_type"]]
    return af.EncodedEvents(
        timestamp=num["timestamp"],
        user=np.array([af._fnv1a64_py(af._padded_bytes(s, af.KEY_WIDTH)) for s in events["user"]], np.uint64),
        namespace=np.array([af._fnv1a64_py(af._padded_bytes(s, af.KEY_WIDTH)) for s in events["namespace"]], np.uint64),
        file_type=np.array(ft_codes, np.int32),
        content_hash=mat.reshape(len(hashes), af.HASH_WIDTH).copy(),
        content_key=np.array([af._fnv1a64_py(h) for h in hashes], np.uint64),
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
    distinct = (counts > 0).sum(axis=1)
    ok = ((length == 64) & (nhex == 64) & (distinct >= af.MIN_DISTINCT_DIGITS)).astype(np.float64)
    return entropy, nonhex, max_run_frac, ok


def stateless_features_reference(enc: af.EncodedEvents) -> NDArray[np.float32]:
    """:func:`~kernels.anomaly_features.stateless_features` in vectorised NumPy (stateful columns left at 0)."""
    out = np.zeros((enc.num_events, len(af.FEATURE_NAMES)), np.float32)
    t = enc.timestamp
    day = np.floor(t / af.DAY)
    angle = 2.0 * np.pi * ((t - day * af.DAY) / af.DAY)
    out[:, af.C_HOUR_SIN], out[:, af.C_HOUR_COS] = np.sin(angle), np.cos(angle)
    out[:, af.C_WEEKEND] = (day + 3.0) % 7.0 >= 5.0  # 1970-01-01 was a Thursday

    def clean(x: NDArray[Any]) -> NDArray[np.float64]:
        x = x.astype(np.float64)
        return np.where((x > 0) & (x < np.inf), x, 0.0)

    size, ht, lat = clean(enc.file_size), clean(enc.hash_time_ms), clean(enc.api_latency_ms)
    out[:, af.C_LOG_SIZE] = np.log1p(size)
    out[:, af.C_FT_CODE] = enc.file_type
    entropy, nonhex, max_run, ok = _hash_stats_reference(enc.content_hash)
    out[:, af.C_ENTROPY], out[:, af.C_NONHEX], out[:, af.C_MAX_RUN], out[:, af.C_WELL_FORMED] = (
        entropy,
        nonhex,
        max_run,
        ok,
    )
    out[:, af.C_LOG_HASH_MS] = np.log1p(ht)
    out[:, af.C_LOG_LAT] = np.log1p(lat)
    out[:, af.C_CONC] = clean(enc.concurrency)
    out[:, af.C_MS_PER_MB] = ht / np.maximum(size / 1e6, af.MIN_MB)
    out[:, af.C_DAY_OF_WEEK] = (day + 3.0) % 7.0  # 0 = Monday
    return out


# --- the stateful features, one event at a time ----------------------------------------------------------------


def _bits(mask: int) -> int:
    return bin(mask).count("1")


def _aged(mask: int, k: int, width: int) -> int:
    """The mask ``k`` periods later: bit j becomes bit j + k, keeping ``width`` bits."""
    return (mask << k) & ((1 << width) - 1) if k < 64 else 0


def _share_novelty(earlier_periods: int, prior: int) -> float:
    return max(1.0 - earlier_periods / prior, 0.0) if prior else 0.0


def _busiest_novelty(row: NDArray[Any], k: int, prior: int) -> float:
    n = row.size
    return _share_novelty(max(_bits(int(row[j % n]) >> 1) for j in (k - 1, k, k + 1)), prior)


def _zscore(x: float, stats: NDArray[np.float64], alpha: float) -> float:
    """z-score of ``x`` against ``stats`` = [count, mean, variance], which then take ``x`` in."""
    n, mean, var = (float(v) for v in stats)
    z = (x - mean) / math.sqrt(var + af.Z_VAR_FLOOR) if n >= af.Z_WARMUP else 0.0
    a = max(alpha, 1.0 / (n + 1.0))
    d = x - mean
    stats[:] = n + 1.0, mean + a * d, (1.0 - a) * (var + a * d * d)
    return z


def _latency_residual(vals: NDArray[np.float64], xs: float, xl: float) -> float:
    n = float(vals[af.U_N])
    s_mean, s_var, l_mean, l_var, cov = (
        float(vals[c]) for c in (af.U_S_MEAN, af.U_S_VAR, af.U_L_MEAN, af.U_L_VAR, af.U_SL_COV)
    )
    b = cov / (s_var + af.Z_VAR_FLOOR)
    ds, dl = xs - s_mean, xl - l_mean
    z = (dl - b * ds) / math.sqrt(max(l_var - b * cov, 0.0) + af.Z_VAR_FLOOR) if n >= af.Z_WARMUP else 0.0
    a = max(af.Z_ALPHA, 1.0 / (n + 1.0))
    vals[af.U_S_MEAN], vals[af.U_L_MEAN] = s_mean + a * ds, l_mean + a * dl
    vals[af.U_S_VAR], vals[af.U_L_VAR] = (1.0 - a) * (s_var + a * ds * ds), (1.0 - a) * (l_var + a * dl * dl)
    vals[af.U_SL_COV] = (1.0 - a) * (cov + a * ds * dl)
    return z


def _decayed_entropy(counts: NDArray[np.float32], decay: float) -> float:
    """Decay float32 bucket counts in place; entropy (bits) of their distribution (0 when empty)."""
    counts[:] = [np.float32(float(c) * decay) for c in counts.tolist()]
    values = [float(c) for c in counts.tolist()]
    total = 0.0
    for v in values:  # in order, as the kernel sums
        total += v
    if total <= 0.0:
        return 0.0
    entropy = 0.0
    for v in values:
        if v > 0.0:
            entropy -= (v / total) * math.log2(v / total)
    return max(entropy, 0.0)


def _user_step(st: af.FeatureState, u: int, t: float, code: int, bucket: int, xs: float, xl: float) -> dict[str, Any]:
    """Advance the user's state over one event; returns the user features and the user's day."""
    s, fresh = _find_slot_py(st.user_keys, st.user_last, u)
    vals, marks = st.user_vals[s], st.user_marks[s]
    hours = math.floor((t - af.MONDAY) / af.HOUR)
    week, how = divmod(hours, af.HOW_BUCKETS)
    day, hod = divmod(hours + 96, 24)  # MONDAY is 96 hours after the epoch
    if fresh:
        vals[:], st.user_types[s], st.user_day_hours[s], st.user_week_hours[s], st.user_ns[s] = 0.0, 0, 0, 0, 0.0
        marks[:] = day, 0, week, 0
        dt = af.MAX_GAP
        st.user_last[s] = t
    else:
        dt = min(max(t - float(st.user_last[s]), 0.0), af.MAX_GAP)
        st.user_last[s] = max(float(st.user_last[s]), t)
    if day > marks[af.M_DAY]:
        k = day - int(marks[af.M_DAY])
        marks[af.M_DAYS] = _aged(int(marks[af.M_DAYS]), k, af.DAY_BITS)
        st.user_types[s] = [_aged(int(m), k, af.DAY_BITS) for m in st.user_types[s]]
        st.user_day_hours[s] = [_aged(int(m), k, af.DAY_BITS) for m in st.user_day_hours[s]]
        marks[af.M_DAY] = day
        peak = max(float(vals[af.U_PEAK_PRIOR]) * math.exp(-k * af.DAY / af.PEAK_TAU), float(vals[af.U_PEAK_TODAY]))
        vals[af.U_PEAK_PRIOR], vals[af.U_PEAK_TODAY] = peak, 0.0
    if week > marks[af.M_WEEK]:
        k = week - int(marks[af.M_WEEK])
        marks[af.M_WEEKS] = _aged(int(marks[af.M_WEEKS]), k, af.WEEK_BITS)
        st.user_week_hours[s] = [_aged(int(m), k, af.WEEK_BITS) for m in st.user_week_hours[s]]
        marks[af.M_WEEK] = week
    prior_days, prior_weeks = _bits(int(marks[af.M_DAYS]) >> 1), _bits(int(marks[af.M_WEEKS]) >> 1)
    hour_novelty = _busiest_novelty(st.user_day_hours[s], hod, prior_days)
    if prior_weeks >= af.MIN_WEEKS:
        hour_novelty = max(hour_novelty, _busiest_novelty(st.user_week_hours[s], how, prior_weeks))
    f = {
        "user_hour_novelty": hour_novelty,
        "user_file_type_novelty": _share_novelty(_bits(int(st.user_types[s, code]) >> 1), prior_days),
    }
    marks[af.M_DAYS] |= 1
    marks[af.M_WEEKS] |= 1
    st.user_types[s, code] |= 1
    st.user_day_hours[s, hod] |= 1
    st.user_week_hours[s, how] |= 1
    c1m = float(vals[af.U_C1M]) * math.exp(-dt / af.MINUTE)
    c1h = float(vals[af.U_C1H]) * math.exp(-dt / af.HOUR)
    f["user_events_last_hour"] = c1h
    f["user_minute_rate_excess"] = max(math.log1p(c1m) - math.log1p(float(vals[af.U_PEAK_PRIOR])), 0.0)
    f["user_latency_residual_zscore"] = _latency_residual(vals, xs, xl)
    vals[af.U_N] += 1.0
    vals[af.U_C1M], vals[af.U_C1H] = c1m + 1.0, c1h + 1.0
    vals[af.U_PEAK_TODAY] = max(float(vals[af.U_PEAK_TODAY]), c1m + 1.0)
    f["log_seconds_since_user_last"] = math.log1p(dt)
    c1d = float(vals[af.U_C1D]) * math.exp(-dt / af.USER_RATE_TAU)
    f["user_rate_per_hour"] = c1d / (af.USER_RATE_TAU / af.HOUR)
    vals[af.U_C1D] = c1d + 1.0
    f["user_namespace_entropy"] = _decayed_entropy(st.user_ns[s], math.exp(-dt / af.NS_TAU))
    st.user_ns[s, bucket] = np.float32(float(st.user_ns[s, bucket]) + 1.0)
    return f | {"day": int(marks[af.M_DAY]), "prior_days": prior_days, "how": how}


def _namespace_novelty(st: af.FeatureState, u: int, ns: int, t: float, day: int, prior_days: int) -> float:
    key = _fmix64_py(u ^ _fmix64_py(ns ^ _FNV_OFFSET))
    q, fresh = _find_slot_py(st.pair_keys, st.pair_last, key)
    if fresh:
        st.pair_marks[q] = day, 0
        st.pair_last[q] = t
    else:
        if day > st.pair_marks[q, 0]:
            st.pair_marks[q] = day, _aged(int(st.pair_marks[q, 1]), day - int(st.pair_marks[q, 0]), af.DAY_BITS)
        st.pair_last[q] = max(float(st.pair_last[q]), t)
    novelty = _share_novelty(_bits(int(st.pair_marks[q, 1]) >> 1), prior_days)
    st.pair_marks[q, 1] |= 1
    return novelty


def _namespace_rate(st: af.FeatureState, ns: int, t: float) -> float:
    q, fresh = _find_slot_py(st.ns_keys, st.ns_last, ns)
    if fresh:
        c = 0.0
        st.ns_last[q] = t
    else:
        gap = min(max(t - float(st.ns_last[q]), 0.0), af.MAX_GAP)
        c = float(st.ns_rate[q]) * math.exp(-gap / af.NS_RATE_TAU)
        st.ns_last[q] = max(float(st.ns_last[q]), t)
    st.ns_rate[q] = c + 1.0
    return c


def _hash_step(st: af.FeatureState, key: int, u: int, t: float) -> tuple[float, float]:
    h, fresh = _find_slot_py(st.hash_keys, st.hash_last, key)
    if fresh:
        st.hash_users[h] = 0
        gap, users = af.MAX_GAP, 0.0
        st.hash_last[h] = t
    else:
        gap = min(max(t - float(st.hash_last[h]), 0.0), af.MAX_GAP)
        users = float(st.hash_count[h]) * math.exp(-gap / af.HASH_TAU)
        st.hash_last[h] = max(float(st.hash_last[h]), t)
    if u in (int(st.hash_users[h, 0]), int(st.hash_users[h, 1])):
        others = max(users - 1.0, 0.0)
    else:
        others = users
        users += 1.0
        st.hash_users[h] = u, int(st.hash_users[h, 0])
    st.hash_count[h] = users
    return others, math.log1p(gap)


def stateful_features_reference(
    enc: af.EncodedEvents, state: af.FeatureState, out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """:func:`~kernels.anomaly_features.stateful_features` as a plain Python loop over the events (slow)."""
    out = af._new_out(enc.num_events, out)
    col = {name: af.FEATURE_NAMES.index(name) for name in af.STATEFUL_FEATURES}
    for i in range(enc.num_events):
        t, u, code = float(enc.timestamp[i]), int(enc.user[i]), int(enc.file_type[i])
        size, lat, conc = float(enc.file_size[i]), float(enc.api_latency_ms[i]), float(enc.concurrency[i])
        xs = math.log1p(size) if size > 0.0 else 0.0
        xl = math.log1p(lat) if 0.0 < lat < math.inf else 0.0
        ns = int(enc.namespace[i])
        f = _user_step(state, u, t, code, _fmix64_py(ns) >> 60, xs, xl)
        f["user_namespace_novelty"] = _namespace_novelty(state, u, ns, t, f["day"], f["prior_days"])
        f["namespace_rate_per_hour"] = _namespace_rate(state, ns, t)
        f["hash_other_users"], f["log_seconds_since_hash_seen"] = _hash_step(state, int(enc.content_key[i]), u, t)
        f["size_type_zscore"] = _zscore(xs, state.type_stats[code], af.TYPE_ALPHA)
        f["concurrency_zscore"] = _zscore(
            math.log1p(conc) if conc > 0.0 else 0.0, state.conc_stats[f["how"]], af.CONC_ALPHA
        )
        drift = float(state.drift[0])
        f["latency_drift"] = drift
        clipped = min(max(f["user_latency_residual_zscore"], -af.DRIFT_CLIP), af.DRIFT_CLIP)
        state.drift[0] = drift + af.DRIFT_ALPHA * (clipped - drift)
        for name, j in col.items():
            out[i, j] = f[name]
    return out


def extract_reference(events: Mapping[str, Any], state: af.FeatureState) -> NDArray[np.float32]:
    """:func:`~kernels.anomaly_features.extract` computed with plain NumPy and Python from the raw events (slow)."""
    enc = encode_events_reference(events)
    return stateful_features_reference(enc, state, stateless_features_reference(enc))
