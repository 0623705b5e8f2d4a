"""ControlPlane: the model registry's operations, knowing nothing of gRPC.

The metadata store and artifact store block (SQLite fsyncs, file hashing), so every call runs in
a worker thread and the event loop keeps serving inference.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from infer.core.types import DataType
from infer.errors import FailedPrecondition, InferError, InvalidArgument, NotFound
from infer.observability.accuracy import check_truth
from infer.registry.artifacts import ArtifactStore
from infer.registry.registry import LoadedVersion
from infer.registry.store import AuditEntry, ModelVersionRecord, RegistryStore, ServingTransition, TransitionRecord
from infer.routing.experiment import Comparison, VariantStats, compare
from infer.routing.policies import Canary, DefaultAnswer, DefaultOutput, Deployment, Target, Variant
from infer.routing.router import Router

__all__ = ["ControlPlane", "Watch", "check_deployment", "deployment_from_dict", "deployment_to_dict"]

log = logging.getLogger(__name__)

_MAX_DEFAULT_RANK = 32
_MAX_VERSION_DIGITS = 18  # a served version is an int64


def _check_target(dep: Deployment, t: Target) -> None:
    if not t.model:
        raise InvalidArgument(f"deployment '{dep.name}': every target needs a model name")
    v = t.version
    if v and not (v.isascii() and v.isdigit() and len(v) <= _MAX_VERSION_DIGITS):
        raise InvalidArgument(f"deployment '{dep.name}': target {t.model!r} version {v[:40]!r} is not a served "
                              "version (a decimal integer, or empty for the newest)")


def _check_default(dep: Deployment) -> None:
    for o in dep.default_answer.outputs if dep.default_answer is not None else ():
        where = f"deployment '{dep.name}': default_answer output '{o.name}'"
        if len(o.shape) > _MAX_DEFAULT_RANK:
            raise InvalidArgument(f"{where}: {len(o.shape)} dimensions (at most {_MAX_DEFAULT_RANK})")
        dt = DataType(o.datatype).numpy
        if dt.kind == "O":
            continue
        numbers = [float(v) for v in o.values]
        if not all(math.isfinite(v) for v in numbers):
            raise InvalidArgument(f"{where}: values must be finite numbers")
        if dt.kind in "iu":
            info = np.iinfo(dt.name)
            if not all(v == int(v) and info.min <= int(v) <= info.max for v in numbers):
                raise InvalidArgument(f"{where}: values must be integers within {o.datatype}'s range")
        elif dt.kind == "f" and any(abs(v) > float(np.finfo(dt.name).max) for v in numbers):
            raise InvalidArgument(f"{where}: values beyond {o.datatype}'s range")


def check_deployment(dep: Deployment) -> None:
    """What the policy types leave to the control plane: every number finite (a NaN weight, stage or tolerance
    would pass their range checks and then fail the store's JSON), budgets not negative, targets that can name
    a served version, default answers whose values fit their datatype."""
    name = dep.name
    weights = [v.weight for v in dep.variants]
    if not all(math.isfinite(w) for w in weights) or not math.isfinite(sum(weights)):
        raise InvalidArgument(f"deployment '{name}': variant weights must be finite numbers with a finite sum")
    if dep.link_timeout_us < 0:
        raise InvalidArgument(f"deployment '{name}': link_timeout_us must not be negative")
    if not (math.isfinite(dep.shadow_tolerance) and dep.shadow_tolerance >= 0):
        raise InvalidArgument(f"deployment '{name}': shadow_tolerance must be a finite number >= 0")
    targets = [v.target for v in dep.variants] + list(dep.fallback)
    if dep.shadow is not None:
        targets.append(dep.shadow)
    c = dep.canary
    if c is not None:
        targets += [c.baseline, c.canary]
        numbers = [x for stage in c.stages for x in stage] + [c.max_error_rate, c.max_p99_ms]
        if not all(math.isfinite(x) for x in numbers):
            raise InvalidArgument(f"deployment '{name}': canary stages, max_error_rate and max_p99_ms must be "
                                  "finite numbers")
    for t in targets:
        _check_target(dep, t)
    _check_default(dep)


def deployment_to_dict(dep: Deployment) -> dict[str, Any]:
    return {
        "variants": [{"model": v.target.model, "version": v.target.version, "weight": v.weight} for v in dep.variants],
        "sticky_key": dep.sticky_key,
        "fallback": [{"model": t.model, "version": t.version} for t in dep.fallback],
        "link_timeout_us": dep.link_timeout_us,
        "shadow": None if dep.shadow is None else {"model": dep.shadow.model, "version": dep.shadow.version},
        "shadow_tolerance": dep.shadow_tolerance,
        "promote_when_p_below": dep.promote_when_p_below,
        "promote_min_samples": dep.promote_min_samples,
        "default_answer": None if dep.default_answer is None else {
            "batched": dep.default_answer.batched,
            "outputs": [{"name": o.name, "datatype": o.datatype, "shape": list(o.shape), "values": list(o.values)}
                        for o in dep.default_answer.outputs],
        },
        "canary": None if dep.canary is None else {
            "baseline": {"model": dep.canary.baseline.model, "version": dep.canary.baseline.version},
            "canary": {"model": dep.canary.canary.model, "version": dep.canary.canary.version},
            "stages": [list(s) for s in dep.canary.stages], "max_error_rate": dep.canary.max_error_rate,
            "max_p99_ms": dep.canary.max_p99_ms, "min_requests": dep.canary.min_requests,
            "status": dep.canary.status, "stage": dep.canary.stage, "reason": dep.canary.reason,
        },
    }


def deployment_from_dict(name: str, d: dict[str, Any]) -> Deployment:
    return Deployment(
        name=name,
        variants=tuple(Variant(Target(v["model"], v.get("version", "")), float(v["weight"]))
                       for v in d.get("variants", [])),
        sticky_key=d.get("sticky_key", ""),
        fallback=tuple(Target(t["model"], t.get("version", "")) for t in d.get("fallback", [])),
        link_timeout_us=int(d.get("link_timeout_us", 0)),
        shadow=Target(d["shadow"]["model"], d["shadow"].get("version", "")) if d.get("shadow") else None,
        shadow_tolerance=float(d.get("shadow_tolerance", 0.0)),
        canary=_canary_from_dict(d["canary"]) if d.get("canary") else None,
        promote_when_p_below=float(d.get("promote_when_p_below", 0.0)),
        promote_min_samples=int(d.get("promote_min_samples", 100)),
        default_answer=DefaultAnswer(
            tuple(DefaultOutput(o["name"], o["datatype"], tuple(o["shape"]), tuple(o["values"]))
                  for o in d["default_answer"]["outputs"]),
            batched=bool(d["default_answer"].get("batched", True)),
        ) if d.get("default_answer") else None,
    )


def _canary_from_dict(c: dict[str, Any]) -> Canary:
    return Canary(
        baseline=Target(c["baseline"]["model"], c["baseline"].get("version", "")),
        canary=Target(c["canary"]["model"], c["canary"].get("version", "")),
        stages=tuple((float(p), float(d)) for p, d in c["stages"]),
        max_error_rate=float(c["max_error_rate"]), max_p99_ms=float(c["max_p99_ms"]),
        min_requests=int(c["min_requests"]), status=c["status"], stage=int(c["stage"]), reason=c["reason"],
    )


class Watch(Protocol):
    """What the control plane asks of the served versions' watch (``infer.observability.watch.ModelWatch``).

    Dicts in the shapes of the dashboard's ``accuracy`` and ``drift`` items; FailedPrecondition (saying what to
    configure) where the version tracks no accuracy / detects no drift, NotFound where it is not watched.
    """

    def report_truth(self, request_id: str, labels: Sequence[str] | None,
                     values: Sequence[float] | None) -> tuple[str, str, int]: ...

    def performance(self, model: str, version: str, window_s: float) -> dict[str, Any]: ...

    def drift_report(self, model: str, version: str) -> dict[str, Any]: ...


_MAX_LABELS = 1_000_000  # ground-truth values in one report


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _served_version(model: str, version: str) -> str:
    """``version`` as the registry spells it ("01" is version 1); "" stays the newest."""
    if not model:
        raise InvalidArgument("model: required")
    if version and not (version.isascii() and version.isdigit() and len(version) <= _MAX_VERSION_DIGITS):
        raise InvalidArgument(f"version: {version[:40]!r} is not a served version (a decimal integer, or empty "
                              "for the newest)")
    return str(int(version)) if version else ""


class ControlPlane:
    """Registry, deployments and audit, persisted in one store that several server processes may share.

    A deployment takes traffic only once the store has it. Each process keeps the deployments in force in its
    router and polls the store's revisions (:meth:`sync`), so a change made through any process (or a control
    plane running apart, ``infer control``) reaches every process sharing the store within a poll.
    """

    def __init__(self, store: RegistryStore, artifacts: ArtifactStore, router: Router | None = None) -> None:
        self.store = store
        self.artifacts = artifacts
        self.router = router or Router()
        self.watch: Watch | None = None  # set by the app: ground truth, performance and drift of served versions
        self.revisions: dict[str, int] = {}
        self.server_id = f"{socket.gethostname()}:{os.getpid()}"
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer-lifecycle")
        for name, (spec, revision) in store.deployments_with_revisions().items():
            self._apply(name, spec, revision)

    async def set_deployment(self, dep: Deployment, actor: str, expected_revision: int | None = None) -> Deployment:
        """Persist, then put in force: a deployment the store did not keep never takes traffic.

        With ``expected_revision`` (0: must not exist yet) the write is a compare-and-set that raises Aborted when
        another writer changed the deployment first.
        """
        check_deployment(dep)
        revision = await asyncio.to_thread(
            self.store.put_deployment, dep.name, deployment_to_dict(dep), actor, expected_revision
        )
        if revision > self.revisions.get(dep.name, 0):
            self.router.put(dep)
            self.revisions[dep.name] = revision
        return dep

    async def sync(self) -> int:
        """Bring the router up to the store's deployments; returns how many changed."""
        stored = await asyncio.to_thread(self.store.deployment_revisions)
        changed = [n for n, r in stored.items() if r > self.revisions.get(n, 0)]
        gone = [n for n in self.revisions if n not in stored]
        if changed:
            specs = await asyncio.to_thread(self.store.deployments_with_revisions)
            for name in changed:
                if name in specs and specs[name][1] > self.revisions.get(name, 0):
                    self._apply(name, *specs[name])
        if gone:
            again = await asyncio.to_thread(self.store.deployment_revisions)  # not recreated meanwhile
            for name in gone:
                if name not in again:
                    self.router.remove(name)
                    self.revisions.pop(name, None)
        return len(changed) + len(gone)

    def _apply(self, name: str, spec: dict[str, Any], revision: int) -> None:
        """Put a stored deployment in force; one this version cannot read is logged and skipped, not fatal."""
        try:
            dep = deployment_from_dict(name, spec)
        except (InferError, KeyError, TypeError, ValueError) as e:
            log.error("stored deployment %s (revision %d) cannot be read, skipped: %s", name, revision, e)
            self.revisions[name] = revision  # not retried every poll; a new revision is
            return
        self.router.put(dep)
        self.revisions[name] = revision

    # ---- lifecycle of served versions (a VersionListener of the model registry) --------------

    async def version_ready(self, version: LoadedVersion) -> None:
        pass

    async def version_retiring(self, version: LoadedVersion) -> None:
        pass

    def version_state(self, version: LoadedVersion) -> None:
        """Record the move in the store, in order, off the event loop (a write never delays serving)."""
        history = version.lifecycle.history
        if history:
            t = history[-1]
            row = ServingTransition(version.name, version.version, t.at, t.source.value, t.target.value, t.reason,
                                    self.server_id)
        else:
            row = ServingTransition(version.name, version.version, time.time(), None, version.state.value,
                                    "load started", self.server_id)
        self._writer.submit(self._write_serving, row)

    def _write_serving(self, row: ServingTransition) -> None:
        try:
            self.store.record_serving_transitions([row])
        except Exception:  # the store being down must not stop serving; the move is still in memory and logged
            log.exception("cannot record %s version %d -> %s", row.model, row.version, row.target)

    async def serving_history(self, model: str, version: int, limit: int) -> list[ServingTransition]:
        if not model:
            raise InvalidArgument("model: required")
        await asyncio.get_running_loop().run_in_executor(self._writer, lambda: None)  # writes queued before this
        return await asyncio.to_thread(self.store.serving_history, model, version, limit)

    def get_deployment(self, name: str) -> Deployment:
        dep = self.router.get(name)
        if dep is None:
            raise NotFound(f"deployment '{name}' does not exist")
        return dep

    def report_outcome(self, request_id: str, value: float) -> tuple[str, Target]:
        if not request_id:
            raise InvalidArgument("request_id: required (the id the inference request carried)")
        if not math.isfinite(value):
            raise InvalidArgument("value: must be a finite number")
        return self.router.report_outcome(request_id, value)

    # ---- online accuracy and drift (through the watch) ---------------------------------------

    def _watch(self, what: str) -> Watch:
        if self.watch is None:
            raise FailedPrecondition(f"{what}: this server watches no served models (a control plane running "
                                     "apart from the servers has none)")
        return self.watch

    def report_ground_truth(self, request_id: str, labels: Sequence[str],
                            values: Sequence[float]) -> tuple[str, str, int]:
        """Credit ground truth to the version that answered ``request_id``: (model, version, rows)."""
        if not request_id:
            raise InvalidArgument("request_id: required (the id the inference request carried)")
        if len(labels) + len(values) > _MAX_LABELS:
            raise InvalidArgument(f"{'labels' if labels else 'values'}: more than {_MAX_LABELS} in one report")
        check_truth(labels, values)  # the report's fields are named before its id is looked up
        return self._watch("ReportGroundTruth").report_truth(request_id, list(labels) or None,
                                                             list(values) or None)

    def performance(self, model: str, version: str, window_s: float) -> dict[str, Any]:
        """The version's online accuracy over the last ``window_s`` seconds (0: since it was loaded)."""
        version = _served_version(model, version)
        if not (math.isfinite(window_s) and window_s >= 0):
            raise InvalidArgument("window_s: must be a finite number >= 0 (0 = since the version was loaded)")
        return self._watch("GetModelPerformance").performance(model, version, window_s)

    def drift_report(self, model: str, version: str) -> dict[str, Any]:
        """The version's latest drift evaluation."""
        version = _served_version(model, version)
        return self._watch("GetDrift").drift_report(model, version)

    async def experiment(self, name: str) -> tuple[list[tuple[Target, VariantStats]], Comparison]:
        """Each variant's statistics, in the deployment's order, and the first two compared.

        The statistics are copied here, on the event loop; the comparison runs in a worker thread, since its first
        use imports scipy (seconds during which the loop would serve nothing).
        """
        dep = self.get_deployment(name)
        if not dep.variants:
            raise InvalidArgument(f"deployment '{name}' splits no traffic between variants")
        rows = [(v.target, s) for v, s in self.router.variant_stats_of(dep, dep.variants)]
        if len(rows) < 2:
            return rows, Comparison("none", 0, 0, 0, 1.0)
        return rows, await asyncio.to_thread(compare, rows[0][1], rows[1][1])

    async def delete_deployment(self, name: str, actor: str, expected_revision: int | None = None) -> None:
        if not await asyncio.to_thread(self.store.delete_deployment, name, actor, expected_revision):
            raise NotFound(f"deployment '{name}' does not exist")
        self.router.remove(name)
        self.revisions.pop(name, None)

    async def register(
        self,
        record: ModelVersionRecord,
        artifact: bytes | Path,
        *,
        artifact_name: str | None,
        actor: str,
        reason: str,
    ) -> ModelVersionRecord:
        """Store the artifact (content-addressed) and register the version that points at it."""
        if isinstance(artifact, Path) and not _is_file(artifact):
            raise InvalidArgument(f"path: {artifact} is not a file the server can read")
        if isinstance(artifact, bytes) and not artifact:
            raise InvalidArgument("artifact: give the model file's content or a path")

        def work() -> ModelVersionRecord:
            ref = self.artifacts.put(artifact, name=artifact_name)
            stored = replace(record, artifact_uri=ref.uri, artifact_sha256=ref.sha256)
            return self.store.register(stored, actor=actor, reason=reason or "registered")

        return await asyncio.to_thread(work)

    async def get(self, model_id: str, version: str) -> ModelVersionRecord:
        return await asyncio.to_thread(self.store.get, model_id, version)

    async def search(
        self, *, metric_filter: tuple[str, str, float] | None = None, **filters: str | None
    ) -> list[ModelVersionRecord]:
        clean = {k: v or None for k, v in filters.items()}
        return await asyncio.to_thread(lambda: self.store.list(metric_filter=metric_filter, **clean))

    async def compare(self, model_id: str, a: str, b: str) -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(self.store.compare, model_id, a, b)

    async def transition(
        self, model_id: str, version: str, source: str, target: str, reason: str, actor: str
    ) -> ModelVersionRecord:
        def work() -> ModelVersionRecord:
            self.store.record_transition(model_id, version, source, target, reason, actor)
            return self.store.get(model_id, version)

        return await asyncio.to_thread(work)

    async def history(self, model_id: str, version: str) -> list[TransitionRecord]:
        return await asyncio.to_thread(self.store.history, model_id, version)

    async def audit_log(self, limit: int) -> list[AuditEntry]:
        return await asyncio.to_thread(self.store.audit_log, limit)

    def close(self) -> None:
        self._writer.shutdown(wait=True)  # every recorded move is written before the store closes
        self.store.close()


