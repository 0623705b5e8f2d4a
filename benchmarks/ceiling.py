"""The compute ceiling: ONNX Runtime in-process, no server, at each batch size.

    python benchmarks/ceiling.py MODEL.onnx --batch 1 8 32 64 --seconds 2 [--threads 0]

Prints samples/s per batch size, the best, and the batch-1 latency; ``measure`` is used by bench.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32, "tensor(float16)": np.float16}


def session(path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def feeds_for(sess: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in sess.get_inputs():
        shape = [batch if j == 0 else (d if isinstance(d, int) and d > 0 else 1) for j, d in enumerate(i.shape)]
        out[i.name] = rng.standard_normal(shape).astype(_TYPES[i.type])
    return out


def measure(path: Path, batches: list[int], seconds: float = 2.0, threads: int = 0) -> dict[str, Any]:
    sess = session(path, threads)
    rows = []
    for b in batches:
        feeds = feeds_for(sess, b)
        for _ in range(5):
            sess.run(None, feeds)
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t0)
        per = float(np.median(times))
        rows.append({"batch": b, "latency_ms": per * 1e3, "samples_per_s": b / per})
    best = max(rows, key=lambda r: r["samples_per_s"])
    return {"rows": rows, "best": best, "batch1_ms": next((r["latency_ms"] for r in rows if r["batch"] == 1), None)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model", type=Path)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    print(json.dumps(measure(a.model, a.batch, a.seconds, a.threads), indent=1))


if __name__ == "__main__":
    main()
