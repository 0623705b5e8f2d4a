"""Complete a partial model config from the model file's own signature, and check they agree.

As Triton does without ``--strict-model-config``: missing inputs/outputs come from the file;
``max_batch_size`` is given when every tensor's first dimension is variable; such a model gets
dynamic batching unless its config chose otherwise.
"""

from __future__ import annotations

from typing import cast

from infer.config.model import ConfigDataType, DynamicBatching, ModelConfig, ModelInput, ModelOutput
from infer.core.types import TensorSpec
from infer.errors import ModelConfigError
from infer.runtimes.base import Signature

__all__ = ["complete_config", "served_specs"]


def _batchable(sig: Signature) -> bool:
    tensors = sig.inputs + sig.outputs
    return bool(tensors) and all(len(t.shape) >= 1 and t.shape[0] == -1 for t in tensors)


def complete_config(
    config: ModelConfig, sig: Signature, *, name: str, default_max_batch_size: int, strict: bool
) -> ModelConfig:
    where = f"model '{name}'"
    if config.name and config.name != name:
        raise ModelConfigError(f"{where}: config name '{config.name}' differs from the directory name")
    update: dict[str, object] = {"name": name}
    if strict and (not config.input or not config.output):
        raise ModelConfigError(f"{where}: strict model config needs input and output in config.pbtxt")
    mbs = config.max_batch_size
    if "max_batch_size" not in config.model_fields_set and not strict:
        mbs = default_max_batch_size if _batchable(sig) else 0
        update["max_batch_size"] = mbs
        if mbs and config.dynamic_batching is None:
            update["dynamic_batching"] = DynamicBatching()
    skip = 1 if mbs > 0 else 0
    if mbs > 0 and not _batchable(sig):
        fixed = [t.name for t in sig.inputs + sig.outputs if not t.shape or t.shape[0] != -1]
        raise ModelConfigError(
            f"{where}: max_batch_size {mbs} but the model's tensors {fixed} have no variable first dimension"
        )
    if not config.input:
        update["input"] = [
            ModelInput(name=t.name, data_type=cast(ConfigDataType, t.datatype.config_name), dims=list(t.shape[skip:]))
            for t in sig.inputs
        ]
    if not config.output:
        update["output"] = [
            ModelOutput(name=t.name, data_type=cast(ConfigDataType, t.datatype.config_name), dims=list(t.shape[skip:]))
            for t in sig.outputs
        ]
    done = config.model_copy(update=update)
    _check(done, sig, where, skip)
    return done


def _check(config: ModelConfig, sig: Signature, where: str, skip: int) -> None:
    file_in = {t.name: t for t in sig.inputs}
    file_out = {t.name: t for t in sig.outputs}
    declared = {t.name for t in config.input}
    missing = [n for n in file_in if n not in declared]
    if missing:
        raise ModelConfigError(f"{where}: the model file has inputs {missing} that the config does not declare")
    pairs = [("input", t, file_in) for t in config.input] + [("output", t, file_out) for t in config.output]
    for kind, t, found in pairs:
        spec = found.get(t.name)
        if spec is None:
            raise ModelConfigError(
                f"{where}: config {kind} '{t.name}' is not in the model file (it has {sorted(found)})"
            )
        if spec.datatype.config_name != t.data_type:
            raise ModelConfigError(
                f"{where}: config {kind} '{t.name}' is {t.data_type} but the model file has "
                f"{spec.datatype.config_name}"
            )
        file_dims = spec.shape[skip:]
        relaxed = [-1 if d < 0 else d for d in t.dims]
        if len(file_dims) != len(relaxed) or not all(
            a == b or a < 0 or b < 0 for a, b in zip(file_dims, relaxed, strict=True)
        ):
            raise ModelConfigError(
                f"{where}: config {kind} '{t.name}' dims {t.dims} do not match the model file's "
                f"{list(file_dims)} (batch dimension excluded: {bool(skip)})"
            )


def served_specs(config: ModelConfig) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs as clients see them (metadata): batch dim -1 first when batching."""
    lead = (-1,) if config.max_batch_size > 0 else ()
    ins = tuple(TensorSpec(t.name, t.datatype, lead + tuple(t.dims)) for t in config.input)
    outs = tuple(TensorSpec(t.name, t.datatype, lead + tuple(t.dims)) for t in config.output)
    return ins, outs


