"""The one mapping from infer's error codes to gRPC status, with retry hints for a full queue."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from infer.errors import Code, InferError, QueueFull

__all__ = ["GRPC_CODES", "abort_with", "grpc_errors"]

log = logging.getLogger(__name__)

GRPC_CODES: dict[Code, grpc.StatusCode] = {c: getattr(grpc.StatusCode, c.value) for c in Code}

T = TypeVar("T")


def _rich_status(err: QueueFull) -> grpc.Status:
    seconds = err.retry_after_s
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
    )
    detail = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=err.message)
    detail.details.add().Pack(retry)
    return rpc_status.to_status(detail)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], err: InferError) -> None:
    if isinstance(err, QueueFull):
        await context.abort_with_status(_rich_status(err))
    await context.abort(GRPC_CODES[err.code], err.message)


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
