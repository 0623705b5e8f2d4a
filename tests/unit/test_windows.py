"""Sliding-window figures (observability/windows.py), the fine latency histogram and the NVML gauges.

No sockets, no GPU, no sleeping: time comes from a hand-moved clock, NVML from a fake module.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infer.observability import gpu as gpu_mod
from infer.observability import windows as windows_mod
from infer.observability.gpu import RETRY_S, GpuProbe
from infer.observability.metrics import (
    FINE_LATENCY_BOUNDS,
    LATENCY_BUCKETS,
    Histogram,
    LatencyHistogram,
    Metrics,
    VersionMetrics,
)
from infer.observability.windows import Windows, rss_bytes

STEP = 1.12746  # the widest ratio between successive fine bounds: the percentiles' resolution


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Rig:
    def __init__(self, **kw: Any) -> None:
        self.metrics = Metrics()
        self.clock = Clock()
        self.cache: dict[tuple[str, str], tuple[int, int] | None] = {}
        kw.setdefault("cache_counts", lambda n, v: self.cache.get((n, v)))
        kw.setdefault("gpu", None)
        self.w = Windows(self.metrics, clock=self.clock, wall=lambda: self.clock.t + 1.7e9, **kw)

    def m(self, name: str = "m", version: str = "1") -> VersionMetrics:
        return self.metrics.version(name, version)

    def run(self, seconds: float, per_step: int = 0, latency_s: float = 0.001, name: str = "m") -> None:
        """``per_step`` successes of ``latency_s`` each 5 s step, sampling after each step."""
        for _ in range(round(seconds / 5.0)):
            m = self.m(name)
            for _ in range(per_step):
                m.request_duration.observe(latency_s)
                m.success += 1
            self.clock.t += 5.0
            self.w.sample()


def _observe(m: VersionMetrics, values: np.ndarray) -> None:
    for v in values.tolist():
        m.request_duration.observe(v)
        m.success += 1


# ---- the histogram ---------------------------------------------------------------------------


def test_fine_bounds_span_10us_to_100s_and_hold_every_exported_bound() -> None:
    b = np.asarray(FINE_LATENCY_BOUNDS)
    assert len(b) == 141 and b[0] == pytest.approx(1e-5) and b[-1] == pytest.approx(100.0)
    ratios = b[1:] / b[:-1]
    assert ratios.min() > 1.11 and ratios.max() < STEP + 1e-4
    assert set(LATENCY_BUCKETS) <= set(FINE_LATENCY_BOUNDS)


def test_the_exported_histogram_is_what_the_coarse_one_was() -> None:
    rng = np.random.default_rng(3)
    values = [*(10 ** rng.uniform(-6, 2.5, 5000)).tolist(), *LATENCY_BUCKETS, 0.0, 1e9]
    fine, coarse = LatencyHistogram(), Histogram(LATENCY_BUCKETS)
    for v in values:
        fine.observe(v)
        coarse.observe(v)
    assert fine.cumulative() == coarse.cumulative()
    v = np.asarray(values)
    assert coarse.cumulative() == [*((repr(b), float((v <= b).sum())) for b in LATENCY_BUCKETS), ("+Inf", len(v))]
    assert fine.sum == pytest.approx(coarse.sum)
    assert len(fine.counts) == len(FINE_LATENCY_BOUNDS) + 1


def test_the_prometheus_latency_buckets_keep_their_names() -> None:
    metrics = Metrics()
    metrics.version("m", "1").request_duration.observe(0.003)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    buckets = [s for s in families["infer_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets] == [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]
    assert [s.value for s in buckets] == [0.0] * 5 + [1.0] * 11


# ---- percentiles -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_match_numpy_within_one_bucket(seed: int) -> None:
    r = Rig()
    r.w.sample()
    values = np.random.default_rng(seed).lognormal(np.log(0.004), 1.0, 3000)
    _observe(r.m(), values)
    r.clock.t += 60.0
    r.w.sample()
    f = r.w.figures("m", "1", 60.0)
    assert f is not None and f.span_s == 60.0 and f.requests == 3000
    for q, got in ((50, f.p50_s), (95, f.p95_s), (99, f.p99_s)):
        want = float(np.percentile(values, q))
        assert got is not None and 1 / STEP <= got / want <= STEP, (q, got, want)


def test_one_value_reads_back_inside_its_bucket() -> None:
    r = Rig()
    r.w.sample()
    _observe(r.m(), np.full(100, 0.02))
    r.clock.t += 5.0
    r.w.sample()
    f = r.w.figures("m", "1", 60.0)
    assert f is not None
    i = int(np.searchsorted(FINE_LATENCY_BOUNDS, 0.02))
    lo, hi = FINE_LATENCY_BOUNDS[i - 1], FINE_LATENCY_BOUNDS[i]
    assert f.p50_s == pytest.approx(lo * (hi / lo) ** 0.5)
    assert f.p99_s == pytest.approx(lo * (hi / lo) ** 0.99)


def test_under_and_overflow_buckets() -> None:
    r = Rig()
    r.w.sample()
    _observe(r.m(), np.array([1e-7] * 10 + [500.0] * 10))
    r.clock.t += 5.0
    r.w.sample()
    f = r.w.figures("m", "1", 60.0)
    assert f is not None and f.p50_s is not None and f.p99_s is not None
    assert 0 < f.p50_s <= 1e-5  # linear inside (0, 10 us]
    assert f.p99_s == 100.0  # above the top bound: the top bound


# ---- windows over the history ------------------------------------------------------------------


def test_windows_take_the_snapshot_at_or_before_their_start() -> None:
    r = Rig()
    r.w.sample()
    r.run(300, per_step=10, latency_s=0.001)  # 2 req/s at 1 ms for 5 minutes
    r.run(300, per_step=100, latency_s=0.010)  # then 20 req/s at 10 ms
    one, five, hour = (r.w.figures("m", "1", s) for s in (60.0, 300.0, 3600.0))
    assert one is not None and five is not None and hour is not None
    assert (one.span_s, five.span_s, hour.span_s) == (60.0, 300.0, 600.0)  # the hour: the history there is
    assert one.rps == pytest.approx(20.0) and five.rps == pytest.approx(20.0)
    assert hour.rps == pytest.approx(11.0) and hour.requests == 600 + 6000
    assert one.p50_s is not None and 0.010 / STEP <= one.p50_s <= 0.010
    assert hour.p50_s is not None and 0.010 / STEP <= hour.p50_s <= 0.010  # 10/11 of the requests took 10 ms
    r.clock.t += 2.0  # between samples: the newest snapshot still ends the window
    between = r.w.figures("m", "1", 60.0)
    assert between is not None and between.span_s == 60.0


def test_a_window_between_samples_reaches_back_to_the_earlier_snapshot() -> None:
    r = Rig()
    r.w.sample()
    r.run(60, per_step=5)
    f = r.w.figures("m", "1", 12.0)  # snapshots every 5 s: the one at or before now - 12 s is 15 s back
    assert f is not None and f.span_s == 15.0 and f.rps == pytest.approx(1.0)


def test_a_version_that_appears_between_samples_counts_its_first_requests() -> None:
    r = Rig()
    r.m("old")
    r.w.sample()  # the first sample: "old" starts from the counts it has
    r.clock.t += 5.0
    r.w.sample()
    _observe(r.m("new"), np.full(10, 0.001))
    r.clock.t += 5.0
    r.w.sample()
    f = r.w.figures("new", "1", 60.0)
    assert f is not None and f.requests == 10 and f.span_s == 5.0


def test_no_figures_before_two_samples_or_for_unknown_versions() -> None:
    r = Rig()
    r.m()
    assert r.w.figures("m", "1", 60.0) is None
    r.w.sample()
    assert r.w.figures("m", "1", 60.0) is None and r.w.figures("x", "1", 60.0) is None
    src = r.w.latency_source("m", "1")
    assert set(src["windows"]) == {"1m", "5m", "1h"} and src["series"] == []
    assert all(v is None for v in src["windows"]["1m"].values())


def test_an_idle_version_has_rates_of_zero_and_no_ratios() -> None:
    r = Rig()
    r.m()
    r.w.sample()
    r.run(30)
    f = r.w.figures("m", "1", 60.0)
    assert f is not None and f.span_s == 30.0 and (f.rps, f.rows_per_s, f.requests) == (0.0, 0.0, 0)
    assert (f.p50_s, f.error_rate, f.batch_mean, f.batch_efficiency, f.cache_hit_ratio) == (None,) * 5


def test_removed_versions_are_dropped() -> None:
    r = Rig()
    r.m("a")
    r.m("b")
    r.w.sample()
    r.run(10, per_step=1, name="a")
    assert set(r.w.keys()) == {("a", "1"), ("b", "1")}
    del r.metrics.children[("a", "1")]
    r.clock.t += 5.0
    r.w.sample()
    assert r.w.keys() == [("b", "1")] and r.w.figures("a", "1", 60.0) is None
    assert r.w.series("a", "1") == [] and r.w.batch_sizes("a", "1") == []


def test_the_ring_keeps_one_hour_and_shares_idle_snapshots() -> None:
    r = Rig()
    r.m()
    r.w.sample()
    r.run(2 * 3600)
    ring = r.w._rings[("m", "1")]
    assert len(ring.times) == 3600 // 5 + 1 and ring.times[-1] - ring.times[0] == 3600.0
    assert len({id(s) for s in ring.snaps}) == 1
    f = r.w.figures("m", "1", 3600.0)
    assert f is not None and f.span_s == 3600.0


def test_sampling_faster_than_the_step_is_capped() -> None:
    r = Rig(step_s=5.0, keep_s=60.0)
    r.m()
    for _ in range(1000):
        r.clock.t += 0.01
        r.w.sample()
    assert len(r.w._rings[("m", "1")].times) == int(2 * 60 / 5) + 8


def test_bad_steps_are_refused() -> None:
    with pytest.raises(ValueError):
        Windows(Metrics(), step_s=0.0)
    with pytest.raises(ValueError):
        Windows(Metrics(), step_s=10.0, keep_s=5.0)


# ---- rates and ratios ------------------------------------------------------------------------


def test_rates_and_the_error_ratio() -> None:
    r = Rig()
    m = r.m()
    r.w.sample()
    for _ in range(30):
        m.request_duration.observe(0.002)
        m.success += 1
    for _ in range(6):
        m.failure("UNAVAILABLE")
    for _ in range(4):
        m.failure("DEADLINE_EXCEEDED")
    for _ in range(10):
        m.batch(8, 0.001)
    r.clock.t += 10.0
    r.w.sample()
    f = r.w.figures("m", "1", 60.0)
    assert f is not None
    assert f.requests == 40 and f.rps == pytest.approx(4.0) and f.rows_per_s == pytest.approx(8.0)
    assert f.error_rate == pytest.approx(10 / 40)
    assert f.batch_mean == pytest.approx(8.0) and f.batch_efficiency is None  # max_batch_size unknown


def test_batch_efficiency_is_rows_per_execution_over_max_batch_size() -> None:
    r = Rig()
    m = r.m()
    m.max_batch_size = 8
    r.w.sample()
    for size in (8, 4, 6, 6):
        m.batch(size, 0.001)
    r.clock.t += 5.0
    r.w.sample()
    f = r.w.figures("m", "1", 60.0)
    assert f is not None and f.batch_mean == 6.0 and f.batch_efficiency == pytest.approx(0.75)


def test_cache_ratio_is_none_without_traffic_and_counts_hits_as_requests() -> None:
    r = Rig()
    m = r.m()
    r.cache[("m", "1")] = (0, 0)
    r.w.sample()
    r.clock.t += 5.0
    r.w.sample()
    f = r.w.figures("m", "1", 60.0)
    assert f is not None and f.cache_hit_ratio is None
    r.cache[("m", "1")] = (30, 10)
    for _ in range(10):  # the misses went to the model
        m.request_duration.observe(0.005)
        m.success += 1
    r.clock.t += 5.0
    r.w.sample()
    f = r.w.figures("m", "1", 5.0)
    assert f is not None and f.cache_hit_ratio == pytest.approx(0.75)
    assert f.requests == 40 and f.rps == pytest.approx(8.0) and f.error_rate == 0.0


def test_a_cache_source_that_cannot_answer_or_restarts_adds_nothing_false() -> None:
    r = Rig()
    r.m()
    r.cache[("m", "1")] = (10, 10)
    r.w.sample()
    r.cache[("m", "1")] = None  # the version is briefly not found: the previous answer holds
    r.clock.t += 5.0
    r.w.sample()
    f = r.w.figures("m", "1", 5.0)
    assert f is not None and f.cache_hit_ratio is None
    r.cache[("m", "1")] = (14, 10)
    r.clock.t += 5.0
    r.w.sample()
    f = r.w.figures("m", "1", 5.0)
    assert f is not None and f.cache_hit_ratio == 1.0 and f.requests == 4
    r.cache[("m", "1")] = (2, 2)  # reloaded: its counts start again from 0
    r.clock.t += 5.0
    r.w.sample()
    f = r.w.figures("m", "1", 5.0)
    assert f is not None and f.cache_hit_ratio == 0.5 and f.requests == 2


def test_a_cache_source_that_raises_does_not_stop_sampling() -> None:
    def boom(name: str, version: str) -> tuple[int, int]:
        raise KeyError(name)

    r = Rig(cache_counts=boom)
    r.m()
    r.run(10, per_step=1)
    f = r.w.figures("m", "1", 60.0)
    assert f is not None and f.cache_hit_ratio is None and f.requests == 1


# ---- the dashboard's sources --------------------------------------------------------------------


def test_series_has_one_point_per_interval_with_unix_times() -> None:
    r = Rig()
    r.w.sample()
    r.run(300, per_step=10, latency_s=0.001)
    r.run(300, per_step=50, latency_s=0.050)
    s = r.w.series("m", "1", span_s=900.0, points=90)
    assert len(s) == 60  # 600 s of history at 10 s a point
    assert set(s[0]) == {"t", "p50_ms", "p95_ms", "p99_ms", "rps", "error_rate"}
    assert [p["t"] for p in s] == sorted(p["t"] for p in s) and s[-1]["t"] == r.clock.t + 1.7e9
    assert s[-1]["t"] - s[0]["t"] == 590.0
    assert s[0]["rps"] == pytest.approx(2.0) and s[-1]["rps"] == pytest.approx(10.0)
    assert 1.0 / STEP <= s[0]["p50_ms"] <= 1.0 and 50.0 / STEP <= s[-1]["p99_ms"] <= 50.0
    assert s[0]["error_rate"] == 0.0


def test_latency_source_has_the_contracts_shape() -> None:
    r = Rig()
    r.m().max_batch_size = 4
    r.w.sample()
    r.run(120, per_step=5)
    src = r.w.latency_source("m", "1")
    assert set(src) == {"windows", "series"} and set(src["windows"]) == {"1m", "5m", "1h"}
    keys = {"p50_ms", "p95_ms", "p99_ms", "rps", "rows_per_s", "error_rate", "batch_mean", "batch_efficiency",
            "cache_hit_ratio"}
    assert all(keys <= set(w) for w in src["windows"].values())
    assert src["windows"]["1m"]["rps"] == pytest.approx(1.0) and src["windows"]["1h"]["span_s"] == 120.0
    assert 1.0 / STEP <= src["windows"]["5m"]["p50_ms"] <= 1.0
    assert len(src["series"]) == 12


def test_batch_sizes_are_non_cumulative_up_to_max_batch_size() -> None:
    r = Rig()
    m = r.m()
    for size in (1, 3, 3, 8, 8, 8):
        m.batch(size, 0.001)
    assert r.w.batch_sizes("m", "1") == [[1, 1], [2, 0], [4, 2], [8, 3], [16, 0], [32, 0], [64, 0], [128, 0],
                                         [256, 0], [512, 0], [1024, 0]]
    m.max_batch_size = 6
    assert r.w.batch_sizes("m", "1") == [[1, 1], [2, 0], [4, 2], [8, 3]]
    m.max_batch_size = 4096
    m.batch(3000, 0.001)
    assert r.w.batch_sizes("m", "1")[-2:] == [[1024, 0], [4096, 1]]


# ---- the Prometheus gauges ---------------------------------------------------------------------


def _families(metrics: Metrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}


def _fake_gpu() -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    g = GaugeMetricFamily("infer_gpu_utilization_ratio", "x", labels=["gpu"])
    g.add_metric(["0"], 0.5)
    yield g


def test_the_collector_exports_the_contracts_gauges() -> None:
    r = Rig(gpu=_fake_gpu)
    a, b = r.m("a"), r.m("b")
    a.max_batch_size, a.memory_bytes, b.memory_bytes = 8, 123_456, 7
    r.cache[("a", "1")] = (0, 0)
    r.w.sample()
    _observe(a, np.full(20, 0.003))
    a.failure("INTERNAL")
    for _ in range(5):
        a.batch(4, 0.001)
    r.cache[("a", "1")] = (3, 1)
    r.clock.t += 10.0
    r.w.sample()
    fams = _families(r.metrics)
    lat = fams["infer_window_latency_seconds"].samples
    assert {(s.labels["model"], s.labels["window"], s.labels["quantile"]) for s in lat} == {
        ("a", w, q) for w in ("1m", "5m", "1h") for q in ("0.5", "0.95", "0.99")}
    assert all(0.003 / STEP <= s.value <= 0.003 * STEP for s in lat)

    def by(name: str) -> dict[tuple[str, str], float]:
        return {(s.labels["model"], s.labels["window"]): s.value for s in fams[name].samples}

    rps = by("infer_window_requests_per_second")
    assert rps[("a", "1m")] == pytest.approx((20 + 1 + 3) / 10) and rps[("b", "1h")] == 0.0
    assert by("infer_window_rows_per_second")[("a", "5m")] == pytest.approx(2.0)
    assert by("infer_window_error_ratio") == {("a", w): pytest.approx(1 / 24) for w in ("1m", "5m", "1h")}
    assert by("infer_window_batch_efficiency") == {("a", w): 0.5 for w in ("1m", "5m", "1h")}
    assert by("infer_window_cache_hit_ratio") == {("a", w): 0.75 for w in ("1m", "5m", "1h")}
    memory = {s.labels["model"]: s.value for s in fams["infer_model_memory_bytes"].samples}
    assert memory == {"a": 123_456.0, "b": 7.0}
    assert fams["infer_gpu_utilization_ratio"].samples[0].labels == {"gpu": "0"}
    assert "infer_request_success" in fams  # the existing collector is still there


def test_unloaded_versions_leave_the_memory_gauge() -> None:
    r = Rig()
    r.m().memory_bytes = 10
    r.metrics.set_state("m", "1", "UNLOADED")
    assert _families(r.metrics)["infer_model_memory_bytes"].samples == []


def test_the_default_collector_survives_a_machine_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    monkeypatch.setattr(gpu_mod, "_PROBE", GpuProbe())
    metrics = Metrics()
    Windows(metrics)
    assert "infer_gpu_utilization_ratio" not in _families(metrics)


# ---- NVML -----------------------------------------------------------------------------------------


class FakeNVMLError(Exception):
    pass


def _fake_nvml(devices: list[tuple[int, int]], calls: dict[str, int]) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")

    def count(name: str) -> None:
        calls[name] = calls.get(name, 0) + 1

    def init() -> None:
        count("init")
        if calls.get("fail_init"):
            raise FakeNVMLError("Driver Not Loaded")

    def handle(i: int) -> int:
        if calls.get("fail_query"):
            raise FakeNVMLError("GPU is lost")
        return i

    nvml.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: count("shutdown")  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUtilizationRates = (  # type: ignore[attr-defined]
        lambda h: types.SimpleNamespace(gpu=devices[h][0], memory=0))
    nvml.nvmlDeviceGetMemoryInfo = (  # type: ignore[attr-defined]
        lambda h: types.SimpleNamespace(used=devices[h][1], total=80 << 30, free=0))
    return nvml


def _values(probe: GpuProbe) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for fam in probe.families():
        for s in fam.samples:
            out.setdefault(s.name, {})[s.labels["gpu"]] = s.value
    return out


def test_gpu_families_read_every_device(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {}
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([(37, 1 << 30), (100, 5)], calls))
    probe = GpuProbe(clock=Clock())
    assert _values(probe) == {"infer_gpu_utilization_ratio": {"0": 0.37, "1": 1.0},
                              "infer_gpu_memory_used_bytes": {"0": float(1 << 30), "1": 5.0}}
    _values(probe)
    assert calls["init"] == 1  # started once, read at every scrape


def test_no_device_yields_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([], {}))
    assert _values(GpuProbe(clock=Clock())) == {}


def test_without_the_package_the_import_is_tried_once(monkeypatch: pytest.MonkeyPatch) -> None:
    tries: list[str] = []

    def no_module(name: str) -> types.ModuleType:
        tries.append(name)
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", no_module)
    probe = GpuProbe(clock=Clock())
    for _ in range(5):
        assert _values(probe) == {}
    assert tries == ["pynvml"]


def test_a_failed_start_is_retried_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {"fail_init": 1}
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([(50, 1)], calls))
    clock = Clock()
    probe = GpuProbe(clock=clock)
    for _ in range(10):
        assert _values(probe) == {}
        clock.t += 5.0
    assert calls["init"] == 1
    clock.t += RETRY_S
    calls["fail_init"] = 0
    assert _values(probe)["infer_gpu_utilization_ratio"] == {"0": 0.5}
    assert calls["init"] == 2


def test_a_lost_device_is_shut_down_and_retried_later(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {}
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([(50, 1)], calls))
    clock = Clock()
    probe = GpuProbe(clock=clock)
    assert _values(probe) != {}
    calls["fail_query"] = 1
    assert _values(probe) == {} and calls["shutdown"] == 1
    calls["fail_query"] = 0
    clock.t += 30.0
    assert _values(probe) == {} and calls["init"] == 1
    clock.t += RETRY_S
    assert _values(probe) != {} and calls["init"] == 2


# ---- memory ------------------------------------------------------------------------------------


def test_rss_grows_with_what_the_process_touches() -> None:
    before = rss_bytes()
    block = np.ones(64 << 17)  # 64 MiB written
    grown = rss_bytes() - before
    assert before > 0 and grown >= 48 << 20
    del block


def test_without_proc_rss_is_the_peak_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    now = rss_bytes()

    def no_proc(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no /proc")

    monkeypatch.setattr(windows_mod, "open", no_proc, raising=False)  # the module's open, not the builtin
    peak = rss_bytes()
    assert now <= peak < 1024 * now  # KiB read as bytes (or the reverse) would be off by 1024
