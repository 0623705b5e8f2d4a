"""The Python SDK without a server: every V2 datatype through the raw encoding and back, BYTES on the wire byte
for byte, errors mapped from gRPC status with their google.rpc details, the retry policy's backoff, the task
helpers' tensors, the deployment builders, the public API, sync/async parity and the import boundary."""

from __future__ import annotations

import inspect
import random
import subprocess
import sys
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

import infer.client as sdk
from infer._proto import grpc_service_pb2 as pb
from infer.client import _tasks
from infer.client._codec import decode_response, encode_bytes, encode_request
from infer.client._errors import error_from_rpc

NUMERIC = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
           "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
           "FP32": np.float32, "FP64": np.float64}


def _sample(dtype: Any, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype is np.bool_:
        return rng.random(shape) > 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        arr.reshape(-1)[:2] = (info.min, info.max)[: arr.size]  # the extremes survive
        return arr
    arr = (rng.standard_normal(shape) * 1e3).astype(dtype)
    arr.reshape(-1)[:3] = (np.inf, -0.0, np.nan)[: arr.size]
    return arr


@pytest.mark.parametrize("datatype", sorted(NUMERIC))
@pytest.mark.parametrize("shape", [(3, 4), (1,), (2, 0, 3), (), (2, 3, 5)])
def test_every_numeric_datatype_round_trips(datatype: str, shape: tuple[int, ...]) -> None:
    arr = _sample(NUMERIC[datatype], shape)
    dt, wire_shape, raw = sdk.encode_tensor("x", arr)
    assert dt == datatype and wire_shape == list(shape)
    assert len(raw) == arr.size * np.dtype(NUMERIC[datatype]).itemsize
    back = sdk.decode_tensor("x", dt, wire_shape, raw)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    if datatype == "FP32" and arr.size >= 3:
        assert np.signbit(back.reshape(-1)[1])  # -0.0 kept bit for bit


@pytest.mark.parametrize("datatype", sorted(set(NUMERIC) - {"BOOL", "UINT8", "INT8"}))
def test_raw_contents_are_little_endian_whatever_the_array(datatype: str) -> None:
    native = _sample(NUMERIC[datatype], (4, 3), seed=1)
    big = native.astype(native.dtype.newbyteorder(">"))
    strided = np.asfortranarray(native)[:, ::2]
    assert sdk.encode_tensor("x", big)[2] == native.astype(native.dtype.newbyteorder("<")).tobytes()
    assert sdk.encode_tensor("x", strided)[2] == np.ascontiguousarray(native[:, ::2]).astype(
        native.dtype.newbyteorder("<")).tobytes()


def test_bytes_on_the_wire_are_length_prefixed_little_endian() -> None:
    arr = np.array([[b"ab", b""], ["é", b"\x00\xff"]], dtype=object)
    dt, shape, raw = sdk.encode_tensor("t", arr)
    assert (dt, shape) == ("BYTES", [2, 2])
    assert raw == (b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00\xc3\xa9"
                   + b"\x02\x00\x00\x00\x00\xff")
    back = sdk.decode_tensor("t", dt, shape, raw)
    assert back.dtype == object and back.tolist() == [[b"ab", b""], ["é".encode(), b"\x00\xff"]]


@pytest.mark.parametrize("arr", [np.array(["héllo", "", "a" * 300]), np.array([b"x", b"yz"]),
                                 np.array([b"long" * 100_000], dtype=object), np.empty((0, 2), dtype=object)])
def test_str_and_bytes_arrays_are_bytes(arr: np.ndarray) -> None:
    dt, shape, raw = sdk.encode_tensor("t", arr)
    back = sdk.decode_tensor("t", dt, shape, raw)
    want = [v.encode() if isinstance(v, str) else bytes(v) for v in arr.reshape(-1)]
    assert dt == "BYTES" and back.shape == arr.shape and back.reshape(-1).tolist() == want


def test_what_cannot_be_encoded_is_refused_by_name() -> None:
    with pytest.raises(sdk.InvalidArgument, match=r"input 'c': numpy dtype complex128"):
        sdk.encode_tensor("c", np.ones(2, np.complex128))
    with pytest.raises(sdk.InvalidArgument, match=r"input 'b'\[1\]: BYTES elements are bytes or str, not int"):
        encode_bytes("b", np.array([b"ok", 3], dtype=object))
    with pytest.raises(ValueError, match="inputs: at least one"):  # InvalidArgument is a ValueError too
        encode_request("m", {})


@pytest.mark.parametrize("raw,match", [(b"\x05\x00\x00\x00ab", "declares 5 bytes"), (b"\x01\x00", "ends at element 0"),
                                       (b"\x00\x00\x00\x00\x00", "1 bytes after")])
def test_broken_bytes_content_is_refused(raw: bytes, match: str) -> None:
    with pytest.raises(sdk.InvalidArgument, match=match):
        sdk.decode_tensor("o", "BYTES", [1], raw)


def test_numeric_content_of_the_wrong_size_or_datatype_is_refused() -> None:
    with pytest.raises(sdk.InvalidArgument, match="7 bytes of FP32"):
        sdk.decode_tensor("o", "FP32", [2], b"\x00" * 7)
    with pytest.raises(sdk.InvalidArgument, match="BF16 is not supported"):
        sdk.decode_tensor("o", "BF16", [1], b"\x00\x00")


def _echo(req: pb.ModelInferRequest) -> pb.ModelInferResponse:
    """What a server answering each input as an output of the same name sends back."""
    resp = pb.ModelInferResponse(model_name=req.model_name, model_version="3", id=req.id)
    for t, raw in zip(req.inputs, req.raw_input_contents, strict=True):
        resp.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        resp.raw_output_contents.append(raw)
    resp.parameters["infer.target"].string_param = "m:3"
    resp.parameters["infer.fallback_depth"].int64_param = 1
    return resp


def test_a_request_of_every_datatype_comes_back_as_sent() -> None:
    inputs: dict[str, Any] = {f"in_{dt}": _sample(t, (2, 3), seed=i) for i, (dt, t) in enumerate(NUMERIC.items())}
    inputs["in_BYTES"] = np.array([["a", "bb", "ccc"], [b"", b"\x00", "ü"]], dtype=object)
    req = encode_request("m", inputs, outputs=["in_FP32"], version="3", request_id="r1",
                         parameters={"priority": 1, "flag": True, "ratio": 0.5, "user": "alice"})
    assert [o.name for o in req.outputs] == ["in_FP32"] and req.model_version == "3" and req.id == "r1"
    assert req.parameters["priority"].int64_param == 1 and req.parameters["flag"].bool_param is True
    assert req.parameters["ratio"].double_param == 0.5 and req.parameters["user"].string_param == "alice"
    result = decode_response(_echo(req))
    assert isinstance(result, dict) and set(result) == set(inputs)
    assert (result.model_name, result.model_version, result.id) == ("m", "3", "r1")
    assert result.parameters == {"infer.target": "m:3", "infer.fallback_depth": 1}
    for name, arr in inputs.items():
        want = np.array([v.encode() if isinstance(v, str) else v for v in arr.reshape(-1)], dtype=object).reshape(
            arr.shape) if arr.dtype == object else arr
        np.testing.assert_array_equal(result[name], want)
        assert result[name].dtype == want.dtype


def test_answers_in_typed_contents_are_decoded_too() -> None:
    resp = pb.ModelInferResponse(model_name="m")
    resp.outputs.add(name="i", datatype="INT16", shape=[2, 2]).contents.int_contents.extend([1, -2, 3, -4])
    resp.outputs.add(name="s", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"a", b"b"])
    resp.outputs.add(name="u", datatype="UINT64", shape=[1]).contents.uint64_contents.append(2**64 - 1)
    out = decode_response(resp)
    assert out["i"].dtype == np.int16 and out["i"].tolist() == [[1, -2], [3, -4]]
    assert out["s"].tolist() == [b"a", b"b"] and out["u"].tolist() == [2**64 - 1]


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, Any], ...] = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailing


@pytest.mark.parametrize("code,cls", [
    (grpc.StatusCode.NOT_FOUND, sdk.NotFound), (grpc.StatusCode.INVALID_ARGUMENT, sdk.InvalidArgument),
    (grpc.StatusCode.UNAVAILABLE, sdk.Unavailable), (grpc.StatusCode.DEADLINE_EXCEEDED, sdk.DeadlineExceeded),
    (grpc.StatusCode.UNAUTHENTICATED, sdk.Unauthenticated), (grpc.StatusCode.PERMISSION_DENIED, sdk.PermissionDenied),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, sdk.ResourceExhausted), (grpc.StatusCode.ABORTED, sdk.Aborted),
    (grpc.StatusCode.UNIMPLEMENTED, sdk.Unimplemented), (grpc.StatusCode.INTERNAL, sdk.Internal),
    (grpc.StatusCode.DATA_LOSS, sdk.InferClientError),
])
def test_each_status_has_its_exception(code: grpc.StatusCode, cls: type[sdk.InferClientError]) -> None:
    err = error_from_rpc(_FakeRpcError(code, "input 'x': wrong"))
    assert type(err) is cls and err.code is code and err.message == "input 'x': wrong" and err.details == []
    assert str(err) == f"{code.name}: input 'x': wrong"


def test_google_rpc_details_are_unpacked() -> None:
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="queue full")
    delay = duration_pb2.Duration(seconds=1, nanos=500_000_000)
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status.details.add().Pack(pb.ServerLiveResponse(live=True))  # a type the client does not know: kept packed
    err = error_from_rpc(_FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full",
                                       (("grpc-status-details-bin", status.SerializeToString()),)))
    assert isinstance(err, sdk.ResourceExhausted) and err.retry_after == 1.5
    assert isinstance(err.details[0], error_details_pb2.RetryInfo)
    assert err.details[1].Is(pb.ServerLiveResponse.DESCRIPTOR)


def test_backoff_is_full_jitter_under_a_capped_exponential_curve() -> None:
    policy = sdk.RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=1.0, multiplier=2.0,
                             rng=random.Random(0))
    for retry, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)):
        delays = [policy.backoff(retry) for _ in range(400)]
        assert 0.0 <= min(delays) and max(delays) <= cap
        assert min(delays) < 0.1 * cap and max(delays) > 0.9 * cap  # spread over the whole range


def test_only_unavailable_is_retried_and_attempts_are_bounded() -> None:
    seen: list[tuple[int, float]] = []
    policy = sdk.RetryPolicy(max_attempts=3, initial_backoff=0.05, on_retry=lambda a, e, d: seen.append((a, d)))
    unavailable = sdk.Unavailable(None, "connection refused")
    assert policy.delay(1, unavailable, None) is not None and policy.delay(2, unavailable, None) is not None
    assert policy.delay(3, unavailable, None) is None  # the third attempt was the last
    for other in (sdk.NotFound(None, "x"), sdk.DeadlineExceeded(None, "x"), sdk.ResourceExhausted(None, "x"),
                  sdk.Internal(None, "x"), sdk.InferClientError(grpc.StatusCode.UNKNOWN, "x")):
        assert policy.delay(1, other, None) is None
    assert [a for a, _ in seen] == [1, 2]
    assert sdk.RetryPolicy(initial_backoff=10.0, max_backoff=10.0).delay(1, unavailable, remaining=0.0) is None
    with pytest.raises(ValueError):
        sdk.RetryPolicy(max_attempts=0)


def test_tls_config_needs_cert_and_key_together() -> None:
    with pytest.raises(ValueError, match="cert and key together"):
        sdk.TLSConfig(ca="ca.pem", cert="client.pem")


def test_anomaly_events_as_records_or_columns_make_the_same_tensors() -> None:
    import datetime as dt

    records = [{"timestamp": 1.7e9 + i, "user": f"u{i}", "namespace": "finance", "file_type": "pdf",
                "content_hash": "0" * 64, "file_size": 1000 * (i + 1), "hash_time_ms": 1.5, "api_latency_ms": 80,
                "concurrency": 4, "ignored": "extra"} for i in range(3)]
    columns = {k: [r[k] for r in records] for k in records[0]}
    columns["timestamp"] = [dt.datetime.fromtimestamp(t, dt.UTC) for t in columns["timestamp"]]
    a, b = _tasks.anomaly_inputs(records), _tasks.anomaly_inputs(columns)
    assert list(a) == [n for n, _ in _tasks.ANOMALY_FIELDS] == list(b)
    for name, kind in _tasks.ANOMALY_FIELDS:
        assert a[name].shape == (3, 1) and a[name].dtype == np.dtype(kind)
        np.testing.assert_array_equal(a[name], b[name])
    with pytest.raises(sdk.InvalidArgument, match=r"events\[1\]: field 'user' is missing"):
        _tasks.anomaly_inputs([records[0], {k: v for k, v in records[1].items() if k != "user"}])
    with pytest.raises(sdk.InvalidArgument, match="field 'file_size' has 2 values"):
        _tasks.anomaly_inputs({**columns, "file_size": [1, 2]})


def test_forecast_series_of_different_lengths_are_padded_and_counted() -> None:
    inputs = _tasks.forecast_inputs([[1, 2, 3], [4, 5]], 6, (80, 95), 12, [1.0] * 6)
    np.testing.assert_array_equal(inputs["history"], np.array([[1, 2, 3], [4, 5, np.nan]], np.float32))
    assert inputs["length"].tolist() == [[3], [2]] and inputs["horizon"].tolist() == [[6], [6]]
    assert inputs["levels"].tolist() == [[80, 95], [80, 95]] and inputs["season"].tolist() == [[12], [12]]
    assert inputs["scenario"].shape == (2, 6) and inputs["history"].dtype == np.float32
    one = _tasks.forecast_inputs(np.arange(10.0), 3, (80,), None, None)
    assert one["history"].shape == (1, 10) and one["length"].tolist() == [[10]] and "season" not in one


def test_texts_and_images_are_one_a_row() -> None:
    assert _tasks.text_inputs("one")["text"].tolist() == [["one"]]
    assert _tasks.text_inputs(["a", b"b"])["text"].shape == (2, 1)
    assert _tasks.image_inputs([b"\x89PNG", b"\xff\xd8"])["image"].tolist() == [[b"\x89PNG"], [b"\xff\xd8"]]
    with pytest.raises(sdk.InvalidArgument, match="images: a list"):
        _tasks.image_inputs(b"\x89PNG")  # type: ignore[arg-type]


def test_deployment_builders() -> None:
    assert sdk.target("anomaly:2").version == "2" and sdk.target("anomaly").version == ""
    ab = sdk.ab_test("fraud", {"anomaly:1": 90, "anomaly:2": 10}, sticky_key="user")
    assert [(v.target.model, v.target.version, v.weight) for v in ab.variants] == [("anomaly", "1", 90),
                                                                                   ("anomaly", "2", 10)]
    can = sdk.canary("c", "anomaly:1", "anomaly:2", stages=[(5, 60), (100, 60)], max_p99_ms=50)
    assert can.canary.canary.version == "2" and [s.percent for s in can.canary.stages] == [5, 100]
    assert [t.version for t in can.fallback] == ["1"]  # the baseline answers the canary's failures
    sh = sdk.shadow("bg", "anomaly:1", ("anomaly", "2"), tolerance=1e-4)
    assert sh.shadow.version == "2" and sh.variants[0].target.version == "1"
    chain = sdk.fallback_chain("safe", "anomaly:2", "anomaly:1", "anomaly_rules", link_timeout_us=20_000,
                               default={"score": np.zeros(1, np.float32), "label": np.array(["none"])})
    assert [t.model for t in chain.fallback] == ["anomaly", "anomaly_rules"]
    outs = {o.name: o for o in chain.default_answer.outputs}
    assert outs["score"].datatype == "FP32" and outs["label"].strings == ["none"]
    mv = sdk.model_version("fraud", "1.0.0", metrics={"auc": 0.9}, hyperparameters={"trees": 200})
    assert mv.hyperparameters["trees"] == "200" and mv.metrics["auc"] == pytest.approx(0.9)


def test_public_api_is_what_all_says() -> None:
    public = {name for name in vars(sdk) if not name.startswith("_")} - {"annotations"}
    modules = {name for name in public if inspect.ismodule(getattr(sdk, name))}
    assert sorted(public - modules) == sorted(sdk.__all__)
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None


def _api(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_the_async_client_has_the_sync_clients_methods_as_coroutines() -> None:
    # gRPC connects on a channel's first call: making the clients opens no socket
    sync, aio = sdk.InferClient("127.0.0.1:1"), sdk.AsyncInferClient("127.0.0.1:1")
    try:
        pairs = [(type(sync), type(aio))] + [(type(getattr(sync, ns)), type(getattr(aio, ns)))
                                             for ns in ("anomaly", "forecast", "vision", "nlp", "control")]
        for s, a in pairs:
            assert _api(s) and _api(s) == _api(a), (s, a)
            for name in _api(a):
                assert inspect.iscoroutinefunction(getattr(a, name)), (a, name)
        assert inspect.signature(sdk.InferClient) == inspect.signature(sdk.AsyncInferClient)
    finally:
        sync.close()


def test_the_sdk_imports_no_server_module() -> None:
    code = ("import sys, infer.client; print('\\n'.join(m for m in sys.modules if m.startswith(('infer.', 'kernels'))"
            " and not m.startswith(('infer.client', 'infer._proto'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == []
