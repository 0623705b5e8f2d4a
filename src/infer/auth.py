"""Access control: bearer tokens with roles and request rates, protocol-neutral.

Roles: ``read`` (metadata, configs, statistics, repository index, registry queries, model performance and
drift), ``infer`` (inference, outcome and ground-truth reports), ``deploy`` (load and unload models, registry
and deployment changes: audited), ``admin`` (everything, including any method this module does not name).
Health checks and reflection need no token, so probes keep working. Tokens are kept as SHA-256 digests: the
token file never needs to hold a secret in clear.

A token may carry a request rate: ``rate_per_s`` requests a second on average, ``burst`` at once (default:
``max(1, rate_per_s)``), enforced by a :class:`TokenBucket` per token. A unary call over the rate is refused with
:class:`RateLimited` (RESOURCE_EXHAUSTED with a retry hint); the messages of a stream wait for their turn instead.

Token file (JSON)::

    {"tokens": [{"name": "ci", "sha256": "<hex digest of the token>", "roles": ["read", "infer"],
                 "rate_per_s": 50, "burst": 100},
                {"name": "dev", "token": "plain-text-for-development", "roles": ["admin"]}]}

:func:`redact` scrubs secrets (bearer tokens, passwords in URLs and libpq strings, PEM private keys) from text
bound for a log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from infer.errors import InvalidArgument, PermissionDenied, RetryLater, Unauthenticated

__all__ = ["ROLES", "AuditLog", "Identity", "RateLimited", "TokenBucket", "TokenTable", "redact", "required_role"]

ROLES: Final = frozenset({"read", "infer", "deploy", "admin"})

_READ_METHODS = frozenset({
    # inference.GRPCInferenceService
    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig", "ModelStatistics",
    "RepositoryIndex", "SystemSharedMemoryStatus", "CudaSharedMemoryStatus",
    # infer.control.v1.ControlPlane
    "GetVersion", "ListVersions", "CompareVersions", "VersionHistory", "AuditLog", "ServingHistory",
    "GetDeployment", "ListDeployments", "GetExperiment", "GetModelPerformance", "GetDrift",
})
_INFER_METHODS = frozenset({"ModelInfer", "ModelStreamInfer", "ReportOutcome", "ReportGroundTruth"})
_DEPLOY_METHODS = frozenset({"RegisterVersion", "TransitionVersion", "SetDeployment", "DeleteDeployment",
                             "RepositoryModelLoad", "RepositoryModelUnload", "SystemSharedMemoryRegister",
                             "SystemSharedMemoryUnregister", "CudaSharedMemoryRegister",
                             "CudaSharedMemoryUnregister", "TraceSetting", "LogSettings"})
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def required_role(method: str) -> str | None:
    """The role a gRPC method (``/package.Service/Method``) needs; None when it needs none.

    A method named nowhere here needs ``admin``: a new RPC is closed until someone decides who may call it.
    """
    if method.startswith(_OPEN_SERVICES):
        return None
    name = method.rsplit("/", 1)[-1]
    if name in _READ_METHODS:
        return "read"
    if name in _INFER_METHODS:
        return "infer"
    if name in _DEPLOY_METHODS:
        return "deploy"
    return "admin"


class RateLimited(RetryLater):
    """A token's request rate is spent."""


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved up; time from an injectable monotonic clock.

    Not thread-safe: the server calls it from its event loop only.
    """

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0) or not (math.isfinite(burst) and burst >= 1):
            raise ValueError("a token bucket needs rate_per_s > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate_per_s)
        self._at = now

    def try_take(self) -> float:
        """Take one token: 0.0 when taken, else the seconds until one will be there (nothing taken)."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate_per_s

    def reserve(self) -> float:
        """Take one token now, into debt if need be: the seconds to wait before using it (0.0: at once).

        Debt makes later :meth:`try_take` calls wait too, so waiting callers and refused callers share one rate.
        """
        self._refill()
        self._tokens -= 1
        return max(0.0, -self._tokens / self.rate_per_s)


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    roles: frozenset[str]
    bucket: TokenBucket | None = field(default=None, compare=False, repr=False)

    def allows(self, role: str) -> bool:
        return role in self.roles or "admin" in self.roles


class TokenTable:
    def __init__(self, identities: dict[str, Identity]) -> None:
        self._by_digest = identities

    @classmethod
    def load(cls, path: Path, clock: Callable[[], float] = time.monotonic) -> TokenTable:
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"auth token file {path}: {e}") from None
        entries = data.get("tokens", []) if isinstance(data, dict) else []
        table: dict[str, Identity] = {}
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            where = f"auth token file {path}: tokens[{i}]"
            if not isinstance(entry, dict):
                raise InvalidArgument(f"{where}: each token is a JSON object")
            digest, ident = _entry(entry, i, where, clock)
            if digest in table:
                raise InvalidArgument(f"{where}: the same token is given twice")
            table[digest] = ident
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

    @staticmethod
    def admit(ident: Identity) -> None:
        """Count one request against the identity's rate; :class:`RateLimited` when it is spent."""
        if ident.bucket is None:
            return
        wait = ident.bucket.try_take()
        if wait > 0:
            raise RateLimited(
                f"'{ident.name}' is over its rate of {ident.bucket.rate_per_s:g} requests/s: retry in {wait:.3f} s",
                wait,
            )


def _entry(entry: dict[str, Any], i: int, where: str, clock: Callable[[], float]) -> tuple[str, Identity]:
    """One token-file entry: its digest and identity (never echoing the token in an error)."""
    roles_in = entry.get("roles", [])
    roles = frozenset(roles_in) if isinstance(roles_in, list) and all(isinstance(r, str) for r in roles_in) else None
    if not roles or not roles <= ROLES:
        raise InvalidArgument(f"{where}: roles must be a non-empty subset of {sorted(ROLES)}")
    clear, digest = entry.get("token"), entry.get("sha256")
    if not isinstance(clear, str | None) or not isinstance(digest, str | None):
        raise InvalidArgument(f"{where}: 'token' and 'sha256' are strings")
    digest = (digest or (hashlib.sha256(clear.encode()).hexdigest() if clear else "")).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InvalidArgument(f"{where}: give 'sha256' (hex digest) or 'token'")
    return digest, Identity(str(entry.get("name", f"token-{i}")), roles, _bucket(entry, where, clock))


def _bucket(entry: dict[str, Any], where: str, clock: Callable[[], float]) -> TokenBucket | None:
    rate, burst = entry.get("rate_per_s"), entry.get("burst")
    if rate is None:
        if burst is not None:
            raise InvalidArgument(f"{where}: 'burst' needs 'rate_per_s'")
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not (math.isfinite(rate) and rate > 0):
        raise InvalidArgument(f"{where}: 'rate_per_s' must be a number > 0")
    if burst is None:
        burst = max(1.0, float(rate))
    if isinstance(burst, bool) or not isinstance(burst, int | float) or not (math.isfinite(burst) and burst >= 1):
        raise InvalidArgument(f"{where}: 'burst' must be a number >= 1")
    return TokenBucket(float(rate), float(burst), clock)


_SECRETS: Final = (
    # -----BEGIN ... PRIVATE KEY----- blocks, whole
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S),
     "[private key redacted]"),
    # scheme://user:password@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*):[^\s@/'\"]*@"), r"\1:***@"),
    # libpq key=value strings and query parameters: password=..., sslpassword=...
    (re.compile(r"(?i)\b((?:ssl)?password\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s&'\",;)]+)"), r"\1***"),
    # authorization: Bearer <token>
    (re.compile(r"(?i)(\bbearer\s+)[^\s'\",;)]+"), r"\1***"),
)


def redact(text: str) -> str:
    """``text`` with secrets replaced: bearer tokens, URL and libpq passwords, PEM private keys."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


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
