"""infer.control.v1.ControlPlane: thin handlers over the protocol-neutral ControlPlane."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import grpc

from infer._proto import control_pb2 as cpb
from infer._proto import control_pb2_grpc as cpb_grpc
from infer.controlplane.service import ControlPlane
from infer.errors import InvalidArgument
from infer.registry.store import ModelVersionRecord
from infer.routing.policies import Canary, DefaultAnswer, DefaultOutput, Deployment, Target, Variant
from infer.routing.router import ShadowStats
from infer.transport.grpc.status import add_servicer, grpc_errors

__all__ = ["ControlServicer", "add_control_servicer", "deployment_from_pb", "deployment_to_pb", "drift_to_pb",
           "performance_to_pb", "record_from_pb", "record_to_pb"]

Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
ActorOf = Callable[[Sequence[tuple[str, str]]], str]


_MAX_VERSION_CHARS = 256  # longer is no version anyone writes, and int() refuses numbers of over 4300 digits


def _check_ids(v: Any) -> None:
    """What the registry's patterns let through: they end in ``$``, which also matches before a final newline, and
    ``\\d`` matches any Unicode digit (``'1\\u0661.0.0'`` read as 11.0.0); ids and semantic versions are ASCII."""
    for name in ("model_id", "version", "parent_version"):
        value = getattr(v, name)
        if name != "model_id" and len(value) > _MAX_VERSION_CHARS:
            raise InvalidArgument(f"version.{name}: longer than {_MAX_VERSION_CHARS} characters")
        if not value.isascii() or "\n" in value:
            raise InvalidArgument(f"version.{name}: {value[:40]!r} holds a character no id or semantic version has")


def record_from_pb(v: Any) -> ModelVersionRecord:
    _check_ids(v)
    try:
        hyper = {k: json.loads(text) for k, text in v.hyperparameters.items()}
    except ValueError as e:
        raise InvalidArgument(f"version.hyperparameters: values are JSON text ({e})") from None
    except RecursionError:
        raise InvalidArgument("version.hyperparameters: JSON nested too deeply") from None
    return ModelVersionRecord(
        model_id=v.model_id,
        version=v.version,
        model_type=v.model_type,
        framework=v.framework,
        artifact_uri="pending:",
        artifact_sha256="0" * 64,
        trained_at=v.trained_at or None,
        training_data_id=v.training_data_id or None,
        training_data_size=None if v.training_data_size < 0 or not v.training_data_id else v.training_data_size,
        hyperparameters=hyper,
        metrics=dict(v.metrics),
        status=v.status or "REGISTERED",
        parent_version=v.parent_version or None,
        training_run=v.training_run or None,
    )


def record_to_pb(r: ModelVersionRecord) -> Any:
    return cpb.ModelVersion(
        model_id=r.model_id,
        version=r.version,
        model_type=r.model_type,
        framework=r.framework,
        trained_at=r.trained_at or 0.0,
        training_data_id=r.training_data_id or "",
        training_data_size=-1 if r.training_data_size is None else r.training_data_size,
        hyperparameters={k: json.dumps(v) for k, v in r.hyperparameters.items()},
        metrics=r.metrics,
        artifact_uri=r.artifact_uri,
        artifact_sha256=r.artifact_sha256,
        status=r.status,
        parent_version=r.parent_version or "",
        training_run=r.training_run or "",
        created_at=r.created_at or 0.0,
    )


def _number(v: Any) -> float:
    """A figure for the wire: NaN where unknown (None)."""
    return math.nan if v is None else float(v)


def performance_to_pb(p: dict[str, Any]) -> Any:
    return cpb.ModelPerformance(
        model=p["model"], version=str(p["version"]), kind=p.get("kind") or "", samples=int(p.get("samples") or 0),
        **{k: _number(p.get(k)) for k in ("accuracy", "precision", "recall", "f1", "mae", "rmse")},
        series=[cpb.PerformancePoint(t=float(x["t"]), value=_number(x["value"])) for x in p.get("series", ())])


def drift_to_pb(d: dict[str, Any]) -> Any:
    return cpb.DriftReport(
        model=d["model"], version=str(d["version"]), drifted=bool(d.get("drifted")),
        evaluated_at=float(d.get("at") or 0.0), rows=int(d.get("rows") or 0), reason=str(d.get("reason") or ""),
        features=[cpb.FeatureDrift(
            feature=str(f["feature"]), kind=str(f.get("kind") or ""), drifted=bool(f.get("drifted")),
            **{k: _number(f.get(k)) for k in ("psi", "ks", "ks_p", "wasserstein", "chi2", "chi2_p")},
        ) for f in d.get("features", ())])


def deployment_from_pb(d: Any) -> Deployment:
    return Deployment(
        name=d.name,
        variants=tuple(Variant(Target(v.target.model, v.target.version), v.weight) for v in d.variants),
        sticky_key=d.sticky_key,
        fallback=tuple(Target(t.model, t.version) for t in d.fallback),
        link_timeout_us=d.link_timeout_us,
        shadow=Target(d.shadow.model, d.shadow.version) if d.HasField("shadow") and d.shadow.model else None,
        shadow_tolerance=d.shadow_tolerance,
        canary=_canary_from_pb(d.canary) if d.HasField("canary") else None,
        promote_when_p_below=d.promote_when_p_below,
        promote_min_samples=d.promote_min_samples or 100,
        default_answer=_default_from_pb(d.default_answer) if d.HasField("default_answer") else None,
    )


def _default_from_pb(a: Any) -> DefaultAnswer:
    outputs = []
    for o in a.outputs:
        values: tuple[float | str, ...] = tuple(o.strings) if o.datatype == "BYTES" else tuple(o.numbers)
        outputs.append(DefaultOutput(o.name, o.datatype, tuple(o.shape), values))
    return DefaultAnswer(tuple(outputs), batched=not a.unbatched)


def _default_to_pb(a: DefaultAnswer) -> Any:
    return cpb.DefaultAnswer(unbatched=not a.batched, outputs=[
        cpb.DefaultOutput(name=o.name, datatype=o.datatype, shape=list(o.shape),
                          strings=[str(v) for v in o.values] if o.datatype == "BYTES" else [],
                          numbers=[] if o.datatype == "BYTES" else [float(v) for v in o.values])
        for o in a.outputs])


def _canary_from_pb(c: Any) -> Canary:
    return Canary(
        baseline=Target(c.baseline.model, c.baseline.version),
        canary=Target(c.canary.model, c.canary.version),
        stages=tuple((s.percent, s.duration_s) for s in c.stages),
        max_error_rate=c.max_error_rate, max_p99_ms=c.max_p99_ms, min_requests=c.min_requests or 20,
    )  # status, stage and reason are the server's: a new canary starts RUNNING at stage 0


def _canary_to_pb(c: Canary) -> Any:
    return cpb.Canary(
        baseline=cpb.Target(model=c.baseline.model, version=c.baseline.version),
        canary=cpb.Target(model=c.canary.model, version=c.canary.version),
        stages=[cpb.CanaryStage(percent=p, duration_s=d) for p, d in c.stages],
        max_error_rate=c.max_error_rate, max_p99_ms=c.max_p99_ms, min_requests=c.min_requests,
        status=c.status, stage=c.stage, reason=c.reason,
    )


def deployment_to_pb(dep: Deployment, stats: ShadowStats | None = None, revision: int = 0) -> Any:
    return cpb.Deployment(
        name=dep.name,
        variants=[cpb.Variant(target=cpb.Target(model=v.target.model, version=v.target.version), weight=v.weight)
                  for v in dep.variants],
        sticky_key=dep.sticky_key,
        fallback=[cpb.Target(model=t.model, version=t.version) for t in dep.fallback],
        link_timeout_us=dep.link_timeout_us,
        shadow=cpb.Target(model=dep.shadow.model, version=dep.shadow.version) if dep.shadow else None,
        shadow_tolerance=dep.shadow_tolerance,
        shadow_stats=cpb.ShadowStats(compared=stats.compared, matched=stats.matched, mismatched=stats.mismatched,
                                     errors=stats.errors, skipped=stats.skipped,
                                     max_abs_diff=stats.max_abs_diff) if stats else None,
        canary=_canary_to_pb(dep.canary) if dep.canary else None,
        promote_when_p_below=dep.promote_when_p_below,
        promote_min_samples=dep.promote_min_samples,
        revision=revision,
        default_answer=_default_to_pb(dep.default_answer) if dep.default_answer else None,
    )


class ControlServicer(cpb_grpc.ControlPlaneServicer):
    def __init__(self, control: ControlPlane, actor_of: ActorOf | None = None) -> None:
        self._cp = control
        self._actor_of = actor_of or (lambda _md: "anonymous")

    def _actor(self, context: Ctx) -> str:
        return self._actor_of(tuple(context.invocation_metadata() or ()))

    @grpc_errors
    async def RegisterVersion(self, request: Any, context: Ctx) -> Any:
        kind = request.WhichOneof("artifact")
        if kind is None:
            raise InvalidArgument("artifact: give content (the model file's bytes) or path")
        artifact: bytes | Path = request.content if kind == "content" else Path(request.path)
        record = await self._cp.register(
            record_from_pb(request.version), artifact, artifact_name=request.artifact_name or None,
            actor=self._actor(context), reason=request.reason,
        )
        return record_to_pb(record)

    @grpc_errors
    async def GetVersion(self, request: Any, context: Ctx) -> Any:
        return record_to_pb(await self._cp.get(request.model_id, request.version))

    @grpc_errors
    async def ListVersions(self, request: Any, context: Ctx) -> Any:
        flt = (request.metric, request.op, request.value) if request.metric else None
        rows = await self._cp.search(metric_filter=flt, model_id=request.model_id, status=request.status,
                                   model_type=request.model_type, framework=request.framework)
        return cpb.ListVersionsResponse(versions=[record_to_pb(r) for r in rows])

    @grpc_errors
    async def CompareVersions(self, request: Any, context: Ctx) -> Any:
        diff = await self._cp.compare(request.model_id, request.version_a, request.version_b)
        resp = cpb.CompareVersionsResponse()
        for name, d in diff["fields"].items():
            resp.fields.add(field=name, a=json.dumps(d["v1"]), b=json.dumps(d["v2"]))
        for name, d in diff["metrics"].items():
            resp.metrics.add(name=name, a=d["v1"] if d["v1"] is not None else math.nan,
                             b=d["v2"] if d["v2"] is not None else math.nan,
                             delta=d["delta"] if d["delta"] is not None else math.nan,
                             has_a=d["v1"] is not None, has_b=d["v2"] is not None)
        return resp

    @grpc_errors
    async def TransitionVersion(self, request: Any, context: Ctx) -> Any:
        record = await self._cp.transition(request.model_id, request.version, request.source, request.target,
                                           request.reason, self._actor(context))
        return record_to_pb(record)

    @grpc_errors
    async def VersionHistory(self, request: Any, context: Ctx) -> Any:
        rows = await self._cp.history(request.model_id, request.version)
        return cpb.VersionHistoryResponse(transitions=[
            cpb.Transition(at=t.at, source=t.source or "", target=t.target, reason=t.reason, actor=t.actor)
            for t in rows
        ])

    @grpc_errors
    async def AuditLog(self, request: Any, context: Ctx) -> Any:
        rows = await self._cp.audit_log(request.limit or 100)
        return cpb.AuditLogResponse(entries=[
            cpb.AuditEntry(at=e.at, actor=e.actor, action=e.action, detail_json=json.dumps(e.detail, sort_keys=True))
            for e in rows
        ])

    @grpc_errors
    async def SetDeployment(self, request: Any, context: Ctx) -> Any:
        dep = await self._cp.set_deployment(deployment_from_pb(request), self._actor(context),
                                            expected_revision=request.revision or None)
        return deployment_to_pb(dep, revision=self._cp.revisions.get(dep.name, 0))

    @grpc_errors
    async def GetDeployment(self, request: Any, context: Ctx) -> Any:
        dep = self._cp.get_deployment(request.name)
        return deployment_to_pb(dep, self._cp.router.shadow_stats.get(dep.name), self._cp.revisions.get(dep.name, 0))

    @grpc_errors
    async def ListDeployments(self, request: Any, context: Ctx) -> Any:
        router, revisions = self._cp.router, self._cp.revisions
        return cpb.ListDeploymentsResponse(deployments=[
            deployment_to_pb(d, router.shadow_stats.get(d.name), revisions.get(d.name, 0)) for d in router.all()])

    @grpc_errors
    async def DeleteDeployment(self, request: Any, context: Ctx) -> Any:
        await self._cp.delete_deployment(request.name, self._actor(context), request.revision or None)
        return cpb.DeploymentRef(name=request.name)

    @grpc_errors
    async def ServingHistory(self, request: Any, context: Ctx) -> Any:
        rows = await self._cp.serving_history(request.model, request.version, request.limit or 1000)
        return cpb.ServingHistoryResponse(transitions=[
            cpb.ServingTransition(model=t.model, version=t.version, at=t.at, source=t.source or "", target=t.target,
                                  reason=t.reason, server=t.server) for t in rows])

    @grpc_errors
    async def ReportOutcome(self, request: Any, context: Ctx) -> Any:
        name, target = self._cp.report_outcome(request.request_id, request.value)
        return cpb.OutcomeResponse(deployment=name, target=target.label())

    @grpc_errors
    async def GetExperiment(self, request: Any, context: Ctx) -> Any:
        rows, verdict = await self._cp.experiment(request.name)
        return cpb.ExperimentReport(
            deployment=request.name,
            variants=[cpb.VariantReport(
                target=t.label(), requests=s.requests, errors=s.errors, error_rate=s.error_rate,
                mean_latency_ms=s.latency_s / max(1, s.requests - s.errors) * 1e3, outcomes=s.outcomes,
                outcome_mean=s.outcome_mean) for t, s in rows],
            metric=verdict.metric, difference=verdict.difference, ci95_low=verdict.ci95_low,
            ci95_high=verdict.ci95_high, p_value=verdict.p_value,
        )

    @grpc_errors
    async def ReportGroundTruth(self, request: Any, context: Ctx) -> Any:
        model, version, rows = self._cp.report_ground_truth(request.request_id, request.labels, request.values)
        return cpb.GroundTruthResponse(model=model, version=version, rows=rows)

    @grpc_errors
    async def GetModelPerformance(self, request: Any, context: Ctx) -> Any:
        return performance_to_pb(self._cp.performance(request.model, request.version, request.window_s))

    @grpc_errors
    async def GetDrift(self, request: Any, context: Ctx) -> Any:
        return drift_to_pb(self._cp.drift_report(request.model, request.version))


def add_control_servicer(servicer: ControlServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` on ``server``, undecodable requests answered INVALID_ARGUMENT (see
    :func:`infer.transport.grpc.status.add_servicer`); the ``add`` of build_server's ``extra`` entries."""
    add_servicer(cpb_grpc.add_ControlPlaneServicer_to_server, servicer, server)
