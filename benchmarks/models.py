"""Synthetic models for benchmarks, written as Triton-layout model directories.

``build_dense`` writes a compute-bound MLP (MatMul + Add + Relu per layer, then a linear layer to 16
outputs) with seeded He-initialised float32 weights.  With the defaults (hidden 2048, 6 hidden layers,
256 inputs: 21.5 M parameters, an 86 MB file) a batch of one takes milliseconds on a CPU core, so
request overheads are small next to compute and batching visibly pays off.

    python benchmarks/models.py OUT_DIR [--hidden 2048] [--layers 6] [--inputs 256] [--seed 0]

builds ``OUT_DIR/dense`` and prints onnxruntime CPU latencies for batch 1 and batch 32.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

OUTPUTS = 16
MAX_BATCH_SIZE = 64
OPSET = 17
IR_VERSION = 8  # opset 17; loadable by older onnxruntime builds (e.g. Triton's)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def dense_config(name: str, *, inputs: int, instance_kind: str = "KIND_CPU") -> str:
    """Triton ``config.pbtxt`` for :func:`build_dense`'s model (dims exclude the batch dimension)."""
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {MAX_BATCH_SIZE}\n"
        f'input [ {{ name: "x" data_type: TYPE_FP32 dims: [ {inputs} ] }} ]\n'
        f'output [ {{ name: "y" data_type: TYPE_FP32 dims: [ {OUTPUTS} ] }} ]\n'
        "dynamic_batching {\n"
        "  preferred_batch_size: [ 8, 16, 32 ]\n"
        "  max_queue_delay_microseconds: 500\n"
        "}\n"
        f"instance_group [ {{ count: 1 kind: {instance_kind} }} ]\n"
    )


def _he(rng: np.random.Generator, fan_in: int, fan_out: int) -> NDArray[np.float32]:
    w = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
    w *= np.float32(np.sqrt(2.0 / fan_in))
    return w


def dense_onnx(*, hidden: int, layers: int, inputs: int, seed: int) -> onnx.ModelProto:
    """The MLP ``x [batch, inputs] -> y [batch, 16]`` with ``layers`` ReLU layers of width ``hidden``."""
    if min(hidden, layers, inputs) < 1:
        raise ValueError("hidden, layers and inputs must be positive")
    rng = np.random.default_rng(seed)
    widths = [inputs] + [hidden] * layers + [OUTPUTS]
    nodes, inits, current = [], [], "x"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        inits.append(numpy_helper.from_array(_he(rng, fan_in, fan_out), f"w{i}"))
        inits.append(numpy_helper.from_array(rng.normal(0.0, 0.01, fan_out).astype(np.float32), f"b{i}"))
        last = i == layers
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], ["y" if last else f"pre{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"pre{i}"], [f"h{i}"]))
            current = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "dense_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUTPUTS])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="infer.benchmarks",
        doc_string=f"benchmark MLP: {inputs} -> {layers} x {hidden} (ReLU) -> {OUTPUTS}, seed {seed}",
    )
    onnx.checker.check_model(model)
    return model


def build_dense(
    repo: Path,
    *,
    name: str = "dense",
    hidden: int = 2048,
    layers: int = 6,
    inputs: int = 256,
    seed: int = 0,
    instance_kind: str = "KIND_CPU",
) -> Path:
    """Write ``<repo>/<name>/{config.pbtxt,1/model.onnx}``; return the model directory."""
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid model name {name!r}")
    model = dense_onnx(hidden=hidden, layers=layers, inputs=inputs, seed=seed)
    model_dir = Path(repo) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    for path, data in (
        (model_dir / "1" / "model.onnx", model.SerializeToString()),
        (model_dir / "config.pbtxt", dense_config(name, inputs=inputs, instance_kind=instance_kind).encode()),
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return model_dir


def measure_latency(model_path: Path, batch: int, *, threads: int, seconds: float = 1.0) -> float:
    """Median onnxruntime CPU latency in milliseconds of one ``run`` with a ``batch``-row input."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    arg = session.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal((batch, arg.shape[1]), dtype=np.float32)
    for _ in range(5):
        session.run(None, {arg.name: x})
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 10:
        start = time.perf_counter()
        session.run(None, {arg.name: x})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the dense benchmark model and time it.")
    parser.add_argument("repo", type=Path, help="model repository directory to write into")
    parser.add_argument("--name", default="dense")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--inputs", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op thread counts")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model_dir = build_dense(
        args.repo, name=args.name, hidden=args.hidden, layers=args.layers, inputs=args.inputs, seed=args.seed
    )
    model_path = model_dir / "1" / "model.onnx"
    size_mb = model_path.stat().st_size / 1e6
    print(f"wrote {model_dir} ({size_mb:.1f} MB) in {time.perf_counter() - started:.1f} s")
    for threads in args.threads:
        for batch in (1, 32):
            ms = measure_latency(model_path, batch, threads=threads)
            print(f"threads {threads}  batch {batch:>2}  {ms:8.3f} ms  ({ms / batch:.3f} ms/row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
