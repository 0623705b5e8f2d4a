"""Sliding-window figures per model version: latency percentiles, rates, error ratio, batching and cache.

The hot path only adds to cumulative counters (:class:`~infer.observability.metrics.VersionMetrics`, whose
request latency histogram has fine log-spaced buckets). Every ``step_s`` the owner calls :meth:`Windows.sample`
on the event loop, which copies each version's counters into a bounded ring of snapshots (``keep_s`` long).
A window's figures are the difference between the newest snapshot and the one at (or just before) ``window_s``
earlier, so any window up to ``keep_s`` costs one subtraction and a cumulative sum, at scrape time or when the
dashboard asks, never per request.

- latency percentiles cover the requests answered by the model (a response-cache hit never reaches it); they are
  interpolated in log space inside the fine buckets, so they are within one bucket (12%) of the exact figure;
- ``rps`` counts every request the version answered: successes, failures and response-cache hits;
- ``error_rate`` is failures over those same requests;
- ``batch_mean`` is rows per execution, ``batch_efficiency`` that over ``max_batch_size``;
- ``cache_hit_ratio`` is hits over lookups, None without cache traffic in the window.

A window longer than the history so far is answered over the history there is: ``span_s`` says how long. A
version that appears between two samples starts from zero counts at the earlier one, so its first requests count.
:func:`rss_bytes` is the process's resident memory, read before and after a load for ``infer_model_memory_bytes``.
"""

from __future__ import annotations

import resource
import sys
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from infer.observability.gpu import gpu_families
from infer.observability.metrics import FINE_LATENCY_BOUNDS, Metrics, VersionMetrics

__all__ = ["QUANTILES", "WINDOWS", "CacheCounts", "WindowFigures", "Windows", "rss_bytes"]

WINDOWS = (("1m", 60.0), ("5m", 300.0), ("1h", 3600.0))
QUANTILES = (0.5, 0.95, 0.99)
CacheCounts = Callable[[str, str], tuple[int, int] | None]  # cumulative (hits, misses); None: unknown now

# a snapshot: these counters, then the fine latency bucket counts
_SUCCESS, _FAILURES, _ROWS, _EXECUTIONS, _HITS, _MISSES = range(6)
_HEAD = 6
_BOUNDS = np.asarray(FINE_LATENCY_BOUNDS)
_LOWER = np.concatenate(([0.0], _BOUNDS))  # fine bucket i holds (_LOWER[i], _UPPER[i]]
_UPPER = np.concatenate((_BOUNDS, [_BOUNDS[-1]]))  # the overflow bucket reads as the top bound
_PAGE = resource.getpagesize()
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB elsewhere
Counts = npt.NDArray[np.int64]


def rss_bytes() -> int:
    """Resident memory of this process now (Linux ``/proc/self/statm``; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * _MAXRSS_UNIT


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """One version's figures over one window; None where the window holds nothing to say it."""

    span_s: float  # the time the figures cover (shorter than asked while the history is shorter)
    requests: int  # successes + failures + response-cache hits
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    rps: float
    rows_per_s: float
    error_rate: float | None
    batch_mean: float | None
    batch_efficiency: float | None
    cache_hit_ratio: float | None

    def as_dict(self) -> dict[str, Any]:
        """The dashboard's window dict (milliseconds)."""
        return {"p50_ms": _ms(self.p50_s), "p95_ms": _ms(self.p95_s), "p99_ms": _ms(self.p99_s), "rps": self.rps,
                "rows_per_s": self.rows_per_s, "error_rate": self.error_rate, "batch_mean": self.batch_mean,
                "batch_efficiency": self.batch_efficiency, "cache_hit_ratio": self.cache_hit_ratio,
                "span_s": self.span_s}


_EMPTY_WINDOW = {k: None for k in ("p50_ms", "p95_ms", "p99_ms", "rps", "rows_per_s", "error_rate", "batch_mean",
                                   "batch_efficiency", "cache_hit_ratio", "span_s")}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _none(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _quantiles(counts: Counts, qs: Sequence[float]) -> npt.NDArray[np.float64]:
    """Per row of fine bucket counts, the quantiles ``qs`` (seconds; NaN for an empty row), interpolated
    geometrically inside the bucket holding the rank (linearly in the first, which starts at 0)."""
    cum = np.cumsum(counts, axis=1)
    ranks = cum[:, -1:] * np.asarray(qs, dtype=np.float64)[None, :]
    # the first bucket whose cumulative count reaches the rank (never past the last: a rank is at most the total)
    idx = (cum[:, :, None] < ranks[:, None, :]).sum(axis=1)
    rows = np.arange(counts.shape[0])[:, None]
    in_bucket = counts[rows, idx]
    frac = np.divide(ranks - (cum[rows, idx] - in_bucket), in_bucket, out=np.zeros(ranks.shape),
                     where=in_bucket > 0)
    lo, hi = _LOWER[idx], _UPPER[idx]
    lo_or_1 = np.where(lo > 0, lo, 1.0)
    out = np.where(lo > 0, lo_or_1 * (hi / lo_or_1) ** frac, hi * frac)
    return np.where(cum[:, -1:] > 0, out, np.nan)


def _figures(diff: Counts, spans: npt.NDArray[np.float64], max_batch_size: int) -> list[WindowFigures]:
    """Figures for each row of counter differences over ``spans`` seconds."""
    diff = np.maximum(diff, 0)  # a counter that went back (a source that restarted) adds nothing
    q = _quantiles(diff[:, _HEAD:], QUANTILES)
    out = []
    for r in range(diff.shape[0]):
        d, span = diff[r], float(spans[r])
        requests = int(d[_SUCCESS] + d[_FAILURES] + d[_HITS])
        executions, rows, lookups = int(d[_EXECUTIONS]), int(d[_ROWS]), int(d[_HITS] + d[_MISSES])
        batch_mean = rows / executions if executions else None
        out.append(WindowFigures(
            span_s=span, requests=requests,
            p50_s=_none(q[r, 0]), p95_s=_none(q[r, 1]), p99_s=_none(q[r, 2]),
            rps=requests / span, rows_per_s=rows / span,
            error_rate=int(d[_FAILURES]) / requests if requests else None,
            batch_mean=batch_mean,
            batch_efficiency=batch_mean / max_batch_size if batch_mean is not None and max_batch_size else None,
            cache_hit_ratio=int(d[_HITS]) / lookups if lookups else None,
        ))
    return out


class _Ring:
    """One version's snapshots, oldest first, with monotonic and wall times."""

    __slots__ = ("cache_acc", "cache_raw", "snaps", "times", "walls")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.walls: list[float] = []
        self.snaps: list[Counts] = []
        self.cache_raw = (0, 0)  # the source's last answer
        self.cache_acc = (0, 0)  # hits and misses accumulated across the source's restarts

    def add(self, now: float, wall: float, snap: Counts, keep_s: float, cap: int) -> None:
        if self.snaps and np.array_equal(self.snaps[-1], snap):
            snap = self.snaps[-1]  # an idle version's snapshots share one array
        self.times.append(now)
        self.walls.append(wall)
        self.snaps.append(snap)
        drop = bisect_right(self.times, now - keep_s) - 1  # keep one snapshot at or before now - keep_s
        drop = max(drop, len(self.times) - cap)
        if drop > 0:
            del self.times[:drop], self.walls[:drop], self.snaps[:drop]

    def count_cache(self, raw: tuple[int, int] | None) -> tuple[int, int]:
        if raw is not None:
            (h0, m0), (h1, m1) = self.cache_raw, raw
            dh = h1 - h0 if h1 >= h0 else h1  # went back: the source restarted from 0
            dm = m1 - m0 if m1 >= m0 else m1
            self.cache_acc = (self.cache_acc[0] + dh, self.cache_acc[1] + dm)
            self.cache_raw = raw
        return self.cache_acc


class Windows:
    """Sliding-window figures of every version in ``metrics.children``; see the module docstring.

    ``sample`` runs on the event loop every ``step_s``; ``clock`` orders the snapshots, ``wall`` stamps them
    (the dashboard's Unix times). ``cache_counts(name, version)`` gives a version's cumulative response cache
    (hits, misses), or None while it cannot say (the previous answer is kept). Registers a collector for the
    ``infer_window_*`` gauges, ``infer_model_memory_bytes`` and the GPU gauges on ``metrics.registry``.
    """

    def __init__(self, metrics: Metrics, *, step_s: float = 5.0, keep_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 cache_counts: CacheCounts | None = None,
                 gpu: Callable[[], Iterable[Metric]] | None = gpu_families) -> None:
        if step_s <= 0 or keep_s < step_s:
            raise ValueError("windows need step_s > 0 and keep_s >= step_s")
        self.metrics = metrics
        self.step_s = step_s
        self.keep_s = keep_s
        self._clock = clock
        self._wall = wall
        self._cache_counts = cache_counts
        self.gpu = gpu  # the GPU families added to each scrape (None: left out)
        self._cap = int(2 * keep_s / step_s) + 8  # bounds memory if sampled faster than step_s
        self._rings: dict[tuple[str, str], _Ring] = {}
        self._last: tuple[float, float] | None = None  # the last sample's times
        self._zero: Counts = np.zeros(_HEAD + len(FINE_LATENCY_BOUNDS) + 1, dtype=np.int64)
        self._memo: dict[tuple[Any, ...], Any] = {}  # answers until the next sample
        metrics.registry.register(_WindowCollector(self))

    # ---- sampling (event loop, every step_s) ------------------------------------------------

    def sample(self) -> None:
        now, wall = self._clock(), self._wall()
        children = self.metrics.children
        for key in [k for k in self._rings if k not in children]:
            del self._rings[key]
        for key, m in list(children.items()):
            ring = self._rings.get(key)
            if ring is None:
                ring = self._rings[key] = _Ring()
                if self._last is not None:  # absent at the last sample: its counts were zero then
                    ring.add(*self._last, self._zero, self.keep_s, self._cap)
            hits, misses = ring.count_cache(self._cache_source(*key))
            head = (m.success, sum(m.failures.values()), m.inference_count, m.execution_count, hits, misses)
            snap = np.array((*head, *m.request_duration.counts), dtype=np.int64)
            ring.add(now, wall, snap, self.keep_s, self._cap)
        self._last = (now, wall)
        self._memo.clear()

    def _cache_source(self, name: str, version: str) -> tuple[int, int] | None:
        if self._cache_counts is None:
            return None
        try:
            return self._cache_counts(name, version)
        except Exception:  # a version going away mid-lookup must not stop the sampling
            return None

    # ---- reading -----------------------------------------------------------------------------

    def figures(self, name: str, version: str, window_s: float) -> WindowFigures | None:
        """The last ``window_s`` of a version (less while the history is shorter); None before two samples."""
        last = self._memoized(("figures", name, version, window_s), self._intervals, name, version, window_s, 1)
        return last[0][1] if last else None

    def series(self, name: str, version: str, span_s: float = 900.0, points: int = 90) -> list[dict[str, Any]]:
        """``points`` consecutive intervals of ``span_s / points`` ending at the newest snapshot, oldest first
        (fewer while the history is shorter): ``t`` (Unix seconds at the interval's end), ``p50_ms``,
        ``p95_ms``, ``p99_ms``, ``rps``, ``error_rate``. The caller may keep the list but not change it."""
        result: list[dict[str, Any]] = self._memoized(("series", name, version, span_s, points), self._series,
                                                      name, version, span_s, points)
        return result

    def _memoized(self, key: tuple[Any, ...], compute: Callable[..., Any], *args: Any) -> Any:
        if key not in self._memo:
            self._memo[key] = compute(*args)
        return self._memo[key]

    def _series(self, name: str, version: str, span_s: float, points: int) -> list[dict[str, Any]]:
        return [{"t": t, "p50_ms": _ms(f.p50_s), "p95_ms": _ms(f.p95_s), "p99_ms": _ms(f.p99_s), "rps": f.rps,
                 "error_rate": f.error_rate} for t, f in self._intervals(name, version, span_s, points)]

    def _intervals(self, name: str, version: str, span_s: float, points: int) -> list[tuple[float, WindowFigures]]:
        """``(wall time at its end, figures)`` of ``points`` consecutive intervals of ``span_s / points`` ending at
        the newest snapshot, oldest first. Each runs from the snapshot at or before its start (the oldest if all
        are later) to the one at or before its end; intervals without two distinct snapshots are left out."""
        ring = self._rings.get((name, version))
        if ring is None or len(ring.times) < 2 or points < 1:
            return []
        times = np.asarray(ring.times)
        dt = span_s / points
        ends = times[-1] - dt * np.arange(points - 1, -1, -1)
        i_end = np.searchsorted(times, ends, side="right") - 1
        i_start = np.maximum(np.searchsorted(times, ends - dt, side="right") - 1, 0)
        pairs = sorted({(int(s), int(e)) for s, e in zip(i_start, i_end, strict=True) if e > s})
        if not pairs:
            return []
        diff = np.stack([ring.snaps[e] - ring.snaps[s] for s, e in pairs])
        spans = np.array([ring.times[e] - ring.times[s] for s, e in pairs])
        figs = _figures(diff, spans, self._max_batch(name, version))
        return [(ring.walls[e], f) for (_, e), f in zip(pairs, figs, strict=True)]

    def latency_source(self, name: str, version: str) -> dict[str, Any]:
        """The dashboard's ``latency`` source: the 1m, 5m and 1h windows and the last 15 minutes' series."""
        windows = {}
        for label, seconds in WINDOWS:
            f = self.figures(name, version, seconds)
            windows[label] = dict(_EMPTY_WINDOW) if f is None else f.as_dict()
        return {"windows": windows, "series": self.series(name, version)}

    def batch_sizes(self, name: str, version: str) -> list[list[int]]:
        """Executions by batch size since the version's metrics began: ``[[upper_bound, count], ...]``,
        non-cumulative, up to the bucket holding ``max_batch_size`` (all buckets when it is unknown)."""
        m = self.metrics.children.get((name, version))
        if m is None:
            return []
        counts, top = m.batch_size.counts, m.batch_size.bounds[-1]
        bounds = [*m.batch_size.bounds, m.max_batch_size if m.max_batch_size > top else 2 * top]
        rows = [[int(b), int(n)] for b, n in zip(bounds, counts, strict=True)]
        if m.max_batch_size > 0:  # the last bound is at least max_batch_size
            return rows[:bisect_left(bounds, m.max_batch_size) + 1]
        return rows if counts[-1] else rows[:-1]

    def _max_batch(self, name: str, version: str) -> int:
        m = self.metrics.children.get((name, version))
        return m.max_batch_size if m is not None else 0

    def keys(self) -> list[tuple[str, str]]:
        """The versions with history (model, version)."""
        return list(self._rings)


def _window_families(w: Windows) -> Iterator[Metric]:
    mvw = ["model", "version", "window"]
    latency = GaugeMetricFamily("infer_window_latency_seconds",
                                "Request latency quantile over the window (requests the model answered).",
                                labels=[*mvw, "quantile"])
    rps = GaugeMetricFamily("infer_window_requests_per_second",
                            "Requests answered per second over the window (incl. failures and cache hits).",
                            labels=mvw)
    rows = GaugeMetricFamily("infer_window_rows_per_second", "Rows (batch dimension) computed per second.",
                             labels=mvw)
    errors = GaugeMetricFamily("infer_window_error_ratio", "Failed requests over requests in the window.",
                               labels=mvw)
    efficiency = GaugeMetricFamily("infer_window_batch_efficiency",
                                   "Mean rows per execution over max_batch_size in the window (0..1).", labels=mvw)
    cache = GaugeMetricFamily("infer_window_cache_hit_ratio", "Response cache hits over lookups in the window.",
                              labels=mvw)
    for name, version in w.keys():
        for label, seconds in WINDOWS:
            f = w.figures(name, version, seconds)
            if f is None:
                continue
            lv = [name, version, label]
            for q, value in zip(QUANTILES, (f.p50_s, f.p95_s, f.p99_s), strict=True):
                if value is not None:
                    latency.add_metric([*lv, repr(q)], value)
            rps.add_metric(lv, f.rps)
            rows.add_metric(lv, f.rows_per_s)
            if f.error_rate is not None:
                errors.add_metric(lv, f.error_rate)
            if f.batch_efficiency is not None:
                efficiency.add_metric(lv, f.batch_efficiency)
            if f.cache_hit_ratio is not None:
                cache.add_metric(lv, f.cache_hit_ratio)
    yield from (latency, rps, rows, errors, efficiency, cache)


def _memory_family(children: dict[tuple[str, str], VersionMetrics]) -> Metric:
    memory = GaugeMetricFamily("infer_model_memory_bytes", "Process RSS growth measured across the version's load.",
                               labels=["model", "version"])
    for (name, version), m in list(children.items()):
        if m.state not in ("UNLOADING", "UNLOADED"):
            memory.add_metric([name, version], m.memory_bytes)
    return memory


class _WindowCollector(Collector):
    def __init__(self, windows: Windows) -> None:
        self._w = windows

    def collect(self) -> Iterator[Metric]:
        yield from _window_families(self._w)
        yield _memory_family(self._w.metrics.children)
        if self._w.gpu is not None:
            yield from self._w.gpu()
