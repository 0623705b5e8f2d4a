"""The small interface every runtime implements (ONNX Runtime today; TensorRT, numba, pipelines later).

A runtime is opened on one version directory, reports the signature it found in the model
file, and runs batches. ``run`` is blocking and is called from worker threads, possibly
several at once (``instance_group.count``), so it must be thread-safe; heavy runtimes release
the GIL while computing.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from infer.config.model import ModelConfig
from infer.core.types import TensorSpec
from infer.errors import ModelConfigError

__all__ = ["Runtime", "RuntimeOptions", "Signature", "register_runtime", "runtime_for"]

Array = npt.NDArray[np.generic]


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """Server-wide defaults a runtime may use when the model's config says nothing."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    state_dir: Path | None = None  # where stateful runtimes keep their state across unloads and restarts


@dataclass(frozen=True, slots=True)
class Signature:
    """Tensors as the model file declares them; shapes include the batch dim when it has one."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class Runtime(abc.ABC):
    """One loaded model version."""

    #: config ``platform`` / ``backend`` names this runtime serves.
    names: ClassVar[tuple[str, ...]] = ()
    #: file name used when the config gives no ``default_model_filename``.
    default_filename: ClassVar[str] = ""
    #: True for runtimes made of other models (ensembles): no model file, no warm-up, no scheduler of their own;
    #: the data plane runs them step by step.
    composite: ClassVar[bool] = False
    #: True when :meth:`prepare` does heavy work (decoding images): the data plane runs it in a worker thread.
    prepare_in_thread: bool = False

    @classmethod
    @abc.abstractmethod
    def open(cls, path: Path, config: ModelConfig, options: RuntimeOptions) -> Runtime:
        """Load the model file at ``path``; raise ModelConfigError with a clear message on failure."""

    @abc.abstractmethod
    def signature(self) -> Signature:
        """Inputs and outputs found in the model file."""

    @abc.abstractmethod
    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        """Compute ``outputs`` for one batch; blocking and thread-safe."""

    def prepare(self, inputs: dict[str, Array]) -> None:  # noqa: B027 - optional hook
        """Check and convert one request's inputs in place before it is queued (on the event loop, or in a
        worker thread when :attr:`prepare_in_thread` is set).

        Raise InvalidArgument for values this runtime cannot take, so one bad request never
        fails the batch it would have joined.
        """

    def batch_key(self, inputs: Mapping[str, Array]) -> Hashable:
        """Values that must agree among the requests of one batch (beside the inputs' shapes), e.g. a horizon
        that fixes the outputs' width; ``None`` (the default) when shapes alone decide."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model's resources."""

    def describe(self) -> str:
        """One line on how it runs (providers, threads), for logs and metadata."""
        return type(self).__name__


_RUNTIMES: dict[str, Callable[[], type[Runtime]]] = {}


def register_runtime(names: Sequence[str], loader: Callable[[], type[Runtime]]) -> None:
    """Make a runtime selectable by config name; ``loader`` imports it lazily."""
    for n in names:
        _RUNTIMES[n] = loader


def runtime_for(config: ModelConfig) -> type[Runtime]:
    key = config.backend or config.platform
    if not key:
        raise ModelConfigError(f"model '{config.name}': config names neither platform nor backend")
    loader = _RUNTIMES.get(key)
    if loader is None:
        raise ModelConfigError(
            f"model '{config.name}': platform/backend '{key}' is not supported by infer "
            f"(supported: {', '.join(sorted(_RUNTIMES))})"
        )
    return loader()


def _onnx() -> type[Runtime]:
    from infer.runtimes.onnx import OnnxRuntime

    return OnnxRuntime


def _rules() -> type[Runtime]:
    from infer.runtimes.rules import RulesRuntime

    return RulesRuntime


def _ensemble() -> type[Runtime]:
    from infer.runtimes.ensemble import EnsembleRuntime

    return EnsembleRuntime


def _tensorrt() -> type[Runtime]:
    from infer.runtimes.tensorrt import TensorRTRuntime

    return TensorRTRuntime


def _kernel() -> type[Runtime]:
    from infer.runtimes.kernel import KernelRuntime

    return KernelRuntime


register_runtime(("onnxruntime_onnx", "onnxruntime"), _onnx)
register_runtime(("tensorrt_plan",), _tensorrt)
register_runtime(("kernel",), _kernel)
register_runtime(("ensemble",), _ensemble)
register_runtime(("rules",), _rules)
