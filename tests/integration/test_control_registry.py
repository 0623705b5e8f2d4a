"""The control plane's model registry against the real server: register, search, compare, transitions,
audit, persistence across restarts, and the `infer registry` CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from fixtures import ServerProcess, write_double

from infer._proto import control_pb2 as cpb
from infer._proto import control_pb2_grpc as cpb_grpc


def _version(v: str, auc: float, parent: str = "") -> cpb.ModelVersion:
    return cpb.ModelVersion(model_id="fraud", version=v, model_type="anomaly", framework="onnx",
                            metrics={"auc": auc}, hyperparameters={"trees": "200", "lr": "0.1"},
                            parent_version=parent, training_run=f"run-{v}", training_data_id="events-2026-11",
                            training_data_size=20000, trained_at=1_790_000_000.0)


def _cli(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infer.cli", "registry", *args, "--address", srv.address],
                          capture_output=True, text=True, timeout=60)


def test_registry_end_to_end(tmp_path: Path) -> None:
    model = write_double(tmp_path / "repo") / "1" / "model.onnx"
    registry_dir = tmp_path / "registry"
    with ServerProcess(tmp_path / "repo", "--registry-dir", str(registry_dir)) as srv, \
            grpc.insecure_channel(srv.address) as ch:
        stub = cpb_grpc.ControlPlaneStub(ch)
        v1 = stub.RegisterVersion(cpb.RegisterVersionRequest(version=_version("1.0.0", 0.91),
                                                             content=model.read_bytes(), artifact_name="model.onnx"))
        assert v1.artifact_sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
        assert v1.status == "REGISTERED" and v1.created_at > 0
        v2 = stub.RegisterVersion(cpb.RegisterVersionRequest(version=_version("1.1.0", 0.95, parent="1.0.0"),
                                                             path=str(model)))
        assert v2.artifact_uri == v1.artifact_uri  # same bytes, one stored artifact
        found = stub.ListVersions(cpb.ListVersionsRequest(model_id="fraud", metric="auc", op=">=", value=0.93))
        assert [v.version for v in found.versions] == ["1.1.0"]
        diff = stub.CompareVersions(cpb.CompareVersionsRequest(model_id="fraud", version_a="1.0.0",
                                                               version_b="1.1.0"))
        assert {f.field for f in diff.fields} >= {"parent_version", "training_run"}
        assert diff.metrics[0].name == "auc" and diff.metrics[0].delta == pytest.approx(0.04)
        moved = stub.TransitionVersion(cpb.TransitionRequest(model_id="fraud", version="1.1.0",
                                                             source="REGISTERED", target="ACTIVE", reason="better"))
        assert moved.status == "ACTIVE"
        hist = stub.VersionHistory(cpb.VersionRef(model_id="fraud", version="1.1.0")).transitions
        assert [(t.source, t.target, t.reason) for t in hist] == [("", "REGISTERED", "registered"),
                                                                  ("REGISTERED", "ACTIVE", "better")]
        audit = stub.AuditLog(cpb.AuditLogRequest(limit=10)).entries
        assert [e.action for e in audit[:3]] == ["transition", "register", "register"]
        errors = {
            "unknown": (stub.GetVersion, cpb.VersionRef(model_id="fraud", version="9.9.9")),
            "duplicate": (stub.RegisterVersion, cpb.RegisterVersionRequest(version=_version("1.0.0", 0.9),
                                                                           content=b"x")),
            "bad semver": (stub.RegisterVersion, cpb.RegisterVersionRequest(version=_version("one", 0.9),
                                                                            content=b"x")),
            "no artifact": (stub.RegisterVersion, cpb.RegisterVersionRequest(version=_version("2.0.0", 0.9))),
            "stale transition": (stub.TransitionVersion, cpb.TransitionRequest(
                model_id="fraud", version="1.1.0", source="REGISTERED", target="ERROR")),
        }
        codes = {}
        for name, (call, req) in errors.items():
            with pytest.raises(grpc.RpcError) as e:
                call(req, timeout=10)
            codes[name] = e.value.code()
        assert codes == {"unknown": grpc.StatusCode.NOT_FOUND, "duplicate": grpc.StatusCode.ALREADY_EXISTS,
                         "bad semver": grpc.StatusCode.INVALID_ARGUMENT,
                         "no artifact": grpc.StatusCode.INVALID_ARGUMENT,
                         "stale transition": grpc.StatusCode.FAILED_PRECONDITION}
    # the registry outlives the process
    with ServerProcess(tmp_path / "repo", "--registry-dir", str(registry_dir)) as srv:
        out = _cli(srv, "get", "fraud", "1.1.0")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["status"] == "ACTIVE"
        reg = _cli(srv, "register", "--model-id", "fraud", "--version", "2.0.0", "--model-type", "anomaly",
                   "--framework", "onnx", "--artifact", str(model), "--metric", "auc=0.97", "--param", "trees=300",
                   "--parent", "1.1.0")
        assert reg.returncode == 0, reg.stderr
        listed = json.loads(_cli(srv, "list", "--model-id", "fraud", "--where", "auc>0.96").stdout)
        assert [v["version"] for v in listed["versions"]] == ["2.0.0"]
        assert _cli(srv, "get", "fraud", "7.0.0").returncode == 1
