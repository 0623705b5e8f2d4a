"""TLS and mutual TLS on the gRPC port, with certificates made by the openssl CLI for the test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fixtures import ServerProcess, write_double

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_pki(d: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "localhost"), ("client", "client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        extra = ["-extfile", "san.cnf"] if name == "server" else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-out", f"{name}.pem", *extra, cwd=d)


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    d = tmp_path_factory.mktemp("pki")
    _make_pki(d)
    write_double(d / "repo")
    srv = ServerProcess(d / "repo", "--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server.key"),
                        "--tls-client-ca", str(d / "ca.pem")).wait_ready()
    yield srv, d
    assert srv.stop() == 0, srv.output()


def _ready(channel: grpc.Channel) -> bool:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    return bool(stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready)


def test_a_client_with_a_certificate_is_served(mtls: tuple[ServerProcess, Path]) -> None:
    srv, d = mtls
    creds = grpc.ssl_channel_credentials((d / "ca.pem").read_bytes(), (d / "client.key").read_bytes(),
                                         (d / "client.pem").read_bytes())
    with grpc.secure_channel(srv.address, creds) as ch:
        assert _ready(ch)


@pytest.mark.parametrize("kind", ["plaintext", "tls-without-client-certificate"])
def test_other_clients_are_refused(mtls: tuple[ServerProcess, Path], kind: str) -> None:
    srv, d = mtls
    if kind == "plaintext":
        channel = grpc.insecure_channel(srv.address)
    else:
        channel = grpc.secure_channel(srv.address, grpc.ssl_channel_credentials((d / "ca.pem").read_bytes()))
    with channel, pytest.raises(grpc.RpcError) as e:
        _ready(channel)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_probe_speaks_tls(mtls: tuple[ServerProcess, Path]) -> None:
    srv, d = mtls
    base = [sys.executable, "-m", "infer.cli", "probe", "--address", srv.address, "--service", "ready"]
    tls = ["--tls-ca", str(d / "ca.pem"), "--tls-cert", str(d / "client.pem"), "--tls-key", str(d / "client.key")]
    assert subprocess.run([*base, *tls], capture_output=True, timeout=60).returncode == 0
    assert subprocess.run(base, capture_output=True, timeout=60).returncode != 0
