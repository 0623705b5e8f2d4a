"""The crash-safety suite's kit (test_crash_safety.py): a ledger of the control-plane writes a server acknowledged,
client threads that write without pause, and the checks of a restarted registry against the ledger.

Every write the server acknowledged must be in the restarted registry; each write whose answer a kill cut off must
be there whole or not at all (:meth:`Ledger.resolve` settles which, from what the registry holds), and nothing else.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import grpc
from fixtures import ServerProcess

from infer._proto import control_pb2 as cpb
from infer._proto import control_pb2_grpc as cpb_grpc
from infer.registry.artifacts import ArtifactRef, LocalArtifactStore, sha256_file
from infer.registry.store import RegistryStore, open_store

REPORT = os.environ.get("INFER_CRASH_REPORT")
MODELS = ("fraud", "churn", "eta")
STATUSES = ("REGISTERED", "STAGING", "ACTIVE", "ARCHIVED")
DEPLOYMENTS = ("live-a", "live-b", "live-c")
CUT_OFF = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED,
           grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)  # what a call the kill interrupts may end with
HOST = socket.gethostname()


# ---------------------------------------------------------------------------------------------------------- the ledger


@dataclass
class Version:
    sha256: str
    size: int
    chain: list[tuple[str, str, str]]  # (source, target, reason), the registration ("", "REGISTERED", ...) first


@dataclass
class Write:
    """One control-plane write: what it asks for, and how to send it."""

    kind: str  # register | transition | set | delete
    key: tuple[str, ...]  # (model_id, version) or (deployment,)
    send: Callable[[], Any]
    sha256: str = ""
    size: int = 0
    source: str = ""
    target: str = ""
    reason: str = ""
    spec: tuple[Any, ...] = ()


def spec_of(d: Any) -> tuple[Any, ...]:
    """A deployment's spec as sent (protobuf) or as stored (the store's JSON), in one comparable form."""
    if isinstance(d, dict):
        return (tuple((v["model"], v["version"], float(v["weight"])) for v in d["variants"]),
                tuple((t["model"], t["version"]) for t in d["fallback"]), d["sticky_key"], int(d["link_timeout_us"]))
    return (tuple((v.target.model, v.target.version, float(v.weight)) for v in d.variants),
            tuple((t.model, t.version) for t in d.fallback), d.sticky_key, int(d.link_timeout_us))


def audit_key(w: Write, revision: int = 0) -> tuple[Any, ...]:
    if w.kind == "register":
        return ("register", *w.key, w.sha256)
    if w.kind == "transition":
        return ("transition", *w.key, w.source, w.target, w.reason)
    if w.kind == "set":
        return ("set_deployment", w.key[0], revision, w.spec)
    return ("delete_deployment", w.key[0])


def stored_audit_keys(store: RegistryStore) -> collections.Counter[tuple[Any, ...]]:
    keys: collections.Counter[tuple[Any, ...]] = collections.Counter()
    for e in store.audit_log(limit=10**9):
        d = e.detail
        if e.action == "register":
            keys["register", d["model_id"], d["version"], d["artifact_sha256"]] += 1
        elif e.action == "transition":
            keys["transition", d["model_id"], d["version"], d["source"], d["target"], d["reason"]] += 1
        elif e.action == "set_deployment":
            keys["set_deployment", d["name"], e.id, spec_of(d["spec"])] += 1
        else:
            keys[e.action, d.get("name")] += 1
    return keys


@dataclass
class Ledger:
    """What the registry must hold: every acknowledged write, and the writes whose answer a kill cut off (pending
    until the restarted registry says whether each happened, whole)."""

    versions: dict[tuple[str, ...], Version] = field(default_factory=dict)
    deployments: dict[str, tuple[int, tuple[Any, ...]]] = field(default_factory=dict)  # revision, spec
    audit: collections.Counter[tuple[Any, ...]] = field(default_factory=collections.Counter)
    pending: list[Write] = field(default_factory=list)
    max_revision: int = 0
    serial: int = 0
    acked: collections.Counter[str] = field(default_factory=collections.Counter)
    cut_off: collections.Counter[str] = field(default_factory=collections.Counter)  # "applied" / "not applied"
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, w: Write, revision: int = 0) -> None:
        if w.kind == "register":
            self.versions[w.key] = Version(w.sha256, w.size, [("", "REGISTERED", "registered")])
        elif w.kind == "transition":
            self.versions[w.key].chain.append((w.source, w.target, w.reason))
        elif w.kind == "set":
            if revision <= self.max_revision:
                self.problems.append(f"revision {revision} of {w.key[0]} after {self.max_revision}: not monotone")
            self.max_revision = max(self.max_revision, revision)
            self.deployments[w.key[0]] = (revision, w.spec)
        else:
            del self.deployments[w.key[0]]
        self.audit[audit_key(w, revision)] += 1

    def ack(self, w: Write, reply: Any) -> None:
        with self.lock:
            self.pending.remove(w)
            if w.kind == "register" and (reply.artifact_sha256, reply.status) != (w.sha256, "REGISTERED"):
                self.problems.append(f"register {w.key} answered {reply.artifact_sha256} {reply.status}")
            if w.kind == "transition" and reply.status != w.target:
                self.problems.append(f"transition {w.key} to {w.target} answered {reply.status}")
            self.apply(w, reply.revision if w.kind == "set" else 0)
            self.acked[w.kind] += 1

    def resolve(self, store: RegistryStore) -> None:
        """Settle the cut-off writes from what the restarted registry holds: each happened whole or not at all."""
        stored = {(r.model_id, r.version): r.status for r in store.list()}
        deployments = store.deployment_revisions()
        for w in self.pending:
            if w.kind == "register":
                applied = w.key in stored
            elif w.kind == "transition":
                applied = stored.get(w.key) == w.target
            elif w.kind == "set":
                applied = w.key[0] in deployments and deployments[w.key[0]] != self.deployments.get(w.key[0], (0,))[0]
            else:
                applied = w.key[0] not in deployments
            self.cut_off["applied" if applied else "not applied"] += 1
            if applied:
                self.apply(w, deployments.get(w.key[0], 0) if w.kind == "set" else 0)
        self.pending.clear()


# ---------------------------------------------------------------------------------------------------------- the writers


class Writers:
    """Three client threads writing without pause: registrations, transitions, deployments."""

    def __init__(self, address: str, ledger: Ledger, rng: random.Random) -> None:
        self.ledger = ledger
        self.killed = threading.Event()  # set just before the kill: from then on a failed call is a cut-off one
        self.halt = threading.Event()
        self._channel = grpc.insecure_channel(address)
        self._stub = cpb_grpc.ControlPlaneStub(self._channel)
        self._pool: list[bytes] = []
        steps = (self._register, self._transition, self._deploy)
        self._threads = [threading.Thread(target=self._run, args=(s, random.Random(rng.random())), daemon=True)
                         for s in steps]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self.halt.set()
        for t in self._threads:
            t.join(timeout=60)
        self._channel.close()

    def _run(self, step: Callable[[random.Random], Write | None], rng: random.Random) -> None:
        while not self.halt.is_set():
            with self.ledger.lock:
                w = step(rng)
                if w is not None:
                    self.ledger.pending.append(w)
            if w is None:
                time.sleep(0.01)
                continue
            try:
                reply = w.send()
            except grpc.RpcError as e:
                if self.killed.is_set() and e.code() in CUT_OFF:
                    return  # stays pending: the restarted registry tells whether it happened
                with self.ledger.lock:
                    self.ledger.pending.remove(w)
                    self.ledger.problems.append(f"{w.kind} {w.key} failed: {e.code()} {e.details()}")
                return
            self.ledger.ack(w, reply)

    def _next(self) -> int:
        """A number never given before in this ledger (new version numbers, transition reasons); under its lock."""
        self.ledger.serial += 1
        return self.ledger.serial

    def _register(self, rng: random.Random) -> Write:
        model = rng.choice(MODELS)
        mine = sorted(v for (m, v) in self.ledger.versions if m == model)
        version = f"{self._next()}.0.0"
        if self._pool and rng.random() < 0.2:
            content = rng.choice(self._pool)  # the same bytes again: one stored artifact
        else:
            size = 4 << 20 if rng.random() < 0.05 else int(2 ** rng.uniform(10, 20))  # 1 KiB .. 4 MiB
            content = rng.randbytes(size)
            self._pool = [*self._pool[-7:], content]
        msg = cpb.ModelVersion(model_id=model, version=version, model_type="anomaly", framework="onnx",
                               metrics={"auc": rng.random()}, hyperparameters={"trees": str(rng.randrange(500))},
                               parent_version=rng.choice(mine) if mine and rng.random() < 0.5 else "",
                               training_data_id="events", training_data_size=rng.randrange(10**9))
        req = cpb.RegisterVersionRequest(version=msg, content=content, artifact_name=f"{model}-{version}.onnx")
        return Write("register", (model, version), lambda: self._stub.RegisterVersion(req, timeout=30),
                     sha256=hashlib.sha256(content).hexdigest(), size=len(content))

    def _transition(self, rng: random.Random) -> Write | None:
        busy = {w.key for w in self.ledger.pending}
        known = [k for k in self.ledger.versions if k not in busy]
        if not known:
            return None
        key = rng.choice(known)
        source = self.ledger.versions[key].chain[-1][1]
        target = rng.choice([s for s in STATUSES if s != source])
        reason = f"move {self._next()}"
        req = cpb.TransitionRequest(model_id=key[0], version=key[1], source=source, target=target, reason=reason)
        return Write("transition", key, lambda: self._stub.TransitionVersion(req, timeout=30),
                     source=source, target=target, reason=reason)

    def _deploy(self, rng: random.Random) -> Write:
        name = rng.choice(DEPLOYMENTS)
        current = self.ledger.deployments.get(name)
        if current is not None and rng.random() < 0.3:
            ref = cpb.DeploymentRef(name=name, revision=current[0])
            return Write("delete", (name,), lambda: self._stub.DeleteDeployment(ref, timeout=30))
        targets = [("double", "1"), ("double", "2")]
        dep = cpb.Deployment(
            name=name, revision=current[0] if current else 0, sticky_key=rng.choice(["", "user"]),
            link_timeout_us=rng.randrange(0, 50_000),
            variants=[cpb.Variant(target=cpb.Target(model=m, version=v), weight=rng.randrange(1, 100))
                      for m, v in rng.sample(targets, rng.randint(1, 2))],
            fallback=[cpb.Target(model="double", version="1")] if rng.random() < 0.5 else [])
        return Write("set", (name,), lambda: self._stub.SetDeployment(dep, timeout=30), spec=spec_of(dep))


# ---------------------------------------------------------------------------------------------------------- the checks


@dataclass
class Registry:
    """Where the registry lives, and how the test reads it without the server."""

    dir: Path
    url: str | None  # PostgreSQL; None: SQLite under dir
    verified: set[str] = field(default_factory=set)  # artifact objects already hashed

    def args(self) -> tuple[str, ...]:
        return ("--registry-dir", str(self.dir), *(("--registry-url", self.url) if self.url else ()))

    def open(self) -> RegistryStore:
        return open_store(self.url) if self.url else RegistryStore.sqlite(self.dir / "registry.db")

    @property
    def artifacts(self) -> Path:
        return self.dir / "artifacts"


def staged_files(reg: Registry) -> list[str]:
    tmp = reg.artifacts / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def check_artifact_files(reg: Registry) -> int:
    """Every object in the store is whole (hashes to its name); every metadata file parses. Returns objects hashed."""
    hashed = 0
    for path in sorted((reg.artifacts / "sha256").glob("*/*")):
        if path.suffix == ".json":
            json.loads(path.read_text())
            assert path.with_suffix("").is_file(), f"{path}: metadata of an artifact that is not there"
        elif path.name not in reg.verified:
            assert sha256_file(path)[0] == path.name, f"{path}: a half-written or corrupt artifact is visible"
            reg.verified.add(path.name)
            hashed += 1
    return hashed


def check_sqlite(reg: Registry) -> None:
    if reg.url is not None:
        return
    conn = sqlite3.connect(f"file:{reg.dir / 'registry.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def check_registry(ledger: Ledger, reg: Registry, srv: ServerProcess, figures: dict[str, Any]) -> None:
    """The restarted registry against the ledger: the store read directly, then the server's own answers."""
    check_sqlite(reg)
    figures["integrity_checks"] += reg.url is None
    with reg.open() as store:
        ledger.resolve(store)
        assert ledger.problems == [], ledger.problems
        stored = {(r.model_id, r.version): r for r in store.list()}
        assert stored.keys() == ledger.versions.keys(), "versions lost or half-written"
        artifacts = LocalArtifactStore(reg.artifacts)  # (which sweeps: count staged files before)
        for key, v in ledger.versions.items():
            r = stored[key]
            assert (r.artifact_sha256, r.status) == (v.sha256, v.chain[-1][1]), key
            chain = [(t.source or "", t.target, t.reason) for t in store.history(*key)]
            assert chain == v.chain, (key, chain, v.chain)
            path = Path(unquote(urlparse(r.artifact_uri).path))
            assert artifacts.get(ArtifactRef(r.artifact_uri, v.sha256, v.size)) == path
        deployments = {n: (rev, spec_of(spec)) for n, (spec, rev) in store.deployments_with_revisions().items()}
        assert deployments == ledger.deployments
        actual = stored_audit_keys(store)
    lost, phantom = ledger.audit - actual, actual - ledger.audit
    figures["lost"] += sum(lost.values())
    assert not lost and not phantom, f"audit: missing {dict(lost)}, unexpected {dict(phantom)}"
    figures["checked"] = sum(ledger.audit.values())
    with grpc.insecure_channel(srv.address) as ch:  # what the restarted server answers agrees
        stub = cpb_grpc.ControlPlaneStub(ch)
        listed = {(v.model_id, v.version): (v.status, v.artifact_sha256)
                  for v in stub.ListVersions(cpb.ListVersionsRequest(), timeout=30).versions}
        assert listed == {k: (v.chain[-1][1], v.sha256) for k, v in ledger.versions.items()}
        served = {d.name: (d.revision, spec_of(d))
                  for d in stub.ListDeployments(cpb.ListDeploymentsRequest(), timeout=30).deployments}
        assert served == ledger.deployments
        entries = stub.AuditLog(cpb.AuditLogRequest(limit=2**31 - 1), timeout=30).entries
        assert len(entries) == sum(ledger.audit.values())
    figures["objects_hashed"] = figures.get("objects_hashed", 0) + check_artifact_files(reg)
    referenced = {v.sha256 for v in ledger.versions.values()}  # the rest: put, then the registration was cut off
    figures["unreferenced_objects"] = len({p.name for p in (reg.artifacts / "sha256").glob("*/*")
                                           if p.suffix != ".json"} - referenced)


# ---------------------------------------------------------------------------------------------------------- servers


def start(repo: Path, reg: Registry, home: Path) -> ServerProcess:
    return ServerProcess(repo, *reg.args(), env={"INFER_HOME": str(home)})


def kill(srv: ServerProcess) -> None:
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(timeout=30)
    assert srv.proc.returncode == -signal.SIGKILL
    srv.stop()


def new_figures() -> dict[str, Any]:
    figures: dict[str, Any] = {"kills": 0, "lost": 0, "checked": 0, "orphans_after_kill": 0,
                               "orphans_after_restart": 0, "integrity_checks": 0, "seconds": time.monotonic()}
    return figures


def publish(name: str, figures: dict[str, Any], ledger: Ledger) -> None:
    figures["seconds"] = round(time.monotonic() - figures["seconds"], 1)
    figures["acknowledged"] = dict(ledger.acked)
    figures["cut_off"] = dict(ledger.cut_off)
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")
    if REPORT:
        path = Path(REPORT)
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**old, name: figures}, indent=1, sort_keys=True))


