"""The registry's metadata store on SQLite: the store contract (tests/store_contract.py: versions, search, compare,
transitions, audit, deployments, migrations) run here, and what is SQLite's own: its settings, crash safety, URLs."""

from __future__ import annotations

import itertools
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from store_contract import (  # noqa: F401  (the contract's tests: pytest collects them from this namespace)
    DIGEST,
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

from infer.errors import FailedPrecondition, InvalidArgument
from infer.registry.store import POSTGRES, SCHEMA_VERSION, SQLITE, RegistryStore, semver_key


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[RegistryStore]:
    ticks = itertools.count(1000)
    with RegistryStore.sqlite(db_path, clock=lambda: float(next(ticks))) as s:
        yield s


@pytest.fixture
def sql(db_path: Path) -> Sql:
    def run(text: str) -> list[tuple[Any, ...]]:
        """One autocommitted statement on a connection of its own: the database as another client sees it."""
        with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
            return conn.execute(text).fetchall()

    return run


@pytest.fixture
def open_again(db_path: Path) -> OpenAgain:
    return partial(RegistryStore.sqlite, db_path)


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


@pytest.mark.parametrize("attempt", range(3))
def test_sigkill_mid_writes_leaves_the_registry_consistent(db_path: Path, sql: Sql, attempt: int) -> None:
    sigkill_a_writer(str(db_path), after_s=0.5 + 0.05 * attempt)
    assert sql("PRAGMA integrity_check") == [("ok",)]  # the file as the killed writer left it
    assert sql("PRAGMA foreign_key_check") == []
    with RegistryStore.sqlite(db_path) as reopened:  # and the store opens it and keeps writing
        check_the_killed_writers_registry(reopened, sql)


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
