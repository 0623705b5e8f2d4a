"""The registry's metadata store on a real PostgreSQL server: the SQLite suite's behaviours, concurrency, crash safety.

The server: ``$INFER_TEST_POSTGRES_DSN`` when set (CI starts one with ``scripts/postgres.sh``; its database is wiped
by these tests), else a throwaway one this module starts with ``scripts/postgres.sh`` when PostgreSQL's server
binaries are installed, else the module is skipped. Each test starts from an empty ``public`` schema.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from infer.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from infer.registry.store import (
    SCHEMA_VERSION,
    ModelVersionRecord,
    RegistryStore,
    ServingTransition,
    open_store,
    postgres_connect,
)

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
DSN_ENV = "INFER_TEST_POSTGRES_DSN"
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
        "training_data_size": 10_000_000_000,  # beyond 32 bits: the column is BIGINT
        "hyperparameters": {"n_estimators": 100, "contamination": 0.01, "nested": {"ünïcode": [1, None, True]}},
        "metrics": {"auc": 0.91, "f1": 0.7},
        "training_run": "run-1",
    }
    values.update(kw)
    return ModelVersionRecord(**values)


# ---------------------------------------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _have_server_binaries() -> bool:
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if shutil.which("pg_config"):
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        candidates.append(os.path.join(bindir, "initdb"))
    return shutil.which("initdb") is not None or any(os.access(c, os.X_OK) for c in candidates)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    dsn = os.environ.get(DSN_ENV)
    if dsn:
        yield dsn
        return
    if not _have_server_binaries():
        pytest.skip(f"no PostgreSQL: set {DSN_ENV} or install the server (initdb, pg_ctl; Debian: postgresql)")
    script = str(ROOT / "scripts" / "postgres.sh")
    workdir = tempfile.mkdtemp(prefix="infer-pg-")  # not under pytest's private tmp: root hands it to `postgres`
    errors = []
    try:
        for _ in range(3):  # the free port may be taken between the probe and the server's bind
            done = subprocess.run(["bash", script, "start", workdir, str(_free_port())], capture_output=True,
                                  text=True, timeout=180)
            if done.returncode == 0:
                break
            errors.append(done.stderr)
        else:
            pytest.fail(f"scripts/postgres.sh could not start a server:\n{errors[-1]}")
        yield done.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", script, "stop", workdir], capture_output=True, timeout=120)
        shutil.rmtree(workdir, ignore_errors=True)


def _sql(dsn: str, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One autocommitted statement on a connection of its own: the database as another client sees it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(text, params)
        return cur.fetchall() if cur.description is not None else []


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return postgres_dsn


@pytest.fixture
def store(dsn: str) -> Iterator[RegistryStore]:
    ticks = itertools.count(1000)
    with RegistryStore.postgres(dsn, clock=lambda: float(next(ticks))) as s:
        yield s


def _race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once, one thread each; each one's result or the exception it raised, in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


# ---------------------------------------------------------------------------------------------------------- schema


def test_schema_and_reopen(dsn: str) -> None:
    with open_store(dsn) as store:
        assert store.dialect.name == "postgres"
        assert store.schema_version() == SCHEMA_VERSION
    with open_store(dsn.replace("postgresql://", "postgres://", 1)) as again:  # reopening migrates nothing twice
        assert again.schema_version() == SCHEMA_VERSION
    assert _sql(dsn, "SELECT version FROM schema_version ORDER BY version") == [
        (n,) for n in range(1, SCHEMA_VERSION + 1)
    ]
    identity = _sql(dsn, "SELECT table_name, identity_generation FROM information_schema.columns "
                         "WHERE table_schema = 'public' AND column_name = 'id' ORDER BY table_name")
    assert identity == [("audit", "ALWAYS"), ("serving_transitions", "ALWAYS"), ("transitions", "ALWAYS")]
    types = dict(_sql(dsn, "SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = 'public' AND table_name = 'versions'"))
    assert types["trained_at"] == "double precision" and types["training_data_size"] == "bigint"


def test_concurrent_migrations_on_an_empty_database(dsn: str) -> None:
    """Stores starting at once (replicas of the control plane) all open; each migration runs exactly once."""
    for attempt in range(5):  # the race it guards against shows on most tries, not all
        if attempt:
            _sql(dsn, "DROP SCHEMA public CASCADE")
            _sql(dsn, "CREATE SCHEMA public")
        stores = _race(*[lambda: RegistryStore.postgres(dsn)] * 4)
        try:
            assert all(isinstance(s, RegistryStore) for s in stores), stores
            assert {s.schema_version() for s in stores} == {SCHEMA_VERSION}
        finally:
            for s in stores:
                if isinstance(s, RegistryStore):
                    s.close()
        assert _sql(dsn, "SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_version") == [
            (SCHEMA_VERSION, SCHEMA_VERSION)
        ]


def test_a_version_2_database_is_migrated_in_place(dsn: str) -> None:
    with open_store(dsn) as store:
        store.put_deployment("kept", SPEC)
    _sql(dsn, "ALTER TABLE deployments DROP COLUMN revision")  # as the previous release left it
    _sql(dsn, "DROP TABLE serving_transitions")
    _sql(dsn, "DELETE FROM schema_version WHERE version = 3")
    with open_store(dsn) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.deployments_with_revisions() == {"kept": (SPEC, 0)}
        assert store.put_deployment("kept", SPEC, expected_revision=0) > 0


def test_a_newer_schema_is_refused(dsn: str) -> None:
    with open_store(dsn):
        pass
    _sql(dsn, "INSERT INTO schema_version (version, applied_at) VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(FailedPrecondition, match="schema version"):
        open_store(dsn)


def test_unreachable_server_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="cannot connect"):
        postgres_connect(f"postgresql://postgres@127.0.0.1:{_free_port()}/infer_test?connect_timeout=5")


# ---------------------------------------------------------------------------------------------------------- versions


def test_register_and_get(store: RegistryStore) -> None:
    stored = store.register(record())
    assert stored.created_at == 1000.0 + SCHEMA_VERSION  # one tick per schema migration came first
    got = store.get("fraud", "1.0.0")
    assert got == stored  # every field round-trips: floats exactly, the BIGINT, the JSON texts
    assert got.trained_at == 1_700_000_000.123456789 and got.training_data_size == 10_000_000_000
    assert got.hyperparameters["nested"] == {"ünïcode": [1, None, True]}
    assert got.metrics == {"auc": 0.91, "f1": 0.7}
    assert got.status == "REGISTERED"
    with pytest.raises(NotFound):
        store.get("fraud", "9.9.9")


def test_duplicates_parents_and_model_type(store: RegistryStore, dsn: str) -> None:
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
    assert _sql(dsn, "SELECT model_id FROM models") == [("fraud",)]
    assert _sql(dsn, "SELECT COUNT(*) FROM transitions") == [(2,)]
    assert _sql(dsn, "SELECT COUNT(*) FROM audit") == [(2,)]


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


def test_two_stores_moving_one_version_at_once(dsn: str) -> None:
    """Exactly one of two writers moving the same version wins; the other is refused, on every try."""
    with RegistryStore.postgres(dsn) as a, RegistryStore.postgres(dsn) as b:
        for i in range(10):
            version = f"1.0.{i}"
            a.register(record(version))
            results = _race(partial(a.record_transition, "fraud", version, "REGISTERED", "STAGING", "a"),
                            partial(b.record_transition, "fraud", version, "REGISTERED", "ARCHIVED", "b"))
            assert sorted(type(r).__name__ for r in results) == ["FailedPrecondition", "TransitionRecord"], results
            assert len(b.history("fraud", version)) == 2
            assert a.get("fraud", version).status == a.history("fraud", version)[-1].target


def test_concurrent_first_registrations_of_a_model(dsn: str) -> None:
    """Two writers registering the first versions of one new model, or the same version: no driver errors leak."""
    with RegistryStore.postgres(dsn) as a, RegistryStore.postgres(dsn) as b:
        for i in range(10):
            model = f"new-{i}"
            results = _race(partial(a.register, record("1.0.0", model_id=model)),
                            partial(b.register, record("1.1.0", model_id=model)))
            assert all(isinstance(r, ModelVersionRecord) for r in results), results
            results = _race(partial(a.register, record("2.0.0", model_id=model)),
                            partial(b.register, record("2.0.0", model_id=model)))
            assert sorted(type(r).__name__ for r in results) == ["AlreadyExists", "ModelVersionRecord"], results
        assert len(a.list()) == 30


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


def test_a_statement_failing_in_the_database_rolls_back_the_whole_write(store: RegistryStore, dsn: str) -> None:
    """The server rejects the second row (NOT NULL): the first row is not kept, and the connection stays usable."""
    good = ServingTransition("m", 1, 1.0, None, "LOAD", "load", "host:1")
    bad = ServingTransition("m", 1, 2.0, "LOAD", None, "broken", "host:1")  # type: ignore[arg-type]
    with pytest.raises(psycopg.errors.NotNullViolation):
        store.record_serving_transitions([good, bad])
    assert store.serving_history("m") == []
    assert _sql(dsn, "SELECT COUNT(*) FROM serving_transitions") == [(0,)]
    assert _sql(dsn, "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'") == [(0,)]  # lock released
    store.record_serving_transitions([good])
    assert store.serving_history("m") == [good]


def test_no_transaction_is_left_open_between_calls(store: RegistryStore, dsn: str) -> None:
    store.register(record())
    store.get("fraud", "1.0.0")
    store.list()
    states = _sql(dsn, "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> "
                       "pg_backend_pid() AND backend_type = 'client backend'")
    assert states == [("idle",)]  # the store's connection: not "idle in transaction"


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
    r1 = store.put_deployment("a", SPEC, expected_revision=0)  # 0: must not exist yet
    with pytest.raises(Aborted, match=r"revision \d+, not 0"):
        store.put_deployment("a", SPEC, expected_revision=0)
    store.put_deployment("b", {"variants": []}, actor="bob")
    r2 = store.put_deployment("a", {**SPEC, "sticky_key": "user"}, expected_revision=r1)
    assert r2 > r1
    with pytest.raises(Aborted):  # stale: someone else wrote r2
        store.put_deployment("a", SPEC, "late", expected_revision=r1)
    assert store.deployments() == {"a": {**SPEC, "sticky_key": "user"}, "b": {"variants": []}}
    assert store.deployment_revisions()["a"] == r2
    with pytest.raises(Aborted):
        store.delete_deployment("a", expected_revision=r1)
    assert store.delete_deployment("a", expected_revision=r2)
    assert not store.delete_deployment("a")
    r3 = store.put_deployment("a", SPEC)  # re-created: a new, higher revision (no ABA)
    assert r3 > r2
    assert store.deployments_with_revisions()["a"] == (SPEC, r3)
    actions = [e.action for e in store.audit_log(10)]
    assert actions.count("set_deployment") == 4 and actions.count("delete_deployment") == 1


def test_concurrent_compare_and_set_of_a_deployment(dsn: str) -> None:
    with RegistryStore.postgres(dsn) as a, RegistryStore.postgres(dsn) as b:
        for i in range(10):
            name = f"dep-{i}"
            created = _race(partial(a.put_deployment, name, SPEC, "a", expected_revision=0),
                            partial(b.put_deployment, name, SPEC, "b", expected_revision=0))
            assert sorted(type(r).__name__ for r in created) == ["Aborted", "int"], created
            (rev,) = [r for r in created if isinstance(r, int)]
            updated = _race(partial(a.put_deployment, name, SPEC, "a", expected_revision=rev),
                            partial(b.delete_deployment, name, "b", expected_revision=rev))
            assert sum(isinstance(r, Aborted) for r in updated) == 1, updated


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


def test_sigkill_mid_writes_leaves_the_registry_consistent(dsn: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, dsn], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready", proc.stderr.read() if proc.stderr else b""
        time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL

    with open_store(dsn) as reopened:  # opening waits for the server to end the killed writer's transaction
        versions = reopened.list(model_id="crash")
        assert len(versions) > 1, "the writer made no progress"
        for v in versions:
            chain = [(t.source, t.target) for t in reopened.history("crash", v.version)]
            assert chain[0] == (None, "REGISTERED")
            assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(chain)), chain
            assert chain[-1][1] == v.status, (v.version, v.status, chain)
        assert _sql(dsn, "SELECT (SELECT COUNT(*) FROM audit) - (SELECT COUNT(*) FROM transitions)") == [(0,)]
        reopened.register(record("9.0.0", model_id="crash", parent_version=versions[-1].version))
        assert reopened.get("crash", "9.0.0").parent_version == versions[-1].version
