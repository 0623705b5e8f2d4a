"""Token table loading, role checks, the method -> role map, per-token rates, redaction and repository path
confinement (no sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infer.auth import RateLimited, TokenBucket, TokenTable, redact, required_role
from infer.errors import Code, InvalidArgument, ModelConfigError, NotFound, PermissionDenied, Unauthenticated
from infer.registry.repository import ModelRepository, confined


def _table(tmp_path: Path, tokens: object, clock: Clock | None = None) -> TokenTable:
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"tokens": tokens}))
    return TokenTable.load(p) if clock is None else TokenTable.load(p, clock=clock)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_methods_map_to_roles() -> None:
    assert required_role("/grpc.health.v1.Health/Check") is None
    assert required_role("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is None
    assert required_role("/inference.GRPCInferenceService/ModelInfer") == "infer"
    assert required_role("/inference.GRPCInferenceService/ModelStreamInfer") == "infer"
    assert required_role("/inference.GRPCInferenceService/RepositoryModelLoad") == "deploy"
    assert required_role("/inference.GRPCInferenceService/ModelMetadata") == "read"
    assert required_role("/infer.control.v1.ControlPlane/ListVersions") == "read"
    assert required_role("/infer.control.v1.ControlPlane/ReportOutcome") == "infer"
    assert required_role("/infer.control.v1.ControlPlane/SetDeployment") == "deploy"
    assert required_role("/some.New/Method") == "admin"  # closed until classified


def test_every_rpc_of_both_services_has_a_role_below_admin() -> None:
    from infer._proto import control_pb2, grpc_service_pb2

    for service in (grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
                    control_pb2.DESCRIPTOR.services_by_name["ControlPlane"]):
        for m in service.methods:
            assert required_role(f"/{service.full_name}/{m.name}") in ("read", "infer", "deploy"), m.name


def test_authenticate_and_authorize(tmp_path: Path) -> None:
    table = _table(tmp_path, [{"name": "a", "token": "s3cret", "roles": ["read"]},
                              {"name": "root", "token": "r00t", "roles": ["admin"]}])
    ident = table.authenticate("Bearer s3cret")
    assert ident.name == "a"
    TokenTable.authorize(ident, "read", "/x/ModelMetadata")
    with pytest.raises(PermissionDenied, match="lacks the 'infer' role needed for ModelInfer"):
        TokenTable.authorize(ident, "infer", "/x/ModelInfer")
    TokenTable.authorize(table.authenticate("bearer r00t"), "deploy", "/x/RepositoryModelLoad")
    for header in ("", "Bearer", "Basic s3cret", "Bearer nope"):
        with pytest.raises(Unauthenticated):
            table.authenticate(header)


@pytest.mark.parametrize("tokens,words", [
    ([], "no tokens"),
    ([{"token": "x", "roles": ["superuser"]}], "roles must be"),
    ([{"token": "x", "roles": []}], "roles must be"),
    ([{"roles": ["read"]}], "give 'sha256'"),
    ([{"sha256": "abc", "roles": ["read"]}], "give 'sha256'"),
    ([{"token": 123, "roles": ["read"]}], "are strings"),
    ([{"token": "x", "roles": "admin"}], "roles must be"),
    (["x"], "each token is a JSON object"),
    ([{"token": "x", "roles": ["read"]}, {"token": "x", "roles": ["admin"]}], "the same token is given twice"),
    ([{"token": "x", "roles": ["read"], "rate_per_s": 0}], "'rate_per_s' must be a number > 0"),
    ([{"token": "x", "roles": ["read"], "rate_per_s": "5"}], "'rate_per_s' must be a number > 0"),
    ([{"token": "x", "roles": ["read"], "rate_per_s": 5, "burst": 0.5}], "'burst' must be a number >= 1"),
    ([{"token": "x", "roles": ["read"], "burst": 5}], "'burst' needs 'rate_per_s'"),
])
def test_bad_token_files_are_refused(tmp_path: Path, tokens: object, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        _table(tmp_path, tokens)


def test_bad_token_file_errors_never_echo_a_token(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as e:
        _table(tmp_path, [{"token": "hunter2-secret", "roles": ["root"]}])
    assert "hunter2-secret" not in e.value.message


def test_the_bucket_refuses_past_its_burst_and_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_s=2.0, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.5)  # one token comes every 0.5 s
    clock.now += 0.25
    assert bucket.try_take() == pytest.approx(0.25)  # refusals take nothing
    clock.now += 0.25
    assert bucket.try_take() == 0.0
    clock.now += 60  # idle: saves up to its burst, no more
    assert [bucket.try_take() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.5)]


def test_reservations_queue_behind_each_other_and_hold_off_refusable_calls() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_s=10.0, burst=1, clock=clock)
    assert [bucket.reserve() for _ in range(4)] == [0.0, pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)]
    assert bucket.try_take() == pytest.approx(0.4)  # the debt is paid first
    clock.now += 0.4
    assert bucket.try_take() == 0.0


@pytest.mark.parametrize("rate,burst", [(0, 1), (-1, 1), (float("inf"), 1), (1, 0.5), (1, float("nan"))])
def test_a_bucket_needs_a_positive_rate_and_a_burst_of_one(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_rates_come_from_the_token_file_per_token(tmp_path: Path) -> None:
    clock = Clock()
    table = _table(tmp_path, [{"name": "slow", "token": "s", "roles": ["read"], "rate_per_s": 1, "burst": 2},
                              {"name": "default-burst", "token": "d", "roles": ["read"], "rate_per_s": 0.5},
                              {"name": "free", "token": "f", "roles": ["read"]}], clock)
    slow, dflt, free = (table.authenticate(f"Bearer {t}") for t in "sdf")
    assert free.bucket is None and dflt.bucket is not None and dflt.bucket.burst == 1.0
    TokenTable.admit(slow)
    TokenTable.admit(slow)
    with pytest.raises(RateLimited) as e:
        TokenTable.admit(slow)
    assert e.value.code is Code.RESOURCE_EXHAUSTED and e.value.retry_after_s == pytest.approx(1.0)
    assert "'slow' is over its rate of 1 requests/s" in e.value.message
    for _ in range(100):
        TokenTable.admit(free)
    clock.now += 1.0
    TokenTable.admit(slow)  # one more after a second
    assert table.authenticate("Bearer s") is slow  # one bucket per token, kept across calls


@pytest.mark.parametrize("text,hidden", [
    ("authorization: Bearer abc.DEF-123", "abc.DEF-123"),
    ("[('authorization', 'bearer tok_9')]", "tok_9"),
    ("registry URL 'postgresql://alice:pa55w0rd@db:5432/reg': refused", "pa55w0rd"),
    ("mysql://u:p%40ss@h/db", "p%40ss"),
    ("host=db user=alice password=pa55w0rd dbname=reg", "pa55w0rd"),
    ("sslpassword='two words' host=db", "two words"),
    ("key:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\nafter", "MHcCAQEEIB"),
    ("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG (cut short)", "MIGHAgEAMBMG"),
])
def test_redact_hides_secrets(text: str, hidden: str) -> None:
    out = redact(text)
    assert hidden not in out
    assert ("[private key redacted]" if "PRIVATE KEY" in text else "***") in out


def test_redact_keeps_ordinary_text() -> None:
    for text in ("model 'double' version 1 loaded", "postgresql://alice@db:5432/reg", "http://host:8002/metrics",
                 "ipv6 http://[::1]:8001/x", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"):
        assert redact(text) == text


def test_the_repository_follows_no_symlink_out_of_its_root(tmp_path: Path) -> None:
    from fixtures import write_double

    root, outside = tmp_path / "repo", tmp_path / "outside"
    write_double(root)
    write_double(outside, "stranger")
    (root / "escape").symlink_to(outside / "stranger", target_is_directory=True)
    (root / "alias").symlink_to(root / "double", target_is_directory=True)
    (root / "loop").symlink_to(root / "loop")
    (root / "half").mkdir()
    (root / "half" / "1").symlink_to(outside / "stranger" / "1", target_is_directory=True)
    (root / "half" / "2").mkdir()
    (root / "half" / "2" / "model.onnx").symlink_to(outside / "stranger" / "1" / "model.onnx")
    (root / "half" / "config.pbtxt").symlink_to(outside / "stranger" / "1" / "model.onnx")
    repo = ModelRepository(root)
    assert repo.names() == ["alias", "double", "half"]
    for name in ("escape", "loop"):
        with pytest.raises(NotFound):
            repo.model_dir(name)
    assert repo.versions("alias") == [1] and repo.find_model_file("alias", 1, "model.onnx").is_file()
    assert repo.versions("half") == [2]  # the symlinked version directory is not offered
    for version, name in ((1, "model.onnx"), (2, "model.onnx"), (1, "../../double/1/model.onnx")):
        with pytest.raises(ModelConfigError, match=r"outside|not found"):
            repo.find_model_file("half", version, name)
    with pytest.raises(ModelConfigError, match="outside"):
        repo.find_model_file("double", 1, "../../../outside/stranger/1/model.onnx")
    with pytest.raises(ModelConfigError, match=r"config\.pbtxt points outside"):
        repo.read_config("half")
    assert repo.find_model_file("double", 1, "../../alias/1/model.onnx").is_file()  # inside: allowed
    assert confined(root / "alias", (root.resolve(),)) == (root / "double").resolve()
    assert confined(root / "escape", (root.resolve(),)) is None
    assert confined(root / "loop", (root.resolve(),)) is None
