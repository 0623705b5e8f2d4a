"""Keeps one scheduler per loaded model version, created and drained as the registry says."""

from __future__ import annotations

from infer.core.clock import Clock
from infer.errors import InferError, Unavailable
from infer.observability.metrics import Metrics
from infer.registry.registry import LoadedVersion
from infer.scheduling.batcher import BatchScheduler, HealthSink

__all__ = ["Dispatcher"]


class Dispatcher:
    """A :class:`~infer.registry.registry.VersionListener` owning the schedulers."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        default_queue_size: int = 4096,
        drain_grace_s: float = 30.0,
        clock: Clock | None = None,
        on_health: HealthSink | None = None,
    ) -> None:
        self._metrics = metrics
        self.on_health = on_health
        self._queue_size = default_queue_size
        self._grace = drain_grace_s
        self._clock = clock
        self._schedulers: dict[int, BatchScheduler] = {}

    async def version_ready(self, version: LoadedVersion) -> None:
        if version.runtime.composite:
            return  # an ensemble's steps go through their own models' schedulers
        self._schedulers[id(version)] = BatchScheduler(
            version,
            metrics=self._metrics.version(version.name, str(version.version)),
            default_queue_size=self._queue_size,
            clock=self._clock,
            on_health=self.on_health,
        )

    async def version_retiring(self, version: LoadedVersion) -> None:
        sched = self._schedulers.pop(id(version), None)
        if sched is not None:
            await sched.stop(self._grace)

    def version_state(self, version: LoadedVersion) -> None:
        self._metrics.set_state(version.name, str(version.version), version.state.value)

    def scheduler(self, version: LoadedVersion) -> BatchScheduler:
        sched = self._schedulers.get(id(version))
        if sched is None:
            raise Unavailable(f"model '{version.name}' version {version.version} is not accepting requests")
        return sched

    def failure(self, version: LoadedVersion, error: InferError) -> None:
        """Count a request refused before it reached a queue (or an ensemble's request that failed)."""
        self._metrics.version(version.name, str(version.version)).failure(error.code.value)

    def success(self, version: LoadedVersion, seconds: float) -> None:
        """Count a request answered without this dispatcher's queues: an ensemble's, whose steps queued."""
        m = self._metrics.version(version.name, str(version.version))
        m.success += 1
        m.request_duration.observe(seconds)
