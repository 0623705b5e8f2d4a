"""Server interceptors: access control (installed only when a token file is configured)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from infer.auth import AuditLog, TokenTable, required_role
from infer.errors import InferError
from infer.transport.grpc.status import GRPC_CODES

__all__ = ["AuthInterceptor"]


def _deny(error: InferError, streaming: bool) -> grpc.RpcMethodHandler:
    code = GRPC_CODES[error.code]

    if streaming:
        async def stream(request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await context.abort(code, error.message)
            yield None  # pragma: no cover - abort raises

        return grpc.stream_stream_rpc_method_handler(stream)

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, error.message)

    return grpc.unary_unary_rpc_method_handler(unary)


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
        try:
            ident = self._tokens.authenticate(str(headers.get("authorization", "")))
            self._tokens.authorize(ident, role, method)
        except InferError as e:
            return _deny(e, streaming=method.endswith("StreamInfer"))
        handler = await continuation(details)
        if role != "deploy" or handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        audit, who, action = self._audit, ident.name, method.rsplit("/", 1)[-1]

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
