"""Ensembles (Triton's ``platform: "ensemble"``): a pipeline of other models wired by tensor names.

An ensemble has no model file and computes nothing itself. Its config lists steps; each step calls a
composing model (through that model's own scheduler, so every stage is batched across requests), taking
its inputs from the ensemble's inputs or earlier steps' outputs::

    platform: "ensemble"
    max_batch_size: 64
    input  [{ name: "events" data_type: TYPE_FP32 dims: [8] }]
    output [{ name: "score" data_type: TYPE_FP32 dims: [1] }]
    ensemble_scheduling { step [
      { model_name: "features" model_version: -1
        input_map  { key: "raw"  value: "events" }      # features' input <- ensemble tensor
        output_map { key: "out"  value: "feats" } },    # features' output -> ensemble tensor
      { model_name: "detector" model_version: -1
        input_map  { key: "x" value: "feats" }
        output_map { key: "score" value: "score" } } ] }

:func:`plan_ensemble` checks the wiring when the ensemble loads (every step model loaded, every name known,
datatypes agree, each tensor produced once, no cycle, every output produced) and orders the steps; the data
plane runs the plan, launching each step as soon as its inputs exist (independent steps run concurrently).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from infer.config.model import ModelConfig
from infer.core.types import TensorSpec
from infer.errors import ModelConfigError, NotFound, Unavailable
from infer.runtimes.base import Array, Runtime, RuntimeOptions, Signature

__all__ = ["EnsemblePlan", "EnsembleRuntime", "EnsembleStepPlan", "plan_ensemble"]

# (model name, version "" = newest) -> (inputs, outputs) as served (batch dim included when batching)
SpecLookup = Callable[[str, str], tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]]


@dataclass(frozen=True, slots=True)
class EnsembleStepPlan:
    model: str
    version: str  # "" = the newest ready version
    inputs: tuple[tuple[str, str], ...]  # (step model input, ensemble tensor)
    outputs: tuple[tuple[str, str], ...]  # (step model output, ensemble tensor)


@dataclass(frozen=True, slots=True)
class EnsemblePlan:
    steps: tuple[EnsembleStepPlan, ...]  # in an order where every step comes after the steps it needs
    outputs: tuple[str, ...]  # the ensemble's outputs


class EnsembleRuntime(Runtime):
    """Holds an ensemble's signature and, once its composing models are checked, its plan."""

    names = ("ensemble",)
    composite: ClassVar[bool] = True

    def __init__(self, config: ModelConfig) -> None:
        lead = (-1,) if config.max_batch_size > 0 else ()
        self._sig = Signature(
            tuple(TensorSpec(t.name, t.datatype, lead + tuple(t.dims)) for t in config.input),
            tuple(TensorSpec(t.name, t.datatype, lead + tuple(t.dims)) for t in config.output),
        )
        self.plan: EnsemblePlan | None = None

    @classmethod
    def open(cls, path: Path, config: ModelConfig, options: RuntimeOptions) -> EnsembleRuntime:
        if not config.input or not config.output:
            raise ModelConfigError(f"model '{config.name}': an ensemble's config must declare its inputs and outputs")
        return cls(config)

    def signature(self) -> Signature:
        return self._sig

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        raise ModelConfigError("an ensemble is executed by the data plane, step by step")

    def describe(self) -> str:
        n = len(self.plan.steps) if self.plan else 0
        return f"ensemble of {n} steps"


def plan_ensemble(config: ModelConfig, lookup: SpecLookup) -> EnsemblePlan:
    """Check an ensemble's steps against its composing models and order them (raises ModelConfigError)."""
    where = f"ensemble '{config.name}'"
    sched = config.ensemble_scheduling
    if sched is None:
        raise ModelConfigError(f"{where}: no ensemble_scheduling")
    lead = 1 if config.max_batch_size > 0 else 0
    producers: dict[str, tuple[str, TensorSpec | None]] = {  # tensor -> (who makes it, its spec)
        t.name: ("the ensemble input", TensorSpec(t.name, t.datatype, (-1,) * lead + tuple(t.dims)))
        for t in config.input
    }
    steps: list[EnsembleStepPlan] = []
    specs: list[tuple[dict[str, TensorSpec], dict[str, TensorSpec]]] = []
    for k, step in enumerate(sched.step):
        label = f"{where} step {k} ('{step.model_name}')"
        if step.model_name == config.name:
            raise ModelConfigError(f"{label}: an ensemble cannot call itself")
        version = "" if step.model_version < 0 else str(step.model_version)
        try:
            ins, outs = lookup(step.model_name, version)
        except (NotFound, Unavailable) as e:
            raise ModelConfigError(f"{label}: composing model not available: {e.message}") from None
        in_specs, out_specs = {t.name: t for t in ins}, {t.name: t for t in outs}
        for name in step.input_map:
            if name not in in_specs:
                raise ModelConfigError(f"{label}: input_map names '{name}', not an input of it ({sorted(in_specs)})")
        for name, tensor in step.output_map.items():
            if name not in out_specs:
                raise ModelConfigError(f"{label}: output_map names '{name}', not an output of it ({sorted(out_specs)})")
            if tensor in producers:
                raise ModelConfigError(f"{label}: tensor '{tensor}' is already produced by {producers[tensor][0]}")
            producers[tensor] = (label, out_specs[name])
        steps.append(EnsembleStepPlan(step.model_name, version, tuple(step.input_map.items()),
                                      tuple(step.output_map.items())))
        specs.append((in_specs, out_specs))
    for k, (planned, (in_specs, _)) in enumerate(zip(steps, specs, strict=True)):
        for name, tensor in planned.inputs:
            if tensor not in producers:
                raise ModelConfigError(
                    f"{where} step {k} ('{planned.model}'): tensor '{tensor}' is produced by nothing")
            made = producers[tensor][1]
            if made is not None and made.datatype is not in_specs[name].datatype:
                raise ModelConfigError(
                    f"{where} step {k} ('{planned.model}'): input '{name}' is {in_specs[name].datatype.value} but "
                    f"tensor '{tensor}' from {producers[tensor][0]} is {made.datatype.value}")
    for t in config.output:
        if t.name not in producers or producers[t.name][0] == "the ensemble input":
            raise ModelConfigError(f"{where}: output '{t.name}' is produced by no step")
        made = producers[t.name][1]
        if made is not None and made.datatype is not t.datatype:
            raise ModelConfigError(f"{where}: output '{t.name}' is {t.datatype.value} in the config but "
                                   f"{made.datatype.value} from {producers[t.name][0]}")
    return EnsemblePlan(_order(steps, {t.name for t in config.input}, where), tuple(t.name for t in config.output))


def _order(steps: list[EnsembleStepPlan], available: set[str], where: str) -> tuple[EnsembleStepPlan, ...]:
    have, pending, ordered = set(available), list(steps), []
    while pending:
        ready = [s for s in pending if all(t in have for _, t in s.inputs)]
        if not ready:
            raise ModelConfigError(f"{where}: steps {[s.model for s in pending]} wait on each other (a cycle)")
        for s in ready:
            ordered.append(s)
            have.update(t for _, t in s.outputs)
        pending = [s for s in pending if s not in ready]
    return tuple(ordered)
