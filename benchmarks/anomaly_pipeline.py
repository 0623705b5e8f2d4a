"""The served anomaly pipeline (the ``anomaly`` ensemble of six stage models) against the same programs run in
process.

Builds the pipeline repository (or reuses ``--repo``), starts ``infer serve`` on free loopback ports and measures,
each point for ``--duration`` seconds after ``--warmup`` seconds, ``--repeat`` times (rounds interleaved):

* served, 1 event a request, at concurrency 1 and 16;
* served, 64 events a request, at concurrency 1 and 8;
* in process, :func:`infer.tasks.anomaly.pipeline_eval.run_programs` with chunk 1 and chunk 64 (same programs and
  ONNX files, no server, no scheduler).

Clients send raw events as the ensemble takes them (nine inputs shaped [N, 1], BYTES in raw encoding: a 4-byte
little-endian length before each element). Every request is built and serialised before its point starts and sent
through a grpc.aio channel as bytes, so no client-side encoding is timed. The server consumes one event stream in
time order (each run takes the next events; the features stage keeps per-user state). After each served point the
stage breakdown comes from ModelStatistics (deltas over the measured windows only): batches, events, compute and
queue time per stage; CPU seconds of the server process and of the client come from /proc and the client's clock.

    .venv/bin/python benchmarks/anomaly_pipeline.py                      # build into --out/repo, then measure
    .venv/bin/python benchmarks/anomaly_pipeline.py --repo /tmp/repo --duration 5
    .venv/bin/python benchmarks/anomaly_pipeline.py --repo /tmp/repo --out /tmp/no-spin --no-spin

The in-process points run in this process, between the served points, with the server idle. ``--no-spin`` serves
a copy of the repository whose ONNX stages set ``infer.allow_spinning`` to "0", and builds the in-process
sessions with spinning off as well.

Writes ``results.json`` and ``results.md`` into ``--out``; prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from bench import machine  # noqa: E402  (this folder is first on sys.path when run as a script)

from infer._proto import grpc_service_pb2 as pb  # noqa: E402
from infer._proto import grpc_service_pb2_grpc as pb_grpc  # noqa: E402

MODEL = "anomaly"
STAGES = ("features", "iforest", "lof", "autoencoder", "streaming", "scorer")
SERVED_POINTS = ((1, 1), (1, 16), (64, 1), (64, 8))  # (events a request, concurrency)
CHUNKS = (1, 64)
# Requests built ahead for one run: at most this many requests a second over warm-up + duration (a run that
# goes faster cycles through them, and says so: time then steps back once for the stateful features stage).
RATE_CAP = {1: 2_500, 64: 600}
METHOD = "/inference.GRPCInferenceService/ModelInfer"
DAY = 86_400.0


# ---- events and requests ------------------------------------------------------------------------------------


def _fields() -> tuple[tuple[str, str], ...]:
    from infer.runtimes.anomaly_programs import RAW_FIELDS

    return tuple((n, dt.value) for n, dt in RAW_FIELDS)


def _raw(values: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = [s.encode() if isinstance(s, str) else bytes(s) for s in values]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    return np.ascontiguousarray(values).tobytes()


def build_requests(events: dict[str, np.ndarray], per_request: int) -> list[bytes]:
    """Serialised ModelInferRequests of ``per_request`` consecutive events each."""
    fields = _fields()
    n = len(events["timestamp"]) // per_request
    out: list[bytes] = []
    for i in range(n):
        a, b = i * per_request, (i + 1) * per_request
        req = pb.ModelInferRequest(model_name=MODEL)
        for name, dt in fields:
            req.inputs.add(name=name, datatype=dt, shape=[per_request, 1])
            req.raw_input_contents.append(_raw(events[name][a:b], dt))
        out.append(req.SerializeToString())
    return out


def event_stream(n: int, n_users: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` events starting 150 days after the build's streams begin (well after their end)."""
    from infer.tasks.anomaly import events as ev

    stream = ev.generate(n, seed, n_users=n_users, start=ev.DEFAULT_START + 150 * DAY)
    return {k: np.asarray(v) for k, v in stream.events.items()}


def take(events: dict[str, np.ndarray], a: int, b: int) -> dict[str, np.ndarray]:
    return {k: v[a:b] for k, v in events.items()}


# ---- the server ---------------------------------------------------------------------------------------------


class Server:
    """``infer serve`` in a subprocess on free loopback ports (``--port-file``), stopped with SIGTERM."""

    def __init__(self, repo: Path, out: Path) -> None:
        self.port_file = out / "infer-ports.json"
        self.port_file.unlink(missing_ok=True)
        self.log_path = out / "infer.log"
        self._log = self.log_path.open("w")
        home = out / "infer-home"
        cmd = [sys.executable, "-m", "infer.cli", "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
               "--grpc-port", "0", "--metrics-port", "-1", "--port-file", str(self.port_file),
               "--shutdown-grace", "5", "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=out,
                                     env={**os.environ, "INFER_HOME": str(home)})
        self.address = ""

    def wait_ready(self, timeout: float = 180.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.port_file.exists() and self.port_file.stat().st_size:
                self.address = f"127.0.0.1:{json.loads(self.port_file.read_text())['grpc']}"
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout:.0f} s:\n{self.log_path.read_text()}")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process so far."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


# ---- statistics ---------------------------------------------------------------------------------------------


@dataclass
class StageStats:
    events: int = 0
    executions: int = 0
    compute_ns: int = 0  # input + infer + output, once per execution
    queue_ns: int = 0
    requests: int = 0
    success_ns: int = 0  # the whole request in the model (queue + compute; for the ensemble: all its steps)

    def minus(self, other: StageStats) -> StageStats:
        return StageStats(*(a - b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def plus(self, other: StageStats) -> StageStats:
        return StageStats(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))


async def statistics(stub: pb_grpc.GRPCInferenceServiceStub) -> dict[str, StageStats]:
    resp = await stub.ModelStatistics(pb.ModelStatisticsRequest())
    out: dict[str, StageStats] = {}
    for m in resp.model_stats:
        s = m.inference_stats
        compute = sum(b.compute_input.ns + b.compute_infer.ns + b.compute_output.ns for b in m.batch_stats)
        out[m.name] = StageStats(m.inference_count, m.execution_count, compute, s.queue.ns, s.success.count,
                                 s.success.ns)
    return out


def speed_probe() -> float:
    """Milliseconds a fixed pure-Python loop takes now: how fast this shared machine is at the moment."""
    t0 = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i
    return (time.perf_counter() - t0) * 1e3


# ---- closed-loop load ---------------------------------------------------------------------------------------


@dataclass
class Point:
    kind: str  # served | in-process
    per_request: int  # events a request (served) or chunk (in process)
    concurrency: int
    run: int
    events_per_s: float = 0.0
    requests: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: dict[str, int] = field(default_factory=dict)
    wrapped: bool = False
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    seconds: float = 0.0
    setup_s: float = 0.0  # in process: building the programs and sessions, excluded from events/s
    probe_ms: float = 0.0  # speed_probe() just before the point

    @property
    def label(self) -> str:
        if self.kind == "served":
            plural = "s" if self.per_request > 1 else ""
            return f"served, {self.per_request} event{plural}/request, c={self.concurrency}"
        return f"in process, chunk {self.per_request}"


async def closed_loop(call: Any, payloads: list[bytes], start: int, concurrency: int, seconds: float,
                      ) -> tuple[list[float], Counter[str], int]:
    """``concurrency`` workers sending ``payloads`` in order (from ``start``) for ``seconds``; returns the
    latencies of the requests that succeeded, errors by code, and the next payload index."""
    counter = itertools.count(start)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    end = time.perf_counter() + seconds
    last = [start]

    async def worker() -> None:
        while (t0 := time.perf_counter()) < end:
            i = next(counter)
            last[0] = i
            try:
                await call(payloads[i % len(payloads)])
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
                continue
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, last[0] + 1


async def served_rate(address: str, payloads: list[bytes], concurrency: int, warmup: float, duration: float,
                      ) -> dict[str, Any]:
    """Serialised ModelInfer requests sent in a closed loop to ``address``: warm up, then measure. Returns
    requests/s, p50/p99 ms of the successes and errors by code."""
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as ch:
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
                              response_deserializer=None)
        _, _, nxt = await closed_loop(call, payloads, 0, concurrency, warmup)
        t0 = time.perf_counter()
        lat, errors, _ = await closed_loop(call, payloads, nxt, concurrency, duration)
        took = time.perf_counter() - t0
    p50, p99 = (float(q) * 1e3 for q in np.percentile(lat, [50, 99])) if lat else (float("nan"),) * 2
    return {"requests_per_s": len(lat) / took, "p50_ms": p50, "p99_ms": p99, "errors": dict(errors)}


def rate_table(points: list[dict[str, Any]], rate: str, item: str) -> str:
    """The per-family throughput scripts' table: one row per (model, path, items a request, concurrency), each
    run's ``rate`` (e.g. ``images_per_s``), p50/p99 of the served points, and served / in process: the mean rate
    against the model's in-process points of the same size (or of any size where none match)."""
    lines = [f"| model | path | {item}/request | c | {item}/s (each run) | p50 ms | p99 ms | served / in process |",
             "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(p["model"], p["kind"], p["size"], p["concurrency"]) for p in points},
                  key=lambda k: (k[0], k[1] != "served", k[2], k[3]))
    for key in keys:
        ps = [p for p in points if (p["model"], p["kind"], p["size"], p["concurrency"]) == key]
        own = [p for p in points if p["model"] == key[0] and p["kind"] == "in process"]
        base = [p[rate] for p in own if p["size"] == key[2]] or [p[rate] for p in own]
        mean = float(np.mean([p[rate] for p in ps]))
        served = key[1] == "served"
        ratio = f"{mean / float(np.mean(base)):.2f}" if base and served else ""
        p50 = f"{np.mean([p['p50_ms'] for p in ps]):.1f}" if served else ""
        p99 = f"{np.mean([p['p99_ms'] for p in ps]):.1f}" if served else ""
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | " + " / ".join(f"{p[rate]:,.0f}" for p in ps)
                     + f" | {p50} | {p99} | {ratio} |")
    return "\n".join(lines)


def run_points(doc: str | None, default_out: Path,
               measure: Callable[[argparse.Namespace], Coroutine[Any, Any, list[dict[str, Any]]]],
               markdown: Callable[[list[dict[str, Any]]], str],
               options: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """The command line of the per-family throughput scripts: ``--repo``, ``--out``, ``--duration``, ``--warmup``,
    ``--repeat`` and what ``options`` adds; runs ``measure``, writes ``results.json`` and ``results.md`` into
    ``--out`` and prints the table."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if options is not None:
        options(ap)
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    points = asyncio.run(measure(args))
    md = markdown(points)
    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    (args.out / "results.json").write_text(json.dumps({**meta, "points": points}, indent=1))
    (args.out / "results.md").write_text(f"{meta['machine']}, {meta['date']}\n\n{md}\n")
    print(md)


async def served_point(stub: pb_grpc.GRPCInferenceServiceStub, call: Any, server: Server, payloads: list[bytes],
                       point: Point, args: argparse.Namespace) -> tuple[dict[str, StageStats], int]:
    """Warm up, then measure ``point``; returns the ModelStatistics deltas over the measured window and the
    number of requests sent (warm-up included)."""
    point.probe_ms = speed_probe()
    _, _, nxt = await closed_loop(call, payloads, 0, point.concurrency, args.warmup)
    before, cpu0, ccpu0 = await statistics(stub), server.cpu_s(), time.process_time()
    t0 = time.perf_counter()
    lat, errors, nxt = await closed_loop(call, payloads, nxt, point.concurrency, args.duration)
    point.seconds = time.perf_counter() - t0
    point.server_cpu_s, point.client_cpu_s = server.cpu_s() - cpu0, time.process_time() - ccpu0
    after = await statistics(stub)
    point.requests, point.errors, point.wrapped = len(lat), dict(errors), nxt > len(payloads)
    point.events_per_s = len(lat) * point.per_request / point.seconds
    if lat:
        point.p50_ms, point.p99_ms = (float(q) * 1e3 for q in np.percentile(lat, [50, 99]))
    return {k: after[k].minus(before.get(k, StageStats())) for k in after}, nxt


def check_first_answers(events: dict[str, np.ndarray], repo: Path, response: bytes) -> float:
    """Max |score difference| between the server's first answer and run_programs on the same events (both from
    the repository's shipped state)."""
    from infer.tasks.anomaly.pipeline_eval import run_programs

    resp = pb.ModelInferResponse.FromString(response)
    i = [o.name for o in resp.outputs].index("score")
    served = np.frombuffer(resp.raw_output_contents[i], np.float32)
    n = len(served)
    ref = run_programs(repo, MODEL, take(events, 0, n), chunk=n)["score"][:, 0]
    return float(np.max(np.abs(served - ref)))


async def first_check(server: Server, events: dict[str, np.ndarray], repo: Path) -> float:
    """Send the first 64 events in one request; compare with run_programs. Returns the max score difference."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        first = build_requests(take(events, 0, 64), 64)[0]
        return check_first_answers(events, repo, await channel.unary_unary(METHOD)(first))


async def served(server: Server, events: dict[str, np.ndarray], args: argparse.Namespace, rnd: int,
                 cursor: list[int], stages: dict[tuple[int, int], dict[str, StageStats]],
                 which: list[tuple[int, int]]) -> list[Point]:
    """The served points ``which`` (events a request, concurrency) of one round; ``cursor`` is the next unsent
    event of ``events``; ``stages`` gathers the ModelStatistics deltas per point."""
    opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    points: list[Point] = []
    async with grpc.aio.insecure_channel(server.address, options=opts) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call = channel.unary_unary(METHOD)  # bytes in, bytes out: nothing encoded or decoded while timed
        for per_request, conc in which:
            n_req = int(RATE_CAP[per_request] * (args.warmup + args.duration))
            n_req = min(n_req, (len(events["timestamp"]) - cursor[0]) // per_request)
            payloads = build_requests(take(events, cursor[0], cursor[0] + n_req * per_request), per_request)
            point = Point("served", per_request, conc, rnd + 1)
            deltas, sent = await served_point(stub, call, server, payloads, point, args)
            cursor[0] += min(sent, n_req) * per_request
            old = stages.get((per_request, conc), {})
            stages[(per_request, conc)] = {k: v.plus(old.get(k, StageStats())) for k, v in deltas.items()}
            print(_line(point), flush=True)
            points.append(point)
    return points


# ---- in process ---------------------------------------------------------------------------------------------


def in_process(repo: Path, events: dict[str, np.ndarray], chunk: int, run: int, seconds: float) -> Point:
    """run_programs in calls of about a quarter of ``seconds`` each, on consecutive slices of ``events``, until
    ``seconds`` have passed; each call's setup (building the programs and sessions: measured on one event,
    median of three) is subtracted from the time."""
    from infer.tasks.anomaly.pipeline_eval import run_programs

    probe_ms = speed_probe()
    total = len(events["timestamp"])
    setups = []
    for _ in range(3):
        t0 = time.perf_counter()
        run_programs(repo, MODEL, take(events, 0, 1), chunk=1)
        setups.append(time.perf_counter() - t0)
    setup = float(np.median(setups))
    probe = min(64 * chunk * 4, total)
    t0 = time.perf_counter()
    run_programs(repo, MODEL, take(events, 0, probe), chunk=chunk)
    rate = probe / max(time.perf_counter() - t0 - setup, 1e-3)
    n = min(total, max(chunk, int(rate * seconds / 4) // chunk * chunk))
    done, a, calls = 0, 0, 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a = 0 if a + n > total else a
        run_programs(repo, MODEL, take(events, a, a + n), chunk=chunk)
        a, done, calls = a + n, done + n, calls + 1
    took = time.perf_counter() - t0
    point = Point("in-process", chunk, 1, run, requests=done // chunk, seconds=took, setup_s=setup,
                  client_cpu_s=time.process_time() - cpu0, probe_ms=probe_ms)
    point.events_per_s = done / max(took - calls * setup, 1e-9)
    print(_line(point), flush=True)
    return point


def no_spin_in_process() -> None:
    """Make run_programs' ONNX Runtime sessions idle without spinning too (for ``--no-spin``): it builds them
    with ``detectors._session``, which this replaces in this process."""
    import onnxruntime as ort

    from infer.tasks.anomaly import detectors as det

    def session(model: Any, threads: int | None = None) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])

    det._session = session


def in_process_stages(repo: Path, events: dict[str, np.ndarray], chunk: int, n_calls: int,
                      spin: bool = True) -> dict[str, float]:
    """Microseconds per call of each stage, the programs and sessions built as run_programs builds them, over
    ``n_calls`` chunks (after ten unmeasured ones)."""
    import onnxruntime as ort

    from infer.runtimes.anomaly_programs import FeatureProgram, ScorerProgram, StreamingProgram

    def params(stage: str) -> dict[str, Any]:
        kernel = json.loads((repo / f"{MODEL}_{stage}" / "1" / "kernel.json").read_text())
        return dict(kernel["params"])

    feats = FeatureProgram(repo / f"{MODEL}_features" / "1", params("features"))
    stream = StreamingProgram(repo / f"{MODEL}_streaming" / "1", params("streaming"))
    scorer = ScorerProgram(repo / f"{MODEL}_scorer" / "1", params("scorer"))
    opts = ort.SessionOptions()
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {d: ort.InferenceSession(str(repo / f"{MODEL}_{d}" / "1" / "model.onnx"), opts,
                                        providers=["CPUExecutionProvider"])
                for d, _ in scorer.detectors if d != "streaming"}
    spent = dict.fromkeys(["features", *sessions, "streaming", "scorer"], 0.0)
    for i in range(n_calls + 10):
        batch = {k: np.asarray(v[i * chunk:(i + 1) * chunk]).reshape(-1, 1) for k, v in events.items()}
        t = [time.perf_counter()]
        f = feats.run(batch, ["features", "series"])
        t.append(time.perf_counter())
        ins: dict[str, Any] = dict(f)
        for d, sess in sessions.items():
            ins[d] = sess.run(["prob"], {"x": f["features"]})[0]
            t.append(time.perf_counter())
        ins["streaming"] = stream.run(f, ["probs"])["probs"]
        t.append(time.perf_counter())
        scorer.run(ins, [])
        t.append(time.perf_counter())
        if i >= 10:
            for k, a, b in zip(spent, t[:-1], t[1:], strict=True):
                spent[k] += b - a
    return {k: v / n_calls * 1e6 for k, v in spent.items()}


# ---- reporting ----------------------------------------------------------------------------------------------


def _line(p: Point) -> str:
    extra = (f"p50 {p.p50_ms:.2f} p99 {p.p99_ms:.2f} ms, {p.requests:,} requests, server CPU "
             f"{p.server_cpu_s / p.seconds:.2f} cores, client CPU {p.client_cpu_s / p.seconds:.2f} cores"
             if p.kind == "served" else f"{p.requests * p.per_request:,} events in {p.seconds:.1f} s, setup "
             f"{p.setup_s * 1e3:.0f} ms")
    flags = (f", errors {p.errors}" if p.errors else "") + (", cycled its requests" if p.wrapped else "")
    return f"run {p.run}: {p.label}: {p.events_per_s:,.0f} events/s, {extra}{flags} (speed probe {p.probe_ms:.0f} ms)"


def _two(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in values)


def points_table(points: list[Point]) -> str:
    rows = ["| point | events/s (each run) | p50 ms | p99 ms | server CPU cores | client CPU cores | errors | "
            "speed probe ms |", "|---|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((p.kind, p.per_request, p.concurrency) for p in points))
    for key in keys:
        ps = [p for p in points if (p.kind, p.per_request, p.concurrency) == key]
        if key[0] == "served":
            rows.append(f"| {ps[0].label} | {_two([p.events_per_s for p in ps], ',.0f')} | "
                        f"{_two([p.p50_ms for p in ps], '.2f')} | {_two([p.p99_ms for p in ps], '.2f')} | "
                        f"{_two([p.server_cpu_s / p.seconds for p in ps], '.2f')} | "
                        f"{_two([p.client_cpu_s / p.seconds for p in ps], '.2f')} | "
                        f"{sum(sum(p.errors.values()) for p in ps)} | {_two([p.probe_ms for p in ps], '.0f')} |")
        else:
            rows.append(f"| {ps[0].label} | {_two([p.events_per_s for p in ps], ',.0f')} | | | | "
                        f"{_two([p.client_cpu_s / p.seconds for p in ps], '.2f')} | 0 | "
                        f"{_two([p.probe_ms for p in ps], '.0f')} |")
    return "\n".join(rows)


def ratio_table(points: list[Point]) -> str:
    def pick(kind: str, per: int, conc: int, run: int) -> Point:
        return next(p for p in points if (p.kind, p.per_request, p.concurrency, p.run) == (kind, per, conc, run))

    runs = sorted({p.run for p in points})
    rows = ["| served point | against | events/s served / in process (each run) | served p50 ms | in-process "
            "ms per call (mean) |", "|---|---|---|---|---|"]
    for per, conc in SERVED_POINTS:
        pairs = [(pick("served", per, conc, r), pick("in-process", per, 1, r)) for r in runs]
        plural = "s" if per > 1 else ""
        rows.append(f"| {per} event{plural}/request, c={conc} | chunk {per} | "
                    f"{_two([s.events_per_s / i.events_per_s for s, i in pairs], '.2f')} | "
                    f"{_two([s.p50_ms for s, _ in pairs], '.2f')} | "
                    f"{_two([per / i.events_per_s * 1e3 for _, i in pairs], '.2f')} |")
    return "\n".join(rows)


def stage_table(stages: dict[tuple[int, int], Any]) -> str:
    rows = ["| served point | model | requests | executions | events | avg batch (events/execution) | "
            "compute us/event | compute us/execution | queue us/request | in-model us/request |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for (per, conc), deltas in stages.items():
        for name in (MODEL, *(f"{MODEL}_{s}" for s in STAGES)):
            s = deltas.get(name)
            if s is None or not s.requests:
                continue
            batch = f"{s.events / s.executions:.1f}" if s.executions else ""
            per_event = f"{s.compute_ns / 1e3 / s.events:.1f}" if s.executions else ""
            per_exec = f"{s.compute_ns / 1e3 / s.executions:.0f}" if s.executions else ""
            queue = f"{s.queue_ns / 1e3 / s.requests:.0f}" if s.executions else ""
            rows.append(f"| {per}/req c={conc} | {name} | {s.requests:,} | {s.executions:,} | {s.events:,} | "
                        f"{batch} | {per_event} | {per_exec} | {queue} | {s.success_ns / 1e3 / s.requests:.0f} |")
    return "\n".join(rows)


def in_process_stage_table(rows: dict[int, list[dict[str, float]]]) -> str:
    chunks = sorted(rows)
    out = ["| stage | " + " | ".join(f"in process, chunk {c}: us/call (each run)" for c in chunks) + " |",
           "|---|" + "---|" * len(chunks)]
    for stage in rows[chunks[0]][0]:
        out.append(f"| {MODEL}_{stage} | " + " | ".join(_two([r[stage] for r in rows[c]], ".0f") for c in chunks)
                   + " |")
    out.append("| all six | " + " | ".join(_two([sum(r.values()) for r in rows[c]], ".0f") for c in chunks) + " |")
    return "\n".join(out)


# ---- main ---------------------------------------------------------------------------------------------------


def ensure_repo(args: argparse.Namespace) -> tuple[Path, int]:
    from infer.tasks.anomaly.pipeline import BuildConfig, build_pipeline

    cfg = BuildConfig()
    repo = args.repo or args.out / "repo"
    if not (repo / MODEL / "config.pbtxt").exists():
        t0 = time.perf_counter()
        build_pipeline(repo, MODEL, cfg, progress=False, evaluate=False)
        print(f"built {repo} in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.no_spin:  # a copy whose ONNX stages' intra-op threads sleep when idle instead of spinning
        copy = args.out / "repo-no-spin"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(repo, copy)
        for stage in ("iforest", "lof", "autoencoder"):
            config = copy / f"{MODEL}_{stage}" / "config.pbtxt"
            if config.exists():
                config.write_text(config.read_text() + 'parameters { key: "infer.allow_spinning" '
                                  'value: { string_value: "0" } }\n')
        repo = copy
    return repo, cfg.n_users


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    repo, n_users = ensure_repo(args)
    if args.no_spin:
        no_spin_in_process()
    per_run = sum(RATE_CAP[per] * (args.warmup + args.duration) * per for per, _ in SERVED_POINTS)
    events = event_stream(int(per_run * args.repeat) + 64, n_users, args.seed)
    print(f"{len(events['timestamp']):,} events generated", flush=True)
    server = Server(repo, args.out)
    points: list[Point] = []
    stages: dict[tuple[int, int], dict[str, StageStats]] = {}
    stage_us: dict[int, list[dict[str, float]]] = {}
    try:
        t0 = time.perf_counter()
        server.wait_ready()
        print(f"server ready at {server.address} in {time.perf_counter() - t0:.1f} s", flush=True)
        diff = await first_check(server, events, repo)
        print(f"first 64 events, served vs run_programs: max |score difference| {diff:.3g}", flush=True)
        cursor = [64]
        for rnd in range(args.repeat):  # each served point beside the in-process point of the same size
            for chunk in CHUNKS:
                which = [p for p in SERVED_POINTS if p[0] == chunk]
                points += await served(server, events, args, rnd, cursor, stages, which)
                points.append(in_process(repo, events, chunk, rnd + 1, args.duration))
                stage_us.setdefault(chunk, []).append(
                    in_process_stages(repo, events, chunk, 2000 // chunk + 200, spin=not args.no_spin))
    finally:
        rc = server.stop()
    print(f"server stopped (exit code {rc})", flush=True)
    return {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "repo": str(repo),
            "points": [asdict(p) for p in points], "server_exit_code": rc,
            "stages": {f"{k[0]}x{k[1]}": {n: asdict(s) for n, s in v.items()} for k, v in stages.items()},
            "in_process_stage_us": stage_us,
            "markdown": "\n\n".join([points_table(points), ratio_table(points), stage_table(stages),
                                      in_process_stage_table(stage_us)])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repo", type=Path, help="reuse this pipeline repository (built there when missing)")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "anomaly_pipeline", help="logs, repo and results")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per point and run")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each served point")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of every point")
    ap.add_argument("--seed", type=int, default=1, help="seed of the event stream")
    ap.add_argument("--no-spin", action="store_true",
                    help='ONNX Runtime threads that do not spin: served (infer.allow_spinning "0" on the '
                         'ONNX stages of a copy of the repository) and in process')
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(main_async(args))
    (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "results.md").write_text(report["markdown"] + "\n")
    print("\n" + report["machine"] + "\n\n" + report["markdown"])
    if report["server_exit_code"] != 0:
        sys.exit(f"server exited with {report['server_exit_code']}")


if __name__ == "__main__":
    main()
