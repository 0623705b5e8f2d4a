"""Bad requests, one table: each gets the exact gRPC status and a message naming what was wrong.

After every bad request the same server must still answer a good one: ``double`` version "1"
gives x * 2 and the newest version (2, asked with version "") gives x * 4.

Not covered here: inferring on a model that is in the repository but not loaded needs
``--model-control-mode explicit`` (the session server loads everything).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fixtures import DOUBLE_CONFIG, ServerProcess, write_double

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

Code = grpc.StatusCode
LIMIT = 65536  # --max-message-bytes of the second server in the message-size case


def tensor(name: str, datatype: str, shape: list[int], **contents: list[Any]) -> Any:
    t = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    for kind, values in contents.items():
        getattr(t.contents, kind).extend(values)
    return t


def x_tensor(shape: list[int] | None = None, datatype: str = "FP32", **contents: list[Any]) -> Any:
    return tensor("x", datatype, [1, 4] if shape is None else shape, **contents)


def param(value: Any) -> Any:
    p = pb.InferParameter()
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = value
    return p


def infer(
    inputs: list[Any],
    raw: list[bytes] | None = None,
    *,
    model: str = "double",
    version: str = "",
    outputs: tuple[str, ...] = (),
    params: dict[str, Any] | None = None,
) -> Any:
    req = pb.ModelInferRequest(model_name=model, model_version=version, inputs=inputs, raw_input_contents=raw or [])
    for name in outputs:
        req.outputs.add(name=name)
    for key, value in (params or {}).items():
        req.parameters[key].CopyFrom(param(value))
    return req


def fp32(n: int) -> bytes:
    return np.arange(n, dtype="<f4").tobytes()


def bytes_in(raw: bytes, shape: list[int] | None = None) -> Any:
    return infer([tensor("in_BYTES", "BYTES", shape or [1, 1])], [raw], model="identity_all")


def prefix(n: int) -> bytes:
    return struct.pack("<I", n)


@dataclass(frozen=True)
class Case:
    rpc: str
    request: Any = field(repr=False)
    code: grpc.StatusCode
    words: tuple[str, ...]
    limited: bool = False  # sent to a second server started with --max-message-bytes LIMIT


def case(id_: str, rpc: str, request: Any, code: grpc.StatusCode, *words: str, limited: bool = False) -> Any:
    return pytest.param(Case(rpc, request, code, words, limited), id=id_)


INVALID, NOT_FOUND = Code.INVALID_ARGUMENT, Code.NOT_FOUND
HUGE = 2**40

CASES = [
    # ---- datatypes and shapes ----
    case("wrong_datatype", "ModelInfer", infer([x_tensor(datatype="INT32")], [fp32(4)]), INVALID,
         "input 'x'", "datatype INT32", "expects FP32"),
    case("unknown_datatype", "ModelInfer", infer([x_tensor(datatype="FP33")], [fp32(4)]), INVALID,
         "input 'x' datatype", "'FP33'", "FP32"),
    case("wrong_rank", "ModelInfer", infer([x_tensor([4])], [fp32(4)]), INVALID,
         "input 'x'", "shape [4]", "expects [-1, 4]"),
    case("wrong_non_batch_dim", "ModelInfer", infer([x_tensor([1, 5])], [fp32(5)]), INVALID,
         "input 'x'", "shape [1, 5]", "expects [-1, 4]"),
    case("batch_size_zero", "ModelInfer", infer([x_tensor([0, 4])], [b""]), INVALID,
         "input 'x'", "batch size 0", "max_batch_size 8"),
    case("batch_over_max", "ModelInfer", infer([x_tensor([9, 4])], [fp32(36)]), INVALID,
         "input 'x'", "batch size 9", "max_batch_size 8"),
    case("batch_sizes_differ", "ModelInfer",
         infer([tensor("in_FP32", "FP32", [2, 1]), tensor("in_INT32", "INT32", [3, 1])], [fp32(2), bytes(12)],
               model="identity_all"), INVALID,
         "input 'in_INT32'", "batch size 3", "2"),
    case("negative_dim", "ModelInfer", infer([x_tensor([-1, 4])], [fp32(4)]), INVALID,
         "input 'x'", "shape [-1, 4]", "negative dimension"),
    case("huge_dims_raw", "ModelInfer", infer([x_tensor([HUGE, 4])], [fp32(4)]), INVALID,
         "input 'x'", "16 bytes", f"shape [{HUGE}, 4]", f"needs {HUGE * 16}"),
    case("huge_dims_typed", "ModelInfer", infer([x_tensor([HUGE, 4], fp32_contents=[1, 2, 3, 4])]), INVALID,
         "input 'x'", "fp32_contents has 4 elements", f"needs {HUGE * 4}"),
    case("huge_dims_zero_elements", "ModelInfer", infer([x_tensor([HUGE, HUGE, 0])], [b""]), INVALID,
         "input 'x'", f"shape [{HUGE}, {HUGE}, 0]", "too large"),
    case("huge_dims_bytes", "ModelInfer", bytes_in(prefix(1) + b"a", [HUGE, 1]), INVALID,
         "input 'in_BYTES'", "5 bytes", f"{HUGE} elements"),
    case("too_many_dims", "ModelInfer", infer([x_tensor([1] * 65)], [fp32(1)]), INVALID,
         "input 'x'", "65 dimensions", "at most 64"),
    # ---- raw contents ----
    case("raw_too_small", "ModelInfer", infer([x_tensor()], [fp32(3)]), INVALID,
         "input 'x'", "12 bytes", "shape [1, 4] of FP32 needs 16"),
    case("raw_too_large", "ModelInfer", infer([x_tensor()], [fp32(5)]), INVALID,
         "input 'x'", "20 bytes", "needs 16"),
    case("raw_count_differs", "ModelInfer", infer([x_tensor()], [fp32(4), fp32(4)]), INVALID,
         "raw_input_contents", "2 entries", "1 inputs"),
    case("contents_and_raw", "ModelInfer", infer([x_tensor(fp32_contents=[1, 2, 3, 4])], [fp32(4)]), INVALID,
         "input 'x'", "both contents and raw_input_contents"),
    # ---- typed contents ----
    case("typed_wrong_count", "ModelInfer", infer([x_tensor(fp32_contents=[1, 2, 3])]), INVALID,
         "input 'x'", "contents.fp32_contents has 3 elements", "shape [1, 4] needs 4"),
    case("typed_wrong_field", "ModelInfer", infer([x_tensor(int_contents=[1, 2, 3, 4])]), INVALID,
         "input 'x'", "contents.fp32_contents has 0 elements", "needs 4"),
    case("typed_fp16", "ModelInfer",
         infer([tensor("in_FP16", "FP16", [1, 1], fp32_contents=[1.0])], model="identity_all"), INVALID,
         "input 'in_FP16'", "FP16", "raw_input_contents"),
    case("typed_value_out_of_range", "ModelInfer",
         infer([tensor("in_INT8", "INT8", [1, 1], int_contents=[1000])], model="identity_all"), INVALID,
         "input 'in_INT8'", "does not fit INT8", "-128..127"),
    case("typed_uint_out_of_range", "ModelInfer",
         infer([tensor("in_UINT16", "UINT16", [1, 2], uint_contents=[1, 70000])], model="identity_all"), INVALID,
         "input 'in_UINT16'", "contents.uint_contents", "does not fit UINT16", "0..65535"),
    case("typed_bytes_wrong_count", "ModelInfer",
         infer([tensor("in_BYTES", "BYTES", [1, 2], bytes_contents=[b"a"])], model="identity_all"), INVALID,
         "input 'in_BYTES'", "contents.bytes_contents has 1 elements", "needs 2"),
    # ---- BYTES raw encoding ----
    case("bytes_length_past_end", "ModelInfer", bytes_in(prefix(100) + b"abc"), INVALID,
         "input 'in_BYTES'", "declares 100 bytes", "only 3 remain"),
    case("bytes_trailing_garbage", "ModelInfer", bytes_in(prefix(2) + b"ab" + b"zz"), INVALID,
         "input 'in_BYTES'", "2 trailing bytes", "1 elements"),
    case("bytes_truncated_prefix", "ModelInfer", bytes_in(b"\x01\x00"), INVALID,
         "input 'in_BYTES'", "4-byte length prefix"),
    # ---- inputs and outputs by name ----
    case("missing_input", "ModelInfer", infer([]), INVALID,
         "model 'double'", "missing required input", "'x'"),
    case("unknown_input", "ModelInfer", infer([x_tensor(), tensor("z", "FP32", [1, 4])], [fp32(4), fp32(4)]),
         INVALID, "input 'z'", "no such input", "['x']"),
    case("duplicate_input", "ModelInfer", infer([x_tensor(), x_tensor()], [fp32(4), fp32(4)]), INVALID,
         "input 'x'", "more than once"),
    case("unknown_output", "ModelInfer", infer([x_tensor()], [fp32(4)], outputs=("z",)), INVALID,
         "output 'z'", "no such output", "['y']"),
    case("output_twice", "ModelInfer", infer([x_tensor()], [fp32(4)], outputs=("y", "y")), INVALID,
         "output 'y'", "more than once"),
    # ---- reserved parameters ----
    case("priority_string", "ModelInfer", infer([x_tensor()], [fp32(4)], params={"priority": "high"}), INVALID,
         "parameter 'priority'", "non-negative integer", "'high'"),
    case("priority_bool", "ModelInfer", infer([x_tensor()], [fp32(4)], params={"priority": True}), INVALID,
         "parameter 'priority'", "non-negative integer", "True"),
    case("priority_level_out_of_range", "ModelInfer",
         infer([tensor("x", "FP32", [1, 64])], [fp32(64)], model="dense", params={"priority": 5}), INVALID,
         "parameter 'priority'", "5", "1..2", "model 'dense'"),
    case("timeout_negative", "ModelInfer", infer([x_tensor()], [fp32(4)], params={"timeout": -5}), INVALID,
         "parameter 'timeout'", "non-negative integer", "-5"),
    case("timeout_float", "ModelInfer", infer([x_tensor()], [fp32(4)], params={"timeout": 1.5}), INVALID,
         "parameter 'timeout'", "non-negative integer", "1.5"),
    # ---- model names and versions ----
    case("unknown_model", "ModelInfer", infer([x_tensor()], [fp32(4)], model="nope"), NOT_FOUND,
         "model 'nope'", "not known"),
    case("unknown_version", "ModelInfer", infer([x_tensor()], [fp32(4)], version="7"), NOT_FOUND,
         "model 'double'", "version 7"),
    case("non_numeric_version", "ModelInfer", infer([x_tensor()], [fp32(4)], version="latest"), NOT_FOUND,
         "model 'double'", "version 'latest'", "integers"),
    # A name that cannot name a repository directory names no model: NOT_FOUND, as for any unknown
    # model (inference looks names up among the repository's entries and never opens a path).
    case("path_traversal_model", "ModelInfer", infer([x_tensor()], [fp32(4)], model="../etc"), NOT_FOUND,
         "model '../etc'", "not known"),
    case("empty_model_name", "ModelInfer", infer([x_tensor()], [fp32(4)], model=""), INVALID,
         "model_name", "required"),
    # ---- transport limits ----
    case("message_over_limit", "ModelInfer", infer([x_tensor([1, 2**18])], [fp32(2**18)]),
         Code.RESOURCE_EXHAUSTED, "larger than max", str(LIMIT), limited=True),
    # ---- other RPCs ----
    case("load_unknown_model", "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="nope"), NOT_FOUND,
         "model 'nope'", "not in the model repository"),
    case("load_unknown_parameter", "RepositoryModelLoad",
         pb.RepositoryModelLoadRequest(
             model_name="double", parameters={"bogus": pb.ModelRepositoryParameter(string_param="1")}
         ), INVALID, "parameter 'bogus'", "unknown RepositoryModelLoad parameter"),
    # Loading opens a directory, so here an impossible name is refused as such before any lookup.
    case("load_path_traversal", "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="../etc"), INVALID,
         "model_name '../etc'", "not a valid model name"),
    case("unload_unknown_model", "RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name="nope"),
         NOT_FOUND, "model 'nope'", "not known"),
    case("metadata_unknown_model", "ModelMetadata", pb.ModelMetadataRequest(name="nope"), NOT_FOUND,
         "model 'nope'", "not known"),
    case("metadata_unknown_version", "ModelMetadata", pb.ModelMetadataRequest(name="double", version="9"), NOT_FOUND,
         "model 'double'", "version 9"),
    case("config_unknown_model", "ModelConfig", pb.ModelConfigRequest(name="nope"), NOT_FOUND,
         "model 'nope'", "not known"),
    case("statistics_unknown_model", "ModelStatistics", pb.ModelStatisticsRequest(name="nope"), NOT_FOUND,
         "model 'nope'", "not known"),
    case("shared_memory_register", "SystemSharedMemoryRegister",
         pb.SystemSharedMemoryRegisterRequest(name="r", key="/k", byte_size=16), Code.UNIMPLEMENTED,
         "shared-memory", "not supported"),
]


async def check_good(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    """``double`` still answers: version "1" gives x * 2, the newest (2) gives x * 4."""
    x = np.arange(8, dtype="<f4").reshape(2, 4) - 3
    for version, served, k in (("1", "1", 2), ("", "2", 4)):
        resp = await stub.ModelInfer(infer([x_tensor([2, 4])], [x.tobytes()], version=version), timeout=10)
        assert (resp.model_name, resp.model_version) == ("double", served)
        assert [(o.name, o.datatype, list(o.shape)) for o in resp.outputs] == [("y", "FP32", [2, 4])]
        np.testing.assert_array_equal(np.frombuffer(resp.raw_output_contents[0], "<f4").reshape(2, 4), x * k)


async def expect_error(stub: pb_grpc.GRPCInferenceServiceStub, c: Case) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(stub, c.rpc)(c.request, timeout=10)
    err = info.value
    details = err.details() or ""
    assert err.code() == c.code, details
    missing = [w for w in c.words if w not in details]
    assert not missing, f"{missing} not in {details!r}"
    assert "Traceback" not in details


async def limited_server_round(c: Case, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_double(repo, versions=(1, 2), config=DOUBLE_CONFIG)
    srv = ServerProcess(repo, "--max-message-bytes", str(LIMIT))
    try:
        await asyncio.to_thread(srv.wait_ready, 60)
        async with grpc.aio.insecure_channel(srv.address) as ch:
            small_stub = pb_grpc.GRPCInferenceServiceStub(ch)
            await expect_error(small_stub, c)
            await check_good(small_stub)
    finally:
        code = srv.stop()
        assert code == 0, srv.log.read_text()  # output() needs the log still open


@pytest.mark.parametrize("c", CASES)
async def test_bad_request(c: Case, stub: pb_grpc.GRPCInferenceServiceStub, tmp_path: Path) -> None:
    if c.limited:
        await limited_server_round(c, tmp_path)
    else:
        await expect_error(stub, c)
    await check_good(stub)
