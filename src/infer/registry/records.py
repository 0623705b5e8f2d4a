"""Records of the model registry: model versions, their transitions, served versions' moves, audit entries.

Plain frozen dataclasses, validated at construction, shared by :mod:`infer.registry.store` and the control plane.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from infer.errors import InvalidArgument

__all__ = ["AuditEntry", "ModelVersionRecord", "ServingTransition", "TransitionRecord", "semver_key"]

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_MODEL_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def semver_key(version: str) -> tuple[Any, ...]:
    """A sort key that orders versions by semantic-versioning precedence (build metadata ignored)."""
    m = _SEMVER.match(version)
    if m is None:
        raise InvalidArgument(f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build])")
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[4]
    if pre is None:
        return (major, minor, patch, 1, ())
    idents = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, idents)


# ---------------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ModelVersionRecord:
    """One registered model version. ``created_at`` is set by the store; ``status`` is the version's initial status."""

    model_id: str
    version: str  # semantic version
    model_type: str  # e.g. "anomaly", "forecast", "vision", "nlp"
    framework: str  # e.g. "onnx", "tensorrt", "numba"
    artifact_uri: str
    artifact_sha256: str
    trained_at: float | None = None
    training_data_id: str | None = None
    training_data_size: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # any JSON-serialisable values
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "REGISTERED"
    parent_version: str | None = None  # lineage within the same model_id
    training_run: str | None = None
    created_at: float | None = None

    def __post_init__(self) -> None:
        if not _MODEL_ID.match(self.model_id):
            raise InvalidArgument(f"model_id {self.model_id!r} must match {_MODEL_ID.pattern}")
        semver_key(self.version)
        if self.parent_version is not None:
            semver_key(self.parent_version)
            if self.parent_version == self.version:
                raise InvalidArgument(f"version {self.version} cannot be its own parent")
        for name in ("model_type", "framework", "artifact_uri", "status"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > 1024:
                raise InvalidArgument(f"{name} must be a non-empty string of at most 1024 characters")
        if not _SHA256.match(self.artifact_sha256):
            raise InvalidArgument("artifact_sha256 must be 64 lowercase hex digits")
        if self.training_data_size is not None and self.training_data_size < 0:
            raise InvalidArgument("training_data_size must be non-negative")
        for key, value in self.metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidArgument(f"metric {key!r} must be a finite number, not {value!r}")
        try:
            json.dumps(self.hyperparameters, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"hyperparameters must be JSON-serialisable: {e}") from None


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    id: int
    model_id: str
    version: str
    at: float
    source: str | None  # None for the registration itself
    target: str
    reason: str
    actor: str


@dataclass(frozen=True, slots=True)
class ServingTransition:
    """A lifecycle move of a version a server loaded (repository version numbers, not registry semvers)."""

    model: str
    version: int
    at: float
    source: str | None  # None: the load began
    target: str
    reason: str
    server: str  # host:pid of the process that made the move


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    detail: dict[str, Any]
