"""Access control: bearer tokens with roles, protocol-neutral.

Roles: ``read`` (metadata, configs, statistics, repository index), ``infer`` (inference),
``deploy`` (load and unload models: audited), ``admin`` (everything). Health checks and reflection
need no token, so probes keep working. Tokens are kept as SHA-256 digests: the token file never
needs to hold a secret in clear.

Token file (JSON)::

    {"tokens": [{"name": "ci", "sha256": "<hex digest of the token>", "roles": ["read", "infer"]},
                {"name": "dev", "token": "plain-text-for-development", "roles": ["admin"]}]}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from infer.errors import InvalidArgument, PermissionDenied, Unauthenticated

__all__ = ["ROLES", "AuditLog", "Identity", "TokenTable", "required_role"]

ROLES: Final = frozenset({"read", "infer", "deploy", "admin"})

_INFER_METHODS = frozenset({"ModelInfer", "ModelStreamInfer", "ReportOutcome"})
_DEPLOY_METHODS = frozenset({"RegisterVersion", "TransitionVersion", "SetDeployment", "DeleteDeployment",
                             "RepositoryModelLoad", "RepositoryModelUnload", "SystemSharedMemoryRegister",
                             "SystemSharedMemoryUnregister", "CudaSharedMemoryRegister",
                             "CudaSharedMemoryUnregister", "TraceSetting", "LogSettings"})
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def required_role(method: str) -> str | None:
    """The role a gRPC method (``/package.Service/Method``) needs; None when it needs none."""
    if method.startswith(_OPEN_SERVICES):
        return None
    name = method.rsplit("/", 1)[-1]
    if name in _INFER_METHODS:
        return "infer"
    if name in _DEPLOY_METHODS:
        return "deploy"
    return "read"


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    roles: frozenset[str]

    def allows(self, role: str) -> bool:
        return role in self.roles or "admin" in self.roles


class TokenTable:
    def __init__(self, identities: dict[str, Identity]) -> None:
        self._by_digest = identities

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"auth token file {path}: {e}") from None
        table: dict[str, Identity] = {}
        for i, entry in enumerate(data.get("tokens", []) if isinstance(data, dict) else []):
            where = f"auth token file {path}: tokens[{i}]"
            roles = frozenset(entry.get("roles", []))
            if not roles or not roles <= ROLES:
                raise InvalidArgument(f"{where}: roles must be a non-empty subset of {sorted(ROLES)}")
            digest = entry.get("sha256") or (hashlib.sha256(entry["token"].encode()).hexdigest()
                                             if entry.get("token") else "")
            if len(digest) != 64:
                raise InvalidArgument(f"{where}: give 'sha256' (hex digest) or 'token'")
            table[digest.lower()] = Identity(str(entry.get("name", f"token-{i}")), roles)
        if not table:
            raise InvalidArgument(f"auth token file {path}: no tokens")
        return cls(table)

    def authenticate(self, authorization: str) -> Identity:
        """The identity behind an ``authorization: Bearer <token>`` header value."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization: a 'Bearer <token>' header is required")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        for known, ident in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return ident
        raise Unauthenticated("authorization: unknown token")

    @staticmethod
    def authorize(ident: Identity, role: str, method: str) -> None:
        if not ident.allows(role):
            raise PermissionDenied(f"'{ident.name}' lacks the '{role}' role needed for {method.rsplit('/', 1)[-1]}")


class AuditLog:
    """Control-plane changes as JSON lines: who, what, when, and how it ended."""

    def __init__(self, path: Path | None) -> None:
        self._path = path

    def write(self, who: str, action: str, detail: dict[str, Any]) -> None:
        if self._path is None:
            return
        line = json.dumps({"at": time.time(), "who": who, "action": action, **detail}, sort_keys=True)
        with self._path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
