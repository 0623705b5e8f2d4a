"""The one mapping from infer's error codes to gRPC status, with retry hints for a full queue.

Also where request bytes that are not the method's message become INVALID_ARGUMENT: grpc answers UNKNOWN when a
deserializer raises, so :func:`add_servicer` registers a servicer with deserializers that hand such bytes to the
handler as :class:`Undecodable`, and :func:`grpc_errors` answers them.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from infer.errors import Code, InferError, RetryLater

__all__ = ["GRPC_CODES", "MAX_MESSAGE_BYTES", "Undecodable", "abort_with", "add_servicer", "clip", "grpc_errors"]

log = logging.getLogger(__name__)

GRPC_CODES: dict[Code, grpc.StatusCode] = {c: getattr(grpc.StatusCode, c.value) for c in Code}

T = TypeVar("T")

# A status message travels in the grpc-message trailer, percent-encoded (3 characters a byte outside printable
# ASCII); clients drop trailers over 8 KiB (grpc's default soft limit), so a message that echoes a long model or
# input name would reach the client as RESOURCE_EXHAUSTED "Stream removed" instead of its own code.
MAX_MESSAGE_BYTES = 1024


def clip(message: str) -> str:
    """``message`` within MAX_MESSAGE_BYTES of UTF-8: its head (which names the field) and tail (which says what is
    wrong) kept, the middle left out."""
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_MESSAGE_BYTES:
        return message
    head = data[:700].decode("utf-8", "ignore")
    tail = data[-300:].decode("utf-8", "ignore")
    return f"{head}...[{len(data) - 1000} bytes left out]...{tail}"


def _rich_status(err: RetryLater) -> grpc.Status:
    seconds = max(0.0, err.retry_after_s)
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
    )
    detail = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=clip(err.message))
    detail.details.add().Pack(retry)
    return rpc_status.to_status(detail)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], err: InferError) -> None:
    if isinstance(err, RetryLater):  # a full queue, a token over its rate
        await context.abort_with_status(_rich_status(err))
    await context.abort(GRPC_CODES[err.code], clip(err.message))


def internal_error(err: BaseException) -> InferError:
    """An unexpected exception: logged with a request id, the client sees only the id."""
    rid = uuid.uuid4().hex[:12]
    log.error("internal error %s: %s", rid, err, exc_info=err)
    return InferError(f"internal error (request id {rid})")


def grpc_errors(
    fn: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    """Turn InferError (and anything unexpected) raised by a unary handler into a gRPC status."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        try:
            return await fn(self, request, context)
        except InferError as e:
            await abort_with(context, e)
        except (grpc.aio.AbortError, TimeoutError) as e:
            if isinstance(e, TimeoutError):
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
            raise
        except Exception as e:
            await abort_with(context, internal_error(e))
        raise AssertionError("unreachable")  # abort() always raises

    return wrapper


# ---- request bytes that are not the method's message ----------------------------------------------------------------


class Undecodable:
    """Request bytes that do not parse as the method's message, handed to the handler in place of the message."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    owner = getattr(parse, "__self__", None)  # the generated deserializers are Message.FromString
    kind = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "request")

    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as e:
            return Undecodable(clip(f"request: not a valid {kind} message ({e})"))

    return lenient


class _Collected:
    """Stands in for the server while a generated ``add_*_to_server`` function registers its handlers."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.by_service[service] = dict(handlers)


def _with_lenient_parsing(h: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if h.request_deserializer is None:
        return h
    parse, send = _lenient(h.request_deserializer), h.response_serializer
    if h.request_streaming and h.response_streaming:
        return grpc.stream_stream_rpc_method_handler(h.stream_stream, parse, send)
    if h.request_streaming:
        return grpc.stream_unary_rpc_method_handler(h.stream_unary, parse, send)
    if h.response_streaming:
        return grpc.unary_stream_rpc_method_handler(h.unary_stream, parse, send)
    return grpc.unary_unary_rpc_method_handler(h.unary_unary, parse, send)


def add_servicer(add: Callable[[Any, Any], None], servicer: Any, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as the generated ``add`` function would, except that request bytes that do not parse
    reach the handler as :class:`Undecodable` (answered INVALID_ARGUMENT by :func:`grpc_errors`, or as an error
    message on a stream) instead of ending the call UNKNOWN inside grpc."""
    found = _Collected()
    add(servicer, found)
    if not found.by_service:  # generated code from before registered methods: register as it asked
        server.add_generic_rpc_handlers(tuple(found.generic))
        return
    for service, handlers in found.by_service.items():
        lenient = {name: _with_lenient_parsing(h) for name, h in handlers.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, lenient),))
        server.add_registered_method_handlers(service, lenient)
