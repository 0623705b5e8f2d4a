"""Faults injected into real ONNX models behind the real server, and clients that misbehave.

Each fault model (``faultkit``) is a real ONNX graph that passes the zero-input warm-up and misbehaves on other
inputs: ``raising`` asks Reshape for an impossible shape, ``hanging`` runs an ONNX Loop whose trip count comes
from its input, ``nan`` takes square roots of negatives, logs of zero and 0/0. One server (module fixture) serves
them beside healthy models (``double``, ``spare``, ``heavy``).

What infer does with them, as tested here:
* a model that raises: its requests fail INTERNAL with ONNX Runtime's message (never UNKNOWN), the server keeps
  serving, the version turns DEGRADED once its error rate reaches ``infer.degrade_error_rate`` and ACTIVE again
  once it is under half of that; a fallback chain answers from its next link meanwhile;
* a model that hangs: the ``timeout`` parameter and the gRPC deadline are answered DEADLINE_EXCEEDED on time,
  whether the request is queued behind the stuck instance or in the stuck batch itself, a fallback chain's link
  timeout moves on to its next link, other models keep their latency, and the version turns DEGRADED once its p99
  compute time passes ``infer.degrade_p99_ms``;
* a model that returns NaN: answered faithfully, bit for bit what ONNX Runtime computed. A NaN is a value the
  model computed, not a failure: the version stays ACTIVE and nothing is refused. infer has no NaN check on the
  serving path (nothing in the data plane, scheduler or runtimes looks at output values), and adding one would
  put a pass over every output on the hot path and refuse answers that models such as the forecasting candidates
  return on purpose (NaN = no backtest);
* clients that cancel, disconnect mid-stream or send 1 ms deadlines leave no asyncio tasks behind and no memory
  growth (RSS and the ``infer_event_loop_tasks`` gauge, before and after).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import pytest_asyncio
from faultkit import (
    RssSampler,
    hang_units,
    latencies_ms,
    loop_tasks,
    output,
    p50,
    proc_status,
    report,
    request,
    rss_mb,
    sample,
    settled_tasks,
    status_of,
    write_hanging,
    write_heavy,
    write_nan,
    write_raising,
)
from fixtures import ServerProcess, model_state, onnx_run, scrape_metrics, write_double
from google.protobuf import json_format

from infer._proto import control_pb2 as cpb
from infer._proto import control_pb2_grpc as cpb_grpc
from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

Stub = pb_grpc.GRPCInferenceServiceStub
OK, INTERNAL = grpc.StatusCode.OK, grpc.StatusCode.INTERNAL
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED

# DEGRADED at 50 % errors over the last 20 requests once 10 are in; ACTIVE again under 25 %
HEALTH = {"infer.degrade_error_rate": "0.5", "infer.health_window": "20", "infer.health_min_requests": "10"}
HANG_S = 2.0  # how long the hanging model is kept busy (input value calibrated on this machine)
ROUNDS = 10  # of misbehaving clients
SLOW_MS = 1000  # hanging's infer.degrade_p99_ms: the long hang passes it, a 0.2 s batch does not


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("faults")
    write_raising(repo, "raising", **HEALTH)
    write_raising(repo, "flaky", **HEALTH)
    write_hanging(repo, **{"infer.degrade_p99_ms": str(SLOW_MS), "infer.health_min_requests": "5"})
    write_nan(repo)
    write_double(repo)
    write_double(repo, name="spare")
    write_heavy(repo, rows=192, queue=64)
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(repo).wait_ready()
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def channel(server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> Stub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture
def control(channel: grpc.aio.Channel) -> cpb_grpc.ControlPlaneStub:
    return cpb_grpc.ControlPlaneStub(channel)


async def state(server: ServerProcess, model: str) -> str:
    return model_state(await asyncio.to_thread(scrape_metrics, server.metrics_port), model)


async def index_reason(stub: Stub, model: str) -> str:
    resp = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
    return next(m.reason for m in resp.models if m.name == model)


async def model_stats(stub: Stub, model: str) -> Any:
    return (await stub.ModelStatistics(pb.ModelStatisticsRequest(name=model, version="1"))).model_stats[0]


def recovers_after(outcomes: list[bool], window: int = 20, min_requests: int = 10, rate: float = 0.5) -> int:
    """How many good requests after ``outcomes`` bring the error rate under half of ``rate`` (HealthWindow's rule)."""
    w: deque[bool] = deque(outcomes, maxlen=window)
    for k in range(1, 10 * window):
        w.append(True)
        if len(w) >= min_requests and w.count(False) / len(w) < rate / 2:
            return k
    raise AssertionError("never recovers")


def link(r: Any) -> tuple[str, int]:
    return r.parameters["infer.target"].string_param, r.parameters["infer.fallback_depth"].int64_param


# ---- a model that raises ------------------------------------------------------------------------


async def test_a_model_that_raises_fails_clearly_turns_degraded_and_recovers(stub: Stub, server: ServerProcess) -> None:
    good, bad = request("raising", 0.0), request("raising", 1.0)
    for _ in range(5):
        assert output(await stub.ModelInfer(good)).tolist() == [[0.0] * 4]
    for i in range(5):
        code, err = await status_of(stub.ModelInfer(bad))
        assert code == INTERNAL, code  # a named status with the runtime's message, never UNKNOWN
        assert "onnxruntime failed" in err.details() and "Reshape" in err.details()
        assert "Traceback" not in err.details()
        assert output(await stub.ModelInfer(request("double", 1.0))).tolist() == [[2.0] * 4]  # still serving
        # 5 good + 5 bad = 10 requests (health_min_requests) at 50 %: DEGRADED with the fifth failure, not before
        assert await state(server, "raising") == ("DEGRADED" if i == 4 else "ACTIVE")
    assert (await index_reason(stub, "raising")).startswith("DEGRADED: error rate 50%")
    # a DEGRADED version still takes its own traffic (only deployments skip it): ready, and bad inputs still fail
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="raising"))).ready
    assert (await status_of(stub.ModelInfer(bad)))[0] == INTERNAL
    k = recovers_after([True] * 5 + [False] * 6)
    for j in range(1, k + 1):
        assert output(await stub.ModelInfer(good)).tolist() == [[0.0] * 4]
        assert await state(server, "raising") == ("ACTIVE" if j == k else "DEGRADED"), j
    s = await model_stats(stub, "raising")
    assert (s.inference_stats.success.count, s.inference_stats.fail.count) == (5 + k, 6)
    text = await asyncio.to_thread(scrape_metrics, server.metrics_port)
    assert sample(text, "infer_request_failure_total", model="raising", reason="INTERNAL") == 6
    report("raises", requests=11 + k, failed=6, degraded_after=10, recovered_after_good=k)


async def test_a_fallback_chain_answers_for_a_model_that_raises(
    stub: Stub, control: cpb_grpc.ControlPlaneStub, server: ServerProcess
) -> None:
    dep = {"name": "flaky-safe", "variants": [{"target": {"model": "flaky"}, "weight": 1}],
           "fallback": [{"model": "spare"}]}
    await control.SetDeployment(json_format.ParseDict(dep, cpb.Deployment()))
    r = await stub.ModelInfer(request("flaky-safe", 0.0))
    assert link(r) == ("flaky:latest", 0) and r.model_name == "flaky"
    bad = 0
    while await state(server, "flaky") == "ACTIVE":
        r = await stub.ModelInfer(request("flaky-safe", 3.0))  # flaky raises: spare (y = 2x) answers
        bad += 1
        assert link(r) == ("spare:latest", 1) and r.model_name == "spare"
        assert output(r).tolist() == [[6.0] * 4]
        assert bad <= 10
    assert bad == 9  # 1 good + 9 bad = 10 requests at 90 %
    # DEGRADED: the deployment skips flaky straight away, even for inputs flaky could answer
    before = (await model_stats(stub, "flaky")).inference_stats
    for _ in range(3):
        assert link(await stub.ModelInfer(request("flaky-safe", 0.0))) == ("spare:latest", 1)
    after = (await model_stats(stub, "flaky")).inference_stats
    assert (after.success.count, after.fail.count) == (before.success.count, before.fail.count)
    # direct traffic heals it (a deployment sends a DEGRADED version none), then the deployment uses it again
    k = recovers_after([True] + [False] * 9)
    for _ in range(k):
        await stub.ModelInfer(request("flaky", 0.0))
    assert await state(server, "flaky") == "ACTIVE"
    assert link(await stub.ModelInfer(request("flaky-safe", 0.0))) == ("flaky:latest", 0)
    text = await asyncio.to_thread(scrape_metrics, server.metrics_port)
    attempts = {o: sample(text, "infer_deployment_attempts_total", deployment="flaky-safe", target="flaky:latest",
                          outcome=o) for o in ("success", "error")}
    assert attempts == {"success": 2, "error": bad}
    assert sample(text, "infer_deployment_attempts_total", deployment="flaky-safe", target="spare:latest",
                  outcome="success") == bad + 3
    report("raises behind a fallback chain", requests=1 + bad + 3 + 1, answered_by_fallback=bad + 3, lost=0)


# ---- a model that hangs -------------------------------------------------------------------------


async def test_a_model_that_hangs_is_answered_on_time_and_holds_no_other_model(
    stub: Stub, control: cpb_grpc.ControlPlaneStub, server: ServerProcess, repo: Path
) -> None:
    def double() -> Any:
        return stub.ModelInfer(request("double", 1.0))

    hang_x, slow_x = hang_units(repo / "hanging", HANG_S), hang_units(repo / "hanging", 0.2)
    base = await latencies_ms(double, 40)
    for _ in range(5):
        await stub.ModelInfer(request("hanging", 0.0, timeout=200_000))
    # Warm-up found hanging cheap, so its first batches run on the event loop: the first slow one holds the
    # loop for its length (0.2 s here), is answered DEADLINE_EXCEEDED late, and moves the model off the loop.
    code, _ = await status_of(stub.ModelInfer(request("hanging", slow_x, timeout=100_000)))
    assert code == DEADLINE
    held_loop = "hanging version 1 held the event loop" in server.output()  # unless warm-up found it over 250 us
    assert await state(server, "hanging") == "ACTIVE"  # p99 of 6 batches under 1 s

    dep = {"name": "hanging-safe", "variants": [{"target": {"model": "hanging"}, "weight": 1}],
           "fallback": [{"model": "spare"}], "link_timeout_us": 200_000}
    await control.SetDeployment(json_format.ParseDict(dep, cpb.Deployment()))
    executions = (await model_stats(stub, "hanging")).execution_count
    t0 = time.perf_counter()
    r = await stub.ModelInfer(request("hanging-safe", hang_x))  # starts the hang; the link times out
    assert link(r) == ("spare:latest", 1) and output(r).tolist() == [[2 * hang_x] * 4]
    by_param = stub.ModelInfer(request("hanging", hang_x, timeout=200_000))
    by_deadline = stub.ModelInfer(request("hanging", hang_x), timeout=0.2)
    good_queued = stub.ModelInfer(request("hanging", 0.0, timeout=200_000))
    (c1, e1), (c2, _), (c3, e3) = await asyncio.gather(*(status_of(c) for c in (by_param, by_deadline, good_queued)))
    assert (c1, c2, c3) == (DEADLINE, DEADLINE, DEADLINE)
    assert "deadline passed before execution" in e1.details() and "before execution" in e3.details()
    answered_s = time.perf_counter() - t0
    during = await latencies_ms(double, 40)
    # every answer above came while the stuck batch was still running: no execution finished meanwhile
    stuck = await model_stats(stub, "hanging")
    assert stuck.execution_count == executions
    assert sample(await asyncio.to_thread(scrape_metrics, server.metrics_port), "infer_inflight_requests",
                  model="hanging", version="1") >= 1
    assert p50(during) < 5 * p50(base) + 50, (p50(base), p50(during))

    end = time.monotonic() + 60
    while (await model_stats(stub, "hanging")).execution_count == executions and time.monotonic() < end:
        await asyncio.sleep(0.1)
    hang_s = time.perf_counter() - t0
    assert (await model_stats(stub, "hanging")).execution_count == executions + 1  # the queued ones never ran
    assert answered_s < hang_s / 2, (answered_s, hang_s)
    assert await state(server, "hanging") == "DEGRADED"
    assert "p99 compute time" in await index_reason(stub, "hanging")
    # DEGRADED: the deployment answers from spare without trying hanging
    assert link(await stub.ModelInfer(request("hanging-safe", 0.0))) == ("spare:latest", 1)
    # one outlier does not make the scheduler refuse requests whose deadline a normal batch meets
    for _ in range(50):
        assert output(await stub.ModelInfer(request("hanging", 0.0, timeout=200_000))).tolist() == [[0.0] * 4]
    assert await state(server, "hanging") == "ACTIVE"  # the slow batch left the 50-batch p99 window
    assert link(await stub.ModelInfer(request("hanging-safe", 0.0))) == ("hanging:latest", 0)
    report("hangs past its timeout", first_slow_batch_held_the_loop=held_loop, hang_s=round(hang_s, 2),
           answered_within_s=round(answered_s, 3),
           healthy_p50_ms_before=round(p50(base), 2), healthy_p50_ms_during=round(p50(during), 2), lost=0)


# ---- a model that returns NaN ---------------------------------------------------------------------


async def test_a_model_that_returns_nan_is_answered_faithfully_and_stays_active(
    stub: Stub, control: cpb_grpc.ControlPlaneStub, server: ServerProcess, repo: Path
) -> None:
    x = np.array([[-1.0, 0.0, 0.0, 0.0], [4.0, 1.0, 1.0, 2.0], [-4.0, -1.0, 5.0, 0.0]], np.float32)
    expected = onnx_run(repo / "nan", {"x": x})[0]
    assert np.isnan(expected).any() and np.isinf(expected).any()
    # through a deployment whose shadow is the same model: the same NaNs in the same places are a match
    dep = {"name": "nan-bg", "variants": [{"target": {"model": "nan"}, "weight": 1}], "shadow": {"model": "nan"}}
    await control.SetDeployment(json_format.ParseDict(dep, cpb.Deployment()))
    for i in range(30):
        got = output(await stub.ModelInfer(request("nan" if i % 2 else "nan-bg", x)))
        assert got.tobytes() == expected.tobytes()  # NaN, -inf, +inf where ONNX Runtime put them, bit for bit
    for _ in range(100):
        shadow = (await control.GetDeployment(cpb.DeploymentRef(name="nan-bg"))).shadow_stats
        if shadow.compared + shadow.errors + shadow.skipped >= 15:
            break
        await asyncio.sleep(0.02)
    assert (shadow.compared, shadow.matched, shadow.max_abs_diff) == (15, 15, 0.0)
    assert await state(server, "nan") == "ACTIVE"
    s = await model_stats(stub, "nan")
    assert s.inference_stats.fail.count == 0 and s.inference_stats.success.count == 45  # 30 answers + 15 shadows
    report("returns NaN", requests=30, answered=30, shadow_matched=15, state="ACTIVE")


# ---- clients that misbehave ------------------------------------------------------------------------


async def misbehave(server: ServerProcess, stub: Stub, rng: np.random.Generator) -> tuple[dict[str, int], int]:
    """One round: 100 calls to ``heavy`` (about 5 ms each, one instance) cancelled 0-30 ms after they are sent,
    so queued, running and finished ones are cancelled; 8 streams dropped mid-way by closing their channel; 200
    calls with a 1 ms deadline (and 40 with 3 ms). Returns how each call ended as the client saw it, and the
    server's task count while the cancelled calls were in flight."""
    seen: dict[str, int] = {}

    def count(code: grpc.StatusCode) -> None:
        seen[code.name] = seen.get(code.name, 0) + 1

    async def cancelled(delay: float) -> None:
        call = stub.ModelInfer(request("heavy", 1.0))
        await asyncio.sleep(delay)
        call.cancel()
        count((await status_of(call))[0])

    pending = asyncio.gather(*(cancelled(d) for d in rng.uniform(0, 0.03, 100)))
    await asyncio.sleep(0.01)
    in_flight = await asyncio.to_thread(loop_tasks, server.metrics_port)
    await pending

    async def dropped_stream() -> None:
        ch = grpc.aio.insecure_channel(server.address)
        call = pb_grpc.GRPCInferenceServiceStub(ch).ModelStreamInfer()
        for i in range(6):
            req = request("heavy" if i % 2 else "double", 1.0)
            req.id = str(i)
            await call.write(req)
        await call.read()  # one answer, then the client goes away without closing its side
        await ch.close(grace=None)
        count(grpc.StatusCode.CANCELLED)

    await asyncio.gather(*(dropped_stream() for _ in range(8)))
    timeouts = [0.001] * 100 + [0.003] * 20
    short = [stub.ModelInfer(request(m, 1.0), timeout=t) for m in ("heavy", "double") for t in timeouts]
    for code, _ in await asyncio.gather(*(status_of(c) for c in short)):
        count(code)
    return seen, in_flight


ROUND = 100 + 8 + 240


async def test_clients_that_cancel_disconnect_or_give_1ms_deadlines_leak_nothing(
    stub: Stub, server: ServerProcess
) -> None:
    pid, port = server.proc.pid, server.metrics_port
    rng = np.random.default_rng(0)
    await misbehave(server, stub, rng)  # warm-up: first-use allocations (arenas, channels) are not a leak
    await asyncio.sleep(0.5)
    tasks_before = await settled_tasks(port, at_most=10**6)
    await asyncio.sleep(0.2)
    tasks_before = min(tasks_before, await asyncio.to_thread(loop_tasks, port))
    rss_before, threads_before = rss_mb(pid), proc_status(pid)["Threads"]
    t0 = time.perf_counter()
    seen: dict[str, int] = {}
    tasks_peak = 0
    async with RssSampler(pid) as rss:
        for _ in range(ROUNDS):
            got, in_flight = await misbehave(server, stub, rng)
            tasks_peak = max(tasks_peak, in_flight)
            for code, n in got.items():
                seen[code] = seen.get(code, 0) + n
    elapsed = time.perf_counter() - t0
    tasks_after = await settled_tasks(port, at_most=tasks_before)
    await asyncio.sleep(0.5)
    rss_after, threads_after = rss_mb(pid), proc_status(pid)["Threads"]
    sent = ROUNDS * ROUND
    assert sum(seen.values()) == sent
    assert set(seen) <= {"OK", "CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}, seen  # queue: 64
    assert seen.get("DEADLINE_EXCEEDED", 0) > 0 and seen.get("CANCELLED", 0) >= ROUNDS * 8
    assert tasks_peak > tasks_before + 20  # the gauge sees the RPC handlers in flight...
    assert tasks_after <= tasks_before, (tasks_before, tasks_after)  # ...and none is left behind
    assert threads_after <= threads_before + 2, (threads_before, threads_after)
    assert rss_after - rss_before < 16, (rss_before, rss.peak, rss_after)
    # and the server serves normally right after
    assert output(await stub.ModelInfer(request("double", 1.0))).tolist() == [[2.0] * 4]
    report("clients cancel, drop streams, send 1 ms deadlines", sent=sent, outcomes=seen, seconds=round(elapsed, 1),
           rss_mb_before=round(rss_before, 1), rss_mb_peak=round(rss.peak, 1), rss_mb_after=round(rss_after, 1),
           tasks_before=tasks_before, tasks_peak=tasks_peak, tasks_after=tasks_after, threads_before=threads_before,
           threads_after=threads_after)
