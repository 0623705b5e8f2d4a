"""Security against the real server: TLS and mutual TLS on every service, token roles, message size, concurrency and
per-token rate limits, secrets kept out of logs and answers, model and artifact paths confined to their roots.

Certificates are made here with ``cryptography`` (ECDSA P-256, so the whole PKI takes milliseconds): a CA, a server
certificate for 127.0.0.1/localhost, a client certificate, a client certificate from another CA and an expired one.
Five server processes shared by the module, plus one short start per registry-URL case: about 20 s on 2 cores.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import numpy as np
import pytest
from fixtures import ServerProcess, write_double
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from infer._proto import control_pb2 as cpb
from infer._proto import control_pb2_grpc as cpb_grpc
from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

C = grpc.StatusCode

# ------------------------------------------------------------------------------------------------------------ the PKI


@dataclass(frozen=True)
class Pki:
    dir: Path

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def creds(self, client: str | None = None, ca: str = "ca.pem") -> grpc.ChannelCredentials:
        if client is None:
            return grpc.ssl_channel_credentials(self.read(ca))
        return grpc.ssl_channel_credentials(self.read(ca), self.read(f"{client}.key"), self.read(f"{client}.pem"))


def _make_pki(d: Path) -> Pki:
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def save_key(name: str) -> Any:
        key = ec.generate_private_key(ec.SECP256R1())
        (d / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        return key

    def issue(name: str, cn: str, issuer: tuple[Any, Any] | None, *, ca: bool = False, server: bool = False,
              days: tuple[int, int] = (-1, 2)) -> tuple[Any, Any]:
        key = save_key(name)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        signer_key, signer_cert = issuer if issuer is not None else (key, None)
        b = (x509.CertificateBuilder().subject_name(subject)
             .issuer_name(signer_cert.subject if signer_cert is not None else subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now + dt.timedelta(days=days[0])).not_valid_after(now + dt.timedelta(days=days[1]))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                              content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False, encipher_only=False,
                                              decipher_only=False), critical=True)
        else:
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            import ipaddress

            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        cert = b.sign(signer_key, hashes.SHA256())
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    ca = issue("ca", "infer test CA", None, ca=True)
    other_ca = issue("other-ca", "someone else's CA", None, ca=True)
    issue("server", "localhost", ca, server=True)
    issue("client", "good client", ca)
    issue("rogue", "client of another CA", other_ca)
    issue("expired", "expired client", ca, days=(-10, -1))
    return Pki(d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo") / "models"
    write_double(root)
    return root


def _started(srv: ServerProcess) -> Iterator[ServerProcess]:
    try:
        srv.wait_ready()
        yield srv
    finally:
        code = srv.stop()
    assert code == 0, srv.output()


# ------------------------------------------------------------------------------------------------- calls per service


def _infer_request(n: int = 4, model: str = "double") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="x", datatype="FP32", shape=[n // 4, 4])
    req.raw_input_contents.append(np.ones(n, np.float32).tobytes())
    return req


def _data(ch: grpc.Channel, md: Any = None) -> object:
    return pb_grpc.GRPCInferenceServiceStub(ch).ServerReady(pb.ServerReadyRequest(), timeout=10, metadata=md)


def _control(ch: grpc.Channel, md: Any = None) -> object:
    return cpb_grpc.ControlPlaneStub(ch).ListDeployments(cpb.ListDeploymentsRequest(), timeout=10, metadata=md)


def _health(ch: grpc.Channel, md: Any = None) -> object:
    return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10, metadata=md)


SERVICES: dict[str, Callable[[grpc.Channel], object]] = {"data": _data, "control": _control, "health": _health}


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    return C.OK


# ------------------------------------------------------------------------------------------------ TLS and mutual TLS


@pytest.fixture(scope="module")
def mtls_servers(pki: Pki, repo: Path) -> Iterator[dict[str, ServerProcess]]:
    """``infer serve`` (data and control planes and health on one port) and ``infer control`` (control plane
    and health alone), both requiring client certificates signed by the test CA."""
    tls = ["--tls-cert", pki.path("server.pem"), "--tls-key", pki.path("server.key"),
           "--tls-client-ca", pki.path("ca.pem")]
    serve = ServerProcess(repo, *tls)
    control = ServerProcess(None, *tls, command="control")
    with serve, control:
        yield {"serve": serve, "control": control}


CLIENTS = {
    "plaintext": None,
    "tls without a client certificate": ("ca.pem", None),
    "client certificate from another CA": ("ca.pem", "rogue"),
    "expired client certificate": ("ca.pem", "expired"),
    "server not trusted by the client": ("other-ca.pem", "client"),
}


def _channel(pki: Pki, address: str, client: tuple[str, str | None] | None) -> grpc.Channel:
    if client is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, pki.creds(client[1], ca=client[0]))


@pytest.mark.parametrize("server,service", [("serve", "data"), ("serve", "control"), ("serve", "health"),
                                            ("control", "control"), ("control", "health")])
def test_mutual_tls_serves_only_clients_with_a_good_certificate(
        mtls_servers: dict[str, ServerProcess], pki: Pki, server: str, service: str) -> None:
    srv = mtls_servers[server]
    with grpc.secure_channel(srv.address, pki.creds("client")) as ch:
        assert _code(lambda: SERVICES[service](ch)) == C.OK
    refused = {}
    for kind, client in CLIENTS.items():
        with _channel(pki, srv.address, client) as ch:
            refused[kind] = _code(lambda ch=ch: SERVICES[service](ch))  # type: ignore[misc]
    assert refused == dict.fromkeys(CLIENTS, C.UNAVAILABLE)


# ---------------------------------------------------------------------------------------------- tokens, roles, rates

TOKENS = {  # token -> (name, roles, extra fields)
    "tok-reader-7f3a": ("reader", ["read"], {}),
    "tok-inferer-91bc": ("inferer", ["infer"], {}),
    "tok-deployer-c2d4": ("deployer", ["deploy"], {}),
    "tok-admin-e5f6": ("admin", ["admin"], {}),
    "tok-limited-0a1b": ("limited", ["read"], {"rate_per_s": 1, "burst": 2}),
    "tok-paced-3c4d": ("paced", ["infer"], {"rate_per_s": 10, "burst": 1}),
}
BAD_TOKEN = "tok-not-known-9d8e7f"


@pytest.fixture(scope="module")
def secured(pki: Pki, repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """TLS (server authentication only), tokens with roles and rates, debug logging, an audit log."""
    d = tmp_path_factory.mktemp("secured")
    entries = []
    for i, (token, (name, roles, extra)) in enumerate(TOKENS.items()):
        secret = {"token": token} if i % 2 else {"sha256": hashlib.sha256(token.encode()).hexdigest()}
        entries.append({"name": name, **secret, "roles": roles, **extra})
    (d / "tokens.json").write_text(json.dumps({"tokens": entries}))
    srv = ServerProcess(repo, "--tls-cert", pki.path("server.pem"), "--tls-key", pki.path("server.key"),
                        "--auth-tokens", str(d / "tokens.json"), "--audit-log", str(d / "audit.jsonl"),
                        "--log-level", "debug")
    yield from _started(srv)


def _md(token: str | None) -> list[tuple[str, str]] | None:
    return [("authorization", f"Bearer {token}")] if token is not None else None


def _stream(ch: grpc.Channel, md: Any, n: int = 1) -> list[Any]:
    replies = list(pb_grpc.GRPCInferenceServiceStub(ch).ModelStreamInfer(
        iter([_infer_request() for _ in range(n)]), timeout=10, metadata=md))
    assert all(not r.error_message for r in replies), replies
    return replies


# one RPC of each class on each service: (call, role it needs)
RPCS: dict[str, tuple[Callable[[grpc.Channel, Any], object], str]] = {
    "ModelMetadata": (lambda ch, md: pb_grpc.GRPCInferenceServiceStub(ch).ModelMetadata(
        pb.ModelMetadataRequest(name="double"), timeout=10, metadata=md), "read"),
    "ListDeployments": (_control, "read"),
    "ModelInfer": (lambda ch, md: pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(
        _infer_request(), timeout=10, metadata=md), "infer"),
    "ModelStreamInfer": (_stream, "infer"),
    "ReportOutcome": (lambda ch, md: cpb_grpc.ControlPlaneStub(ch).ReportOutcome(
        cpb.OutcomeRequest(request_id="no-such-request", value=1.0), timeout=10, metadata=md), "infer"),
    "RepositoryModelLoad": (lambda ch, md: pb_grpc.GRPCInferenceServiceStub(ch).RepositoryModelLoad(
        pb.RepositoryModelLoadRequest(model_name="double"), timeout=30, metadata=md), "deploy"),
    "TransitionVersion": (lambda ch, md: cpb_grpc.ControlPlaneStub(ch).TransitionVersion(
        cpb.TransitionRequest(model_id="nope", version="1.0.0", source="REGISTERED", target="ACTIVE"),
        timeout=10, metadata=md), "deploy"),
}
HOLDER = {"read": "tok-reader-7f3a", "infer": "tok-inferer-91bc", "deploy": "tok-deployer-c2d4"}
LACKING = {"read": "tok-inferer-91bc", "infer": "tok-reader-7f3a", "deploy": "tok-reader-7f3a"}


@pytest.mark.parametrize("rpc", list(RPCS))
def test_each_rpc_class_needs_a_known_token_with_its_role(secured: ServerProcess, pki: Pki, rpc: str) -> None:
    call, role = RPCS[rpc]
    with grpc.secure_channel(secured.address, pki.creds()) as ch:
        details: dict[str, tuple[grpc.StatusCode, str]] = {}
        for case, token in [("none", None), ("bad", BAD_TOKEN), ("lacking", LACKING[role]),
                            ("holder", HOLDER[role]), ("admin", "tok-admin-e5f6")]:
            try:
                call(ch, _md(token))
                details[case] = (C.OK, "")
            except grpc.RpcError as e:
                details[case] = (e.code(), e.details() or "")
    assert details["none"][0] == details["bad"][0] == C.UNAUTHENTICATED
    assert details["lacking"][0] == C.PERMISSION_DENIED and f"'{role}' role" in details["lacking"][1]
    for case in ("holder", "admin"):  # allowed: whatever the call itself answers (NOT_FOUND for made-up ids)
        assert details[case][0] not in (C.UNAUTHENTICATED, C.PERMISSION_DENIED), (case, details[case])
    for _, text in details.values():
        assert not any(t in text for t in (*TOKENS, BAD_TOKEN)), text  # no token echoed back


def test_probes_need_no_token_and_tls_needs_no_client_certificate(secured: ServerProcess, pki: Pki) -> None:
    with grpc.secure_channel(secured.address, pki.creds()) as ch:
        for service in ("", "ready", "model/double"):
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        reflection = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        names = {s.name for r in reflection for s in r.list_services_response.service}
        assert {"inference.GRPCInferenceService", "infer.control.v1.ControlPlane"} <= names
    for client in (None, ("other-ca.pem", None)):  # plaintext, or a client that does not trust the server
        with _channel(pki, secured.address, client) as ch:
            assert _code(lambda ch=ch: _health(ch)) == C.UNAVAILABLE  # type: ignore[misc]


def _retry_delay(error: grpc.RpcError) -> float:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None and status.code == C.RESOURCE_EXHAUSTED.value[0]
    info = error_details_pb2.RetryInfo()
    assert status.details and status.details[0].Unpack(info)
    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9


def test_a_token_over_its_rate_is_told_when_to_retry(secured: ServerProcess, pki: Pki) -> None:
    """limited: 1 request/s, burst 2. The third call at once is refused with a RetryInfo; after that delay it is
    served; other tokens are not slowed by it."""
    with grpc.secure_channel(secured.address, pki.creds()) as ch:
        limited = _md("tok-limited-0a1b")
        _data(ch, limited)
        _data(ch, limited)
        with pytest.raises(grpc.RpcError) as e:
            _data(ch, limited)
        assert e.value.code() == C.RESOURCE_EXHAUSTED and "'limited' is over its rate" in (e.value.details() or "")
        delay = _retry_delay(e.value)
        assert 0.0 < delay <= 1.0
        for _ in range(20):  # the reader's token has no rate
            _data(ch, _md("tok-reader-7f3a"))
        time.sleep(delay + 0.05)
        _data(ch, limited)


def test_a_stream_is_paced_to_its_tokens_rate(secured: ServerProcess, pki: Pki) -> None:
    """paced: 10 requests/s, burst 1: six messages on one stream all succeed, spread over at least 0.5 s."""
    with grpc.secure_channel(secured.address, pki.creds()) as ch:
        start = time.monotonic()
        replies = _stream(ch, _md("tok-paced-3c4d"), n=6)
        elapsed = time.monotonic() - start
    assert len(replies) == 6 and elapsed >= 0.45


def _key_material(pki: Pki) -> list[str]:
    """The base64 lines of every private key the test made (the server's among them)."""
    lines = []
    for key in pki.dir.glob("*.key"):
        lines += [ln for ln in key.read_text().splitlines() if ln and not ln.startswith("-----")]
    return lines


def test_secrets_stay_out_of_the_log(secured: ServerProcess, pki: Pki) -> None:
    """With --log-level debug, after authorised, refused and failing calls, the log holds no token, no private key
    material; (the refusals' own messages are checked in the role test)."""
    with grpc.secure_channel(secured.address, pki.creds()) as ch:
        for token in (*TOKENS, BAD_TOKEN, None):
            for call, _ in RPCS.values():
                _code(lambda call=call, token=token: call(ch, _md(token)))  # type: ignore[misc]
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        assert _code(lambda: stub.ModelInfer(_infer_request(model="no-such-model"), timeout=10,
                                             metadata=_md("tok-admin-e5f6"))) == C.NOT_FOUND
        assert _code(lambda: stub.ModelInfer(_infer_request(), timeout=10,
                                             metadata=[("authorization", "Basic dXNlcjpwYXNz")])) == C.UNAUTHENTICATED
    log = secured.output()
    assert "DEBUG" in log  # debug logging was on
    leaked = [s for s in (*TOKENS, BAD_TOKEN, "dXNlcjpwYXNz", "PRIVATE KEY", *_key_material(pki)) if s in log]
    assert not leaked, leaked


def _postgres_url_with_password(password: str) -> str | None:
    """$INFER_TEST_POSTGRES_DSN (a trust-auth server that CI starts) with a password put in, when set."""
    dsn = os.environ.get("INFER_TEST_POSTGRES_DSN")
    if not dsn:
        return None
    if "://" not in dsn:
        return None  # a key=value string: open_store takes URLs only
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port or 5432}"))


@pytest.mark.parametrize("kind", ["unreachable postgres", "unknown scheme", "malformed url", "live postgres"])
def test_registry_passwords_stay_out_of_the_log(tmp_path: Path, kind: str) -> None:
    password = "pw-" + hashlib.sha256(kind.encode()).hexdigest()[:12]
    url = {"unreachable postgres": f"postgresql://alice:{password}@127.0.0.1:1/registry",
           "unknown scheme": f"mysql://alice:{password}@127.0.0.1:1/registry",
           "malformed url": f"postgresql://alice:{password} x@127.0.0.1:1/registry",  # psycopg quotes it back
           "live postgres": _postgres_url_with_password(password)}[kind]
    if url is None:
        pytest.skip("needs $INFER_TEST_POSTGRES_DSN (CI starts a PostgreSQL server)")
    write_double(tmp_path / "repo")
    srv = ServerProcess(tmp_path / "repo", "--registry-url", url, "--log-level", "debug")
    try:
        if kind == "live postgres":
            srv.wait_ready()
            with grpc.insecure_channel(srv.address) as ch:
                assert _code(lambda: _control(ch)) == C.OK
                stub = cpb_grpc.ControlPlaneStub(ch)
                assert _code(lambda: stub.GetVersion(cpb.VersionRef(model_id="x", version="1.0.0"))) == C.NOT_FOUND
        else:
            assert srv.proc.wait(60) == 2  # cannot start: said once, cleanly
    finally:
        srv.stop()
    log = srv.output()
    assert password not in log and (kind == "live postgres" or "cannot start" in log), log


# ----------------------------------------------------------------------------------------------------------- limits

MAX_MESSAGE = 64 * 1024


@pytest.fixture(scope="module")
def limited(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(repo, "--max-message-bytes", str(MAX_MESSAGE), "--max-concurrent-rpcs", "3",
                        "--max-concurrent-streams", "1")
    yield from _started(srv)


def test_an_oversized_message_is_refused_and_the_server_goes_on(limited: ServerProcess) -> None:
    big = MAX_MESSAGE // 4 + 1024  # FP32 values: the request is past the limit
    with grpc.insecure_channel(limited.address, options=[("grpc.max_send_message_length", 2**30)]) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        assert _code(lambda: stub.ModelInfer(_infer_request(big - big % 4), timeout=10)) == C.RESOURCE_EXHAUSTED
        control = cpb_grpc.ControlPlaneStub(ch)
        oversized = cpb.RegisterVersionRequest(version=cpb.ModelVersion(model_id="m", version="1.0.0"),
                                               content=b"\0" * (MAX_MESSAGE + 1))
        assert _code(lambda: control.RegisterVersion(oversized, timeout=10)) == C.RESOURCE_EXHAUSTED
        stream = stub.ModelStreamInfer(iter([_infer_request(big - big % 4)]), timeout=10)
        assert _code(lambda: list(stream)) == C.RESOURCE_EXHAUSTED
        reply = stub.ModelInfer(_infer_request(), timeout=10)
        assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [2.0] * 4


def _own_connection(address: str) -> grpc.Channel:
    """A channel with its own TCP connection (channels to one address otherwise share one in a process)."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


class _HeldStream:
    """A ModelStreamInfer that has answered once and stays open until released."""

    def __init__(self, ch: grpc.Channel) -> None:
        self._release = threading.Event()

        def requests() -> Iterator[pb.ModelInferRequest]:
            yield _infer_request()
            self._release.wait(30)

        self._replies = pb_grpc.GRPCInferenceServiceStub(ch).ModelStreamInfer(requests(), timeout=30)
        assert not next(self._replies).error_message

    def release(self) -> None:
        self._release.set()
        assert list(self._replies) == []


def _eventually_ok(call: Callable[[], object]) -> None:
    for _ in range(100):
        if _code(call) == C.OK:
            return
        time.sleep(0.05)
    call()


def test_concurrent_rpcs_past_the_cap_are_refused_at_once(limited: ServerProcess) -> None:
    channels = [_own_connection(limited.address) for _ in range(4)]
    try:
        held = [_HeldStream(ch) for ch in channels[:3]]
        start = time.monotonic()
        assert _code(lambda: _data(channels[3])) == C.RESOURCE_EXHAUSTED
        assert time.monotonic() - start < 2.0
        for h in held:
            h.release()
        _eventually_ok(lambda: _data(channels[3]))
    finally:
        for ch in channels:
            ch.close()


def test_streams_past_the_per_connection_cap_wait(limited: ServerProcess) -> None:
    with _own_connection(limited.address) as one, _own_connection(limited.address) as other:
        held = _HeldStream(one)
        stub = pb_grpc.GRPCInferenceServiceStub(one)
        assert _code(lambda: stub.ServerReady(pb.ServerReadyRequest(), timeout=1.0)) == C.DEADLINE_EXCEEDED
        assert _code(lambda: _data(other)) == C.OK  # another connection has its own streams
        held.release()
        _eventually_ok(lambda: _data(one))


# ------------------------------------------------------------------------------------------------------------ paths


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path, Path]]:
    """A repository with symlinks that leave it, beside one that stays inside; a valid model waits outside."""
    base = tmp_path_factory.mktemp("paths")
    root, outside = base / "repo", base / "outside"
    write_double(root)
    write_double(outside, "stranger")
    (root / "escape").symlink_to(outside / "stranger", target_is_directory=True)
    (root / "alias").symlink_to(root / "double", target_is_directory=True)  # inside: allowed
    (root / "linked_version").mkdir()
    (root / "linked_version" / "1").symlink_to(outside / "stranger" / "1", target_is_directory=True)
    (root / "linked_file" / "1").mkdir(parents=True)
    (root / "linked_file" / "1" / "model.onnx").symlink_to(outside / "stranger" / "1" / "model.onnx")
    write_double(root, "climber", config='name: "climber"\nplatform: "onnxruntime_onnx"\n'
                 'default_model_filename: "../../../outside/stranger/1/model.onnx"\n')
    (root / "sneaky.onnx").symlink_to(outside / "stranger" / "1" / "model.onnx")
    for srv in _started(ServerProcess(root, "--model-control-mode", "explicit", "--load-model", "double")):
        yield srv, root, outside


BAD_NAMES = ["../double", "../outside/stranger", "/etc", "..", ".", "double/../double", "escape", "double/1",
             "%2e%2e%2fdouble", "..\\double", "double\0", "\uff44\uff4f\uff55\uff42\uff4c\uff45/../x", "a" * 300]


def test_names_that_leave_the_repository_are_refused(paths: tuple[ServerProcess, Path, Path]) -> None:
    srv = paths[0]
    refused = {C.NOT_FOUND, C.INVALID_ARGUMENT}
    with grpc.insecure_channel(srv.address) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        calls: dict[str, Callable[[str], object]] = {
            "infer": lambda n: stub.ModelInfer(_infer_request(model=n), timeout=10),
            "metadata": lambda n: stub.ModelMetadata(pb.ModelMetadataRequest(name=n), timeout=10),
            "config": lambda n: stub.ModelConfig(pb.ModelConfigRequest(name=n), timeout=10),
            "load": lambda n: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=n), timeout=30),
            "unload": lambda n: stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=n), timeout=30),
        }
        answers = {(what, name): _code(lambda call=call, name=name: call(name))  # type: ignore[misc]
                   for what, call in calls.items() for name in BAD_NAMES}
        assert {k: v for k, v in answers.items() if v not in refused} == {}
        # symlinked version or file, or a config file name, leading outside: a load error, nothing served
        for name in ("linked_version", "linked_file", "climber"):
            assert _code(lambda name=name: calls["load"](name)) == C.INVALID_ARGUMENT, name  # type: ignore[misc]
            assert _code(lambda name=name: calls["infer"](name)) != C.OK  # type: ignore[misc]
        index = {m.name for m in stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10).models}
        assert "escape" not in index and {"double", "alias"} <= index
        # a symlink that stays inside the repository is followed
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="alias"), timeout=30)
        assert _code(lambda: calls["infer"]("alias")) == C.OK


def test_artifacts_by_path_come_only_from_the_repository(paths: tuple[ServerProcess, Path, Path]) -> None:
    srv, root, outside = paths
    candidates = {
        "outside, absolute": outside / "stranger" / "1" / "model.onnx",
        "outside, through ..": root / ".." / "outside" / "stranger" / "1" / "model.onnx",
        "system file": Path("/etc/hostname"),
        "symlink inside pointing out": root / "sneaky.onnx",
        "symlinked model file": root / "linked_file" / "1" / "model.onnx",
    }
    with grpc.insecure_channel(srv.address) as ch:
        stub = cpb_grpc.ControlPlaneStub(ch)

        def register(path: Path, version: str) -> object:
            return stub.RegisterVersion(cpb.RegisterVersionRequest(
                version=cpb.ModelVersion(model_id="paths", version=version, model_type="t", framework="onnx"),
                path=str(path)), timeout=10)

        answers = {what: _code(lambda p=p, i=i: register(p, f"1.0.{i}"))  # type: ignore[misc]
                   for i, (what, p) in enumerate(candidates.items())}
        assert answers == dict.fromkeys(candidates, C.INVALID_ARGUMENT)
        inside = register(root / "double" / "1" / "model.onnx", "2.0.0")
        assert inside.artifact_sha256 == hashlib.sha256(  # type: ignore[attr-defined]
            (root / "double" / "1" / "model.onnx").read_bytes()).hexdigest()
