"""Health as probes see it: grpc.health.v1, reflection, the ``infer probe`` command and the metrics port."""

from __future__ import annotations

import asyncio
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from fixtures import ROOT, ServerProcess
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def health(channel: grpc.aio.Channel) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(channel)


@pytest.mark.parametrize("service", ["", "ready", "model/double", "inference.GRPCInferenceService"])
async def test_check_serving(health: health_pb2_grpc.HealthStub, service: str) -> None:
    resp = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert resp.status == SERVING


async def test_check_unknown_model_is_not_found(health: health_pb2_grpc.HealthStub) -> None:
    # The standard health servicer answers a service it was never told about with NOT_FOUND,
    # which is what a probe should see for a model the repository does not hold.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health.Check(health_pb2.HealthCheckRequest(service="model/nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_ready_yields_serving(health: health_pb2_grpc.HealthStub) -> None:
    call = health.Watch(health_pb2.HealthCheckRequest(service="ready"), timeout=10)
    try:
        first = await call.read()
        assert first.status == SERVING
    finally:
        call.cancel()


async def test_reflection_lists_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(timeout=10)
    try:
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        resp = await call.read()
        await call.done_writing()
    finally:
        call.cancel()
    names = {s.name for s in resp.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names, names


async def probe(address: str, service: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "infer.cli", "probe", "--address", address, "--service", service, "--timeout", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_probe_cli(server: ServerProcess, tmp_path: Path) -> None:
    rc, out = await probe(server.address, "ready")
    assert rc == 0, out
    assert "ready: SERVING" in out
    rc, out = await probe(server.address, "model/nope")
    assert rc != 0, out

    empty = tmp_path / "empty-repo"
    empty.mkdir()
    stopped = ServerProcess(empty)
    try:
        await asyncio.to_thread(stopped.wait_ready, 60)
        rc, out = await probe(stopped.address, "")
        assert rc == 0, out
    finally:
        code = stopped.stop()
        assert code == 0, stopped.log.read_text()  # output() needs the log still open
    rc, out = await probe(stopped.address, "ready")
    assert rc != 0, out
    assert "UNAVAILABLE" in out


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode()


SUCCESS = re.compile(r'^infer_request_success_total\{model="double",version="1"\} (\S+)$', re.M)


def success_count(text: str) -> float:
    m = SUCCESS.search(text)
    return float(m.group(1)) if m else 0.0


async def test_metrics_port(server: ServerProcess, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    status, before = await asyncio.to_thread(http_get, server.metrics_port, "/metrics")
    assert status == 200
    x = np.ones((1, 4), "<f4")
    req = pb.ModelInferRequest(
        model_name="double", model_version="1", raw_input_contents=[x.tobytes()],
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])],
    )
    resp = await stub.ModelInfer(req, timeout=10)
    assert np.frombuffer(resp.raw_output_contents[0], "<f4").tolist() == [2.0] * 4
    status, after = await asyncio.to_thread(http_get, server.metrics_port, "/metrics")
    assert status == 200
    assert SUCCESS.search(after), after[:2000]
    assert success_count(after) >= success_count(before) + 1
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert await asyncio.to_thread(http_get, server.metrics_port, path) == (200, "OK\n")


async def test_a_model_that_fails_to_load_keeps_the_server_unready(tmp_path: Path) -> None:
    """Triton's strict readiness, whether the config or the model file is what fails: alive, serving the good
    models, not ready, and the repository index says why."""
    from fixtures import write_double

    for broken in ("config", "file"):
        repo = tmp_path / broken
        write_double(repo)
        bad = write_double(repo, name="broken")
        if broken == "config":
            (bad / "config.pbtxt").write_text("name: 'broken' max_batch_size: {{ not pbtxt")
        else:
            (bad / "1" / "model.onnx").write_bytes(b"not an onnx file")
        server = ServerProcess(repo)
        try:
            await asyncio.to_thread(server.wait_ready, 60)
            assert (await probe(server.address, ""))[0] == 0
            rc, out = await probe(server.address, "ready")
            assert rc != 0 and "NOT_SERVING" in out, out
            assert (await probe(server.address, "model/double"))[0] == 0
            async with grpc.aio.insecure_channel(server.address) as ch:
                index = await pb_grpc.GRPCInferenceServiceStub(ch).RepositoryIndex(pb.RepositoryIndexRequest(),
                                                                                  timeout=10)
            entry = next(m for m in index.models if m.name == "broken")
            assert entry.state == "UNAVAILABLE" and entry.reason, (broken, entry)
        finally:
            server.stop()
