"""Token table loading, role checks and the method -> role map (no sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infer.auth import TokenTable, required_role
from infer.errors import InvalidArgument, PermissionDenied, Unauthenticated


def _table(tmp_path: Path, tokens: object) -> TokenTable:
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"tokens": tokens}))
    return TokenTable.load(p)


def test_methods_map_to_roles() -> None:
    assert required_role("/grpc.health.v1.Health/Check") is None
    assert required_role("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is None
    assert required_role("/inference.GRPCInferenceService/ModelInfer") == "infer"
    assert required_role("/inference.GRPCInferenceService/ModelStreamInfer") == "infer"
    assert required_role("/inference.GRPCInferenceService/RepositoryModelLoad") == "deploy"
    assert required_role("/inference.GRPCInferenceService/ModelMetadata") == "read"


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
])
def test_bad_token_files_are_refused(tmp_path: Path, tokens: object, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        _table(tmp_path, tokens)
