"""Access control against the real server: bearer tokens with roles, open health checks, an audit log."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from fixtures import ServerProcess, write_double
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

TOKENS = {"reader-secret": ["read"], "infer-secret": ["infer"], "admin-secret": ["admin"]}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    root = tmp_path_factory.mktemp("auth")
    write_double(root / "repo")
    entries: list[dict[str, object]] = [
        {"name": "reader", "token": "reader-secret", "roles": ["read"]},
        {"name": "inferer", "sha256": hashlib.sha256(b"infer-secret").hexdigest(), "roles": ["infer"]},
        {"name": "admin", "token": "admin-secret", "roles": ["admin"]},
    ]
    (root / "tokens.json").write_text(json.dumps({"tokens": entries}))
    audit = root / "audit.jsonl"
    srv = ServerProcess(root / "repo", "--auth-tokens", str(root / "tokens.json"), "--audit-log", str(audit))
    srv.wait_ready()
    yield srv, audit
    assert srv.stop() == 0, srv.output()


def _call(srv: ServerProcess, method: str, request: object, token: str | None) -> object:
    md = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(srv.address) as ch:
        return getattr(pb_grpc.GRPCInferenceServiceStub(ch), method)(request, timeout=10, metadata=md)


def _infer_request() -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="double")
    req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    return req


@pytest.mark.parametrize("token,method,code,words", [
    (None, "ModelInfer", grpc.StatusCode.UNAUTHENTICATED, "Bearer"),
    ("wrong", "ModelInfer", grpc.StatusCode.UNAUTHENTICATED, "unknown token"),
    (None, "ModelMetadata", grpc.StatusCode.UNAUTHENTICATED, "Bearer"),
    ("reader-secret", "ModelInfer", grpc.StatusCode.PERMISSION_DENIED, "'reader' lacks the 'infer' role"),
    ("infer-secret", "RepositoryModelLoad", grpc.StatusCode.PERMISSION_DENIED, "'inferer' lacks the 'deploy' role"),
    ("reader-secret", "RepositoryModelUnload", grpc.StatusCode.PERMISSION_DENIED, "deploy"),
])
def test_refusals(secured: tuple[ServerProcess, Path], token: str | None, method: str, code: grpc.StatusCode,
                  words: str) -> None:
    requests = {"ModelInfer": _infer_request(), "ModelMetadata": pb.ModelMetadataRequest(name="double"),
                "RepositoryModelLoad": pb.RepositoryModelLoadRequest(model_name="double"),
                "RepositoryModelUnload": pb.RepositoryModelUnloadRequest(model_name="double")}
    with pytest.raises(grpc.RpcError) as e:
        _call(secured[0], method, requests[method], token)
    assert e.value.code() == code and words in (e.value.details() or "")


def test_roles_allow_their_calls_and_admin_changes_are_audited(secured: tuple[ServerProcess, Path]) -> None:
    srv, audit = secured
    md = _call(srv, "ModelMetadata", pb.ModelMetadataRequest(name="double"), "reader-secret")
    assert md.name == "double"  # type: ignore[attr-defined]
    resp = _call(srv, "ModelInfer", _infer_request(), "infer-secret")
    assert np.frombuffer(resp.raw_output_contents[0], np.float32).tolist() == [2.0] * 4  # type: ignore[attr-defined]
    _call(srv, "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="double"), "admin-secret")
    with pytest.raises(grpc.RpcError):
        _call(srv, "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="nope"), "admin-secret")
    # a refused call's status reaches the client as the server aborts it; its audit line follows at once
    for _ in range(100):
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
        if lines and lines[-1]["model"] == "nope":
            break
        time.sleep(0.02)
    assert [(x["who"], x["action"], x["model"], x["ok"]) for x in lines[-2:]] == [
        ("admin", "RepositoryModelLoad", "double", True), ("admin", "RepositoryModelLoad", "nope", False)]
    assert all(isinstance(x["at"], float) for x in lines)


def test_streaming_needs_the_infer_role(secured: tuple[ServerProcess, Path]) -> None:
    with grpc.insecure_channel(secured[0].address) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.ModelStreamInfer(iter([_infer_request()]), timeout=10,
                                       metadata=[("authorization", "Bearer reader-secret")]))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        replies = list(stub.ModelStreamInfer(iter([_infer_request()]), timeout=10,
                                             metadata=[("authorization", "Bearer infer-secret")]))
        assert len(replies) == 1 and not replies[0].error_message


def test_health_needs_no_token_and_the_cli_passes_one(secured: tuple[ServerProcess, Path]) -> None:
    srv, _ = secured
    with grpc.insecure_channel(srv.address) as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="ready"), timeout=10)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    base = [sys.executable, "-m", "infer.cli", "models", "list", "--address", srv.address]
    assert subprocess.run(base, capture_output=True, timeout=60).returncode == 1
    ok = subprocess.run([*base, "--token", "reader-secret"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "double" in ok.stdout
