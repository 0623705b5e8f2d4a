"""Fault models and probes for the fault, overload and soak tests (tests/reliability/test_faults.py,
tests/reliability/test_overload_soak.py).

Every fault model is a real ONNX graph that ONNX Runtime runs as it would any other: it works on the zeros the
server warms a version up with, and misbehaves only on some inputs, which is how such models turn up in
production. ``x`` FP32 [N, 4] -> ``y`` FP32 [N, 4] for all of them, so one request builder serves every model.

The probes read what the server process holds from outside: VmRSS and OS threads from ``/proc/PID/status``, and
the ``infer_event_loop_tasks`` gauge (asyncio tasks alive on the serving loop) from the metrics port.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
from fixtures import metric_value, scrape_metrics
from onnx import TensorProto, helper, numpy_helper

from infer._proto import grpc_service_pb2 as pb

# ---- models --------------------------------------------------------------------------------------

_X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
_Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])

HANG_ITERATIONS_PER_UNIT = 1000  # loop trips per unit of max(x): about 1 ms of one core per unit


def _save(nodes: list[onnx.NodeProto], name: str, path: Path, inits: Sequence[onnx.TensorProto] = (),
          inputs: Sequence[onnx.ValueInfoProto] = (_X,), outputs: Sequence[onnx.ValueInfoProto] = (_Y,)) -> None:
    model = helper.make_model(helper.make_graph(nodes, name, list(inputs), list(outputs), list(inits)),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _config(name: str, repo: Path, max_batch_size: int, params: dict[str, str], extra: str = "") -> None:
    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch_size}", extra]
    lines += [f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()]
    (repo / name / "config.pbtxt").write_text("\n".join(lines) + "\n")


def write_raising(repo: Path, name: str = "raising", max_batch_size: int = 8, version: int = 1,
                  **params: str) -> Path:
    """y = x + Reshape(x, target) with target [-1, 4] when every value is 0 and [-2, 8] otherwise: zeros pass
    (the warm-up too), any other value asks Reshape for a negative dim other than -1, so ONNX Runtime raises at
    run time. The target is computed over the whole batch: one bad row fails every request batched with it."""
    shape = numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")
    nodes = [helper.make_node("Abs", ["x"], ["ax"]),
             helper.make_node("ReduceMax", ["ax"], ["m"], keepdims=0),
             helper.make_node("Sign", ["m"], ["s"]),
             helper.make_node("Cast", ["s"], ["bad"], to=TensorProto.INT64),
             helper.make_node("Add", ["bad", "one"], ["factor"]),  # 1 on zeros, 2 otherwise
             helper.make_node("Mul", ["shape", "factor"], ["target"]),  # [-1, 4] or [-2, 8]: -2 is refused
             helper.make_node("Reshape", ["x", "target"], ["r"]),
             helper.make_node("Add", ["x", "r"], ["y"])]
    inits = [shape, numpy_helper.from_array(np.array(1, np.int64), "one")]
    _save(nodes, name, repo / name / str(version) / "model.onnx", inits)
    _config(name, repo, max_batch_size, params)
    return repo / name


def write_hanging(repo: Path, name: str = "hanging", **params: str) -> Path:
    """y = x, through an ONNX Loop that runs ``max(x) * HANG_ITERATIONS_PER_UNIT`` times a 4x4 MatMul by the
    identity: zeros finish at once, x = 1000 keeps one core busy for about a second."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["v_in", "eye"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32), "eye")])
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Relu", ["m"], ["mp"]),
             helper.make_node("Mul", ["mp", "scale"], ["ms"]),
             helper.make_node("Cast", ["ms"], ["trips"], to=TensorProto.INT64),
             helper.make_node("Loop", ["trips", "true", "x"], ["y"], body=body)]
    inits = [numpy_helper.from_array(np.array(HANG_ITERATIONS_PER_UNIT, np.float32), "scale"),
             numpy_helper.from_array(np.array(True), "true")]
    _save(nodes, name, repo / name / "1" / "model.onnx", inits)
    _config(name, repo, 8, {"intra_op_thread_count": "1", **params})
    return repo / name


def hang_units(model_dir: Path, seconds: float) -> float:
    """The input value that keeps ``write_hanging``'s model busy for about ``seconds`` on this machine (measured
    in-process on 100 units, fastest of three), so the hang is long enough wherever the tests run."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), so, providers=["CPUExecutionProvider"])
    x = np.full((1, 4), 100.0, np.float32)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        best = min(best, time.perf_counter() - t0)
    return float(np.clip(round(100 * seconds / best), 100, 100_000))


def write_nan(repo: Path, name: str = "nan") -> Path:
    """y = [sqrt(x0), log(x1), x2 / x3, x3]: a negative x0 gives NaN, x1 = 0 gives -inf, x2 = x3 = 0 gives NaN
    (0/0). Zeros give [0, -inf, NaN, 0], so even the warm-up answers a NaN."""
    nodes = [helper.make_node("Split", ["x", "splits"], ["a", "b", "c", "d"], axis=1),
             helper.make_node("Sqrt", ["a"], ["sa"]),
             helper.make_node("Log", ["b"], ["lb"]),
             helper.make_node("Div", ["c", "d"], ["cd"]),
             helper.make_node("Concat", ["sa", "lb", "cd", "d"], ["y"], axis=1)]
    _save(nodes, name, repo / name / "1" / "model.onnx", [numpy_helper.from_array(np.ones(4, np.int64), "splits")])
    _config(name, repo, 8, {})
    return repo / name


def write_heavy(repo: Path, name: str = "heavy", rows: int = 96, queue: int = 16, instances: int = 1,
                version: int = 1, max_batch_size: int = 1) -> Path:
    """A compute-bound model whose cost does not depend on the input's values: each request row is broadcast
    to ``rows`` x 1024 and multiplied by a 1024 x 1024 matrix (about ``rows`` x 2 MFLOP), then reduced to 4
    values. Runs on one thread per instance, so its capacity is fixed and small."""
    rng = np.random.default_rng(version)
    w0 = numpy_helper.from_array((rng.standard_normal((4, 1024)) * 0.1).astype(np.float32), "w0")
    w1 = numpy_helper.from_array((rng.standard_normal((1024, 1024)) / 32).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((1024, 4)) / 32).astype(np.float32), "w2")
    expand = numpy_helper.from_array(np.array([1, rows, 1], np.int64), "expand")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    ramp = numpy_helper.from_array(np.linspace(0.5, 1.5, rows, dtype=np.float32).reshape(1, rows, 1), "ramp")
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"]),
             helper.make_node("Unsqueeze", ["h0", "axes"], ["h1"]),
             helper.make_node("Expand", ["h1", "expand"], ["h2"]),
             helper.make_node("Mul", ["h2", "ramp"], ["h3"]),
             helper.make_node("MatMul", ["h3", "w1"], ["h4"]),
             helper.make_node("Relu", ["h4"], ["h5"]),
             helper.make_node("ReduceMean", ["h5"], ["h6"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["h6", "w2"], ["y"])]
    _save(nodes, name, repo / name / str(version) / "model.onnx", [w0, w1, w2, expand, axes, ramp])
    extra = (f"dynamic_batching {{ default_queue_policy {{ max_queue_size: {queue} }} }}\n"
             f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]")
    _config(name, repo, max_batch_size, {"intra_op_thread_count": "1"}, extra)
    return repo / name


def write_scale(repo: Path, name: str, version: int, max_batch_size: int = 8) -> Path:
    """y = x * version: a new version written into the repository is told apart by its answers."""
    k = numpy_helper.from_array(np.array(float(version), np.float32), "k")
    _save([helper.make_node("Mul", ["x", "k"], ["y"])], name, repo / name / str(version) / "model.onnx", [k])
    if not (repo / name / "config.pbtxt").exists():
        _config(name, repo, max_batch_size, {})
    return repo / name


# ---- requests ------------------------------------------------------------------------------------

def request(model: str, x: np.ndarray | float, rows: int = 1, **params: int) -> pb.ModelInferRequest:
    data = np.full((rows, 4), x, np.float32) if np.isscalar(x) else np.asarray(x, np.float32)
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="x", datatype="FP32", shape=list(data.shape))
    req.raw_input_contents.append(np.ascontiguousarray(data).tobytes())
    for key, value in params.items():
        req.parameters[key].int64_param = value
    return req


def output(resp: Any) -> np.ndarray:
    return np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(list(resp.outputs[0].shape))


async def status_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, Any]:
    """The call's status and its answer (or the error)."""
    try:
        return grpc.StatusCode.OK, await call
    except grpc.aio.AioRpcError as e:
        return e.code(), e
    except asyncio.CancelledError as e:  # a call this client cancelled itself
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # this task itself is being cancelled: let it go
            raise
        return grpc.StatusCode.CANCELLED, e


# ---- probes --------------------------------------------------------------------------------------

def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (kB) and Threads of a live process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(rest.split()[0])
    return out


def rss_mb(pid: int) -> float:
    return proc_status(pid)["VmRSS"] / 1024


def sample(text: str, name: str, **labels: str) -> float:
    """The sample ``name`` with ``labels`` in a scrape; an AssertionError when there is none."""
    value = metric_value(text, name, **labels)
    if value is None:
        raise AssertionError(f"no sample {name} {labels} in /metrics")
    return value


def loop_tasks(metrics_port: int) -> int:
    """asyncio tasks alive on the server's event loop (the scrape's own handler included)."""
    return int(sample(scrape_metrics(metrics_port), "infer_event_loop_tasks"))


async def settled_tasks(metrics_port: int, at_most: int, timeout: float = 10.0) -> int:
    """The loop's task count once it is at most ``at_most``, or whatever it is after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        n = await asyncio.to_thread(loop_tasks, metrics_port)
        if n <= at_most or time.monotonic() > end:
            return n
        await asyncio.sleep(0.1)


@dataclass
class RssSampler:
    """Samples a process's RSS every ``every`` seconds in the background while the block runs."""

    pid: int
    every: float = 0.1
    samples: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self.samples.append(rss_mb(self.pid))
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.samples.append(rss_mb(self.pid))

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.samples.append(rss_mb(self.pid))

    @property
    def peak(self) -> float:
        return max(self.samples)


async def latencies_ms(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    """Wall time of ``n`` sequential calls, in milliseconds."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def p50(values: Sequence[float]) -> float:
    return float(np.percentile(values, 50))


def report(test: str, **figures: Any) -> None:
    """Print a test's figures, and append them as one JSON line to ``$INFER_RELIABILITY_REPORT`` when it is set
    (the source of docs/reliability/faults.md)."""
    import json
    import os

    line = json.dumps({"test": test, **figures}, default=float)
    print(line)
    path = os.environ.get("INFER_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
