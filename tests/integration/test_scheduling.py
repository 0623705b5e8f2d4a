"""The scheduler behind the real server: batching under concurrency, deadlines, backpressure, metrics.

``dense`` (session server) has max_batch_size 32, preferred [8, 16], a 2 ms queue delay, two
instances, two priority levels (default 2) and 256 requests per level. Statistics are compared
as deltas over each test, so the tests do not depend on their order.

An idle scheduler launches a request at once, so batches form only while executions run. The
session's ``dense`` computes one sample in tens of microseconds, less than the server spends
receiving one request, so one client never makes work pile up there. The batching assertions
therefore run on a second server (module fixture ``own``) serving the same DENSE_CONFIG on a
dense model with hidden size 2048 (about a millisecond a sample), beside ``slow``
(max_batch_size 1, one instance, max_queue_size 4) for the full-queue case.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import pytest_asyncio
from fixtures import DENSE_CONFIG, ServerProcess, onnx_run, write_dense
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

Stub = pb_grpc.GRPCInferenceServiceStub


def request(x: np.ndarray, model: str = "dense", **params: int) -> Any:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(np.ascontiguousarray(x, np.float32).tobytes())
    for key, value in params.items():
        req.parameters[key].int64_param = value
    return req


def output(resp: Any) -> np.ndarray:
    return np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(list(resp.outputs[0].shape))


async def stats(stub: Stub, model: str = "dense") -> Any:
    resp = await stub.ModelStatistics(pb.ModelStatisticsRequest(name=model, version="1"))
    return resp.model_stats[0]


def batch_counts(s: Any) -> dict[int, int]:
    return {b.batch_size: b.compute_infer.count for b in s.batch_stats}


async def warm(stub: Stub, n: int = 4) -> None:
    """A few sequential requests, so the latency curve knows batch size 1."""
    for _ in range(n):
        await stub.ModelInfer(request(np.zeros((1, 64), np.float32)))


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


async def burst_of_64(stub: Stub, model_dir: Path) -> tuple[int, int, dict[int, int]]:
    """64 concurrent batch-1 requests checked against in-process ONNX Runtime on the same file.

    Returns the deltas of inference_count, execution_count and executions per batch size.
    """
    x = np.random.default_rng(7).standard_normal((64, 64)).astype(np.float32)
    expected = onnx_run(model_dir, {"x": x})[0]
    before = await stats(stub)
    resps = await asyncio.gather(*(stub.ModelInfer(request(x[i : i + 1])) for i in range(64)))
    after = await stats(stub)

    got = np.concatenate([output(r) for r in resps])
    assert got.shape == (64, 8)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == 64
    assert 0 < executions <= inferences
    assert after.inference_stats.success.count - before.inference_stats.success.count == 64
    assert after.inference_stats.queue.count - before.inference_stats.queue.count == 64
    old, new = batch_counts(before), batch_counts(after)
    grown = {size: n - old.get(size, 0) for size, n in new.items() if n > old.get(size, 0)}
    assert sum(grown.values()) == executions
    assert sum(size * n for size, n in grown.items()) == 64
    return inferences, executions, grown


async def test_concurrent_requests_equal_onnxruntime(stub: Stub, repo: Path) -> None:
    await burst_of_64(stub, repo / "dense")


async def test_concurrent_requests_pile_up_into_batches(own: Stub, own_repo: Path) -> None:
    inferences, executions, grown = await burst_of_64(own, own_repo / "dense")
    assert executions < inferences, grown
    assert max(grown) > 1, grown


async def test_timeout_parameter_of_one_microsecond_is_deadline_exceeded(stub: Stub) -> None:
    await warm(stub)
    before = await stats(stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(request(np.ones((1, 64), np.float32), timeout=1))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "deadline" in (info.value.details() or "")
    after = await stats(stub)
    assert after.inference_count == before.inference_count  # never computed
    assert after.execution_count == before.execution_count
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert after.inference_stats.success.count == before.inference_stats.success.count


async def test_a_short_grpc_deadline_behind_a_heavy_queue_is_not_computed(stub: Stub) -> None:
    await warm(stub)
    before = await stats(stub)
    rng = np.random.default_rng(1)
    # 128 requests of 4 rows at priority 1 go first; the short one (3 rows) waits at level 2
    heavy = [asyncio.ensure_future(stub.ModelInfer(request(rng.standard_normal((4, 64)), priority=1)))
             for _ in range(128)]
    await asyncio.sleep(0)
    short = stub.ModelInfer(request(rng.standard_normal((3, 64))), timeout=0.0005)
    assert await code_of(short) == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.gather(*heavy)
    # one more level-2 request: whatever is left of the short one is taken (and dropped) before it
    await stub.ModelInfer(request(np.ones((1, 64), np.float32)))
    after = await stats(stub)
    assert after.inference_count - before.inference_count == 128 * 4 + 1  # the 3 rows never ran
    assert after.inference_stats.success.count - before.inference_stats.success.count == 129


SLOW_CONFIG = """
name: "slow"
platform: "onnxruntime_onnx"
max_batch_size: 1
input [ { name: "x" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 8 ] } ]
dynamic_batching { default_queue_policy { max_queue_size: 4 } }
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


@pytest.fixture(scope="module")
def own_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("own")
    write_dense(repo, hidden=2048, config=DENSE_CONFIG)
    write_dense(repo, name="slow", hidden=2048, config=SLOW_CONFIG)
    return repo


@pytest.fixture(scope="module")
def own_server(own_repo: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(own_repo).wait_ready()
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def own(own_server: ServerProcess) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(own_server.address) as ch:
        yield pb_grpc.GRPCInferenceServiceStub(ch)


def retry_delay_s(status: Any) -> float:
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    raise AssertionError(f"no RetryInfo in {status}")


async def test_a_full_queue_is_resource_exhausted_with_retry_info(own: Stub) -> None:
    before = await stats(own, "slow")
    x = np.ones((1, 64), np.float32)
    calls = [own.ModelInfer(request(x, model="slow")) for _ in range(64)]
    codes = await asyncio.gather(*(code_of(c) for c in calls))
    ok = [c for c, code in zip(calls, codes, strict=True) if code == grpc.StatusCode.OK]
    full = [c for c, code in zip(calls, codes, strict=True) if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert len(ok) + len(full) == 64, sorted({c.name for c in codes})
    assert ok and full, (len(ok), len(full))
    for call in full:
        status = await rpc_status.aio.from_call(call)
        assert status is not None and status.code == code_pb2.RESOURCE_EXHAUSTED
        assert "queue is full" in status.message
        assert retry_delay_s(status) > 0
    after = await stats(own, "slow")
    assert after.inference_count - before.inference_count == len(ok)
    assert after.execution_count - before.execution_count == len(ok)  # max_batch_size 1
    assert after.inference_stats.success.count - before.inference_stats.success.count == len(ok)
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == len(full)


def families(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(samples: Sequence[Any], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return float(found[0])


async def test_prometheus_shows_batch_sizes_and_executions(stub: Stub, server: ServerProcess) -> None:
    sizes = [1] * 16 + [3]  # the 3-row request makes at least one batch larger than 1
    await asyncio.gather(*(stub.ModelInfer(request(np.ones((n, 64), np.float32))) for n in sizes))
    s = await stats(stub)
    fams = await asyncio.to_thread(families, server.metrics_port)
    dense = {"model": "dense", "version": "1"}
    hist = fams["infer_batch_size"].samples
    assert value(hist, "infer_batch_size_count", **dense) == s.execution_count
    assert value(hist, "infer_batch_size_sum", **dense) == s.inference_count
    assert value(hist, "infer_batch_size_bucket", le="+Inf", **dense) == s.execution_count
    assert value(hist, "infer_batch_size_bucket", le="1.0", **dense) < s.execution_count  # some batches > 1
    executions = fams["infer_execution_count"].samples
    assert value(executions, "infer_execution_count_total", **dense) == s.execution_count
    inferences = fams["infer_inference_count"].samples
    assert value(inferences, "infer_inference_count_total", **dense) == s.inference_count
