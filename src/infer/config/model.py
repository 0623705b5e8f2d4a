"""A model's configuration: the supported subset of Triton's ModelConfig, as pydantic models.

``config.pbtxt`` is parsed with protobuf's text format into infer's ``inference.ModelConfig``
message (wire-identical to Triton's) and then into :class:`ModelConfig`. Every model here
forbids extra fields, so a Triton field that infer does not implement is reported by its
path (``sequence_batching``, ``input[0].reshape``...) instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infer.core.types import DataType
from infer.errors import ModelConfigError

__all__ = [
    "ConfigDataType",
    "DynamicBatching",
    "InstanceGroup",
    "ModelConfig",
    "ModelInput",
    "ModelOutput",
    "QueuePolicy",
    "ResponseCache",
    "VersionPolicy",
    "format_validation_error",
]

ConfigDataType = Literal[
    "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8",
    "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Latest(_Strict):
    num_versions: int = Field(1, ge=1, description="Serve the newest N versions.")


class _All(_Strict):
    pass


class _Specific(_Strict):
    versions: list[int] = Field(default_factory=list, description="Serve exactly these versions.")


class VersionPolicy(_Strict):
    """Which versions found on disk are served (Triton's ModelVersionPolicy; default latest 1)."""

    latest: _Latest | None = None
    all: _All | None = None
    specific: _Specific | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        if sum(x is not None for x in (self.latest, self.all, self.specific)) > 1:
            raise ValueError("version_policy takes one of latest, all, specific")
        return self

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.all is not None:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in set(self.specific.versions)]
        n = self.latest.num_versions if self.latest is not None else 1
        return ordered[-n:]


class _Reshape(_Strict):
    shape: list[int] = Field(default_factory=list)


class ModelInput(_Strict):
    name: str = Field(min_length=1, description="Tensor name as in the model file.")
    data_type: ConfigDataType = Field(description="Element type, Triton's TYPE_* name.")
    dims: list[int] = Field(default_factory=list, description="Shape without the batch dim; -1 = any.")
    format: Literal["FORMAT_NONE"] = "FORMAT_NONE"
    optional: bool = False

    @property
    def datatype(self) -> DataType:
        return DataType.from_config(self.data_type)


class ModelOutput(_Strict):
    name: str = Field(min_length=1)
    data_type: ConfigDataType
    dims: list[int] = Field(default_factory=list)

    @property
    def datatype(self) -> DataType:
        return DataType.from_config(self.data_type)


class QueuePolicy(_Strict):
    """Triton's ModelQueuePolicy: per priority level timeout and bound."""

    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    default_timeout_microseconds: int = Field(0, ge=0, description="0 = no queue timeout.")
    allow_timeout_override: bool = False
    max_queue_size: int = Field(0, ge=0, description="0 = the server's --max-queue-size.")


class DynamicBatching(_Strict):
    preferred_batch_size: list[int] = Field(default_factory=list)
    max_queue_delay_microseconds: int = Field(0, ge=0, le=10_000_000)
    preserve_ordering: bool = False
    priority_levels: int = Field(0, ge=0, le=64)
    default_priority_level: int = Field(0, ge=0)
    default_queue_policy: QueuePolicy | None = None
    priority_queue_policy: dict[int, QueuePolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _levels(self) -> DynamicBatching:
        if self.priority_levels:
            if not 1 <= self.default_priority_level <= self.priority_levels:
                raise ValueError(
                    f"default_priority_level {self.default_priority_level} must be within "
                    f"1..priority_levels ({self.priority_levels})"
                )
            bad = [k for k in self.priority_queue_policy if not 1 <= k <= self.priority_levels]
            if bad:
                raise ValueError(f"priority_queue_policy levels {bad} outside 1..{self.priority_levels}")
        elif self.priority_queue_policy:
            raise ValueError("priority_queue_policy needs priority_levels")
        return self

    def policy(self, level: int) -> QueuePolicy:
        return self.priority_queue_policy.get(level) or self.default_queue_policy or QueuePolicy()


class InstanceGroup(_Strict):
    name: str = ""
    kind: Literal["KIND_AUTO", "KIND_CPU", "KIND_GPU"] = "KIND_AUTO"
    count: int = Field(1, ge=1, le=64, description="Concurrent executions of the model.")
    gpus: list[int] = Field(default_factory=list)


class _Accelerator(_Strict):
    name: str
    parameters: dict[str, str] = Field(default_factory=dict)


class _Accelerators(_Strict):
    gpu_execution_accelerator: list[_Accelerator] = Field(default_factory=list)
    cpu_execution_accelerator: list[_Accelerator] = Field(default_factory=list)


class _Graph(_Strict):
    level: int = 0


class Optimization(_Strict):
    graph: _Graph | None = None
    execution_accelerators: _Accelerators | None = None


class ResponseCache(_Strict):
    """Triton's per-model switch for the server's response cache."""

    enable: bool = False


class EnsembleStep(_Strict):
    """One model invocation of an ensemble: its tensors mapped to the ensemble's tensors by name."""

    model_name: str = Field(min_length=1)
    model_version: int = Field(-1, ge=-1, description="-1 = the newest ready version.")
    input_map: dict[str, str] = Field(default_factory=dict, description="step model input -> ensemble tensor")
    output_map: dict[str, str] = Field(default_factory=dict, description="step model output -> ensemble tensor")


class EnsembleScheduling(_Strict):
    step: list[EnsembleStep] = Field(min_length=1)
    max_inflight_requests: int = Field(0, ge=0)


class _Parameter(_Strict):
    string_value: str = ""


class ModelConfig(_Strict):
    """A model's configuration (Triton's field names and meaning)."""

    name: str = ""
    platform: str = ""
    backend: str = ""
    runtime: str = ""
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    max_batch_size: int = Field(0, ge=0, le=1 << 20, description="0 = the model does not batch.")
    input: list[ModelInput] = Field(default_factory=list)
    output: list[ModelOutput] = Field(default_factory=list)
    dynamic_batching: DynamicBatching | None = None
    instance_group: list[InstanceGroup] = Field(default_factory=list)
    optimization: Optimization | None = None
    response_cache: ResponseCache | None = None
    default_model_filename: str = ""
    parameters: dict[str, _Parameter] = Field(default_factory=dict)
    ensemble_scheduling: EnsembleScheduling | None = None

    @model_validator(mode="after")
    def _cross(self) -> ModelConfig:
        names = [t.name for t in self.input]
        if len(set(names)) != len(names):
            raise ValueError(f"input names repeat: {names}")
        names = [t.name for t in self.output]
        if len(set(names)) != len(names):
            raise ValueError(f"output names repeat: {names}")
        if (self.platform == "ensemble") != (self.ensemble_scheduling is not None):
            raise ValueError("platform 'ensemble' and ensemble_scheduling go together")
        db = self.dynamic_batching
        if db is not None:
            if self.max_batch_size == 0 and (db.preferred_batch_size or db.max_queue_delay_microseconds):
                raise ValueError("dynamic_batching needs max_batch_size > 0")
            over = [p for p in db.preferred_batch_size if p < 1 or p > max(self.max_batch_size, 1)]
            if over:
                raise ValueError(f"preferred_batch_size {over} outside 1..max_batch_size")
        return self

    @property
    def instance_count(self) -> int:
        return sum(g.count for g in self.instance_group) or 1

    def parameter(self, key: str, default: str = "") -> str:
        p = self.parameters.get(key)
        return p.string_value if p is not None else default


def format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"]).replace(".[", "[")
        if e["type"] == "extra_forbidden":
            parts.append(f"field '{loc}' is not supported by infer")
        else:
            parts.append(f"{loc or 'config'}: {e['msg']}")
    return "; ".join(parts)


def model_config_from_dict(data: dict[str, Any], where: str) -> ModelConfig:
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as e:
        raise ModelConfigError(f"{where}: {format_validation_error(e)}") from None
