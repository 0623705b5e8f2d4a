"""V2 requests and responses as NumPy arrays, over infer's own stubs (raw contents both ways).

Kept apart from ``fixtures.py``, which must not import ``infer._proto`` (tritonclient's protobuf names clash).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import grpc
import numpy as np

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.int32): "INT32",
             np.dtype(np.int64): "INT64", np.dtype(np.bool_): "BOOL", np.dtype(np.uint64): "UINT64"}
DTYPES = {v: k for k, v in DATATYPES.items()}


def _bytes(values: np.ndarray) -> bytes:
    parts = []
    for v in values.reshape(-1):
        b = v if isinstance(v, bytes) else str(v).encode()
        parts += [len(b).to_bytes(4, "little"), b]
    return b"".join(parts)


def infer_request(model: str, tensors: Mapping[str, np.ndarray], outputs: tuple[str, ...] = ()) -> pb.ModelInferRequest:
    """A ModelInferRequest whose inputs are ``tensors`` (object arrays as BYTES), as raw contents."""
    req = pb.ModelInferRequest(model_name=model)
    for name, arr in tensors.items():
        dt = "BYTES" if arr.dtype == object else DATATYPES[arr.dtype]
        req.inputs.add(name=name, datatype=dt, shape=list(arr.shape))
        req.raw_input_contents.append(_bytes(arr) if dt == "BYTES" else np.ascontiguousarray(arr).tobytes())
    for name in outputs:
        req.outputs.add(name=name)
    return req


def decode(resp: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The response's outputs by name (BYTES as object arrays of bytes)."""
    out: dict[str, np.ndarray] = {}
    for o, raw in zip(resp.outputs, resp.raw_output_contents, strict=True):
        shape = list(o.shape)
        if o.datatype == "BYTES":
            items, i = [], 0
            while i < len(raw):
                n = int.from_bytes(raw[i:i + 4], "little")
                items.append(raw[i + 4:i + 4 + n])
                i += 4 + n
            out[o.name] = np.array(items, dtype=object).reshape(shape)
        else:
            out[o.name] = np.frombuffer(raw, DTYPES[o.datatype]).reshape(shape)
    return out


@contextlib.asynccontextmanager
async def serving(repo: Path, *args: str) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    """``infer serve`` on ``repo`` in a subprocess, and a stub on an aio channel without a send limit; the server
    must stop cleanly afterwards."""
    from fixtures import ServerProcess

    srv = ServerProcess(repo, *args).wait_ready()
    async with grpc.aio.insecure_channel(srv.address, options=[("grpc.max_send_message_length", -1)]) as ch:
        yield pb_grpc.GRPCInferenceServiceStub(ch)
    assert srv.stop() == 0, srv.output()


def images(*payloads: bytes) -> dict[str, np.ndarray]:
    """Encoded image files as the vision models' ``image`` input, one a row."""
    return {"image": np.array(payloads, dtype=object).reshape(-1, 1)}
