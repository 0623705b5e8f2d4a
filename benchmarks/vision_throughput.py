"""Images per second through the served ImageNet classifier, INT8 (``vision_classify``) against FP32
(``vision_classify_fp32``), and through ``vision_quality``, against the same programs in process; with
``--models`` any of the repository's vision models (``vision`` the pipeline, ``vision_ocr``,
``vision_moderation``).

Builds the vision models (``infer models build vision``; or reuses ``--repo``), starts ``infer serve`` on free
loopback ports and measures each point for ``--duration`` seconds after ``--warmup`` seconds, ``--repeat`` times:
served with S images a request (S = 1, 8) at concurrency 1 and 8; in process, the program's prepare (decode,
resize, crop) and run on batches of 8. Payloads: the packages' sample photos as JPEG files (the 640x427 ones),
serialised before a point starts.

    .venv/bin/python benchmarks/vision_throughput.py --repo /tmp/vrepo --duration 5 --repeat 2
    .venv/bin/python benchmarks/vision_throughput.py --repo /tmp/vrepo --models vision vision_quality \
        vision_classify vision_ocr vision_moderation
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from anomaly_pipeline import Server, rate_table, run_points, served_rate  # this folder is first on sys.path

from infer._proto import grpc_service_pb2 as pb

MODELS = ("vision_classify", "vision_classify_fp32", "vision_quality")
SIZES = (1, 8)
CONCURRENCY = (1, 8)


def photos() -> list[bytes]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = []
    for im in load_sample_images().images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _raw(items: list[bytes]) -> bytes:
    return b"".join(len(b).to_bytes(4, "little") + b for b in items)


def payloads(model: str, files: list[bytes], size: int, count: int = 16) -> list[bytes]:
    out = []
    for i in range(count):
        req = pb.ModelInferRequest(model_name=model)
        req.inputs.add(name="image", datatype="BYTES", shape=[size, 1])
        req.raw_input_contents.append(_raw([files[(i + j) % len(files)] for j in range(size)]))
        out.append(req.SerializeToString())
    return out


async def served_point(address: str, model: str, files: list[bytes], size: int, conc: int,
                       args: argparse.Namespace) -> dict[str, Any]:
    r = await served_rate(address, payloads(model, files, size), conc, args.warmup, args.duration)
    return {"kind": "served", "model": model, "size": size, "concurrency": conc,
            "images_per_s": r["requests_per_s"] * size, "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "errors": r["errors"]}


def in_process_point(repo: Path, model: str, files: list[bytes], seconds: float, size: int = 8) -> dict[str, Any]:
    from infer.runtimes.kernel import PROGRAMS

    version = repo / model / "1"
    doc = json.loads((version / "kernel.json").read_text())
    program = PROGRAMS[doc["program"]]()(version, doc["params"])
    names = [s.name for s in program.outputs]
    batch = np.array([files[j % len(files)] for j in range(size)], dtype=object).reshape(-1, 1)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        inputs = {"image": batch}
        program.prepare(inputs)  # type: ignore[attr-defined]
        program.run(inputs, names)
        done += 1
    return {"kind": "in process", "model": model, "size": size, "concurrency": 1,
            "images_per_s": done * size / (time.perf_counter() - t0), "p50_ms": float("nan"),
            "p99_ms": float("nan"), "errors": {}}


def markdown(points: list[dict[str, Any]]) -> str:
    return rate_table(points, "images_per_s", "images")


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    repo = args.repo or args.out / "repo"
    if not (repo / "vision_classify" / "config.pbtxt").is_file():
        from infer.tasks.vision.build import build_vision

        build_vision(repo, evaluate=False)
    files = photos()
    server = Server(repo, args.out)
    points: list[dict[str, Any]] = []
    try:
        server.wait_ready()
        for _ in range(args.repeat):
            for model in args.models:
                points.append(in_process_point(repo, model, files, args.duration))
                for size in SIZES:
                    for conc in CONCURRENCY:
                        p = await served_point(server.address, model, files, size, conc, args)
                        points.append(p)
                        print(f"{model} S={size} c={conc}: {p['images_per_s']:,.1f} images/s", file=sys.stderr)
    finally:
        assert server.stop() == 0
    return points


def main() -> None:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--models", nargs="+", default=list(MODELS), help="models of the repository to measure")

    run_points(__doc__, Path("/tmp/vision-bench"), main_async, markdown, options)


if __name__ == "__main__":
    main()
