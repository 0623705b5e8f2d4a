"""Server configuration (command-line flags map one to one onto these fields)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ServerConfig", "infer_home"]


def infer_home() -> Path:
    """Where infer keeps its state by default: ``$INFER_HOME``, else ``~/.cache/infer``."""
    env = os.environ.get("INFER_HOME")
    return Path(env) if env else Path.home() / ".cache" / "infer"


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_repository: Path | None = Field(
        None, description="Triton-layout model repository; None serves the embedded default one."
    )
    host: str = Field("0.0.0.0", description="Address the gRPC and metrics servers bind.")
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port (0 = pick a free one).")
    metrics_port: int = Field(8002, ge=-1, le=65535, description="HTTP /metrics port (0 = any, -1 = off).")
    model_control_mode: Literal["none", "explicit"] = Field(
        "none", description="none: load every model at start; explicit: only --load-model and API calls."
    )
    load_models: list[str] = Field(default_factory=list, description="Models to load at start (explicit).")
    strict_model_config: bool = Field(
        False, description="Require complete config.pbtxt (no completion from the model file)."
    )
    default_max_batch_size: int = Field(
        64, ge=0, le=65536, description="max_batch_size given to models whose config has none."
    )
    max_queue_size: int = Field(
        4096, ge=1, description="Queue bound for models whose queue policy sets none (0 in config)."
    )
    max_concurrent_rpcs: int = Field(
        4096, ge=0, description="RPCs handled at once; past it gRPC answers RESOURCE_EXHAUSTED at once (0 = no cap)."
    )
    max_concurrent_streams: int = Field(
        0, ge=0, le=2**31 - 1,
        description="Streams (calls) one client connection may have open at once, as HTTP/2's "
        "SETTINGS_MAX_CONCURRENT_STREAMS: further calls wait in the client (0 = gRPC's default, no limit).",
    )
    response_cache_bytes: int = Field(
        64 * 2**20, ge=0, description="Memory for cached responses of models with response_cache enabled (0 = off)."
    )
    max_message_bytes: int = Field(
        2**31 - 1, ge=1024, le=2**31 - 1, description="Largest gRPC message received or sent."
    )
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0 = runtime default).")
    inter_op_threads: int = Field(0, ge=0, description="ONNX Runtime inter-op threads (0 = runtime default).")
    tls_cert: Path | None = Field(None, description="PEM server certificate chain: serve gRPC over TLS.")
    tls_key: Path | None = Field(None, description="PEM private key of --tls-cert.")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA bundle: require client certificates signed by it (mutual TLS)."
    )
    artifact_import_dirs: list[Path] = Field(
        default_factory=list,
        description="Directories whose files RegisterVersion may read by 'path', besides the model repository; "
        "a path anywhere else (after following symlinks) is refused.",
    )
    state_dir: Path | None = Field(
        None, description="Keep stateful models' rolling state here across unloads and restarts (default: off)."
    )
    registry_dir: Path | None = Field(
        None, description="Model registry database and artifacts (default: $INFER_HOME/registry)."
    )
    registry_url: str | None = Field(
        None,
        description="Registry metadata database, instead of the SQLite file in --registry-dir (artifacts stay there): "
        "postgresql://USER@HOST:PORT/DB (needs the postgres extra; keep the password in PGPASSWORD or ~/.pgpass), "
        "sqlite:///ABS/PATH.db or a path.",
    )
    deployment_sync_s: float = Field(
        1.0, gt=0, le=3600, description="How often deployment changes made by other processes are read from the store."
    )
    auth_tokens: Path | None = Field(
        None, description="JSON token file (roles, optional rate_per_s and burst per token): every call but health "
        "checks needs 'authorization: Bearer <token>'."
    )
    audit_log: Path | None = Field(None, description="Append control-plane changes here as JSON lines.")
    alerts_config: Path | None = Field(
        None, description="JSON alert sinks (webhook, slack, pagerduty): anomaly answers above a severity go there."
    )
    shutdown_grace_s: float = Field(30.0, ge=0, description="Time in-flight requests get on SIGTERM.")
    reuse_port: bool = Field(False, description="Set SO_REUSEPORT so several processes share the port.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _explicit(self) -> ServerConfig:
        if self.load_models and self.model_control_mode != "explicit":
            raise ValueError("--load-model needs --model-control-mode explicit")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return self
