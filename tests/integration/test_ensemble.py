"""Ensembles against the real server: a pipeline whose stages are batched by their own schedulers, fan-out
and fan-in, explicit loading of composing models, bad wiring refused at load, and tritonclient's view."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from fixtures import ServerProcess, write_double, write_ensemble, write_rules

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

# x -> double (x2) -> rules -> "label"; and the doubled x itself as a second output
PIPE = """
name: "pipe"
platform: "ensemble"
max_batch_size: 16
input [{ name: "x" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "doubled" data_type: TYPE_FP32 dims: [4] }, { name: "label" data_type: TYPE_FP32 dims: [4] }]
ensemble_scheduling { step [
  { model_name: "rules" model_version: -1 input_map { key: "x" value: "doubled" }
    output_map { key: "y" value: "label" } },
  { model_name: "double" model_version: -1 input_map { key: "x" value: "x" } output_map { key: "y" value: "doubled" } }
] }
"""

# fan-out to two models on the same input, then fan-in: double(x) and spare(x) both feed "twice"
FAN = """
name: "fan"
platform: "ensemble"
max_batch_size: 16
input [{ name: "x" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "a" data_type: TYPE_FP32 dims: [4] }, { name: "b" data_type: TYPE_FP32 dims: [4] }]
ensemble_scheduling { step [
  { model_name: "double" model_version: -1 input_map { key: "x" value: "x" } output_map { key: "y" value: "a" } },
  { model_name: "spare" model_version: -1 input_map { key: "x" value: "x" } output_map { key: "y" value: "s" } },
  { model_name: "twice" model_version: -1 input_map { key: "x" value: "s" } output_map { key: "y" value: "b" } }
] }
"""

BROKEN = """
name: "broken"
platform: "ensemble"
max_batch_size: 16
input [{ name: "x" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]
ensemble_scheduling { step [
  { model_name: "double" model_version: -1 input_map { key: "x" value: "x" } output_map { key: "nope" value: "y" } }
] }
"""


Served = tuple[ServerProcess, pb_grpc.GRPCInferenceServiceStub]


def _req(model: str, x: np.ndarray) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.astype(np.float32).tobytes())
    return req


def _outputs(r: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    return {o.name: np.frombuffer(raw, np.float32).reshape(list(o.shape))
            for o, raw in zip(r.outputs, r.raw_output_contents, strict=True)}


@pytest_asyncio.fixture(loop_scope="session")
async def stub(tmp_path: Path) -> AsyncIterator[Served]:
    repo = tmp_path / "repo"
    for name in ("double", "spare", "twice"):
        write_double(repo, name=name)
    write_rules(repo)
    write_ensemble(repo, "pipe", PIPE)
    write_ensemble(repo, "fan", FAN)
    write_ensemble(repo, "broken", BROKEN)
    # explicit mode, only the ensembles asked for: their composing models load with them
    srv = ServerProcess(repo, "--model-control-mode", "explicit", "--load-model", "pipe", "--load-model", "fan",
                        "--load-model", "broken").wait_ready()
    async with grpc.aio.insecure_channel(srv.address) as ch:
        yield srv, pb_grpc.GRPCInferenceServiceStub(ch)
    assert srv.stop() == 0, srv.output()


async def test_a_pipeline_answers_like_its_stages_composed(stub: Served) -> None:
    _, infer = stub
    index = {(m.name, m.state) for m in (await infer.RepositoryIndex(pb.RepositoryIndexRequest())).models}
    assert {("pipe", "READY"), ("double", "READY"), ("rules", "READY"), ("fan", "READY")} <= index
    md = await infer.ModelMetadata(pb.ModelMetadataRequest(name="pipe"))
    assert md.platform == "ensemble" and [o.name for o in md.outputs] == ["doubled", "label"]
    x = np.array([[1, 0, 0, 1], [60, 0, 0, 9], [-1, 0, 0, 0]], np.float32)
    out = _outputs(await infer.ModelInfer(_req("pipe", x)))
    np.testing.assert_array_equal(out["doubled"], 2 * x)
    # rules on 2x: row 0: 2 > 0 and 2 <= 5 -> [5..8]; row 1: 120 > 100 -> 1; row 2: default 0
    assert out["label"].tolist() == [[5, 6, 7, 8], [1, 1, 1, 1], [0, 0, 0, 0]]


async def test_fan_out_and_in_and_batching_per_stage(stub: Served) -> None:
    _, infer = stub
    rows = [np.full((1, 4), float(i), np.float32) for i in range(64)]
    replies = await asyncio.gather(*[infer.ModelInfer(_req("fan", x)) for x in rows])
    for x, r in zip(rows, replies, strict=True):
        out = _outputs(r)
        np.testing.assert_array_equal(out["a"], 2 * x)
        np.testing.assert_array_equal(out["b"], 4 * x)  # spare then twice
    stats = {s.name: s for s in (await infer.ModelStatistics(pb.ModelStatisticsRequest())).model_stats}
    assert stats["fan"].inference_stats.success.count == 64
    twice = stats["twice"]
    assert twice.inference_stats.success.count == 64
    assert twice.execution_count <= twice.inference_count  # stages batch requests of concurrent pipelines


async def test_bad_wiring_fails_the_load_and_nothing_else(stub: Served) -> None:
    _, infer = stub
    index = {m.name: m for m in (await infer.RepositoryIndex(pb.RepositoryIndexRequest())).models}
    assert "broken" not in index or index["broken"].state != "READY"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await infer.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="broken"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output_map names 'nope'" in (e.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await infer.ModelInfer(_req("pipe", np.zeros((1, 5), np.float32)))  # checked at the ensemble's door
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "model 'pipe'" in (e.value.details() or "")
    out = _outputs(await infer.ModelInfer(_req("pipe", np.ones((1, 4), np.float32))))
    assert out["doubled"].tolist() == [[2, 2, 2, 2]]


async def test_an_unloaded_step_unreadies_the_ensemble_until_it_returns(stub: Served) -> None:
    _, infer = stub
    assert (await infer.ModelReady(pb.ModelReadyRequest(name="pipe"))).ready
    await infer.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="rules"))
    assert not (await infer.ModelReady(pb.ModelReadyRequest(name="pipe"))).ready  # a step is gone
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await infer.ModelInfer(_req("pipe", np.ones((1, 4), np.float32)))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    await infer.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="rules"))
    assert (await infer.ModelReady(pb.ModelReadyRequest(name="pipe"))).ready
    out = _outputs(await infer.ModelInfer(_req("pipe", np.ones((1, 4), np.float32))))
    assert out["label"].tolist() == [[5, 6, 7, 8]]
