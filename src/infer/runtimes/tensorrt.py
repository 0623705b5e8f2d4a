"""Native TensorRT engines (``platform: "tensorrt_plan"``), run through TensorRT's own Python API.

The version directory holds either a serialized engine (``model.plan`` or ``*.engine``), which is
deserialized as it is, or an ONNX file (``default_model_filename: "model.onnx"``, or ``model.onnx`` beside an
absent ``model.plan``), from which an engine is built at load time:

* precision from the config's ``gpu_execution_accelerator`` ``precision_mode`` (:func:`infer.runtimes.gpu.
  gpu_request`): FP32, FP16, or INT8 (with FP16 beside it) calibrated by an entropy calibrator on
  ``calibration.npz`` in the version directory (one array per input, samples along the first axis);
* one optimisation profile per preferred-batch-size bucket (:func:`profiles_for`), so each batch size the
  dynamic batcher forms runs kernels tuned near it;
* the engine is cached on disk under a key of everything that shapes it (:func:`engine_cache_key`: the ONNX
  file's digest, GPU model and compute capability, TensorRT version, precision, profiles, calibration set), in
  the accelerator's ``trt_engine_cache_path``, else ``<state dir>/tensorrt/<model>``, else
  ``<version dir>/.engines``; written atomically, and rebuilt when a cached file no longer deserializes.

Execution: a batch takes a *lane* (a CUDA stream, pinned host buffers and device buffers reused and grown
from batch to batch, one execution context per optimisation profile, created when first needed); lanes are
pooled, so concurrent ``run`` calls (``instance_group.count`` >= 2) never share a context and the copies of one
batch overlap the compute of another.  Each input is copied to the device once and each output back once.

``tensorrt`` and ``torch`` (which holds the device buffers and streams) are imported inside
:meth:`TensorRTRuntime.open` only; without them or without a CUDA device the load fails with a
ModelConfigError that says what is missing.  The helpers above the runtime are pure and tested without a GPU.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from infer.config.model import ModelConfig
from infer.core.types import DataType, TensorSpec
from infer.errors import ModelConfigError, ModelExecutionError
from infer.runtimes.base import Array, Runtime, RuntimeOptions, Signature

__all__ = [
    "CALIBRATION_FILE",
    "Profile",
    "TensorRTRuntime",
    "calibration_batches",
    "engine_cache_key",
    "load_calibration",
    "profiles_for",
    "select_profile",
]

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.npz"
_CALIBRATION_BATCH = 32  # samples per calibration batch (fewer when max_batch_size or the set is smaller)
_CALIBRATION_MAX_BATCHES = 64
# TensorRT DataType names -> served datatype; BF16, FP8 and INT4 IO tensors have no V2 datatype
_TRT_TYPES: dict[str, DataType] = {
    "FLOAT": DataType.FP32, "HALF": DataType.FP16, "INT8": DataType.INT8, "INT32": DataType.INT32,
    "INT64": DataType.INT64, "BOOL": DataType.BOOL, "UINT8": DataType.UINT8,
}


# ---- Pure helpers (no GPU) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Profile:
    """One optimisation profile: the batch sizes it accepts (``min_batch..max_batch``) and the one TensorRT
    tunes for; all three are 0 for a model that does not batch (fixed shapes)."""

    min_batch: int
    opt_batch: int
    max_batch: int

    @property
    def batched(self) -> bool:
        return self.max_batch > 0

    def holds(self, batch: int) -> bool:
        return self.min_batch <= batch <= self.max_batch

    def shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[tuple[int, ...], ...]]:
        """``(min_shape, opt_shape, max_shape)`` per input, from input shapes without the batch dim."""
        if not self.batched:
            return {n: (tuple(s), tuple(s), tuple(s)) for n, s in shapes.items()}
        return {n: ((self.min_batch, *s), (self.opt_batch, *s), (self.max_batch, *s)) for n, s in shapes.items()}

    def label(self) -> str:
        return f"{self.min_batch}-{self.max_batch}" if self.batched else "fixed"


def profiles_for(max_batch_size: int, preferred: Sequence[int], shapes: Mapping[str, tuple[int, ...]]) -> list[Profile]:
    """Profiles covering batch sizes 1..``max_batch_size`` without gaps, one per preferred-size bucket.

    ``preferred`` [8, 32] with max 64 gives 1..8 (opt 8), 9..32 (opt 32), 33..64 (opt 64); no preferred sizes
    give one profile 1..max (opt max); ``max_batch_size`` 0 (no batching) gives one fixed-shape profile.
    ``shapes`` are the inputs' shapes without the batch dim, and must be fixed.
    """
    for name, shape in shapes.items():
        if any(d < 0 for d in shape):
            raise ModelConfigError(
                f"input {name} has a variable dimension {list(shape)}; tensorrt_plan needs fixed dims beside the batch"
            )
    if max_batch_size < 0:
        raise ValueError(f"max_batch_size {max_batch_size} is negative")
    if max_batch_size == 0:
        return [Profile(0, 0, 0)]
    sizes = sorted(set(preferred))
    outside = [p for p in sizes if not 1 <= p <= max_batch_size]
    if outside:
        raise ValueError(f"preferred batch sizes {outside} outside 1..{max_batch_size}")
    if not sizes or sizes[-1] != max_batch_size:
        sizes.append(max_batch_size)
    profiles, low = [], 1
    for high in sizes:
        profiles.append(Profile(low, high, high))
        low = high + 1
    return profiles


def select_profile(profiles: Sequence[Profile], batch: int) -> int:
    """Index of the first profile whose batch range holds ``batch``."""
    for i, p in enumerate(profiles):
        if p.holds(batch):
            return i
    top = max((p.max_batch for p in profiles), default=0)
    raise ValueError(f"batch of {batch} is outside every optimisation profile (max batch {top})")


def engine_cache_key(onnx_sha256: str, gpu_name: str, compute_capability: tuple[int, int], trt_version: str,
                     precision: str, profiles: Sequence[Profile], *, calibration_sha256: str = "") -> str:
    """A stable hex digest of everything that shapes a built engine, so an engine built for another GPU model,
    TensorRT version, precision, profile set or calibration set is never reused."""
    fields = {
        "onnx_sha256": onnx_sha256,
        "gpu_name": gpu_name,
        "compute_capability": [int(c) for c in compute_capability],
        "trt_version": trt_version,
        "precision": precision.upper(),
        "profiles": [[p.min_batch, p.opt_batch, p.max_batch] for p in profiles],
        "calibration_sha256": calibration_sha256,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_calibration(path: Path, inputs: Mapping[str, np.dtype[Any]]) -> dict[str, np.ndarray]:
    """The INT8 calibration set at ``path`` (an ``.npz``, one array per input name, samples along the first
    axis); ModelConfigError naming the file and the input when one is missing, empty or of another dtype."""
    if not path.is_file():
        raise ModelConfigError(
            f"{path.name} not found in {path.parent}: INT8 needs a calibration set (one array per input, "
            f"samples along the first axis)"
        )
    data: dict[str, np.ndarray] = {}
    what = "the file"
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ModelConfigError(f"{path.name} holds a single array, not an .npz with one array per input")
        with loaded as npz:
            for name, dtype in inputs.items():
                if name not in npz.files:
                    raise ModelConfigError(f"{path.name} has no array for input '{name}' (it holds {npz.files})")
                what = f"input '{name}'"
                arr = npz[name]
                if arr.dtype != np.dtype(dtype):
                    raise ModelConfigError(
                        f"{path.name}: input '{name}' is {arr.dtype}, the model takes {np.dtype(dtype)}"
                    )
                if arr.ndim == 0 or arr.shape[0] == 0:
                    raise ModelConfigError(f"{path.name}: input '{name}' holds no samples (shape {arr.shape})")
                data[name] = arr
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # pickled (object) arrays, corrupt files
        raise ModelConfigError(f"{path.name}: cannot read {what} (pickled data is refused): {e}") from None
    counts = {n: a.shape[0] for n, a in data.items()}
    if len(set(counts.values())) > 1:
        raise ModelConfigError(f"{path.name}: inputs hold different numbers of samples {counts}")
    return data


def calibration_batches(data: Mapping[str, np.ndarray], batch_size: int,
                        max_batches: int) -> Iterator[dict[str, np.ndarray]]:
    """Contiguous batches of ``batch_size`` samples (at most ``max_batches``; a last partial batch is dropped).

    Raises ValueError at once (not on first iteration) when the set holds less than one batch."""
    if batch_size < 1 or max_batches < 1:
        raise ValueError(f"batch_size {batch_size} and max_batches {max_batches} must be at least 1")
    samples = min((a.shape[0] for a in data.values()), default=0)
    count = min(samples // batch_size, max_batches)
    if count == 0:
        raise ValueError(f"the calibration set holds {samples} samples, less than one batch of {batch_size}")

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for i in range(count):
            lo = i * batch_size
            yield {n: np.ascontiguousarray(a[lo:lo + batch_size]) for n, a in data.items()}

    return batches()


# ---- Loading (GPU) -----------------------------------------------------------------------------


def _backends(name: str) -> tuple[Any, Any]:
    """``(tensorrt, torch)``, or ModelConfigError naming each missing piece."""
    from infer.runtimes.gpu import torch_cuda_available

    missing: list[str] = []
    trt: Any = None
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as e:  # ImportError, or OSError when libnvinfer cannot load
        missing.append(f"the tensorrt package is not importable ({e})")
    if importlib.util.find_spec("torch") is None:
        missing.append("PyTorch is not installed")
    elif not torch_cuda_available():
        missing.append("PyTorch sees no CUDA device")
    if missing:
        raise ModelConfigError(
            f"model '{name}': platform tensorrt_plan needs an NVIDIA GPU and the tensorrt package "
            f"(pip install 'infer[tensorrt]'): {'; '.join(missing)}"
        )
    import torch

    return trt, torch


@functools.cache
def _logger(trt: Any) -> Any:
    """One TensorRT logger for the process (TensorRT keeps the first it is given), writing to ``logging``."""
    severity = trt.ILogger.Severity
    levels = {severity.INTERNAL_ERROR: logging.CRITICAL, severity.ERROR: logging.ERROR,
              severity.WARNING: logging.WARNING, severity.INFO: logging.DEBUG, severity.VERBOSE: logging.DEBUG}

    class _Logger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            log.log(levels.get(severity, logging.INFO), "tensorrt: %s", msg)

    return _Logger()


def _model_file(path: Path) -> tuple[str, Path]:
    """``("onnx", file)`` to build an engine from, or ``("engine", file)`` to deserialize (any other name: a plan
    file, as Triton takes it); an absent plan with ``model.onnx`` beside it means that ONNX file."""
    if path.suffix != ".onnx" and not path.is_file() and (path.parent / "model.onnx").is_file():
        return "onnx", path.parent / "model.onnx"
    if not path.is_file():
        raise ModelConfigError(f"{path.name} not found in {path.parent} (nor model.onnx to build an engine from)")
    return ("onnx" if path.suffix == ".onnx" else "engine"), path


def _cache_dir(config: ModelConfig, options: RuntimeOptions, request: Any, version_dir: Path) -> Path:
    if request.cache_dir:
        return Path(request.cache_dir)
    if options.state_dir is not None:
        return options.state_dir / "tensorrt" / config.name
    return version_dir / ".engines"


def _write_atomic(path: Path, data: Any) -> None:
    """Write ``data`` (bytes or a buffer) to ``path`` so a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _batchless_shapes(dims: Mapping[str, tuple[int, ...]], max_batch_size: int,
                      name: str) -> dict[str, tuple[int, ...]]:
    """Network input shapes without the batch dim; ModelConfigError when the batch dim disagrees with the config."""
    if max_batch_size == 0:
        for n, shape in dims.items():
            if shape[:1] == (-1,):
                raise ModelConfigError(
                    f"model '{name}': input {n} has a variable first dimension {list(shape)} in the ONNX file; set "
                    "max_batch_size in config.pbtxt (tensorrt_plan builds an engine for a fixed batch range)"
                )
        return dict(dims)
    out = {}
    for n, shape in dims.items():
        if not shape or shape[0] != -1:
            raise ModelConfigError(
                f"model '{name}': input {n} has shape {list(shape)} in the ONNX file; max_batch_size "
                f"{max_batch_size} needs a variable first (batch) dimension"
            )
        out[n] = shape[1:]
    return out


def _calibrator(trt: Any, torch: Any, batches: Iterator[dict[str, np.ndarray]], batch_size: int,
                device: Any, batched: bool) -> Any:
    """An entropy calibrator feeding ``batches`` to TensorRT from device tensors it keeps alive."""

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._held: dict[str, Any] = {}

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str], *_: Any) -> list[int] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            self._held = {n: torch.from_numpy(a if batched else a[0]).to(device) for n, a in batch.items()}
            return [int(self._held[n].data_ptr()) for n in names]

        def read_calibration_cache(self, *_: Any) -> None:
            return None  # the engine cache keeps the result

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return _Calibrator()


@dataclass(frozen=True, slots=True)
class _Built:
    data: Any  # serialized engine (bytes or IHostMemory)
    cache_file: Path
    precision: str
    cached: bool = False


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _int8_set(trt: Any, tensors: Sequence[Any], shapes: Mapping[str, tuple[int, ...]],
              version_dir: Path) -> tuple[dict[str, np.ndarray], str]:
    """The calibration set beside the ONNX file, checked against the network's inputs, and its digest."""
    path = version_dir / CALIBRATION_FILE
    data = load_calibration(path, {t.name: np.dtype(trt.nptype(t.dtype)) for t in tensors})
    for n, arr in data.items():
        if tuple(arr.shape[1:]) != shapes[n]:
            raise ModelConfigError(f"{CALIBRATION_FILE}: input '{n}' samples have shape {list(arr.shape[1:])}, "
                                   f"the model takes {list(shapes[n])}")
    return data, _file_sha256(path)


def _set_up_int8(trt: Any, torch: Any, builder: Any, build: Any, data: Mapping[str, np.ndarray],
                 shapes: Mapping[str, tuple[int, ...]], max_batch_size: int) -> Any:
    """INT8 (FP16 beside it for layers without INT8 kernels) calibrated on ``data``; returns the calibrator,
    which must outlive the build."""
    samples = next(iter(data.values())).shape[0]
    batch = max(1, min(_CALIBRATION_BATCH, max_batch_size or 1, samples))
    batches = calibration_batches(data, batch, _CALIBRATION_MAX_BATCHES)
    device = torch.device("cuda", torch.cuda.current_device())
    calibrator = _calibrator(trt, torch, batches, batch, device, max_batch_size > 0)
    build.set_flag(trt.BuilderFlag.INT8)
    build.int8_calibrator = calibrator
    # calibration runs at one fixed shape, so it gets a profile of its own: batch dim = the calibration batch
    profile = builder.create_optimization_profile()
    for n, s in shapes.items():
        fixed = (batch, *s) if max_batch_size else s
        profile.set_shape(n, fixed, fixed, fixed)
    build.set_calibration_profile(profile)
    return calibrator


def _build_from_onnx(trt: Any, torch: Any, onnx_path: Path, config: ModelConfig, options: RuntimeOptions, *,
                     rebuild: bool = False) -> _Built:
    """The serialized engine for ``onnx_path``: the cached file when there is one (unless ``rebuild``), else
    built (calibrated when INT8) and cached."""
    from infer.runtimes.gpu import gpu_request

    request = gpu_request(config)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: TensorRT 10's only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelConfigError(f"model '{config.name}': TensorRT cannot parse {onnx_path.name}: {errors}")
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    shapes = _batchless_shapes({t.name: tuple(int(d) for d in t.shape) for t in tensors}, config.max_batch_size,
                               config.name)
    preferred = config.dynamic_batching.preferred_batch_size if config.dynamic_batching else []
    calibration: dict[str, np.ndarray] = {}
    calibration_sha = ""
    try:
        profiles = profiles_for(config.max_batch_size, preferred, shapes)
        if request.precision == "INT8":
            calibration, calibration_sha = _int8_set(trt, tensors, shapes, onnx_path.parent)
    except ModelConfigError as e:
        raise ModelConfigError(f"model '{config.name}': {e.message}") from None
    device = torch.cuda.current_device()
    key = engine_cache_key(_file_sha256(onnx_path), torch.cuda.get_device_name(device),
                           tuple(torch.cuda.get_device_capability(device)), trt.__version__, request.precision,
                           profiles, calibration_sha256=calibration_sha)
    cache_file = _cache_dir(config, options, request, onnx_path.parent) / f"{key}.plan"
    if cache_file.is_file() and not rebuild:
        return _Built(cache_file.read_bytes(), cache_file, request.precision, cached=True)

    build = builder.create_builder_config()
    if request.precision in ("FP16", "INT8"):
        build.set_flag(trt.BuilderFlag.FP16)
    for profile in profiles:
        trt_profile = builder.create_optimization_profile()
        for n, (lo, opt, hi) in profile.shapes(shapes).items():
            trt_profile.set_shape(n, lo, opt, hi)
        build.add_optimization_profile(trt_profile)
    calibrator = None
    if request.precision == "INT8":
        calibrator = _set_up_int8(trt, torch, builder, build, calibration, shapes, config.max_batch_size)
    log.info("model %s: building a TensorRT %s engine from %s (profiles %s)", config.name, request.precision,
             onnx_path.name, [p.label() for p in profiles])
    data = builder.build_serialized_network(network, build)
    del calibrator
    if data is None:
        raise ModelConfigError(f"model '{config.name}': TensorRT could not build an engine from {onnx_path.name} "
                               "(see the tensorrt log lines above)")
    try:
        _write_atomic(cache_file, data)
    except OSError as e:  # a read-only repository: serve the engine, build it again next time
        log.warning("model %s: cannot cache the engine in %s: %s", config.name, cache_file.parent, e)
    return _Built(data, cache_file, request.precision)


def _deserialize(runtime: Any, data: Any, name: str, what: str) -> Any:
    try:
        return runtime.deserialize_cuda_engine(data)
    except Exception as e:  # the bindings raise on some malformed buffers instead of returning None
        log.warning("model %s: %s does not deserialize: %s", name, what, e)
        return None


# ---- Execution (GPU) ---------------------------------------------------------------------------


_TORCH_NAMES = {DataType.FP32: "float32", DataType.FP16: "float16", DataType.INT8: "int8", DataType.INT32: "int32",
                DataType.INT64: "int64", DataType.BOOL: "bool", DataType.UINT8: "uint8"}


class _Lane:
    """What one batch in flight owns: a CUDA stream, host (pinned) and device buffers reused and grown from
    batch to batch, and an execution context per optimisation profile, created when first used."""

    def __init__(self, torch: Any, device: Any) -> None:
        self.stream = torch.cuda.Stream(device=device)
        self.host: dict[tuple[str, str], Any] = {}
        self.device: dict[tuple[str, str], Any] = {}
        self.contexts: dict[int, Any] = {}


def _buffer(torch: Any, store: dict[tuple[str, str], Any], key: tuple[str, str], dtype: Any,
            shape: tuple[int, ...], **where: Any) -> Any:
    """A tensor of ``shape`` viewing the reusable buffer ``store[key]``, grown (doubling) when too small."""
    n = int(np.prod(shape, dtype=np.int64))
    buf = store.get(key)
    if buf is None or buf.dtype != dtype or buf.numel() < n:
        size = max(n, 2 * buf.numel() if buf is not None and buf.dtype == dtype else n, 1)
        buf = torch.empty(size, dtype=dtype, **where)
        store[key] = buf
    return buf[:n].view(shape)


class TensorRTRuntime(Runtime):
    names: ClassVar[tuple[str, ...]] = ("tensorrt_plan",)
    default_filename: ClassVar[str] = "model.plan"

    def __init__(self, trt: Any, torch: Any, runtime: Any, engine: Any, device: Any, *, name: str, precision: str,
                 source: Path) -> None:
        self._trt, self._torch = trt, torch
        self._runtime, self._engine = runtime, engine
        self._device = device
        self._precision, self._source = precision, source
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if n not in ins]
        if not ins:
            raise ModelConfigError(f"model '{name}': the engine has no inputs")
        self._sig = Signature(tuple(self._spec(n, name) for n in ins), tuple(self._spec(n, name) for n in outs))
        self._in_types = {s.name: getattr(torch, _TORCH_NAMES[s.datatype]) for s in self._sig.inputs}
        self._out_types = {s.name: getattr(torch, _TORCH_NAMES[s.datatype]) for s in self._sig.outputs}
        self._batched = self._sig.inputs[0].shape[:1] == (-1,)
        self._profiles = self._engine_profiles(ins[0]) if self._batched else [Profile(0, 0, 0)]
        self._lock = threading.Lock()  # guards the lane pool and context creation
        self._free: list[_Lane] = []
        self._lanes: list[_Lane] = []

    def _spec(self, tensor: str, model: str) -> TensorSpec:
        dtype = self._engine.get_tensor_dtype(tensor)
        served = _TRT_TYPES.get(dtype.name)
        if served is None:
            raise ModelConfigError(f"model '{model}': tensor '{tensor}' is {dtype.name}, which infer cannot serve")
        return TensorSpec(tensor, served, tuple(int(d) for d in self._engine.get_tensor_shape(tensor)))

    def _engine_profiles(self, first_input: str) -> list[Profile]:
        profiles = []
        for i in range(self._engine.num_optimization_profiles):
            lo, opt, hi = self._engine.get_tensor_profile_shape(first_input, i)
            profiles.append(Profile(int(lo[0]), int(opt[0]), int(hi[0])))
        return profiles

    @classmethod
    def open(cls, path: Path, config: ModelConfig, options: RuntimeOptions) -> TensorRTRuntime:
        trt, torch = _backends(config.name)
        from infer.runtimes.gpu import gpu_request

        request = gpu_request(config)
        if request.device_id >= torch.cuda.device_count():
            raise ModelConfigError(f"model '{config.name}': instance_group asks for GPU {request.device_id}, "
                                   f"this machine has {torch.cuda.device_count()}")
        kind, file = _model_file(path)
        device = torch.device("cuda", request.device_id)
        with torch.cuda.device(device):
            runtime = trt.Runtime(_logger(trt))
            if kind == "engine":
                engine = _deserialize(runtime, file.read_bytes(), config.name, file.name)
                if engine is None:
                    raise ModelConfigError(
                        f"model '{config.name}': {file.name} is not an engine TensorRT {trt.__version__} can load on "
                        f"{torch.cuda.get_device_name(device)} (engines are tied to the TensorRT version and GPU "
                        "that built them)"
                    )
                precision, source = "plan", file
            else:
                built = _build_from_onnx(trt, torch, file, config, options)
                engine = _deserialize(runtime, built.data, config.name, str(built.cache_file))
                if engine is None and built.cached:
                    log.warning("model %s: cached engine %s is unusable; rebuilding it", config.name, built.cache_file)
                    built = _build_from_onnx(trt, torch, file, config, options, rebuild=True)
                    engine = _deserialize(runtime, built.data, config.name, str(built.cache_file))
                if engine is None:
                    raise ModelConfigError(f"model '{config.name}': the engine built from {file.name} does not load")
                precision, source = built.precision, built.cache_file
        rt = cls(trt, torch, runtime, engine, device, name=config.name, precision=precision, source=source)
        top = max(p.max_batch for p in rt._profiles)
        if rt._batched and config.max_batch_size > top:
            rt.close()
            raise ModelConfigError(f"model '{config.name}': max_batch_size {config.max_batch_size} is above the "
                                   f"engine's largest batch {top}")
        return rt

    def signature(self) -> Signature:
        return self._sig

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        missing = [n for n in self._in_types if n not in inputs]
        unknown = [n for n in outputs if n not in self._out_types]
        if missing or unknown:
            raise ModelExecutionError(f"tensorrt_plan: missing inputs {missing}, unknown outputs {unknown}")
        index = 0
        if self._batched:
            try:
                index = select_profile(self._profiles, int(inputs[self._sig.inputs[0].name].shape[0]))
            except ValueError as e:
                raise ModelExecutionError(str(e)) from None
        torch = self._torch
        lane = self._acquire()
        try:
            with torch.cuda.device(self._device), torch.cuda.stream(lane.stream):
                return self._run(lane, index, inputs, outputs)
        except Exception as e:
            lane.stream.synchronize()  # nothing of this batch may still use the lane's buffers
            if isinstance(e, ModelExecutionError):
                raise
            raise ModelExecutionError(f"tensorrt failed: {e}") from None
        finally:
            with self._lock:
                self._free.append(lane)

    def _acquire(self) -> _Lane:
        with self._lock:
            if self._engine is None:
                raise ModelExecutionError("tensorrt_plan: the model is closed")
            if self._free:
                return self._free.pop()
            lane = _Lane(self._torch, self._device)
            self._lanes.append(lane)
            return lane

    def _context(self, lane: _Lane, index: int) -> Any:
        context = lane.contexts.get(index)
        if context is None:
            with self._lock:
                context = self._engine.create_execution_context()
            if context is None:
                raise ModelExecutionError("TensorRT could not create an execution context (out of device memory?)")
            if not context.set_optimization_profile_async(index, lane.stream.cuda_stream):
                raise ModelExecutionError(f"TensorRT refused optimisation profile {index}")
            lane.contexts[index] = context
        return context

    def _run(self, lane: _Lane, index: int, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        torch = self._torch
        context = self._context(lane, index)
        for name, dtype in self._in_types.items():
            arr = inputs[name]
            shape = tuple(arr.shape)
            host = _buffer(torch, lane.host, ("in", name), dtype, shape, pin_memory=True)
            host.numpy()[...] = arr  # the one host copy, into pinned memory (read-only arrays welcome)
            dev = _buffer(torch, lane.device, ("in", name), dtype, shape, device=self._device)
            dev.copy_(host, non_blocking=True)
            if not context.set_input_shape(name, shape):
                raise ModelExecutionError(f"TensorRT refused shape {list(shape)} for input '{name}'")
            context.set_tensor_address(name, dev.data_ptr())
        on_device = {}
        for name, dtype in self._out_types.items():  # every output needs an address, asked for or not
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ModelExecutionError(f"TensorRT cannot tell output '{name}''s shape before running ({shape})")
            on_device[name] = _buffer(torch, lane.device, ("out", name), dtype, shape, device=self._device)
            context.set_tensor_address(name, on_device[name].data_ptr())
        if not context.execute_async_v3(lane.stream.cuda_stream):
            raise ModelExecutionError("TensorRT failed to run the batch (see the tensorrt log lines)")
        staged = {}
        for name in outputs:
            dev = on_device[name]
            staged[name] = _buffer(torch, lane.host, ("out", name), dev.dtype, tuple(dev.shape), pin_memory=True)
            staged[name].copy_(dev, non_blocking=True)
        lane.stream.synchronize()
        return {n: h.numpy().copy() for n, h in staged.items()}  # copies: the staged buffers serve the next batch

    def describe(self) -> str:
        version = getattr(self._trt, "__version__", "?")
        profiles = ", ".join(p.label() for p in self._profiles)
        return f"tensorrt {version} {self._precision} {self._device} profiles=[{profiles}] cache={self._source}"

    def close(self) -> None:
        with self._lock:
            for lane in self._lanes:
                lane.contexts.clear()  # contexts go before the engine they came from
            self._lanes.clear()
            self._free.clear()
            self._engine = None
            self._runtime = None
