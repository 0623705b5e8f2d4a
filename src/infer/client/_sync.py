"""InferClient: the blocking client on a ``grpc`` channel. Its calls are the ``_calls`` table's; this module only
carries them (deadline, retries, token) and groups them."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import grpc
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

__all__ = ["InferClient"]

T = TypeVar("T")


class InferClient:
    """A blocking client of an infer server (or any KServe V2 / Triton gRPC server for the V2 calls).

    ``target`` is ``host:port``; ``tls`` a TLSConfig (or True for the system's roots); ``token`` is sent as
    ``authorization: Bearer <token>``; ``timeout`` is every call's default deadline in seconds (None: none), a
    call's own ``timeout`` overrides it; ``retries`` retries UNAVAILABLE only (None: one attempt). Close it, or use
    it as a context manager. Task helpers: ``anomaly``, ``forecast``, ``vision``, ``nlp``; the control plane:
    ``control``; model quality: ``report_ground_truth``, ``model_performance``, ``drift``."""

    def __init__(self, target: str, *, tls: TLSConfig | bool | None = None, token: str | None = None,
                 timeout: float | None = None, retries: RetryPolicy | None = DEFAULT_RETRY,
                 options: list[tuple[str, Any]] | None = None) -> None:
        deadline_of(timeout, 0.0)  # a bad default deadline is refused now, not at the first call
        self.target = target
        tls_config = tls_of(tls)
        self._retry = retries or NO_RETRY
        opts = channel_options(tls_config, self._retry, options)
        self._channel = (grpc.secure_channel(target, tls_config.credentials(), opts) if tls_config
                         else grpc.insecure_channel(target, opts))
        self._metadata = auth_metadata(token)
        self._timeout = timeout
        self._methods: dict[str, Any] = {}
        self.anomaly = Anomaly(self)
        self.forecast = Forecasting(self)
        self.vision = Vision(self)
        self.nlp = NLP(self)
        self.control = Control(self)

    def __enter__(self) -> InferClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _run(self, call: c.Call[T], timeout: float | None) -> T:
        method = self._methods.get(call.path)
        if method is None:
            method = self._methods[call.path] = self._channel.unary_unary(
                call.path, request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=call.reply.FromString)
        deadline = deadline_of(self._timeout if timeout is None else timeout, time.monotonic())
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = method(call.request, timeout=remaining(deadline, time.monotonic()), metadata=self._metadata)
            except grpc.RpcError as e:
                err = error_from_rpc(e)
            else:
                return call.decode(reply)
            wait = self._retry.delay(attempt, err, remaining(deadline, time.monotonic()))
            if wait is None:
                raise err
            time.sleep(wait)

    # ---- health and metadata -------------------------------------------------------------------

    def server_live(self, *, timeout: float | None = None) -> bool:
        return self._run(c.server_live(), timeout)

    def server_ready(self, *, timeout: float | None = None) -> bool:
        return self._run(c.server_ready(), timeout)

    def model_ready(self, name: str, version: str = "", *, timeout: float | None = None) -> bool:
        return self._run(c.model_ready(name, version), timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status name (``SERVING``, ``NOT_SERVING``): ``""`` liveness, ``"ready"`` readiness,
        ``"model/<name>"`` one model."""
        return self._run(c.health(service), timeout)

    def wait_ready(self, timeout: float = 60.0, *, service: str = "ready", interval: float = 0.2) -> None:
        """Block until ``health(service)`` is SERVING (unreachable counts as not yet); DeadlineExceeded after
        ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            try:
                if left > 0 and self._run(c.health(service), min(left, 5.0)) == "SERVING":
                    return
            except (Unavailable, DeadlineExceeded):
                pass
            if time.monotonic() + interval >= end:
                raise DeadlineExceeded(None, f"{self.target}: '{service or 'live'}' not SERVING after {timeout} s")
            time.sleep(interval)

    def server_metadata(self, *, timeout: float | None = None) -> pb.ServerMetadataResponse:
        return self._run(c.server_metadata(), timeout)

    def model_metadata(self, name: str, version: str = "", *,
                       timeout: float | None = None) -> pb.ModelMetadataResponse:
        return self._run(c.model_metadata(name, version), timeout)

    def model_config(self, name: str, version: str = "", *, timeout: float | None = None) -> mc.ModelConfig:
        return self._run(c.model_config(name, version), timeout)

    def model_statistics(self, name: str = "", version: str = "", *,
                         timeout: float | None = None) -> list[pb.ModelStatistics]:
        return self._run(c.model_statistics(name, version), timeout)

    # ---- inference -----------------------------------------------------------------------------

    def infer(self, model: str, inputs: Mapping[str, ArrayLike], outputs: Sequence[str] | None = None,
              version: str = "", parameters: Mapping[str, Param] | None = None, timeout: float | None = None, *,
              request_id: str = "") -> InferResult:
        """Run ``model`` on ``inputs`` (name -> array; object/str/bytes arrays are BYTES) and return its outputs
        by name (all of them unless ``outputs`` names some)."""
        return self._run(c.infer(model, inputs, outputs, version, parameters, request_id), timeout)

    # ---- repository ----------------------------------------------------------------------------

    def repository_index(self, ready: bool = False, *,
                         timeout: float | None = None) -> list[pb.RepositoryIndexResponse.ModelIndex]:
        """Every model version with its state (READY, UNAVAILABLE, ...) and reason (``DEGRADED: ...``)."""
        return self._run(c.repository_index(ready), timeout)

    def load_model(self, name: str, config: str | Mapping[str, Any] | None = None, *,
                   timeout: float | None = None) -> None:
        """(Re)load ``name``; ``config`` overrides its config.pbtxt (JSON text or a dict)."""
        self._run(c.load_model(name, config), timeout)

    def unload_model(self, name: str, *, timeout: float | None = None) -> None:
        self._run(c.unload_model(name), timeout)

    # ---- model quality: ground truth, online accuracy, drift -----------------------------------

    def report_ground_truth(self, request_id: str, labels: Sequence[object] | None = None,
                            values: Sequence[float] | ArrayLike | None = None, *,
                            timeout: float | None = None) -> cpb.GroundTruthResponse:
        """The ground truth of an earlier request's ``request_id``: ``labels`` (classification: one class per
        row, names or integers; booleans as ``true``/``false``) or ``values`` (regression: one per row, or
        rows x horizon for a forecaster). The reply names the version credited and the rows."""
        return self._run(c.report_ground_truth(request_id, labels, values), timeout)

    def model_performance(self, model: str, version: str = "", window_s: float = 0, *,
                          timeout: float | None = None) -> cpb.ModelPerformance:
        """Online accuracy from the reported ground truth over the last ``window_s`` seconds (0 = since the
        version was loaded); figures that do not apply, or lack samples, are NaN."""
        return self._run(c.model_performance(model, version, window_s), timeout)

    def drift(self, model: str, version: str = "", *, timeout: float | None = None) -> cpb.DriftReport:
        """The latest evaluation of the version's live inputs against its drift reference."""
        return self._run(c.drift(model, version), timeout)


class _Namespace:
    def __init__(self, client: InferClient) -> None:
        self._client = client


class Anomaly(_Namespace):
    def score(self, events: t.Events, *, model: str = "anomaly", version: str = "",
              timeout: float | None = None) -> t.AnomalyScores:
        """Score raw events (columns or records of the README's fields) with the anomaly pipeline."""
        return t.anomaly_scores(self._client.infer(model, t.anomaly_inputs(events), t.ANOMALY_OUTPUTS, version,
                                                   timeout=timeout))


class Forecasting(_Namespace):
    def predict(self, history: ArrayLike | Sequence[ArrayLike], horizon: int = 24, *,
                levels: Sequence[float] = (80.0, 95.0), season: int | None = None, scenario: ArrayLike | None = None,
                model: str = "forecast", version: str = "", timeout: float | None = None) -> t.Forecast:
        """Forecast ``horizon`` steps of one series (1-D), a batch ``[B, T]`` or a list of series of any lengths."""
        outputs = t.FORECAST_OUTPUTS + (t.SCENARIO_OUTPUTS if scenario is not None else ())
        result = self._client.infer(model, t.forecast_inputs(history, horizon, levels, season, scenario), outputs,
                                    version, timeout=timeout)
        return t.forecast_of(result, levels)


class Vision(_Namespace):
    def classify(self, images: Sequence[bytes | os.PathLike[str]], *, model: str = "vision_classify",
                 version: str = "", timeout: float | None = None) -> t.ImageClassifications:
        """Top-k ImageNet labels, scores and embeddings of encoded images (or image files)."""
        return t.classifications_of(self._client.infer(model, t.image_inputs(images), None, version,
                                                       timeout=timeout))

    def quality(self, images: Sequence[bytes | os.PathLike[str]], *, model: str = "vision_quality",
                version: str = "", timeout: float | None = None) -> t.ImageQuality:
        return t.quality_of(self._client.infer(model, t.image_inputs(images), None, version, timeout=timeout))


class NLP(_Namespace):
    def embed(self, texts: Sequence[str | bytes], *, model: str = "nlp_embed", version: str = "",
              timeout: float | None = None) -> t.Embeddings:
        """Sentence embeddings (all-MiniLM-L6-v2 in the default repository) of texts."""
        return t.embeddings_of(self._client.infer(model, t.text_inputs(texts), None, version, timeout=timeout))

    def classify(self, texts: Sequence[str | bytes], *, model: str = "nlp_classify", version: str = "",
                 timeout: float | None = None) -> t.TextClassifications:
        """Each classification head's label and score per text (``nlp_classify``: sentiment, intent, topic)."""
        return t.text_classifications_of(self._client.infer(model, t.text_inputs(texts), None, version,
                                                            timeout=timeout))


class Control(_Namespace):
    """infer.control.v1.ControlPlane: the model registry, lifecycle history and deployments."""

    def register_version(self, version: cpb.ModelVersion, artifact: bytes | str | os.PathLike[str], *,
                         reason: str = "", timeout: float | None = None) -> cpb.ModelVersion:
        """Upload ``artifact`` (bytes or a local file) and register ``version`` (see ``model_version``)."""
        return self._client._run(c.register_version(version, artifact, reason), timeout)

    def get_version(self, model_id: str, version: str, *, timeout: float | None = None) -> cpb.ModelVersion:
        return self._client._run(c.get_version(model_id, version), timeout)

    def list_versions(self, model_id: str = "", *, status: str = "", model_type: str = "", framework: str = "",
                      where: str | None = None, timeout: float | None = None) -> list[cpb.ModelVersion]:
        """Registry versions, filtered; ``where`` is a metric condition such as ``"auc>=0.9"``."""
        return self._client._run(c.list_versions(model_id, status, model_type, framework, where), timeout)

    def compare_versions(self, model_id: str, a: str, b: str, *,
                         timeout: float | None = None) -> cpb.CompareVersionsResponse:
        return self._client._run(c.compare_versions(model_id, a, b), timeout)

    def transition_version(self, model_id: str, version: str, source: str, target: str, *, reason: str = "",
                           timeout: float | None = None) -> cpb.ModelVersion:
        """Move a version's status from ``source`` (refused unless it is current) to ``target``."""
        return self._client._run(c.transition_version(model_id, version, source, target, reason), timeout)

    def version_history(self, model_id: str, version: str, *,
                        timeout: float | None = None) -> list[cpb.Transition]:
        return self._client._run(c.version_history(model_id, version), timeout)

    def audit_log(self, limit: int = 100, *, timeout: float | None = None) -> list[cpb.AuditEntry]:
        return self._client._run(c.audit_log(limit), timeout)

    def serving_history(self, model: str, version: int = 0, *, limit: int = 0,
                        timeout: float | None = None) -> list[cpb.ServingTransition]:
        """The lifecycle moves (LOAD, WARM, ACTIVE, DEGRADED, ...) of a served model's versions, oldest first."""
        return self._client._run(c.serving_history(model, version, limit), timeout)

    def set_deployment(self, deployment: cpb.Deployment, *, timeout: float | None = None) -> cpb.Deployment:
        """Create or replace a deployment (see ``ab_test``, ``canary``, ``shadow``, ``fallback_chain``); a nonzero
        ``revision`` makes it a compare-and-set (Aborted when the stored one moved on)."""
        return self._client._run(c.set_deployment(deployment), timeout)

    def get_deployment(self, name: str, *, timeout: float | None = None) -> cpb.Deployment:
        return self._client._run(c.get_deployment(name), timeout)

    def list_deployments(self, *, timeout: float | None = None) -> list[cpb.Deployment]:
        return self._client._run(c.list_deployments(), timeout)

    def delete_deployment(self, name: str, *, revision: int = 0, timeout: float | None = None) -> None:
        self._client._run(c.delete_deployment(name, revision), timeout)

    def report_outcome(self, request_id: str, value: float, *, timeout: float | None = None) -> cpb.OutcomeResponse:
        """An A/B outcome (1 = converted, or any measure) for an earlier request's ``request_id``."""
        return self._client._run(c.report_outcome(request_id, value), timeout)

    def get_experiment(self, name: str, *, timeout: float | None = None) -> cpb.ExperimentReport:
        return self._client._run(c.get_experiment(name), timeout)
