"""The registry's metadata store on SQLite: versions, search, compare, transitions, audit, and crash safety."""

from __future__ import annotations

import itertools
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infer.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from infer.registry.store import (
    POSTGRES,
    SCHEMA_VERSION,
    SQLITE,
    ModelVersionRecord,
    RegistryStore,
    semver_key,
)

DIGEST = "ab" * 32


def record(version: str = "1.0.0", model_id: str = "fraud", **kw: Any) -> ModelVersionRecord:
    values: dict[str, Any] = {
        "model_id": model_id,
        "version": version,
        "model_type": "anomaly",
        "framework": "onnx",
        "artifact_uri": f"file:///artifacts/sha256/ab/{DIGEST}",
        "artifact_sha256": DIGEST,
        "trained_at": 1_700_000_000.0,
        "training_data_id": "ds-2024-01",
        "training_data_size": 10_000,
        "hyperparameters": {"n_estimators": 100, "contamination": 0.01},
        "metrics": {"auc": 0.91, "f1": 0.7},
        "training_run": "run-1",
    }
    values.update(kw)
    return ModelVersionRecord(**values)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RegistryStore]:
    ticks = itertools.count(1000)
    with RegistryStore.sqlite(tmp_path / "registry.db", clock=lambda: float(next(ticks))) as s:
        yield s


def test_sqlite_settings_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    store = RegistryStore.sqlite(path)
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
    RegistryStore.sqlite(path).close()  # reopening runs no migration twice
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_dialects_share_the_sql() -> None:
    sql = "SELECT 1 FROM versions WHERE model_id = ? AND version = ?"
    assert SQLITE.sql(sql) == sql
    assert POSTGRES.sql(sql) == "SELECT 1 FROM versions WHERE model_id = %s AND version = %s"


def test_register_and_get(store: RegistryStore) -> None:
    stored = store.register(record())
    assert stored.created_at == 1000.0 + SCHEMA_VERSION  # one tick per schema migration came first
    got = store.get("fraud", "1.0.0")
    assert got == stored
    assert got.hyperparameters == {"n_estimators": 100, "contamination": 0.01}
    assert got.metrics == {"auc": 0.91, "f1": 0.7}
    assert got.status == "REGISTERED"
    with pytest.raises(NotFound):
        store.get("fraud", "9.9.9")


def test_semver_validation_and_order() -> None:
    for bad in ("1", "1.0", "01.0.0", "1.0.0-", "v1.0.0", "1.0.0.0"):
        with pytest.raises(InvalidArgument):
            record(bad)
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0", "1.2.0",
               "1.10.0", "2.0.0+build.5"]
    assert sorted(reversed(ordered), key=semver_key) == ordered


def test_record_validation() -> None:
    with pytest.raises(InvalidArgument):
        record(artifact_sha256="xyz")
    with pytest.raises(InvalidArgument):
        record(metrics={"auc": float("nan")})
    with pytest.raises(InvalidArgument):
        record(hyperparameters={"f": object()})
    with pytest.raises(InvalidArgument):
        record(model_id="bad/id")
    with pytest.raises(InvalidArgument):
        record("1.0.0", parent_version="1.0.0")


def test_duplicates_parents_and_model_type(store: RegistryStore) -> None:
    store.register(record("1.0.0"))
    with pytest.raises(AlreadyExists):
        store.register(record("1.0.0"))
    with pytest.raises(NotFound, match="parent"):
        store.register(record("1.1.0", parent_version="0.9.0"))
    child = store.register(record("1.1.0", parent_version="1.0.0", training_run="run-2"))
    assert child.parent_version == "1.0.0"
    with pytest.raises(InvalidArgument, match="model_type"):
        store.register(record("2.0.0", model_type="vision"))
    assert [r.version for r in store.list(model_id="fraud")] == ["1.0.0", "1.1.0"]  # failures left no rows


def test_list_filters_and_metric_search(store: RegistryStore) -> None:
    store.register(record("1.10.0", metrics={"auc": 0.95}))
    store.register(record("1.2.0", metrics={"auc": 0.85}, framework="numba"))
    store.register(record("1.0.0-rc.1", metrics={"f1": 0.5}))
    store.register(record("0.1.0", model_id="demand", model_type="forecast", metrics={"mape": 0.1}))
    assert [(r.model_id, r.version) for r in store.list()] == [
        ("demand", "0.1.0"), ("fraud", "1.0.0-rc.1"), ("fraud", "1.2.0"), ("fraud", "1.10.0"),
    ]
    assert [r.version for r in store.list(model_type="forecast")] == ["0.1.0"]
    assert [r.version for r in store.list(framework="numba")] == ["1.2.0"]
    assert [r.version for r in store.list(metric_filter=("auc", ">=", 0.9))] == ["1.10.0"]
    assert [r.version for r in store.list(model_id="fraud", metric_filter=("auc", "<", 0.9))] == ["1.2.0"]
    store.record_transition("fraud", "1.2.0", "REGISTERED", "STAGING", "passed offline eval")
    assert [r.version for r in store.list(status="STAGING")] == ["1.2.0"]
    assert store.list(model_id="nobody") == []
    with pytest.raises(InvalidArgument):
        store.list(metric_filter=("auc", "~", 0.9))


def test_compare(store: RegistryStore) -> None:
    store.register(record("1.0.0"))
    store.register(record("1.1.0", parent_version="1.0.0", hyperparameters={"n_estimators": 200, "contamination": 0.01},
                          metrics={"auc": 0.94, "precision": 0.8}, training_data_size=12_000, training_run="run-2"))
    diff = store.compare("fraud", "1.0.0", "1.1.0")
    assert diff["fields"]["training_data_size"] == {"v1": 10_000, "v2": 12_000}
    assert diff["fields"]["parent_version"] == {"v1": None, "v2": "1.0.0"}
    assert diff["fields"]["hyperparameters.n_estimators"] == {"v1": 100, "v2": 200}
    assert "hyperparameters.contamination" not in diff["fields"]
    assert "framework" not in diff["fields"]
    assert diff["metrics"]["auc"]["delta"] == pytest.approx(0.03)
    assert diff["metrics"]["f1"] == {"v1": 0.7, "v2": None, "delta": None}
    assert diff["metrics"]["precision"]["delta"] is None
    with pytest.raises(NotFound):
        store.compare("fraud", "1.0.0", "3.0.0")


def test_transitions_and_history(store: RegistryStore) -> None:
    store.register(record(), actor="ci")
    t = store.record_transition("fraud", "1.0.0", "REGISTERED", "STAGING", "offline eval ok", actor="alice")
    assert (t.source, t.target, t.reason, t.actor) == ("REGISTERED", "STAGING", "offline eval ok", "alice")
    store.record_transition("fraud", "1.0.0", "STAGING", "PRODUCTION", "canary ok", actor="bob")
    history = store.history("fraud", "1.0.0")
    assert [(h.source, h.target) for h in history] == [(None, "REGISTERED"), ("REGISTERED", "STAGING"),
                                                        ("STAGING", "PRODUCTION")]
    assert [h.at for h in history] == sorted(h.at for h in history)
    assert history[0].actor == "ci" and history[-1].reason == "canary ok"
    assert store.get("fraud", "1.0.0").status == "PRODUCTION"
    with pytest.raises(NotFound):
        store.history("fraud", "2.0.0")
    with pytest.raises(NotFound):
        store.record_transition("fraud", "2.0.0", "REGISTERED", "STAGING", "x")


def test_stale_transition_is_refused_and_changes_nothing(store: RegistryStore) -> None:
    store.register(record())
    store.record_transition("fraud", "1.0.0", "REGISTERED", "STAGING", "first")
    with pytest.raises(FailedPrecondition, match="is STAGING"):
        store.record_transition("fraud", "1.0.0", "REGISTERED", "ARCHIVED", "stale view")
    assert store.get("fraud", "1.0.0").status == "STAGING"
    assert len(store.history("fraud", "1.0.0")) == 2


def test_transition_is_one_transaction(store: RegistryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the status update but before the transition row rolls the update back too."""
    store.register(record())

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("crash between statements")

    monkeypatch.setattr(RegistryStore, "_append_transition", staticmethod(boom))
    with pytest.raises(RuntimeError):
        store.record_transition("fraud", "1.0.0", "REGISTERED", "STAGING", "x")
    monkeypatch.undo()
    assert store.get("fraud", "1.0.0").status == "REGISTERED"
    assert len(store.history("fraud", "1.0.0")) == 1
    store.record_transition("fraud", "1.0.0", "REGISTERED", "STAGING", "retry works")


def test_audit(store: RegistryStore) -> None:
    store.register(record(), actor="ci")
    store.record_transition("fraud", "1.0.0", "REGISTERED", "STAGING", "ok", actor="alice")
    entry = store.audit("alice", "login", {"from": "cli"})
    log = store.audit_log(limit=10)
    assert log[0] == entry
    assert [(e.actor, e.action) for e in log] == [("alice", "login"), ("alice", "transition"), ("ci", "register")]
    assert log[1].detail["target"] == "STAGING"
    assert len(store.audit_log(limit=1)) == 1
    with pytest.raises(InvalidArgument):
        store.audit_log(limit=0)


# A writer that registers versions and walks each through transitions as fast as it can, until it is killed.
_WRITER = """
import sys
from infer.registry.store import ModelVersionRecord, RegistryStore
store = RegistryStore.sqlite(sys.argv[1])
print("ready", flush=True)
steps = [("REGISTERED", "STAGING"), ("STAGING", "PRODUCTION"), ("PRODUCTION", "ARCHIVED")]
i = 0
while True:
    version = f"1.0.{i}"
    store.register(ModelVersionRecord("crash", version, "anomaly", "onnx", "file:///a", "cd" * 32,
                                      metrics={"auc": i / 1e6}, hyperparameters={"i": i}))
    for source, target in steps[: i % 4]:
        store.record_transition("crash", version, source, target, f"step {i}", "writer")
    i += 1
"""


@pytest.mark.parametrize("attempt", range(3))
def test_sigkill_mid_writes_leaves_the_registry_consistent(tmp_path: Path, attempt: int) -> None:
    path = tmp_path / "registry.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready", proc.stderr.read() if proc.stderr else b""
        time.sleep(0.5 + 0.05 * attempt)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        versions = conn.execute("SELECT version, status FROM versions WHERE model_id = 'crash'").fetchall()
        assert len(versions) > 1, "the writer made no progress"
        for version, status in versions:
            chain = conn.execute("SELECT source, target FROM transitions WHERE model_id = 'crash' AND version = ? "
                                 "ORDER BY id", (version,)).fetchall()
            assert chain[0] == (None, "REGISTERED")
            assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(chain)), chain
            assert chain[-1][1] == status, (version, status, chain)
        audits = conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        transitions = conn.execute("SELECT COUNT(*) FROM transitions").fetchone()[0]
        assert audits == transitions  # each write's audit row committed with it
    finally:
        conn.close()

    with RegistryStore.sqlite(path) as reopened:  # and the store opens it and keeps writing
        latest = reopened.list(model_id="crash")[-1]
        reopened.register(record("9.0.0", model_id="crash", parent_version=latest.version))
        assert reopened.get("crash", "9.0.0").parent_version == latest.version


# ---------------------------------------------------------------------------------------------------------- open_store

from infer.registry.store import open_store  # noqa: E402


@pytest.mark.parametrize("form", ["url", "path"])
def test_open_store_names_sqlite_by_url_or_path(tmp_path: Path, form: str) -> None:
    path = tmp_path / "not" / "yet" / "registry.db"  # missing directories are created
    with open_store(f"sqlite://{path}" if form == "url" else str(path)) as store:
        assert store.dialect is SQLITE
        store.register(record())
    with RegistryStore.sqlite(path) as again:  # the very file the URL named
        assert again.get("fraud", "1.0.0").artifact_sha256 == DIGEST


@pytest.mark.parametrize("url", ["", "  ", "sqlite://relative.db", "sqlite:///", "mysql://db/registry",
                                 "http://example.com/registry.db"])
def test_open_store_refuses_what_it_cannot_open(url: str) -> None:
    with pytest.raises(InvalidArgument):
        open_store(url)


@pytest.mark.parametrize("url", ["postgresql://infer@db.example:5432/registry", "postgres://db.example/registry"])
def test_open_store_without_psycopg_names_the_extra(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    with pytest.raises(FailedPrecondition, match=r"pip install 'infer\[postgres\]'"):
        open_store(url)
