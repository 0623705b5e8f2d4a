"""Prometheus metrics, one registry per server; per-version children are looked up once, not per request.

Names: ``infer_`` prefix, counters end in ``_total``, durations in ``_seconds``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = ["Metrics", "VersionMetrics"]

_LATENCY = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_STATES = ("LOAD", "WARM", "ACTIVE", "DEGRADED", "ERROR", "UNLOADING", "UNLOADED")


class VersionMetrics:
    """The metric children of one model version."""

    def __init__(self, m: Metrics, name: str, version: str) -> None:
        lv = (name, version)
        self.success = m.success.labels(*lv)
        self._failure = m.failure
        self._lv = lv
        self.request_duration = m.request_duration.labels(*lv)
        self.queue_duration = m.queue_duration.labels(*lv)
        self.compute_duration = m.compute_duration.labels(*lv)
        self.inference_count = m.inference_count.labels(*lv)
        self.execution_count = m.execution_count.labels(*lv)
        self.batch_size = m.batch_size.labels(*lv)
        self.inflight = m.inflight.labels(*lv)
        self.queued = m.queued.labels(*lv)
        self.rejected = m.rejected.labels(*lv)

    def failure(self, reason: str) -> None:
        self._failure.labels(*self._lv, reason).inc()

    def batch(self, size: int, compute_s: float) -> None:
        self.inference_count.inc(size)
        self.execution_count.inc()
        self.batch_size.observe(size)
        self.compute_duration.observe(compute_s)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r, mv = self.registry, ("model", "version")
        self.success = Counter("infer_request_success", "Requests answered with a result.", mv, registry=r)
        self.failure = Counter(
            "infer_request_failure", "Requests answered with an error, by status code.", (*mv, "reason"),
            registry=r,
        )
        self.request_duration = Histogram(
            "infer_request_duration_seconds", "Time from arrival to answer.", mv, buckets=_LATENCY, registry=r
        )
        self.queue_duration = Histogram(
            "infer_queue_duration_seconds", "Time a request waited for its batch.", mv, buckets=_LATENCY,
            registry=r,
        )
        self.compute_duration = Histogram(
            "infer_compute_duration_seconds", "Time one batch execution took.", mv, buckets=_LATENCY, registry=r
        )
        self.inference_count = Counter(
            "infer_inference_count", "Samples computed (batch dimension summed).", mv, registry=r
        )
        self.execution_count = Counter("infer_execution_count", "Model executions (batches).", mv, registry=r)
        self.batch_size = Histogram("infer_batch_size", "Samples per execution.", mv, buckets=_BATCH, registry=r)
        self.inflight = Gauge("infer_inflight_requests", "Requests accepted and not yet answered.", mv, registry=r)
        self.queued = Gauge("infer_queued_requests", "Requests waiting in the scheduler queue.", mv, registry=r)
        self.rejected = Counter(
            "infer_queue_rejected", "Requests refused because the queue was full.", mv, registry=r
        )
        self.state = Gauge(
            "infer_model_state", "1 for the state a model version is in.", (*mv, "state"), registry=r
        )
        self._children: dict[tuple[str, str], VersionMetrics] = {}

    def version(self, name: str, version: str) -> VersionMetrics:
        key = (name, version)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = VersionMetrics(self, name, version)
        return child

    def set_state(self, name: str, version: str, state: str) -> None:
        for s in _STATES:
            self.state.labels(name, version, s).set(1.0 if s == state else 0.0)
