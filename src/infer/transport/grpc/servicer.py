"""GRPCInferenceService: thin handlers that convert, call the DataPlane, and convert back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc
from infer.config.pbtxt import config_to_proto
from infer.core.clock import Clock, MonotonicClock
from infer.dataplane.service import DataPlane
from infer.errors import InferError, InvalidArgument, Unimplemented
from infer.transport.grpc.converters import (
    infer_request_from_pb,
    infer_response_to_pb,
    model_stats_to_pb,
)
from infer.transport.grpc.status import Undecodable, add_servicer, grpc_errors, internal_error

__all__ = ["InferenceServicer", "add_inference_servicer"]

log = logging.getLogger(__name__)
Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

_STREAM_WINDOW = 1024  # requests of one stream computed concurrently


def _tensor_meta(specs: Any, into: Any) -> None:
    for s in specs:
        into.add(name=s.name, datatype=s.datatype.value, shape=list(s.shape))


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane, clock: Clock | None = None) -> None:
        self._dp = dataplane
        self._clock = clock or MonotonicClock()

    # ---- health and metadata -------------------------------------------------------------

    @grpc_errors
    async def ServerLive(self, request: Any, context: Ctx) -> Any:
        return pb.ServerLiveResponse(live=self._dp.live())

    @grpc_errors
    async def ServerReady(self, request: Any, context: Ctx) -> Any:
        return pb.ServerReadyResponse(ready=self._dp.ready())

    @grpc_errors
    async def ModelReady(self, request: Any, context: Ctx) -> Any:
        return pb.ModelReadyResponse(ready=self._dp.model_ready(request.name, request.version))

    @grpc_errors
    async def ServerMetadata(self, request: Any, context: Ctx) -> Any:
        md = self._dp.server_metadata()
        return pb.ServerMetadataResponse(name=md.name, version=md.version, extensions=list(md.extensions))

    @grpc_errors
    async def ModelMetadata(self, request: Any, context: Ctx) -> Any:
        md = self._dp.model_metadata(request.name, request.version)
        resp = pb.ModelMetadataResponse(name=md.name, versions=md.versions, platform=md.platform)
        _tensor_meta(md.inputs, resp.inputs)
        _tensor_meta(md.outputs, resp.outputs)
        return resp

    @grpc_errors
    async def ModelConfig(self, request: Any, context: Ctx) -> Any:
        cfg = self._dp.model_config(request.name, request.version)
        return pb.ModelConfigResponse(config=config_to_proto(cfg))

    @grpc_errors
    async def ModelStatistics(self, request: Any, context: Ctx) -> Any:
        rows = self._dp.statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[model_stats_to_pb(*r) for r in rows])

    # ---- inference -----------------------------------------------------------------------

    def _deadline(self, context: Ctx) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else self._clock.now() + remaining

    @grpc_errors
    async def ModelInfer(self, request: Any, context: Ctx) -> Any:
        req = infer_request_from_pb(request, self._deadline(context))
        return infer_response_to_pb(await self._dp.infer(req))

    async def _stream_one(self, request: Any, deadline: float | None) -> Any:
        if isinstance(request, Undecodable):  # one bad message: its error, and the stream goes on
            return pb.ModelStreamInferResponse(error_message=request.message)
        try:
            req = infer_request_from_pb(request, deadline)
            return pb.ModelStreamInferResponse(infer_response=infer_response_to_pb(await self._dp.infer(req)))
        except InferError as e:
            msg = e.message
        except Exception as e:
            msg = internal_error(e).message
        return pb.ModelStreamInferResponse(
            error_message=msg, infer_response=pb.ModelInferResponse(id=request.id, model_name=request.model_name)
        )

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
        """Requests of one stream are computed concurrently; each answer is sent when it is ready."""
        deadline = self._deadline(context)
        results: asyncio.Queue[Any] = asyncio.Queue()
        window = asyncio.Semaphore(_STREAM_WINDOW)
        tasks: set[asyncio.Task[None]] = set()

        async def one(req: Any) -> None:
            try:
                results.put_nowait(await self._stream_one(req, deadline))
            finally:
                window.release()

        async def reader() -> None:
            try:
                async for req in request_iterator:
                    await window.acquire()
                    t = asyncio.ensure_future(one(req))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks))
            finally:
                results.put_nowait(None)

        feed = asyncio.ensure_future(reader())
        try:
            while (item := await results.get()) is not None:
                yield item
        finally:
            feed.cancel()
            for t in list(tasks):
                t.cancel()

    # ---- repository ----------------------------------------------------------------------

    @grpc_errors
    async def RepositoryIndex(self, request: Any, context: Ctx) -> Any:
        entries = self._dp.repository_index(request.ready)
        return pb.RepositoryIndexResponse(
            models=[dict(name=e.name, version=e.version, state=e.state, reason=e.reason) for e in entries]
        )

    @grpc_errors
    async def RepositoryModelLoad(self, request: Any, context: Ctx) -> Any:
        config = ""
        for key, p in request.parameters.items():
            if key == "config":
                config = p.string_param or p.bytes_param.decode("utf-8", "replace")
            elif key.startswith("file:"):
                raise Unimplemented(f"parameter '{key}': loading model files from the request is not supported")
            else:
                raise InvalidArgument(f"parameter '{key}': unknown RepositoryModelLoad parameter")
        await self._dp.load_model(request.model_name, config)
        return pb.RepositoryModelLoadResponse()

    @grpc_errors
    async def RepositoryModelUnload(self, request: Any, context: Ctx) -> Any:
        await self._dp.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # ---- Triton extensions infer does not offer ------------------------------------------

    @grpc_errors
    async def SystemSharedMemoryStatus(self, request: Any, context: Ctx) -> Any:
        return pb.SystemSharedMemoryStatusResponse()

    @grpc_errors
    async def CudaSharedMemoryStatus(self, request: Any, context: Ctx) -> Any:
        return pb.CudaSharedMemoryStatusResponse()

    async def _no_shm(self, request: Any, context: Ctx) -> Any:
        raise Unimplemented("shared-memory tensors are not supported by infer; send tensors in the request")

    SystemSharedMemoryRegister = grpc_errors(_no_shm)
    SystemSharedMemoryUnregister = grpc_errors(_no_shm)
    CudaSharedMemoryRegister = grpc_errors(_no_shm)
    CudaSharedMemoryUnregister = grpc_errors(_no_shm)

    @grpc_errors
    async def TraceSetting(self, request: Any, context: Ctx) -> Any:
        raise Unimplemented("trace settings are not supported by infer")

    @grpc_errors
    async def LogSettings(self, request: Any, context: Ctx) -> Any:
        raise Unimplemented("log settings are not supported by infer")


def add_inference_servicer(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` on ``server``; bytes that are no ModelInferRequest (or whichever message a method
    takes) are answered INVALID_ARGUMENT, where the generated ``add_GRPCInferenceServiceServicer_to_server`` lets
    grpc answer UNKNOWN."""
    add_servicer(pb_grpc.add_GRPCInferenceServiceServicer_to_server, servicer, server)
