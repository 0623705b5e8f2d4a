"""The whole fallback chain (primary -> secondary -> rule-based model -> default answer), per-deployment
Prometheus metrics, DEGRADED from latency, the served versions' lifecycle history, the `infer deploy` CLI
and the control plane run apart from the serving process."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from fixtures import ServerProcess, write_double, write_faulty, write_rules

from infer._proto import control_pb2 as cpb
from infer._proto import control_pb2_grpc as cpb_grpc
from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

SLOW_CONFIG = """
name: "slow"
platform: "onnxruntime_onnx"
max_batch_size: 8
parameters: { key: "infer.degrade_p99_ms" value: { string_value: "0.000001" } }
parameters: { key: "infer.health_min_requests" value: { string_value: "5" } }
"""

CHAIN = {
    "variants": [{"target": {"model": "faulty"}, "weight": 1}],
    "fallback": [{"model": "spare"}, {"model": "rules"}],
    "default_answer": {"outputs": [{"name": "y", "datatype": "FP32", "shape": [4], "numbers": [-1, -1, -1, -1]}]},
}


def _req(model: str, x: float = 1.0, rows: int = 1, dtype: str = "FP32") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, id=f"{model}-{time.monotonic_ns()}")
    data = np.full((rows, 4), x, np.float32)
    req.inputs.add(name="x", datatype=dtype, shape=list(data.shape))
    req.raw_input_contents.append(data.tobytes())
    return req


def _y(r: pb.ModelInferResponse) -> list[list[float]]:
    return np.frombuffer(r.raw_output_contents[0], np.float32).reshape(-1, 4).tolist()


def _link(r: pb.ModelInferResponse) -> tuple[str, int]:
    return r.parameters["infer.target"].string_param, r.parameters["infer.fallback_depth"].int64_param


def _scrape(srv: ServerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels} in /metrics")


Stubs = tuple[ServerProcess, pb_grpc.GRPCInferenceServiceStub, cpb_grpc.ControlPlaneStub]


@pytest_asyncio.fixture(loop_scope="session")
async def served(tmp_path: Path) -> AsyncIterator[Stubs]:
    repo = tmp_path / "repo"
    write_double(repo, name="spare")
    write_double(repo, name="slow", config=SLOW_CONFIG)
    write_faulty(repo)
    write_rules(repo)
    srv = ServerProcess(repo, "--registry-dir", str(tmp_path / "registry")).wait_ready()
    async with grpc.aio.insecure_channel(srv.address) as ch:
        yield srv, pb_grpc.GRPCInferenceServiceStub(ch), cpb_grpc.ControlPlaneStub(ch)
    assert srv.stop() == 0, srv.output()


async def test_every_link_of_the_chain_answers_in_turn(served: Stubs) -> None:
    srv, infer, control = served
    from google.protobuf import json_format

    dep = await control.SetDeployment(json_format.ParseDict({"name": "chain", **CHAIN}, cpb.Deployment()))
    assert dep.revision > 0 and dep.default_answer.outputs[0].numbers == [-1] * 4
    r = await infer.ModelInfer(_req("chain"))  # the primary raises on ones: the secondary answers
    assert _link(r) == ("spare:latest", 1) and (r.model_name, r.model_version) == ("spare", "1")
    assert _y(r) == [[2.0] * 4]
    await infer.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="spare"))
    r = await infer.ModelInfer(_req("chain"))  # the rule-based model: x[0] > 0 and x[3] <= 5
    assert _link(r) == ("rules:latest", 2) and r.model_name == "rules" and _y(r) == [[5.0, 6.0, 7.0, 8.0]]
    r = await infer.ModelInfer(_req("chain", x=500.0, rows=2))
    assert _y(r) == [[1.0] * 4, [1.0] * 4]
    await infer.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="rules"))
    r = await infer.ModelInfer(_req("chain", rows=3))  # nothing left: the default answer, one row per row
    assert _link(r) == ("default", 3) and (r.model_name, r.model_version) == ("chain", "default")
    assert _y(r) == [[-1.0] * 4] * 3 and list(r.outputs[0].shape) == [3, 4]
    with pytest.raises(grpc.aio.AioRpcError) as e:  # a bad request is the caller's: no default answer for it
        await infer.ModelInfer(_req("chain", dtype="INT32"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "datatype" in (e.value.details() or "")
    text = _scrape(srv)
    assert _sample(text, "infer_deployment_default_answers_total", deployment="chain") == 1
    assert _sample(text, "infer_deployment_attempts_total", deployment="chain", target="rules:latest",
                   outcome="success") == 2
    assert _sample(text, "infer_deployment_attempts_total", deployment="chain", target="spare:latest",
                   outcome="success") == 1
    # the faulty primary failed on every attempt that reached it
    assert _sample(text, "infer_deployment_attempts_total", deployment="chain", target="faulty:latest",
                   outcome="error") >= 3
    for name in ("spare", "rules"):
        await infer.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name))
    r = await infer.ModelInfer(_req("chain"))
    assert _link(r) == ("spare:latest", 1)
    # every move of the served versions is recorded with time, reason and the server that made it
    moves = (await control.ServingHistory(cpb.ServingHistoryRequest(model="rules"))).transitions
    assert [(m.source, m.target) for m in moves] == [
        ("", "LOAD"), ("LOAD", "WARM"), ("WARM", "ACTIVE"), ("ACTIVE", "UNLOADING"), ("UNLOADING", "UNLOADED"),
        ("", "LOAD"), ("LOAD", "WARM"), ("WARM", "ACTIVE")]
    assert moves[1].reason.startswith("loaded rules (2 rules") and moves[2].reason == "warm-up passed"
    assert re.fullmatch(r".+:\d+", moves[0].server) and all(m.at > 1.7e9 for m in moves)


async def test_a_slow_version_degrades_and_the_chain_skips_it(served: Stubs) -> None:
    _, infer, control = served
    for _ in range(6):  # any compute time is over a 1 ns p99 bound
        await infer.ModelInfer(_req("slow"))
    index = await infer.RepositoryIndex(pb.RepositoryIndexRequest())
    reason = next(m.reason for m in index.models if m.name == "slow")
    assert reason.startswith("DEGRADED: p99 compute time") and "over 0.0 ms" in reason
    await control.SetDeployment(cpb.Deployment(name="fast", variants=[
        cpb.Variant(target=cpb.Target(model="slow"), weight=1)], fallback=[cpb.Target(model="spare")]))
    r = await infer.ModelInfer(_req("fast"))
    assert _link(r) == ("spare:latest", 1)
    moves = (await control.ServingHistory(cpb.ServingHistoryRequest(model="slow", version=1))).transitions
    assert (moves[-1].source, moves[-1].target) == ("ACTIVE", "DEGRADED") and "p99" in moves[-1].reason


async def test_compare_and_set_on_deployments(served: Stubs) -> None:
    _, _, control = served
    spec = cpb.Deployment(name="cas", variants=[cpb.Variant(target=cpb.Target(model="spare"), weight=1)])
    first = await control.SetDeployment(spec)
    spec.sticky_key = "user"
    spec.revision = first.revision
    second = await control.SetDeployment(spec)  # at the revision read: accepted
    assert second.revision > first.revision
    spec.sticky_key = "account"
    with pytest.raises(grpc.aio.AioRpcError) as e:  # still at the first revision: someone wrote since
        await control.SetDeployment(spec)
    assert e.value.code() == grpc.StatusCode.ABORTED and "read it again" in (e.value.details() or "")
    got = await control.GetDeployment(cpb.DeploymentRef(name="cas"))
    assert got.sticky_key == "user" and got.revision == second.revision
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await control.DeleteDeployment(cpb.DeploymentRef(name="cas", revision=first.revision))
    assert e.value.code() == grpc.StatusCode.ABORTED
    await control.DeleteDeployment(cpb.DeploymentRef(name="cas", revision=second.revision))


def _cli(address: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infer.cli", *args, "--address", address],
                          capture_output=True, text=True, timeout=60, input=stdin)


async def test_the_deploy_cli(served: Stubs, tmp_path: Path) -> None:
    srv, infer, _ = served
    spec = tmp_path / "chain.json"
    spec.write_text(json.dumps(CHAIN))
    done = await asyncio.to_thread(_cli, srv.address, "deploy", "set", "cli-chain", "--file", str(spec))
    assert done.returncode == 0, done.stderr
    revision = int(json.loads(done.stdout)["revision"])
    r = await infer.ModelInfer(_req("cli-chain"))
    assert _link(r) == ("spare:latest", 1)
    listed = await asyncio.to_thread(_cli, srv.address, "deploy", "list")
    assert "cli-chain" in {d["name"] for d in json.loads(listed.stdout)["deployments"]}
    stale = await asyncio.to_thread(_cli, srv.address, "deploy", "delete", "cli-chain", "--revision",
                                    str(revision + 1000))
    assert stale.returncode == 1 and "ABORTED" in stale.stderr
    bad = await asyncio.to_thread(_cli, srv.address, "deploy", "set", "x", "-f", "-", stdin='{"variants": 3}')
    assert bad.returncode != 0 and "not a Deployment in JSON" in bad.stderr
    gone = await asyncio.to_thread(_cli, srv.address, "deploy", "delete", "cli-chain")
    assert gone.returncode == 0, gone.stderr
    missing = await asyncio.to_thread(_cli, srv.address, "deploy", "get", "cli-chain")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    history = await asyncio.to_thread(_cli, srv.address, "models", "history", "spare", "--version", "1")
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout)["transitions"][0]["target"] == "LOAD"


def test_the_control_plane_runs_apart(tmp_path: Path) -> None:
    """`infer control` and `infer serve` share one registry: a deployment set on the control process reaches
    the serving process within its sync period; the control process serves no inference."""
    repo = tmp_path / "repo"
    write_double(repo, versions=(1, 2), config='name: "double"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
                                                 "version_policy: { all { } }\n")
    registry = ["--registry-dir", str(tmp_path / "registry")]
    with ServerProcess(None, *registry, command="control") as ctl, \
            ServerProcess(repo, *registry, "--deployment-sync", "0.1") as srv, \
            grpc.insecure_channel(ctl.address) as cch, grpc.insecure_channel(srv.address) as sch:
        control, infer = cpb_grpc.ControlPlaneStub(cch), pb_grpc.GRPCInferenceServiceStub(sch)
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.GRPCInferenceServiceStub(cch).ServerLive(pb.ServerLiveRequest())
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        control.SetDeployment(cpb.Deployment(name="front", variants=[
            cpb.Variant(target=cpb.Target(model="double", version="2"), weight=1)]))
        deadline = time.monotonic() + 20
        while True:
            try:
                r = infer.ModelInfer(_req("front"))
                break
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.NOT_FOUND
                assert time.monotonic() < deadline, "the serving process never saw the deployment"
                time.sleep(0.05)
        assert (r.model_name, r.model_version) == ("double", "2")
        control.DeleteDeployment(cpb.DeploymentRef(name="front"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                infer.ModelInfer(_req("front"))
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.NOT_FOUND
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the serving process kept a deleted deployment")
        # the serving process recorded its versions' moves in the shared store: the control process reads them
        moves = control.ServingHistory(cpb.ServingHistoryRequest(model="double", version=2)).transitions
        assert [m.target for m in moves] == ["LOAD", "WARM", "ACTIVE"]
        assert {m.server.rsplit(":", 1)[1] for m in moves} == {str(srv.proc.pid)}
    assert ctl.proc.returncode == 0 and srv.proc.returncode == 0
