"""The dashboard's snapshot assembled from fake sources, and the metrics port's dashboard routes called with
mocked requests (no socket): the page, its static files (content types, caching, no path traversal), the
snapshot JSON and the event stream ending on disconnect and on server stop."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from infer.core.clock import ManualClock
from infer.observability.dashboard import FORECASTS_SHOWN, SEVERITIES, Dashboard, DashboardSources, anomaly_summary
from infer.observability.http import STATIC_DIR, MetricsServer, StaticFiles

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0


def _sources(**override: Callable[..., Any]) -> DashboardSources:
    def latency(name: str, version: str) -> dict[str, Any]:
        if name == "gone":
            raise KeyError(name)
        win = {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": float("nan"), "rps": np.float64(10.0), "rows_per_s": 40.0,
               "error_rate": 0.0, "batch_mean": 4.0, "batch_efficiency": 0.5, "cache_hit_ratio": None}
        return {"windows": {"1m": win, "5m": win, "1h": win},
                "series": [{"t": NOW - 10, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "rps": 10.0,
                            "error_rate": 0.0}]}

    base: dict[str, Callable[..., Any]] = {
        "models": lambda: [
            {"name": "b", "version": "10", "state": "ACTIVE", "platform": "onnx", "max_batch_size": 8, "family": ""},
            {"name": "b", "version": "2", "state": "DEGRADED", "platform": "onnx", "max_batch_size": 8, "family": ""},
            {"name": "a", "version": "1", "state": "ACTIVE", "platform": "pipeline", "max_batch_size": 64,
             "family": "anomaly"},
            {"name": "gone", "version": "1", "state": "UNAVAILABLE", "platform": "", "max_batch_size": 0,
             "family": ""},
        ],
        "latency": latency,
        "batch_sizes": lambda name, version: [[1, 3], [2, 0], [4, np.int64(5)]],
        "anomalies": lambda: [{"t": NOW - 30 + i, "model": "a", "version": "1", "score": 0.9,
                               "severity": SEVERITIES[1 + i % 4], "type": "statistical"} for i in range(8)],
        "forecasts": lambda: [{"t": NOW - 100 + i, "model": "f", "version": "1", "id": f"r{i}", "history": [1.0],
                               "mean": [2.0], "lower": [1.5], "upper": [2.5], "actual": None} for i in range(30)],
        "drift": lambda: [{"model": "b", "version": "2", "drifted": True, "at": NOW, "rows": 400, "features": [
            {"feature": "x[0]", "kind": "numeric", "psi": 0.6, "ks": 0.3, "ks_p": 1e-9, "wasserstein": math.inf,
             "chi2": None, "chi2_p": None, "drifted": True}]}],
        "accuracy": lambda: [{"model": "a", "version": "1", "kind": "classification", "samples": 5, "accuracy": 0.8,
                              "precision": 1.0, "recall": 0.5, "f1": 0.667, "mae": None, "rmse": None,
                              "series": [{"t": NOW, "value": 0.667}]}],
        "deployments": lambda: [{"name": "ab", "kind": "ab", "variants": [], "comparison": None, "canary": None,
                                 "shadow": None}],
    }
    base.update(override)
    return DashboardSources(**base)


def test_snapshot_merges_latency_and_batches_into_sorted_models() -> None:
    snap = Dashboard(_sources(), ManualClock(NOW).now).snapshot()
    assert snap["schema"] == 1 and snap["server_time"] == NOW
    assert [(m["name"], m["version"]) for m in snap["models"]] == [("a", "1"), ("b", "2"), ("b", "10"), ("gone", "1")]
    a = snap["models"][0]
    assert a["family"] == "anomaly" and a["latency"]["windows"]["5m"]["rps"] == 10.0
    assert a["latency"]["windows"]["1m"]["p99_ms"] is None  # NaN becomes null
    assert a["batch_sizes"] == [[1, 3], [2, 0], [4, 5]]
    assert snap["models"][3]["latency"] == {"windows": {}, "series": []}  # not serving: no figures, no error
    assert snap["errors"] == {}
    assert snap["drift"][0]["features"][0]["wasserstein"] is None
    assert snap["accuracy"][0]["f1"] == 0.667 and snap["deployments"][0]["name"] == "ab"
    text = json.dumps(snap, allow_nan=False)  # plain JSON: no NaN, no NumPy types
    assert json.loads(text) == snap


def test_forecasts_keep_the_latest_per_version_oldest_first() -> None:
    snap = Dashboard(_sources(), ManualClock(NOW).now).snapshot()
    ids = [f["id"] for f in snap["forecasts"]]
    assert ids == [f"r{i}" for i in range(30 - FORECASTS_SHOWN, 30)]


def test_a_failing_source_leaves_its_section_empty_and_is_named() -> None:
    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("store unreachable")

    def slow_latency(name: str, version: str) -> dict[str, Any]:
        raise ValueError("no windows")

    snap = Dashboard(_sources(deployments=broken, latency=slow_latency), ManualClock(NOW).now).snapshot()
    assert snap["deployments"] == []
    assert snap["errors"]["deployments"] == "RuntimeError: store unreachable"
    assert "latency a:1" in snap["errors"] and "latency gone:1" not in snap["errors"]
    assert len(snap["models"]) == 4 and len(snap["anomalies"]["events"]) == 8


def test_anomaly_heatmap_counts_events_by_time_bucket_and_severity() -> None:
    events = [{"t": NOW - 50, "model": "a", "version": "1", "score": 0.5, "severity": "LOW", "type": ""},
              {"t": NOW - 49, "model": "a", "version": "1", "score": 0.6, "severity": "LOW", "type": ""},
              {"t": NOW - 1, "model": "b", "version": "1", "score": 0.9, "severity": "CRITICAL", "type": ""},
              {"t": NOW - 7200, "model": "a", "version": "1", "score": 0.9, "severity": "HIGH", "type": ""}]
    s = anomaly_summary(events, NOW)
    assert s["total"] == 4 and s["severities"] == list(SEVERITIES)
    assert s["by_severity"] == {"NONE": 0, "LOW": 2, "MEDIUM": 0, "HIGH": 1, "CRITICAL": 1}
    assert s["by_model"] == {"a": 3, "b": 1}
    h = s["heatmap"]
    assert h["bucket_s"] == 5.0 and h["buckets"] == 12 and h["start"] == NOW - 60
    # the two LOW events share the bucket 10 s after the start; the event two hours old is outside the hour
    assert h["cells"] == [[2, 1, 2], [11, 4, 1]]
    assert sum(n for _, _, n in h["cells"]) == 3


def test_heatmap_buckets_widen_with_the_span_and_stay_bounded() -> None:
    events = [{"t": NOW - i * 60.0, "model": "a", "version": "1", "score": 1.0, "severity": "HIGH", "type": ""}
              for i in range(59)]
    h = anomaly_summary(events, NOW)["heatmap"]
    assert h["buckets"] <= 60 and h["bucket_s"] == 60.0
    assert sum(n for _, _, n in h["cells"]) == 59


def test_snapshot_is_cached_for_its_period() -> None:
    clock = ManualClock(NOW)
    dashboard = Dashboard(_sources(), clock.now, cache_s=1.0)
    first = dashboard.snapshot()
    clock.advance(0.5)
    assert dashboard.snapshot() == first and dashboard.assemblies == 1
    clock.advance(0.6)
    assert dashboard.snapshot()["server_time"] == NOW + 1.1 and dashboard.assemblies == 2


async def test_encoded_snapshots_are_shared_by_pages_asking_together() -> None:
    clock = ManualClock(NOW)
    dashboard = Dashboard(_sources(models=lambda: [{"name": "NaN", "version": "1", "state": "ACTIVE"}]), clock.now)
    got = await asyncio.gather(*(dashboard.encoded() for _ in range(5)))
    assert dashboard.assemblies == 1 and len(set(got)) == 1
    body = json.loads(got[0])
    assert body["models"][0]["name"] == "NaN" and body["models"][0]["latency"]["windows"]["1m"]["p99_ms"] is None
    assert body == dashboard.snapshot()
    clock.advance(2)
    assert json.loads(await dashboard.encoded())["server_time"] == NOW + 2 and dashboard.assemblies == 2


# ---- static files ---------------------------------------------------------------------------------


def test_static_files_are_served_with_their_types_and_never_outside_the_folder() -> None:
    files = StaticFiles()
    for name, kind in (("index.html", "text/html"), ("dashboard.js", "text/javascript"),
                       ("dashboard.css", "text/css"), ("vendor/echarts.min.js", "text/javascript"),
                       ("vendor/echarts.LICENSE", "text/plain"), ("vendor/echarts.NOTICE", "text/plain")):
        asset = files.get(name)
        assert asset is not None and asset.content_type.startswith(kind), name
    big = files.get("vendor/echarts.min.js")
    assert big is not None and big.gzipped is not None and gzip.decompress(big.gzipped) == big.body
    for bad in ("../http.py", "vendor/../../http.py", "/etc/passwd", "..", "", "vendor", "x\x00.js",
                "..\\http.py", "../../../../../../etc/passwd", "%2e%2e/http.py", "nope.js"):
        assert files.get(bad) is None, bad
    assert re.fullmatch(r"[0-9a-f]{12}", files.digest()) and files.digest() == StaticFiles().digest()


def test_vendored_chart_library_matches_the_pin() -> None:
    script = (ROOT / "scripts" / "vendor_dashboard.sh").read_text()
    pinned = re.search(r'^SHA256="([0-9a-f]{64})"', script, re.M)
    version = re.search(r'^VERSION="([0-9.]+)"', script, re.M)
    assert pinned and version and version.group(1) == "6.1.0"
    body = (STATIC_DIR / "vendor" / "echarts.min.js").read_bytes()
    assert hashlib.sha256(body).hexdigest() == pinned.group(1)
    assert "Apache License" in (STATIC_DIR / "vendor" / "echarts.LICENSE").read_text()


def test_the_page_uses_only_files_the_engine_serves() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and not any(r.startswith(("http:", "https:", "//")) for r in refs)
    for ref in refs:
        if ref.startswith("dashboard/static/"):
            assert StaticFiles().get(ref.removeprefix("dashboard/static/").split("?")[0]) is not None, ref
    js = (STATIC_DIR / "dashboard.js").read_text()
    for element in re.findall(r'\$\("([\w-]+)"\)', js):
        assert f'id="{element}"' in html, element


# ---- routes, with mocked requests --------------------------------------------------------------------


def _server(dashboard: Dashboard | None, interval: float = 0.01) -> MetricsServer:
    return MetricsServer(CollectorRegistry(), lambda: True, lambda: True, dashboard=dashboard,
                         stream_interval_s=interval)


async def test_page_snapshot_and_static_routes() -> None:
    srv = _server(Dashboard(_sources(), ManualClock(NOW).now))
    page = await srv._page(make_mocked_request("GET", "/dashboard"))
    assert page.headers["Cache-Control"] == "no-cache" and page.content_type == "text/html"
    assert page.body is not None and b"{{v}}" not in page.body and StaticFiles().digest().encode() in page.body

    req = make_mocked_request("GET", "/dashboard/static/vendor/echarts.min.js", {"Accept-Encoding": "gzip, br"},
                              match_info={"name": "vendor/echarts.min.js"})
    js = await srv._file(req)
    assert js.headers["Content-Encoding"] == "gzip" and "immutable" in js.headers["Cache-Control"]
    assert js.headers["Content-Type"].startswith("text/javascript")
    with pytest.raises(web.HTTPNotFound):
        await srv._file(make_mocked_request("GET", "/x", match_info={"name": "../http.py"}))

    with pytest.raises(web.HTTPMovedPermanently) as moved:  # the page's links are relative to /dashboard
        await srv._slash(make_mocked_request("GET", "/dashboard/"))
    assert moved.value.location == "../dashboard"

    snap = await srv._snapshot(make_mocked_request("GET", "/api/v1/dashboard"))
    assert snap.content_type == "application/json" and isinstance(snap.body, bytes)
    assert [m["name"] for m in json.loads(snap.body)["models"]] == ["a", "b", "b", "gone"]


async def test_dashboard_routes_are_absent_without_a_dashboard() -> None:
    srv = _server(None)
    for handler in (srv._page, srv._snapshot, srv._stream):
        with pytest.raises(web.HTTPNotFound):
            await handler(make_mocked_request("GET", "/dashboard"))


def _stream_request(closing: Callable[[], bool]) -> tuple[web.Request, list[bytes]]:
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(bytes(data))

    req = make_mocked_request("GET", "/api/v1/dashboard/stream")
    req._payload_writer.write = write  # type: ignore[union-attr,method-assign]
    assert req.transport is not None
    req.transport.is_closing = mock.Mock(side_effect=closing)  # type: ignore[method-assign]
    return req, written


def _events(written: list[bytes]) -> list[dict[str, Any]]:
    text = b"".join(written).decode()
    return [json.loads(line.removeprefix("data: ")) for line in text.splitlines() if line.startswith("data: ")]


async def test_stream_pushes_snapshots_until_the_server_stops() -> None:
    clock = ManualClock(NOW)
    srv = _server(Dashboard(_sources(), clock.now, cache_s=0.0))
    req, written = _stream_request(lambda: False)
    task = asyncio.create_task(srv._stream(req))
    for _ in range(200):
        if len(_events(written)) >= 3:
            break
        clock.advance(1)
        await asyncio.sleep(0.01)
    assert srv.streams == 1
    await srv.stop()  # no runner started: only ends the streams
    await asyncio.wait_for(task, 2.0)
    events = _events(written)
    assert len(events) >= 3 and srv.streams == 0
    assert b"".join(written).startswith(b"retry: 10\n\n") and b"event: snapshot\n" in b"".join(written)
    assert events[0]["server_time"] < events[-1]["server_time"]


async def test_stream_ends_when_the_client_goes_away() -> None:
    srv = _server(Dashboard(_sources(), ManualClock(NOW).now), interval=30.0)
    req, written = _stream_request(lambda: True)
    await asyncio.wait_for(srv._stream(req), 2.0)  # not 30 s: the closed transport is noticed after one event
    assert len(_events(written)) == 1 and srv.streams == 0

    async def reset(data: bytes) -> None:
        raise ConnectionResetError("gone")

    req2, _ = _stream_request(lambda: False)
    req2._payload_writer.write = reset  # type: ignore[union-attr,method-assign]
    await asyncio.wait_for(srv._stream(req2), 2.0)
    assert srv.streams == 0


async def test_open_streams_share_one_framed_event() -> None:
    dashboard = Dashboard(_sources(), ManualClock(NOW).now)
    srv = _server(dashboard)
    first = await srv._event(dashboard)
    assert first == b"event: snapshot\ndata: " + await dashboard.encoded() + b"\n\n"
    assert await srv._event(dashboard) is first  # the same snapshot is framed once, whatever the number of streams
