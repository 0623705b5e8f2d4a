"""Connection settings shared by both clients: TLS from PEM files, the retry policy and the channel options."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from infer import __version__
from infer.client._errors import InferClientError

__all__ = ["RetryPolicy", "TLSConfig", "auth_metadata", "channel_options"]

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class TLSConfig:
    """TLS from PEM files: ``ca`` verifies the server (None: the system's roots); ``cert`` and ``key`` together
    present a client certificate (mutual TLS); ``server_name`` overrides the name checked against the server's
    certificate (when the target is an address its certificate does not name)."""

    ca: StrPath | None = None
    cert: StrPath | None = None
    key: StrPath | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLSConfig: give cert and key together (mutual TLS) or neither")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: StrPath | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return grpc.ssl_channel_credentials(root_certificates=read(self.ca), private_key=read(self.key),
                                            certificate_chain=read(self.cert))


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of calls answered UNAVAILABLE (server unreachable, starting, or the model not ready), and of no
    other code: at most ``max_attempts`` attempts in all, the n-th retry after a random delay in
    ``[0, min(max_backoff, initial_backoff * multiplier ** (n - 1))]`` seconds (exponential backoff with full
    jitter), never past the call's deadline. ``on_retry(attempt, error, delay)`` is called before each wait."""

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    on_retry: Callable[[int, InferClientError, float], None] | None = field(default=None, compare=False)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1 (1 = no retries)")
        if not (self.initial_backoff >= 0 and self.max_backoff >= 0 and self.multiplier >= 1):
            raise ValueError("RetryPolicy: backoffs must be >= 0 and the multiplier >= 1")

    def backoff(self, retry: int) -> float:
        """The delay before retry number ``retry`` (1 = the first retry): full jitter below the capped curve."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return self.rng.uniform(0.0, cap)

    def delay(self, attempt: int, error: InferClientError, remaining: float | None) -> float | None:
        """Seconds to wait before trying again after ``attempt`` (1-based) failed with ``error``; None: give up
        (not UNAVAILABLE, attempts used up, or the wait would pass the deadline ``remaining`` seconds away)."""
        if error.code is not grpc.StatusCode.UNAVAILABLE or attempt >= self.max_attempts:
            return None
        wait = self.backoff(attempt)
        if remaining is not None and wait >= remaining:
            return None
        if self.on_retry is not None:
            self.on_retry(attempt, error, wait)
        return wait


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)


def remaining(deadline: float | None, now: float) -> float | None:
    return None if deadline is None else deadline - now


def deadline_of(timeout: float | None, now: float) -> float | None:
    if timeout is None:
        return None
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds (got {timeout})")
    return now + timeout


def channel_options(tls: TLSConfig | None, retry: RetryPolicy,
                    extra: list[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    """No message size limits (the server lifts its own), the client's user agent, and reconnection that follows
    the retry policy: gRPC's own backoff (1 s growing to 120 s) would leave a restarted server unreached for
    minutes while every retry fails fast."""
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
        ("grpc.primary_user_agent", f"infer-client/{__version__}"),
        ("grpc.initial_reconnect_backoff_ms", max(100, int(retry.initial_backoff * 1000))),
        ("grpc.min_reconnect_backoff_ms", max(100, int(retry.initial_backoff * 1000))),
        ("grpc.max_reconnect_backoff_ms", max(100, int(retry.max_backoff * 1000))),
    ]
    if tls is not None and tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return opts + list(extra or [])


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


def tls_of(tls: TLSConfig | bool | None) -> TLSConfig | None:
    """``True`` means TLS with the system's roots; False/None plaintext."""
    if tls is True:
        return TLSConfig()
    return tls or None
