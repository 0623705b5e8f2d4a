"""Every call tritonclient.grpc makes, sync and aio, against the real server."""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.grpc.aio as tca
from fixtures import DTYPES, ServerProcess, onnx_run
from tritonclient.utils import InferenceServerException


def _input(name: str, arr: np.ndarray, dtype: str) -> tc.InferInput:
    i = tc.InferInput(name, list(arr.shape), dtype)
    i.set_data_from_numpy(arr)
    return i


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("double")
    assert client.is_model_ready("double", "1")
    assert not client.is_model_ready("double", "7")
    md = client.get_server_metadata(as_json=True)
    assert md["name"] == "infer"
    assert "statistics" in md["extensions"]
    mm = client.get_model_metadata("anomaly", as_json=True)
    assert mm["platform"] == "onnxruntime_onnx"
    assert mm["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "16"]}]
    assert {o["name"] for o in mm["outputs"]} == {"label", "score"}
    assert sorted(client.get_model_metadata("double", as_json=True)["versions"]) == ["1", "2"]


def test_model_config_of_triton_layout_repository(client: Any) -> None:
    cfg = client.get_model_config("dense", as_json=True)["config"]
    assert cfg["max_batch_size"] == 32
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [8, 16]
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == "2000"
    assert cfg["instance_group"][0]["count"] == 2
    assert cfg["input"][0] == {"name": "x", "data_type": "TYPE_FP32", "dims": ["64"]}
    # completed from the ONNX file: no config.pbtxt at all
    auto = client.get_model_config("identity_all", as_json=True)["config"]
    assert auto["platform"] == "onnxruntime_onnx"
    assert len(auto["input"]) == len(DTYPES)


@pytest.mark.parametrize("model,feeds", [
    ("anomaly", {"features": np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)}),
    ("dense", {"x": np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32)}),
])
def test_infer_equals_in_process_onnxruntime(client: Any, repo: Path, model: str, feeds: dict[str, np.ndarray]) -> None:
    ref = onnx_run(repo / model, feeds)
    res = client.infer(model, [_input(k, v, "FP32") for k, v in feeds.items()], request_id="r-42")
    assert res.get_response().id == "r-42"
    names = [o.name for o in res.get_response().outputs]
    for name, want in zip(names, ref, strict=True):
        got = res.as_numpy(name)
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def _identity_inputs(text: np.ndarray) -> tuple[list[tc.InferInput], dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    inputs, sent = [], {}
    for dt, (_, np_type) in DTYPES.items():
        if dt == "BYTES":
            arr = text
        elif dt == "BOOL":
            arr = rng.integers(0, 2, text.shape).astype(np.bool_)
        else:
            arr = (rng.standard_normal(text.shape) * 50).astype(np_type)
        sent[dt] = arr
        inputs.append(_input(f"in_{dt}", arr, dt))
    return inputs, sent


def test_every_datatype_round_trips(client: Any) -> None:
    text = np.array([[b"a", b"", b"\x00z"], ["h\u00e9llo \u2603".encode(), b"w", b"x" * 300]], dtype=np.object_)
    inputs, sent = _identity_inputs(text)
    outputs = [tc.InferRequestedOutput(f"out_{dt}") for dt in ("FP16", "BYTES", "UINT64")]
    res = client.infer("identity_all", inputs, outputs=outputs)
    assert {o.name for o in res.get_response().outputs} == {"out_FP16", "out_BYTES", "out_UINT64"}
    for dt in ("FP16", "BYTES", "UINT64"):
        np.testing.assert_array_equal(res.as_numpy(f"out_{dt}"), sent[dt])
    res = client.infer("identity_all", inputs)
    for dt, arr in sent.items():
        got = res.as_numpy(f"out_{dt}")
        assert got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)


def test_bytes_that_are_not_text_are_refused_for_onnx_strings(client: Any) -> None:
    inputs, _ = _identity_inputs(np.array([[b"ok", b"\xff\xfe"]], dtype=np.object_))
    with pytest.raises(InferenceServerException) as e:
        client.infer("identity_all", inputs)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'in_BYTES'" in e.value.message() and "UTF-8" in e.value.message()


def test_versions_are_selectable(client: Any) -> None:
    x = np.ones((1, 4), np.float32)
    assert client.infer("double", [_input("x", x, "FP32")], model_version="1").as_numpy("y")[0, 0] == 2.0
    assert client.infer("double", [_input("x", x, "FP32")]).as_numpy("y")[0, 0] == 4.0  # newest: version 2


def test_errors_are_clear(client: Any) -> None:
    with pytest.raises(InferenceServerException) as e:
        client.infer("double", [_input("x", np.ones((1, 5), np.float32), "FP32")])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'x'" in e.value.message() and "[-1, 4]" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.infer("nope", [_input("x", np.ones((1, 4), np.float32), "FP32")])
    assert e.value.status() == "StatusCode.NOT_FOUND"


def test_streaming_inference(client: Any, repo: Path) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    xs = {f"req-{i}": np.full((1, 64), i / 10, np.float32) for i in range(20)}
    for rid, x in xs.items():
        client.async_stream_infer("dense", [_input("x", x, "FP32")], request_id=rid)
    client.async_stream_infer("double", [_input("x", np.ones((1, 3), np.float32), "FP32")], request_id="bad")
    got: dict[str, Any] = {}
    errors = []
    for _ in range(len(xs) + 1):
        r, err = results.get(timeout=30)
        if err is not None:
            errors.append(err)
        else:
            got[r.get_response().id] = r.as_numpy("y")
    client.stop_stream()
    assert len(errors) == 1 and "input 'x'" in str(errors[0])
    assert set(got) == set(xs)
    for rid, x in xs.items():
        np.testing.assert_allclose(got[rid], onnx_run(repo / "dense", {"x": x})[0], rtol=0, atol=1e-6)


def test_statistics(client: Any) -> None:
    client.infer("double", [_input("x", np.ones((3, 4), np.float32), "FP32")], model_version="1")
    stats = client.get_inference_statistics("double", "1", as_json=True)["model_stats"][0]
    assert stats["name"] == "double" and stats["version"] == "1"
    assert int(stats["inference_count"]) >= 3
    assert int(stats["inference_stats"]["success"]["count"]) >= 1
    assert int(stats["execution_count"]) >= 1
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {s["name"] for s in every} >= {"double", "dense", "anomaly", "identity_all"}


def test_repository_load_and_unload(client: Any) -> None:
    index = {(m["name"], m.get("version", "")): m["state"]
             for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index[("double", "1")] == "READY"
    client.unload_model("identity_all")
    assert not client.is_model_ready("identity_all")
    states = [m for m in client.get_model_repository_index(as_json=True)["models"] if m["name"] == "identity_all"]
    assert states and states[0]["state"] == "UNAVAILABLE"
    with pytest.raises(InferenceServerException) as e:
        client.infer("identity_all", _identity_inputs(np.array([[b"a"]], dtype=np.object_))[0])
    assert e.value.status() == "StatusCode.UNAVAILABLE"
    client.load_model("identity_all")
    assert client.is_model_ready("identity_all")
    # load with a config override given as JSON (Triton's `config` parameter)
    override = {"name": "double", "platform": "onnxruntime_onnx", "max_batch_size": 4,
                "version_policy": {"specific": {"versions": [1]}}}
    client.load_model("double", config=json.dumps(override))
    assert client.get_model_config("double", as_json=True)["config"]["max_batch_size"] == 4
    assert not client.is_model_ready("double", "2")
    client.load_model("double")  # back to the repository's config
    assert client.is_model_ready("double", "2")
    with pytest.raises(InferenceServerException) as e:
        client.load_model("no_such_model")
    assert e.value.status() == "StatusCode.NOT_FOUND"


async def test_aio_client(server: ServerProcess, repo: Path) -> None:
    client = tca.InferenceServerClient(server.address)
    try:
        assert await client.is_server_live()
        assert await client.is_server_ready()
        assert await client.is_model_ready("dense")
        assert (await client.get_server_metadata(as_json=True))["name"] == "infer"
        assert (await client.get_model_metadata("dense", as_json=True))["name"] == "dense"
        assert (await client.get_model_config("dense", as_json=True))["config"]["max_batch_size"] == 32
        x = np.random.default_rng(4).standard_normal((2, 64)).astype(np.float32)
        inp = tca.InferInput("x", [2, 64], "FP32")
        inp.set_data_from_numpy(x)
        res = await client.infer("dense", [inp])
        np.testing.assert_allclose(res.as_numpy("y"), onnx_run(repo / "dense", {"x": x})[0], rtol=0, atol=1e-6)

        async def requests() -> Any:
            for i in range(5):
                yield {"model_name": "dense", "inputs": [inp], "request_id": str(i)}

        seen = set()
        async for result, error in client.stream_infer(requests()):
            assert error is None
            seen.add(result.get_response().id)
            if len(seen) == 5:
                break
        assert seen == {str(i) for i in range(5)}
        stats = await client.get_inference_statistics("dense", as_json=True)
        assert stats["model_stats"][0]["name"] == "dense"
        index = await client.get_model_repository_index(as_json=True)
        assert any(m["name"] == "dense" for m in index["models"])
        await client.unload_model("anomaly")
        assert not await client.is_model_ready("anomaly")
        await client.load_model("anomaly")
        assert await client.is_model_ready("anomaly")
    finally:
        await client.close()


