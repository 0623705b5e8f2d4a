"""The synthetic event-stream generator: schema, determinism, labels, and what each anomaly recipe does."""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import pytest

from infer.tasks.anomaly import events as ev
from infer.tasks.anomaly.events import FIELDS, KINDS, VARIANTS, EventStream, generate, generate_split

FRIDAY_NOON = ev.DEFAULT_START + 4.5 * 86400.0  # so that short streams include a weekend
_HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(scope="module")
def stream() -> EventStream:
    return generate(20_000, 1)


@cache
def kind_stream(kind: str) -> EventStream:
    """10 % anomalies, all of ``kind``, over a weekend."""
    return generate(10_000, 3, n_users=200, anomaly_fraction=0.1, mix={kind: 1.0}, start=FRIDAY_NOON)


def _users(s: EventStream) -> np.ndarray:
    index = {name: i for i, name in enumerate(s.population.names)}
    return np.array([index[name] for name in s.events["user"]])


def _variant(s: EventStream, name: str) -> np.ndarray:
    mask = s.variant == VARIANTS.index(name) + 1
    assert mask.sum() >= 5, f"{name}: only {mask.sum()} events"
    return mask


def _user_median(s: EventStream, field: str) -> np.ndarray:
    """Each event's user's median of ``field`` over that user's normal events."""
    u, values = _users(s), s.events[field].astype(np.float64)
    med = np.array([np.median(values[(u == i) & (s.kind == 0)]) if ((u == i) & (s.kind == 0)).any() else np.nan
                    for i in range(s.population.n_users)])
    return med[u]


def _local_ratio(s: EventStream, mask: np.ndarray, values: np.ndarray) -> float:
    """Median over ``mask``'s episodes of (median of values in the episode / median of the 100 events around)."""
    ratios = []
    for e in np.unique(s.episode[mask]):
        idx = np.flatnonzero(s.episode == e)
        around = np.arange(max(idx[0] - 50, 0), min(idx[-1] + 51, s.n))
        ratios.append(np.median(values[idx]) / np.median(values[around[s.kind[around] == 0]]))
    return float(np.median(ratios))


def _hash_ok(h: str) -> bool:
    return bool(_HEX64.fullmatch(h)) and len(set(h)) >= 9  # random SHA-256 hex uses ~15 of 16 digits


def _usual(s: EventStream, field: str) -> np.ndarray:
    u, pop = _users(s), s.population
    sets = [pop.usual_namespaces(i) if field == "namespace" else pop.usual_types(i) for i in range(pop.n_users)]
    return np.array([value in sets[i] for value, i in zip(s.events[field], u, strict=True)])


def test_schema_dtypes_and_lengths(stream: EventStream) -> None:
    dtypes = {"timestamp": np.float64, "user": object, "namespace": object, "file_type": object,
              "content_hash": object, "file_size": np.int64, "hash_time_ms": np.float32,
              "api_latency_ms": np.float32, "concurrency": np.int32}
    assert tuple(stream.events) == FIELDS and set(dtypes) == set(FIELDS)
    for name, dtype in dtypes.items():
        assert stream.events[name].dtype == dtype and stream.events[name].shape == (20_000,), name
    assert stream.n == len(stream) == 20_000
    assert stream.kind.dtype == np.int8 and stream.is_anomaly.dtype == np.bool_
    assert set(np.unique(stream.kind)) <= set(range(len(KINDS) + 1))
    assert ((stream.kind == 0) == (stream.variant == 0)).all() and ((stream.kind == 0) == (stream.episode == -1)).all()
    for i, name in enumerate(VARIANTS):  # a variant always belongs to its kind
        assert (stream.kind[stream.variant == i + 1] == KINDS.index(name.split(".")[0]) + 1).all()
    assert all(isinstance(x, str) for x in stream.events["file_type"][:100])
    assert set(stream.events["file_type"]) <= set(ev.FILE_TYPES)
    assert set(stream.events["namespace"]) <= set(ev.NAMESPACES)
    assert (stream.events["file_size"] >= 1).all() and (stream.events["concurrency"] >= 1).all()
    assert (stream.events["hash_time_ms"] > 0).all() and (stream.events["api_latency_ms"] > 0).all()
    cols = stream.to_columns()
    assert set(cols) == {*FIELDS, "is_anomaly", "kind"} and cols["is_anomaly"].sum() == stream.is_anomaly.sum()


def test_sorted_within_span_and_seasonal(stream: EventStream) -> None:
    ts = stream.events["timestamp"]
    assert (np.diff(ts) >= 0).all() and stream.start <= ts[0] and ts[-1] < stream.end
    u, normal = _users(stream), stream.kind == 0
    human = normal & ~stream.population.service[u]
    busy = stream.population.activity(u[human], ts[human]) > 0.5
    assert busy.mean() > 0.8  # people work in their working hours...
    span_days = (stream.end - stream.start) / 86400.0
    assert 1.0 < span_days < 3.0  # ...and 300 users send 20k events in a couple of days


def test_deterministic_per_seed() -> None:
    a, b, c = generate(3000, 11), generate(3000, 11), generate(3000, 12)
    for name in FIELDS:
        np.testing.assert_array_equal(a.events[name], b.events[name])
    np.testing.assert_array_equal(a.kind, b.kind)
    np.testing.assert_array_equal(a.episode, b.episode)
    assert not np.array_equal(a.events["timestamp"], c.events["timestamp"])


def test_anomaly_fraction_and_every_kind(stream: EventStream) -> None:
    assert abs(stream.is_anomaly.mean() - 0.025) < 0.002
    assert set(np.unique(stream.kind)) == set(range(len(KINDS) + 1))
    other = generate(10_000, 2, anomaly_fraction=0.06)
    assert abs(other.is_anomaly.mean() - 0.06) < 0.003
    only = generate(5000, 2, anomaly_fraction=0.05, mix={"security": 2.0, "temporal": 1.0})
    assert set(np.unique(only.kind[only.is_anomaly])) == {KINDS.index("security") + 1, KINDS.index("temporal") + 1}
    assert not generate(2000, 2, anomaly_fraction=0.0).is_anomaly.any()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="mix"):
        generate(100, 0, mix={"bogus": 1.0})
    with pytest.raises(ValueError, match="mix"):
        generate(100, 0, mix={"content": 0.0})
    with pytest.raises(ValueError, match="anomaly_fraction"):
        generate(100, 0, anomaly_fraction=0.9)
    with pytest.raises(ValueError, match="n_events"):
        generate(0, 0)


def test_normal_hashes_are_valid_sha256_hex(stream: EventStream) -> None:
    hashes = stream.events["content_hash"][stream.kind == 0]
    assert all(_hash_ok(h) for h in hashes)
    assert len(set(hashes)) > 0.95 * hashes.shape[0]  # re-uploads and shared templates repeat a few


def test_statistical_outliers_leave_the_users_range() -> None:
    s = kind_stream("statistical")
    normal, types, log_size = s.kind == 0, s.events["file_type"], np.log(s.events["file_size"])
    z = np.zeros(s.n)  # z-score of log(size) among normal files of the same type
    for t in np.unique(types):
        same = types == t
        z[same] = (log_size[same] - log_size[same & normal].mean()) / log_size[same & normal].std()
    assert np.median(np.abs(z[_variant(s, "statistical.size")])) > 2.5 > 2.5 * np.median(np.abs(z[normal]))
    lat_ratio = s.events["api_latency_ms"] / _user_median(s, "api_latency_ms")
    assert np.nanmedian(lat_ratio[_variant(s, "statistical.latency")]) > 5.0
    assert np.mean(lat_ratio[normal] > 5.0) < 0.15  # big files and load tails: some normal calls are that slow too


def test_behavioural_bursts_and_sweeps_leave_the_users_habits() -> None:
    s = kind_stream("behavioural")
    usual_ns, u, ts = _usual(s, "namespace"), _users(s), s.events["timestamp"]
    order = np.lexsort((ts, u))
    gap = np.full(s.n, np.inf)
    same = u[order][1:] == u[order][:-1]
    gap[order[1:][same]] = np.diff(ts[order])[same]
    burst, sweep, human = _variant(s, "behavioural.burst"), _variant(s, "behavioural.sweep"), ~s.population.service[u]
    assert np.mean(gap[burst] < 30.0) > 0.8 > 0.3 > np.mean(gap[(s.kind == 0) & human] < 30.0)
    assert np.mean(~usual_ns[burst]) > 0.3 and np.mean(~usual_ns[sweep]) > 0.9
    assert np.mean(~usual_ns[s.kind == 0]) < 0.02


def test_temporal_anomalies_happen_when_the_user_never_works() -> None:
    s = kind_stream("temporal")
    u = _users(s)
    hour, dow = s.population.local_time(u, s.events["timestamp"])
    night, weekend = _variant(s, "temporal.night"), _variant(s, "temporal.weekend")
    human = (s.kind == 0) & ~s.population.service[u]
    assert np.mean(hour[night] < 6.0) > 0.9 > 0.05 > np.mean(hour[human] < 6.0)
    assert (dow[weekend] >= 5).all() and (s.population.weekend[u[weekend]] < 0.05).all()


def test_performance_episodes_degrade_latency_hashing_and_concurrency() -> None:
    s = kind_stream("performance")
    normal = s.kind == 0
    lat, conc = s.events["api_latency_ms"], s.events["concurrency"]
    ms_per_mb = s.events["hash_time_ms"] / (s.events["file_size"] / 1e6 + 0.05)
    degraded, slow, surge = (_variant(s, f"performance.{v}") for v in ("degradation", "slow_hash", "surge"))
    assert _local_ratio(s, degraded, lat) > 2.0 and _local_ratio(s, degraded, conc) > 1.5
    assert _local_ratio(s, slow, ms_per_mb) > 3.0 and np.median(ms_per_mb[slow]) > 3.0 * np.median(ms_per_mb[normal])
    assert _local_ratio(s, surge, conc) > 2.0
    episodes = np.unique(s.episode[degraded])  # an episode is a window of consecutive events
    assert all(np.ptp(np.flatnonzero(s.episode == e)) == (s.episode == e).sum() - 1 for e in episodes)


def test_content_anomalies_break_type_expectations() -> None:
    s = kind_stream("content")
    usual_type, types, size = _usual(s, "file_type"), s.events["file_type"], s.events["file_size"]
    assert not usual_type[_variant(s, "content.foreign_type")].any() and np.mean(~usual_type[s.kind == 0]) < 0.02
    exe = _variant(s, "content.executable")
    assert set(types[exe]) <= {"exe", "dll", "msi", "scr", "ps1", "bat", "vbs", "jar"}
    assert set(s.events["namespace"][exe]) <= {"finance", "hr", "legal", "marketing", "sales", "support", "shared"}
    assert not np.isin(types[s.kind == 0], ["exe", "dll", "msi", "scr", "ps1", "bat", "vbs", "jar"]).any()
    mismatch = _variant(s, "content.size_mismatch")
    big_text = np.isin(types, ["txt", "csv", "json", "yaml"]) & (size >= 5e8)
    tiny_media = np.isin(types, ["mp4", "mov", "wav", "psd", "jpg"]) & (size <= 4096)
    assert (big_text | tiny_media)[mismatch].all() and np.mean((big_text | tiny_media)[s.kind == 0]) < 0.001


def test_security_anomalies() -> None:
    s = kind_stream("security")
    u, hashes = _users(s), s.events["content_hash"]
    assert not any(_hash_ok(h) for h in hashes[_variant(s, "security.malformed_hash")])
    sensitive = _variant(s, "security.sensitive_access")
    assert np.isin(s.events["namespace"][sensitive], ev.SENSITIVE_NAMESPACES).all()
    granted = np.isin(s.population.ns_ids, [ev.NAMESPACES.index(n) for n in ev.SENSITIVE_NAMESPACES]).any(axis=1)
    assert not granted[u[sensitive]].any()
    reuse = _variant(s, "security.hash_reuse")
    users_per_hash = {h: len(set(u[hashes == h])) for h in set(hashes[reuse])}
    assert np.median(list(users_per_hash.values())) >= 8
    _, counts = np.unique(hashes[s.kind == 0], return_counts=True)
    assert np.percentile(counts, 99) <= 2


def test_split_is_held_out_in_time() -> None:
    split = generate_split(4000, 2000, 2000, seed=5)
    train, val, test = split.train, split.validation, split.test
    assert train.end <= val.start and val.end <= test.start
    assert train.events["timestamp"][-1] < val.events["timestamp"][0] <= val.events["timestamp"][-1]
    assert val.events["timestamp"][-1] < test.events["timestamp"][0]
    assert not train.is_anomaly.any() and val.is_anomaly.any() and test.is_anomaly.any()
    assert train.population is val.population is test.population
    assert not np.array_equal(val.events["content_hash"][:50], test.events["content_hash"][:50])
    drifted = generate_split(2000, 1000, 1000, seed=5, same_population=False, normal_train=False)
    assert drifted.train.is_anomaly.any() and drifted.train.population is not drifted.test.population
    np.testing.assert_array_equal(generate_split(4000, 2000, 2000, seed=5).test.events["file_size"],
                                  test.events["file_size"])


def test_slice_and_normal_only(stream: EventStream) -> None:
    part = stream.slice(100, 600)
    assert part.n == 500 and part.start == stream.events["timestamp"][100] and part.end > part.start
    np.testing.assert_array_equal(part.events["file_size"], stream.events["file_size"][100:600])
    head, tail = stream.slice(0, 10), stream.slice(stream.n - 10, stream.n)
    assert head.start == stream.start and tail.end == stream.end
    clean = stream.normal_only()
    assert clean.n == int((stream.kind == 0).sum()) and not clean.is_anomaly.any()
