"""Model artifacts, content-addressed by SHA-256 and verified every time they are handed out.

An artifact is one file (a ``model.onnx``, a ``model.plan``). Directories are not stored: a model that needs several
files is packed by its task into one file first (a deterministic tar would do; this store does not build one).

:class:`ArtifactStore` is the interface; :class:`LocalArtifactStore` keeps artifacts under a local directory::

    <root>/sha256/<first two hex digits>/<full hex digest>         the bytes (read-only)
    <root>/sha256/<first two hex digits>/<full hex digest>.json    metadata: original file name, size
    <root>/tmp/                                                     staging; same filesystem, so rename is atomic

A write goes to a temp file under ``<root>/tmp``, is fsynced, renamed into place and the directory fsynced, so a reader
never sees a partial file, even after SIGKILL or power loss; the metadata file follows the object, so none describes
an object that is not there. A writer holds an exclusive ``flock`` on its temp file until the file is in place, and a
store that opens removes the temp files nobody holds: those of writers that died mid-put (a SIGKILL, a crash), never
those of live writers in other processes sharing the directory. Putting the same bytes again is a no-op that returns
the same :class:`ArtifactRef`. :meth:`ArtifactStore.get` hashes the file and raises :class:`ArtifactCorrupted` when it
no longer matches its digest.

An S3-compatible store implements the same four methods without changing callers (no boto3 here; any client will do):

- ``put``: hash the bytes locally, then ``HEAD s3://bucket/prefix/sha256/ab/<hex>``; when absent, upload with the
  digest as the object's checksum (``x-amz-checksum-sha256``, or Content-MD5 where only that is offered) and
  ``If-None-Match: *`` so a concurrent upload of the same content cannot clobber it. The original name goes in object
  metadata. Uploads of an object are atomic in S3, so no temp-and-rename dance is needed.
- ``get``: download to a local content-addressed cache (this very :class:`LocalArtifactStore` layout serves well),
  verify the digest on arrival and on every ``get``, and return the cached path.
- ``exists`` is a ``HEAD``; ``delete`` a ``DELETE`` of the object (and of the cached copy).
- The uri is ``s3://bucket/prefix/sha256/ab/<hex>``; :class:`ArtifactRef` is the same type for every store.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from infer.errors import ArtifactCorrupted, InvalidArgument, NotFound

__all__ = ["ArtifactRef", "ArtifactStore", "LocalArtifactStore", "sha256_file"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """Where an artifact lives and what it must hash to. ``size`` and ``name`` are optional when resolving."""

    uri: str
    sha256: str
    size: int | None = None
    name: str | None = None  # the original file name, for humans and for runtimes that look at the suffix

    def __post_init__(self) -> None:
        if not _HEX.match(self.sha256):
            raise InvalidArgument(f"artifact digest {self.sha256!r} is not 64 lowercase hex digits")


def sha256_file(path: Path) -> tuple[str, int]:
    """The SHA-256 hex digest and size of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class ArtifactStore(abc.ABC):
    """Stores single-file artifacts by content; every implementation verifies the digest in :meth:`get`."""

    @abc.abstractmethod
    def put(self, source: Path | bytes, name: str | None = None) -> ArtifactRef:
        """Store a file (or bytes) and return its reference; storing the same content twice is a no-op."""

    @abc.abstractmethod
    def get(self, ref: ArtifactRef) -> Path:
        """A local path to the artifact, verified against ``ref.sha256``.

        Raises :class:`~infer.errors.NotFound` when absent and :class:`ArtifactCorrupted` on a mismatch.
        """

    @abc.abstractmethod
    def exists(self, ref: ArtifactRef) -> bool:
        """Whether the store holds content with this digest (not verified)."""

    @abc.abstractmethod
    def delete(self, ref: ArtifactRef) -> bool:
        """Remove the artifact; returns False when it was not there."""


class LocalArtifactStore(ArtifactStore):
    """Content-addressed artifacts under a local directory (see the module docstring for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._objects = self.root / "sha256"
        self._tmp = self.root / "tmp"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self.swept = self._sweep_staging()  # temp files of writers that died mid-put, removed

    def path_for(self, sha256: str) -> Path:
        if not _HEX.match(sha256):
            raise InvalidArgument(f"artifact digest {sha256!r} is not 64 lowercase hex digits")
        return self._objects / sha256[:2] / sha256

    def uri_for(self, sha256: str) -> str:
        return self.path_for(sha256).as_uri()

    def put(self, source: Path | bytes, name: str | None = None) -> ArtifactRef:
        if isinstance(source, bytes | bytearray | memoryview):
            return self._put(_bytes_chunks(bytes(source)), name)
        source = Path(source)
        if not source.is_file():
            raise InvalidArgument(f"artifact {source} is not a file (directories are not stored; pack them first)")
        with source.open("rb") as f:
            return self._put(_file_chunks(f), name if name is not None else source.name)

    def get(self, ref: ArtifactRef) -> Path:
        path = self.path_for(ref.sha256)
        if not path.is_file():
            raise NotFound(f"artifact sha256:{ref.sha256} is not in the store at {self.root}")
        digest, size = sha256_file(path)
        if digest != ref.sha256 or (ref.size is not None and size != ref.size):
            raise ArtifactCorrupted(
                f"artifact {path} is corrupted: expected sha256:{ref.sha256} ({ref.size} bytes), "
                f"found sha256:{digest} ({size} bytes)"
            )
        return path

    def exists(self, ref: ArtifactRef) -> bool:
        return self.path_for(ref.sha256).is_file()

    def delete(self, ref: ArtifactRef) -> bool:
        path = self.path_for(ref.sha256)
        _meta_path(path).unlink(missing_ok=True)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    def _put(self, chunks: Iterator[bytes], name: str | None) -> ArtifactRef:
        """Write chunks to a locked temp file under ``tmp/`` while hashing, fsync, install; the temp file is removed
        on any failure (and, should this process die, by the next store that opens)."""
        with _staged(self._tmp, "put-") as (out, staged):
            digest = hashlib.sha256()
            size = 0
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
            hexdigest = digest.hexdigest()
            self._install(staged, hexdigest, size, name)  # under the lock: a sweep never takes the file away
        return ArtifactRef(self.uri_for(hexdigest), hexdigest, size, self._stored_name(hexdigest, name))

    def _install(self, staged: Path, digest: str, size: int, name: str | None) -> None:
        """Atomically rename the staged file into place, unless an intact copy is already there; then its metadata."""
        final = self.path_for(digest)
        if not final.parent.is_dir():
            final.parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self._objects)  # the new directory's entry, durable before anything is put in it
        if not (final.is_file() and sha256_file(final) == (digest, size)):  # else idempotent: already stored
            os.chmod(staged, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.replace(staged, final)  # atomic on POSIX: readers see the old file or the whole new one
            _fsync_dir(final.parent)
        if name is not None and not _meta_path(final).exists():  # the first name given is kept
            _write_atomic(_meta_path(final), json.dumps({"name": name, "size": size}).encode(), self._tmp)

    def _sweep_staging(self) -> int:
        """Remove the temp files under ``tmp/`` that no writer holds (their writer died); returns how many."""
        removed = 0
        for path in self._tmp.glob("*.partial"):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue  # finished or removed meanwhile
            try:
                if _try_lock(fd) is True:
                    path.unlink(missing_ok=True)
                    removed += 1
            finally:
                os.close(fd)
        if removed:
            log.warning("artifact store %s: removed %d temp file(s) left by writers that died mid-put", self.root,
                        removed)
        return removed

    def _stored_name(self, digest: str, fallback: str | None) -> str | None:
        meta = _meta_path(self.path_for(digest))
        try:
            stored = json.loads(meta.read_text()).get("name")
        except (OSError, ValueError):
            return fallback
        return stored if isinstance(stored, str) else fallback


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _bytes_chunks(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), _CHUNK):
        yield data[start : start + _CHUNK]


def _file_chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


def _write_atomic(path: Path, data: bytes, tmp_dir: Path) -> None:
    with _staged(tmp_dir, "meta-") as (out, staged):
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
        os.replace(staged, path)
    _fsync_dir(path.parent)


def _try_lock(fd: int) -> bool | None:
    """Take an exclusive flock without waiting: True, False when another holds it, None when the filesystem has none."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


@contextlib.contextmanager
def _staged(tmp_dir: Path, prefix: str) -> Iterator[tuple[BinaryIO, Path]]:
    """A new temp file under ``tmp_dir``, open for writing and flock-held until the block ends (the block renames it
    into place, or it is removed here), so that a sweep removes only the temp files of writers that died."""
    while True:
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=prefix, suffix=".partial")
        locked = _try_lock(fd)
        try:
            if locked is None or (locked and os.stat(tmp_name).st_ino == os.fstat(fd).st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # a sweep took the file between its creation and the lock: take another
    staged = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out, staged
    finally:
        staged.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
