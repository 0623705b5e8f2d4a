"""What watching a model costs the request path: the same small MLP served twice by one server, ``plain`` (nothing
to watch: the data plane never calls the watch) and ``watched`` (a drift reference over its 64 input columns and
online accuracy on its output, every request carrying an id), measured alternately with the same client.

    python benchmarks/observability_overhead.py [--duration 5] [--repeat 2] [--concurrency 8] [--batch 1 32]

Prints a Markdown table of requests/s and p50/p99 for each point and the watched/plain ratio of each pair.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
from bench import start_infer, stop  # noqa: E402
from models import build_dense  # noqa: E402

INPUTS = 64
WATCH = ('parameters { key: "infer.accuracy.kind" value { string_value: "regression" } }\n'
         'parameters { key: "infer.accuracy.output" value { string_value: "y" } }\n'
         'parameters { key: "infer.drift.every_s" value { string_value: "2" } }\n')


def build_repo(repo: Path) -> None:
    from infer.observability.drift import build_reference

    for name in ("plain", "watched"):
        build_dense(repo, name=name, hidden=256, layers=3, inputs=INPUTS, seed=0)
    cfg = repo / "watched" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + WATCH)
    x = np.random.default_rng(0).standard_normal((5000, INPUTS)).astype(np.float32)
    build_reference({"x": x}, seed=0).save(repo / "watched" / "1" / "drift_reference.json")


def request(model: str, batch: int) -> bytes:
    from infer._proto import grpc_service_pb2 as pb

    req = pb.ModelInferRequest.FromString(
        loadgen.request_from_spec(model, [("x", "FP32", [-1, INPUTS])], batch=batch, seed=1))
    req.id = f"{model}-bench"  # the watched model remembers the prediction of every request (one id, refreshed)
    return req.SerializeToString()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="infer-watch-bench-") as tmp:
        repo, out = Path(tmp) / "repo", Path(tmp)
        build_repo(repo)
        proc, target = start_infer(repo, out, [])
        try:
            print("| batch | run | plain req/s | watched req/s | ratio | plain p50/p99 ms | watched p50/p99 ms |")
            print("|---:|---:|---:|---:|---:|---|---|")
            for batch in a.batch:
                for run in range(1, a.repeat + 1):
                    r = {m: loadgen.run_point(target, m, request(m, batch), backend="python",
                                              concurrency=a.concurrency, batch=batch, seconds=a.duration)
                         for m in ("plain", "watched")}
                    assert not r["plain"].errors and not r["watched"].errors, (r["plain"].errors, r["watched"].errors)
                    pl, wa = r["plain"], r["watched"]
                    print(f"| {batch} | {run} | {pl.throughput:,.0f} | {wa.throughput:,.0f} | "
                          f"{wa.throughput / pl.throughput:.3f} | {pl.p50_ms:.2f} / {pl.p99_ms:.2f} | "
                          f"{wa.p50_ms:.2f} / {wa.p99_ms:.2f} |", flush=True)
        finally:
            stop(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
