"""What differs between the registry's databases (SQLite, PostgreSQL), the schema migrations, and connections."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from infer.errors import FailedPrecondition, Unavailable

__all__ = ["MIGRATIONS", "POSTGRES", "SCHEMA_VERSION", "SQLITE", "Connection", "Dialect", "postgres_connect",
           "sqlite_connect"]




@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between databases; everything else is one portable SQL text."""

    name: str
    paramstyle: str  # "qmark" (?) or "format" (%s)
    id_column: str  # an auto-incrementing integer primary key
    begin_write: str | None  # statement that opens a write transaction (None: the driver opens one implicitly)
    begin_read: str | None
    for_update: str  # suffix that row-locks a SELECT inside a write transaction
    lock_schema: str | None  # serialises concurrent migrations

    def sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.paramstyle == "format" else text


SQLITE = Dialect(
    name="sqlite",
    paramstyle="qmark",
    id_column="INTEGER PRIMARY KEY",
    begin_write="BEGIN IMMEDIATE",  # takes the write lock up front: no deadlock-prone lock upgrades
    begin_read="BEGIN",
    for_update="",  # BEGIN IMMEDIATE already holds the database's write lock
    lock_schema=None,
)
POSTGRES = Dialect(
    name="postgres",
    paramstyle="format",
    id_column="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    # The driver opens the transaction (autocommit off); its first statement takes one database-wide lock that every
    # writer takes first, as SQLite's BEGIN IMMEDIATE does: without it, concurrent CREATE TABLE IF NOT EXISTS (two
    # stores migrating) and inserts of the same new key (models, deployments) fail with unique violations.
    begin_write="SELECT pg_advisory_xact_lock(452823770482)",  # the key: b"infer" as a big-endian integer
    begin_read=None,
    for_update=" FOR UPDATE",
    lock_schema="LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE",
)


def _migration_1(d: Dialect) -> list[str]:
    return [
        """CREATE TABLE models (
            model_id TEXT PRIMARY KEY,
            model_type TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE versions (
            model_id TEXT NOT NULL REFERENCES models (model_id),
            version TEXT NOT NULL,
            framework TEXT NOT NULL,
            trained_at DOUBLE PRECISION,
            training_data_id TEXT,
            training_data_size BIGINT,
            hyperparameters TEXT NOT NULL,
            metrics TEXT NOT NULL,
            artifact_uri TEXT NOT NULL,
            artifact_sha256 TEXT NOT NULL,
            status TEXT NOT NULL,
            parent_version TEXT,
            training_run TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (model_id, version),
            FOREIGN KEY (model_id, parent_version) REFERENCES versions (model_id, version))""",
        f"""CREATE TABLE transitions (
            id {d.id_column},
            model_id TEXT NOT NULL,
            version TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            source TEXT,
            target TEXT NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            FOREIGN KEY (model_id, version) REFERENCES versions (model_id, version))""",
        "CREATE INDEX transitions_by_version ON transitions (model_id, version, id)",
        f"""CREATE TABLE audit (
            id {d.id_column},
            at DOUBLE PRECISION NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL)""",
        "CREATE INDEX versions_by_status ON versions (status)",
    ]


# Append only: migration i (1-based) runs once, in its own transaction, and is recorded in schema_version.
def _migration_2(d: Dialect) -> list[str]:
    """Deployments (traffic policies), kept as JSON specs by name."""
    return ["CREATE TABLE IF NOT EXISTS deployments (name TEXT PRIMARY KEY, spec TEXT NOT NULL, "
            "updated_at DOUBLE PRECISION NOT NULL)"]


def _migration_3(d: Dialect) -> list[str]:
    """Deployment revisions (for compare-and-set writes and change polling) and served versions' lifecycle."""
    return [
        "ALTER TABLE deployments ADD COLUMN revision BIGINT NOT NULL DEFAULT 0",
        f"""CREATE TABLE serving_transitions (
            id {d.id_column},
            model TEXT NOT NULL,
            version BIGINT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            source TEXT,
            target TEXT NOT NULL,
            reason TEXT NOT NULL,
            server TEXT NOT NULL)""",
        "CREATE INDEX serving_transitions_by_model ON serving_transitions (model, version, id)",
    ]


MIGRATIONS: tuple[Callable[[Dialect], list[str]], ...] = (_migration_1, _migration_2, _migration_3)
SCHEMA_VERSION = len(MIGRATIONS)


class Connection(Protocol):
    """The slice of a DB-API 2.0 connection the store uses."""

    def cursor(self) -> Any: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


def sqlite_connect(path: Path | str, timeout_s: float = 30.0) -> Connection:
    """A SQLite connection set up for the store: WAL, synchronous=FULL, foreign keys, explicit transactions."""
    conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    return conn


def postgres_connect(dsn: str) -> Connection:
    """A PostgreSQL connection (psycopg 3) set up for the store: autocommit off, so psycopg opens a transaction at the
    first statement and the store's commit or rollback ends it. ``dsn``: a libpq URL or ``key=value`` string."""
    try:
        import psycopg  # LGPL-3.0: an optional extra, imported only when PostgreSQL is chosen
    except ImportError as e:
        raise FailedPrecondition(
            f"a PostgreSQL registry needs psycopg 3, which is not installed ({e}): pip install 'infer[postgres]'"
        ) from None
    try:
        conn: Connection = psycopg.connect(dsn, autocommit=False)
    except psycopg.OperationalError as e:
        raise Unavailable(f"cannot connect to the registry database: {str(e).strip()}") from None
    return conn
