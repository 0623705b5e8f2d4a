"""ONNX Runtime: one InferenceSession per loaded model version.

Where a model runs follows its config the way Triton's onnxruntime backend reads it: a GPU instance group or
a ``gpu_execution_accelerator`` asks for the GPU (:mod:`infer.runtimes.gpu` chooses ONNX Runtime's TensorRT or
CUDA provider, or PyTorch); when nothing can run it there the session falls back to CPU and logs why.
Thread counts come from the config parameters ``intra_op_thread_count`` /
``inter_op_thread_count`` or the server defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from infer.config.model import ModelConfig
from infer.core.types import DataType, TensorSpec
from infer.errors import InvalidArgument, ModelConfigError, ModelExecutionError
from infer.runtimes.base import Array, Runtime, RuntimeOptions, Signature

__all__ = ["OnnxRuntime", "cpu_session", "model_session"]

log = logging.getLogger(__name__)

_ORT_TYPES: dict[str, DataType] = {
    "tensor(bool)": DataType.BOOL,
    "tensor(uint8)": DataType.UINT8,
    "tensor(uint16)": DataType.UINT16,
    "tensor(uint32)": DataType.UINT32,
    "tensor(uint64)": DataType.UINT64,
    "tensor(int8)": DataType.INT8,
    "tensor(int16)": DataType.INT16,
    "tensor(int32)": DataType.INT32,
    "tensor(int64)": DataType.INT64,
    "tensor(float16)": DataType.FP16,
    "tensor(float)": DataType.FP32,
    "tensor(double)": DataType.FP64,
    "tensor(string)": DataType.BYTES,
}


def cpu_session(path: Path, threads: int = 0) -> Any:
    """A CPU InferenceSession for an ONNX file that a kernel program runs inside its own batch step (the
    forecasting and vision programs); ``threads`` intra-op threads, 0 = ONNX Runtime's default."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def model_session(path: Path, params: Mapping[str, Any], threads: int = 0) -> Any:
    """The session a kernel program runs its ONNX file in: on the CPU, or where the model's config asks for a GPU
    (``KernelRuntime`` passes :func:`infer.runtimes.gpu.gpu_request` of the config as ``params["_gpu"]``)."""
    request = params.get("_gpu")
    if request is None or not request.wanted:
        return cpu_session(path, threads)
    return _gpu_session(path, request, name=str(params.get("_model", path.parent.parent.name)), threads=threads)


def _gpu_session(path: Path, request: Any, *, name: str, threads: int = 0, session_options: Any = None) -> Any:
    import onnxruntime as ort

    from infer.runtimes import gpu

    plan = gpu.plan_execution(request, ort_providers=ort.get_available_providers(),
                              torch_cuda=gpu.torch_cuda_available(), onnx2torch=gpu.onnx2torch_available(),
                              cache_dir=path.parent / ".engines")
    return gpu.open_session(path, plan, name=name, threads=threads, session_options=session_options)


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise ModelConfigError(f"tensor '{arg.name}' has type {arg.type}, which infer cannot serve")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, dtype, shape)


class OnnxRuntime(Runtime):
    names: ClassVar[tuple[str, ...]] = ("onnxruntime_onnx", "onnxruntime")
    default_filename: ClassVar[str] = "model.onnx"

    def __init__(self, session: Any, providers: list[str]) -> None:
        self._session = session
        self._providers = providers
        self._sig = Signature(
            tuple(_spec(a) for a in session.get_inputs()), tuple(_spec(a) for a in session.get_outputs())
        )
        self._string_inputs = {s.name for s in self._sig.inputs if s.datatype is DataType.BYTES}

    @classmethod
    def open(cls, path: Path, config: ModelConfig, options: RuntimeOptions) -> OnnxRuntime:
        import onnxruntime as ort

        so = ort.SessionOptions()
        intra = int(config.parameter("intra_op_thread_count", "0") or 0) or options.intra_op_threads
        inter = int(config.parameter("inter_op_thread_count", "0") or 0) or options.inter_op_threads
        if intra:
            so.intra_op_num_threads = intra
        if inter:
            so.inter_op_num_threads = inter
        level = config.optimization.graph.level if config.optimization and config.optimization.graph else 0
        so.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if level < 0 else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        so.log_severity_level = 3
        # Idle intra-op threads spin (ONNX Runtime's default): measured here it cuts a compute-bound
        # model's batch-1 latency by a quarter and leaves its throughput as it was. "0" turns it off.
        if config.parameter("infer.allow_spinning", "1") in ("0", "false"):
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        from infer.runtimes.gpu import gpu_request

        request = gpu_request(config)
        if request.wanted:
            session = _gpu_session(path, request, name=config.name, session_options=so)
        else:
            try:
                session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own exception types for bad files
                raise ModelConfigError(f"model '{config.name}': cannot load {path.name}: {e}") from None
        return cls(session, list(session.get_providers()))

    def signature(self) -> Signature:
        return self._sig

    def prepare(self, inputs: dict[str, Array]) -> None:
        """ONNX string tensors hold text: BYTES elements must be UTF-8 and are decoded here."""
        for name in self._string_inputs & inputs.keys():
            arr = inputs[name]
            flat = arr.reshape(-1)
            out = np.empty(flat.shape, dtype=object)
            for i, item in enumerate(flat):
                try:
                    out[i] = item.decode("utf-8") if isinstance(item, bytes) else str(item)
                except UnicodeDecodeError:
                    raise InvalidArgument(
                        f"input '{name}': element {i} is not valid UTF-8 (ONNX string tensors hold text)"
                    ) from None
            inputs[name] = out.reshape(arr.shape)

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        try:
            results = self._session.run(list(outputs), dict(inputs))
        except Exception as e:
            raise ModelExecutionError(f"onnxruntime failed: {e}") from None
        return dict(zip(outputs, results, strict=True))

    def describe(self) -> str:
        return f"onnxruntime providers={self._providers}"

    def close(self) -> None:
        self._session = None
