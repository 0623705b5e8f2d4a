"""The live dashboard against the real server: HTTP routes on the metrics port (page, static files, snapshot,
server-sent events) and, in a real Chromium driven by Playwright, the page showing the traffic this test sent.

The repository is tiny and deterministic: ``sentinel`` (an anomaly-family model: score = x, severity by fixed
thresholds, so the count per severity is known from the inputs), ``horizon`` (a forecaster: mean = history, band
+-1), and ``double`` v1/v2 behind an A/B deployment with a drift reference. A screenshot is saved to
``test-artifacts/dashboard.png`` (``INFER_ARTIFACTS_DIR`` overrides).

Without Chromium or Playwright the browser test is skipped, unless ``INFER_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from fixtures import ROOT, ServerProcess, write_double
from onnx import TensorProto, helper, numpy_helper
from prometheus_client import CollectorRegistry

from infer.client import InferClient, ab_test
from infer.observability.dashboard import SEVERITIES, Dashboard, DashboardSources
from infer.observability.drift import build_reference
from infer.observability.http import MetricsServer

CHROMIUM = os.environ.get("INFER_CHROMIUM", "/usr/bin/chromium")
THRESHOLDS = (0.25, 0.5, 0.75, 0.9)
HORIZON = 8

SENTINEL_CONFIG = """
name: "sentinel"
platform: "onnxruntime_onnx"
max_batch_size: 64
"""
HORIZON_CONFIG = """
name: "horizon"
platform: "onnxruntime_onnx"
max_batch_size: 16
"""
DOUBLE_CONFIG = """
name: "double"
platform: "onnxruntime_onnx"
max_batch_size: 64
version_policy: { all { } }
parameters { key: "infer.drift.every_s" value { string_value: "0.3" } }
parameters { key: "infer.drift.window" value { string_value: "200" } }
parameters { key: "infer.drift.min_rows" value { string_value: "50" } }
"""


def _save(nodes: list[Any], name: str, inputs: list[Any], outputs: list[Any], inits: list[Any], path: Path) -> None:
    import onnx

    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def write_sentinel(repo: Path) -> None:
    """x FP32 [N, 1] -> score = x, severity = the number of THRESHOLDS x exceeds as NONE..CRITICAL,
    is_anomalous = severity above NONE."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    outs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("severity", TensorProto.STRING, ["N", 1]),
            helper.make_tensor_value_info("is_anomalous", TensorProto.BOOL, ["N", 1])]
    inits = [numpy_helper.from_array(np.array(THRESHOLDS, np.float32), "thr"),
             numpy_helper.from_array(np.array([1], np.int64), "axis"),
             numpy_helper.from_array(np.array(0, np.int64), "zero")]
    nodes = [
        helper.make_node("Identity", ["x"], ["score"]),
        helper.make_node("Greater", ["x", "thr"], ["above"]),
        helper.make_node("Cast", ["above"], ["above_i"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["above_i", "axis"], ["level"], keepdims=1),
        helper.make_node("LabelEncoder", ["level"], ["severity"], domain="ai.onnx.ml",
                         keys_int64s=list(range(5)), values_strings=list(SEVERITIES), default_string="NONE"),
        helper.make_node("Greater", ["level", "zero"], ["is_anomalous"]),
    ]
    _save(nodes, "sentinel", [x], outs, inits, repo / "sentinel" / "1" / "model.onnx")
    (repo / "sentinel" / "config.pbtxt").write_text(SENTINEL_CONFIG)


def write_horizon(repo: Path) -> None:
    """history FP32 [N, HORIZON] -> mean = history, lower = history - 1, upper = history + 1."""
    h = helper.make_tensor_value_info("history", TensorProto.FLOAT, ["N", HORIZON])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", HORIZON]) for n in ("mean", "lower", "upper")]
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    nodes = [helper.make_node("Identity", ["history"], ["mean"]),
             helper.make_node("Sub", ["history", "one"], ["lower"]),
             helper.make_node("Add", ["history", "one"], ["upper"])]
    _save(nodes, "horizon", [h], outs, [one], repo / "horizon" / "1" / "model.onnx")
    (repo / "horizon" / "config.pbtxt").write_text(HORIZON_CONFIG)


def build_dashboard_repository(repo: Path) -> Path:
    write_sentinel(repo)
    write_horizon(repo)
    write_double(repo, versions=(1, 2), config=DOUBLE_CONFIG)
    rng = np.random.default_rng(1)
    reference = build_reference({"x": rng.standard_normal((2000, 4)).astype(np.float32)}, seed=1)
    for v in (1, 2):
        reference.save(repo / "double" / str(v) / "drift_reference.json")
    return repo


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = build_dashboard_repository(tmp_path_factory.mktemp("dashboard-repo"))
    srv = ServerProcess(repo).wait_ready()
    yield srv
    assert srv.stop() == 0, srv.output()[-3000:]


def _get(srv: ServerProcess, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.metrics_port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _snapshot(srv: ServerProcess) -> dict[str, Any]:
    status, _, body = _get(srv, "/api/v1/dashboard")
    assert status == 200
    return json.loads(body)


def test_routes_serve_the_page_its_files_and_the_snapshot(server: ServerProcess) -> None:
    status, headers, page = _get(server, "/dashboard")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and headers["Cache-Control"] == "no-cache"
    assert b"{{v}}" not in page and b"dashboard/static/vendor/echarts.min.js?v=" in page
    status, headers, js = _get(server, "/dashboard/static/vendor/echarts.min.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and len(js) > 500_000
    assert "immutable" in headers["Cache-Control"]
    status, headers, _ = _get(server, "/dashboard/static/dashboard.css", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    for bad in ("/dashboard/static/../http.py", "/dashboard/static/%2e%2e/http.py",
                "/dashboard/static/vendor/..%2f..%2fhttp.py", "/dashboard/static/..%2f..%2f..%2fpyproject.toml",
                "/dashboard/static/nope.js"):
        assert _get(server, bad)[0] == 404, bad
    snap = _snapshot(server)
    assert {(m["name"], m["version"]) for m in snap["models"]} >= {("sentinel", "1"), ("horizon", "1"), ("double", "1"),
                                                                  ("double", "2")}
    assert snap["errors"] == {}, snap["errors"]


def test_stream_sends_snapshots_as_server_sent_events(server: ServerProcess) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{server.metrics_port}/api/v1/dashboard/stream")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        events: list[dict[str, Any]] = []
        while len(events) < 2:
            line = resp.readline().decode()
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    # paced by the server: the next event comes a stream interval (2 s) later on the server's own clock
    assert events[1]["server_time"] - events[0]["server_time"] >= 1.0
    # the server keeps serving after the client went away
    assert _get(server, "/v2/health/live")[0] == 200


async def test_a_stream_ends_when_its_page_goes_away() -> None:
    """The metrics port in process, on a real socket: a client that closes its stream frees it at the next event."""
    nothing = DashboardSources(models=list, latency=lambda n, v: {}, batch_sizes=lambda n, v: [], anomalies=list,
                               forecasts=list, drift=list, accuracy=list, deployments=list)
    srv = MetricsServer(CollectorRegistry(), lambda: True, lambda: True, dashboard=Dashboard(nothing, cache_s=0.0),
                        stream_interval_s=0.05)
    port = await srv.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/api/v1/dashboard/stream") as resp:
                while not (await resp.content.readline()).startswith(b"data: "):
                    pass
                assert srv.streams == 1
        for _ in range(400):  # wait for the condition: the next write finds the connection closed
            if srv.streams == 0:
                break
            await asyncio.sleep(0.01)
        assert srv.streams == 0
    finally:
        await srv.stop()


# ---- traffic ---------------------------------------------------------------------------------------------


def _drive(srv: ServerProcess) -> dict[str, Any]:
    """Send the traffic the page must show; return what was sent."""
    sent: dict[str, Any] = {"severity": Counter(), "ab": 0, "forecast_ids": []}
    rng = np.random.default_rng(3)
    with InferClient(srv.address, timeout=30) as client:
        for i in range(20):  # anomaly events with a known severity each
            x = rng.uniform(0.0, 1.0, (10, 1)).astype(np.float32)
            out = client.infer("sentinel", {"x": x}, request_id=f"ev-{i}")
            sent["severity"].update(int(np.sum(v > np.array(THRESHOLDS))) for v in x[:, 0])
            assert out["score"].shape == (10, 1)
            client.report_ground_truth(f"ev-{i}", labels=["true" if v > 0.3 else "false" for v in x[:, 0]])
        for i in range(6):  # forecasts with ids, half with their actuals reported
            hist = (10 + np.arange(HORIZON, dtype=np.float32) + i).reshape(1, -1)
            rid = f"fc-{i}"
            got = client.infer("horizon", {"history": hist}, request_id=rid)
            np.testing.assert_allclose(got["upper"], hist + 1)
            sent["forecast_ids"].append(rid)
            if i % 2 == 0:
                client.report_ground_truth(rid, values=(hist[0] + 0.5).tolist())
        client.control.set_deployment(ab_test("ab", {"double:1": 50, "double:2": 50}))
        for _ in range(40):
            client.infer("ab", {"x": rng.standard_normal((4, 4)).astype(np.float32)})
            sent["ab"] += 1
        for _ in range(30):  # enough rows for a drift evaluation of each version
            client.infer("double", {"x": rng.standard_normal((8, 4)).astype(np.float32)}, version="1")
    return sent


def _wait_snapshot(srv: ServerProcess, ok: Any, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not ok(snap := _snapshot(srv)):
        assert time.monotonic() < end, f"the snapshot never got there: {snap}"
        time.sleep(0.3)


def _browser() -> Any:
    required = os.environ.get("INFER_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        if required:
            pytest.fail(f"INFER_REQUIRE_BROWSER=1 but there is no chromium at {CHROMIUM}")
        pytest.skip(f"no chromium at {CHROMIUM}")
    return sync_playwright


def _artifacts() -> Path:
    out = Path(os.environ.get("INFER_ARTIFACTS_DIR", str(ROOT / "test-artifacts")))
    out.mkdir(parents=True, exist_ok=True)
    return out


READY = """(ids) => ids.every(id => { const e = document.getElementById(id); return e && e.dataset.ready === "1"; })"""


def test_the_page_shows_the_traffic_sent(server: ServerProcess) -> None:
    sync_playwright = _browser()
    sent = _drive(server)
    n_events = sum(n for s, n in sent["severity"].items() if s > 0)
    _wait_snapshot(server, lambda s: s["anomalies"]["total"] >= n_events and s["drift"]
                          and any(d.get("features") for d in s["drift"]))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"http://127.0.0.1:{server.metrics_port}/dashboard")
            page.wait_for_function("() => window.__dashboard && window.__dashboard.updates >= 1", timeout=15_000)
            page.select_option("#model-select", "sentinel:1")
            charts = ["models", "chart-latency", "chart-batch", "chart-anomaly-timeline", "chart-anomaly-heatmap",
                      "chart-forecast", "chart-drift", "chart-accuracy", "deployments"]
            page.wait_for_function(READY, arg=charts, timeout=30_000)  # latency waits for the windows' samples
            state = page.evaluate("() => ({src: window.__dashboard.source, errors: window.__dashboard.errors, "
                                  "snap: window.__dashboard.lastSnapshot, updates: window.__dashboard.updates})")
            page.wait_for_function("(n) => window.__dashboard.updates > n", arg=state["updates"], timeout=10_000)
            shown = page.evaluate("""() => ({
                rows: [...document.querySelectorAll('#models-table tbody tr')].map(r => r.dataset.model),
                counts: document.getElementById('anomaly-counts').textContent,
                forecasts: [...document.querySelectorAll('#forecast-select option')].map(o => o.textContent),
                deployment: document.querySelector('[data-deployment="ab"]')?.textContent || '',
                points: Object.fromEntries([...document.querySelectorAll('[data-ready]')]
                    .map(e => [e.id, Number(e.dataset.points)])),
            })""")
            page.screenshot(path=str(_artifacts() / "dashboard.png"))
            page.select_option("#forecast-select", "horizon:1:fc-4")  # one whose actuals were reported
            page.wait_for_function("(n) => document.getElementById('chart-forecast').dataset.points == n",
                                   arg=str(3 * HORIZON), timeout=10_000)
            # without server-sent events (a proxy that buffers them, say) the page polls the snapshot instead
            polled = browser.new_page(viewport={"width": 1440, "height": 900})
            polled.route("**/api/v1/dashboard/stream", lambda route: route.abort())
            polled.goto(f"http://127.0.0.1:{server.metrics_port}/dashboard")
            polled.wait_for_function("() => window.__dashboard.source === 'poll' && window.__dashboard.updates >= 2",
                                     timeout=15_000)
            polled_models = polled.evaluate("() => document.getElementById('models').dataset.points")
        finally:
            browser.close()
    assert not problems and not state["errors"], (problems, state["errors"])
    assert state["src"] == "sse"
    snap = state["snap"]
    assert {"sentinel:1", "horizon:1", "double:1", "double:2"} <= set(shown["rows"])
    want = {SEVERITIES[k]: n for k, n in sent["severity"].items() if k > 0}
    got = {s: n for s, n in snap["anomalies"]["by_severity"].items() if n and s != "NONE"}
    assert got == want
    heat = Counter()
    for _, level, n in snap["anomalies"]["heatmap"]["cells"]:
        heat[SEVERITIES[level]] += n
    assert {s: n for s, n in heat.items() if s != "NONE"} == want
    assert any("fc-5" in f for f in shown["forecasts"])  # the latest forecast, selected by default
    assert shown["points"]["chart-forecast"] == 2 * HORIZON  # history and mean; no actuals for fc-5
    ab = next(d for d in snap["deployments"] if d["name"] == "ab")
    assert ab["kind"] == "ab" and sum(v["requests"] for v in ab["variants"]) == sent["ab"]
    assert "double:1" in shown["deployment"] and "double:2" in shown["deployment"]
    sentinel = next(m for m in snap["models"] if m["name"] == "sentinel")
    assert sum(c for _, c in sentinel["batch_sizes"]) >= 1 and sentinel["state"] == "ACTIVE"
    acc = {(a["model"], a["version"]): a for a in snap["accuracy"]}
    assert acc[("sentinel", "1")]["samples"] == 200 and acc[("horizon", "1")]["samples"] >= 3
    assert shown["points"]["models"] == len(snap["models"]) and polled_models == str(len(snap["models"]))
    # the timeline holds the events scored LOW or above only (ONNX Runtime answers STRING outputs as str)
    assert snap["anomalies"]["by_severity"]["NONE"] == 0, snap["anomalies"]["by_severity"]
    assert snap["anomalies"]["total"] == n_events and f"{n_events} events" in shown["counts"]
    assert shown["points"]["chart-anomaly-timeline"] == min(n_events, 400)


def test_an_open_stream_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    write_double(tmp_path / "repo")
    srv = ServerProcess(tmp_path / "repo").wait_ready()
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{srv.metrics_port}/api/v1/dashboard/stream")
        with urllib.request.urlopen(req, timeout=10) as resp:
            while not resp.readline().startswith(b"data: "):
                pass
            assert srv.stop() == 0, srv.output()[-3000:]
            # the server ended the stream itself (its last chunk arrives; a stream still open when the server's
            # shutdown timeout runs out is cut off instead, and the read raises IncompleteRead)
            rest = resp.read()
    finally:
        srv.stop()
    assert rest.count(b"event: snapshot") <= 2
