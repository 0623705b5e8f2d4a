"""kernels.anomaly_features: numba kernels against the NumPy/Python reference, chunking, state, CUDA simulator."""

from __future__ import annotations

import ctypes.util
import datetime as dt
import importlib
import itertools
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures import run_cuda_simulated

from kernels import _cuda, streaming
from kernels import anomaly_features as af

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, a Tuesday
HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def random_hash(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.6:
        return bytes(rng.choice(HEX, 64)).decode()
    malformed = (
        "0" * 64,
        "ab" * 32,
        "",
        "XYZ-" + "F" * 60,
        bytes(rng.choice(HEX, 63)).decode() + "g",
        bytes(rng.choice(HEX, int(rng.integers(1, 90)))).decode(),
        "deadbeef" * 8,
        "ÿ" + "a" * 63,
    )
    return malformed[int(rng.integers(len(malformed)))]


def random_events(n: int, seed: int = 0, n_users: int = 25, mean_gap: float = 120.0) -> dict[str, Any]:
    """Random events in the raw schema; users, namespaces and some hashes from small pools so keys repeat.

    With ``mean_gap`` of an hour or more, 1500 events span two months and more (the day and week masks fill and
    age) and have no long silences.
    """
    rng = np.random.default_rng(seed)
    users = np.array([f"user-{i}" for i in range(n_users)] + ["ünïcødé", "", "x" * 80], dtype=object)
    namespaces = np.array([f"team-{i}/proj" for i in range(9)], dtype=object)
    types = np.array([*af.FILE_TYPES[::3], "", "weird", "PDF", "jpeg"], dtype=object)
    gaps = rng.exponential(mean_gap, n)
    gaps[rng.random(n) < 0.05] = 0.0  # simultaneous events
    gaps[rng.random(n) < (0.01 if mean_gap < 3600 else 0.0)] = 40 * 86400.0  # long silences
    gaps[rng.random(n) < 0.005] = -86400.0  # out-of-order events, a day back
    hashes = np.array([random_hash(rng) for _ in range(n)], dtype=object)
    shared = rng.random(n) < 0.2  # the same content from several users
    pool = np.array([bytes(rng.choice(HEX, 64)).decode() for _ in range(5)], dtype=object)
    hashes[shared] = pool[rng.integers(0, pool.size, shared.sum())]
    hash_ms = rng.gamma(2.0, 10.0, n).astype(np.float32)
    latency = rng.gamma(2.0, 50.0, n).astype(np.float32)
    hash_ms[rng.random(n) < 0.02] = np.nan
    latency[rng.random(n) < 0.02] = np.inf
    latency[rng.random(n) < 0.02] = -1.0
    return {
        "timestamp": T0 + np.cumsum(gaps),
        "user": users[rng.integers(0, users.size, n)],
        "namespace": namespaces[rng.integers(0, namespaces.size, n)],
        "file_type": types[rng.integers(0, types.size, n)],
        "content_hash": hashes,
        "file_size": np.exp(rng.normal(12.0, 3.0, n)).astype(np.int64) - (rng.random(n) < 0.01),
        "hash_time_ms": hash_ms,
        "api_latency_ms": latency,
        "concurrency": rng.integers(-1, 64, n).astype(np.int32),
    }


def one_event(t: float, user: str = "u", namespace: str = "ns", **kw: Any) -> dict[str, Any]:
    ev = {
        "timestamp": t,
        "user": user,
        "namespace": namespace,
        "file_type": "pdf",
        "content_hash": "a" * 64,
        "file_size": 1_000_000,
        "hash_time_ms": 5.0,
        "api_latency_ms": 20.0,
        "concurrency": 3,
    }
    return ev | kw


def stack(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        k: np.array([e[k] for e in events], dtype=object if isinstance(events[0][k], str) else None) for k in events[0]
    }


def assert_states_equal(a: af.FeatureState, b: af.FeatureState) -> None:
    for name in af._ARRAYS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0, err_msg=name)


# --- encoding ------------------------------------------------------------------------------------------------


def test_encode_strings_is_truncated_zero_padded_utf8() -> None:
    values = ["", "a", "héllo", "x" * 100, "日本語", "trailing"]
    for given in (values, np.array(values, dtype=object), np.array(values)):
        mat = af.encode_strings(given, 8)
        assert mat.dtype == np.uint8 and mat.shape == (len(values), 8)
        for row, s in zip(mat, values, strict=True):
            assert row.tobytes() == s.encode("utf-8")[:8].ljust(8, b"\0")
    assert af.encode_strings(np.array(["ab", "cd"], dtype=object), 4).tobytes() == b"ab\0\0cd\0\0"
    assert af.encode_strings([], 4).shape == (0, 4)


def test_fnv1a64_known_vectors_and_padding() -> None:
    mat = af.encode_strings(["", "a", "foobar"], 16)
    assert af.fnv1a64(mat).tolist() == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]
    assert af.fnv1a64(af.encode_strings(["foobar"], 6))[0] == af.fnv1a64(af.encode_strings(["foobar"], 64))[0]


def test_file_type_codes() -> None:
    assert 25 <= len(af.FILE_TYPES) == len(set(af.FILE_TYPES)) and af.FT_BUCKETS == len(af.FILE_TYPES) + 1
    codes = af.file_type_codes(af.encode_strings(list(af.FILE_TYPES), af.FILE_TYPE_WIDTH))
    assert codes.tolist() == list(range(1, len(af.FILE_TYPES) + 1))
    unknown = af.file_type_codes(af.encode_strings(["", "PDF", "pdfx", "jpeg", "e"], af.FILE_TYPE_WIDTH))
    assert unknown.tolist() == [0] * 5


def test_encode_events_matches_the_python_reference() -> None:
    ev = random_events(500, seed=3)
    fast, ref = af.encode_events(ev), af.encode_events_reference(ev)
    for name, a, b in zip(af.EncodedEvents._fields, fast, ref, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


# --- features against the reference --------------------------------------------------------------------------


def test_feature_names_are_grouped_and_documented() -> None:
    assert af.FEATURE_NAMES == tuple(n for g in af.FEATURE_GROUPS.values() for n in g)
    assert len(set(af.FEATURE_NAMES)) == len(af.FEATURE_NAMES) == 29
    assert set(af.STATEFUL_FEATURES) | set(af.STATELESS_FEATURES) == set(af.FEATURE_NAMES)
    assert not set(af.STATEFUL_FEATURES) & set(af.STATELESS_FEATURES)
    for name in af.FEATURE_NAMES:
        assert f"``{name}``" in (af.__doc__ or ""), name
    columns = {  # the column constants the kernels (and kernels._cuda) write through
        "C_HOUR_SIN": "hour_sin", "C_HOUR_COS": "hour_cos", "C_WEEKEND": "weekend", "C_LOG_SIZE": "log_file_size",
        "C_FT_CODE": "file_type_code", "C_ENTROPY": "hash_hex_entropy", "C_NONHEX": "hash_nonhex_fraction",
        "C_MAX_RUN": "hash_max_run", "C_WELL_FORMED": "hash_well_formed", "C_LOG_HASH_MS": "log_hash_time_ms",
        "C_LOG_LAT": "log_api_latency_ms", "C_CONC": "concurrency", "C_MS_PER_MB": "hash_ms_per_mb",
        "C_HOUR_NOVELTY": "user_hour_novelty", "C_FT_NOVELTY": "user_file_type_novelty",
        "C_SIZE_Z": "size_type_zscore", "C_LAT_Z": "user_latency_residual_zscore", "C_CONC_Z": "concurrency_zscore",
        "C_DRIFT": "latency_drift", "C_LAST_HOUR": "user_events_last_hour",
        "C_MINUTE_EXCESS": "user_minute_rate_excess", "C_NS_NOVELTY": "user_namespace_novelty",
        "C_HASH_USERS": "hash_other_users", "C_SINCE_HASH": "log_seconds_since_hash_seen",
        "C_DAY_OF_WEEK": "day_of_week", "C_SINCE_USER": "log_seconds_since_user_last",
        "C_USER_RATE": "user_rate_per_hour", "C_NS_RATE": "namespace_rate_per_hour",
        "C_NS_ENTROPY": "user_namespace_entropy",
    }  # fmt: skip
    assert {c: af.FEATURE_NAMES[getattr(af, c)] for c in columns} == columns
    # the first 24 columns keep the indices they had before the "activity" group was appended
    assert af.FEATURE_NAMES[:24] == (
        *("hour_sin", "hour_cos", "weekend", "user_hour_novelty"),
        *("log_file_size", "file_type_code", "user_file_type_novelty", "size_type_zscore"),
        *("log_hash_time_ms", "log_api_latency_ms", "concurrency", "hash_ms_per_mb"),
        *("user_latency_residual_zscore", "concurrency_zscore", "latency_drift"),
        *("user_events_last_hour", "user_minute_rate_excess", "user_namespace_novelty"),
        *("hash_hex_entropy", "hash_nonhex_fraction", "hash_max_run", "hash_well_formed"),
        *("hash_other_users", "log_seconds_since_hash_seen"),
    )
    assert af.FEATURE_NAMES[24:] == af.FEATURE_GROUPS["activity"]
    assert list(af.FEATURE_GROUPS)[-1] == "activity" and "day_of_week" in af.STATELESS_FEATURES
    # the streaming detectors of the anomaly pipeline read these columns by name
    assert {"log_api_latency_ms", "hash_ms_per_mb", "log_file_size", "user_events_last_hour"} <= set(af.FEATURE_NAMES)


@pytest.mark.parametrize(
    ("capacity", "seed", "mean_gap"),
    [(16, 0, 120.0), (4096, 1, 120.0), (16, 2, 3600.0), (4096, 3, 3600.0)],  # 16 slots: collisions, evictions
)
def test_kernels_match_the_reference(capacity: int, seed: int, mean_gap: float) -> None:
    ev = random_events(1500, seed=seed, mean_gap=mean_gap)
    fast_state, ref_state = af.new_state(capacity), af.new_state(capacity)
    fast = af.extract(ev, fast_state, backend="cpu")
    ref = af.extract_reference(ev, ref_state)
    assert fast.dtype == np.float32 and fast.shape == (1500, len(af.FEATURE_NAMES))
    assert np.isfinite(fast).all()
    np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=1e-6)
    assert_states_equal(fast_state, ref_state)
    col = {name: fast[:, af.FEATURE_NAMES.index(name)] for name in af.STATEFUL_FEATURES}
    exercised = ("user_hour_novelty", "user_file_type_novelty", "user_namespace_novelty", "hash_other_users")
    exercised += ("namespace_rate_per_hour", "user_namespace_entropy")
    for name in exercised:
        assert col[name].max() > 0.5, name  # the events exercise every stateful feature
    assert col["user_rate_per_hour"].max() > 0.2  # 12 events in the last day, even with 16 user slots
    since_user = col["log_seconds_since_user_last"]
    assert since_user.min() == 0.0 and since_user.max() == np.float32(math.log1p(af.MAX_GAP))
    assert set(np.unique(fast[:, af.C_DAY_OF_WEEK]).tolist()) <= set(range(7))
    if mean_gap >= 3600:  # two months: the hour-of-week profile is in use
        weeks = [bin(m >> 1).count("1") for m in fast_state.user_marks[:, af.M_WEEKS]]
        assert max(weeks) >= af.MIN_WEEKS
    if capacity == 16:  # the table really was contended: a roomy state gives other features
        roomy = af.extract(ev, af.new_state(4096), backend="cpu")
        assert not np.array_equal(fast[:, list(af._STATEFUL_COLS)], roomy[:, list(af._STATEFUL_COLS)])


def test_parallel_and_serial_stateless_kernels_agree() -> None:
    enc = af.encode_events(random_events(af.PARALLEL_MIN_EVENTS + 500, seed=4))
    whole = af.stateless_features(enc, backend="cpu")
    parts = np.concatenate(
        [af.stateless_features(enc.slice(i, i + 1000), backend="cpu") for i in range(0, enc.num_events, 1000)]
    )
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_allclose(whole, af.stateless_features_reference(enc), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mean_gap", [120.0, 3600.0])
def test_chunked_stream_equals_one_call(mean_gap: float) -> None:
    ev = af.encode_events(random_events(1200, seed=5, mean_gap=mean_gap))
    whole_state = af.new_state(64)
    whole = af.extract(ev, whole_state, backend="cpu")
    cuts = [0, 0, 1, 2, 50, 51, 400, 999, 1200]
    state = af.new_state(64)
    parts = np.concatenate([af.extract(ev.slice(a, b), state, backend="cpu") for a, b in itertools.pairwise(cuts)])
    np.testing.assert_array_equal(whole, parts)
    assert_states_equal(whole_state, state)


def test_state_save_load_round_trip(tmp_path: Path) -> None:
    ev = af.encode_events(random_events(800, seed=6, mean_gap=3600.0))
    whole = af.extract(ev, af.new_state(256), backend="cpu")
    state = af.new_state(256)
    first = af.extract(ev.slice(0, 300), state, backend="cpu")
    state.save(tmp_path / "state.npz")
    loaded = af.FeatureState.load(tmp_path / "state.npz")
    assert_states_equal(state, loaded)
    second = af.extract(ev.slice(300, 800), loaded, backend="cpu")
    np.testing.assert_array_equal(whole, np.concatenate([first, second]))

    with np.load(tmp_path / "state.npz") as z:
        arrays = dict(z)
    assert af._SCHEMA.startswith("(3, ")
    older = {f"v{v}": af._SCHEMA.replace("(3, ", f"({v}, ", 1) for v in (1, 2)}  # v2: before the activity group
    for name, schema in ({"other": "something else"} | older).items():
        np.savez(tmp_path / f"{name}.npz", **(arrays | {"schema": np.str_(schema)}))
        with pytest.raises(ValueError, match="schema"):
            af.FeatureState.load(tmp_path / f"{name}.npz")
    np.savez(tmp_path / "unversioned.npz", **{k: v for k, v in arrays.items() if k != "schema"})
    with pytest.raises(ValueError, match="schema"):
        af.FeatureState.load(tmp_path / "unversioned.npz")


def test_copy_is_independent() -> None:
    ev = random_events(100, seed=7)
    state = af.new_state(64)
    snapshot = state.copy()
    af.extract(ev, state, backend="cpu")
    assert not snapshot.user_keys.any() and state.user_keys.any()


# --- feature semantics on hand-made events -------------------------------------------------------------------


def test_hash_features_on_known_strings() -> None:
    sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    cases = {  # entropy, non-hex fraction, longest run, well formed
        sha: (None, 0.0, 2 / 64, 1.0),
        "0123456789abcdef" * 4: (4.0, 0.0, 1 / 64, 1.0),
        "01234567" * 8: (3.0, 0.0, 1 / 64, 0.0),  # 64 hex digits, but only 8 distinct ones
        "0" * 64: (0.0, 0.0, 1.0, 0.0),
        "": (0.0, 1.0, 1.0, 0.0),
        "xyz": (0.0, 1.0, 1 / 3, 0.0),
        "AB" * 32: (1.0, 0.0, 1 / 64, 0.0),
        "aab": (math.log2(3) - 2 / 3, 0.0, 2 / 3, 0.0),
        sha[:40]: (None, 0.0, 2 / 40, 0.0),  # SHA-1 length
        "a" * 100: (0.0, 0.0, 1.0, 0.0),  # truncated to HASH_WIDTH, still not 64 long
    }
    ev = stack([one_event(T0, content_hash=h) for h in cases])
    cols = [af.C_ENTROPY, af.C_NONHEX, af.C_MAX_RUN, af.C_WELL_FORMED]
    got = af.extract(ev, af.new_state(4), backend="cpu")[:, cols]
    want = np.array([[got[i, 0] if v[0] is None else v[0], *v[1:]] for i, v in enumerate(cases.values())])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert 3.5 < got[0, 0] < 4.0


def test_temporal_and_performance_features() -> None:
    monday_6am = 4 * 86400.0 + 6 * 3600.0  # 1970-01-05 06:00 UTC
    saturday_noon = 2 * 86400.0 + 12 * 3600.0  # 1970-01-03 12:00 UTC
    ev = stack(
        [
            one_event(0.0, file_size=0, hash_time_ms=2.0, api_latency_ms=-5.0),
            one_event(saturday_noon, hash_time_ms=np.inf),
            one_event(monday_6am, file_size=3_000_000, hash_time_ms=12.0, concurrency=-2),
        ]
    )
    x = af.extract(ev, af.new_state(4), backend="cpu")
    np.testing.assert_allclose(
        x[:, [af.C_HOUR_SIN, af.C_HOUR_COS, af.C_WEEKEND]], [[0, 1, 0], [0, -1, 1], [1, 0, 0]], atol=1e-6
    )
    np.testing.assert_allclose(x[:, af.C_LOG_SIZE], [0.0, math.log1p(1e6), math.log1p(3e6)], rtol=1e-6)
    np.testing.assert_allclose(x[:, af.C_LOG_HASH_MS], [math.log1p(2.0), 0.0, math.log1p(12.0)], rtol=1e-6)
    np.testing.assert_allclose(x[:, af.C_MS_PER_MB], [2.0 / 0.1, 0.0, 12.0 / 3.0], rtol=1e-6)
    np.testing.assert_allclose(x[:, af.C_LOG_LAT], [0.0, math.log1p(20.0), math.log1p(20.0)], rtol=1e-6)
    assert x[:, af.C_CONC].tolist() == [3.0, 3.0, 0.0]
    assert x[:, af.C_FT_CODE].tolist() == [af.FILE_TYPES.index("pdf") + 1] * 3
    assert x[:, af.C_DAY_OF_WEEK].tolist() == [3.0, 5.0, 0.0]  # Thursday, Saturday, Monday
    week = np.array([D0 + d * DAY + h * HOUR for d in range(-7, 14) for h in (0.0, 12.0, 23.99)])
    dow = af.stateless_features(stack([one_event(t) for t in week]), backend="cpu")[:, [af.C_DAY_OF_WEEK, af.C_WEEKEND]]
    want = [dt.datetime.fromtimestamp(t, dt.UTC).weekday() for t in week]
    assert dow[:, 0].tolist() == want and dow[:, 1].tolist() == [float(d >= 5) for d in want]


DAY, HOUR = 86400.0, 3600.0
D0 = 19723 * DAY  # 2024-01-01 00:00 UTC, a Monday


def features(events: list[dict[str, Any]], capacity: int = 64) -> dict[str, np.ndarray]:
    x = af.extract(stack(events), af.new_state(capacity), backend="cpu").astype(np.float64)
    return {name: x[:, i] for i, name in enumerate(af.FEATURE_NAMES)}


def test_novelty_compares_with_earlier_days_only() -> None:
    habit = [one_event(D0 + d * DAY + 10 * HOUR, file_type="pdf", namespace="docs") for d in range(10)]
    day10 = D0 + 10 * DAY
    odd = [
        one_event(day10 + 10 * HOUR, file_type="pdf", namespace="docs"),  # the habit
        one_event(day10 + 3 * HOUR, file_type="pdf", namespace="docs"),  # an hour the user is never active
        one_event(day10 + 11 * HOUR, file_type="exe", namespace="secrets"),  # a new type in a new namespace
        one_event(day10 + 11.5 * HOUR, file_type="exe", namespace="secrets"),  # again: today does not count
        one_event(day10 + 1 * DAY + 10 * HOUR, file_type="exe", namespace="secrets"),  # the next day: 1 day in 11
    ]
    f = features(habit + odd)
    np.testing.assert_allclose(f["user_hour_novelty"], [0.0] * 10 + [0.0, 1.0, 0.0, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(f["user_file_type_novelty"], [0.0] * 10 + [0, 0, 1, 1, 1 - 1 / 11], atol=1e-6)
    np.testing.assert_allclose(f["user_namespace_novelty"], [0.0] * 10 + [0, 0, 1, 1, 1 - 1 / 11], atol=1e-6)


def test_hour_novelty_knows_the_week() -> None:
    weekdays = [D0 + w * 7 * DAY + d * DAY + 10 * HOUR for w in range(4) for d in range(5)]
    later = D0 + 4 * 7 * DAY
    f = features([one_event(t) for t in [*weekdays, later + 10 * HOUR, later + 5 * DAY + 10 * HOUR]])
    # the hour of the day is usual (every earlier active day at 10:00), but not on a Saturday
    np.testing.assert_allclose(f["user_hour_novelty"][-2:], [0.0, 1.0], atol=1e-7)
    # before MIN_WEEKS earlier active weeks only the hours of the day count
    f = features([one_event(t) for t in [*weekdays[:5], D0 + 5 * DAY + 10 * HOUR]])
    assert f["user_hour_novelty"][-1] == 0.0


def test_minute_rate_excess_flags_bursts_unlike_the_users_own() -> None:
    habit = [one_event(D0 + d * DAY + 10 * HOUR + k * 900) for d in range(5) for k in range(4)]
    burst = [one_event(D0 + 5 * DAY + 10 * HOUR + k * 5.0) for k in range(10)]
    f = features(habit + burst)
    excess = f["user_minute_rate_excess"]
    assert np.abs(excess[: len(habit)]).max() < 0.05
    assert excess[-1] > 1.0 and np.all(np.diff(excess[len(habit) + 1 :]) > 0)
    # a user whose days hold such bursts (a batch job) shows none the next day
    f = features(burst + [one_event(t + DAY) for t in (e["timestamp"] for e in burst)])
    assert f["user_minute_rate_excess"][-1] == 0.0
    d = math.exp(-5 / 3600)
    np.testing.assert_allclose(f["user_events_last_hour"][:3], [0, d, (1 + d) * d], rtol=1e-6)


def test_size_zscore_is_relative_to_the_file_type() -> None:
    rng = np.random.default_rng(8)
    docs = [one_event(T0 + 60 * i, file_size=int(s)) for i, s in enumerate(np.exp(rng.normal(13.0, 0.3, 40)))]
    films = [
        one_event(T0 + 3000 + i, file_type="mp4", file_size=int(s))
        for i, s in enumerate(np.exp(rng.normal(20, 0.3, 40)))
    ]
    big_pdf, big_mp4 = one_event(T0 + 9000, file_size=10**9), one_event(T0 + 9001, file_type="mp4", file_size=5 * 10**8)
    f = features([*docs, *films, big_pdf, big_mp4])
    z = f["size_type_zscore"]
    assert not z[: int(af.Z_WARMUP)].any() and not z[40 : 40 + int(af.Z_WARMUP)].any()
    assert np.abs(z[int(af.Z_WARMUP) : 80]).max() < 4.0
    assert z[-2] > 15.0 and abs(z[-1]) < 2.0  # a 1 GB pdf is odd, a 500 MB mp4 is not


def test_latency_residual_allows_for_the_file_size() -> None:
    rng = np.random.default_rng(9)
    sizes = np.exp(rng.uniform(9.0, 19.0, 60))
    events = [one_event(T0 + 60 * i, file_size=int(s), api_latency_ms=float(20 + s / 5e4)) for i, s in enumerate(sizes)]
    events += [
        one_event(T0 + 9000, file_size=10**8, api_latency_ms=20 + 1e8 / 5e4),  # big, and as slow as its size
        one_event(T0 + 9060, file_size=10**4, api_latency_ms=400.0),  # small, but 20x slower
    ]
    z = features(events)["user_latency_residual_zscore"]
    assert abs(z[-2]) < 3.0 and z[-1] > 5.0


def test_concurrency_zscore_and_latency_drift() -> None:
    events = [one_event(D0 + 10 * HOUR + 60 * i, concurrency=3, api_latency_ms=20.0) for i in range(30)]
    events += [one_event(D0 + 10 * HOUR + 1800 + 60 * i, concurrency=30, api_latency_ms=2000.0) for i in range(10)]
    f = features(events)
    zc, drift, zl = f["concurrency_zscore"], f["latency_drift"], f["user_latency_residual_zscore"]
    assert np.abs(zc[:30]).max() < 1e-6 and zc[30] > 10.0
    expected = [0.0]
    for z in zl[:-1]:
        expected.append(expected[-1] + af.DRIFT_ALPHA * (min(max(z, -af.DRIFT_CLIP), af.DRIFT_CLIP) - expected[-1]))
    np.testing.assert_allclose(drift, expected, rtol=1e-5, atol=1e-6)
    assert drift[-1] > 1.0 > 0.0 == np.abs(drift[:30]).max()


def test_user_recency_rates_and_namespace_entropy() -> None:
    gaps = [0.0, 60.0, 3600.0, 0.0, 40 * DAY]  # the last gap is longer than MAX_GAP
    times = np.cumsum(gaps) + D0
    namespaces = ["a", "b", "a", "c", "a"]
    other = one_event(D0 + 30.0, user="v", namespace="a")  # another user in namespace "a"
    events = [one_event(t, namespace=n) for t, n in zip(times, namespaces, strict=True)]
    events.insert(1, other)
    f = features(events)
    mine = [0, 2, 3, 4, 5]
    since = [af.MAX_GAP, 60.0, 3600.0, 0.0, af.MAX_GAP]
    np.testing.assert_allclose(f["log_seconds_since_user_last"][mine], np.log1p(since), rtol=1e-6)
    assert f["log_seconds_since_user_last"][1] == np.float32(math.log1p(af.MAX_GAP))  # "v"'s first event
    c, rate = 0.0, []
    for gap in since:
        c = c * math.exp(-gap / DAY) if rate else 0.0
        rate.append(c / 24.0)
        c += 1.0
    np.testing.assert_allclose(f["user_rate_per_hour"][mine], rate, rtol=1e-6, atol=1e-12)
    # namespace "a": events at 0 (u), 30 (v), 3660 (u), then after 40 days; the rate is over all users
    e = math.exp
    ns_rate = [0.0, 1.0 * e(-30 / HOUR), 0.0, (1 + e(-30 / HOUR)) * e(-3630 / HOUR), 0.0]
    ns_rate.append((ns_rate[3] + 1.0) * e(-af.MAX_GAP / HOUR))
    np.testing.assert_allclose(f["namespace_rate_per_hour"], ns_rate, rtol=1e-6, atol=1e-12)
    # the user's namespace distribution before each event, each earlier event weighted exp(-age / 7 days); after
    # the 40-day gap (capped at MAX_GAP) all weights decay alike, so the shares stay those of the fourth event's
    buckets = {n: streaming._fmix64_py(af.fnv1a64(af.encode_strings([n], af.KEY_WIDTH))[0].item()) >> 60 for n in "abc"}
    assert len(set(buckets.values())) == 3, buckets  # the test's namespaces do not share a bucket

    def h(k: int) -> float:  # entropy over the namespaces of the first k events (a common decay keeps the shares)
        weights: dict[str, float] = {}
        for j in range(k):
            weights[namespaces[j]] = weights.get(namespaces[j], 0.0) + math.exp(-(times[k - 1] - times[j]) / af.NS_TAU)
        p = np.array(list(weights.values())) / sum(weights.values())
        return float(-(p * np.log2(p)).sum())

    want = [0.0, 0.0, 1.0, h(3), h(4)]
    assert abs(want[3] - 0.918) < 1e-3 and abs(want[4] - 1.5) < 1e-3
    np.testing.assert_allclose(f["user_namespace_entropy"][mine], want, rtol=1e-5, atol=1e-7)
    assert f["user_namespace_entropy"][1] == 0.0


def test_hash_features_count_other_users() -> None:
    h = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    events = [one_event(T0 + 60 * i, user=u, content_hash=h) for i, u in enumerate(["a", "b", "a", "c", "d"])]
    events.append(one_event(T0 + 400, user="e", content_hash=h[::-1]))
    f = features(events)
    d = math.exp(-60 / af.HASH_TAU)
    # a; b (a before); a again (b: one other); c (a, b); d (a, b, c: "a" came back after b, so counted twice)
    want = [0.0, d, (1 + d) * d - 1, (1 + d) * d * d, ((1 + d) * d * d + 1) * d, 0.0]
    np.testing.assert_allclose(f["hash_other_users"], want, rtol=1e-6)
    unseen = math.log1p(af.MAX_GAP)
    np.testing.assert_allclose(f["log_seconds_since_hash_seen"], [unseen] + [math.log1p(60)] * 4 + [unseen], rtol=1e-6)


def test_state_memory_is_bounded_and_evicted_users_start_afresh() -> None:
    state = af.new_state(4)  # one set of four slots
    nbytes = state.nbytes
    users = [f"user{i}" for i in range(5)]
    ev = stack([one_event(T0 + 10 * i, user=users[i % 5]) for i in range(15)])
    x = af.extract(ev, state, backend="cpu")
    assert state.nbytes == nbytes and np.count_nonzero(state.user_keys) == 4
    # five users cycling through four slots: each user is evicted before it comes back
    np.testing.assert_array_equal(x[:, af.C_LAST_HOUR], 0.0)
    assert af.new_state().nbytes < 54 * 2**20 and af.new_state(8192).nbytes < 7 * 2**20


def test_bad_input_is_refused() -> None:
    ev = random_events(10)
    with pytest.raises(ValueError, match="finite"):
        af.extract(ev | {"timestamp": np.full(10, np.nan)}, af.new_state(4))
    with pytest.raises(ValueError, match="same length"):
        af.extract(ev | {"file_size": np.ones(9, np.int64)}, af.new_state(4))
    with pytest.raises(ValueError, match="power of two"):
        af.new_state(100)
    with pytest.raises(ValueError, match="backend"):
        af.extract(ev, af.new_state(4), backend="tpu")


def test_empty_batch() -> None:
    ev = random_events(0)
    state = af.new_state(4)
    assert af.extract(ev, state).shape == (0, len(af.FEATURE_NAMES))
    assert not state.user_keys.any()


@pytest.mark.parametrize("module", ["kernels", "kernels.anomaly_features", "kernels.streaming", "kernels._cuda"])
def test_all_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    assert all(hasattr(mod, name) for name in mod.__all__)


# --- CUDA ----------------------------------------------------------------------------------------------------

_SIMULATED = """
import sys
import numpy as np
from kernels import _cuda, anomaly_features as af
with np.load(sys.argv[1]) as z:
    enc = af.EncodedEvents(*(z[name] for name in af.EncodedEvents._fields))
np.save(sys.argv[2], af.stateless_features(enc, backend="cuda"))  # every stateless column on the GPU
"""


def test_cuda_stateless_kernel_matches_cpu_in_the_simulator(tmp_path: Path) -> None:
    enc = af.encode_events(random_events(300, seed=9))
    np.savez(tmp_path / "enc.npz", **enc._asdict())
    run_cuda_simulated(_SIMULATED, str(tmp_path / "enc.npz"), str(tmp_path / "out.npy"))
    np.testing.assert_allclose(
        np.load(tmp_path / "out.npy"), af.stateless_features(enc, backend="cpu"), rtol=1e-6, atol=1e-6
    )


def test_cpu_work_does_not_import_numba_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    if "numba.cuda" in sys.modules or os.environ.get("NUMBA_ENABLE_CUDASIM"):
        pytest.skip("numba.cuda is already imported in this process")
    if ctypes.util.find_library("cuda") or os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine has a CUDA driver")
    monkeypatch.setattr(af, "CUDA_MIN_EVENTS", 0)  # "auto" considers the GPU for every batch
    monkeypatch.setattr(streaming, "CUDA_MIN_EVENTS", 0)
    _cuda.available.cache_clear()
    af.extract(random_events(50), af.new_state(64))
    streaming.score_series(np.arange(4), np.ones(4), streaming.new_series_state("zscore", 4))
    assert "numba.cuda" not in sys.modules


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda.available(), reason="needs a CUDA GPU")
def test_cuda_stateless_kernel_on_the_gpu() -> None:
    enc = af.encode_events(random_events(5000, seed=10))
    np.testing.assert_allclose(
        af.stateless_features(enc, backend="cuda"), af.stateless_features(enc, backend="cpu"), rtol=1e-5, atol=1e-5
    )
