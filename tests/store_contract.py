"""The registry store's contract: behaviours every backend must show, written once and run on each.

A backend's test module imports these tests by name (pytest collects them from its namespace) and defines the
fixtures they take:

- ``store``: an empty ``RegistryStore`` whose clock ticks 1000, 1001, ... (one tick per schema migration first);
- ``sql``: runs one statement on a connection of its own, autocommitted, and returns its rows: the database as
  another client sees it (plain SQL both dialects accept, no parameters);
- ``open_again``: opens another ``RegistryStore`` on the same database (the caller closes it).

Import each test into exactly one module per backend, so that it runs once on each. The crash helpers at the end
serve each backend's own SIGKILL test, whose setup and checks beyond these differ.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from infer.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from infer.registry.store import SCHEMA_VERSION, ModelVersionRecord, RegistryStore, ServingTransition

Sql = Callable[[str], list[tuple[Any, ...]]]
OpenAgain = Callable[[], RegistryStore]

DIGEST = "ab" * 32
SPEC = {"variants": [{"model": "m", "version": "1", "weight": 1.0}]}


def record(version: str = "1.0.0", model_id: str = "fraud", **kw: Any) -> ModelVersionRecord:
    values: dict[str, Any] = {
        "model_id": model_id,
        "version": version,
        "model_type": "anomaly",
        "framework": "onnx",
        "artifact_uri": f"file:///artifacts/sha256/ab/{DIGEST}",
        "artifact_sha256": DIGEST,
        "trained_at": 1_700_000_000.123456789,
        "training_data_id": "ds-2024-01",
        "training_data_size": 10_000_000_000,  # beyond 32 bits: the column is a 64-bit integer
        "hyperparameters": {"n_estimators": 100, "contamination": 0.01, "nested": {"ünïcode": [1, None, True]}},
        "metrics": {"auc": 0.91, "f1": 0.7},
        "training_run": "run-1",
    }
    values.update(kw)
    return ModelVersionRecord(**values)


# ---------------------------------------------------------------------------------------------------------- schema


def test_a_version_2_database_is_migrated_in_place(store: RegistryStore, sql: Sql, open_again: OpenAgain) -> None:
    store.put_deployment("kept", SPEC)
    sql("ALTER TABLE deployments DROP COLUMN revision")  # as the previous release left it
    sql("DROP TABLE serving_transitions")
    sql("DELETE FROM schema_version WHERE version = 3")
    with open_again() as again:
        assert again.schema_version() == SCHEMA_VERSION
        assert again.deployments() == {"kept": SPEC}
        assert again.deployments_with_revisions() == {"kept": (SPEC, 0)}  # rows from before revisions start at 0
        assert again.deployment_revisions() == {"kept": 0}
        assert again.put_deployment("kept", SPEC, expected_revision=0) > 0


def test_a_newer_schema_is_refused(store: RegistryStore, sql: Sql, open_again: OpenAgain) -> None:
    sql(f"INSERT INTO schema_version (version, applied_at) VALUES ({SCHEMA_VERSION + 1}, 0)")
    with pytest.raises(FailedPrecondition, match="schema version"):
        open_again()


# ---------------------------------------------------------------------------------------------------------- versions


def test_register_and_get(store: RegistryStore) -> None:
    stored = store.register(record())
    assert stored.created_at == 1000.0 + SCHEMA_VERSION  # one tick per schema migration came first
    got = store.get("fraud", "1.0.0")
    assert got == stored  # every field round-trips: floats exactly, the 64-bit integer, the JSON texts
    assert got.trained_at == 1_700_000_000.123456789 and got.training_data_size == 10_000_000_000
    assert got.hyperparameters == {"n_estimators": 100, "contamination": 0.01, "nested": {"ünïcode": [1, None, True]}}
    assert got.metrics == {"auc": 0.91, "f1": 0.7}
    assert got.status == "REGISTERED"
    with pytest.raises(NotFound):
        store.get("fraud", "9.9.9")


def test_duplicates_parents_and_model_type(store: RegistryStore, sql: Sql) -> None:
    store.register(record("1.0.0"))
    with pytest.raises(AlreadyExists):
        store.register(record("1.0.0"))
    with pytest.raises(NotFound, match="parent"):
        store.register(record("1.1.0", parent_version="0.9.0"))
    with pytest.raises(NotFound, match="parent"):  # a new model whose parent is missing: its models row goes too
        store.register(record("1.0.0", model_id="orphan", parent_version="0.9.0"))
    child = store.register(record("1.1.0", parent_version="1.0.0", training_run="run-2"))
    assert child.parent_version == "1.0.0"
    with pytest.raises(InvalidArgument, match="model_type"):
        store.register(record("2.0.0", model_type="vision"))
    assert [r.version for r in store.list(model_id="fraud")] == ["1.0.0", "1.1.0"]  # failures left no rows
    assert sql("SELECT model_id FROM models") == [("fraud",)]
    assert sql("SELECT COUNT(*) FROM transitions") == [(2,)]
    assert sql("SELECT COUNT(*) FROM audit") == [(2,)]


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
    assert diff["fields"]["training_data_size"] == {"v1": 10_000_000_000, "v2": 12_000}
    assert diff["fields"]["parent_version"] == {"v1": None, "v2": "1.0.0"}
    assert diff["fields"]["hyperparameters.n_estimators"] == {"v1": 100, "v2": 200}
    assert diff["fields"]["hyperparameters.nested"] == {"v1": {"ünïcode": [1, None, True]}, "v2": None}
    assert "hyperparameters.contamination" not in diff["fields"]
    assert "framework" not in diff["fields"]
    assert diff["metrics"]["auc"]["delta"] == pytest.approx(0.03)
    assert diff["metrics"]["f1"] == {"v1": 0.7, "v2": None, "delta": None}
    assert diff["metrics"]["precision"]["delta"] is None
    with pytest.raises(NotFound):
        store.compare("fraud", "1.0.0", "3.0.0")


# ---------------------------------------------------------------------------------------------------------- transitions


def test_transitions_and_history(store: RegistryStore) -> None:
    store.register(record(), actor="ci")
    t = store.record_transition("fraud", "1.0.0", "REGISTERED", "STAGING", "offline eval ok", actor="alice")
    assert (t.source, t.target, t.reason, t.actor) == ("REGISTERED", "STAGING", "offline eval ok", "alice")
    store.record_transition("fraud", "1.0.0", "STAGING", "PRODUCTION", "canary ok", actor="bob")
    history = store.history("fraud", "1.0.0")
    assert [(h.source, h.target) for h in history] == [(None, "REGISTERED"), ("REGISTERED", "STAGING"),
                                                        ("STAGING", "PRODUCTION")]
    assert history[1] == t
    assert [h.id for h in history] == sorted(h.id for h in history)
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


# ---------------------------------------------------------------------------------------------------------- audit


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


# ---------------------------------------------------------------------------------------------------------- deployments


def test_deployments_put_delete_list_and_revisions(store: RegistryStore) -> None:
    assert store.schema_version() == SCHEMA_VERSION == 3  # revisions came with schema version 3
    r1 = store.put_deployment("a", SPEC, expected_revision=0)  # 0: must not exist yet
    with pytest.raises(Aborted, match=r"revision \d+, not 0"):
        store.put_deployment("a", SPEC, expected_revision=0)
    rb = store.put_deployment("b", {"variants": []}, actor="bob")
    r2 = store.put_deployment("a", {**SPEC, "sticky_key": "user"}, expected_revision=r1)
    assert r2 > r1
    with pytest.raises(Aborted):  # stale: someone else wrote r2
        store.put_deployment("a", SPEC, "late", expected_revision=r1)
    assert store.deployments() == {"a": {**SPEC, "sticky_key": "user"}, "b": {"variants": []}}  # refused: no change
    assert store.deployment_revisions() == {"a": r2, "b": rb}
    with pytest.raises(Aborted):
        store.delete_deployment("a", expected_revision=r1)
    assert store.delete_deployment("a", expected_revision=r2)
    assert not store.delete_deployment("a")
    r3 = store.put_deployment("a", SPEC)  # re-created: a new, higher revision (no ABA)
    assert r3 > r2
    assert store.deployment_revisions() == {"a": r3, "b": rb}
    assert store.deployments_with_revisions()["a"] == (SPEC, r3)
    actions = [e.action for e in store.audit_log(10)]
    assert actions.count("set_deployment") == 4 and actions.count("delete_deployment") == 1


def test_serving_transitions_in_order_and_filtered(store: RegistryStore) -> None:
    moves = [ServingTransition("m", 1, 1.0 + i, src, dst, f"why {i}", "host:1")
             for i, (src, dst) in enumerate([(None, "LOAD"), ("LOAD", "WARM"), ("WARM", "ACTIVE")])]
    store.record_serving_transitions(moves)
    store.record_serving_transitions([ServingTransition("m", 2, 9.0, None, "LOAD", "load started", "host:2")])
    assert store.serving_history("m", 1) == moves
    assert [t.version for t in store.serving_history("m")] == [1, 1, 1, 2]
    assert [t.target for t in store.serving_history("m", limit=2)] == ["ACTIVE", "LOAD"]  # the newest two
    assert store.serving_history("other") == []


# ---------------------------------------------------------------------------------------------------------- crashes


# A writer that registers versions and walks each through transitions as fast as it can, until it is killed.
_WRITER = """
import sys
from infer.registry.store import ModelVersionRecord, open_store
store = open_store(sys.argv[1])
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


def sigkill_a_writer(url: str, after_s: float = 0.5) -> None:
    """Start a writer on the registry at ``url`` (what open_store takes) and SIGKILL it ``after_s`` seconds in."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready", proc.stderr.read() if proc.stderr else b""
        time.sleep(after_s)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL


def check_the_killed_writers_registry(store: RegistryStore, sql: Sql) -> None:
    """After sigkill_a_writer: every version's transitions form one chain that ends at its status, each write's audit
    row committed with it, and the store keeps writing."""
    versions = store.list(model_id="crash")
    assert len(versions) > 1, "the writer made no progress"
    for v in versions:
        chain = [(t.source, t.target) for t in store.history("crash", v.version)]
        assert chain[0] == (None, "REGISTERED")
        assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(chain)), chain
        assert chain[-1][1] == v.status, (v.version, v.status, chain)
    assert sql("SELECT (SELECT COUNT(*) FROM audit) - (SELECT COUNT(*) FROM transitions)") == [(0,)]
    store.register(record("9.0.0", model_id="crash", parent_version=versions[-1].version))
    assert store.get("crash", "9.0.0").parent_version == versions[-1].version
