"""The registry's metadata store: model versions, their lineage, lifecycle transitions and an audit trail.

One code path, two databases. SQLite (stdlib ``sqlite3``) is the default: embedded, WAL journal, ``synchronous=FULL``,
foreign keys on, and every write in one ``BEGIN IMMEDIATE`` transaction, so a process killed with SIGKILL in the middle
of a write leaves either the whole write or none of it. PostgreSQL is chosen by configuration: :func:`open_store` with a
``postgresql://`` URL, or :meth:`RegistryStore.postgres`, through psycopg 3 (LGPL-3.0, hence only in the optional
``postgres`` extra and imported when first used); any DB-API ``connect`` callable with ``dialect=POSTGRES`` works
too. The SQL is the same for both; what differs (placeholders, the
auto-increment key, how a write transaction starts and locks) lives in :class:`Dialect`.

Tables (``schema_version`` records which migrations ran; :data:`MIGRATIONS` only ever grows)::

    models(model_id PK, model_type, created_at)
    versions(model_id, version, framework, trained_at, training_data_id, training_data_size, hyperparameters JSON,
             metrics JSON, artifact_uri, artifact_sha256, status, parent_version, training_run, created_at;
             PK(model_id, version); (model_id, parent_version) -> versions)
    transitions(id, model_id, version, at, source, target, reason, actor)    every status change, registration included
    audit(id, at, actor, action, detail JSON)
    deployments(name PK, spec JSON, updated_at, revision)      revision = id of the audit entry of the last write
    serving_transitions(id, model, version, at, source, target, reason, server)  served versions' lifecycle moves

Registration writes the version, its first transition (``None -> status``) and an audit row in one transaction;
:meth:`RegistryStore.record_transition` updates the status, appends the transition and the audit row in one
transaction, so a version's status always equals the target of its last transition. The store records transitions; it
does not decide which are allowed (that is the caller's policy, e.g. :mod:`infer.registry.lifecycle`), but it refuses a
transition whose ``source`` is not the current status, so two writers cannot both move the same version.

Times are wall-clock seconds since the epoch (floats), as in :mod:`infer.registry.lifecycle`.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import operator
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from infer.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from infer.registry.dialects import (
    MIGRATIONS,
    POSTGRES,
    SCHEMA_VERSION,
    SQLITE,
    Connection,
    Dialect,
    postgres_connect,
    sqlite_connect,
)
from infer.registry.records import AuditEntry, ModelVersionRecord, ServingTransition, TransitionRecord, semver_key

__all__ = [
    "POSTGRES",
    "SCHEMA_VERSION",
    "SQLITE",
    "AuditEntry",
    "Connection",
    "Dialect",
    "ModelVersionRecord",
    "RegistryStore",
    "ServingTransition",
    "TransitionRecord",
    "open_store",
    "postgres_connect",
    "semver_key",
    "sqlite_connect",
]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">=": operator.ge, ">": operator.gt,
}


_VERSION_COLUMNS = (
    "v.model_id, v.version, m.model_type, v.framework, v.artifact_uri, v.artifact_sha256, v.trained_at, "
    "v.training_data_id, v.training_data_size, v.hyperparameters, v.metrics, v.status, v.parent_version, "
    "v.training_run, v.created_at"
)
_SELECT_VERSIONS = f"SELECT {_VERSION_COLUMNS} FROM versions v JOIN models m ON m.model_id = v.model_id"


def open_store(url: str, clock: Callable[[], float] = time.time) -> RegistryStore:
    """The store ``url`` names: ``postgresql://...`` or ``postgres://...`` (PostgreSQL, a libpq URL), or
    ``sqlite:///abs/path.db`` or a plain filesystem path (SQLite; missing parent directories are created)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        if not url.strip():
            raise InvalidArgument("the registry URL is empty")
        path = Path(url)
    elif scheme in ("postgresql", "postgres"):
        return RegistryStore.postgres(url, clock)
    elif scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise InvalidArgument(f"registry URL {url!r}: a SQLite URL takes an absolute path, sqlite:///abs/path.db")
        path = Path(rest)
    else:
        raise InvalidArgument(f"registry URL {url!r}: the scheme must be postgresql://, postgres:// or sqlite:///")
    path.parent.mkdir(parents=True, exist_ok=True)
    return RegistryStore.sqlite(path, clock)


# ---------------------------------------------------------------------------------------------------------- the store


class RegistryStore:
    """Model versions, transitions and audit entries in SQLite or PostgreSQL. Thread-safe (one connection, a lock)."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        dialect: Dialect = SQLITE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dialect = dialect
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = connect()
        try:
            self._migrate()
        except BaseException:
            self._conn.close()  # a refused or failed migration must not leak a server connection
            raise

    @classmethod
    def sqlite(cls, path: Path | str, clock: Callable[[], float] = time.time) -> RegistryStore:
        return cls(lambda: sqlite_connect(path), SQLITE, clock)

    @classmethod
    def postgres(cls, dsn: str, clock: Callable[[], float] = time.time) -> RegistryStore:
        """A store in the PostgreSQL database ``dsn`` names (psycopg 3, the ``postgres`` extra)."""
        return cls(lambda: postgres_connect(dsn), POSTGRES, clock)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[_Tx]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        with self._lock:
            cur = self._conn.cursor()
            try:
                begin = self.dialect.begin_write if write else self.dialect.begin_read
                if begin is not None:
                    cur.execute(begin)
                yield _Tx(cur, self.dialect)
                if write:
                    self._conn.commit()
                else:
                    self._conn.rollback()  # ends a read snapshot (PostgreSQL would otherwise sit idle in it)
            except BaseException:
                self._conn.rollback()
                raise
            finally:
                cur.close()

    def _migrate(self) -> None:
        with self._transaction(write=True) as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at "
                       "DOUBLE PRECISION NOT NULL)")
        with self._transaction(write=True) as tx:
            if self.dialect.lock_schema is not None:
                tx.execute(self.dialect.lock_schema)
            row = tx.one("SELECT MAX(version) FROM schema_version")
            current = int(row[0]) if row is not None and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise FailedPrecondition(
                    f"the registry database is at schema version {current}; this infer knows only {SCHEMA_VERSION}"
                )
            for number in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[number - 1](self.dialect):
                    tx.execute(statement)
                tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (number, self._clock()))

    def schema_version(self) -> int:
        with self._transaction(write=False) as tx:
            row = tx.one("SELECT MAX(version) FROM schema_version")
        return int(row[0]) if row is not None and row[0] is not None else 0

    # -- versions

    def register(
        self, record: ModelVersionRecord, actor: str = "system", reason: str = "registered"
    ) -> ModelVersionRecord:
        """Store a new version with its first transition and an audit entry, all in one transaction."""
        now = self._clock()
        with self._transaction(write=True) as tx:
            model = tx.one("SELECT model_type FROM models WHERE model_id = ?", (record.model_id,))
            if model is None:
                tx.execute("INSERT INTO models (model_id, model_type, created_at) VALUES (?, ?, ?)",
                           (record.model_id, record.model_type, now))
            elif model[0] != record.model_type:
                raise InvalidArgument(f"model {record.model_id} has model_type {model[0]!r}, not {record.model_type!r}")
            if tx.one("SELECT 1 FROM versions WHERE model_id = ? AND version = ?",
                      (record.model_id, record.version)) is not None:
                raise AlreadyExists(f"model {record.model_id} version {record.version} is already registered")
            if record.parent_version is not None and tx.one(
                "SELECT 1 FROM versions WHERE model_id = ? AND version = ?", (record.model_id, record.parent_version)
            ) is None:
                raise NotFound(f"parent version {record.parent_version} of model {record.model_id} is not registered")
            tx.execute(
                "INSERT INTO versions (model_id, version, framework, trained_at, training_data_id, training_data_size, "
                "hyperparameters, metrics, artifact_uri, artifact_sha256, status, parent_version, training_run, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.model_id, record.version, record.framework, record.trained_at, record.training_data_id,
                 record.training_data_size, _dumps(record.hyperparameters), _dumps(record.metrics),
                 record.artifact_uri, record.artifact_sha256, record.status, record.parent_version,
                 record.training_run, now),
            )
            self._append_transition(tx, record.model_id, record.version, now, None, record.status, reason, actor)
            self._append_audit(tx, now, actor, "register", {
                "model_id": record.model_id, "version": record.version, "artifact_sha256": record.artifact_sha256,
            })
        return dataclasses.replace(record, created_at=now)

    def get(self, model_id: str, version: str) -> ModelVersionRecord:
        with self._transaction(write=False) as tx:
            row = tx.one(f"{_SELECT_VERSIONS} WHERE v.model_id = ? AND v.version = ?", (model_id, version))
        if row is None:
            raise NotFound(f"model {model_id} version {version} is not registered")
        return _record(row)

    def list(
        self,
        model_id: str | None = None,
        status: str | None = None,
        model_type: str | None = None,
        framework: str | None = None,
        metric_filter: tuple[str, str, float] | None = None,
    ) -> builtins.list[ModelVersionRecord]:
        """Versions matching every given filter, ordered by model_id then semantic version.

        ``metric_filter`` is ``(metric, op, value)`` with op one of ``< <= == != >= >``; versions without the metric
        are left out. Column filters run in SQL; the metric filter runs here, since JSON access is not portable SQL.
        """
        if metric_filter is not None and metric_filter[1] not in _OPS:
            raise InvalidArgument(f"metric filter operator {metric_filter[1]!r} is not one of {sorted(_OPS)}")
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        for column, value in (("v.model_id", model_id), ("v.status", status), ("m.model_type", model_type),
                              ("v.framework", framework)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._transaction(write=False) as tx:
            rows = tx.all(f"{_SELECT_VERSIONS}{where}", params)
        records = [_record(row) for row in rows]
        if metric_filter is not None:
            name, op, threshold = metric_filter
            records = [r for r in records if name in r.metrics and _OPS[op](r.metrics[name], threshold)]
        records.sort(key=lambda r: (r.model_id, semver_key(r.version)))
        return records

    def compare(self, model_id: str, v1: str, v2: str) -> dict[str, dict[str, Any]]:
        """What differs between two versions of a model.

        Returns ``{"fields": {name: {"v1": a, "v2": b}}, "metrics": {name: {"v1": a, "v2": b, "delta": b - a}}}``;
        hyperparameters are compared key by key (``"hyperparameters.lr"``); a metric present in only one version has
        ``delta`` None. Identical fields are left out; every metric is listed.
        """
        a, b = self.get(model_id, v1), self.get(model_id, v2)
        differing: dict[str, Any] = {}
        for f in fields(ModelVersionRecord):
            if f.name in ("model_id", "version", "hyperparameters", "metrics"):
                continue
            left, right = getattr(a, f.name), getattr(b, f.name)
            if left != right:
                differing[f.name] = {"v1": left, "v2": right}
        for key in sorted(a.hyperparameters.keys() | b.hyperparameters.keys()):
            left, right = a.hyperparameters.get(key), b.hyperparameters.get(key)
            if left != right or (key in a.hyperparameters) != (key in b.hyperparameters):
                differing[f"hyperparameters.{key}"] = {"v1": left, "v2": right}
        metrics: dict[str, Any] = {}
        for key in sorted(a.metrics.keys() | b.metrics.keys()):
            left_m, right_m = a.metrics.get(key), b.metrics.get(key)
            delta = right_m - left_m if left_m is not None and right_m is not None else None
            metrics[key] = {"v1": left_m, "v2": right_m, "delta": delta}
        return {"fields": differing, "metrics": metrics}

    # -- transitions

    def record_transition(
        self, model_id: str, version: str, source: str, target: str, reason: str, actor: str = "system"
    ) -> TransitionRecord:
        """Move a version from ``source`` to ``target``: status, transition and audit row in one transaction.

        Raises NotFound for an unknown version and FailedPrecondition when its status is not ``source`` (someone moved
        it first); which transitions are allowed is the caller's policy.
        """
        if not target or len(target) > 1024:
            raise InvalidArgument("target status must be a non-empty string of at most 1024 characters")
        now = self._clock()
        with self._transaction(write=True) as tx:
            row = tx.one(f"SELECT status FROM versions WHERE model_id = ? AND version = ?{self.dialect.for_update}",
                         (model_id, version))
            if row is None:
                raise NotFound(f"model {model_id} version {version} is not registered")
            if row[0] != source:
                raise FailedPrecondition(
                    f"model {model_id} version {version} is {row[0]}, not {source}; refusing {source} -> {target}"
                )
            tx.execute("UPDATE versions SET status = ? WHERE model_id = ? AND version = ? AND status = ?",
                       (target, model_id, version, source))
            transition = self._append_transition(tx, model_id, version, now, source, target, reason, actor)
            self._append_audit(tx, now, actor, "transition", {
                "model_id": model_id, "version": version, "source": source, "target": target, "reason": reason,
            })
        return transition

    def history(self, model_id: str, version: str) -> builtins.list[TransitionRecord]:
        """Every transition of a version, oldest first (the first is its registration)."""
        with self._transaction(write=False) as tx:
            if tx.one("SELECT 1 FROM versions WHERE model_id = ? AND version = ?", (model_id, version)) is None:
                raise NotFound(f"model {model_id} version {version} is not registered")
            rows = tx.all("SELECT id, model_id, version, at, source, target, reason, actor FROM transitions "
                          "WHERE model_id = ? AND version = ? ORDER BY id", (model_id, version))
        return [TransitionRecord(int(r[0]), r[1], r[2], float(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    @staticmethod
    def _append_transition(
        tx: _Tx, model_id: str, version: str, at: float, source: str | None, target: str, reason: str, actor: str
    ) -> TransitionRecord:
        row = tx.one(
            "INSERT INTO transitions (model_id, version, at, source, target, reason, actor) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (model_id, version, at, source, target, reason, actor),
        )
        assert row is not None
        return TransitionRecord(int(row[0]), model_id, version, at, source, target, reason, actor)

    # -- audit

    # -- deployments

    def put_deployment(
        self, name: str, spec: Mapping[str, Any], actor: str = "system", expected_revision: int | None = None
    ) -> int:
        """Create or replace a deployment's spec (JSON-serialisable), audited in the same transaction.

        Returns the new revision: the id of the audit entry that recorded the write, so revisions only grow, across
        deletes and re-creations too. With ``expected_revision`` the write is a compare-and-set: it is refused with
        Aborted unless the deployment's current revision is that number (0: the deployment must not exist).
        """
        text = json.dumps(spec, sort_keys=True)
        with self._transaction(write=True) as tx:
            now = self._clock()
            row = tx.one(f"SELECT revision FROM deployments WHERE name = ?{self.dialect.for_update}", (name,))
            current = 0 if row is None else int(row[0])
            if expected_revision is not None and current != expected_revision:
                raise Aborted(f"deployment '{name}' is at revision {current}, not {expected_revision}: "
                              "it changed since it was read; read it again and retry")
            entry = self._append_audit(tx, now, actor, "set_deployment", {"name": name, "spec": dict(spec)})
            tx.execute("DELETE FROM deployments WHERE name = ?", (name,))
            tx.execute("INSERT INTO deployments (name, spec, updated_at, revision) VALUES (?, ?, ?, ?)",
                       (name, text, now, entry.id))
        return entry.id

    def delete_deployment(self, name: str, actor: str = "system", expected_revision: int | None = None) -> bool:
        with self._transaction(write=True) as tx:
            row = tx.one(f"SELECT revision FROM deployments WHERE name = ?{self.dialect.for_update}", (name,))
            if expected_revision is not None and (0 if row is None else int(row[0])) != expected_revision:
                raise Aborted(f"deployment '{name}' changed since it was read (revision is not {expected_revision})")
            if row is not None:
                tx.execute("DELETE FROM deployments WHERE name = ?", (name,))
                self._append_audit(tx, self._clock(), actor, "delete_deployment", {"name": name})
            return row is not None

    def deployments(self) -> dict[str, dict[str, Any]]:
        return {name: spec for name, (spec, _) in self.deployments_with_revisions().items()}

    def deployments_with_revisions(self) -> dict[str, tuple[dict[str, Any], int]]:
        with self._transaction(write=False) as tx:
            rows = tx.all("SELECT name, spec, revision FROM deployments ORDER BY name")
        return {name: (json.loads(spec), int(rev)) for name, spec, rev in rows}

    def deployment_revisions(self) -> dict[str, int]:
        """Each deployment's revision: a cheap poll that tells which specs changed since the last one."""
        with self._transaction(write=False) as tx:
            rows = tx.all("SELECT name, revision FROM deployments")
        return {name: int(rev) for name, rev in rows}

    # -- lifecycle of served versions (the data plane's LOAD -> WARM -> ACTIVE ... as it happens)

    def record_serving_transitions(self, rows: Sequence[ServingTransition]) -> None:
        """Append transitions of served model versions, in order, in one transaction."""
        if not rows:
            return
        with self._transaction(write=True) as tx:
            for r in rows:
                tx.execute("INSERT INTO serving_transitions (model, version, at, source, target, reason, server) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (r.model, r.version, r.at, r.source, r.target, r.reason[:4096], r.server))

    def serving_history(
        self, model: str, version: int = 0, limit: int = 1000
    ) -> builtins.list[ServingTransition]:
        """A served model's transitions (one version's when ``version`` > 0), oldest first, the newest ``limit``."""
        if limit < 1:
            raise InvalidArgument("limit must be at least 1")
        where = "model = ?"
        params: builtins.list[Any] = [model]
        if version > 0:
            where += " AND version = ?"
            params.append(version)
        with self._transaction(write=False) as tx:
            rows = tx.all(f"SELECT model, version, at, source, target, reason, server FROM serving_transitions "
                          f"WHERE {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [ServingTransition(r[0], int(r[1]), float(r[2]), r[3], r[4], r[5], r[6]) for r in reversed(rows)]

    def audit(self, actor: str, action: str, detail: Mapping[str, Any] | None = None) -> AuditEntry:
        """Append an audit entry in its own transaction."""
        now = self._clock()
        with self._transaction(write=True) as tx:
            return self._append_audit(tx, now, actor, action, dict(detail or {}))

    def audit_log(self, limit: int = 100) -> builtins.list[AuditEntry]:
        """The newest ``limit`` audit entries, newest first."""
        if limit < 1:
            raise InvalidArgument("limit must be at least 1")
        with self._transaction(write=False) as tx:
            rows = tx.all("SELECT id, at, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [AuditEntry(int(r[0]), float(r[1]), r[2], r[3], json.loads(r[4])) for r in rows]

    @staticmethod
    def _append_audit(tx: _Tx, at: float, actor: str, action: str, detail: dict[str, Any]) -> AuditEntry:
        if not actor or not action:
            raise InvalidArgument("an audit entry needs an actor and an action")
        row = tx.one("INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?) RETURNING id",
                     (at, actor, action, _dumps(detail)))
        assert row is not None
        return AuditEntry(int(row[0]), at, actor, action, detail)


class _Tx:
    """A cursor inside one transaction that writes portable SQL in the dialect's paramstyle."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cur = cursor
        self._dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(self._dialect.sql(sql), tuple(params))

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        self.execute(sql, params)
        rows = self._cur.fetchall()  # drains the statement (an INSERT ... RETURNING must finish before COMMIT)
        return tuple(rows[0]) if rows else None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.execute(sql, params)
        return [tuple(row) for row in self._cur.fetchall()]


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False)


def _record(row: tuple[Any, ...]) -> ModelVersionRecord:
    return ModelVersionRecord(
        model_id=row[0], version=row[1], model_type=row[2], framework=row[3], artifact_uri=row[4],
        artifact_sha256=row[5], trained_at=row[6], training_data_id=row[7],
        training_data_size=None if row[8] is None else int(row[8]), hyperparameters=json.loads(row[9]),
        metrics=json.loads(row[10]), status=row[11], parent_version=row[12], training_run=row[13],
        created_at=float(row[14]),
    )

