"""Tensors and inference requests in protocol-neutral form.

Datatypes use the Open Inference Protocol names (``FP32``); model configs use Triton's
(``TYPE_FP32``). Both map to one numpy dtype; ``BYTES`` maps to ``object`` arrays of ``bytes``.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from infer.errors import InvalidArgument

__all__ = [
    "DataType",
    "InferRequest",
    "InferResponse",
    "ParamValue",
    "Tensor",
    "TensorSpec",
    "decode_bytes_tensor",
    "element_count",
    "encode_bytes_tensor",
    "shape_matches",
    "tensor_from_buffer",
]

ParamValue = bool | int | float | str
Array = npt.NDArray[np.generic]


class DataType(enum.Enum):
    """A tensor element type, by its V2 protocol name."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @property
    def numpy(self) -> np.dtype[np.generic]:
        return _NUMPY[self]

    @property
    def itemsize(self) -> int:
        """Bytes per element in raw form; 0 for BYTES (variable length)."""
        return 0 if self is DataType.BYTES else _NUMPY[self].itemsize

    @property
    def config_name(self) -> str:
        """Triton's model-config name, e.g. ``TYPE_FP32`` (``TYPE_STRING`` for BYTES)."""
        return "TYPE_STRING" if self is DataType.BYTES else f"TYPE_{self.value}"

    @classmethod
    def parse(cls, name: str, field_name: str = "datatype") -> DataType:
        """Parse a V2 datatype name, raising InvalidArgument that names the field."""
        found = _BY_NAME.get(name)
        if found is not None:
            return found
        try:
            return cls(name)
        except ValueError:
            raise InvalidArgument(
                f"{field_name}: unsupported datatype '{name}' (expected one of "
                f"{', '.join(d.value for d in cls)})"
            ) from None

    @classmethod
    def from_config(cls, name: str) -> DataType:
        if name == "TYPE_STRING":
            return cls.BYTES
        if not name.startswith("TYPE_") or name[5:] not in cls.__members__:
            raise InvalidArgument(f"data type '{name}' is not supported by infer")
        return cls(name[5:])

    @classmethod
    def from_numpy(cls, dtype: np.dtype[np.generic]) -> DataType:
        if dtype.kind in "OSU":
            return cls.BYTES
        try:
            return _FROM_NUMPY[np.dtype(dtype)]
        except KeyError:
            raise InvalidArgument(f"numpy dtype {dtype} has no V2 datatype") from None


_NUMPY: Final[dict[DataType, np.dtype[np.generic]]] = {
    DataType.BOOL: np.dtype(np.bool_),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.UINT16: np.dtype(np.uint16),
    DataType.UINT32: np.dtype(np.uint32),
    DataType.UINT64: np.dtype(np.uint64),
    DataType.INT8: np.dtype(np.int8),
    DataType.INT16: np.dtype(np.int16),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.FP16: np.dtype("<f2"),
    DataType.FP32: np.dtype("<f4"),
    DataType.FP64: np.dtype("<f8"),
    DataType.BYTES: np.dtype(np.object_),
}
_BY_NAME: Final[dict[str, DataType]] = {d.value: d for d in DataType}
_FROM_NUMPY: Final[dict[np.dtype[np.generic], DataType]] = {
    v: k for k, v in _NUMPY.items() if k is not DataType.BYTES
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model's declared tensor: shape uses -1 for a variable dimension, batch dim included."""

    name: str
    datatype: DataType
    shape: tuple[int, ...]


@dataclass(slots=True)
class Tensor:
    """A named tensor; ``data.shape`` is the tensor's shape."""

    name: str
    datatype: DataType
    data: Array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


@dataclass(slots=True)
class InferRequest:
    """One inference request as the data plane sees it.

    ``deadline`` is an absolute time on the server's monotonic clock (None: no deadline).
    ``priority`` 0 means the model's default level; ``timeout_us`` 0 means none given.
    """

    model_name: str
    inputs: list[Tensor]
    model_version: str = ""
    id: str = ""
    outputs: list[str] = field(default_factory=list)
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    priority: int = 0
    timeout_us: int = 0
    deadline: float | None = None


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    id: str = ""
    parameters: dict[str, ParamValue] = field(default_factory=dict)


def shape_matches(shape: Sequence[int], spec: Sequence[int]) -> bool:
    """True when ``shape`` fits ``spec`` (same rank, -1 in spec matches any size)."""
    if len(shape) != len(spec):
        return False
    return all(s == d or d < 0 for s, d in zip(shape, spec, strict=True))


_MAX_RANK: Final = 64  # numpy's limit on dimensions
_MAX_EXTENT: Final = 2**56  # bound on the product of a shape's non-zero dims (numpy's is ~2**63 bytes)


def element_count(name: str, shape: Sequence[int]) -> int:
    """Elements in a tensor of ``shape``; InvalidArgument for a shape no array can take."""
    if len(shape) > _MAX_RANK:
        raise InvalidArgument(f"input '{name}': shape has {len(shape)} dimensions (at most {_MAX_RANK})")
    for d in shape:
        if d < 0:
            raise InvalidArgument(f"input '{name}': shape {list(shape)} has a negative dimension")
    if math.prod(d for d in shape if d) > _MAX_EXTENT:
        raise InvalidArgument(f"input '{name}': shape {list(shape)} is too large")
    return math.prod(shape)


def tensor_from_buffer(
    name: str, datatype: DataType, shape: Sequence[int], buf: bytes | memoryview
) -> Tensor:
    """Decode raw little-endian contents into a tensor without copying (numpy views ``buf``)."""
    count = element_count(name, shape)
    if datatype is DataType.BYTES:
        return Tensor(name, datatype, decode_bytes_tensor(name, buf, count).reshape(shape))
    expected = count * datatype.itemsize
    if len(buf) != expected:
        raise InvalidArgument(
            f"input '{name}': raw content has {len(buf)} bytes but shape {list(shape)} of "
            f"{datatype.value} needs {expected}"
        )
    arr = np.frombuffer(buf, dtype=datatype.numpy, count=count)
    return Tensor(name, datatype, arr.reshape(shape))


_LEN = struct.Struct("<I")


def decode_bytes_tensor(name: str, buf: bytes | memoryview, count: int) -> Array:
    """Split V2 BYTES raw content (4-byte little-endian length + payload, repeated)."""
    view = memoryview(buf)
    pos, end = 0, len(view)
    if 4 * count > end:  # checked before allocating: the shape may claim far more than was sent
        raise InvalidArgument(
            f"input '{name}': BYTES content has {end} bytes, too few for {count} elements "
            "(each needs a 4-byte length prefix)"
        )
    out = np.empty(count, dtype=object)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidArgument(
                f"input '{name}': BYTES content ends at element {i} of {count} "
                "(missing 4-byte length prefix)"
            )
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > end:
            raise InvalidArgument(
                f"input '{name}': BYTES element {i} declares {n} bytes but only {end - pos} remain"
            )
        out[i] = bytes(view[pos : pos + n])
        pos += n
    if pos != end:
        raise InvalidArgument(
            f"input '{name}': BYTES content has {end - pos} trailing bytes after {count} elements"
        )
    return out


def encode_bytes_tensor(arr: Array) -> bytes:
    """Serialise an array of bytes/str into V2 BYTES raw content."""
    parts: list[bytes] = []
    for item in arr.reshape(-1):
        b = item.encode() if isinstance(item, str) else bytes(item)  # type: ignore[call-overload]
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


