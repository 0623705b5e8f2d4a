"""Model control: explicit mode, reloads under load that fail no request, the embedded default repository."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from fixtures import DENSE_CONFIG, ServerProcess, write_dense, write_double

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

Explicit = tuple[ServerProcess, pb_grpc.GRPCInferenceServiceStub]


def _request(model: str, x: np.ndarray, name: str = "x", version: str = "") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, model_version=version)
    req.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


def _y(resp: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(list(resp.outputs[0].shape))


@pytest_asyncio.fixture(loop_scope="session")
async def explicit(tmp_path: Path) -> AsyncIterator[Explicit]:
    write_double(tmp_path, versions=(1, 2))
    write_dense(tmp_path, config=DENSE_CONFIG)
    srv = ServerProcess(tmp_path, "--model-control-mode", "explicit", "--load-model", "double").wait_ready()
    async with grpc.aio.insecure_channel(srv.address) as ch:
        yield srv, pb_grpc.GRPCInferenceServiceStub(ch)
    assert srv.stop() == 0, srv.output()


async def test_explicit_mode_loads_only_what_it_is_told(explicit: Explicit) -> None:
    _, stub = explicit
    models = (await stub.RepositoryIndex(pb.RepositoryIndexRequest())).models
    index = {(m.name, m.version): (m.state, m.reason) for m in models}
    assert index[("double", "2")][0] == "READY"
    assert index[("dense", "")] == ("UNAVAILABLE", "unloaded")
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready  # everything asked for is loaded
    x = np.ones((1, 64), np.float32)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.ModelInfer(_request("dense", x))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "not loaded" in (e.value.details() or "")
    await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="dense"))
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="dense"))).ready
    assert _y(await stub.ModelInfer(_request("dense", x))).shape == (1, 8)
    await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="dense"))
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="dense"))).ready


async def test_reloading_under_load_fails_no_request(explicit: Explicit) -> None:
    _, stub = explicit
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    stop = asyncio.Event()
    seen: list[float] = []
    failures: list[str] = []

    async def client() -> None:
        while not stop.is_set():
            try:
                y = _y(await stub.ModelInfer(_request("double", x)))
                seen.append(float(y[0, 1] / x[0, 1]))
            except grpc.aio.AioRpcError as e:
                failures.append(f"{e.code().name}: {e.details()}")

    clients = [asyncio.create_task(client()) for _ in range(16)]
    await asyncio.sleep(0.2)
    override = '{"name": "double", "platform": "onnxruntime_onnx", "max_batch_size": 8, ' \
               '"version_policy": {"specific": {"versions": [1]}}}'
    for config in ("", override, "", override, ""):
        params = {"config": pb.ModelRepositoryParameter(string_param=config)} if config else {}
        await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="double", parameters=params))
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*clients)
    assert failures == []
    assert len(seen) > 50
    assert set(seen) == {2.0, 4.0}  # version 1 (x*2) while the override held, version 2 (x*4) otherwise
    assert seen[-1] == 4.0


async def test_the_embedded_default_repository_is_built_and_served(tmp_path: Path) -> None:
    srv = ServerProcess(None, env={"INFER_HOME": str(tmp_path)}).wait_ready(timeout=300)
    try:
        async with grpc.aio.insecure_channel(srv.address) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
            md = await stub.ModelMetadata(pb.ModelMetadataRequest(name="anomaly"))
            assert md.platform == "ensemble" and "content_hash" in [i.name for i in md.inputs]
            assert [o.name for o in md.outputs][:4] == ["score", "is_anomalous", "severity", "anomaly_type"]
    finally:
        assert srv.stop() == 0, srv.output()
    repo = tmp_path / "model_repository"
    assert (repo / "anomaly_iforest" / "1" / "model.onnx").is_file()
    assert "## Held-out evaluation" in (repo / "anomaly" / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["probe", "--help"], ["models", "list", "--help"],
                                  ["version"]])
def test_cli_commands_answer(args: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "infer.cli", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert ("usage:" in out.stdout) or out.stdout.startswith("infer ")


async def test_models_list_shows_states(explicit: Explicit) -> None:
    srv, _ = explicit
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "infer.cli", "models", "list", "--address",
                                                   srv.address], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert any(line.split()[:3] == ["double", "2", "READY"] for line in out.stdout.splitlines())
