"""Encoding for :mod:`kernels.anomaly_features`: strings to fixed-width bytes, FNV-1a hashes and file-type codes.

Import the public names from ``kernels.anomaly_features`` (its docstring describes the event schema).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

__all__ = ["FILE_TYPES", "EncodedEvents", "encode_events", "encode_strings", "file_type_codes", "fnv1a64"]

FILE_TYPES: Final[tuple[str, ...]] = (  # 47 types + "none/unknown" = 48 per-user buckets
    *("exe", "dll", "so", "msi", "jar", "scr", "apk", "dmg", "iso"),  # executables and images of them
    *("sh", "ps1", "bat", "vbs", "js", "py", "go", "java", "sql"),  # scripts and code
    *("zip", "tar", "gz", "7z", "rar"),  # archives
    *("pdf", "doc", "docx", "xls", "xlsx", "pptx", "txt", "csv", "md", "html"),  # documents
    *("jpg", "png", "gif", "svg", "psd", "mp4", "mov", "mp3", "wav"),  # images and media
    *("json", "xml", "yaml", "parquet"),  # data
    "log",
)
KEY_WIDTH: Final[int] = 64  # bytes of a user / namespace name that are hashed
FILE_TYPE_WIDTH: Final[int] = 16
HASH_WIDTH: Final[int] = 72  # bytes of content_hash kept (a 64-char hash plus room to see it is too long)
_FNV_OFFSET: Final = np.uint64(0xCBF29CE484222325)
_FNV_PRIME: Final = np.uint64(0x100000001B3)


def encode_strings(values: ArrayLike, width: int) -> NDArray[np.uint8]:
    """UTF-8 bytes of each string, truncated or zero-padded to ``width``: ``uint8[N, width]``.

    Vectorised through NumPy's ``S`` dtype (ASCII fast path, UTF-8 otherwise).  Trailing NULs of a string
    are lost, like padding; the kernels read a row up to its first NUL.
    """
    arr = np.asarray(values)
    if arr.dtype.kind != "S":
        if arr.dtype.kind not in "OU":
            arr = arr.astype(str)
        try:
            arr = arr.astype(f"S{width}")
        except UnicodeEncodeError:
            arr = np.char.encode(arr.astype(str), "utf-8")
    enc = np.ascontiguousarray(arr.reshape(-1).astype(f"S{width}"))
    return enc.view(np.uint8).reshape(enc.size, width)


@njit(nogil=True)
def fnv1a64(mat: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """64-bit FNV-1a hash of each row of bytes, up to its first NUL (the padding)."""
    n, w = mat.shape
    out = np.empty(n, np.uint64)
    for i in range(n):
        h = _FNV_OFFSET
        for j in range(w):
            b = mat[i, j]
            if b == 0:
                break
            h = (h ^ np.uint64(b)) * _FNV_PRIME
        out[i] = h
    return out


def _fnv1a64_py(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _padded_bytes(s: object, width: int) -> bytes:
    """Reference encoding: the UTF-8 bytes the kernels see for ``s`` (up to ``width`` and the first NUL)."""
    return str(s).encode("utf-8")[:width].split(b"\0", 1)[0]


_FT_CODE: Final[dict[bytes, int]] = {t.encode(): i + 1 for i, t in enumerate(FILE_TYPES)}
_FT_HASHES = np.array([_fnv1a64_py(t) for t in _FT_CODE], np.uint64)
_FT_ORDER = np.argsort(_FT_HASHES)
_FT_HASH_SORTED = _FT_HASHES[_FT_ORDER]
_FT_CODE_SORTED = np.array(list(_FT_CODE.values()), np.int32)[_FT_ORDER]
assert np.unique(_FT_HASHES).size == len(FILE_TYPES)


@njit(nogil=True)
def file_type_codes(mat: NDArray[np.uint8]) -> NDArray[np.int32]:
    """``file_type_code`` of each encoded file type: 1 + index into FILE_TYPES, 0 if not in it."""
    h = fnv1a64(mat)
    k = np.searchsorted(_FT_HASH_SORTED, h)
    out = np.zeros(h.size, np.int32)
    for i in range(h.size):
        if k[i] < _FT_HASH_SORTED.size and _FT_HASH_SORTED[k[i]] == h[i]:
            out[i] = _FT_CODE_SORTED[k[i]]
    return out


class EncodedEvents(NamedTuple):
    """Events with strings replaced by hashes, codes and fixed-width bytes (see :func:`encode_events`)."""

    timestamp: NDArray[np.float64]
    user: NDArray[np.uint64]  # FNV-1a of the name's first KEY_WIDTH bytes
    namespace: NDArray[np.uint64]
    file_type: NDArray[np.int32]  # file_type_code
    content_hash: NDArray[np.uint8]  # (N, HASH_WIDTH) bytes
    content_key: NDArray[np.uint64]  # FNV-1a of those bytes
    file_size: NDArray[np.int64]
    hash_time_ms: NDArray[np.float32]
    api_latency_ms: NDArray[np.float32]
    concurrency: NDArray[np.int32]

    @property
    def num_events(self) -> int:
        return int(self.timestamp.size)

    def slice(self, start: int, stop: int) -> EncodedEvents:
        return EncodedEvents._make(a[start:stop] for a in self)


def _numeric(events: Mapping[str, Any]) -> dict[str, NDArray[Any]]:
    return {
        "timestamp": np.ascontiguousarray(events["timestamp"], np.float64),
        "file_size": np.ascontiguousarray(events["file_size"], np.int64),
        "hash_time_ms": np.ascontiguousarray(events["hash_time_ms"], np.float32),
        "api_latency_ms": np.ascontiguousarray(events["api_latency_ms"], np.float32),
        "concurrency": np.ascontiguousarray(events["concurrency"], np.int32),
    }


def encode_events(events: Mapping[str, Any] | EncodedEvents) -> EncodedEvents:
    """Encode raw events (the module docstring's schema) once, for one or more :func:`extract` calls."""
    if isinstance(events, EncodedEvents):
        return events
    num = _numeric(events)
    hashes = encode_strings(events["content_hash"], HASH_WIDTH)
    enc = EncodedEvents(
        timestamp=num["timestamp"],
        user=fnv1a64(encode_strings(events["user"], KEY_WIDTH)),
        namespace=fnv1a64(encode_strings(events["namespace"], KEY_WIDTH)),
        file_type=file_type_codes(encode_strings(events["file_type"], FILE_TYPE_WIDTH)),
        content_hash=hashes,
        content_key=fnv1a64(hashes),
        file_size=num["file_size"],
        hash_time_ms=num["hash_time_ms"],
        api_latency_ms=num["api_latency_ms"],
        concurrency=num["concurrency"],
    )
    _check_encoded(enc)
    return enc


def _check_encoded(enc: EncodedEvents) -> None:
    n = enc.timestamp.size
    if any(a.shape[0] != n for a in enc) or enc.content_hash.ndim != 2:
        raise ValueError("event fields must all have the same length")
    if enc.content_hash.shape[1] >= 256:
        raise ValueError("content_hash rows must be narrower than 256 bytes")
    if n and not np.isfinite(enc.timestamp).all():
        raise ValueError("timestamps must be finite")

