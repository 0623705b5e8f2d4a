"""Server interceptors: access control and per-token request rates (installed only with a token file).

Order of checks for a call: the method's role (none: health checks and reflection pass untouched), the token
(UNAUTHENTICATED), the role (PERMISSION_DENIED), the token's rate (RESOURCE_EXHAUSTED with a
``google.rpc.RetryInfo`` detail). A unary call takes one request from its token's bucket or is refused; each
message of a stream waits for its turn, so a stream is paced to the rate rather than cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from infer.auth import AuditLog, Identity, TokenBucket, TokenTable, required_role
from infer.errors import InferError
from infer.transport.grpc.status import abort_with

__all__ = ["AuthInterceptor"]

def _deny(error: InferError, streaming: bool) -> grpc.RpcMethodHandler:
    if streaming:
        async def stream(request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await abort_with(context, error)
            yield None  # pragma: no cover - abort raises

        return grpc.stream_stream_rpc_method_handler(stream)

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort_with(context, error)

    return grpc.unary_unary_rpc_method_handler(unary)


async def _paced(requests: AsyncIterator[Any], bucket: TokenBucket) -> AsyncIterator[Any]:
    """A stream's messages, each handed on once its token's bucket has room for it."""
    async for request in requests:
        wait = bucket.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        yield request


def _pace_stream(handler: grpc.RpcMethodHandler, bucket: TokenBucket) -> grpc.RpcMethodHandler:
    inner = handler.stream_stream

    async def behaviour(
        request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async for reply in inner(_paced(request_iterator, bucket), context):
            yield reply

    return grpc.stream_stream_rpc_method_handler(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _audit(handler: grpc.RpcMethodHandler, audit: AuditLog, who: str, action: str) -> grpc.RpcMethodHandler:
    inner = handler.unary_unary

    async def audited(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        target = getattr(request, "model_name", "")
        try:
            result = await inner(request, context)
        except BaseException as e:
            audit.write(who, action, {"model": target, "ok": False, "error": type(e).__name__})
            raise
        audit.write(who, action, {"model": target, "ok": True})
        return result

    return grpc.unary_unary_rpc_method_handler(
        audited,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, tokens: TokenTable, audit: AuditLog) -> None:
        self._tokens = tokens
        self._audit = audit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        role = required_role(method)
        if role is None:
            return await continuation(details)
        headers = dict(details.invocation_metadata or ())
        streaming = method.endswith("StreamInfer")
        try:
            ident: Identity = self._tokens.authenticate(str(headers.get("authorization", "")))
            self._tokens.authorize(ident, role, method)
            if not streaming:
                self._tokens.admit(ident)
        except InferError as e:
            return _deny(e, streaming)
        handler = await continuation(details)
        if handler is None:
            return handler
        if handler.stream_stream is not None and ident.bucket is not None:
            return _pace_stream(handler, ident.bucket)
        if role != "deploy" or handler.unary_unary is None:
            return handler
        return _audit(handler, self._audit, ident.name, method.rsplit("/", 1)[-1])
