"""Sequences per second through the served sentence encoder: INT8 (``nlp_embed``) against FP32
(``nlp_embed_fp32``), and INT8 without length bucketing (``nlp_embed_unbucketed``: every request padded to
``max_length`` and free to share a batch with any other), against the same programs in process (the ceiling).

Builds the encoders (``infer models build nlp``; or reuses ``--repo``), writes the unbucketed copy, starts
``infer serve`` on free loopback ports and measures each point for ``--duration`` seconds after ``--warmup``
seconds, ``--repeat`` times: served with S texts a request (S = 1, 8) at concurrency 1 and 16; in process, the
program's prepare (tokenization) and run on batches of 32. Payloads: a length mix like real traffic, 80% short
texts (SST-2 dev sentences, ~13 tokens) and 20% long ones (five AG News rows joined, ~200 tokens), requests
alternating in that proportion (a request's S texts are of one kind).

    .venv/bin/python benchmarks/nlp_throughput.py --repo /tmp/nrepo --duration 5 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from anomaly_pipeline import Server, rate_table, run_points, served_rate  # this folder is first on sys.path

from infer._proto import grpc_service_pb2 as pb

MODELS = ("nlp_embed", "nlp_embed_fp32", "nlp_embed_unbucketed")
SIZES = (1, 8)
CONCURRENCY = (1, 16)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nlp"


def texts() -> tuple[list[str], list[str]]:
    """Short texts (SST-2 dev sentences) and long ones (five AG News rows joined)."""
    short = [line.split("\t", 1)[0] for line in (DATA / "sst2" / "dev.tsv").read_text().splitlines()[1:401]]
    rows = [line.split("\t", 1)[0] for line in (DATA / "agnews" / "train.tsv").read_text().splitlines()[1:501]]
    long = [" ".join(rows[i:i + 5]) for i in range(0, len(rows), 5)]
    return short, long


def _raw(items: list[str]) -> bytes:
    return b"".join(len(b).to_bytes(4, "little") + b for b in (t.encode() for t in items))


def payloads(model: str, short: list[str], long: list[str], size: int, count: int = 40) -> list[bytes]:
    out = []
    for i in range(count):
        pool = long if i % 5 == 4 else short  # one request in five carries long texts
        req = pb.ModelInferRequest(model_name=model)
        req.inputs.add(name="text", datatype="BYTES", shape=[size, 1])
        req.raw_input_contents.append(_raw([pool[(i * size + j) % len(pool)] for j in range(size)]))
        out.append(req.SerializeToString())
    return out


def unbucketed(repo: Path, source: str = "nlp_embed", name: str = "nlp_embed_unbucketed") -> None:
    shutil.rmtree(repo / name, ignore_errors=True)
    shutil.copytree(repo / source, repo / name)
    doc = json.loads((repo / name / "1" / "kernel.json").read_text())
    doc["params"]["bucketing"] = False
    (repo / name / "1" / "kernel.json").write_text(json.dumps(doc))
    config = (repo / name / "config.pbtxt").read_text().replace(f'name: "{source}"', f'name: "{name}"')
    (repo / name / "config.pbtxt").write_text(config)


def in_process_point(repo: Path, model: str, short: list[str], long: list[str], seconds: float,
                     size: int = 32) -> dict[str, Any]:
    from infer.runtimes.kernel import PROGRAMS

    version = repo / model / "1"
    doc = json.loads((version / "kernel.json").read_text())
    program = PROGRAMS[doc["program"]]()(version, doc["params"])
    names = [s.name for s in program.outputs]
    batches = [short[i:i + size] for i in range(0, 4 * size, size)] + [long[:size]]  # the same 80/20 mix
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for batch in batches:
            inputs = {"text": np.array([t.encode() for t in batch], dtype=object).reshape(-1, 1)}
            program.prepare(inputs)  # type: ignore[attr-defined]
            program.run(inputs, names)
            done += len(batch)
    return {"kind": "in process", "model": model, "size": size, "concurrency": 1,
            "sequences_per_s": done / (time.perf_counter() - t0), "p50_ms": float("nan"),
            "p99_ms": float("nan"), "errors": {}}


def markdown(points: list[dict[str, Any]]) -> str:
    return rate_table(points, "sequences_per_s", "sequences")


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    repo = args.repo or args.out / "repo"
    if not (repo / "nlp_embed" / "config.pbtxt").is_file():
        from infer.tasks.nlp.build import build_nlp

        build_nlp(repo, data_dir=None, evaluate=False)
    unbucketed(repo)
    short, long = texts()
    server = Server(repo, args.out)
    points: list[dict[str, Any]] = []
    try:
        server.wait_ready()
        for _ in range(args.repeat):
            for model in MODELS:
                points.append(in_process_point(repo, model, short, long, args.duration))
                for size in SIZES:
                    for conc in CONCURRENCY:
                        r = await served_rate(server.address, payloads(model, short, long, size), conc,
                                              args.warmup, args.duration)
                        p = {"kind": "served", "model": model, "size": size, "concurrency": conc,
                             "sequences_per_s": r["requests_per_s"] * size, "p50_ms": r["p50_ms"],
                             "p99_ms": r["p99_ms"], "errors": r["errors"]}
                        points.append(p)
                        print(f"{model} S={size} c={conc}: {p['sequences_per_s']:,.1f} sequences/s", file=sys.stderr)
    finally:
        assert server.stop() == 0
    return points


def main() -> None:
    run_points(__doc__, Path("/tmp/nlp-bench"), main_async, markdown)


if __name__ == "__main__":
    main()
