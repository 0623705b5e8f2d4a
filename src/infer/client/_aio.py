"""AsyncInferClient: the asyncio client on a ``grpc.aio`` channel, with the same calls as InferClient (the
``_calls`` table's; a unit test keeps the two method for method alike)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from numpy.typing import ArrayLike

from infer._proto import control_pb2 as cpb
from infer._proto import grpc_service_pb2 as pb
from infer._proto import model_config_pb2 as mc
from infer.client import _calls as c
from infer.client import _tasks as t
from infer.client._codec import InferResult, Param
from infer.client._config import (
    DEFAULT_RETRY,
    NO_RETRY,
    RetryPolicy,
    TLSConfig,
    auth_metadata,
    channel_options,
    deadline_of,
    remaining,
    tls_of,
)
from infer.client._errors import DeadlineExceeded, Unavailable, error_from_rpc

__all__ = ["AsyncInferClient"]

T = TypeVar("T")


class AsyncInferClient:
    """The asyncio twin of InferClient: the same arguments and methods, each a coroutine. Its channel is opened
    on the event loop of the first call; use the client on that loop only, and ``await close()`` it (or
    ``async with``)."""

    def __init__(self, target: str, *, tls: TLSConfig | bool | None = None, token: str | None = None,
                 timeout: float | None = None, retries: RetryPolicy | None = DEFAULT_RETRY,
                 options: list[tuple[str, Any]] | None = None) -> None:
        deadline_of(timeout, 0.0)  # a bad default deadline is refused now, not at the first call
        self.target = target
        self._tls = tls_of(tls)
        self._retry = retries or NO_RETRY
        self._options = channel_options(self._tls, self._retry, options)
        self._credentials = self._tls.credentials() if self._tls else None  # files read now, errors raised now
        self._channel: grpc.aio.Channel | None = None
        self._metadata = auth_metadata(token)
        self._timeout = timeout
        self._methods: dict[str, Any] = {}
        self.anomaly = AsyncAnomaly(self)
        self.forecast = AsyncForecasting(self)
        self.vision = AsyncVision(self)
        self.nlp = AsyncNLP(self)
        self.control = AsyncControl(self)

    async def __aenter__(self) -> AsyncInferClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            self._methods.clear()
            await channel.close()

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = (grpc.aio.secure_channel(self.target, self._credentials, self._options)
                             if self._credentials is not None
                             else grpc.aio.insecure_channel(self.target, self._options))
        return self._channel

    async def _run(self, call: c.Call[T], timeout: float | None) -> T:
        method = self._methods.get(call.path)
        if method is None:
            method = self._methods[call.path] = self._open().unary_unary(
                call.path, request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=call.reply.FromString)
        deadline = deadline_of(self._timeout if timeout is None else timeout, time.monotonic())
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = await method(call.request, timeout=remaining(deadline, time.monotonic()),
                                     metadata=self._metadata)
            except grpc.aio.AioRpcError as e:
                err = error_from_rpc(e)
            else:
                return call.decode(reply)
            wait = self._retry.delay(attempt, err, remaining(deadline, time.monotonic()))
            if wait is None:
                raise err
            await asyncio.sleep(wait)

    # ---- health and metadata -------------------------------------------------------------------

    async def server_live(self, *, timeout: float | None = None) -> bool:
        return await self._run(c.server_live(), timeout)

    async def server_ready(self, *, timeout: float | None = None) -> bool:
        return await self._run(c.server_ready(), timeout)

    async def model_ready(self, name: str, version: str = "", *, timeout: float | None = None) -> bool:
        return await self._run(c.model_ready(name, version), timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status name (``SERVING``, ``NOT_SERVING``): ``""`` liveness, ``"ready"`` readiness,
        ``"model/<name>"`` one model."""
        return await self._run(c.health(service), timeout)

    async def wait_ready(self, timeout: float = 60.0, *, service: str = "ready", interval: float = 0.2) -> None:
        """Block until ``health(service)`` is SERVING (unreachable counts as not yet); DeadlineExceeded after
        ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            try:
                if left > 0 and await self._run(c.health(service), min(left, 5.0)) == "SERVING":
                    return
            except (Unavailable, DeadlineExceeded):
                pass
            if time.monotonic() + interval >= end:
                raise DeadlineExceeded(None, f"{self.target}: '{service or 'live'}' not SERVING after {timeout} s")
            await asyncio.sleep(interval)

    async def server_metadata(self, *, timeout: float | None = None) -> pb.ServerMetadataResponse:
        return await self._run(c.server_metadata(), timeout)

    async def model_metadata(self, name: str, version: str = "", *,
                       timeout: float | None = None) -> pb.ModelMetadataResponse:
        return await self._run(c.model_metadata(name, version), timeout)

    async def model_config(self, name: str, version: str = "", *, timeout: float | None = None) -> mc.ModelConfig:
        return await self._run(c.model_config(name, version), timeout)

    async def model_statistics(self, name: str = "", version: str = "", *,
                         timeout: float | None = None) -> list[pb.ModelStatistics]:
        return await self._run(c.model_statistics(name, version), timeout)

    # ---- inference -----------------------------------------------------------------------------

    async def infer(self, model: str, inputs: Mapping[str, ArrayLike], outputs: Sequence[str] | None = None,
              version: str = "", parameters: Mapping[str, Param] | None = None, timeout: float | None = None, *,
              request_id: str = "") -> InferResult:
        """Run ``model`` on ``inputs`` (name -> array; object/str/bytes arrays are BYTES) and return its outputs
        by name (all of them unless ``outputs`` names some)."""
        return await self._run(c.infer(model, inputs, outputs, version, parameters, request_id), timeout)

    # ---- repository ----------------------------------------------------------------------------

    async def repository_index(self, ready: bool = False, *,
                         timeout: float | None = None) -> list[pb.RepositoryIndexResponse.ModelIndex]:
        """Every model version with its state (READY, UNAVAILABLE, ...) and reason (``DEGRADED: ...``)."""
        return await self._run(c.repository_index(ready), timeout)

    async def load_model(self, name: str, config: str | Mapping[str, Any] | None = None, *,
                   timeout: float | None = None) -> None:
        """(Re)load ``name``; ``config`` overrides its config.pbtxt (JSON text or a dict)."""
        await self._run(c.load_model(name, config), timeout)

    async def unload_model(self, name: str, *, timeout: float | None = None) -> None:
        await self._run(c.unload_model(name), timeout)

    # ---- model quality: ground truth, online accuracy, drift -----------------------------------

    async def report_ground_truth(self, request_id: str, labels: Sequence[object] | None = None,
                                  values: Sequence[float] | ArrayLike | None = None, *,
                                  timeout: float | None = None) -> cpb.GroundTruthResponse:
        """The ground truth of an earlier request's ``request_id``: ``labels`` (classification: one class per
        row, names or integers; booleans as ``true``/``false``) or ``values`` (regression: one per row, or
        rows x horizon for a forecaster). The reply names the version credited and the rows."""
        return await self._run(c.report_ground_truth(request_id, labels, values), timeout)

    async def model_performance(self, model: str, version: str = "", window_s: float = 0, *,
                                timeout: float | None = None) -> cpb.ModelPerformance:
        """Online accuracy from the reported ground truth over the last ``window_s`` seconds (0 = since the
        version was loaded); figures that do not apply, or lack samples, are NaN."""
        return await self._run(c.model_performance(model, version, window_s), timeout)

    async def drift(self, model: str, version: str = "", *, timeout: float | None = None) -> cpb.DriftReport:
        """The latest evaluation of the version's live inputs against its drift reference."""
        return await self._run(c.drift(model, version), timeout)


class _Namespace:
    def __init__(self, client: AsyncInferClient) -> None:
        self._client = client


class AsyncAnomaly(_Namespace):
    async def score(self, events: t.Events, *, model: str = "anomaly", version: str = "",
              timeout: float | None = None) -> t.AnomalyScores:
        """Score raw events (columns or records of the README's fields) with the anomaly pipeline."""
        return t.anomaly_scores(await self._client.infer(model, t.anomaly_inputs(events), t.ANOMALY_OUTPUTS, version,
                                                   timeout=timeout))


class AsyncForecasting(_Namespace):
    async def predict(self, history: ArrayLike | Sequence[ArrayLike], horizon: int = 24, *,
                levels: Sequence[float] = (80.0, 95.0), season: int | None = None, scenario: ArrayLike | None = None,
                model: str = "forecast", version: str = "", timeout: float | None = None) -> t.Forecast:
        """Forecast ``horizon`` steps of one series (1-D), a batch ``[B, T]`` or a list of series of any lengths."""
        outputs = t.FORECAST_OUTPUTS + (t.SCENARIO_OUTPUTS if scenario is not None else ())
        result = await self._client.infer(model, t.forecast_inputs(history, horizon, levels, season, scenario), outputs,
                                    version, timeout=timeout)
        return t.forecast_of(result, levels)


class AsyncVision(_Namespace):
    async def classify(self, images: Sequence[bytes | os.PathLike[str]], *, model: str = "vision_classify",
                 version: str = "", timeout: float | None = None) -> t.ImageClassifications:
        """Top-k ImageNet labels, scores and embeddings of encoded images (or image files)."""
        return t.classifications_of(await self._client.infer(model, t.image_inputs(images), None, version,
                                                       timeout=timeout))

    async def quality(self, images: Sequence[bytes | os.PathLike[str]], *, model: str = "vision_quality",
                version: str = "", timeout: float | None = None) -> t.ImageQuality:
        return t.quality_of(await self._client.infer(model, t.image_inputs(images), None, version, timeout=timeout))


class AsyncNLP(_Namespace):
    async def embed(self, texts: Sequence[str | bytes], *, model: str = "nlp_embed", version: str = "",
              timeout: float | None = None) -> t.Embeddings:
        """Sentence embeddings (all-MiniLM-L6-v2 in the default repository) of texts."""
        return t.embeddings_of(await self._client.infer(model, t.text_inputs(texts), None, version, timeout=timeout))

    async def classify(self, texts: Sequence[str | bytes], *, model: str = "nlp_classify", version: str = "",
                 timeout: float | None = None) -> t.TextClassifications:
        """Each classification head's label and score per text (``nlp_classify``: sentiment, intent, topic)."""
        return t.text_classifications_of(await self._client.infer(model, t.text_inputs(texts), None, version,
                                                            timeout=timeout))


class AsyncControl(_Namespace):
    """infer.control.v1.ControlPlane: the model registry, lifecycle history and deployments."""

    async def register_version(self, version: cpb.ModelVersion, artifact: bytes | str | os.PathLike[str], *,
                               reason: str = "", timeout: float | None = None) -> cpb.ModelVersion:
        """Upload ``artifact`` (bytes or a local file) and register ``version`` (see ``model_version``)."""
        return await self._client._run(c.register_version(version, artifact, reason), timeout)

    async def get_version(self, model_id: str, version: str, *, timeout: float | None = None) -> cpb.ModelVersion:
        return await self._client._run(c.get_version(model_id, version), timeout)

    async def list_versions(self, model_id: str = "", *, status: str = "", model_type: str = "", framework: str = "",
                      where: str | None = None, timeout: float | None = None) -> list[cpb.ModelVersion]:
        """Registry versions, filtered; ``where`` is a metric condition such as ``"auc>=0.9"``."""
        return await self._client._run(c.list_versions(model_id, status, model_type, framework, where), timeout)

    async def compare_versions(self, model_id: str, a: str, b: str, *,
                         timeout: float | None = None) -> cpb.CompareVersionsResponse:
        return await self._client._run(c.compare_versions(model_id, a, b), timeout)

    async def transition_version(self, model_id: str, version: str, source: str, target: str, *, reason: str = "",
                           timeout: float | None = None) -> cpb.ModelVersion:
        """Move a version's status from ``source`` (refused unless it is current) to ``target``."""
        return await self._client._run(c.transition_version(model_id, version, source, target, reason), timeout)

    async def version_history(self, model_id: str, version: str, *,
                        timeout: float | None = None) -> list[cpb.Transition]:
        return await self._client._run(c.version_history(model_id, version), timeout)

    async def audit_log(self, limit: int = 100, *, timeout: float | None = None) -> list[cpb.AuditEntry]:
        return await self._client._run(c.audit_log(limit), timeout)

    async def serving_history(self, model: str, version: int = 0, *, limit: int = 0,
                        timeout: float | None = None) -> list[cpb.ServingTransition]:
        """The lifecycle moves (LOAD, WARM, ACTIVE, DEGRADED, ...) of a served model's versions, oldest first."""
        return await self._client._run(c.serving_history(model, version, limit), timeout)

    async def set_deployment(self, deployment: cpb.Deployment, *, timeout: float | None = None) -> cpb.Deployment:
        """Create or replace a deployment (see ``ab_test``, ``canary``, ``shadow``, ``fallback_chain``); a nonzero
        ``revision`` makes it a compare-and-set (Aborted when the stored one moved on)."""
        return await self._client._run(c.set_deployment(deployment), timeout)

    async def get_deployment(self, name: str, *, timeout: float | None = None) -> cpb.Deployment:
        return await self._client._run(c.get_deployment(name), timeout)

    async def list_deployments(self, *, timeout: float | None = None) -> list[cpb.Deployment]:
        return await self._client._run(c.list_deployments(), timeout)

    async def delete_deployment(self, name: str, *, revision: int = 0, timeout: float | None = None) -> None:
        await self._client._run(c.delete_deployment(name, revision), timeout)

    async def report_outcome(self, request_id: str, value: float, *,
                             timeout: float | None = None) -> cpb.OutcomeResponse:
        """An A/B outcome (1 = converted, or any measure) for an earlier request's ``request_id``."""
        return await self._client._run(c.report_outcome(request_id, value), timeout)

    async def get_experiment(self, name: str, *, timeout: float | None = None) -> cpb.ExperimentReport:
        return await self._client._run(c.get_experiment(name), timeout)
