"""The local content-addressed artifact store: round trip, verification, idempotence, atomic writes."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from infer.errors import ArtifactCorrupted, InvalidArgument, ModelConfigError, NotFound
from infer.registry import artifacts
from infer.registry.artifacts import ArtifactRef, LocalArtifactStore, sha256_file

DATA = b"onnx-bytes" * 1000


def _objects(root: Path) -> list[Path]:
    return sorted(p for p in (root / "sha256").rglob("*") if p.is_file() and p.suffix != ".json")


def test_put_bytes_round_trip(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    ref = store.put(DATA, name="model.onnx")
    digest = hashlib.sha256(DATA).hexdigest()
    assert ref.sha256 == digest and ref.size == len(DATA) and ref.name == "model.onnx"
    path = store.get(ref)
    assert path == tmp_path / "store" / "sha256" / digest[:2] / digest
    assert path.read_bytes() == DATA
    assert ref.uri == path.as_uri()
    assert store.exists(ref)
    assert not os.stat(path).st_mode & stat.S_IWUSR  # stored read-only
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_put_file_keeps_name_in_metadata_not_path(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(DATA)
    store = LocalArtifactStore(tmp_path / "store")
    ref = store.put(src)
    assert ref.name == "model.onnx"
    assert store.get(ref).name == ref.sha256
    assert sha256_file(store.get(ref)) == (ref.sha256, len(DATA))
    # a later put under another name keeps the first name
    src2 = tmp_path / "renamed.onnx"
    src2.write_bytes(DATA)
    assert store.put(src2).name == "model.onnx"


def test_put_is_idempotent(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    first = store.put(DATA, name="model.onnx")
    mtime = os.stat(store.get(first)).st_mtime_ns
    second = store.put(DATA, name="model.onnx")
    assert first == second
    assert _objects(tmp_path / "store") == [store.get(first)]
    assert os.stat(store.get(first)).st_mtime_ns == mtime  # not rewritten


def test_get_detects_corruption(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    ref = store.put(DATA)
    path = store.get(ref)
    os.chmod(path, 0o644)
    path.write_bytes(DATA[:-1] + b"X")
    with pytest.raises(ArtifactCorrupted, match="corrupted") as info:
        store.get(ref)
    assert isinstance(info.value, ModelConfigError)
    # putting the content again repairs it
    store.put(DATA)
    assert store.get(ref).read_bytes() == DATA


def test_get_detects_truncation_against_size(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    ref = store.put(DATA)
    path = store.get(ref)
    os.chmod(path, 0o644)
    path.write_bytes(b"")
    with pytest.raises(ArtifactCorrupted):
        store.get(ref)


def test_missing_and_delete(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    ref = store.put(DATA, name="m.onnx")
    assert store.delete(ref)
    assert not store.exists(ref)
    assert not store.delete(ref)
    with pytest.raises(NotFound):
        store.get(ref)
    assert list((tmp_path / "store" / "sha256").rglob("*.json")) == []


def test_bad_inputs(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    with pytest.raises(InvalidArgument):
        ArtifactRef("file:///x", "not-a-digest")
    with pytest.raises(InvalidArgument, match="not a file"):
        store.put(tmp_path)  # directories are not stored


def test_interrupted_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalArtifactStore(tmp_path / "store")

    def failing_chunks(data: bytes) -> Iterator[bytes]:
        yield data[:10]
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "_bytes_chunks", failing_chunks)
    with pytest.raises(OSError, match="disk full"):
        store.put(DATA, name="model.onnx")
    assert _objects(tmp_path / "store") == []
    assert list((tmp_path / "store" / "tmp").iterdir()) == []
    assert not store.exists(ArtifactRef("x", hashlib.sha256(DATA).hexdigest()))


def test_failed_fsync_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(DATA)
    store = LocalArtifactStore(tmp_path / "store")

    def failing_fsync(fd: int) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr(artifacts.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        store.put(src)
    monkeypatch.undo()
    assert _objects(tmp_path / "store") == []
    assert list((tmp_path / "store" / "tmp").iterdir()) == []
    assert store.get(store.put(src)).read_bytes() == DATA  # and a retry succeeds
