"""The registry's metadata store on a real PostgreSQL server: the store contract (tests/store_contract.py), run here as
on SQLite, and what is PostgreSQL's own: its schema, concurrency between stores, transactions, crash safety.

The server: ``$INFER_TEST_POSTGRES_DSN`` when set (CI starts one with ``scripts/postgres.sh``; its database is wiped
by these tests), else a throwaway one this module starts with ``scripts/postgres.sh`` when PostgreSQL's server
binaries are installed, else the module is skipped. Each test starts from an empty ``public`` schema.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from store_contract import (  # noqa: F401  (the contract's tests: pytest collects them from this namespace)
    SPEC,
    OpenAgain,
    Sql,
    check_the_killed_writers_registry,
    record,
    sigkill_a_writer,
    test_a_newer_schema_is_refused,
    test_a_version_2_database_is_migrated_in_place,
    test_audit,
    test_compare,
    test_deployments_put_delete_list_and_revisions,
    test_duplicates_parents_and_model_type,
    test_list_filters_and_metric_search,
    test_register_and_get,
    test_serving_transitions_in_order_and_filtered,
    test_stale_transition_is_refused_and_changes_nothing,
    test_transition_is_one_transaction,
    test_transitions_and_history,
)

from infer.errors import Aborted, Unavailable
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


@pytest.fixture
def sql(dsn: str) -> Sql:
    return partial(_sql, dsn)


@pytest.fixture
def open_again(dsn: str) -> OpenAgain:
    return partial(open_store, dsn)


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


def test_unreachable_server_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="cannot connect"):
        postgres_connect(f"postgresql://postgres@127.0.0.1:{_free_port()}/infer_test?connect_timeout=5")


# -------------------------------------------------------------------------------------- concurrency and transactions


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


# ---------------------------------------------------------------------------------------------------------- crashes


def test_sigkill_mid_writes_leaves_the_registry_consistent(dsn: str, sql: Sql) -> None:
    sigkill_a_writer(dsn)
    with open_store(dsn) as reopened:  # opening waits for the server to end the killed writer's transaction
        check_the_killed_writers_registry(reopened, sql)
