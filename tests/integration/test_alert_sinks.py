"""Alert sinks against a real HTTP receiver on a loopback port: bodies, headers, retries, Retry-After, shutdown."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web

from infer.observability.alerts import Alert, AlertManager, AlertsConfig

FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 2}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Receiver:
    """Records every POST; ``script[path]`` lists (status, headers) answers to give before answering 200."""

    base: str = ""
    requests: list[Received] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    delay_s: float = 0.0

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.path, dict(request.headers), await request.json(), time.monotonic()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        answers = self.script.get(request.path)
        if answers:
            status, headers = answers.pop(0)
            return web.Response(status=status, headers=headers, text="busy")
        if request.path.startswith("/pd"):
            return web.json_response({"status": "success", "message": "Event processed", "dedup_key": "x"},
                                     status=202)
        return web.Response(text="ok")


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.base = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


def _alert(key: str = "anomaly:security:s1", severity: str = "HIGH", **kw: Any) -> Alert:
    fields: dict[str, Any] = dict(model="anomaly", version="1", severity=severity, score=0.97,
                                  anomaly_type="security", dedup_key=key, summary=f"{severity} security anomaly",
                                  details={"request_id": "r1", "top_features": ["logins", "hour"]}, at=1.7e9)
    fields.update(kw)
    return Alert(**fields)


def _config(*sinks: dict[str, Any]) -> AlertsConfig:
    return AlertsConfig.parse({"sinks": [{**FAST, **s} for s in sinks]})


async def _until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _running(cfg: AlertsConfig, body: Callable[[AlertManager], Awaitable[None]], grace_s: float = 5.0,
                   ) -> AlertManager:
    manager = AlertManager(cfg)
    await manager.start()
    try:
        await body(manager)
    finally:
        await manager.stop(grace_s)
    return manager


async def test_three_sinks_get_their_payloads(receiver: Receiver) -> None:
    cfg = _config(
        {"name": "hook", "kind": "webhook", "url": f"{receiver.base}/hook", "min_severity": "MEDIUM",
         "headers": {"Authorization": "Bearer s3cret", "X-Env": "test"}},
        {"name": "slack", "kind": "slack", "url": f"{receiver.base}/slack"},
        {"name": "pd", "kind": "pagerduty", "url": f"{receiver.base}/pd/v2/enqueue", "routing_key": "R" * 32,
         "min_severity": "CRITICAL"},
    )

    async def body(m: AlertManager) -> None:
        assert m.submit(_alert(severity="CRITICAL"))
        assert not m.submit(_alert(severity="CRITICAL"))  # same dedup key: suppressed everywhere
        assert m.submit(_alert(key="anomaly:security:s2", severity="MEDIUM"))  # only the webhook takes MEDIUM
        assert not m.submit(_alert(key="anomaly:security:s3", severity="LOW"))

    m = await _running(cfg, body)
    hook, slack, pd = receiver.on("/hook"), receiver.on("/slack"), receiver.on("/pd/v2/enqueue")
    assert [r.body["dedup_key"] for r in hook] == ["anomaly:security:s1", "anomaly:security:s2"]
    assert hook[0].body["severity"] == "CRITICAL" and hook[0].body["details"]["top_features"] == ["logins", "hour"]
    assert hook[0].headers["Authorization"] == "Bearer s3cret" and hook[0].headers["X-Env"] == "test"
    assert hook[0].headers["Content-Type"] == "application/json"
    assert "Authorization" not in slack[0].headers  # headers belong to their sink
    assert len(slack) == 1 and slack[0].body["text"] == "[CRITICAL] CRITICAL security anomaly"
    assert [b["type"] for b in slack[0].body["blocks"]] == ["header", "section", "context"]
    assert len(pd) == 1
    event = pd[0].body
    assert (event["routing_key"], event["event_action"], event["dedup_key"]) == ("R" * 32, "trigger",
                                                                                 "anomaly:security:s1")
    assert event["payload"]["severity"] == "critical" and event["payload"]["timestamp"].startswith("2023-11-14T22")
    st = m.stats()
    assert (st["hook"]["sent"], st["hook"]["deduplicated"], st["hook"]["filtered"]) == (2, 1, 1)
    assert (st["slack"]["sent"], st["slack"]["filtered"]) == (1, 2)
    assert (st["pd"]["sent"], st["pd"]["filtered"], st["pd"]["failed"]) == (1, 2, 0)


async def test_rate_limit_holds_over_the_wire(receiver: Receiver) -> None:
    cfg = _config({"name": "hook", "kind": "webhook", "url": f"{receiver.base}/limited", "rate_per_minute": 3})

    async def body(m: AlertManager) -> None:
        results = [m.submit(_alert(key=f"k{i}")) for i in range(10)]
        assert results == [True] * 3 + [False] * 7

    m = await _running(cfg, body)
    assert [r.body["dedup_key"] for r in receiver.on("/limited")] == ["k0", "k1", "k2"]
    assert m.stats()["hook"]["rate_limited"] == 7


async def test_503_then_200_is_retried(receiver: Receiver) -> None:
    receiver.script["/flaky"] = [(503, {}), (502, {})]
    cfg = _config({"name": "hook", "kind": "webhook", "url": f"{receiver.base}/flaky"})

    async def body(m: AlertManager) -> None:
        m.submit(_alert())
        await _until(lambda: m.stats()["hook"]["sent"] == 1)

    m = await _running(cfg, body)
    got = receiver.on("/flaky")
    assert len(got) == 3 and got[0].body == got[2].body
    assert {k: m.stats()["hook"][k] for k in ("sent", "retries", "failed")} == {"sent": 1, "retries": 2, "failed": 0}


async def test_429_retry_after_is_respected(receiver: Receiver) -> None:
    receiver.script["/busy"] = [(429, {"Retry-After": "1"})]
    cfg = _config({"name": "pd", "kind": "pagerduty", "url": f"{receiver.base}/busy", "routing_key": "k",
                   "backoff_max_s": 5})

    async def body(m: AlertManager) -> None:
        m.submit(_alert())
        await _until(lambda: m.stats()["pd"]["sent"] == 1)

    await _running(cfg, body)
    first, second = receiver.on("/busy")
    assert second.at - first.at >= 0.95  # not the 10 ms backoff


async def test_client_errors_are_not_retried(receiver: Receiver) -> None:
    receiver.script["/bad"] = [(400, {})]
    cfg = _config({"name": "hook", "kind": "webhook", "url": f"{receiver.base}/bad"})

    async def body(m: AlertManager) -> None:
        m.submit(_alert())
        await _until(lambda: m.stats()["hook"]["failed"] == 1)

    m = await _running(cfg, body)
    assert len(receiver.on("/bad")) == 1 and m.stats()["hook"]["retries"] == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_receiver_down_never_blocks_and_counts_a_failure() -> None:
    cfg = _config({"name": "hook", "kind": "webhook", "url": f"http://127.0.0.1:{_closed_port()}/x",
                   "max_attempts": 3, "dedup_window_s": 0, "rate_per_minute": 60_000})

    async def body(m: AlertManager) -> None:
        assert all(m.submit(_alert()) for _ in range(200))
        st = m.stats()["hook"]  # no await yet: every alert waits in the queue, none was tried inline
        assert (st["queued"], st["failed"], st["retries"]) == (200, 0, 0)
        await _until(lambda: m.stats()["hook"]["failed"] >= 1)

    m = await _running(cfg, body, grace_s=0.0)
    st = m.stats()["hook"]
    assert st["sent"] == 0 and st["failed"] >= 1 and st["retries"] >= 2 * st["failed"]
    assert st["failed"] + st["dropped_stopped"] == 200 and st["queued"] == 0


async def test_stop_flushes_the_queue(receiver: Receiver) -> None:
    cfg = _config({"name": "hook", "kind": "webhook", "url": f"{receiver.base}/flush", "rate_per_minute": 600})
    m = AlertManager(cfg)
    for i in range(20):  # queued before start: delivered once it starts
        m.submit(_alert(key=f"k{i}"))
    await m.start()
    for i in range(20, 40):
        m.submit(_alert(key=f"k{i}"))
    await m.stop(5.0)
    assert sorted(r.body["dedup_key"] for r in receiver.on("/flush")) == sorted(f"k{i}" for i in range(40))
    assert m.stats()["hook"]["sent"] == 40
    assert not m.submit(_alert(key="late")) and m.stats()["hook"]["dropped_stopped"] == 1


async def test_stop_grace_bounds_a_slow_receiver(receiver: Receiver) -> None:
    receiver.delay_s = 0.3
    cfg = _config({"name": "hook", "kind": "webhook", "url": f"{receiver.base}/slow"})
    m = AlertManager(cfg)
    await m.start()
    for i in range(10):
        m.submit(_alert(key=f"k{i}"))
    await m.stop(0.5)  # the grace is enforced by what stop() gave up on, not by a wall-clock check here
    st = m.stats()["hook"]
    assert 1 <= st["sent"] <= 2 and st["sent"] + st["dropped_stopped"] == 10 and st["queued"] == 0
