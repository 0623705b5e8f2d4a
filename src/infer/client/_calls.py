"""Every call either client makes, as data: the method path, the request message, the reply's class and how the
reply becomes what the caller gets. The sync and async clients only carry these over their channel (one copy of
the protocol logic for both)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from numpy.typing import ArrayLike

from infer._proto import control_pb2 as cpb
from infer._proto import grpc_service_pb2 as pb
from infer._proto import model_config_pb2 as mc
from infer.client._codec import InferResult, Param, decode_response, encode_request
from infer.client._errors import InvalidArgument

__all__ = [
    "Call", "audit_log", "compare_versions", "delete_deployment", "drift", "get_deployment", "get_experiment",
    "get_version", "health", "infer", "list_deployments", "list_versions", "load_model", "model_config",
    "model_metadata", "model_performance", "model_ready", "model_statistics", "register_version",
    "report_ground_truth", "report_outcome", "repository_index", "server_live", "server_metadata", "server_ready",
    "serving_history", "set_deployment", "transition_version", "unload_model", "version_history",
]

T = TypeVar("T")

_V2 = "/inference.GRPCInferenceService/"
_CONTROL = "/infer.control.v1.ControlPlane/"
_HEALTH = "/grpc.health.v1.Health/"
_WHERE = re.compile(r"\s*([\w.\-]+)\s*(>=|<=|==|!=|>|<)\s*([-+0-9.eE]+|[-+]?inf|nan)\s*")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    path: str
    request: Message
    reply: type[Message]
    decode: Callable[[Any], T]


def _none(_reply: Any) -> None:
    return None


# ---- data plane (KServe V2) --------------------------------------------------------------------


def server_live() -> Call[bool]:
    return Call(_V2 + "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse, lambda r: bool(r.live))


def server_ready() -> Call[bool]:
    return Call(_V2 + "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse, lambda r: bool(r.ready))


def model_ready(name: str, version: str) -> Call[bool]:
    return Call(_V2 + "ModelReady", pb.ModelReadyRequest(name=name, version=version), pb.ModelReadyResponse,
                lambda r: bool(r.ready))


def health(service: str) -> Call[str]:
    def status(r: Any) -> str:
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))

    return Call(_HEALTH + "Check", health_pb2.HealthCheckRequest(service=service), health_pb2.HealthCheckResponse,
                status)


def server_metadata() -> Call[pb.ServerMetadataResponse]:
    return Call(_V2 + "ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse, lambda r: r)


def model_metadata(name: str, version: str) -> Call[pb.ModelMetadataResponse]:
    return Call(_V2 + "ModelMetadata", pb.ModelMetadataRequest(name=name, version=version),
                pb.ModelMetadataResponse, lambda r: r)


def model_config(name: str, version: str) -> Call[mc.ModelConfig]:
    return Call(_V2 + "ModelConfig", pb.ModelConfigRequest(name=name, version=version), pb.ModelConfigResponse,
                lambda r: r.config)


def model_statistics(name: str, version: str) -> Call[list[pb.ModelStatistics]]:
    return Call(_V2 + "ModelStatistics", pb.ModelStatisticsRequest(name=name, version=version),
                pb.ModelStatisticsResponse, lambda r: list(r.model_stats))


def infer(model: str, inputs: Mapping[str, ArrayLike], outputs: Sequence[str] | None, version: str,
          parameters: Mapping[str, Param] | None, request_id: str) -> Call[InferResult]:
    return Call(_V2 + "ModelInfer", encode_request(model, inputs, outputs, version, parameters, request_id),
                pb.ModelInferResponse, decode_response)


def repository_index(ready: bool) -> Call[list[pb.RepositoryIndexResponse.ModelIndex]]:
    return Call(_V2 + "RepositoryIndex", pb.RepositoryIndexRequest(ready=ready), pb.RepositoryIndexResponse,
                lambda r: list(r.models))


def load_model(name: str, config: str | Mapping[str, Any] | None) -> Call[None]:
    req = pb.RepositoryModelLoadRequest(model_name=name)
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        req.parameters["config"].string_param = text
    return Call(_V2 + "RepositoryModelLoad", req, pb.RepositoryModelLoadResponse, _none)


def unload_model(name: str) -> Call[None]:
    return Call(_V2 + "RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=name),
                pb.RepositoryModelUnloadResponse, _none)


# ---- control plane (infer.control.v1) ----------------------------------------------------------


def register_version(version: cpb.ModelVersion, artifact: bytes | str | os.PathLike[str], reason: str) -> Call[
        cpb.ModelVersion]:
    if isinstance(artifact, bytes):
        req = cpb.RegisterVersionRequest(version=version, content=artifact, reason=reason)
    else:
        path = Path(artifact)
        req = cpb.RegisterVersionRequest(version=version, content=path.read_bytes(), artifact_name=path.name,
                                         reason=reason)
    return Call(_CONTROL + "RegisterVersion", req, cpb.ModelVersion, lambda r: r)


def get_version(model_id: str, version: str) -> Call[cpb.ModelVersion]:
    return Call(_CONTROL + "GetVersion", cpb.VersionRef(model_id=model_id, version=version), cpb.ModelVersion,
                lambda r: r)


def list_versions(model_id: str, status: str, model_type: str, framework: str, where: str | None) -> Call[
        list[cpb.ModelVersion]]:
    req = cpb.ListVersionsRequest(model_id=model_id, status=status, model_type=model_type, framework=framework)
    if where:
        m = _WHERE.fullmatch(where)
        if m is None:
            raise InvalidArgument(None, f"where: {where!r} is not 'METRIC OP NUMBER' (e.g. 'auc>=0.9')")
        req.metric, req.op, req.value = m.group(1), m.group(2), float(m.group(3))
    return Call(_CONTROL + "ListVersions", req, cpb.ListVersionsResponse, lambda r: list(r.versions))


def compare_versions(model_id: str, a: str, b: str) -> Call[cpb.CompareVersionsResponse]:
    return Call(_CONTROL + "CompareVersions", cpb.CompareVersionsRequest(model_id=model_id, version_a=a, version_b=b),
                cpb.CompareVersionsResponse, lambda r: r)


def transition_version(model_id: str, version: str, source: str, target: str, reason: str) -> Call[
        cpb.ModelVersion]:
    req = cpb.TransitionRequest(model_id=model_id, version=version, source=source, target=target, reason=reason)
    return Call(_CONTROL + "TransitionVersion", req, cpb.ModelVersion, lambda r: r)


def version_history(model_id: str, version: str) -> Call[list[cpb.Transition]]:
    return Call(_CONTROL + "VersionHistory", cpb.VersionRef(model_id=model_id, version=version),
                cpb.VersionHistoryResponse, lambda r: list(r.transitions))


def audit_log(limit: int) -> Call[list[cpb.AuditEntry]]:
    return Call(_CONTROL + "AuditLog", cpb.AuditLogRequest(limit=limit), cpb.AuditLogResponse,
                lambda r: list(r.entries))


def serving_history(model: str, version: int, limit: int) -> Call[list[cpb.ServingTransition]]:
    return Call(_CONTROL + "ServingHistory", cpb.ServingHistoryRequest(model=model, version=version, limit=limit),
                cpb.ServingHistoryResponse, lambda r: list(r.transitions))


def set_deployment(deployment: cpb.Deployment) -> Call[cpb.Deployment]:
    return Call(_CONTROL + "SetDeployment", deployment, cpb.Deployment, lambda r: r)


def get_deployment(name: str) -> Call[cpb.Deployment]:
    return Call(_CONTROL + "GetDeployment", cpb.DeploymentRef(name=name), cpb.Deployment, lambda r: r)


def list_deployments() -> Call[list[cpb.Deployment]]:
    return Call(_CONTROL + "ListDeployments", cpb.ListDeploymentsRequest(), cpb.ListDeploymentsResponse,
                lambda r: list(r.deployments))


def delete_deployment(name: str, revision: int) -> Call[None]:
    return Call(_CONTROL + "DeleteDeployment", cpb.DeploymentRef(name=name, revision=revision), cpb.DeploymentRef,
                _none)


def report_outcome(request_id: str, value: float) -> Call[cpb.OutcomeResponse]:
    return Call(_CONTROL + "ReportOutcome", cpb.OutcomeRequest(request_id=request_id, value=value),
                cpb.OutcomeResponse, lambda r: r)


def get_experiment(name: str) -> Call[cpb.ExperimentReport]:
    return Call(_CONTROL + "GetExperiment", cpb.DeploymentRef(name=name), cpb.ExperimentReport, lambda r: r)


def report_ground_truth(request_id: str, labels: Sequence[object] | None,
                        values: Sequence[float] | ArrayLike | None) -> Call[cpb.GroundTruthResponse]:
    req = cpb.GroundTruthRequest(request_id=request_id)
    if labels is not None:
        req.labels.extend(_label_text(x) for x in labels)
    if values is not None:
        req.values.extend(np.asarray(values, dtype=np.float64).reshape(-1).tolist())
    return Call(_CONTROL + "ReportGroundTruth", req, cpb.GroundTruthResponse, lambda r: r)


def _label_text(x: object) -> str:
    if isinstance(x, bytes):
        return x.decode()
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    return str(x)


def model_performance(model: str, version: str, window_s: float) -> Call[cpb.ModelPerformance]:
    req = cpb.ModelPerformanceRequest(model=model, version=version, window_s=window_s)
    return Call(_CONTROL + "GetModelPerformance", req, cpb.ModelPerformance, lambda r: r)


def drift(model: str, version: str) -> Call[cpb.DriftReport]:
    return Call(_CONTROL + "GetDrift", cpb.ModelPerformanceRequest(model=model, version=version), cpb.DriftReport,
                lambda r: r)
