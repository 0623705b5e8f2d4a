"""Integration tests: the real server in a subprocess on a loopback port, talked to with infer's own stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from fixtures import ServerProcess, build_test_repository

from infer._proto import grpc_service_pb2_grpc as pb_grpc


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_repository(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="session")
def server(repo: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(repo, "--max-queue-size", "512").wait_ready()
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def channel(server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    opts = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    async with grpc.aio.insecure_channel(server.address, options=opts) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)
