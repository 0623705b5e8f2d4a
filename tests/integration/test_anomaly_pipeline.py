"""The anomaly pipeline served: raw events in over gRPC, score/severity/type/top features out; the same
answers as the pipeline computed in process from the same files, batched or one event at a time; each
detector served on its own; bad events refused by field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import pytest_asyncio
from fixtures import ServerProcess
from wire import decode

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc
from infer.runtimes.anomaly_programs import RAW_FIELDS
from infer.tasks.anomaly import events as ev
from infer.tasks.anomaly.pipeline import BuildConfig, build_pipeline
from infer.tasks.anomaly.pipeline_eval import run_programs

N = 96
STATEFUL = ("anomaly_features", "anomaly_streaming", "anomaly_scorer")


def _request(events: dict[str, Any], a: int, b: int) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="anomaly")
    for name, dt in RAW_FIELDS:
        values = events[name][a:b]
        t = req.inputs.add(name=name, datatype=dt.value, shape=[b - a, 1])
        if dt.value == "BYTES":
            t.contents.bytes_contents.extend(str(v).encode() for v in values)
        else:
            getattr(t.contents, {"FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents",
                                 "INT32": "int_contents"}[dt.value]).extend(np.asarray(values).tolist())
    return req


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ev.EventStream]:
    repo = tmp_path_factory.mktemp("anomaly") / "repo"
    cfg = BuildConfig(n_train=6000, n_validation=4000, n_test=2000, n_users=20, capacity=1024, lof_rows=1000,
                      ae_epochs=2, max_batch_size=64)
    build_pipeline(repo, "anomaly", cfg, progress=False, evaluate=False)
    later = ev.generate(N, seed=7, population=ev.make_population(20, 1), start=ev.DEFAULT_START + 40 * 86400,
                        anomaly_fraction=0.2)
    return repo, later


Served = tuple[ServerProcess, pb_grpc.GRPCInferenceServiceStub, Path, ev.EventStream]


@pytest_asyncio.fixture(loop_scope="session")
async def served(built: tuple[Path, ev.EventStream]) -> AsyncIterator[Served]:
    repo, stream = built
    srv = ServerProcess(repo).wait_ready()
    async with grpc.aio.insecure_channel(srv.address) as ch:
        yield srv, pb_grpc.GRPCInferenceServiceStub(ch), repo, stream
    assert srv.stop() == 0, srv.output()


async def _reset(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    """Reload the stateful stages: their rolling state starts again from the files."""
    for name in STATEFUL:
        await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name))


async def test_raw_events_in_verdicts_out_as_computed_in_process(served: Served) -> None:
    _, stub, repo, stream = served
    md = await stub.ModelMetadata(pb.ModelMetadataRequest(name="anomaly"))
    assert md.platform == "ensemble" and [i.name for i in md.inputs] == [n for n, _ in RAW_FIELDS]
    await _reset(stub)
    got = decode(await stub.ModelInfer(_request(stream.events, 0, 64)))
    got2 = decode(await stub.ModelInfer(_request(stream.events, 64, N)))
    served_out = {k: np.concatenate([got[k], got2[k]]) for k in got}
    expected = run_programs(repo, "anomaly", stream.events, chunk=64)
    np.testing.assert_allclose(served_out["score"], expected["score"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(served_out["is_anomalous"], expected["is_anomalous"])
    np.testing.assert_array_equal(served_out["severity"], expected["severity"])
    np.testing.assert_array_equal(served_out["top_features"], expected["top_features"])
    assert served_out["top_features"].shape == (N, 3) and served_out["detector_probs"].shape[0] == N
    assert set(served_out["severity"][:, 0]) <= {b"NONE", b"LOW", b"MEDIUM", b"HIGH", b"CRITICAL"}
    flagged = served_out["is_anomalous"][:, 0]
    assert all(t.decode() in ev.KINDS for t in served_out["anomaly_type"][flagged, 0])
    assert all(t == b"" for t in served_out["anomaly_type"][~flagged, 0])
    assert ((served_out["score"] >= 0) & (served_out["score"] <= 1)).all()


async def test_batched_and_one_by_one_agree(served: Served) -> None:
    _, stub, _, stream = served
    await _reset(stub)
    batched = decode(await stub.ModelInfer(_request(stream.events, 0, 32)))
    await _reset(stub)
    singles = [decode(await stub.ModelInfer(_request(stream.events, i, i + 1))) for i in range(32)]
    for key in ("score", "detector_probs"):
        np.testing.assert_allclose(np.concatenate([s[key] for s in singles]), batched[key], rtol=1e-5, atol=1e-6)
    for key in ("severity", "anomaly_type", "top_features", "is_anomalous"):
        np.testing.assert_array_equal(np.concatenate([s[key] for s in singles]), batched[key])


async def test_each_detector_is_served_on_its_own(served: Served) -> None:
    _, stub, _, _ = served
    stats = {m.name: m.state for m in (await stub.RepositoryIndex(pb.RepositoryIndexRequest())).models}
    stages = ["anomaly_features", "anomaly_iforest", "anomaly_lof", "anomaly_streaming", "anomaly_scorer"]
    stages += ["anomaly_autoencoder"] if "anomaly_autoencoder" in stats else []  # built only where torch is
    assert {n: stats[n] for n in stages} == dict.fromkeys(stages, "READY")
    md = await stub.ModelMetadata(pb.ModelMetadataRequest(name="anomaly_iforest"))
    width = list(md.inputs[0].shape)[1]
    x = np.zeros((2, width), np.float32)
    req = pb.ModelInferRequest(model_name="anomaly_iforest")
    req.inputs.add(name="x", datatype="FP32", shape=[2, width])
    req.raw_input_contents.append(x.tobytes())
    resp = await stub.ModelInfer(req)
    assert [o.name for o in resp.outputs] == ["score", "prob"]


async def test_a_bad_event_is_refused_by_field(served: Served) -> None:
    _, stub, _, stream = served
    req = _request(stream.events, 0, 2)
    del req.inputs[1]  # no "user"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.ModelInfer(req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "user" in (e.value.details() or "")
    req = _request(stream.events, 0, 2)
    req.inputs[0].contents.fp64_contents[0] = float("nan")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.ModelInfer(req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "timestamp" in (e.value.details() or "")


async def test_rolling_state_survives_a_restart_with_state_dir(built: tuple[Path, ev.EventStream],
                                                               tmp_path: Path) -> None:
    """Half the stream, a graceful restart, the other half: the same answers as one uninterrupted run."""
    repo, stream = built
    state = ["--state-dir", str(tmp_path / "state")]
    halves = []
    for a, b in ((0, N // 2), (N // 2, N)):
        srv = ServerProcess(repo, *state).wait_ready()
        try:
            async with grpc.aio.insecure_channel(srv.address) as ch:
                stub = pb_grpc.GRPCInferenceServiceStub(ch)
                halves.append(decode(await stub.ModelInfer(_request(stream.events, a, b))))
        finally:
            assert srv.stop() == 0, srv.output()
    assert (tmp_path / "state" / "anomaly_features" / "1" / "state.npz").is_file()
    served = np.concatenate([h["score"] for h in halves])
    expected = run_programs(repo, "anomaly", stream.events, chunk=N // 2)["score"]
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    cold = run_programs(repo, "anomaly", {k: v[N // 2:] for k, v in stream.events.items()})["score"]
    assert not np.allclose(cold, expected[N // 2:])  # a cold restart would have answered differently
