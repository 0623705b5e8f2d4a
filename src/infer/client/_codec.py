"""NumPy arrays <-> V2 tensors in raw contents (little-endian; BYTES as 4-byte little-endian length + payload).

Pure functions, no I/O: both clients and the unit tests use them as they are.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from infer._proto import grpc_service_pb2 as pb
from infer.client._errors import InvalidArgument

__all__ = ["DATATYPES", "InferResult", "Param", "datatype_of", "decode_bytes", "decode_response", "decode_tensor",
           "encode_bytes", "encode_request", "encode_tensor"]

Param: TypeAlias = bool | int | float | str

# V2 datatype -> numpy dtype, little-endian as on the wire
DATATYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_BY_KIND: Final[dict[tuple[str, int], str]] = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items()}
_LEN: Final = struct.Struct("<I")
# typed ``contents`` fields, for answers a server sent without raw contents (FP16 has none)
_CONTENTS: Final[dict[str, str]] = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


class InferResult(dict[str, NDArray[Any]]):
    """The outputs by name (numeric ones are read-only views of the response: ``.copy()`` to write), with the
    answer's ``model_name``, ``model_version``, ``id`` and response ``parameters`` (for a deployment:
    ``infer.deployment``, ``infer.target``, ``infer.fallback_depth``)."""

    def __init__(self, outputs: Mapping[str, NDArray[Any]], *, model_name: str = "", model_version: str = "",
                 id: str = "", parameters: Mapping[str, Param] | None = None) -> None:
        super().__init__(outputs)
        self.model_name = model_name
        self.model_version = model_version
        self.id = id
        self.parameters: dict[str, Param] = dict(parameters or {})


def datatype_of(name: str, arr: NDArray[Any]) -> str:
    """The V2 datatype of a NumPy array: object, str and bytes arrays are BYTES."""
    kind = arr.dtype.kind
    if kind in "OUS":
        return "BYTES"
    found = _BY_KIND.get((kind, arr.dtype.itemsize)) if kind in "biuf" else None
    if found is None:
        raise InvalidArgument(None, f"input '{name}': numpy dtype {arr.dtype} has no V2 datatype (use bool, "
                                    "(u)int8-64, float16/32/64, or object/str/bytes for BYTES)")
    return found


def encode_bytes(name: str, arr: NDArray[Any]) -> bytes:
    """V2 BYTES raw content of an array of bytes or str (str sent as UTF-8), in C order."""
    parts: list[bytes] = []
    for i, item in enumerate(arr.reshape(-1)):
        if isinstance(item, bytes):  # np.bytes_ too
            b = item
        elif isinstance(item, str):  # np.str_ too
            b = item.encode("utf-8")
        elif isinstance(item, bytearray | memoryview):
            b = bytes(item)
        else:
            raise InvalidArgument(None, f"input '{name}'[{i}]: BYTES elements are bytes or str, "
                                        f"not {type(item).__name__}")
        if len(b) > 0xFFFFFFFF:
            raise InvalidArgument(None, f"input '{name}'[{i}]: a BYTES element is limited to 4 GiB")
        parts += (_LEN.pack(len(b)), b)
    return b"".join(parts)


def encode_tensor(name: str, value: ArrayLike) -> tuple[str, list[int], bytes]:
    """``(datatype, shape, raw content)`` of an array (anything ``np.asarray`` takes)."""
    arr = np.asarray(value)
    datatype = datatype_of(name, arr)
    if datatype == "BYTES":
        return datatype, list(arr.shape), encode_bytes(name, arr)
    return datatype, list(arr.shape), arr.astype(DATATYPES[datatype], copy=False).tobytes(order="C")


def _count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def decode_bytes(name: str, raw: bytes, count: int) -> NDArray[np.object_]:
    """``count`` BYTES elements (as ``bytes``) from raw content."""
    view = memoryview(raw)
    out = np.empty(count, dtype=object)
    pos, end = 0, len(view)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidArgument(None, f"output '{name}': BYTES content ends at element {i} of {count}")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > end:
            raise InvalidArgument(None, f"output '{name}': BYTES element {i} declares {n} bytes, {end - pos} remain")
        out[i] = bytes(view[pos:pos + n])
        pos += n
    if pos != end:
        raise InvalidArgument(None, f"output '{name}': {end - pos} bytes after the last of {count} BYTES elements")
    return out


def decode_tensor(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> NDArray[Any]:
    """The array of raw content: numeric ones a read-only view of ``raw``, BYTES an object array of ``bytes``."""
    count = _count(shape)
    if datatype == "BYTES":
        return decode_bytes(name, raw, count).reshape(shape)
    dt = DATATYPES.get(datatype)
    if dt is None:
        raise InvalidArgument(None, f"output '{name}': datatype {datatype} is not supported by this client")
    if len(raw) != count * dt.itemsize:
        raise InvalidArgument(None, f"output '{name}': {len(raw)} bytes of {datatype} for shape {list(shape)}")
    return np.frombuffer(raw, dt, count).reshape(shape)


def _set_param(p: Any, value: Param) -> None:
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    elif isinstance(value, str):
        p.string_param = value
    else:
        raise InvalidArgument(None, f"parameter value {value!r}: bool, int, float or str expected")


def encode_request(model: str, inputs: Mapping[str, ArrayLike], outputs: Sequence[str] | None = None,
                   version: str = "", parameters: Mapping[str, Param] | None = None,
                   request_id: str = "") -> pb.ModelInferRequest:
    """A ModelInferRequest with every input in raw contents."""
    if not inputs:
        raise InvalidArgument(None, "inputs: at least one tensor is needed")
    req = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, value in inputs.items():
        datatype, shape, raw = encode_tensor(name, value)
        req.inputs.add(name=name, datatype=datatype, shape=shape)
        req.raw_input_contents.append(raw)
    for name in outputs or ():
        req.outputs.add(name=name)
    for key, value in (parameters or {}).items():
        _set_param(req.parameters[key], value)
    return req


def _typed(out: Any) -> NDArray[Any]:
    field = _CONTENTS.get(out.datatype)
    if field is None:
        raise InvalidArgument(None, f"output '{out.name}': {out.datatype} came without raw contents")
    values = list(getattr(out.contents, field))
    if out.datatype == "BYTES":
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr.reshape(list(out.shape))
    return np.array(values, dtype=DATATYPES[out.datatype]).reshape(list(out.shape))


def decode_response(resp: pb.ModelInferResponse) -> InferResult:
    raw = resp.raw_output_contents
    outputs: dict[str, NDArray[Any]] = {}
    for i, out in enumerate(resp.outputs):
        if raw:
            outputs[out.name] = decode_tensor(out.name, out.datatype, list(out.shape), raw[i])
        else:
            outputs[out.name] = _typed(out)
    params: dict[str, Param] = {}
    for key, p in resp.parameters.items():
        kind = p.WhichOneof("parameter_choice")
        if kind is not None:
            params[key] = getattr(p, kind)
    return InferResult(outputs, model_name=resp.model_name, model_version=resp.model_version, id=resp.id,
                       parameters=params)
