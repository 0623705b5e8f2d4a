"""Protobuf messages <-> core types for the V2 data plane. No policy here, only translation."""

from __future__ import annotations

from typing import Any

import numpy as np

from infer._proto import grpc_service_pb2 as pb
from infer.core.stats import Duration, VersionStats
from infer.core.types import (
    DataType,
    InferRequest,
    InferResponse,
    ParamValue,
    Tensor,
    element_count,
    encode_bytes_tensor,
    tensor_from_buffer,
)
from infer.errors import InvalidArgument

__all__ = ["infer_request_from_pb", "infer_response_to_pb", "model_stats_to_pb", "params_from_pb"]

# typed ``contents`` field for each datatype (FP16 has none: raw only)
_CONTENTS: dict[DataType, str] = {
    DataType.BOOL: "bool_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BYTES: "bytes_contents",
}
# datatypes narrower than their contents field (int_contents/uint_contents: 32 bits), with their range
_NARROW: dict[DataType, tuple[int, int]] = {
    dt: (int(np.iinfo(t).min), int(np.iinfo(t).max))
    for dt, t in ((DataType.INT8, np.int8), (DataType.INT16, np.int16), (DataType.UINT8, np.uint8),
                  (DataType.UINT16, np.uint16))
}


def params_from_pb(params: Any) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    for key, p in params.items():
        kind = p.WhichOneof("parameter_choice")
        if kind is not None:
            out[key] = getattr(p, kind)
    return out


def _typed(name: str, dt: DataType, shape: list[int], contents: Any) -> Tensor:
    field = _CONTENTS.get(dt)
    if field is None:
        raise InvalidArgument(f"input '{name}': {dt.value} must be sent in raw_input_contents")
    values = getattr(contents, field)
    count = element_count(name, shape)
    if len(values) != count:
        raise InvalidArgument(
            f"input '{name}': contents.{field} has {len(values)} elements but shape {shape} needs {count}"
        )
    if dt is DataType.BYTES:
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
    elif dt in _NARROW:  # numpy would silently wrap a value that does not fit
        arr = np.array(values, dtype=np.int64)
        lo, hi = _NARROW[dt]
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise InvalidArgument(f"input '{name}': a value of contents.{field} does not fit {dt.value} ({lo}..{hi})")
        arr = arr.astype(dt.numpy)
    else:
        arr = np.array(values, dtype=dt.numpy)
    return Tensor(name, dt, arr.reshape(shape))


def infer_request_from_pb(req: Any, deadline: float | None) -> InferRequest:
    if not req.model_name:
        raise InvalidArgument("model_name: required (the name of the model to run)")
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs (one per input expected)"
        )
    inputs: list[Tensor] = []
    for i, inp in enumerate(req.inputs):
        dt = DataType.parse(inp.datatype, f"input '{inp.name}' datatype")
        shape = list(inp.shape)
        if raw:
            if inp.HasField("contents"):
                raise InvalidArgument(f"input '{inp.name}': both contents and raw_input_contents given")
            inputs.append(tensor_from_buffer(inp.name, dt, shape, raw[i]))
        else:
            inputs.append(_typed(inp.name, dt, shape, inp.contents))
    return InferRequest(
        model_name=req.model_name,
        model_version=req.model_version,
        id=req.id,
        inputs=inputs,
        outputs=[o.name for o in req.outputs],
        parameters=params_from_pb(req.parameters) if req.parameters else {},
        deadline=deadline,
    )


def _set_param(p: Any, value: ParamValue) -> None:
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def infer_response_to_pb(resp: InferResponse) -> Any:
    msg = pb.ModelInferResponse(model_name=resp.model_name, model_version=resp.model_version, id=resp.id)
    for key, value in resp.parameters.items():
        _set_param(msg.parameters[key], value)
    raw = msg.raw_output_contents
    for t in resp.outputs:
        out = msg.outputs.add()
        out.name = t.name
        out.datatype = t.datatype.value
        out.shape.extend(t.data.shape)
        if t.datatype is DataType.BYTES:
            raw.append(encode_bytes_tensor(t.data))
        else:
            data = t.data
            if data.dtype != t.datatype.numpy:
                data = data.astype(t.datatype.numpy)
            raw.append(data.tobytes())
    return msg


def _dur(msg: Any, d: Duration) -> None:
    msg.count = d.count
    msg.ns = d.ns


def model_stats_to_pb(name: str, version: str, s: VersionStats) -> Any:
    m = pb.ModelStatistics(
        name=name,
        version=version,
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
    )
    st = m.inference_stats
    for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        _dur(getattr(st, field), getattr(s, field))
    _dur(st.cache_hit, s.cache_hit)
    _dur(st.cache_miss, s.cache_miss)
    for size, b in sorted(s.batches.items()):
        bs = m.batch_stats.add()
        bs.batch_size = size
        _dur(bs.compute_input, b.compute_input)
        _dur(bs.compute_infer, b.compute_infer)
        _dur(bs.compute_output, b.compute_output)
    return m
