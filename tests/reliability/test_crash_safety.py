"""SIGKILL of the real server during registry writes and during model loads, repeated (issue 10).

Writes: ``infer serve`` runs on one registry (SQLite under ``--registry-dir``, or PostgreSQL by ``--registry-url``)
while three client threads write to the control plane without pause (RegisterVersion with artifacts,
TransitionVersion, SetDeployment and DeleteDeployment with revisions) and a ledger records every write the server
acknowledged. The server is SIGKILLed at a seeded random moment and started again on the same registry, which must
then hold exactly the acknowledged writes, plus each write whose answer the kill cut off either whole or not at all:
the versions with their artifacts (digest and size as sent, readable), statuses at the end of their transition
chains, deployments at their acknowledged revision with the spec sent (in the store and in the restarted server's
router), one audit entry per write and nothing else, revisions that only grow; the SQLite file passes
integrity_check and no staged (half-written) artifact is left behind.

Loads: the server is SIGKILLed while it loads its repository at start-up, and while it hot-reloads a new version of
a 21 MB model (RepositoryModelLoad) with the writers running; the restarted server serves the newest version on
disk, and the registry's serving history agrees with what it serves.

The ledger, the writers and the registry checks are in :mod:`crashkit`. ``INFER_CRASH_ROUNDS`` (default 12) sets
the kills during writes on SQLite (PostgreSQL gets half, loads two thirds); ``INFER_CRASH_SEED`` the seed;
``INFER_CRASH_REPORT`` a JSON file that receives the figures (docs/reliability/crash.md).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from crashkit import HOST, Ledger, Registry, Writers, check_registry, kill, new_figures, publish, staged_files, start
from fixtures import DOUBLE_CONFIG, ServerProcess, write_dense, write_double

from infer._proto import control_pb2 as cpb
from infer._proto import control_pb2_grpc as cpb_grpc
from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc
from infer.registry import artifacts
from infer.registry.artifacts import LocalArtifactStore

ROUNDS = int(os.environ.get("INFER_CRASH_ROUNDS", "12"))
SEED = int(os.environ.get("INFER_CRASH_SEED", "10"))
DSN_ENV = "INFER_TEST_POSTGRES_DSN"
PG_SCHEMA = "infer_crash"


# ---------------------------------------------------------------------------------------------------------- write kills


def write_rounds(rounds: int, repo: Path, reg: Registry, tmp: Path, name: str) -> None:
    rng = random.Random(f"{SEED}-{name}")
    ledger, figures = Ledger(), new_figures()
    srv = start(repo, reg, tmp / "home").wait_ready()
    try:
        for _ in range(rounds):
            writers = Writers(srv.address, ledger, rng)
            time.sleep(rng.uniform(0.05, 1.0))
            writers.killed.set()
            kill(srv)
            writers.stop()
            figures["kills"] += 1
            figures["in_flight_at_kill"] = figures.get("in_flight_at_kill", 0) + len(ledger.pending)
            figures["orphans_after_kill"] += len(staged_files(reg))
            srv = start(repo, reg, tmp / "home").wait_ready()
            figures["orphans_after_restart"] += len(staged_files(reg))  # the restarted server swept them
            check_registry(ledger, reg, srv, figures)
        assert staged_files(reg) == [], "staged artifacts of killed writers are left behind"
    finally:
        code = srv.stop()
    assert code == 0, srv.output()
    publish(name, figures, ledger)
    shutil.rmtree(reg.dir)  # hundreds of MB of artifacts, not worth keeping past a pass


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    write_double(tmp_path / "repo", versions=(1, 2), config=DOUBLE_CONFIG)
    return tmp_path / "repo"


@pytest.fixture(params=["sqlite", "postgres"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """SQLite under the registry folder; or PostgreSQL from $INFER_TEST_POSTGRES_DSN, in a schema of its own (the
    store's tests wipe ``public``), with the artifacts in the folder."""
    if request.param == "sqlite":
        yield Registry(tmp_path / "registry", None)
        return
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        pytest.skip(f"no PostgreSQL: {DSN_ENV} is not set (CI sets it in .ci/run)")
    if not dsn.startswith(("postgresql://", "postgres://")):
        pytest.skip(f"{DSN_ENV} is not a postgresql:// URL, which --registry-url takes")
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[dev]'")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {PG_SCHEMA}")
    try:
        yield Registry(tmp_path / "registry", f"{dsn}{'&' if '?' in dsn else '?'}options=-csearch_path%3D{PG_SCHEMA}")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")


def test_sigkill_during_registry_writes(registry: Registry, small_repo: Path, tmp_path: Path) -> None:
    if registry.url is None:
        write_rounds(ROUNDS, small_repo, registry, tmp_path, "writes-sqlite")
    else:
        write_rounds(max(3, ROUNDS // 2), small_repo, registry, tmp_path, "writes-postgres")


# ---------------------------------------------------------------------------------------------------------- load kills


@dataclass
class LoadRig:
    """The load scenario's repository: ``double`` (versions 1 and 2), ``big_static`` and ``big`` (21 MB MLPs), whose
    versions alternate between two files; each hot reload adds the next version of ``big``."""

    root: Path
    pool: list[Path] = field(default_factory=list)
    newest: int = 1
    load_s: list[float] = field(default_factory=list)  # clean starts, from the first model's load to ready
    reload_s: list[float] = field(default_factory=list)  # RepositoryModelLoad calls answered

    def __post_init__(self) -> None:
        write_double(self.repo, versions=(1, 2), config=DOUBLE_CONFIG)
        for seed in range(2):
            model = write_dense(self.root / "pool", name=f"big{seed}", hidden=1024, layers=6, seed=seed)
            self.pool.append(model / "1" / "model.onnx")
        self.add("big_static", 1)
        self.add("big", 1)
        self.x = np.random.default_rng(SEED).standard_normal((3, 64)).astype(np.float32)
        self.expected = [reference(p, self.x) for p in self.pool]

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    def add(self, model: str, version: int) -> None:
        """A version appears whole: its file linked into a folder beside, then the folder renamed into place."""
        staging = self.root / f"staging-{model}-{version}"
        staging.mkdir()
        try:
            os.link(self.pool[version % 2], staging / "model.onnx")
        except OSError:
            staging.joinpath("model.onnx").write_bytes(self.pool[version % 2].read_bytes())
        (self.repo / model).mkdir(exist_ok=True)
        staging.rename(self.repo / model / str(version))

    def start(self, reg: Registry) -> ServerProcess:
        srv = start(self.repo, reg, self.root / "home")
        began = loads_begin(srv)
        srv.wait_ready()
        self.load_s.append(time.monotonic() - began)
        return srv


def loads_begin(srv: ServerProcess, timeout: float = 120.0) -> float:
    """Wait until the server's log says it began to load its first model; returns when (monotonic) it saw so."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ": loading " in srv.output():
            return time.monotonic()
        assert srv.proc.poll() is None, srv.output()
        time.sleep(0.005)
    raise TimeoutError(srv.output())


def reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    out: np.ndarray = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return out


ALLOWED = {("", "LOAD"), ("LOAD", "WARM"), ("LOAD", "ERROR"), ("WARM", "ACTIVE"), ("WARM", "ERROR"),
           ("ACTIVE", "DEGRADED"), ("DEGRADED", "ACTIVE"), ("ACTIVE", "UNLOADING"), ("DEGRADED", "UNLOADING"),
           ("ACTIVE", "ERROR"), ("DEGRADED", "ERROR"), ("ERROR", "UNLOADING"), ("UNLOADING", "UNLOADED")}


def serving_history(srv: ServerProcess, model: str) -> dict[tuple[int, str], list[tuple[str, str]]]:
    """Each (version, server)'s recorded moves of ``model``, as the restarted server reads them from the registry."""
    with grpc.insecure_channel(srv.address) as ch:
        rows = cpb_grpc.ControlPlaneStub(ch).ServingHistory(cpb.ServingHistoryRequest(model=model, limit=10**6),
                                                            timeout=30).transitions
    chains: dict[tuple[int, str], list[tuple[str, str]]] = collections.defaultdict(list)
    for t in rows:
        chains[(t.version, t.server)].append((t.source, t.target))
    return chains


def check_serving(srv: ServerProcess, rig: LoadRig) -> None:
    """The restarted server serves the newest version of ``big`` on disk, and the registry's serving history agrees:
    this process moved each version it serves LOAD -> WARM -> ACTIVE, and every process's moves (the killed ones'
    included) start at LOAD and follow the lifecycle table."""
    with grpc.insecure_channel(srv.address) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        index = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=30).models
        ready = {(m.name, m.version) for m in index if m.state == "READY"}
        assert ready == {("big", str(rig.newest)), ("big_static", "1"), ("double", "1"), ("double", "2")}, index
        for model, version, feed, want in (("big", "", rig.x, rig.expected[rig.newest % 2]),
                                           ("double", "2", rig.x[:, :4], rig.x[:, :4] * 4)):
            req = pb.ModelInferRequest(model_name=model, model_version=version)
            req.inputs.add(name="x", datatype="FP32", shape=list(feed.shape))
            req.raw_input_contents.append(np.ascontiguousarray(feed).tobytes())
            resp = stub.ModelInfer(req, timeout=30)
            got = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(want.shape)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
            assert resp.model_version == (version or str(rig.newest))
    me = f"{HOST}:{srv.proc.pid}"
    for model in ("big", "big_static", "double"):
        chains = serving_history(srv, model)
        for key, chain in chains.items():
            assert chain[0] == ("", "LOAD") and all(move in ALLOWED for move in chain), (model, key, chain)
            assert all(a[1] == b[0] for a, b in itertools.pairwise(chain)), (model, key, chain)
        mine = {str(v) for (v, server), chain in chains.items() if server == me and chain[-1][1] == "ACTIVE"}
        assert mine == {v for m, v in ready if m == model}, (model, chains)


def hot_reload(address: str, rig: LoadRig, outcome: list[str], sent: threading.Event | None = None) -> None:
    """RepositoryModelLoad of ``big``; a call answered adds its time to ``rig.reload_s``, which the kills aim at."""
    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        try:
            if sent is not None:
                sent.set()
            began = time.monotonic()
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="big"), timeout=60)
            rig.reload_s.append(time.monotonic() - began)
            outcome.append("answered")
        except grpc.RpcError as e:
            outcome.append(e.code().name)


def kill_while_starting(rig: LoadRig, reg: Registry, rng: random.Random) -> tuple[str, ServerProcess]:
    """Start a server and SIGKILL it part-way through loading its repository."""
    victim = start(rig.repo, reg, rig.root / "home")
    loads_begin(victim)
    time.sleep(rng.uniform(0.0, 1.0) * float(np.median(rig.load_s[-5:])))
    ready = victim.port_file.exists()
    kill(victim)
    loading, loaded = load_lines(victim)
    if ready:
        return "start-up, after ready", victim
    if len(loading) > len(loaded):
        return "start-up, loading a model", victim
    return "start-up, " + ("before the repository load" if not loaded else "between model loads"
                           if len(loaded) < 4 else "models loaded, not ready yet"), victim


def load_lines(srv: ServerProcess) -> tuple[list[str], list[str]]:
    """The versions a server began to load, and those it made ACTIVE, as its log says."""
    lines = srv.log.read_text().splitlines()
    return ([line.split(": model ")[1].split(":")[0] for line in lines if ": loading " in line],
            [line.split(": model ")[1].split(" is ")[0] for line in lines if " is ACTIVE " in line])


def kill_while_reloading(rig: LoadRig, srv: ServerProcess, ledger: Ledger, rng: random.Random) -> None:
    """Add the next version of ``big``, have the server hot-reload it (the writers busy) and SIGKILL it meanwhile."""
    rig.newest += 1
    rig.add("big", rig.newest)
    writers, outcome, sent = Writers(srv.address, ledger, rng), [], threading.Event()
    loader = threading.Thread(target=hot_reload, args=(srv.address, rig, outcome, sent))
    loader.start()
    assert sent.wait(30)
    time.sleep(rng.uniform(0.0, 1.0) * float(np.median(rig.reload_s[-5:])))
    writers.killed.set()
    kill(srv)
    writers.stop()
    loader.join(timeout=60)
    assert outcome != [], "the load call did not end"


def reload_phase(srv: ServerProcess, victim: ServerProcess, rig: LoadRig) -> str:
    """Where the killed server was in the hot reload, as its log and its moves in the registry say."""
    loading, loaded = load_lines(victim)
    new = f"big version {rig.newest}"
    if new not in loading:
        return "hot reload, before the load began"
    if new not in loaded:
        return "hot reload, loading the new version"
    old = serving_history(srv, "big").get((rig.newest - 1, f"{HOST}:{victim.proc.pid}"), [])
    return "hot reload, " + ("retiring the old version" if old and old[-1][1] != "UNLOADED" else "done")


def test_sigkill_during_model_loads(tmp_path: Path) -> None:
    rig, rng = LoadRig(tmp_path), random.Random(f"{SEED}-loads")
    reg, ledger, figures = Registry(tmp_path / "registry", None), Ledger(), new_figures()
    where: collections.Counter[str] = collections.Counter()
    srv = rig.start(reg)
    check_serving(srv, rig)
    try:
        for _ in range(2):  # timings the kills aim at
            rig.newest += 1
            rig.add("big", rig.newest)
            hot_reload(srv.address, rig, outcome := [])
            assert outcome == ["answered"]
            check_serving(srv, rig)
        for i in range(max(4, ROUNDS * 2 // 3)):
            if i % 2 == 0:
                assert srv.stop() == 0, srv.output()
                phase, victim = kill_while_starting(rig, reg, rng)
                srv = rig.start(reg)
            else:
                victim = srv
                kill_while_reloading(rig, srv, ledger, rng)
                srv = rig.start(reg)
                phase = reload_phase(srv, victim, rig)
            where[phase] += 1
            figures["kills"] += 1
            check_serving(srv, rig)
            check_registry(ledger, reg, srv, figures)
    finally:
        code = srv.stop()
    assert code == 0, srv.output()
    figures.update(where=dict(where), load_s=round(float(np.median(rig.load_s)), 2),
                   reload_s=round(float(np.median(rig.reload_s)), 2))
    publish("loads", figures, ledger)
    for folder in (reg.dir, rig.root / "pool", rig.repo):
        shutil.rmtree(folder)


# ---------------------------------------------------------------------------------------------------------- regressions

_KILLED_PUT = """
import os, signal, sys
from pathlib import Path
from infer.registry import artifacts

where, replace, chunks = sys.argv[2], os.replace, artifacts._bytes_chunks

def killing_replace(src, dst):
    if (where == "object") != str(dst).endswith(".json"):
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)

def killing_chunks(data):
    yield next(chunks(data))
    os.kill(os.getpid(), signal.SIGKILL)

os.replace = killing_replace
if where == "write":
    artifacts._bytes_chunks = killing_chunks
artifacts.LocalArtifactStore(Path(sys.argv[1])).put(bytes(range(256)) * 8192, name="model.onnx")
"""


@pytest.mark.parametrize("where", ["write", "object", "meta"])
def test_a_put_killed_midway_leaves_nothing_half_written(where: str, tmp_path: Path) -> None:
    """Killed while writing the temp file, at the object's rename, at its metadata's rename: the next store that
    opens removes the dead writer's temp file (it was left for ever), and no metadata names a missing object (the
    metadata was written first)."""
    root, data = tmp_path / "artifacts", bytes(range(256)) * 8192
    done = subprocess.run([sys.executable, "-c", _KILLED_PUT, str(root), where], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert len(list((root / "tmp").iterdir())) == 1  # what the killed writer left
    objects = sorted(p.name for p in (root / "sha256").glob("*/*"))
    assert objects == ([hashlib.sha256(data).hexdigest()] if where == "meta" else [])
    store = LocalArtifactStore(root)  # the restart
    assert store.swept == 1 and list((root / "tmp").iterdir()) == []
    ref = store.put(data, name="model.onnx")
    assert store.get(ref).read_bytes() == data and ref.name == "model.onnx"


def test_a_sweep_spares_the_temp_files_of_live_writers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process sharing the directory opens its store while a put is half-way: the put's file stays."""
    root, data = tmp_path / "artifacts", b"model" * 1000
    store, entered, release, refs = LocalArtifactStore(root), threading.Event(), threading.Event(), []

    def slow_chunks(content: bytes) -> Iterator[bytes]:
        yield content[:10]
        entered.set()
        release.wait(30)
        yield content[10:]

    monkeypatch.setattr(artifacts, "_bytes_chunks", slow_chunks)
    writer = threading.Thread(target=lambda: refs.append(store.put(data, name="m.onnx")))
    writer.start()
    try:
        assert entered.wait(30)
        other = LocalArtifactStore(root)
        assert other.swept == 0 and len(list((root / "tmp").iterdir())) == 1
    finally:
        release.set()
        writer.join(30)
    assert other.get(refs[0]).read_bytes() == data and list((root / "tmp").iterdir()) == []
