"""What is loaded: model versions with their runtimes, lifecycle and statistics.

Loading a model loads every new version before retiring any old one, so requests never see
a gap; a version that fails keeps the old ones serving. Higher layers (the schedulers) hear of
versions through :class:`VersionListener`, so this module never imports them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from infer.config.model import ModelConfig
from infer.core.stats import VersionStats
from infer.core.types import DataType, TensorSpec
from infer.errors import InferError, ModelConfigError, NotFound, Unavailable
from infer.observability.watch import WatchedVersion
from infer.observability.windows import rss_bytes
from infer.registry.complete import complete_config, served_specs
from infer.registry.lifecycle import ModelState, VersionLifecycle
from infer.registry.repository import ModelRepository
from infer.runtimes.base import Runtime, RuntimeOptions, runtime_for
from infer.runtimes.ensemble import EnsembleRuntime, plan_ensemble

__all__ = ["IndexEntry", "LoadedVersion", "ModelRegistry", "VersionListener"]

log = logging.getLogger(__name__)
_SERIALS = itertools.count(1)


@dataclass(eq=False)
class LoadedVersion:
    name: str
    version: int
    config: ModelConfig
    runtime: Runtime
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    lifecycle: VersionLifecycle = field(default_factory=VersionLifecycle)
    stats: VersionStats = field(default_factory=VersionStats)
    warmup_s: float = 0.0  # best batch-1 time seen at warm-up (seeds the scheduler's latency curve)
    memory_bytes: int = 0  # process RSS growth across the load (approximate when loads overlap)
    drift_hold: str = ""  # why the version stays DEGRADED while its inputs drift (set by the monitoring)
    watched: WatchedVersion | None = None  # set when the monitoring must see its answers
    serial: int = field(default_factory=lambda: next(_SERIALS))  # unique per load, never reused
    input_specs: dict[str, TensorSpec] = field(init=False)  # by name, for checking requests
    output_specs: dict[str, TensorSpec] = field(init=False)  # by name, for building responses
    output_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.input_specs = {t.name: t for t in self.inputs}
        self.output_specs = {t.name: t for t in self.outputs}
        self.output_names = [t.name for t in self.outputs]

    @property
    def state(self) -> ModelState:
        return self.lifecycle.state

    @property
    def ready(self) -> bool:
        return self.lifecycle.state.serving


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str


class VersionListener(Protocol):
    async def version_ready(self, version: LoadedVersion) -> None: ...

    async def version_retiring(self, version: LoadedVersion) -> None: ...

    def version_state(self, version: LoadedVersion) -> None: ...


@dataclass
class _Model:
    versions: dict[int, LoadedVersion] = field(default_factory=dict)
    newest: LoadedVersion | None = None  # the highest version number, checked for readiness per request
    failed: dict[int, str] = field(default_factory=dict)
    config_error: str = ""  # its config could not be read at the last load: not ready, listed with the reason
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelRegistry:
    def __init__(
        self,
        repository: ModelRepository,
        *,
        options: RuntimeOptions | None = None,
        default_max_batch_size: int = 64,
        strict: bool = False,
    ) -> None:
        self.repository = repository
        self._options = options or RuntimeOptions()
        self._default_mbs = default_max_batch_size
        self._strict = strict
        self._models: dict[str, _Model] = {}
        self._listeners: list[VersionListener] = []

    def add_listener(self, listener: VersionListener) -> None:
        self._listeners.append(listener)

    # ---- reading ---------------------------------------------------------------------------

    def get(self, name: str, version: str = "") -> LoadedVersion:
        """The version a request should use; '' means the newest ready one."""
        model = self._models.get(name)
        if model is None or not model.versions:
            if model is None and not self._on_disk(name):
                raise NotFound(f"model '{name}' is not known")
            raise Unavailable(f"model '{name}' is not loaded")
        if not version:
            newest = model.newest
            if newest is not None and newest.ready:
                return newest
            for v in sorted(model.versions, reverse=True):
                lv = model.versions[v]
                if lv.ready:
                    return lv
            raise Unavailable(f"model '{name}' has no ready version")
        if not version.isdigit():
            raise NotFound(f"model '{name}' has no version '{version[:40]}' (versions are integers)")
        lv_ = model.versions.get(int(version))
        if lv_ is None:
            raise NotFound(f"model '{name}' version {version} is not loaded")
        if not lv_.ready:
            raise Unavailable(f"model '{name}' version {version} is {lv_.state.value}")
        return lv_

    def loaded(self) -> list[LoadedVersion]:
        return [lv for m in self._models.values() for lv in m.versions.values()]

    def ready(self, name: str, version: str = "") -> bool:
        try:
            lv = self.get(name, version)
        except InferError:
            return False
        if isinstance(lv.runtime, EnsembleRuntime):  # an ensemble is ready when its plan and its steps are
            plan = lv.runtime.plan
            return plan is not None and all(self.ready(s.model, s.version) for s in plan.steps)
        return True

    def _replan_dependents(self, name: str) -> None:
        """After ``name`` (re)loaded: check again the ensembles that call it, whose plan may no longer fit."""
        for model in self._models.values():
            for lv in model.versions.values():
                rt = lv.runtime
                steps = lv.config.ensemble_scheduling.step if lv.config.ensemble_scheduling else []
                if not isinstance(rt, EnsembleRuntime) or all(s.model_name != name for s in steps):
                    continue
                try:
                    rt.plan = plan_ensemble(lv.config, self._specs)
                except InferError as e:
                    rt.plan = None
                    log.error("ensemble %s no longer fits its step %s: %s", lv.name, name, e.message)

    def all_ready(self) -> bool:
        """Every model that should be loaded has a serving version."""
        return all(any(lv.ready for lv in m.versions.values()) for m in self._models.values())

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        out: list[IndexEntry] = []
        for name in sorted(set(self._names_on_disk()) | set(self._models)):
            model = self._models.get(name)
            if model is not None and model.config_error and not model.versions:
                out.append(IndexEntry(name, "", "UNAVAILABLE", model.config_error))
                continue
            if model is None or (not model.versions and not model.failed):
                if not ready_only:
                    out.append(IndexEntry(name, "", "UNAVAILABLE", "unloaded"))
                continue
            for v, lv in sorted(model.versions.items()):
                if lv.ready or not ready_only:
                    reason = lv.lifecycle.reason
                    if lv.state is ModelState.DEGRADED:  # Triton has no such state: say it in the reason
                        reason = f"DEGRADED: {reason}"
                    out.append(IndexEntry(name, str(v), lv.state.triton_state, reason))
            if not ready_only:
                for v, why in sorted(model.failed.items()):
                    out.append(IndexEntry(name, str(v), "UNAVAILABLE", why))
        return out

    def _on_disk(self, name: str) -> bool:
        """One stat, not a directory listing: unknown names are the cheap path of a bad request."""
        try:
            self.repository.model_dir(name)
        except InferError:
            return False
        return True

    def _names_on_disk(self) -> list[str]:
        try:
            return self.repository.names()
        except OSError:
            return []

    # ---- loading ---------------------------------------------------------------------------

    async def load_all(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """Load the given (default: all) models; returns failures by model name."""
        failures: dict[str, str] = {}
        for name in sorted(list(names) if names is not None else self.repository.names(), key=self._is_ensemble):
            try:
                await self.load(name)
            except InferError as e:
                failures[name] = e.message
                log.error("model %s failed to load: %s", name, e.message)
        return failures

    async def load(self, name: str, override: ModelConfig | None = None, _chain: tuple[str, ...] = ()) -> None:
        """Load (or reload) a model's versions as its config and version policy say.

        An ensemble's composing models are loaded first when they are not loaded yet.
        """
        self.repository.model_dir(name)  # NOT_FOUND / INVALID_ARGUMENT before anything else
        if name in _chain:
            raise ModelConfigError(f"model '{name}': ensembles compose each other in a cycle: {' -> '.join(_chain)}")
        try:
            first = override if override is not None else self.repository.read_config(name)
        except InferError as e:
            # recorded like a model whose files fail: the server is not ready (Triton's strict readiness) and the
            # index says why, instead of serving as if the model had never been asked for
            entry = self._models.setdefault(name, _Model())
            if not entry.versions:  # a failed reload keeps the versions that were serving
                entry.config_error = e.message
            raise
        if first.ensemble_scheduling is not None:
            for step in first.ensemble_scheduling.step:
                known = self._models.get(step.model_name)
                if (known is None or not known.versions) and self._on_disk(step.model_name):
                    await self.load(step.model_name, _chain=(*_chain, name))
        model = self._models.setdefault(name, _Model())
        async with model.lock:
            config = override if override is not None else self.repository.read_config(name)
            available = self.repository.versions(name)
            wanted = config.version_policy.select(available)
            if not wanted:
                raise ModelConfigError(f"model '{name}': no version directory matches its version policy")
            fresh: dict[int, LoadedVersion] = {}
            model.failed = {}
            model.config_error = ""
            for v in wanted:
                try:
                    fresh[v] = await self._load_version(name, v, config)
                except InferError as e:
                    model.failed[v] = e.message
            if not fresh:
                raise ModelConfigError(
                    f"model '{name}': no version could be loaded: "
                    + "; ".join(f"{v}: {m}" for v, m in model.failed.items())
                )
            old = model.versions
            for v in model.failed:  # a failed reload keeps the version that was serving
                if v in old:
                    fresh[v] = old[v]
            model.versions = fresh
            model.newest = fresh[max(fresh)]
            self._replan_dependents(name)  # before any await: no request meets a plan that no longer fits
            for lv in old.values():
                if fresh.get(lv.version) is not lv:
                    await self._retire(lv)

    async def unload(self, name: str) -> None:
        model = self._models.get(name)
        if model is None:
            self.repository.model_dir(name)
            return
        async with model.lock:
            versions, model.versions = model.versions, {}
            model.newest = None
            for lv in versions.values():
                await self._retire(lv)
            model.failed = {}
            self._models.pop(name, None)

    async def close(self) -> None:
        for name in list(self._models):
            await self.unload(name)

    async def _load_version(self, name: str, version: int, config: ModelConfig) -> LoadedVersion:
        if not (config.platform or config.backend):
            platform = self.repository.guess_platform(name, [version])
            config = config.model_copy(update={"platform": platform})
        cls = runtime_for(config.model_copy(update={"name": name}))
        if cls.composite:
            path = self.repository.version_dir(name, version)
        else:
            path = self.repository.find_model_file(name, version, config.default_model_filename or cls.default_filename)
        log.info("model %s version %d: loading %s", name, version, path)  # as Triton says "loading: name:version"
        rss0 = rss_bytes()
        runtime = await asyncio.to_thread(cls.open, path, config.model_copy(update={"name": name}), self._options)
        try:
            done = complete_config(
                config, runtime.signature(), name=name,
                default_max_batch_size=self._default_mbs, strict=self._strict,
            )
        except InferError:
            runtime.close()
            raise
        ins, outs = served_specs(done)
        if isinstance(runtime, EnsembleRuntime):
            try:
                runtime.plan = plan_ensemble(done, self._specs)
            except InferError:
                runtime.close()
                raise
        lv = LoadedVersion(name, version, done, runtime, ins, outs)
        self._notify_state(lv)
        self._move(lv, ModelState.WARM, "loaded " + runtime.describe())
        try:
            lv.warmup_s = 0.0 if cls.composite else await asyncio.to_thread(_warm_up, lv)
        except Exception as e:
            self._move(lv, ModelState.ERROR, f"warm-up failed: {e}")
            runtime.close()
            raise ModelConfigError(f"model '{name}' version {version}: warm-up failed: {e}") from None
        lv.memory_bytes = max(0, rss_bytes() - rss0)
        for listener in self._listeners:
            await listener.version_ready(lv)
        self._move(lv, ModelState.ACTIVE, "warm-up passed")
        log.info("model %s version %d is ACTIVE (%s)", name, version, runtime.describe())
        return lv

    async def _retire(self, lv: LoadedVersion) -> None:
        if lv.state in (ModelState.UNLOADING, ModelState.UNLOADED):
            return
        self._move(lv, ModelState.UNLOADING, "unloading")
        for listener in self._listeners:
            await listener.version_retiring(lv)
        lv.runtime.close()
        self._move(lv, ModelState.UNLOADED, "unloaded")

    def _is_ensemble(self, name: str) -> bool:
        """Ensembles load after the models they compose (which they would otherwise load themselves)."""
        try:
            return self.repository.read_config(name).ensemble_scheduling is not None
        except InferError:
            return False

    def _specs(self, name: str, version: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        lv = self.get(name, version)
        return lv.inputs, lv.outputs

    def set_health(self, lv: LoadedVersion, state: ModelState, reason: str) -> None:
        """ACTIVE <-> DEGRADED as the version's error rate says (other moves belong to loading)."""
        if {lv.state, state} != {ModelState.ACTIVE, ModelState.DEGRADED}:
            return
        if state is ModelState.ACTIVE and lv.drift_hold:
            return  # its inputs still drift: the monitoring restores it when they stop
        log.warning("model %s version %d is %s: %s", lv.name, lv.version, state.value, reason)
        self._move(lv, state, reason)

    def _move(self, lv: LoadedVersion, state: ModelState, reason: str) -> None:
        lv.lifecycle.move(state, reason)
        self._notify_state(lv)

    def _notify_state(self, lv: LoadedVersion) -> None:
        for listener in self._listeners:
            listener.version_state(lv)


def _warm_up(lv: LoadedVersion, runs: int = 3) -> float:
    """Real predictions on zeros (batch 1, variable dims 1) before the version takes traffic.

    Returns the fastest run's seconds (0 when skipped).
    """
    if lv.config.parameter("infer.warmup", "true").lower() == "false":
        return 0.0
    if any(t.datatype is DataType.BYTES for t in lv.inputs):
        return 0.0
    feeds = {
        t.name: np.zeros([d if d >= 0 else 1 for d in t.shape], dtype=t.datatype.numpy) for t in lv.inputs
    }
    names = [t.name for t in lv.outputs]
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        outs = lv.runtime.run(feeds, names)
        best = min(best, time.perf_counter() - t0)
    for t in lv.outputs:
        if t.name not in outs:
            raise ModelConfigError(f"output '{t.name}' missing from the model's result")
    return best
