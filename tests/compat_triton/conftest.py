"""Compatibility tests with the unmodified ``tritonclient`` package.

They run in their own pytest process (see the Makefile): tritonclient's generated modules
register the same ``inference.*`` protobuf names as infer's, so one process cannot import both.
The server runs in a subprocess, as it does in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures import ServerProcess, build_test_repository


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_repository(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="session")
def server(repo: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(repo).wait_ready()
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest.fixture(scope="session")
def client(server: ServerProcess) -> Iterator[object]:
    import tritonclient.grpc as tc

    c = tc.InferenceServerClient(server.address)
    yield c
    c.close()
