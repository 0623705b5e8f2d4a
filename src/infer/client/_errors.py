"""The client's exceptions: one per gRPC status a caller handles differently, all under InferClientError."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "Aborted",
    "DeadlineExceeded",
    "InferClientError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "error_from_rpc",
]

_DETAILS_KEY = "grpc-status-details-bin"
# google.rpc detail messages unpacked for the caller; any other detail stays a google.protobuf.Any
_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.RetryInfo, error_details_pb2.BadRequest, error_details_pb2.ErrorInfo,
    error_details_pb2.QuotaFailure, error_details_pb2.PreconditionFailure, error_details_pb2.ResourceInfo,
    error_details_pb2.RequestInfo, error_details_pb2.DebugInfo, error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
)


class InferClientError(Exception):
    """A call that ended without an answer: its gRPC ``code``, the server's ``message`` (which names the field at
    fault) and the ``google.rpc`` ``details`` that came with it (e.g. ``RetryInfo`` on a full queue)."""

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, code: grpc.StatusCode | None, message: str, details: Iterable[Message] = ()) -> None:
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.message = message
        self.details: list[Message] = list(details)
        super().__init__(f"{self.code.name}: {message}")

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked the caller to wait (its ``RetryInfo``), or None."""
        for d in self.details:
            if isinstance(d, error_details_pb2.RetryInfo):
                return float(d.retry_delay.seconds + d.retry_delay.nanos / 1e9)
        return None


class NotFound(InferClientError):
    """No such model, version, deployment or registry entry."""

    default_code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(InferClientError, ValueError):
    """The request is malformed; the message names the field (``input 'x': ...``). Also raised before sending
    for inputs the client cannot encode."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class Unavailable(InferClientError):
    """The server cannot be reached, or the server or model is not ready (retried by the client's policy)."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(InferClientError):
    """The call's deadline passed before its answer came."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(InferClientError):
    """No token, or one the server does not know."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(InferClientError):
    """The token lacks the role the call needs."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(InferClientError):
    """The model's queue is full or the message too large; ``retry_after`` says when to try again."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Aborted(InferClientError):
    """A compare-and-set lost: the deployment changed since it was read (read it again and retry)."""

    default_code = grpc.StatusCode.ABORTED


class Unimplemented(InferClientError):
    """The server does not offer this call."""

    default_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(InferClientError):
    """The server failed unexpectedly; the message carries the request id its log has."""

    default_code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[InferClientError]] = {
    cls.default_code: cls
    for cls in (NotFound, InvalidArgument, Unavailable, DeadlineExceeded, Unauthenticated, PermissionDenied,
                ResourceExhausted, Aborted, Unimplemented, Internal)
}


def _unpack(detail: any_pb2.Any) -> Message:
    for cls in _DETAIL_TYPES:
        if detail.Is(cls.DESCRIPTOR):  # type: ignore[arg-type]
            msg = cls()
            detail.Unpack(msg)
            return msg
    return detail


def _details(trailing: Any) -> list[Message]:
    for key, value in trailing or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:
                return []
            return [_unpack(d) for d in status.details]
    return []


def error_from_rpc(err: Any) -> InferClientError:
    """The exception for a failed call (``grpc.RpcError`` of a sync call or ``grpc.aio.AioRpcError``)."""
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    text = err.details() if callable(getattr(err, "details", None)) else str(err)
    trailing = err.trailing_metadata() if callable(getattr(err, "trailing_metadata", None)) else None
    return _BY_CODE.get(code, InferClientError)(code, text or "", _details(trailing))
