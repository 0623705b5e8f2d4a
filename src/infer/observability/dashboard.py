"""The live dashboard's data: one JSON snapshot assembled from small sources the composition root provides.

The page (``static/``) is served on the metrics port by :class:`infer.observability.http.MetricsServer`; it follows
the server-sent events of ``/api/v1/dashboard/stream`` and polls ``/api/v1/dashboard`` when they fail (both send
:meth:`Dashboard.encoded`). The snapshot (times are Unix seconds, unknown values are ``null``)::

    {"schema": 1, "server_time": t, "took_ms": ms,
     "models": [{"name", "version", "state", "platform", "max_batch_size", "family", ...,
                 "latency": {"windows": {"1m": {...}, "5m": {...}, "1h": {...}}, "series": [{"t", "p50_ms", ...}]},
                 "batch_sizes": [[upper_bound, count], ...]}],
     "anomalies": {"events": [...the latest, oldest first], "total": n, "by_severity": {"LOW": n, ...},
                   "by_model": {"anomaly": n}, "severities": ["NONE", ..., "CRITICAL"],
                   "heatmap": {"start": t, "bucket_s": s, "buckets": k, "cells": [[bucket, severity_index, n]]}},
     "forecasts": [...], "drift": [...], "accuracy": [...], "deployments": [...],
     "errors": {"<source>": "why it could not be read"}}

A source that raises leaves its section empty and names itself in ``errors``: the page shows what it has.
The sources are called on the event loop (they read the watch's and the windows' in-memory structures, which are
not thread-safe, and return fresh lists); the heavier part (the heatmap, cleaning values for JSON, encoding: tens
of milliseconds with twenty busy models) runs in a worker thread (:meth:`Dashboard.encoded`), and the result is
cached for ``cache_s`` so that several open pages cost one assembly per period.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SEVERITIES", "Dashboard", "DashboardSources", "anomaly_summary", "json_safe"]

log = logging.getLogger(__name__)

SEVERITIES = ("NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL")
TIMELINE_SHOWN = 400  # the latest anomaly events sent with each snapshot (the heatmap counts all of them)
HEATMAP_BUCKETS = 60  # at most this many time buckets
HEATMAP_SPAN_S = 3600.0  # the heatmap covers at most the last hour
FORECASTS_SHOWN = 12  # the latest forecasts per model version
SERVING = ("ACTIVE", "DEGRADED", "READY")  # states whose missing latency figures are reported as an error
_BUCKET_STEPS = (5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)


@dataclass(frozen=True)
class DashboardSources:
    """What the dashboard reads; each callable is cheap and runs on the event loop (see the contract in the
    module docstring for the shapes)."""

    models: Callable[[], list[dict[str, Any]]]
    latency: Callable[[str, str], dict[str, Any]]
    batch_sizes: Callable[[str, str], list[list[int]]]
    anomalies: Callable[[], list[dict[str, Any]]]
    forecasts: Callable[[], list[dict[str, Any]]]
    drift: Callable[[], list[dict[str, Any]]]
    accuracy: Callable[[], list[dict[str, Any]]]
    deployments: Callable[[], list[dict[str, Any]]]


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None and NumPy scalars, arrays and tuples as plain JSON types (also the
    encoder's fallback for what it cannot encode; anything else becomes text)."""
    if isinstance(value, float):  # NumPy's float64 too
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)  # NumPy scalars and 0-d arrays (a one-element array stays a list)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return json_safe(item())
    tolist = getattr(value, "tolist", None)  # NumPy arrays
    if callable(tolist):
        return json_safe(tolist())
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _bucket_width(span_s: float) -> float:
    for step in _BUCKET_STEPS:
        if span_s / step <= HEATMAP_BUCKETS:
            return step
    return _BUCKET_STEPS[-1]


def anomaly_summary(events: Sequence[Mapping[str, Any]], now: float) -> dict[str, Any]:
    """The timeline's counts and its severity heatmap (time buckets x severity levels) over the last hour."""
    by_severity = Counter(str(e.get("severity", "")) for e in events)
    by_model = Counter(str(e.get("model", "")) for e in events)
    recent = [e for e in events if isinstance(e.get("t"), int | float) and e["t"] >= now - HEATMAP_SPAN_S]
    oldest = min((float(e["t"]) for e in recent), default=now)
    width = _bucket_width(max(now - oldest, 60.0))
    buckets = max(1, math.ceil(max(now - oldest, 60.0) / width))
    start = now - buckets * width
    index = {s: i for i, s in enumerate(SEVERITIES)}
    cells: Counter[tuple[int, int]] = Counter()
    for e in recent:
        level = index.get(str(e.get("severity", "")))
        if level is not None:
            cells[(min(buckets - 1, int((float(e["t"]) - start) // width)), level)] += 1
    return {
        "events": list(events[-TIMELINE_SHOWN:]), "total": len(events),
        "by_severity": {s: by_severity.get(s, 0) for s in SEVERITIES}, "by_model": dict(by_model),
        "severities": list(SEVERITIES),
        "heatmap": {"start": start, "bucket_s": width, "buckets": buckets,
                    "cells": [[b, s, n] for (b, s), n in sorted(cells.items())]},
    }


def _latest_forecasts(forecasts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    kept: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for f in forecasts:
        kept.setdefault((str(f.get("model")), str(f.get("version"))), []).append(f)
    out = [f for group in kept.values() for f in group[-FORECASTS_SHOWN:]]
    out.sort(key=lambda f: f.get("t") or 0.0)
    return out


class Dashboard:
    """Builds the dashboard snapshot from its sources; ``clock`` gives Unix seconds."""

    def __init__(self, sources: DashboardSources, clock: Callable[[], float] = time.time,
                 cache_s: float = 1.0) -> None:
        self.sources = sources
        self._clock = clock
        self._cache_s = cache_s
        self._cached: bytes | None = None
        self._cached_at = -math.inf
        self._lock = asyncio.Lock()  # pages asking together share one assembly
        self.assemblies = 0

    def snapshot(self) -> dict[str, Any]:
        """The current snapshot as plain JSON types, assembled here at most once per ``cache_s``."""
        if not self._fresh():
            self._store(self._finish(self.collect()))
        assert self._cached is not None
        snapshot: dict[str, Any] = json.loads(self._cached)
        return snapshot

    async def encoded(self) -> bytes:
        """The current snapshot as JSON bytes: the sources read on the loop, the rest in a worker thread."""
        async with self._lock:
            if not self._fresh():
                raw = self.collect()
                self._store(await asyncio.to_thread(self._finish, raw))
        assert self._cached is not None
        return self._cached

    def _fresh(self) -> bool:
        return self._cached is not None and 0.0 <= self._clock() - self._cached_at < self._cache_s

    def _store(self, data: tuple[float, bytes]) -> None:
        self._cached_at, self._cached = data
        self.assemblies += 1

    def collect(self) -> dict[str, Any]:
        """What the sources say now (on the loop; cheap); :meth:`_finish` makes the snapshot of it."""
        started = time.perf_counter()
        errors: dict[str, str] = {}
        raw: dict[str, Any] = {"schema": 1, "server_time": self._clock(), "models": self._models(errors)}
        raw["anomalies"] = self._read("anomalies", self.sources.anomalies, errors)
        raw["forecasts"] = _latest_forecasts(self._read("forecasts", self.sources.forecasts, errors))
        for key in ("drift", "accuracy", "deployments"):
            raw[key] = self._read(key, getattr(self.sources, key), errors)
        raw["errors"] = errors
        raw["took_ms"] = (time.perf_counter() - started) * 1e3
        return raw

    @staticmethod
    def _finish(raw: dict[str, Any]) -> tuple[float, bytes]:
        """(server time, JSON bytes); NaN and infinities become null (cleaned only when present: the C encoder
        alone is several times faster than walking the snapshot in Python)."""
        started = time.perf_counter()
        raw["anomalies"] = anomaly_summary(raw["anomalies"], raw["server_time"])
        raw["took_ms"] += (time.perf_counter() - started) * 1e3  # the encoding itself is not counted
        text = json.dumps(raw, separators=(",", ":"), default=json_safe)
        if "NaN" in text or "Infinity" in text:  # a value to clean (or a name holding the word: cleaned all the same)
            text = json.dumps(json_safe(raw), separators=(",", ":"), allow_nan=False)
        return float(raw["server_time"]), text.encode()

    @staticmethod
    def _read(name: str, source: Callable[[], list[dict[str, Any]]], errors: dict[str, str]) -> list[Any]:
        try:
            got = source()
        except Exception as e:  # one broken source must not blank the page
            log.warning("dashboard source %s failed: %s", name, e, exc_info=True)
            errors[name] = f"{type(e).__name__}: {e}"
            return []
        return list(got or [])

    def _models(self, errors: dict[str, str]) -> list[dict[str, Any]]:
        out = []
        for m in self._read("models", self.sources.models, errors):
            name, version = str(m.get("name", "")), str(m.get("version", ""))
            row = dict(m)
            row["latency"] = {"windows": {}, "series": []}
            row["batch_sizes"] = []
            try:
                row["latency"] = self.sources.latency(name, version) or row["latency"]
                row["batch_sizes"] = self.sources.batch_sizes(name, version) or []
            except Exception as e:  # a version not (or no longer) measured has no figures
                if str(m.get("state", "")) in SERVING:
                    errors[f"latency {name}:{version}"] = f"{type(e).__name__}: {e}"
            out.append(row)
        out.sort(key=lambda r: (str(r.get("name")), _version_key(str(r.get("version")))))
        return out


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)
