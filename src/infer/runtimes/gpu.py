"""Where an ONNX model runs: reading the GPU request from its config, choosing an engine, and the GPU executors.

The config asks for a GPU the way Triton's does: an ``instance_group`` of ``KIND_GPU`` (``gpus: [N]`` picks the
device) and/or ``optimization.execution_accelerators.gpu_execution_accelerator`` entries, whose
``precision_mode`` parameter (``FP32``, ``FP16``, ``INT8``) sets the precision.  Accelerator names:

* ``tensorrt``: ONNX Runtime's TensorRT execution provider (engines cached on disk), CUDA and CPU behind it;
* ``cuda``: ONNX Runtime's CUDA execution provider;
* ``torch`` (infer's own): the ONNX graph converted to a PyTorch module (``onnx2torch``) and run by PyTorch on
  the GPU, FP16 through autocast.  Chosen on its own as well when the config asks for a GPU and this
  onnxruntime build has no GPU provider but PyTorch sees one (a machine with a CUDA PyTorch and the CPU
  onnxruntime wheel, like the lent H200 of ``benchmarks/gpu_check.sh``).

:func:`plan_execution` is the pure decision (tested without a GPU); :func:`open_session` carries it out and
returns an object that answers like ``onnxruntime.InferenceSession`` (``get_inputs``, ``get_outputs``, ``run``,
``get_providers``).  Nothing here imports onnxruntime, torch or onnx2torch before a session is opened, and a
request that cannot be met falls back to the CPU with the reasons logged, except an INT8 request that no
engine present can honour, which fails the load with a message naming the field.

Transfers: a GPU session copies each batch's inputs to the device once and its outputs back once.  ONNX
Runtime does it through IO binding (:class:`BoundSession`); :class:`TorchSession` stages inputs in pinned
host buffers that each worker thread reuses from batch to batch and runs each thread on its own CUDA stream,
so with ``instance_group.count`` >= 2 the copies of one batch overlap the compute of another.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import functools
import importlib.util
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infer.config.model import ModelConfig
from infer.errors import ModelConfigError

__all__ = [
    "ACCELERATORS",
    "PRECISIONS",
    "BoundSession",
    "ExecutionPlan",
    "GpuRequest",
    "TorchSession",
    "gpu_request",
    "onnx2torch_available",
    "open_session",
    "plan_execution",
    "torch_cuda_available",
]

log = logging.getLogger(__name__)

PRECISIONS = ("FP32", "FP16", "INT8")
ACCELERATORS = ("tensorrt", "cuda", "torch")
_FIELD = "optimization.execution_accelerators.gpu_execution_accelerator"


@dataclass(frozen=True, slots=True)
class GpuRequest:
    """What a model's config asks of the GPU."""

    wanted: bool = False
    accelerators: tuple[str, ...] = ()
    precision: str = "FP32"
    device_id: int = 0
    cache_dir: str = ""  # the tensorrt accelerator's trt_engine_cache_path, when the config names one
    warm_up: int = 0  # the largest batch to run once at load on the torch engine (0: none)


def gpu_request(config: ModelConfig) -> GpuRequest:
    """Read the GPU request from ``config``; ModelConfigError names the field of a bad value."""
    groups = [g for g in config.instance_group if g.kind == "KIND_GPU"]
    accel = config.optimization.execution_accelerators if config.optimization else None
    entries = accel.gpu_execution_accelerator if accel else []
    names: list[str] = []
    precision = "FP32"
    cache_dir = ""
    for i, a in enumerate(entries):
        if a.name not in ACCELERATORS:
            raise ModelConfigError(
                f"model '{config.name}': {_FIELD}[{i}].name '{a.name}' is not one of {', '.join(ACCELERATORS)}"
            )
        names.append(a.name)
        mode = a.parameters.get("precision_mode")
        if mode is not None:
            if mode.upper() not in PRECISIONS:
                raise ModelConfigError(
                    f"model '{config.name}': {_FIELD}[{i}].parameters.precision_mode '{mode}' is not one of "
                    f"{', '.join(PRECISIONS)}"
                )
            precision = mode.upper()
        cache_dir = a.parameters.get("trt_engine_cache_path", cache_dir)
    device_id = groups[0].gpus[0] if groups and groups[0].gpus else 0
    if device_id < 0:
        raise ModelConfigError(f"model '{config.name}': instance_group.gpus holds a negative device {device_id}")
    warm = config.max_batch_size if config.parameter("infer.gpu_warmup", "true").lower() not in ("0", "false") else 0
    return GpuRequest(bool(groups or names), tuple(names), precision, device_id, cache_dir, warm)


@dataclass(frozen=True, slots=True)
class ExecutionPlan:
    """How a model will run: ``engine`` "onnxruntime" (with ``providers`` in ONNX Runtime's format) or "torch"."""

    engine: str
    providers: tuple[Any, ...] = ("CPUExecutionProvider",)
    device: str = "cpu"
    precision: str = "FP32"
    notes: tuple[str, ...] = field(default=())  # what was asked for and not given, and why
    warm_up: int = 0  # torch engine: run each padded batch size up to this once at load (TorchSession.warm_up)

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"


def plan_execution(request: GpuRequest, *, ort_providers: Sequence[str], torch_cuda: bool, onnx2torch: bool,
                   cache_dir: Path | None = None) -> ExecutionPlan:
    """Choose the engine for ``request`` from what this machine has (a pure function: no imports, no GPU)."""
    if not request.wanted:
        return ExecutionPlan("onnxruntime")
    notes: list[str] = []
    torch_ok = torch_cuda and onnx2torch
    torch_missing = ("PyTorch sees no CUDA device" if not torch_cuda
                     else "onnx2torch is not installed (infer[gpu-torch])")
    device = f"cuda:{request.device_id}"
    if "torch" in request.accelerators:
        if torch_ok:
            return _torch_plan(request, device, notes)
        notes.append(f"the torch accelerator is unavailable: {torch_missing}")
    providers: list[Any] = []
    trt = "tensorrt" in request.accelerators
    if trt:
        if "TensorrtExecutionProvider" in ort_providers:
            where = request.cache_dir or (str(cache_dir) if cache_dir else "")
            options: dict[str, Any] = {
                "device_id": request.device_id,
                "trt_fp16_enable": request.precision in ("FP16", "INT8"),
                "trt_int8_enable": request.precision == "INT8",
                "trt_engine_cache_enable": bool(where),
                "trt_timing_cache_enable": bool(where),
            }
            if where:
                options["trt_engine_cache_path"] = options["trt_timing_cache_path"] = where
            providers.append(("TensorrtExecutionProvider", options))
        else:
            notes.append("TensorrtExecutionProvider is not available in this onnxruntime build")
    if "CUDAExecutionProvider" in ort_providers:
        providers.append(("CUDAExecutionProvider", {"device_id": request.device_id}))
    elif not providers:
        notes.append("CUDAExecutionProvider is not available in this onnxruntime build "
                     f"({', '.join(ort_providers) or 'no providers'})")
    if providers:
        uses_trt = providers[0][0] == "TensorrtExecutionProvider"
        if request.precision != "FP32" and not uses_trt:
            if request.precision == "INT8":
                raise ModelConfigError(_int8_message(request))
            notes.append(f"precision_mode {request.precision} needs TensorRT; the CUDA provider runs the "
                         "file's own precision")
        return ExecutionPlan("onnxruntime", (*providers, "CPUExecutionProvider"), device,
                             request.precision if uses_trt else "FP32", tuple(notes))
    if torch_ok:
        notes.append("running on the GPU through PyTorch instead")
        return _torch_plan(request, device, notes)
    if request.precision == "INT8":
        raise ModelConfigError(_int8_message(request))
    notes.append(f"the torch accelerator is unavailable too: {torch_missing}; running on the CPU")
    return ExecutionPlan("onnxruntime", notes=tuple(notes))


def _torch_plan(request: GpuRequest, device: str, notes: list[str]) -> ExecutionPlan:
    if request.precision == "INT8":
        raise ModelConfigError(_int8_message(request))
    return ExecutionPlan("torch", (), device, request.precision, tuple(notes), request.warm_up)


def _int8_message(request: GpuRequest) -> str:
    return (f"{_FIELD}: precision_mode INT8 on a GPU needs TensorRT (the tensorrt accelerator with "
            "onnxruntime-gpu, or platform tensorrt_plan); serve the INT8 ONNX file on the CPU instead, "
            f"or ask for FP16 (accelerators asked: {', '.join(request.accelerators) or 'none'})")


def _driver_present() -> bool:
    return ctypes.util.find_library("cuda") is not None or os.path.exists("/dev/nvidiactl")


@functools.cache
def torch_cuda_available() -> bool:
    """True when PyTorch is installed and sees a CUDA device (torch is not imported on a machine without a driver)."""
    if not _driver_present() or importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install means "no GPU", not a crash
        return False


@functools.cache
def onnx2torch_available() -> bool:
    """True when onnx2torch imports (it imports torchvision, which fails on a torch build it was not made for)."""
    if importlib.util.find_spec("onnx2torch") is None:
        return False
    try:
        import onnx2torch  # noqa: F401

        return True
    except Exception as e:  # a torchvision that does not match torch raises RuntimeError, not ImportError
        log.warning("onnx2torch is installed but does not import: %s", e)
        return False


def open_session(path: Path, plan: ExecutionPlan, *, name: str, threads: int = 0, session_options: Any = None) -> Any:
    """A session for the ONNX file at ``path`` that carries out ``plan``; ModelConfigError when the file cannot
    be loaded.  ``session_options`` (an ``onnxruntime.SessionOptions``) is used as given when passed."""
    for note in plan.notes:
        log.warning("model %s: %s", name, note)
    if plan.engine == "torch":
        try:
            session = TorchSession.from_onnx(path, plan.device, plan.precision)
            if plan.warm_up:
                session.warm_up(plan.warm_up)
            return session
        except ModelConfigError:
            raise
        except Exception as e:  # onnx2torch raises plain exceptions for operators it cannot convert
            raise ModelConfigError(f"model '{name}': cannot run {path.name} on PyTorch: {e}") from None
    import onnxruntime as ort

    so = session_options
    if so is None:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=list(plan.providers))
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise ModelConfigError(f"model '{name}': cannot load {path.name}: {e}") from None
    used = session.get_providers()
    wanted = plan.providers[0] if isinstance(plan.providers[0], str) else plan.providers[0][0]
    if wanted not in used:
        log.warning("model %s: asked for %s, running on %s", name, wanted, used)
    if used[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        return BoundSession(session)
    return session


class BoundSession:
    """An ONNX Runtime GPU session run through IO binding: each input is copied to the device once per batch
    and each output back once, into arrays the caller owns (string tensors, which binding cannot carry, take
    the plain ``run``)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._strings = {i.name for i in session.get_inputs() if i.type == "tensor(string)"}

    def get_inputs(self) -> Any:
        return self._session.get_inputs()

    def get_outputs(self) -> Any:
        return self._session.get_outputs()

    def get_providers(self) -> list[str]:
        return list(self._session.get_providers())

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[Any]:
        names = list(output_names or [o.name for o in self._session.get_outputs()])
        if self._strings & feeds.keys():
            return list(self._session.run(names, dict(feeds)))
        binding = self._session.io_binding()
        for key, value in feeds.items():
            binding.bind_cpu_input(key, np.ascontiguousarray(value))
        for key in names:
            binding.bind_output(key, "cpu")
        self._session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())


@dataclass(frozen=True, slots=True)
class _Arg:
    """A tensor as ``InferenceSession.get_inputs()`` describes it."""

    name: str
    type: str
    shape: tuple[int | str | None, ...]


def _onnx_args(values: Any) -> list[_Arg]:
    from onnx import helper

    args = []
    for v in values:
        t = v.type.tensor_type
        np_type = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        onnx_name = {"float32": "float", "float64": "double", "object": "string"}.get(np_type.name, np_type.name)
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        args.append(_Arg(v.name, f"tensor({onnx_name})", dims))
    return args


class TorchSession:
    """A PyTorch module run on one device, answering like an ``InferenceSession``.

    Inputs are staged in pinned host buffers (per worker thread, reused and grown as batches grow), copied to
    the device with one non-blocking copy each on the thread's own CUDA stream, computed (FP16 through
    ``torch.autocast``), and the outputs copied back once into pinned buffers, then out to NumPy.  On the CPU
    (the tests) the same steps run without pinning or streams.

    Batches are padded to the next power of two (the last row repeated; the extra rows' results dropped), so a
    model sees a handful of batch sizes rather than every size the scheduler forms: each new input shape costs
    cuDNN a plan search, seconds for a convolutional network, which on the lent H200 stalled a vision model
    served at concurrency 32 for whole seconds while the batch sizes were new."""

    def __init__(self, module: Any, inputs: Sequence[_Arg], outputs: Sequence[_Arg], device: str = "cpu",
                 precision: str = "FP32", bucket_batches: bool = True) -> None:
        import torch

        if precision not in ("FP32", "FP16"):
            raise ModelConfigError(f"the torch engine runs FP32 or FP16, not {precision}")
        self._torch: Any = torch
        self._device = torch.device(device)
        self._cuda = self._device.type == "cuda"
        self._precision = precision
        self._module = module.eval().to(self._device)
        self._inputs, self._outputs = list(inputs), list(outputs)
        self._out_types = {o.name: _torch_dtype(torch, o.type) for o in self._outputs}
        self._batched = [bool(a.shape) and not isinstance(a.shape[0], int) for a in self._inputs]
        self._bucket = bucket_batches and any(self._batched)
        self._local = threading.local()

    @classmethod
    def from_onnx(cls, path: Path, device: str, precision: str) -> TorchSession:
        import onnx
        from onnx2torch import convert

        _extend_onnx2torch()
        model = onnx.load(str(path))
        for node in model.graph.node:  # an omitted optional input may be written as a trailing "" (same meaning);
            while node.input and not node.input[-1]:  # onnx2torch looks such names up (Clip with only a min)
                node.input.pop()
        initializers = {i.name for i in model.graph.initializer}
        inputs = _onnx_args(v for v in model.graph.input if v.name not in initializers)
        module = _mend_onnx2torch(convert(model))
        return cls(module, inputs, _onnx_args(model.graph.output), device, precision)

    def get_inputs(self) -> list[_Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Arg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [f"torch:{self._device}:{self._precision}"]

    def _state(self) -> Any:
        state = self._local
        if not hasattr(state, "buffers"):
            state.buffers = {}
            state.stream = self._torch.cuda.Stream(device=self._device) if self._cuda else None
        return state

    def _buffer(self, state: Any, key: tuple[str, str], dtype: Any, shape: tuple[int, ...]) -> Any:
        """A host tensor of ``shape`` in this thread's reusable (pinned, on a GPU) buffer for ``key``."""
        torch = self._torch
        n = int(np.prod(shape, dtype=np.int64))
        buf = state.buffers.get(key)
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            size = max(n, 2 * buf.numel() if buf is not None and buf.dtype == dtype else n, 1)
            buf = torch.empty(size, dtype=dtype, pin_memory=self._cuda)
            state.buffers[key] = buf
        return buf[:n].view(shape)

    def warm_up(self, max_batch: int) -> list[int]:
        """Run every padded batch size up to ``max_batch`` once, so that the first requests of each size do not
        wait for cuDNN's plan search (on the H200 a convolutional network stalled for seconds per new size).
        Only models whose inputs have fixed sizes beside the batch can be warmed (a text model's sequence
        length varies: its matrix products need no plan search anyway); returns the sizes run."""
        if not self._bucket or max_batch < 1:
            return []
        shapes = [a.shape[1:] for a in self._inputs]
        if not all(isinstance(d, int) and d > 0 for shape in shapes for d in shape):
            return []
        sizes = sorted({bucket_size(n) for n in range(1, max_batch + 1)})
        rng = np.random.default_rng(0)
        for b in sizes:
            feeds = {}
            for a, shape in zip(self._inputs, shapes, strict=True):
                dtype = np.dtype(_NP_TYPES.get(a.type, np.float32))
                full = (b, *[int(d) for d in shape])  # type: ignore[arg-type]
                feeds[a.name] = (rng.standard_normal(full).astype(dtype) if dtype.kind == "f"
                                 else np.zeros(full, dtype))
            self.run(None, feeds)
        return sizes

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        torch = self._torch
        state = self._state()
        missing = [a.name for a in self._inputs if a.name not in feeds]
        if missing:
            raise ValueError(f"missing inputs {missing}")
        names = list(output_names or [o.name for o in self._outputs])
        stream = torch.cuda.stream(state.stream) if self._cuda else contextlib.nullcontext()
        autocast = (torch.autocast(device_type=self._device.type, dtype=torch.float16)
                    if self._precision == "FP16" else contextlib.nullcontext())
        arrays = [np.asarray(feeds[a.name]) for a in self._inputs]
        rows = {arr.shape[0] for arr, batched in zip(arrays, self._batched, strict=True) if batched and arr.ndim}
        n = rows.pop() if len(rows) == 1 else -1
        padded = bucket_size(n) if self._bucket and n > 0 else n
        with torch.inference_mode(), stream:
            args = []
            for a, arr, batched in zip(self._inputs, arrays, self._batched, strict=True):
                shape = (padded, *arr.shape[1:]) if batched and padded > n else arr.shape
                staged = self._buffer(state, ("in", a.name), _torch_dtype_of(torch, arr.dtype), tuple(shape))
                view = staged.numpy()
                view[: arr.shape[0] if arr.ndim else None] = arr
                if shape != arr.shape:
                    view[n:] = arr[-1]  # padding rows repeat a real one (zeros could be invalid input)
                args.append(staged.to(self._device, non_blocking=True))
            with autocast:
                result = self._module(*args)
            results = result if isinstance(result, (tuple, list)) else (result,)
            by_name = dict(zip((o.name for o in self._outputs), results, strict=False))
            staged_out = []
            for name in names:
                value = by_name[name]
                if padded > n and value.ndim and value.shape[0] == padded:
                    value = value[:n]
                dtype = self._out_types.get(name) or value.dtype
                host = self._buffer(state, ("out", name), dtype, tuple(value.shape))
                host.copy_(value.to(dtype), non_blocking=True)
                staged_out.append(host)
        if state.stream is not None:
            state.stream.synchronize()
        return [h.numpy().copy() for h in staged_out]  # copies: the staged buffers are reused by the next batch


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
             "tensor(bool)": np.bool_}


def bucket_size(n: int, limit: int = 4096) -> int:
    """The batch size a batch of ``n`` rows is padded to: the next power of two (``n`` itself above ``limit``)."""
    if n <= 1:
        return n
    b = 1 << (n - 1).bit_length()
    return b if b <= limit else n


def _torch_dtype_of(torch: Any, dtype: np.dtype[Any]) -> Any:
    return torch.from_numpy(np.empty(0, dtype)).dtype


# Operator versions whose only change from the version onnx2torch converts was the set of accepted types (opset
# 16 added bfloat16 to the comparisons): the older converter serves them unchanged.
_SAME_SEMANTICS = (("GreaterOrEqual", 12, 16), ("LessOrEqual", 12, 16))


@functools.cache
def _extend_onnx2torch() -> None:
    from onnx2torch.node_converters.registry import add_converter, get_converter

    for op, have, want in _SAME_SEMANTICS:
        try:
            get_converter(op, want)
        except NotImplementedError:
            add_converter(operation_type=op, version=want)(get_converter(op, have))


def _mend_onnx2torch(module: Any) -> Any:
    """Replace converted submodules that compute the wrong thing: onnx2torch's Flatten fails when ``axis`` equals
    the input's rank (ONNX: ``[prod(all dims), 1]``; the sentence encoders' attention masks hit it)."""
    import math

    import torch
    from onnx2torch.node_converters.flatten import OnnxFlatten

    class Flatten(torch.nn.Module):
        def __init__(self, axis: int) -> None:
            super().__init__()
            self.axis = axis

        def forward(self, x: Any) -> Any:
            axis = self.axis + x.dim() if self.axis < 0 else self.axis
            return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))

    for name, sub in list(module.named_modules()):
        if isinstance(sub, OnnxFlatten):
            module.set_submodule(name, Flatten(sub.axis))
    return module


def _torch_dtype(torch: Any, onnx_type: str) -> Any:
    return {
        "tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(double)": torch.float64,
        "tensor(int64)": torch.int64, "tensor(int32)": torch.int32, "tensor(int8)": torch.int8,
        "tensor(uint8)": torch.uint8, "tensor(bool)": torch.bool,
    }.get(onnx_type)
