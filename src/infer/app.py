"""The composition root: wires config, registry, schedulers, data plane, transport and metrics.

Start order: listen (liveness answers at once), load models, then report ready.
Stop order (SIGTERM/SIGINT): report not ready, stop accepting RPCs and let in-flight ones finish
within the grace period, drain every scheduler, unload models, stop the metrics server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import grpc
from grpc_health.v1.health import aio as health_aio

from infer._proto import control_pb2 as cpb
from infer.auth import AuditLog, TokenTable, redact
from infer.config.server import ServerConfig, infer_home
from infer.controlplane.canary import CanaryController
from infer.controlplane.service import ControlPlane
from infer.dataplane.cache import ResponseCache
from infer.dataplane.service import DataPlane
from infer.errors import InferError, InvalidArgument
from infer.monitoring import Monitoring
from infer.observability.alerts import AlertManager, AlertsConfig
from infer.observability.http import MetricsServer
from infer.observability.metrics import Metrics
from infer.registry.artifacts import ArtifactRef, LocalArtifactStore
from infer.registry.registry import ModelRegistry
from infer.registry.repository import ModelRepository, confined
from infer.registry.store import RegistryStore, open_store
from infer.runtimes.base import RuntimeOptions
from infer.scheduling.dispatch import Dispatcher
from infer.transport.grpc.control_servicer import ControlServicer, add_control_servicer
from infer.transport.grpc.interceptors import AuthInterceptor
from infer.transport.grpc.server import SERVING, HealthPublisher, build_server, build_service_server

__all__ = ["App", "ControlApp", "serve"]

log = logging.getLogger("infer")


class App:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.grpc_port = 0
        self.metrics_port = 0
        self.repository_path: Path | None = None
        self._stop = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._metrics_server: MetricsServer | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self.dataplane: DataPlane | None = None
        self.control: ControlPlane | None = None
        self._canaries: CanaryController | None = None
        self.health: HealthPublisher | None = None
        self.alerts: AlertManager | None = None
        self.monitoring: Monitoring | None = None

    async def start(self) -> None:
        cfg = self.config
        path = cfg.model_repository
        if path is None:
            from infer.tasks.default_repository import ensure_default_repository

            path = await asyncio.to_thread(ensure_default_repository)
        self.repository_path = path
        registry = ModelRegistry(
            ModelRepository(path),
            options=RuntimeOptions(cfg.intra_op_threads, cfg.inter_op_threads, cfg.state_dir),
            default_max_batch_size=cfg.default_max_batch_size,
            strict=cfg.strict_model_config,
        )
        dispatcher = Dispatcher(self.metrics, default_queue_size=cfg.max_queue_size, drain_grace_s=cfg.shutdown_grace_s)
        registry.add_listener(dispatcher)
        dispatcher.on_health = registry.set_health
        cache = ResponseCache(cfg.response_cache_bytes) if cfg.response_cache_bytes > 0 else None
        self.control = _control_plane(cfg, path)
        registry.add_listener(self.control)  # served versions' lifecycle moves, recorded in the store
        self.metrics.deployments = self.control.router.figures
        if cfg.alerts_config is not None:
            self.alerts = AlertManager(AlertsConfig.load(cfg.alerts_config))
            await self.alerts.start()
        mon = self.monitoring = Monitoring(self.metrics, registry, self.control, self.alerts)
        registry.add_listener(mon)
        self.control.watch = mon.watch  # ground truth, performance and drift reports
        dp = self.dataplane = DataPlane(
            registry, dispatcher, cache=cache,
            router=self.control.router, alerts=self.alerts, watch=mon.watch,
        )
        registry.add_listener(dp)
        self.health = HealthPublisher(dp)
        interceptors = []
        tokens = TokenTable.load(cfg.auth_tokens) if cfg.auth_tokens is not None else None
        if tokens is not None:
            interceptors.append(AuthInterceptor(tokens, AuditLog(cfg.audit_log)))
        control = ControlServicer(self.control, _actor_resolver(tokens))
        self._server = build_server(
            dp, self.health, max_message_bytes=cfg.max_message_bytes, reuse_port=cfg.reuse_port,
            max_concurrent_rpcs=cfg.max_concurrent_rpcs, max_concurrent_streams=cfg.max_concurrent_streams,
            interceptors=interceptors, extra=[(add_control_servicer, control, CONTROL_SERVICE)],
        )
        self.grpc_port = _bind(self._server, cfg)
        await self._server.start()
        await self.health.refresh()
        if cfg.metrics_port >= 0:
            self._metrics_server = MetricsServer(self.metrics.registry, dp.live, dp.ready, dashboard=mon.dashboard)
            try:
                self.metrics_port = await self._metrics_server.start(cfg.host, cfg.metrics_port)
            except OSError as e:
                raise InferError(f"cannot bind metrics port {cfg.host}:{cfg.metrics_port}: {e.strerror}") from None
        if cfg.model_control_mode == "none":
            await registry.load_all()
        else:
            await registry.load_all(cfg.load_models)
        # Everything allocated so far (modules, sessions, configs) lives as long as the process:
        # keep it out of the collector's full passes, which otherwise stall the loop for tens of ms.
        gc.collect()
        gc.freeze()
        dp.started = True
        mon.start()
        self._canaries = CanaryController(self.control)
        self._canaries.start()
        await self.health.refresh()
        self._health_task = asyncio.create_task(self._refresh_health())
        self._sync_task = asyncio.create_task(_sync_deployments(self.control, cfg.deployment_sync_s))
        log.info("infer serving gRPC on %s:%d, metrics on %d, repository %s",
                 cfg.host, self.grpc_port, self.metrics_port, path)

    async def _refresh_health(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.health is not None:
                await self.health.refresh()

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        dp = self.dataplane
        for task in (self._health_task, self._sync_task):
            if task is not None:
                task.cancel()
        if self._canaries is not None:
            await self._canaries.stop()
        if self.monitoring is not None:
            await self.monitoring.stop()
        if dp is not None:
            dp.stopping = True  # new requests: UNAVAILABLE, which clients may retry elsewhere
        if self.health is not None:
            await self.health.shutdown()
        # RPCs that grpc already holds but has not handed to a handler would be CANCELLED by
        # server.stop(); give them a moment to reach a handler and get their UNAVAILABLE.
        await asyncio.sleep(0.1)
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace_s)
        if self.alerts is not None:
            await self.alerts.stop(min(self.config.shutdown_grace_s, 5.0))  # flush what is queued
        if dp is not None:
            await dp.registry.close()
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        if self.control is not None:
            self.control.close()


CONTROL_SERVICE = cpb.DESCRIPTOR.services_by_name["ControlPlane"].full_name


class ControlApp:
    """The control plane alone (``infer control``): registry, deployments and audit over a store that serving
    processes share (PostgreSQL, or one SQLite file on the same host). Serving processes read deployment changes
    from the store every ``--deployment-sync`` seconds; outcome reports and experiment figures stay with the
    process that routed the requests."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.grpc_port = 0
        self.control: ControlPlane | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()
        self._stop = asyncio.Event()

    async def start(self) -> None:
        cfg = self.config
        self.control = _control_plane(cfg, cfg.model_repository)
        tokens = TokenTable.load(cfg.auth_tokens) if cfg.auth_tokens is not None else None
        interceptors = [AuthInterceptor(tokens, AuditLog(cfg.audit_log))] if tokens is not None else []
        servicer = ControlServicer(self.control, _actor_resolver(tokens))
        self._server = build_service_server(
            self._health, [(add_control_servicer, servicer, CONTROL_SERVICE)],
            max_message_bytes=cfg.max_message_bytes, max_concurrent_rpcs=cfg.max_concurrent_rpcs,
            max_concurrent_streams=cfg.max_concurrent_streams, interceptors=interceptors,
        )
        self.grpc_port = _bind(self._server, cfg)
        await self._server.start()
        for service in ("", "ready", CONTROL_SERVICE):
            await self._health.set(service, SERVING)
        log.info("infer control plane serving gRPC on %s:%d", cfg.host, self.grpc_port)

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace_s)
        if self.control is not None:
            self.control.close()


async def _sync_deployments(control: ControlPlane, every_s: float) -> None:
    """Pick up deployment changes other processes sharing the store made (``infer control``, other replicas)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await control.sync()
        except Exception:  # the store briefly unreachable: keep serving the deployments in force, retry
            log.exception("cannot read deployments from the registry store")


def _bind(server: grpc.aio.Server, cfg: ServerConfig) -> int:
    address = f"{cfg.host}:{cfg.grpc_port}"
    try:
        creds = _server_credentials(cfg)
        port: int = (server.add_insecure_port(address) if creds is None
                     else server.add_secure_port(address, creds))
    except RuntimeError:
        port = 0
    if port == 0:
        raise InferError(f"cannot bind gRPC port {cfg.host}:{cfg.grpc_port} (already in use?)")
    return port


def _control_plane(cfg: ServerConfig, repository: Path | None) -> ControlPlane:
    root = cfg.registry_dir or infer_home() / "registry"
    root.mkdir(parents=True, exist_ok=True)
    store = _open_store(cfg.registry_url) if cfg.registry_url else RegistryStore.sqlite(root / "registry.db")
    imports = [p.resolve() for p in ([repository] if repository is not None else []) + cfg.artifact_import_dirs]
    return ControlPlane(store, _ConfinedArtifacts(root / "artifacts", imports))


def _open_store(url: str) -> RegistryStore:
    """open_store, its errors scrubbed of the URL's password: database drivers quote the URL's parts back."""
    try:
        return open_store(url)
    except Exception as e:
        text = e.message if isinstance(e, InferError) else f"registry store: {type(e).__name__}: {e}"
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        for secret in {password, unquote(password)} if password else ():
            text = text.replace(secret, "***")
        text = redact(text)
        if isinstance(e, InferError):  # keep its class (and code), change only the words
            e.message, e.args = text, (text,)
            raise e from None
        raise InferError(text) from None


class _ConfinedArtifacts(LocalArtifactStore):
    """The artifact store, reading files given by path (RegisterVersion's ``path``) only from under ``imports``
    (the model repository and ``--artifact-import-dir``), symlinks followed: a client may not have the server copy
    an arbitrary file it can read into the store."""

    def __init__(self, root: Path, imports: list[Path]) -> None:
        super().__init__(root)
        self._imports = tuple(imports)

    def put(self, source: Path | bytes, name: str | None = None) -> ArtifactRef:
        if isinstance(source, Path):
            real = confined(source, self._imports)
            if real is None:
                raise InvalidArgument("path: the server reads artifacts only from the model repository and "
                                      "--artifact-import-dir; send the file's content instead")
            return super().put(real, name if name is not None else source.name)
        return super().put(source, name)


def _actor_resolver(tokens: TokenTable | None) -> Callable[[Sequence[tuple[str, str]]], str]:
    """The audit name of a caller: its token's name when access control is on."""

    def actor(metadata: Sequence[tuple[str, str]]) -> str:
        if tokens is None:
            return "anonymous"
        header = dict(metadata).get("authorization", "")
        try:
            return tokens.authenticate(str(header)).name
        except InferError:
            return "anonymous"

    return actor


def _server_credentials(cfg: ServerConfig) -> grpc.ServerCredentials | None:
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    try:
        pair = (cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())
        ca = cfg.tls_client_ca.read_bytes() if cfg.tls_client_ca is not None else None
    except OSError as e:
        raise InferError(f"cannot read TLS files: {e}") from None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


async def serve(config: ServerConfig, port_file: Path | None = None, control_only: bool = False) -> int:
    app: App | ControlApp = ControlApp(config) if control_only else App(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, app.request_stop)
    try:
        await app.start()
    except InferError as e:
        log.error("cannot start: %s", e.message)
        await app.stop()
        return 2
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        metrics_port = app.metrics_port if isinstance(app, App) else -1
        tmp.write_text(json.dumps({"grpc": app.grpc_port, "metrics": metrics_port}))
        tmp.replace(port_file)
    print(f"infer ready grpc={app.grpc_port} metrics={app.metrics_port if isinstance(app, App) else -1}", flush=True)
    await app.wait()
    log.info("shutting down: draining in-flight requests")
    await app.stop()
    log.info("stopped")
    return 0
