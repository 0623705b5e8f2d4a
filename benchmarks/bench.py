"""One run of every baseline the scheduler is judged against, on the same models and client.

    python benchmarks/bench.py [--out benchmarks/out/run] [--duration 5] [--repeat 2] [--backend python h2load]

Models: ``anomaly`` (small: 16 features, transport-bound) and ``dense`` (21.5 M-parameter MLP,
compute-bound). Servers: the bare grpc.aio echo server (transport ceiling), infer, and Seldon
MLServer (benchmarks/peers, when set up) in its default and best configurations; plus ONNX Runtime
in-process (compute ceiling). Writes results.json, results.md (the table for RESULTS.md) and
latency.png into --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ceiling  # noqa: E402
import loadgen  # noqa: E402
from models import build_dense  # noqa: E402

CONCURRENCY = {"anomaly": [1, 32], "dense": [1, 64]}
INPUTS = {"anomaly": "features:FP32:-1,16", "dense": "x:FP32:-1,256"}


def build_repo(repo: Path) -> None:
    from infer.tasks.anomaly.build import build_model

    if not (repo / "anomaly" / "1" / "model.onnx").exists():
        build_model(repo)
    if not (repo / "dense" / "1" / "model.onnx").exists():
        build_dense(repo)


def _wait_file(path: Path, proc: subprocess.Popen[Any], timeout: float = 120) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.stat().st_size:
            return path.read_text()
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        time.sleep(0.05)
    raise TimeoutError(str(proc.args))


def start_infer(repo: Path, out: Path, extra: list[str], port: int = 0,
                tag: str = "") -> tuple[subprocess.Popen[Any], str]:
    ports = out / f"infer-ports{tag}.json"
    ports.unlink(missing_ok=True)
    log = (out / f"infer{tag}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "infer.cli", "serve", "--model-repository", str(repo),
                             "--host", "127.0.0.1", "--grpc-port", str(port), "--metrics-port", "-1",
                             "--port-file", str(ports), "--log-level", "warning", *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    bound = json.loads(_wait_file(ports, proc))["grpc"]
    return proc, f"127.0.0.1:{bound}"


def start_infer_group(repo: Path, out: Path, extra: list[str], n: int) -> tuple[list[subprocess.Popen[Any]], str]:
    """n server processes sharing one port with SO_REUSEPORT (the kernel spreads connections)."""
    port = free_port()
    procs = []
    for i in range(n):
        proc, target = start_infer(repo, out, [*extra, "--reuse-port"], port=port, tag=f"-{i}")
        procs.append(proc)
    return procs, target


def start_echo(model: str, inputs: str, out: Path) -> tuple[subprocess.Popen[Any], str]:
    ready = out / f"echo-{model}.port"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, str(HERE / "echo_server.py"), "--model", model, "--input", inputs,
                             "--ready-file", str(ready)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return proc, f"127.0.0.1:{_wait_file(ready, proc)}"


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure_server(label: str, target: str, model: str, args: argparse.Namespace,
                   connections: int = 1) -> list[loadgen.Result]:
    payload = loadgen.request_from_spec(model, [loadgen.parse_spec(INPUTS[model])])
    loadgen.verify(target, payload)
    results = []
    for backend in args.backend:
        for rep in range(args.repeat):
            for c in CONCURRENCY[model]:
                r = loadgen.run_point(target, model, payload, backend=backend, concurrency=c,
                                      seconds=args.duration, warmup=args.warmup, label=label,
                                      connections=connections)
                r.label = f"{label}#{rep + 1}"
                print(r.summary(), flush=True)
                results.append(r)
    return results


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlserver_configs(model: str) -> list[tuple[str, dict[str, Any]]]:
    """MLServer as shipped (one parallel worker, no batching) and at its best here (in-process, adaptive
    batching on); ONNX Runtime threads as in infer's config for the same model."""
    threads = {"anomaly": 1, "dense": 0}[model]
    batch = {"anomaly": 32, "dense": 64}[model]
    return [
        ("mlserver-default", {"parallel_workers": 1, "intra_op_threads": threads}),
        ("mlserver-best", {"parallel_workers": 0, "max_batch_size": batch, "max_batch_time_s": 0.002,
                           "intra_op_threads": threads}),
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    repo = out / "repo"
    build_repo(repo)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                              "command": " ".join(sys.argv), "ceiling": {}, "results": []}
    results: list[loadgen.Result] = [] if args.skip_baselines else baselines(repo, out, args, report)
    if args.deadline_rates:
        report["deadline"] = [asdict(r) for r in deadline_experiment(repo, out, args)]
    if args.overload:
        report["overload"] = overload_experiment(repo, out, args)
    report["results"] = [asdict(r) for r in results]
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "results.md").write_text(table(report))
    if results:
        loadgen.plot(results, out / "latency.png")
    print(table(report))
    return report


def baselines(repo: Path, out: Path, args: argparse.Namespace, report: dict[str, Any]) -> list[loadgen.Result]:
    for model in args.models:
        report["ceiling"][model] = ceiling.measure(repo / model / "1" / "model.onnx", [1, 8, 16, 32, 64],
                                                   seconds=2.0)
        print(model, "in-process best", report["ceiling"][model]["best"], flush=True)
    results: list[loadgen.Result] = []
    for model in args.models:
        proc, target = start_echo(model, INPUTS[model], out)
        try:
            results += measure_server("echo", target, model, args)
        finally:
            stop(proc)
    proc, target = start_infer(repo, out, args.infer_args)
    try:
        for model in args.models:
            results += measure_server("infer", target, model, args)
    finally:
        stop(proc)
    if args.processes > 1:
        procs, target = start_infer_group(repo, out, args.infer_args, args.processes)
        try:
            for model in args.models:
                results += measure_server(f"infer-x{args.processes}", target, model, args, connections=args.processes)
        finally:
            for proc in procs:
                stop(proc)
    if not args.skip_mlserver:
        results += run_mlserver(repo, out, args)
    return results


def run_mlserver(repo: Path, out: Path, args: argparse.Namespace) -> list[loadgen.Result]:
    sys.path.insert(0, str(HERE / "peers"))
    from mlserver_peer import start_mlserver, stop_mlserver

    subprocess.run(["bash", str(HERE / "peers" / "setup_mlserver.sh")], check=True)

    results: list[loadgen.Result] = []
    for model in args.models:
        for label, cfg in mlserver_configs(model):
            work = out / f"{label}-{model}"
            port = free_port()
            proc = start_mlserver(repo / model / "1" / "model.onnx", model, work, grpc_port=port,
                                  http_port=free_port(), metrics_port=free_port(), **cfg)
            try:
                results += measure_server(label, f"127.0.0.1:{port}", model, args)
            finally:
                stop_mlserver(proc)
    return results


def deadline_experiment(repo: Path, out: Path, args: argparse.Namespace) -> list[loadgen.Result]:
    """Open-loop Poisson load, every request with a gRPC deadline: deadline-aware dropping on
    (``dense``) vs off (``dense_unaware``, the same file)."""
    from models import dense_config

    drepo = out / "deadline-repo"
    for name, extra in (("dense", ""), ("dense_unaware", 'parameters { key: "infer.deadline_aware" '
                                                       'value: { string_value: "false" } }\n')):
        (drepo / name).mkdir(parents=True, exist_ok=True)
        link = drepo / name / "1"
        if not link.exists():
            link.symlink_to((repo / "dense" / "1").resolve())
        (drepo / name / "config.pbtxt").write_text(dense_config(name, inputs=256) + extra)
    proc, target = start_infer(drepo, out, args.infer_args, tag="-deadline")
    results = []
    try:
        for rep in range(args.repeat):
            for rate in args.deadline_rates:
                for model in ("dense", "dense_unaware"):
                    payload = loadgen.request_from_spec(model, [loadgen.parse_spec(INPUTS["dense"])])
                    r = loadgen.run_point(target, model, payload, backend="python", rate=rate,
                                          seconds=args.duration, warmup=args.warmup, label=f"deadline#{rep + 1}",
                                          deadline_s=args.deadline_ms / 1000)
                    r.deadline_ms = args.deadline_ms
                    print(r.summary(), flush=True)
                    results.append(r)
    finally:
        stop(proc)
    return results


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def overload_experiment(repo: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Ten times the load the server can serve, then normal load again: what is refused, what the
    accepted requests' latency does, and the server's memory (RSS sampled every 100 ms)."""
    import threading

    orepo = out / "overload-repo"
    (orepo / "slow").mkdir(parents=True, exist_ok=True)
    link = orepo / "slow" / "1"
    if not link.exists():
        link.symlink_to((repo / "dense" / "1").resolve())
    (orepo / "slow" / "config.pbtxt").write_text(
        'name: "slow"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 1\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 256 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
        f"dynamic_batching {{ default_queue_policy {{ max_queue_size: {args.overload_queue} }} }}\n"
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n')
    proc, target = start_infer(orepo, out, [*args.infer_args, "--max-concurrent-rpcs", str(args.overload_max_rpcs)],
                               tag="-overload")
    payload = loadgen.request_from_spec("slow", [loadgen.parse_spec(INPUTS["dense"])])
    report: dict[str, Any] = {"phases": [], "max_rpcs": args.overload_max_rpcs, "queue": args.overload_queue}
    try:
        cap = loadgen.run_point(target, "slow", payload, backend="python", concurrency=8, seconds=args.duration,
                                warmup=args.warmup).throughput
        report["capacity"] = cap
        report["rss_idle_mb"] = _rss_mb(proc.pid)
        for name, mult in (("at capacity", 1.0), ("10x capacity", 10.0), ("right after", 1.0)):
            samples: list[float] = []
            stop_evt = threading.Event()

            def sample(samples: list[float] = samples, stop_evt: threading.Event = stop_evt) -> None:
                while not stop_evt.is_set():
                    samples.append(_rss_mb(proc.pid))
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample)
            sampler.start()
            r = loadgen.run_point(target, "slow", payload, backend="python", rate=cap * mult, seconds=args.duration,
                                  warmup=0.5)
            stop_evt.set()
            sampler.join()
            row = {"phase": name, "rate": cap * mult, **asdict(r), "rss_max_mb": max(samples)}
            print(f"overload {name}: {r.summary()} rss max {row['rss_max_mb']:.0f} MB", flush=True)
            report["phases"].append(row)
        report["rss_end_mb"] = _rss_mb(proc.pid)
    finally:
        stop(proc)
    return report


def overload_table(o: dict[str, Any]) -> str:
    lines = ["", f"Overload (model `slow`: the dense MLP unbatched on one thread, capacity {o['capacity']:,.0f} req/s; "
             f"queue bound {o['queue']}, --max-concurrent-rpcs {o['max_rpcs']}; "
             f"server RSS idle {o['rss_idle_mb']:.0f} MB, after {o['rss_end_mb']:.0f} MB):", "",
             "| phase | offered req/s | answered req/s | p50 ms | p99 ms | refused (RESOURCE_EXHAUSTED) | other errors "
             "| max RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for p in o["phases"]:
        errors = dict(p["errors"])
        refused = errors.pop("RESOURCE_EXHAUSTED", 0)
        lines.append(f"| {p['phase']} | {p['rate']:,.0f} | {p['throughput']:,.0f} | {p['p50_ms']:.1f} | "
                     f"{p['p99_ms']:.1f} | {refused:,} | {sum(errors.values()):,} {errors or ''} | "
                     f"{p['rss_max_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def deadline_table(rows: list[dict[str, Any]], deadline_ms: int) -> str:
    lines = ["", f"Deadline-aware batching (dense, open loop, every request with a {deadline_ms} ms gRPC deadline):",
             "",
             "| rate req/s | deadline-aware | good req/s (each run) | p50 ms | p99 ms | DEADLINE_EXCEEDED |",
             "|---|---|---|---|---|---|"]
    for rate in sorted({r["rate"] for r in rows}):
        for model in ("dense", "dense_unaware"):
            rs = [r for r in rows if r["rate"] == rate and r["model"] == model]
            if not rs:
                continue
            each = " / ".join(f"{r['throughput']:,.0f}" for r in rs)
            expired = " / ".join(str(r["errors"].get("DEADLINE_EXCEEDED", 0)) for r in rs)
            lines.append(f"| {rate:,.0f} | {'on' if model == 'dense' else 'off'} | {each} | "
                         f"{np.mean([r['p50_ms'] for r in rs]):.1f} | {np.mean([r['p99_ms'] for r in rs]):.1f} | "
                         f"{expired} |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores {cpu}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _agg(rows: list[dict[str, Any]]) -> tuple[float, float, float]:
    return (float(np.mean([r["throughput"] for r in rows])), float(np.mean([r["p50_ms"] for r in rows])),
            float(np.mean([r["p99_ms"] for r in rows])))


def table(report: dict[str, Any]) -> str:
    rows = report["results"]
    lines = ["| model | server | client | c | req/s (each run) | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["model"], r["label"].split("#")[0], r["backend"], r["concurrency"]) for r in rows})
    agg: dict[tuple[str, str, str, int], tuple[float, float, float]] = {}
    for key in keys:
        rs = [r for r in rows if (r["model"], r["label"].split("#")[0], r["backend"], r["concurrency"]) == key]
        agg[key] = _agg(rs)
        each = " / ".join(f"{r['throughput']:,.0f}" for r in rs)
        errs = sum(sum(r["errors"].values()) for r in rs)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {each} | {agg[key][1]:.2f} | "
                     f"{agg[key][2]:.2f} | {errs} |")
    lines += ["", "| model (ONNX Runtime in-process) | batch-1 ms | best batch | best samples/s |", "|---|---|---|---|"]
    for model, c in report["ceiling"].items():
        best = c["best"]
        lines.append(f"| {model} | {c['batch1_ms']:.3f} | {best['batch']} | {best['samples_per_s']:,.0f} |")
    if report.get("deadline"):
        lines.append(deadline_table(report["deadline"], report["deadline"][0]["deadline_ms"]))
    if report.get("overload"):
        lines.append(overload_table(report["overload"]))
    lines += ["", "Ratios (means of the runs above):", ""]
    for model in report["ceiling"]:
        for backend in sorted({k[2] for k in keys}):
            hi = CONCURRENCY[model][1]
            inf = agg.get((model, "infer", backend, hi))
            echo = agg.get((model, "echo", backend, hi))
            best = agg.get((model, "mlserver-best", backend, hi))
            c1i, c1e = agg.get((model, "infer", backend, 1)), agg.get((model, "echo", backend, 1))
            if inf and echo and model == "anomaly":
                lines.append(f"- {model} ({backend}) c={hi}: infer / transport ceiling = {inf[0] / echo[0]:.2f}")
            if inf and model == "dense":
                ceil = report["ceiling"][model]["best"]["samples_per_s"]
                lines.append(f"- {model} ({backend}) c={hi}: infer / in-process compute ceiling = {inf[0] / ceil:.2f}")
            if inf and best:
                lines.append(f"- {model} ({backend}) c={hi}: infer / MLServer best = {inf[0] / best[0]:.2f} "
                             f"(p99 {inf[2]:.1f} vs {best[2]:.1f} ms)")
            if c1i and c1e:
                budget = c1e[1] + report["ceiling"][model]["batch1_ms"]
                lines.append(f"- {model} ({backend}) c=1: infer p50 {c1i[1]:.3f} ms vs echo p50 + batch-1 compute "
                             f"{budget:.3f} ms (excess {c1i[1] - budget:+.3f} ms)")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "out" / "run")
    p.add_argument("--models", nargs="+", default=["anomaly", "dense"])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--backend", nargs="+", default=["python"], choices=["python", "h2load"])
    p.add_argument("--skip-mlserver", action="store_true")
    p.add_argument("--processes", type=int, default=1, help="also measure N infer processes sharing the port")
    p.add_argument("--deadline-rates", type=float, nargs="*", default=[], help="open-loop rates for the deadline run")
    p.add_argument("--deadline-ms", type=int, default=100)
    p.add_argument("--skip-baselines", action="store_true", help="only the deadline/overload experiments")
    p.add_argument("--overload", action="store_true", help="run the 10x-capacity overload experiment")
    p.add_argument("--overload-max-rpcs", type=int, default=256, help="infer's --max-concurrent-rpcs for it")
    p.add_argument("--overload-queue", type=int, default=8, help="the model's max_queue_size for it")
    p.add_argument("--infer-args", nargs=argparse.REMAINDER, default=[], help="extra flags for infer serve")
    run(p.parse_args())


if __name__ == "__main__":
    main()
