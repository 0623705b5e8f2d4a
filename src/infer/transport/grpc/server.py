"""Builds the grpc.aio server: V2 inference service, standard health checking, reflection."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from infer._proto import grpc_service_pb2 as pb
from infer.dataplane.service import DataPlane
from infer.transport.grpc.servicer import InferenceServicer, add_inference_servicer

__all__ = ["HealthPublisher", "build_server", "build_service_server"]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthPublisher:
    """Keeps grpc.health.v1 statuses in step with the data plane.

    ``""`` answers liveness (SERVING while the process runs, also while models load), ``ready``
    answers readiness, ``model/<name>`` one model's readiness, ``inference.GRPCInferenceService``
    the service's readiness.
    """

    def __init__(self, dataplane: DataPlane) -> None:
        self.servicer = health_aio.HealthServicer()
        self._dp = dataplane
        self._known: set[str] = set()

    async def refresh(self) -> None:
        dp = self._dp
        await self.servicer.set("", SERVING if dp.live() else NOT_SERVING)
        ready = SERVING if dp.ready() else NOT_SERVING
        await self.servicer.set("ready", ready)
        await self.servicer.set("inference.GRPCInferenceService", ready)
        names = {e.name for e in dp.repository_index()}
        for name in names | self._known:
            await self.servicer.set(f"model/{name}", SERVING if dp.model_ready(name) else NOT_SERVING)
        self._known = names

    async def shutdown(self) -> None:
        await self.servicer.enter_graceful_shutdown()


def _new_server(
    max_message_bytes: int, reuse_port: bool, max_concurrent_rpcs: int,
    interceptors: list[grpc.aio.ServerInterceptor] | None, max_concurrent_streams: int = 0,
) -> grpc.aio.Server:
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if max_concurrent_streams > 0:  # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: per client connection
        options.append(("grpc.max_concurrent_streams", max_concurrent_streams))
    return grpc.aio.server(
        options=options, maximum_concurrent_rpcs=max_concurrent_rpcs or None, interceptors=interceptors or None
    )


def _add_services(server: grpc.aio.Server, names: list[str], extra: list[tuple[Any, Any, str]] | None) -> None:
    for add, servicer, full_name in extra or []:
        add(servicer, server)
        names.append(full_name)
    names.append(reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)


def build_server(
    dataplane: DataPlane,
    health: HealthPublisher,
    *,
    max_message_bytes: int,
    reuse_port: bool,
    max_concurrent_rpcs: int = 0,
    max_concurrent_streams: int = 0,
    interceptors: list[grpc.aio.ServerInterceptor] | None = None,
    extra: list[tuple[Any, Any, str]] | None = None,
) -> grpc.aio.Server:
    server = _new_server(max_message_bytes, reuse_port, max_concurrent_rpcs, interceptors, max_concurrent_streams)
    add_inference_servicer(InferenceServicer(dataplane), server)  # undecodable bytes: INVALID_ARGUMENT, not UNKNOWN
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    names = [
        pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    ]
    _add_services(server, names, extra)
    return server


def build_service_server(
    health: health_aio.HealthServicer,
    services: list[tuple[Any, Any, str]],
    *,
    max_message_bytes: int,
    max_concurrent_rpcs: int = 0,
    max_concurrent_streams: int = 0,
    interceptors: list[grpc.aio.ServerInterceptor] | None = None,
) -> grpc.aio.Server:
    """A server without the inference service: the control plane run apart (``infer control``)."""
    server = _new_server(max_message_bytes, False, max_concurrent_rpcs, interceptors, max_concurrent_streams)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    _add_services(server, [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], services)
    return server
