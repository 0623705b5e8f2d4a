"""Load generator for any Open Inference Protocol (KServe V2) gRPC server: infer, Triton, MLServer...

Closed loop at concurrency C, or open loop at a Poisson rate R; bounded by time and request count;
loopback targets only unless ``--allow-remote``. Two client backends:

* ``python``: one grpc.aio channel sending a pre-serialised ModelInferRequest (no protobuf work per
  request on the client side);
* ``h2load``: nghttp2's C load generator (Debian ``nghttp2-client``) posting the same pre-built gRPC
  frame, for when a Python client would cost as much CPU as the server it measures. h2load cannot
  read gRPC trailers, so the harness checks the frame with one real call first and counts HTTP errors.

Reports throughput, p50/p95/p99/p99.9 latency and errors as JSON; ``--plot`` draws latency vs throughput.

    python benchmarks/loadgen.py --target 127.0.0.1:8001 --model anomaly --concurrency 1 32 --duration 5
    python benchmarks/loadgen.py --target 127.0.0.1:8001 --model anomaly --rate 500 2000 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

METHOD = "/inference.GRPCInferenceService/ModelInfer"
_NP = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32,
       "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
       "UINT64": np.uint64, "BOOL": np.bool_}
MAX_REQUESTS = 5_000_000  # hard bound whatever the arguments say
MAX_SECONDS = 600.0


@dataclass
class Result:
    target: str
    model: str
    backend: str
    mode: str  # closed | open
    concurrency: int
    rate: float
    batch: int
    seconds: float
    ok: int
    errors: dict[str, int] = field(default_factory=dict)
    throughput: float = 0.0  # successful requests per second
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    mean_ms: float = math.nan
    label: str = ""
    deadline_ms: int = 0

    def summary(self) -> str:
        load = f"c={self.concurrency}" if self.mode == "closed" else f"rate={self.rate:g}/s"
        errs = sum(self.errors.values())
        return (f"{self.label or self.target} {self.model} {self.backend} {load} batch={self.batch}: "
                f"{self.throughput:,.0f} req/s p50 {self.p50_ms:.2f} p95 {self.p95_ms:.2f} p99 {self.p99_ms:.2f} "
                f"p99.9 {self.p999_ms:.2f} ms, errors {errs}")


def _finish(res: Result, latencies_s: list[float] | np.ndarray, seconds: float) -> Result:
    lat = np.asarray(latencies_s, dtype=np.float64) * 1e3
    res.seconds = seconds
    res.ok = int(lat.size)
    res.throughput = lat.size / seconds if seconds > 0 else 0.0
    if lat.size:
        res.p50_ms, res.p95_ms, res.p99_ms, res.p999_ms = (float(x) for x in np.percentile(lat, [50, 95, 99, 99.9]))
        res.mean_ms = float(lat.mean())
    return res


def check_target(target: str, allow_remote: bool) -> None:
    host = target.rsplit(":", 1)[0].strip("[]")
    if allow_remote:
        return
    addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise SystemExit(f"loadgen: {target} is not a loopback address; pass --allow-remote to load it anyway")


def build_request(target: str, model: str, batch: int, seed: int = 0, timeout_us: int = 0) -> bytes:
    """A ModelInferRequest with random inputs shaped from the model's metadata (-1 dims -> batch, then 1)."""
    with grpc.insecure_channel(target) as ch:
        md = pb_grpc.GRPCInferenceServiceStub(ch).ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=10)
    if not md.inputs:
        raise SystemExit(f"loadgen: {target} lists no inputs for {model}; give them with --input name:DT:dims")
    spec = [(t.name, t.datatype, list(t.shape)) for t in md.inputs]
    return request_from_spec(model, spec, batch, seed, timeout_us)


def request_from_spec(model: str, spec: list[tuple[str, str, list[int]]], batch: int = 1, seed: int = 0,
                      timeout_us: int = 0) -> bytes:
    """The same request bytes for every server under test: inputs (name, datatype, dims with -1)."""
    rng = np.random.default_rng(seed)
    req = pb.ModelInferRequest(model_name=model)
    if timeout_us:
        req.parameters["timeout"].int64_param = timeout_us
    for name, datatype, dims in spec:
        shape = [batch if (j == 0 and d < 0) else (1 if d < 0 else d) for j, d in enumerate(dims)]
        if datatype not in _NP:
            raise SystemExit(f"loadgen: input {name} has datatype {datatype}; only numeric inputs are generated")
        arr = rng.standard_normal(shape).astype(_NP[datatype])
        req.inputs.add(name=name, datatype=datatype, shape=shape)
        req.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
    return req.SerializeToString()


def parse_spec(text: str) -> tuple[str, str, list[int]]:
    name, datatype, dims = text.split(":")
    return name, datatype, [int(d) for d in dims.split(",")]


def _channel(target: str) -> grpc.aio.Channel:
    opts = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    return grpc.aio.insecure_channel(target, options=opts)


async def closed_loop(target: str, payload: bytes, concurrency: int, seconds: float, warmup: float,
                      max_requests: int, connections: int = 1) -> tuple[list[float], Counter[str], float]:
    channels = [_channel(target) for _ in range(connections)]
    try:
        return await _closed(channels, payload, concurrency, seconds, warmup, max_requests)
    finally:
        for ch in channels:
            await ch.close()


async def _closed(channels: list[grpc.aio.Channel], payload: bytes, concurrency: int, seconds: float,
                  warmup: float, max_requests: int) -> tuple[list[float], Counter[str], float]:
    calls = [ch.unary_unary(METHOD) for ch in channels]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    state = {"measure": False, "stop": False, "count": 0}

    async def worker(call: Any) -> None:
        perf = time.perf_counter
        while not state["stop"]:
            t0 = perf()
            try:
                await call(payload, timeout=30)
            except grpc.aio.AioRpcError as e:
                if state["measure"]:
                    errors[e.code().name] += 1
                continue
            if state["measure"]:
                latencies.append(perf() - t0)
                state["count"] += 1
                if state["count"] >= max_requests:
                    state["stop"] = True

    tasks = [asyncio.create_task(worker(calls[i % len(calls)])) for i in range(concurrency)]
    await asyncio.sleep(warmup)
    state["measure"] = True
    t0 = time.perf_counter()
    end = t0 + seconds
    while not state["stop"] and time.perf_counter() < end:
        await asyncio.sleep(0.05)
    state["stop"] = True
    elapsed = time.perf_counter() - t0
    state["measure"] = False
    await asyncio.gather(*tasks)
    return latencies, errors, elapsed


async def open_loop(target: str, payload: bytes, rate: float, seconds: float, warmup: float, max_requests: int,
                    seed: int = 0, deadline_s: float = 30.0) -> tuple[list[float], Counter[str], float]:
    """Poisson arrivals; latency measured from each request's scheduled time (no coordinated omission)."""
    async with _channel(target) as ch:
        call = ch.unary_unary(METHOD)
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        rng = np.random.default_rng(seed)
        n = min(max_requests, int(rate * (seconds + warmup) * 1.2) + 10)
        gaps = rng.exponential(1.0 / rate, n)
        pending: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        measure_from = start + warmup

        async def one(scheduled: float) -> None:
            try:
                await call(payload, timeout=deadline_s)
            except grpc.aio.AioRpcError as e:
                if scheduled >= measure_from:
                    errors[e.code().name] += 1
                return
            if scheduled >= measure_from:
                latencies.append(time.perf_counter() - scheduled)

        t = start
        for gap in gaps:
            t += gap
            if t > measure_from + seconds:
                break
            delay = t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(pending) >= 20000:
                errors["CLIENT_OVERLOAD"] += 1
                continue
            task = asyncio.create_task(one(t))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        return latencies, errors, seconds


def h2load_run(target: str, payload: bytes, concurrency: int, seconds: float, warmup: float,
               max_requests: int, connections: int = 1) -> tuple[np.ndarray, Counter[str], float]:
    exe = shutil.which("h2load")
    if exe is None:
        raise SystemExit("loadgen: h2load not found (apt-get install nghttp2-client)")
    with tempfile.TemporaryDirectory() as tmp:
        frame = Path(tmp, "frame.bin")
        frame.write_bytes(struct.pack(">BI", 0, len(payload)) + payload)
        log = Path(tmp, "log.tsv")
        cmd = [exe, "-c", str(connections), "-m", str(max(1, concurrency // connections)), "-t", "1", "-d", str(frame),
               "-H", "content-type: application/grpc", "-H", "te: trailers",
               "--duration", f"{seconds:g}", "--warm-up-time", f"{warmup:g}", "--log-file", str(log),
               f"http://{target}{METHOD}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 60)
        if out.returncode != 0:
            raise SystemExit(f"loadgen: h2load failed: {out.stderr or out.stdout}")
        rows = np.loadtxt(log, dtype=np.int64, ndmin=2) if log.stat().st_size else np.zeros((0, 3), np.int64)
    rows = rows[:max_requests]
    errors: Counter[str] = Counter()
    bad = rows[:, 1] != 200
    if bad.any():
        errors["HTTP_" + "_".join(sorted({str(s) for s in rows[bad, 1]}))] = int(bad.sum())
    return rows[~bad, 2] / 1e6, errors, seconds


def verify(target: str, payload: bytes) -> None:
    """One real call with the payload: a harness that measures errors fast is worse than none."""
    with grpc.insecure_channel(target) as ch:
        ch.unary_unary(METHOD)(payload, timeout=30)


def run_point(target: str, model: str, payload: bytes, *, backend: str, concurrency: int = 0, rate: float = 0.0,
              batch: int = 1, seconds: float = 5.0, warmup: float = 1.0, max_requests: int = 1_000_000,
              label: str = "", connections: int = 1, deadline_s: float = 30.0) -> Result:
    seconds = min(seconds, MAX_SECONDS)
    max_requests = min(max_requests, MAX_REQUESTS)
    mode = "open" if rate else "closed"
    res = Result(target, model, backend, mode, concurrency, rate, batch, seconds, 0, label=label)
    connections = max(1, min(connections, concurrency or connections))
    if backend == "h2load":
        if rate:
            raise SystemExit("loadgen: the h2load backend runs closed loop only")
        lat, errors, elapsed = h2load_run(target, payload, concurrency, seconds, warmup, max_requests, connections)
    elif rate:
        lat, errors, elapsed = asyncio.run(
            open_loop(target, payload, rate, seconds, warmup, max_requests, deadline_s=deadline_s))
    else:
        lat, errors, elapsed = asyncio.run(
            closed_loop(target, payload, concurrency, seconds, warmup, max_requests, connections))
    res.errors = dict(errors)
    return _finish(res, lat, elapsed)


def plot(results: list[Result], path: Path) -> None:
    """p99 latency against throughput, one panel per model, one line per server and client."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r.model for r in results})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        groups: dict[str, list[Result]] = {}
        for r in results:
            if r.model == model:
                groups.setdefault(f"{(r.label or r.target).split('#')[0]} ({r.backend})", []).append(r)
        for name, rs in sorted(groups.items()):
            rs = sorted(rs, key=lambda r: (r.concurrency, r.rate, r.throughput))
            style = "--" if name.endswith("(python)") else "-"
            ax.plot([r.throughput for r in rs], [r.p99_ms for r in rs], style, marker="o", label=name)
        ax.set_title(model)
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel("p99 latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="127.0.0.1:8001")
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=1, help="samples per request")
    p.add_argument("--timeout-us", type=int, default=0, help="send Triton's `timeout` parameter (microseconds)")
    p.add_argument("--input", action="append", default=[], help="name:DATATYPE:dims (-1 = batch) instead of metadata")
    p.add_argument("--concurrency", type=int, nargs="*", default=[], help="closed-loop points")
    p.add_argument("--rate", type=float, nargs="*", default=[], help="open-loop points (requests/s, Poisson)")
    p.add_argument("--backend", choices=["python", "h2load"], default="python")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--max-requests", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--json", type=Path, help="write results here")
    p.add_argument("--plot", type=Path, help="write a latency-vs-throughput PNG here")
    p.add_argument("--allow-remote", action="store_true")
    a = p.parse_args(argv)
    check_target(a.target, a.allow_remote)
    if not a.concurrency and not a.rate:
        a.concurrency = [1]
    if a.input:
        payload = request_from_spec(a.model, [parse_spec(t) for t in a.input], a.batch, timeout_us=a.timeout_us)
    else:
        payload = build_request(a.target, a.model, a.batch, timeout_us=a.timeout_us)
    verify(a.target, payload)
    results = []
    for _ in range(a.repeat):
        for c in a.concurrency:
            results.append(run_point(a.target, a.model, payload, backend=a.backend, concurrency=c, batch=a.batch,
                                     seconds=a.duration, warmup=a.warmup, max_requests=a.max_requests))
            print(results[-1].summary(), flush=True)
        for r in a.rate:
            results.append(run_point(a.target, a.model, payload, backend=a.backend, rate=r, batch=a.batch,
                                     seconds=a.duration, warmup=a.warmup, max_requests=a.max_requests))
            print(results[-1].summary(), flush=True)
    if a.json:
        a.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    if a.plot:
        plot(results, a.plot)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())
