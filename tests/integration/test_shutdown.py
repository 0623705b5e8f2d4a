"""SIGTERM while requests are in flight: every request the server accepted is answered, then it exits 0.

"Accepted" is checked on the server, not guessed from timing: before the signal the test reads the
metrics port until every request is queued, executing or answered. With 32-row requests and
``max_batch_size: 32`` each batch is one request, and while anything is queued both instances are
busy, so accepted = queued + INSTANCES + answered.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fixtures import DENSE_CONFIG, ServerProcess, onnx_run, write_dense

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

IN_FLIGHT = 50
LATE = 10
ROWS = 32  # = max_batch_size of DENSE_CONFIG: one request per batch
INSTANCES = 2  # instance_group count of DENSE_CONFIG
assert "max_batch_size: 32" in DENSE_CONFIG and "count: 2" in DENSE_CONFIG


def request(x: np.ndarray) -> Any:
    return pb.ModelInferRequest(
        model_name="dense",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=list(x.shape))],
        raw_input_contents=[x.tobytes()],
    )


def result(resp: Any) -> np.ndarray:
    assert [(o.name, list(o.shape)) for o in resp.outputs] == [("y", [ROWS, 8])]
    return np.frombuffer(resp.raw_output_contents[0], "<f4").reshape(ROWS, 8)


def scrape(port: int) -> tuple[float, float]:
    """(queued, answered with success) for dense version 1, from one consistent /metrics read."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()

    def value(metric: str) -> float:
        m = re.search(rf'^{metric}\{{model="dense",version="1"\}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    return value("infer_queued_requests"), value("infer_request_success_total")


async def wait_all_accepted(port: int, answered_before: float) -> None:
    end = time.monotonic() + 20
    seen: tuple[float, float] = (0.0, 0.0)
    while time.monotonic() < end:
        queued, answered = seen = await asyncio.to_thread(scrape, port)
        if queued >= 1 and queued + INSTANCES + answered - answered_before >= IN_FLIGHT:
            return
        if not queued and answered - answered_before >= IN_FLIGHT - INSTANCES:
            pytest.fail(f"the queue drained before the test saw every request accepted: {seen}")
        await asyncio.sleep(0.002)
    pytest.fail(f"requests not all accepted in time (queued, answered): {seen}")


async def test_sigterm_drains_accepted_requests(tmp_path: Path) -> None:
    model = write_dense(tmp_path / "repo", hidden=2048, config=DENSE_CONFIG)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((ROWS, 64)).astype("<f4") for _ in range(IN_FLIGHT + LATE)]
    expected = onnx_run(model, {"x": np.concatenate(xs)})[0].reshape(IN_FLIGHT + LATE, ROWS, 8)

    srv = ServerProcess(model.parent)
    try:
        await asyncio.to_thread(srv.wait_ready, 60)
        async with grpc.aio.insecure_channel(srv.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            first = result(await stub.ModelInfer(request(xs[0]), timeout=30))
            np.testing.assert_allclose(first, expected[0], rtol=1e-4, atol=1e-4)
            _, answered_before = await asyncio.to_thread(scrape, srv.metrics_port)

            calls = [asyncio.ensure_future(stub.ModelInfer(request(x), timeout=30)) for x in xs[:IN_FLIGHT]]
            await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
            await wait_all_accepted(srv.metrics_port, answered_before)
            srv.proc.send_signal(signal.SIGTERM)
            answered_at_signal = sum(c.done() for c in calls)

            await asyncio.sleep(0.05)
            late = [asyncio.ensure_future(stub.ModelInfer(request(x), timeout=30)) for x in xs[IN_FLIGHT:]]
            accepted = await asyncio.gather(*calls, return_exceptions=True)
            after = await asyncio.gather(*late, return_exceptions=True)
        code = await asyncio.to_thread(srv.proc.wait, 30)
    finally:
        srv.stop()
    log = srv.log.read_text()

    lost = [(i, r) for i, r in enumerate(accepted) if isinstance(r, BaseException)]
    assert not lost, f"{len(lost)} accepted requests failed, first: {lost[0]}\n{log}"
    assert answered_at_signal < IN_FLIGHT, "the signal came after every request was answered"
    for i, resp in enumerate(accepted):
        np.testing.assert_allclose(result(resp), expected[i], rtol=1e-4, atol=1e-4)

    refused = [r for r in after if isinstance(r, BaseException)]
    assert all(isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.UNAVAILABLE for r in refused), (
        refused
    )
    for i, resp in enumerate(after):  # a late request the server still took must be right too
        if not isinstance(resp, BaseException):
            np.testing.assert_allclose(result(resp), expected[IN_FLIGHT + i], rtol=1e-4, atol=1e-4)
    print(f"\nin flight at SIGTERM: {IN_FLIGHT - answered_at_signal}/{IN_FLIGHT}, all answered; "
          f"sent after SIGTERM: {LATE - len(refused)} answered, {len(refused)} refused UNAVAILABLE")
    assert code == 0, log
