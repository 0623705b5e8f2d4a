"""infer.client: the Python SDK of infer's gRPC API (KServe V2 data plane, health, and infer's control plane).

    from infer.client import InferClient

    with InferClient("localhost:8001", timeout=10) as client:
        print(client.server_ready(), client.anomaly.score([{"timestamp": 1.7e9, "user": "alice", ...}]).score)

``InferClient`` blocks; ``AsyncInferClient`` has the same methods as coroutines (``grpc.aio``). Both send NumPy
arrays as raw contents in every V2 datatype (object/str/bytes arrays as BYTES), retry UNAVAILABLE with
exponential backoff and full jitter (``RetryPolicy``), keep deadlines (a client default and per call), send a
bearer token and speak TLS or mutual TLS (``TLSConfig``). Task helpers: ``client.anomaly.score``,
``client.forecast.predict``, ``client.vision.classify``/``quality``, ``client.nlp.embed``/``classify``; the
control plane: ``client.control`` with the builders ``ab_test``, ``canary``, ``shadow``, ``fallback_chain``,
``model_version``.

This package imports only the generated stubs (``infer._proto``) and grpc/protobuf/numpy: never the server.

Errors (``code`` a ``grpc.StatusCode``, ``message`` naming the field at fault, ``details`` from google.rpc)::

    InferClientError
     +-- NotFound            NOT_FOUND            unknown model, version, deployment, registry entry
     +-- InvalidArgument     INVALID_ARGUMENT     malformed request (also ValueError; raised before sending too)
     +-- Unavailable         UNAVAILABLE          unreachable, starting, model not ready (retried)
     +-- DeadlineExceeded    DEADLINE_EXCEEDED
     +-- Unauthenticated     UNAUTHENTICATED      no or unknown token
     +-- PermissionDenied    PERMISSION_DENIED    the token lacks the role
     +-- ResourceExhausted   RESOURCE_EXHAUSTED   queue full (``retry_after``), message too large
     +-- Aborted             ABORTED              a deployment's compare-and-set lost
     +-- Unimplemented       UNIMPLEMENTED
     +-- Internal            INTERNAL             the message carries the server log's request id
"""

from infer.client._aio import AsyncInferClient
from infer.client._codec import DATATYPES, InferResult, decode_tensor, encode_tensor
from infer.client._config import RetryPolicy, TLSConfig
from infer.client._control import ab_test, canary, default_answer, fallback_chain, model_version, shadow, target
from infer.client._errors import (
    Aborted,
    DeadlineExceeded,
    InferClientError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from infer.client._sync import InferClient
from infer.client._tasks import (
    AnomalyScores,
    Embeddings,
    Forecast,
    ImageClassifications,
    ImageQuality,
    TextClassifications,
)

__all__ = [
    "DATATYPES",
    "Aborted",
    "AnomalyScores",
    "AsyncInferClient",
    "DeadlineExceeded",
    "Embeddings",
    "Forecast",
    "ImageClassifications",
    "ImageQuality",
    "InferClient",
    "InferClientError",
    "InferResult",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "TLSConfig",
    "TextClassifications",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "ab_test",
    "canary",
    "decode_tensor",
    "default_answer",
    "encode_tensor",
    "fallback_chain",
    "model_version",
    "shadow",
    "target",
]
