"""One exception tree for infer; every class carries a protocol-neutral status code.

```
InferError (INTERNAL)
├── InvalidArgument (INVALID_ARGUMENT)
│   └── ModelConfigError          a config.pbtxt or model file that cannot be served
│       └── ArtifactCorrupted     a stored artifact no longer matches its SHA-256 digest
├── NotFound (NOT_FOUND)
├── AlreadyExists (ALREADY_EXISTS)
├── Unavailable (UNAVAILABLE)     server or model not ready, shutting down
├── ResourceExhausted (RESOURCE_EXHAUSTED)
│   └── QueueFull                 a scheduler's bounded queue is full (carries a retry hint)
├── DeadlineExceeded (DEADLINE_EXCEEDED)
├── Cancelled (CANCELLED)
├── Unauthenticated (UNAUTHENTICATED)
├── PermissionDenied (PERMISSION_DENIED)
├── FailedPrecondition (FAILED_PRECONDITION)
├── Aborted (ABORTED)            a compare-and-set lost to a concurrent writer
├── Unimplemented (UNIMPLEMENTED)
└── ModelExecutionError (INTERNAL) a runtime failed while computing a batch
```

Exactly one place maps these codes to gRPC: ``infer.transport.grpc.status``.
"""

from __future__ import annotations

import enum

__all__ = [
    "Aborted",
    "AlreadyExists",
    "ArtifactCorrupted",
    "Cancelled",
    "Code",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InferError",
    "InvalidArgument",
    "ModelConfigError",
    "ModelExecutionError",
    "NotFound",
    "PermissionDenied",
    "QueueFull",
    "ResourceExhausted",
    "RetryLater",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]


class Code(enum.Enum):
    """Protocol-neutral status codes (the names match gRPC's)."""

    OK = "OK"
    CANCELLED = "CANCELLED"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"


class InferError(Exception):
    """Base of every error infer reports to a client."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(InferError):
    code = Code.INVALID_ARGUMENT


class ModelConfigError(InvalidArgument):
    """A model's configuration or file cannot be served as it is."""


class ArtifactCorrupted(ModelConfigError):
    """An artifact's bytes no longer match the SHA-256 digest it was stored under."""


class NotFound(InferError):
    code = Code.NOT_FOUND


class AlreadyExists(InferError):
    code = Code.ALREADY_EXISTS


class Unavailable(InferError):
    code = Code.UNAVAILABLE


class ResourceExhausted(InferError):
    code = Code.RESOURCE_EXHAUSTED


class RetryLater(ResourceExhausted):
    """A bound is reached for now; the client may retry after ``retry_after_s`` (sent as google.rpc.RetryInfo)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFull(RetryLater):
    """The scheduler's queue is at its bound."""


class DeadlineExceeded(InferError):
    code = Code.DEADLINE_EXCEEDED


class Cancelled(InferError):
    code = Code.CANCELLED


class Unauthenticated(InferError):
    code = Code.UNAUTHENTICATED


class PermissionDenied(InferError):
    code = Code.PERMISSION_DENIED


class FailedPrecondition(InferError):
    code = Code.FAILED_PRECONDITION


class Aborted(InferError):
    """A conditional write found the record changed since it was read; read again and retry."""

    code = Code.ABORTED


class Unimplemented(InferError):
    code = Code.UNIMPLEMENTED


class ModelExecutionError(InferError):
    """The runtime raised while computing; the message is safe to show the client."""
