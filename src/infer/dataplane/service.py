"""DataPlane: what the V2 protocol asks of a server, knowing nothing of gRPC."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from infer import __version__
from infer.config.model import ModelConfig
from infer.config.pbtxt import config_from_json
from infer.core.stats import VersionStats
from infer.core.types import DataType, InferRequest, InferResponse, Tensor, TensorSpec
from infer.dataplane.cache import ResponseCache, cache_key
from infer.dataplane.validate import reserved_parameters, validate_inputs, validate_outputs
from infer.errors import DeadlineExceeded, InferError, InvalidArgument, ModelExecutionError, NotFound, Unavailable
from infer.observability.alerts import AlertManager, alerts_from_response, flagged_rows
from infer.observability.watch import ModelWatch
from infer.registry.lifecycle import ModelState
from infer.registry.registry import IndexEntry, LoadedVersion, ModelRegistry
from infer.routing.policies import Deployment, Target
from infer.routing.router import MAX_SHADOWS_IN_FLIGHT, Router, ShadowStats
from infer.runtimes.ensemble import EnsembleStepPlan
from infer.scheduling.dispatch import Dispatcher

__all__ = ["DataPlane", "ModelMetadata", "ServerMetadata"]

Array = npt.NDArray[np.generic]

MAX_DEFAULT_ROWS = 65536
MAX_DEFAULT_ELEMENTS = 1 << 22  # values a default answer is repeated to (rows times values a row): 32 MiB of FP64
_MAX_VERSION_DIGITS = 18  # every version that fits an int64


def _version(name: str, version: str) -> str:
    """``version`` when it can name one ('' for the newest, or ASCII decimal digits that fit an int64).

    Anything else names no version: NOT_FOUND, before the registry turns it into an int (``'\u00b2'.isdigit()`` is
    True but ``int('\u00b2')`` raises, ``int('\u0661')`` is 1, and a string of over 4300 digits is refused by ``int``).
    """
    if version and not (version.isascii() and version.isdigit() and len(version) <= _MAX_VERSION_DIGITS):
        raise NotFound(f"model '{name[:200]}' has no version '{version[:40]}' (versions are decimal integers)")
    return version


# what makes a deployment try its next target: the model failed, timed out, or is not there
_FALLBACK_ON = (ModelExecutionError, DeadlineExceeded, Unavailable, NotFound)

EXTENSIONS = (
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "statistics",
    "health",
)


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class DataPlane:
    def __init__(
        self,
        registry: ModelRegistry,
        dispatcher: Dispatcher,
        *,
        cache: ResponseCache | None = None,
        router: Router | None = None,
        alerts: AlertManager | None = None,
        watch: ModelWatch | None = None,
    ) -> None:
        self.registry = registry
        self.alerts = alerts
        self.watch = watch
        self.cache = cache
        self.router = router
        self._shadow_tasks: set[asyncio.Future[None]] = set()
        self.dispatcher = dispatcher
        self.started = False
        self.stopping = False

    # ---- health and metadata -------------------------------------------------------------

    def live(self) -> bool:
        return not self.stopping

    def ready(self) -> bool:
        return self.started and not self.stopping and self.registry.all_ready()

    def _resolve(self, name: str, version: str) -> tuple[str, str]:
        """A deployment's name stands for its first target in metadata, config and readiness calls."""
        dep = self.router.get(name) if self.router is not None and not version else None
        if dep is None:
            return name, version
        targets = ([v.target for v in (dep.canary.variants() if dep.canary else dep.variants)]
                   + list(dep.fallback))
        ready = [t for t in targets if self._ready(t.model, t.version)]
        first = (ready or targets)[0]
        return first.model, first.version

    def _get(self, name: str, version: str = "") -> LoadedVersion:
        return self.registry.get(name, _version(name, version))

    def _ready(self, name: str, version: str) -> bool:
        try:
            _version(name, version)
        except NotFound:
            return False
        return self.registry.ready(name, version)

    def model_ready(self, name: str, version: str = "") -> bool:
        return not self.stopping and self._ready(*self._resolve(name, version))

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata("infer", __version__, EXTENSIONS)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        lv = self._get(*self._resolve(name, version))
        versions = [e.version for e in self.registry.index() if e.name == lv.name and e.state == "READY"]
        platform = lv.config.platform or lv.config.backend
        return ModelMetadata(name, versions, platform, lv.inputs, lv.outputs)

    def model_config(self, name: str, version: str = "") -> ModelConfig:
        return self._get(*self._resolve(name, version)).config

    # ---- inference -----------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        if self.stopping:
            raise Unavailable("server is shutting down")
        resp = await self._infer_routed(request)
        if self.alerts is not None and resp.outputs and any(t.name == "severity" for t in resp.outputs):
            self._alert(request, resp)
        return resp

    def _alert(self, request: InferRequest, resp: InferResponse) -> None:
        """Anomaly answers above a sink's severity go to the alert sinks (queued; never delays the answer)."""
        assert self.alerts is not None
        outputs = {t.name: t.data for t in resp.outputs}
        if not {"score", "anomaly_type", "top_features"} <= outputs.keys():
            return
        severity = outputs["severity"].reshape(-1)
        if not len(flagged_rows(severity)):
            return  # the usual case: nothing to alert, no user names decoded
        rows = len(severity)
        events = {t.name: t.data for t in request.inputs if len(t.data) == rows}
        user = events.get("user")
        keys = None if user is None else [v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                                          for v in user.reshape(-1)]
        try:
            found = alerts_from_response(resp.model_name, resp.model_version, outputs, request.id,
                                         keys if keys is not None and len(keys) == rows else None, events=events)
        except InferError:
            return
        for alert in found:
            self.alerts.submit(alert)

    async def _infer_routed(self, request: InferRequest) -> InferResponse:
        routed = self.router.route(request) if self.router is not None else None
        if routed is None:
            return await self._infer_one(request, self._get(request.model_name, request.model_version), 0)
        dep, targets = routed
        assert self.router is not None
        error: InferError = Unavailable(f"deployment '{dep.name}': no target could answer")
        for depth, target in enumerate(targets):
            last = depth == len(targets) - 1
            t0 = time.monotonic()
            try:
                lv = self._get(target.model, target.version)
                if not last and lv.state is ModelState.DEGRADED:
                    continue
                budget = 0 if last else dep.link_timeout_us  # the last link has no next to leave time for
                resp = await self._infer_one(request, lv, budget)
            except _FALLBACK_ON as e:
                self.router.observe(dep.name, target, False, time.monotonic() - t0)
                error = e
                continue
            self.router.observe(dep.name, target, True, time.monotonic() - t0, request.id)
            resp.parameters.update({"infer.deployment": dep.name, "infer.target": target.label(),
                                    "infer.fallback_depth": depth})
            if dep.shadow is not None:
                self._send_shadow(dep, request, resp)
            return resp
        if dep.default_answer is not None:
            self.router.observe_default(dep.name)
            return self._default_response(dep, request, len(targets))
        raise error

    @staticmethod
    def _default_response(dep: Deployment, request: InferRequest, depth: int) -> InferResponse:
        """The chain's last link: the deployment's fixed answer, shaped to the request's batch."""
        answer = dep.default_answer
        assert answer is not None
        rows = None
        if answer.batched:
            first = request.inputs[0].data if request.inputs else None
            rows = int(first.shape[0]) if first is not None and first.ndim else 1
            if rows > MAX_DEFAULT_ROWS:  # no target checked this request's batch size
                raise InvalidArgument(f"input '{request.inputs[0].name}': batch size {rows} is over the "
                                      f"{MAX_DEFAULT_ROWS} rows a default answer is given for")
            per_row = sum(len(o.values) for o in answer.outputs)
            if rows > 1 and rows * per_row > MAX_DEFAULT_ELEMENTS:  # a zero-width input costs nothing to send
                raise InvalidArgument(f"input '{request.inputs[0].name}': batch size {rows} times the "
                                      f"{per_row} values of a default answer's row is over {MAX_DEFAULT_ELEMENTS}")
        wanted = set(request.outputs)
        outputs = [Tensor(o.name, DataType(o.datatype), o.array(rows))
                   for o in answer.outputs if not wanted or o.name in wanted]
        return InferResponse(model_name=dep.name, model_version="default", id=request.id, outputs=outputs,
                             parameters={"infer.deployment": dep.name, "infer.target": "default",
                                         "infer.fallback_depth": depth})

    def _send_shadow(self, dep: Deployment, request: InferRequest, live: InferResponse) -> None:
        """A copy of the request to the shadow target, compared when it answers; never returned."""
        assert self.router is not None and dep.shadow is not None
        stats = self.router.shadow_stats.setdefault(dep.name, ShadowStats())
        if self.router.shadows_in_flight >= MAX_SHADOWS_IN_FLIGHT:
            stats.skipped += 1
            return
        self.router.shadows_in_flight += 1
        task = asyncio.ensure_future(self._shadow(dep, dep.shadow, request, live, stats))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, dep: Deployment, target: Target, request: InferRequest, live: InferResponse,
                      stats: ShadowStats) -> None:
        assert self.router is not None
        try:
            shadow = await self._infer_one(request, self._get(target.model, target.version), 0)
        except InferError:
            stats.errors += 1
        else:
            stats.compare({t.name: t.data for t in live.outputs}, {t.name: t.data for t in shadow.outputs},
                          dep.shadow_tolerance)
        finally:
            self.router.shadows_in_flight -= 1

    async def _infer_one(self, request: InferRequest, lv: LoadedVersion, link_timeout_us: int,
                         step: bool = False) -> InferResponse:
        rc = lv.config.response_cache
        cache = self.cache if rc is not None and rc.enable else None
        key = b""
        try:
            inputs = validate_inputs(lv, request)
            validate_outputs(lv, request.outputs)
            priority, timeout_us = reserved_parameters(request.parameters)
            if link_timeout_us:
                timeout_us = min(timeout_us, link_timeout_us) if timeout_us else link_timeout_us
            if cache is not None:
                t0 = time.perf_counter_ns()
                key = cache_key(lv.serial, inputs)
                hit = cache.get(key)
                if hit is not None:
                    ns = time.perf_counter_ns() - t0
                    lv.stats.cache_hit.add(ns)
                    lv.stats.success.add(ns)
                    if lv.watched is not None and self.watch is not None:
                        self.watch.observe(lv.watched, request.id, inputs, hit, step)
                    return self._response(lv, request, hit)
            if lv.runtime.composite:
                fut = None
            else:
                if lv.runtime.prepare_in_thread:  # e.g. image decoding: not on the event loop
                    await asyncio.get_running_loop().run_in_executor(None, lv.runtime.prepare, inputs)
                else:
                    lv.runtime.prepare(inputs)
                sched = self.dispatcher.scheduler(lv)
                fut = sched.enqueue(inputs, priority=priority, timeout_us=timeout_us, deadline=request.deadline)
        except InferError as e:
            lv.stats.fail.add(0)
            self.dispatcher.failure(lv, e)
            raise
        if fut is None:
            deadline = request.deadline
            if timeout_us:  # the ensemble's steps share this request's budget
                budget_end = time.monotonic() + timeout_us / 1e6
                deadline = budget_end if deadline is None else min(deadline, budget_end)
            outputs = await self._run_ensemble(lv, request, inputs, deadline)
        else:
            outputs = fut.result() if fut.done() else await fut
        if cache is not None:
            t1 = time.perf_counter_ns()
            cache.put(key, lv.serial, outputs, float(lv.config.parameter("infer.cache_ttl_s", "60")))
            lv.stats.cache_miss.add(time.perf_counter_ns() - t1)
        if lv.watched is not None and self.watch is not None:
            self.watch.observe(lv.watched, request.id, inputs, outputs, step)
        return self._response(lv, request, outputs)

    async def _run_ensemble(
        self, lv: LoadedVersion, request: InferRequest, inputs: dict[str, Array], deadline: float | None
    ) -> dict[str, Array]:
        """Run an ensemble's steps, each through its model's scheduler, launching each as soon as its inputs
        exist; the ensemble's statistics count the whole pipeline."""
        plan = getattr(lv.runtime, "plan", None)
        if plan is None:
            raise Unavailable(f"model '{lv.name}' has no ensemble plan")
        t0 = time.perf_counter_ns()
        tensors: dict[str, Array] = dict(inputs)
        pending = list(plan.steps)
        try:
            while pending:
                ready = [s for s in pending if all(t in tensors for _, t in s.inputs)]
                if not ready:  # only an absent optional ensemble input can leave a step without its inputs
                    raise InvalidArgument(f"model '{lv.name}': step '{pending[0].model}' lacks an input: "
                                          f"{[t for _, t in pending[0].inputs if t not in tensors]}")
                results = await asyncio.gather(*(self._ensemble_step(s, tensors, request, deadline) for s in ready))
                for step, outs in zip(ready, results, strict=True):
                    for name, tensor in step.outputs:
                        tensors[tensor] = outs[name]
                pending = [s for s in pending if s not in ready]
        except InferError as e:
            lv.stats.fail.add(time.perf_counter_ns() - t0)
            self.dispatcher.failure(lv, e)
            raise
        ns = time.perf_counter_ns() - t0
        lv.stats.success.add(ns)
        self.dispatcher.success(lv, ns / 1e9)
        return {name: tensors[name] for name in plan.outputs}

    async def _ensemble_step(self, step: EnsembleStepPlan, tensors: dict[str, Array], request: InferRequest,
                             deadline: float | None) -> dict[str, Array]:
        sub_lv = self._get(step.model, step.version)  # the registry re-plans ensembles when a step reloads
        specs = sub_lv.input_specs
        sub = InferRequest(
            model_name=step.model, model_version=step.version, id=request.id,
            inputs=[Tensor(name, specs[name].datatype, tensors[tensor]) for name, tensor in step.inputs],
            outputs=[name for name, _ in step.outputs], parameters=request.parameters, deadline=deadline,
        )
        resp = await self._infer_one(sub, sub_lv, 0, step=True)
        return {t.name: t.data for t in resp.outputs}

    @staticmethod
    def _response(lv: LoadedVersion, request: InferRequest, outputs: dict[str, Array]) -> InferResponse:
        names = request.outputs or lv.output_names
        specs = lv.output_specs
        return InferResponse(
            model_name=lv.name,
            model_version=str(lv.version),
            id=request.id,
            outputs=[Tensor(n, specs[n].datatype, outputs[n]) for n in names],
        )

    # ---- registry events (a VersionListener) ------------------------------------------------

    async def version_ready(self, version: LoadedVersion) -> None:
        pass

    async def version_retiring(self, version: LoadedVersion) -> None:
        if self.cache is not None:
            self.cache.drop_version(version.serial)

    def version_state(self, version: LoadedVersion) -> None:
        pass

    # ---- statistics and repository -------------------------------------------------------

    def statistics(self, name: str = "", version: str = "") -> list[tuple[str, str, VersionStats]]:
        if name:
            if version:
                lv = self._get(name, version)
                return [(lv.name, str(lv.version), lv.stats)]
            found = [v for v in self.registry.loaded() if v.name == name]
            if not found:
                self.registry.get(name)  # raises NOT_FOUND / UNAVAILABLE with the right message
            return [(v.name, str(v.version), v.stats) for v in sorted(found, key=lambda v: v.version)]
        return [(v.name, str(v.version), v.stats) for v in self.registry.loaded()]

    def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        return self.registry.index(ready_only)

    async def load_model(self, name: str, config_json: str = "") -> None:
        override = config_from_json(config_json, f"model '{name}' config parameter") if config_json else None
        await self.registry.load(name, override)

    async def unload_model(self, name: str) -> None:
        if name not in {e.name for e in self.registry.index()}:
            raise NotFound(f"model '{name}' is not known")
        await self.registry.unload(name)
