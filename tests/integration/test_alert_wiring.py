"""Alerts from a running server: anomaly answers above a sink's severity reach a real local HTTP receiver
(Slack and PagerDuty payloads), de-duplicated (per model and type here: the requests name no user);
answers below it send nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest_asyncio
from aiohttp import web
from fixtures import ServerProcess, write_rules

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

# a rule-based stand-in for an anomaly model: its verdict follows x[0], so the test knows what to expect
VERDICT = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
    "outputs": [
        {"name": "score", "datatype": "FP32", "shape": [-1, 1], "default": 0.1,
         "rules": [{"when": [{"input": "x", "index": 0, "op": ">", "value": 0}], "then": 0.97}]},
        {"name": "severity", "datatype": "BYTES", "shape": [-1, 1], "default": "NONE", "rules": [
            {"when": [{"input": "x", "index": 0, "op": ">", "value": 1}], "then": "CRITICAL"},
            {"when": [{"input": "x", "index": 0, "op": ">", "value": 0}], "then": "LOW"}]},
        {"name": "anomaly_type", "datatype": "BYTES", "shape": [-1, 1], "default": "",
         "rules": [{"when": [{"input": "x", "index": 0, "op": ">", "value": 0}], "then": "security"}]},
        {"name": "top_features", "datatype": "BYTES", "shape": [-1, 2], "default": ["-", "-"],
         "rules": [{"when": [{"input": "x", "index": 0, "op": ">", "value": 0}],
                    "then": ["hash_hex_entropy", "hash_length_ok"]}]},
    ],
}

Got = list[tuple[str, dict[str, Any]]]


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[tuple[int, Got]]:
    got: Got = []

    async def handle(request: web.Request) -> web.Response:
        got.append((request.path, await request.json()))
        return web.json_response({"status": "success"}, status=202 if request.path == "/pd" else 200)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port, got
    finally:
        await runner.cleanup()


def _req(xs: list[float]) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="verdict", id="req-1")
    x = np.array(xs, np.float32).reshape(-1, 1)
    req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


async def test_severe_answers_reach_the_sinks(receiver: tuple[int, Got], tmp_path: Path) -> None:
    port, got = receiver
    repo = tmp_path / "repo"
    write_rules(repo, name="verdict", spec=VERDICT)
    config = tmp_path / "alerts.json"
    config.write_text(json.dumps({"sinks": [
        {"name": "ops", "kind": "slack", "url": f"http://127.0.0.1:{port}/slack", "min_severity": "HIGH"},
        {"name": "pager", "kind": "pagerduty", "url": f"http://127.0.0.1:{port}/pd", "routing_key": "k" * 32,
         "min_severity": "LOW", "dedup_window_s": 300},
    ]}))
    with ServerProcess(repo, "--alerts-config", str(config)) as srv:
        async with grpc.aio.insecure_channel(srv.address) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            await stub.ModelInfer(_req([-1, -2]))      # NONE: nothing to send
            await stub.ModelInfer(_req([5.0, 0.5]))    # CRITICAL and LOW
            await stub.ModelInfer(_req([5.0]))              # CRITICAL again: de-duplicated
            for _ in range(100):
                if len(got) >= 2:
                    break
                await asyncio.sleep(0.05)
        assert srv.stop() == 0, srv.output()
    paths = sorted(p for p, _ in got)
    assert paths == ["/pd", "/slack"], got  # pager: the first row's alert (the LOW one shares its dedup key)
    slack = next(body for p, body in got if p == "/slack")
    assert "CRITICAL" in slack["text"] and "security" in json.dumps(slack["blocks"])
    pd = next(body for p, body in got if p == "/pd")
    assert pd["event_action"] == "trigger" and pd["routing_key"] == "k" * 32
    assert pd["payload"]["severity"] == "critical" and pd["payload"]["source"] == "infer/verdict"
    assert pd["payload"]["custom_details"]["top_features"] == ["hash_hex_entropy", "hash_length_ok"]
