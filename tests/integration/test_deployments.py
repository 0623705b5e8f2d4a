"""Deployments against the real server: A/B split and stickiness, fallback chains, persistence."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from fixtures import ServerProcess, write_double, write_faulty

from infer._proto import control_pb2 as cpb
from infer._proto import control_pb2_grpc as cpb_grpc
from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

ALL_VERSIONS = """
name: "double"
platform: "onnxruntime_onnx"
max_batch_size: 64
version_policy: { all { } }
"""


def _repo(root: Path) -> Path:
    repo = root / "repo"
    write_double(repo, versions=(1, 2), config=ALL_VERSIONS)  # version k answers x * 2k
    write_double(repo, name="spare")
    write_faulty(repo)
    return repo


def _req(model: str, key: str | None = None, x: float = 1.0) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model)
    data = np.full((1, 4), x, np.float32)
    req.inputs.add(name="x", datatype="FP32", shape=list(data.shape))
    req.raw_input_contents.append(data.tobytes())
    if key is not None:
        req.parameters["user"].string_param = key
    return req


def _target(model: str, version: str = "") -> cpb.Target:
    return cpb.Target(model=model, version=version)


Stubs = tuple[ServerProcess, pb_grpc.GRPCInferenceServiceStub, cpb_grpc.ControlPlaneStub]


@pytest_asyncio.fixture(loop_scope="session")
async def served(tmp_path: Path) -> AsyncIterator[Stubs]:
    srv = ServerProcess(_repo(tmp_path), "--registry-dir", str(tmp_path / "registry")).wait_ready()
    async with grpc.aio.insecure_channel(srv.address) as ch:
        yield srv, pb_grpc.GRPCInferenceServiceStub(ch), cpb_grpc.ControlPlaneStub(ch)
    assert srv.stop() == 0, srv.output()


async def test_ab_split_is_within_a_few_percent_and_sticky(served: Stubs) -> None:
    _, infer, control = served
    await control.SetDeployment(cpb.Deployment(
        name="ab", sticky_key="user",
        variants=[cpb.Variant(target=_target("double", "1"), weight=90),
                  cpb.Variant(target=_target("double", "2"), weight=10)]))
    # clients that look a model up before calling it see the deployment's first target
    md = await infer.ModelMetadata(pb.ModelMetadataRequest(name="ab"))
    assert md.name == "ab" and [i.name for i in md.inputs] == ["x"] and md.versions == ["1", "2"]
    assert (await infer.ModelReady(pb.ModelReadyRequest(name="ab"))).ready
    assert (await infer.ModelConfig(pb.ModelConfigRequest(name="ab"))).config.name == "double"
    seen: Counter[str] = Counter()
    for _ in range(50):
        replies = await asyncio.gather(*[infer.ModelInfer(_req("ab")) for _ in range(200)])
        seen.update(r.model_version for r in replies)
    assert sum(seen.values()) == 10_000
    assert 0.87 <= seen["1"] / 10_000 <= 0.93, seen
    sample = replies[0]
    assert sample.parameters["infer.deployment"].string_param == "ab"
    assert sample.parameters["infer.target"].string_param in ("double:1", "double:2")
    assert sample.parameters["infer.fallback_depth"].int64_param == 0
    by_key: dict[str, set[str]] = {}
    for _ in range(3):
        replies = await asyncio.gather(*[infer.ModelInfer(_req("ab", key=f"user-{k}")) for k in range(300)])
        for k, r in enumerate(replies):
            by_key.setdefault(f"user-{k}", set()).add(r.model_version)
    assert all(len(v) == 1 for v in by_key.values())  # sticky: one variant per key
    share = sum(v == {"1"} for v in by_key.values()) / len(by_key)
    assert 0.8 <= share <= 0.97


async def test_fallback_on_error_timeout_and_unload(served: Stubs) -> None:
    _, infer, control = served
    await control.SetDeployment(cpb.Deployment(
        name="safe", variants=[cpb.Variant(target=_target("faulty"), weight=1)], fallback=[_target("double", "1")]))
    r = await infer.ModelInfer(_req("safe"))
    assert np.frombuffer(r.raw_output_contents[0], np.float32).tolist() == [2.0] * 4
    assert (r.model_name, r.model_version) == ("double", "1")
    assert r.parameters["infer.fallback_depth"].int64_param == 1
    assert r.parameters["infer.target"].string_param == "double:1"
    with pytest.raises(grpc.aio.AioRpcError) as e:  # the faulty model alone does fail
        await infer.ModelInfer(_req("faulty"))
    assert e.value.code() == grpc.StatusCode.INTERNAL
    await control.SetDeployment(cpb.Deployment(
        name="hurry", variants=[cpb.Variant(target=_target("double", "2"), weight=1)], fallback=[_target("spare")],
        link_timeout_us=1))  # 1 us: the first link's deadline passes before it can run
    r = await infer.ModelInfer(_req("hurry"))
    assert r.model_name == "spare" and r.parameters["infer.fallback_depth"].int64_param == 1
    await control.SetDeployment(cpb.Deployment(
        name="steady", variants=[cpb.Variant(target=_target("spare"), weight=1)], fallback=[_target("double")]))
    assert (await infer.ModelInfer(_req("steady"))).model_name == "spare"
    await infer.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="spare"))
    r = await infer.ModelInfer(_req("steady"))
    assert (r.model_name, r.model_version) == ("double", "2")  # newest ready version of the fallback
    await infer.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="spare"))


async def test_deployments_are_validated_listed_deleted_and_persist(served: Stubs, tmp_path: Path) -> None:
    _, infer, control = served
    for bad in (cpb.Deployment(name="x"),
                cpb.Deployment(name="x", variants=[cpb.Variant(target=_target("double"), weight=0)]),
                cpb.Deployment(name="x", fallback=[_target("x")])):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await control.SetDeployment(bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await control.SetDeployment(cpb.Deployment(name="keep", variants=[cpb.Variant(target=_target("double", "1"),
                                                                                   weight=1)]))
    names = [d.name for d in (await control.ListDeployments(cpb.ListDeploymentsRequest())).deployments]
    assert "keep" in names
    await control.DeleteDeployment(cpb.DeploymentRef(name="keep"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await control.GetDeployment(cpb.DeploymentRef(name="keep"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await infer.ModelInfer(_req("keep"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    await control.SetDeployment(cpb.Deployment(name="again", variants=[cpb.Variant(target=_target("double", "2"),
                                                                                    weight=1)]))
    # a second server on the same registry sees the deployment
    second = ServerProcess(_repo(tmp_path / "second"), "--registry-dir", str(tmp_path / "registry"))
    with second, grpc.insecure_channel(second.address) as ch:
        dep = cpb_grpc.ControlPlaneStub(ch).GetDeployment(cpb.DeploymentRef(name="again"), timeout=10)
        assert dep.variants[0].target.version == "2"
        r = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(_req("again"), timeout=10)
        assert r.model_version == "2"


async def test_promote_and_roll_back_ten_times_under_load_fails_nothing(served: Stubs) -> None:
    _, infer, control = served

    def live(version: str) -> cpb.Deployment:
        return cpb.Deployment(name="live", variants=[cpb.Variant(target=_target("double", version), weight=1)],
                              fallback=[_target("double", "1")])

    await control.SetDeployment(live("1"))
    stop = asyncio.Event()
    answered: Counter[str] = Counter()
    failures: list[str] = []

    async def client() -> None:
        while not stop.is_set():
            try:
                answered[(await infer.ModelInfer(_req("live"))).model_version] += 1
            except grpc.aio.AioRpcError as e:
                failures.append(f"{e.code().name}: {e.details()}")

    clients = [asyncio.create_task(client()) for _ in range(16)]
    for _ in range(10):
        await control.SetDeployment(live("2"))  # promote
        await asyncio.sleep(0.05)
        await control.SetDeployment(live("1"))  # roll back
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*clients)
    assert failures == []
    assert answered["1"] > 0 and answered["2"] > 0


async def test_a_failing_model_degrades_is_skipped_and_recovers(served: Stubs) -> None:
    _, infer, control = served
    for _ in range(25):  # ones make the faulty model raise
        with pytest.raises(grpc.aio.AioRpcError):
            await infer.ModelInfer(_req("faulty"))

    async def reason() -> str:
        index = await infer.RepositoryIndex(pb.RepositoryIndexRequest())
        return next(m.reason for m in index.models if m.name == "faulty")

    assert (await reason()).startswith("DEGRADED: error rate")
    stats = pb.ModelStatisticsRequest(name="faulty")
    failed = (await infer.ModelStatistics(stats)).model_stats[0].inference_stats.fail.count
    await control.SetDeployment(cpb.Deployment(
        name="guarded", variants=[cpb.Variant(target=_target("faulty"), weight=1)], fallback=[_target("spare")]))
    for _ in range(5):
        r = await infer.ModelInfer(_req("guarded"))
        assert r.model_name == "spare" and r.parameters["infer.fallback_depth"].int64_param == 1
    assert (await infer.ModelStatistics(stats)).model_stats[0].inference_stats.fail.count == failed  # skipped
    for _ in range(120):  # zeros work: the failures leave the 100-request window and the version is restored
        await infer.ModelInfer(_req("faulty", x=0.0))
    assert not (await reason()).startswith("DEGRADED")
    r = await infer.ModelInfer(_req("guarded", x=0.0))
    assert r.model_name == "faulty" and r.parameters["infer.fallback_depth"].int64_param == 0


async def test_shadow_answers_are_compared_and_never_returned(served: Stubs) -> None:
    _, infer, control = served

    async def stats(name: str) -> cpb.ShadowStats:
        return (await control.GetDeployment(cpb.DeploymentRef(name=name))).shadow_stats

    async def settled(name: str, n: int) -> cpb.ShadowStats:
        for _ in range(200):
            s = await stats(name)
            if s.compared + s.errors + s.skipped >= n:
                return s
            await asyncio.sleep(0.02)
        raise AssertionError(f"shadow of {name} never caught up: {await stats(name)}")

    # green = double v1 (x2) live, blue = double v2 (x4) in the shadow: every answer differs
    await control.SetDeployment(cpb.Deployment(
        name="bg", variants=[cpb.Variant(target=_target("double", "1"), weight=1)], shadow=_target("double", "2")))
    replies = await asyncio.gather(*[infer.ModelInfer(_req("bg", x=float(i))) for i in range(1, 41)])
    assert all(r.model_version == "1" for r in replies)  # the shadow's answers are never returned
    for i, r in enumerate(replies, start=1):
        assert np.frombuffer(r.raw_output_contents[0], np.float32).tolist() == [2.0 * i] * 4
    s = await settled("bg", 40)
    assert (s.compared, s.mismatched, s.errors) == (40, 40, 0) and s.max_abs_diff == pytest.approx(80.0)
    # a shadow that agrees (spare computes x2 too) matches every time; switching is one call
    await control.SetDeployment(cpb.Deployment(
        name="bg", variants=[cpb.Variant(target=_target("double", "1"), weight=1)], shadow=_target("spare")))
    await asyncio.gather(*[infer.ModelInfer(_req("bg", x=float(i))) for i in range(20)])
    s = await settled("bg", 20)
    assert (s.compared, s.matched, s.mismatched) == (20, 20, 0)
    await control.SetDeployment(cpb.Deployment(  # switch: the shadow goes live
        name="bg", variants=[cpb.Variant(target=_target("spare"), weight=1)], shadow=_target("double", "1")))
    assert (await infer.ModelInfer(_req("bg"))).model_name == "spare"


async def _load_until(infer: pb_grpc.GRPCInferenceServiceStub, control: cpb_grpc.ControlPlaneStub, name: str,
                      status: str, timeout_s: float = 30.0) -> tuple[cpb.Deployment, Counter[str], list[str]]:
    """Keep 8 clients on the deployment until its canary reaches ``status``."""
    stop = asyncio.Event()
    seen: Counter[str] = Counter()
    failures: list[str] = []

    async def client() -> None:
        while not stop.is_set():
            try:
                seen[(await infer.ModelInfer(_req(name))).model_name] += 1
            except grpc.aio.AioRpcError as e:
                failures.append(e.code().name)

    clients = [asyncio.create_task(client()) for _ in range(8)]
    try:
        for _ in range(int(timeout_s / 0.05)):
            dep = await control.GetDeployment(cpb.DeploymentRef(name=name))
            if dep.canary.status == status:
                return dep, seen, failures
            await asyncio.sleep(0.05)
        raise AssertionError(f"canary of {name} did not reach {status}: {dep.canary}")
    finally:
        stop.set()
        await asyncio.gather(*clients)


async def test_a_healthy_canary_advances_through_its_stages(served: Stubs) -> None:
    _, infer, control = served
    stages = [cpb.CanaryStage(percent=p, duration_s=0.3) for p in (10, 50, 100)]
    await control.SetDeployment(cpb.Deployment(name="rollout", canary=cpb.Canary(
        baseline=_target("double", "1"), canary=_target("spare"), stages=stages, max_error_rate=0.05,
        min_requests=5)))
    dep, seen, failures = await _load_until(infer, control, "rollout", "PROMOTED")
    assert failures == [] and seen["spare"] > 0 and seen["double"] > 0
    assert "all 3 stages healthy" in dep.canary.reason
    replies = await asyncio.gather(*[infer.ModelInfer(_req("rollout")) for _ in range(20)])
    assert {r.model_name for r in replies} == {"spare"}  # promoted: all traffic on the canary
    history = [json.loads(e.detail_json)["spec"]["canary"]["status"]
               for e in (await control.AuditLog(cpb.AuditLogRequest(limit=20))).entries
               if e.actor == "canary"]
    assert history[0] == "PROMOTED" and len(history) == 3  # two advances, then the promotion


async def test_a_failing_canary_rolls_back_at_once(served: Stubs) -> None:
    _, infer, control = served
    stages = [cpb.CanaryStage(percent=p, duration_s=30) for p in (25, 100)]
    await control.SetDeployment(cpb.Deployment(name="risky", fallback=[_target("double", "1")], canary=cpb.Canary(
        baseline=_target("double", "1"), canary=_target("faulty"), stages=stages, max_error_rate=0.05,
        min_requests=5)))
    dep, _, failures = await _load_until(infer, control, "risky", "ROLLED_BACK", timeout_s=10)
    assert failures == []  # the fallback answered for the canary while it was judged
    assert dep.canary.reason.startswith("error rate") and dep.canary.stage == 0
    replies = await asyncio.gather(*[infer.ModelInfer(_req("risky")) for _ in range(20)])
    assert all(r.parameters["infer.target"].string_param == "double:1" for r in replies)
    assert all(r.parameters["infer.fallback_depth"].int64_param == 0 for r in replies)


async def test_outcomes_reported_back_decide_the_ab_test(served: Stubs) -> None:
    _, infer, control = served
    await control.SetDeployment(cpb.Deployment(name="exp", variants=[
        cpb.Variant(target=_target("double", "1"), weight=1), cpb.Variant(target=_target("double", "2"), weight=1)]))
    served_by: Counter[str] = Counter()
    for chunk in range(4):
        reqs = []
        for i in range(100):
            r = _req("exp")
            r.id = f"r-{chunk}-{i}"
            reqs.append(r)
        replies = await asyncio.gather(*[infer.ModelInfer(r) for r in reqs])
        for reply in replies:
            # version 2 "converts" 3 times in 5, version 1 twice in 5 (counted per version: exact rates)
            n = served_by[reply.model_version]
            served_by[reply.model_version] += 1
            good = (n % 5) < (3 if reply.model_version == "2" else 2)
            ack = await control.ReportOutcome(cpb.OutcomeRequest(request_id=reply.id, value=1.0 if good else 0.0))
            assert ack.deployment == "exp" and ack.target == f"double:{reply.model_version}"
    report = await control.GetExperiment(cpb.DeploymentRef(name="exp"))
    assert [v.target for v in report.variants] == ["double:1", "double:2"]
    assert sum(v.requests for v in report.variants) == 400 == sum(v.outcomes for v in report.variants)
    assert report.metric == "outcome" and report.difference == pytest.approx(0.2, abs=0.02)
    assert report.p_value < 0.001 and report.ci95_low > 0
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await control.ReportOutcome(cpb.OutcomeRequest(request_id="never-sent", value=1))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # the same experiment set to promote its winner once p < 0.01: version 2 takes all traffic
    await control.SetDeployment(cpb.Deployment(name="exp", promote_when_p_below=0.01, promote_min_samples=50,
                                               variants=[cpb.Variant(target=_target("double", "1"), weight=1),
                                                         cpb.Variant(target=_target("double", "2"), weight=1)]))
    for _ in range(100):
        dep = await control.GetDeployment(cpb.DeploymentRef(name="exp"))
        if len(dep.variants) == 1:
            break
        await asyncio.sleep(0.05)
    assert [(v.target.model, v.target.version) for v in dep.variants] == [("double", "2")]
    assert dep.promote_when_p_below == 0  # done: it does not promote again
    entries = (await control.AuditLog(cpb.AuditLogRequest(limit=5))).entries
    assert entries[0].actor == "ab-test" and entries[0].action == "set_deployment"
