"""Shared test fixtures: small real ONNX models written into Triton-layout repositories,
a server process started on an ephemeral loopback port, and fake runtimes for unit tests.

This module imports nothing of ``infer._proto`` so that tests using ``tritonclient`` (whose
generated modules register the same protobuf names) can use it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]

# V2 datatype -> (ONNX element type, numpy dtype)
DTYPES: dict[str, tuple[int, Any]] = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "BYTES": (TensorProto.STRING, np.object_),
}


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def write_double(repo: Path, name: str = "double", versions: Sequence[int] = (1,), config: str | None = None) -> Path:
    """y = x * k for version k (so versions are distinguishable), x FP32 [N, 4]."""
    for v in versions:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
        k = numpy_helper.from_array(np.array(2.0 * v, np.float32), "k")
        _save(helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], name, [x], [y], [k]),
              repo / name / str(v) / "model.onnx")
    if config is not None:
        (repo / name / "config.pbtxt").write_text(config)
    return repo / name


def write_identity_all(repo: Path, name: str = "identity_all") -> Path:
    """One Identity per V2 datatype: input in_<DT> -> output out_<DT>, shape [N, -1]."""
    nodes, ins, outs = [], [], []
    for dt, (et, _) in DTYPES.items():
        ins.append(helper.make_tensor_value_info(f"in_{dt}", et, ["N", "D"]))
        outs.append(helper.make_tensor_value_info(f"out_{dt}", et, ["N", "D"]))
        nodes.append(helper.make_node("Identity", [f"in_{dt}"], [f"out_{dt}"]))
    _save(helper.make_graph(nodes, name, ins, outs), repo / name / "1" / "model.onnx")
    return repo / name


def write_dense(repo: Path, name: str = "dense", hidden: int = 256, layers: int = 3, seed: int = 0,
                config: str | None = None) -> Path:
    """A small MLP x FP32 [N, 64] -> y FP32 [N, 8], enough compute for batches to form."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev, width = "x", 64
    for i in range(layers):
        w = (rng.standard_normal((width, hidden)) * np.sqrt(2.0 / width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [f"h{i}"])]
        prev, width = f"h{i}", hidden
    w = (rng.standard_normal((width, 8)) * np.sqrt(1.0 / width)).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "wout"))
    nodes.append(helper.make_node("MatMul", [prev, "wout"], ["y"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    _save(helper.make_graph(nodes, name, [x], [y], inits), repo / name / "1" / "model.onnx")
    if config is not None:
        (repo / name / "config.pbtxt").write_text(config)
    return repo / name


def onnx_run(model_dir: Path, feeds: Mapping[str, np.ndarray], version: int = 1) -> list[np.ndarray]:
    """The in-process reference: ONNX Runtime on the same file."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_dir / str(version) / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, dict(feeds))


class ServerProcess:
    """``infer serve`` in a subprocess on ephemeral loopback ports."""

    def __init__(self, repo: Path | None, *args: str, env: Mapping[str, str] | None = None,
                 command: str = "serve") -> None:
        tmp = Path(os.environ.get("TMPDIR", "/tmp"))
        self.port_file = tmp / f"infer-ports-{os.getpid()}-{time.monotonic_ns()}.json"
        cmd = [sys.executable, "-m", "infer.cli", command, "--host", "127.0.0.1", "--grpc-port", "0",
               "--metrics-port", "0", "--port-file", str(self.port_file), "--shutdown-grace", "5", *args]
        if repo is not None:
            cmd += ["--model-repository", str(repo)]
        self.log = Path(str(self.port_file) + ".log")
        self._log = self.log.open("w")
        # state (registry database, artifacts) goes to a private folder unless the test says otherwise
        home = {"INFER_HOME": str(tmp / f"infer-home-{os.getpid()}-{time.monotonic_ns()}")}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **home, **(env or {})}, cwd=ROOT)
        self.grpc_port = self.metrics_port = 0

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.port_file.exists():
                ports = json.loads(self.port_file.read_text())
                self.grpc_port, self.metrics_port = ports["grpc"], ports["metrics"]
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.output()}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log.read_text()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.port_file.unlink(missing_ok=True)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


DOUBLE_CONFIG = """
name: "double"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { all { } }
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""

# A complete Triton-style config, as a Triton user would have it.
DENSE_CONFIG = """
name: "dense"
platform: "onnxruntime_onnx"
max_batch_size: 32
input [
  {
    name: "x"
    data_type: TYPE_FP32
    dims: [ 64 ]
  }
]
output [
  {
    name: "y"
    data_type: TYPE_FP32
    dims: [ 8 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 8, 16 ]
  max_queue_delay_microseconds: 2000
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy { max_queue_size: 256 }
}
instance_group [
  {
    count: 2
    kind: KIND_CPU
  }
]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


def scrape_metrics(metrics_port: int) -> str:
    """The text of a server's Prometheus ``/metrics``."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        text: str = resp.read().decode()
    return text


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The first sample ``name`` in a scrape whose labels include ``labels``, or None."""
    import re

    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def model_state(text: str, model: str, version: str = "1") -> str:
    """The lifecycle state the ``infer_model_state`` gauge shows for one version in a scrape."""
    from infer.observability.metrics import STATES

    for state in STATES:
        if metric_value(text, "infer_model_state", model=model, version=version, state=state) == 1.0:
            return state
    raise AssertionError(f"no state for {model}:{version} in /metrics")


def build_test_repository(repo: Path) -> Path:
    """The repository the integration tests serve: each model exercises a different path."""
    write_double(repo, versions=(1, 2), config=DOUBLE_CONFIG)
    write_identity_all(repo)
    write_dense(repo, config=DENSE_CONFIG)
    from infer.tasks.anomaly.build import build_model

    build_model(repo, n_train=2000, seed=0)
    return repo


# ---- Fake runtimes for unit tests --------------------------------------------------------------
#
# Imports of infer stay below this line and never reach infer._proto (runtimes.base and
# registry.complete do not); LoadedVersion is imported inside fake_version because the registry
# module reaches the generated config protos through the repository reader.

import threading  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path as _Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from infer.config.model import ModelConfig  # noqa: E402
from infer.runtimes.base import Array, Runtime, RuntimeOptions, Signature  # noqa: E402

if TYPE_CHECKING:
    from infer.registry.registry import LoadedVersion


@dataclass(frozen=True)
class FakeCall:
    """One batch a FakeRuntime received (recorded on entry): the arrays as given, the outputs it
    returned (empty when it raised), the worker thread."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    thread: str

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


@dataclass(eq=False)
class FakeRuntime(Runtime):
    """y = x * 2 for every input ``<n>`` -> output named by replacing the first 'x' with 'y'.

    Behaviour is set by attributes, which tests may change between batches:
    ``gate`` (run waits for it), ``error`` (raised), ``delay_s`` (slept), ``wrong_rows`` (one
    output row dropped). Every call is recorded in ``calls`` with the thread that made it;
    ``active``/``max_active`` count concurrent calls.
    """

    gate: threading.Event | None = None
    error: BaseException | None = None
    delay_s: float = 0.0
    wrong_rows: bool = False
    gate_timeout_s: float = 10.0
    calls: list[FakeCall] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    names = ("fake",)

    @classmethod
    def open(cls, path: _Path, config: ModelConfig, options: RuntimeOptions) -> FakeRuntime:
        return cls()

    def signature(self) -> Signature:
        raise NotImplementedError("fake_version builds the specs from the config")

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        call = FakeCall(dict(inputs), {}, threading.current_thread().name)
        with self._cond:
            self.calls.append(call)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self._cond.notify_all()
        try:
            if self.gate is not None and not self.gate.wait(self.gate_timeout_s):
                raise TimeoutError("FakeRuntime gate was never opened")
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.error is not None:
                raise self.error
            for name, x in inputs.items():
                y = x * 2
                call.outputs[name.replace("x", "y", 1)] = y[:-1] if self.wrong_rows else y
            return {n: call.outputs[n] for n in outputs if n in call.outputs}  # absent optional input
        finally:
            with self._cond:
                self.active -= 1
                self._cond.notify_all()

    def wait_entered(self, n: int, timeout: float = 5.0) -> None:
        """Block until ``n`` calls in all have entered run (their worker threads do not need the caller)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.calls) >= n, timeout):
                raise TimeoutError(f"{len(self.calls)} of {n} runs entered after {timeout}s")

    def wait_active(self, n: int, timeout: float = 5.0) -> None:
        """Block until ``n`` calls are inside run at once."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.active >= n, timeout):
                raise TimeoutError(f"{self.active} of {n} runs active after {timeout}s")


def fake_config(
    *,
    max_batch_size: int = 8,
    dims: Sequence[int] = (4,),
    dynamic: bool = True,
    preferred: Sequence[int] = (),
    delay_us: int = 0,
    instances: int = 1,
    priority_levels: int = 0,
    max_queue_size: int = 0,
    queue_timeout_us: int = 0,
    timeout_action: str = "REJECT",
    inline_max_us: int = 0,
) -> ModelConfig:
    """A ModelConfig for FakeRuntime: input x FP32 [*dims] -> output y FP32 [*dims].

    ``inline_max_us`` (the ``infer.inline_max_us`` parameter) defaults to 0 here: every batch then
    runs in a worker thread, so a runtime held on its gate never holds the event loop.
    """
    db: dict[str, Any] | None = None
    if dynamic:
        db = {
            "preferred_batch_size": list(preferred),
            "max_queue_delay_microseconds": delay_us,
            "priority_levels": priority_levels,
            "default_priority_level": priority_levels,
            "default_queue_policy": {
                "max_queue_size": max_queue_size,
                "default_timeout_microseconds": queue_timeout_us,
                "timeout_action": timeout_action,
            },
        }
    return ModelConfig.model_validate({
        "name": "fake",
        "backend": "fake",
        "max_batch_size": max_batch_size,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": list(dims)}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": list(dims)}],
        "dynamic_batching": db,
        "instance_group": [{"count": instances, "kind": "KIND_CPU"}],
        "parameters": {"infer.inline_max_us": {"string_value": str(inline_max_us)}},
    })


def fake_version(config: ModelConfig, runtime: FakeRuntime | None = None, version: int = 1) -> LoadedVersion:
    """A LoadedVersion (state LOAD, fresh statistics) serving ``config`` with ``runtime``."""
    from infer.registry.complete import served_specs
    from infer.registry.registry import LoadedVersion

    ins, outs = served_specs(config)
    return LoadedVersion(config.name or "fake", version, config, runtime or FakeRuntime(), ins, outs)


def write_faulty(repo: Path, name: str = "faulty") -> Path:
    """y = table[int(x)] with a one-entry table: zeros work (warm-up passes), any other value makes
    ONNX Runtime raise at run time, which is how a model that fails on some inputs looks."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    table = numpy_helper.from_array(np.array([7.0], np.float32), "table")
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "i"], ["y"], axis=0)]
    _save(helper.make_graph(nodes, name, [x], [y], [table]), repo / name / "1" / "model.onnx")
    return repo / name


RULES_SPEC: dict[str, Any] = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4], "default": 0.0, "rules": [
        {"when": [{"input": "x", "index": 0, "op": ">", "value": 100.0}], "then": 1.0},
        {"when": [{"input": "x", "index": 0, "op": ">", "value": 0.0},
                  {"input": "x", "index": 3, "op": "<=", "value": 5.0}], "then": [5.0, 6.0, 7.0, 8.0]},
    ]}],
}


def write_rules(repo: Path, name: str = "rules", spec: Mapping[str, Any] | None = None) -> Path:
    """A rule-based model (backend ``rules``) with the same signature as ``double``: x FP32 [N, 4] -> y."""
    path = repo / name / "1" / "rules.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec or RULES_SPEC))
    return repo / name


def write_ensemble(repo: Path, name: str, config: str) -> Path:
    """An ensemble: its config.pbtxt and the empty version directory Triton's layout asks for."""
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(config)
    return repo / name


_SIMULATOR_PREAMBLE = """
import sys
try:
    from numba import cuda
    assert cuda.is_available()
except Exception as exc:
    print("SKIP", exc)
    sys.exit(3)
"""


def run_cuda_simulated(script: str, *args: str) -> None:
    """Run ``script`` under numba's CUDA simulator (chosen before numba is imported, so in a new process);
    skip the calling test when the simulator cannot start."""
    import pytest

    env = os.environ | {"NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-W", "error", "-c", _SIMULATOR_PREAMBLE + script, *args], env=env,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode == 3:
        pytest.skip(f"CUDA simulator unavailable: {proc.stdout.strip()}")
    assert proc.returncode == 0, proc.stderr[-3000:]


def write_toy_encoder(path: Path, table: np.ndarray, *, normalise: bool, token_types: bool = False) -> Path:
    """An ONNX stand-in for a sentence encoder (inputs ``input_ids``, ``attention_mask`` and optionally
    ``token_type_ids``, int64 [batch, sequence]; output ``embedding``): one row of ``table`` per token, summed
    over the attention mask, then L2-normalised (``normalise``) or divided by the token count (a mean)."""
    width = int(table.shape[1])
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["vectors"]),
             helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["maskf", "two"], ["mask3"]),
             helper.make_node("Mul", ["vectors", "mask3"], ["masked"]),
             helper.make_node("ReduceSum", ["masked", "one"], ["total"], keepdims=0)]
    if normalise:
        nodes.append(helper.make_node("LpNormalization", ["total"], ["embedding"], axis=1, p=2))
    else:
        nodes += [helper.make_node("ReduceSum", ["mask3", "one"], ["count"], keepdims=0),
                  helper.make_node("Div", ["total", "count"], ["embedding"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", *(("token_type_ids",) if token_types else ()))]
    graph = helper.make_graph(
        nodes, "toy_encoder", inputs, [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(np.asarray(table, np.float32), "table"),
                     numpy_helper.from_array(np.array([1], np.int64), "one"),
                     numpy_helper.from_array(np.array([2], np.int64), "two")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
