"""Forecasting throughput: series per second through the served ``forecast`` model (every candidate, the
backtests and the selector) and ``forecast_snaive`` (the cheapest candidate, backtests included), against the
same program run in process on the same batches.

Builds a small repository (package and generated series; or reuses ``--repo``), starts ``infer serve`` on free
loopback ports and measures each point for ``--duration`` seconds after ``--warmup`` seconds, ``--repeat``
times (rounds interleaved):

* served: S series a request (S = 1, 16, 64) at concurrency 1 and 8;
* in process: :class:`infer.runtimes.forecast_program.ForecastProgram` on batches of S (no server, no scheduler).

Each series is two weeks of hourly history (336 values), forecast 24 steps ahead with 80% and 95% intervals,
season 24. Requests are serialised before a point starts, so no client-side encoding is timed.

    .venv/bin/python benchmarks/forecast_throughput.py
    .venv/bin/python benchmarks/forecast_throughput.py --repo /tmp/frepo --duration 5 --repeat 2

Writes ``results.json`` and ``results.md`` into ``--out``; prints the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

import numpy as np  # noqa: E402
from anomaly_pipeline import Server, rate_table, run_points, served_rate  # noqa: E402  (this folder is first on sys.path)

from infer._proto import grpc_service_pb2 as pb  # noqa: E402

MODELS = ("forecast", "forecast_snaive")
SIZES = (1, 16, 64)
CONCURRENCY = (1, 8)
HISTORY, HORIZON = 336, 24


def histories(count: int, seed: int) -> np.ndarray:
    from infer.tasks.forecast.data import synthetic_ops

    return np.stack([s.values[-HISTORY:] for s in synthetic_ops(count, seed=seed)]).astype(np.float32)


def inputs(hist: np.ndarray) -> dict[str, np.ndarray]:
    n = hist.shape[0]
    return {"history": hist, "horizon": np.full((n, 1), HORIZON, np.int32),
            "levels": np.tile(np.float32([80, 95]), (n, 1)), "season": np.full((n, 1), 24, np.int32)}


def payloads(model: str, hist: np.ndarray, size: int) -> list[bytes]:
    out = []
    for a in range(0, hist.shape[0] - size + 1, size):
        req = pb.ModelInferRequest(model_name=model)
        for name, arr in inputs(hist[a:a + size]).items():
            req.inputs.add(name=name, datatype="FP32" if arr.dtype == np.float32 else "INT32", shape=list(arr.shape))
            req.raw_input_contents.append(arr.tobytes())
        out.append(req.SerializeToString())
    return out


async def served_point(address: str, model: str, hist: np.ndarray, size: int, conc: int,
                       args: argparse.Namespace) -> dict[str, Any]:
    r = await served_rate(address, payloads(model, hist, size), conc, args.warmup, args.duration)
    return {"kind": "served", "model": model, "size": size, "concurrency": conc,
            "series_per_s": r["requests_per_s"] * size, "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "errors": r["errors"]}


def in_process_point(repo: Path, model: str, hist: np.ndarray, size: int, seconds: float) -> dict[str, Any]:
    from infer.runtimes.forecast_program import ForecastProgram

    program = ForecastProgram(repo / model / "1", {"spec": "forecast.json"})
    names = [s.name for s in program.outputs]
    batches = [inputs(hist[a:a + size]) for a in range(0, hist.shape[0] - size + 1, size)]
    program.run(batches[0], names)  # first-call costs (ONNX sessions) out of the window
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        program.run(batches[done % len(batches)], names)
        done += 1
    return {"kind": "in process", "model": model, "size": size, "concurrency": 1,
            "series_per_s": done * size / (time.perf_counter() - t0), "p50_ms": float("nan"), "p99_ms": float("nan"),
            "errors": {}}


def build(repo: Path) -> None:
    from infer.tasks.forecast.build import BuildConfig, build_forecast

    build_forecast(repo, "forecast", BuildConfig(data_dir=None, peer=False).scaled_down())


def markdown(points: list[dict[str, Any]]) -> str:
    return rate_table(points, "series_per_s", "series")


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    repo = args.repo or args.out / "repo"
    if not (repo / "forecast" / "config.pbtxt").is_file():
        build(repo)
    hist = histories(256, seed=11)
    server = Server(repo, args.out)
    points: list[dict[str, Any]] = []
    try:
        server.wait_ready()
        for rnd in range(args.repeat):
            for model in MODELS:
                for size in SIZES:
                    points.append(in_process_point(repo, model, hist, size, args.duration))
                    for conc in CONCURRENCY:
                        p = await served_point(server.address, model, hist, size, conc, args)
                        points.append(p)
                        print(f"round {rnd + 1} {model} S={size} c={conc}: {p['series_per_s']:,.0f} series/s",
                              file=sys.stderr)
    finally:
        assert server.stop() == 0
    return points


def main() -> None:
    run_points(__doc__, Path("/tmp/forecast-bench"), main_async, markdown)


if __name__ == "__main__":
    main()
