"""Kernel programs: models computed by numba kernels (``kernels/``) rather than a graph runtime.

A version directory holds ``kernel.json`` naming a program and its parameters, plus any state files the
program reads (``backend: "kernel"``)::

    {"program": "anomaly_features", "params": {"state": "state.npz"}}

Programs are chosen by name from :data:`PROGRAMS` (loaded lazily, like runtimes); each declares its tensors
and computes a batch. Stateful programs (rolling per-user features, per-series histories) see batches in the
order the scheduler runs them and keep their state behind a lock, so ``instance_group.count`` above 1 gains
nothing for them; the state starts from the file shipped with the model (the state at the end of training)
and lives in memory while the version is loaded. With ``--state-dir`` it is saved there when the version is
unloaded (shutdown included) and restored at the next load, so a restart does not send every user back to a
cold start (a SIGKILL loses what changed since the last save).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from infer.config.model import ModelConfig
from infer.core.types import TensorSpec
from infer.errors import InferError, ModelConfigError, ModelExecutionError
from infer.runtimes.base import Array, Runtime, RuntimeOptions, Signature

__all__ = ["PROGRAMS", "KernelRuntime", "Program", "StatefulProgram", "inside_version", "register_program"]

log = logging.getLogger(__name__)
_SAVED = "SAVED"  # marks a complete state directory


class Program(Protocol):
    inputs: tuple[TensorSpec, ...]  # served shapes, batch dimension first
    outputs: tuple[TensorSpec, ...]

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]: ...


class StatefulProgram(Program, Protocol):
    """A program whose state can outlive the loaded version (``--state-dir``)."""

    def save_state(self, directory: Path) -> None: ...

    def load_state(self, directory: Path) -> None: ...


ProgramFactory = Callable[[Path, dict[str, Any]], Program]
PROGRAMS: dict[str, Callable[[], ProgramFactory]] = {}


def register_program(name: str, loader: Callable[[], ProgramFactory]) -> None:
    PROGRAMS[name] = loader


def _lazy(module: str, name: str) -> Callable[[], ProgramFactory]:
    """A loader that imports ``infer.runtimes.<module>`` only when a model names the program."""

    def load() -> ProgramFactory:
        import importlib

        factory: ProgramFactory = getattr(importlib.import_module(f"infer.runtimes.{module}"), name)
        return factory

    return load


for _module, _names in (("anomaly_programs", ("anomaly_features", "anomaly_streaming", "anomaly_scorer")),
                        ("forecast_program", ("forecast",)),
                        ("vision_programs", ("vision_quality", "vision_classify", "vision_search")),
                        ("vision_detect", ("vision_detect",)),
                        ("vision_ocr", ("vision_ocr",)),
                        ("vision_pipeline", ("vision",)),
                        ("nlp_programs", ("nlp_embed",)),
                        ("nlp_text", ("nlp_language", "nlp_keywords", "nlp_topics")),
                        ("nlp_heads", ("nlp_classify",)),
                        ("nlp_search", ("nlp_similarity", "nlp_search", "nlp_summarize")),
                        ("nlp_entities", ("nlp_entities",)),
                        ("nlp_pipeline", ("nlp",))):
    for _name in _names:
        register_program(_name, _lazy(_module, _name))


def inside_version(directory: Path, name: object) -> Path:
    """A file named by a program's parameters: relative, and inside the version directory."""
    path = (directory / str(name)).resolve()
    if Path(str(name)).is_absolute() or not path.is_relative_to(directory.resolve()):
        raise ValueError(f"file {name!r} must be inside the version directory")
    return path


class KernelRuntime(Runtime):
    names = ("kernel",)
    default_filename = "kernel.json"

    def __init__(self, program: Program, name: str, state_dir: Path | None = None) -> None:
        self._program = program
        self._name = name
        # stateful programs see one batch at a time, in order; a program that says it is ``thread_safe`` (a stateless
        # one whose session runs batches concurrently, like the encoders) runs one batch per model instance at once
        self._lock: Any = contextlib.nullcontext() if getattr(program, "thread_safe", False) else threading.Lock()
        self._state_dir = state_dir if hasattr(program, "save_state") else None
        self.prepare_in_thread = bool(getattr(program, "prepare_in_thread", False))
        # the program's optional per-request hooks, looked up once rather than per request
        self._prepare: Callable[[dict[str, Array]], None] | None = getattr(program, "prepare", None)
        self._batch_key: Callable[[Mapping[str, Array]], Hashable] | None = getattr(program, "batch_key", None)

    @classmethod
    def open(cls, path: Path, config: ModelConfig, options: RuntimeOptions) -> KernelRuntime:
        where = f"model '{config.name}'"
        try:
            doc = json.loads(path.read_text())
            name, params = str(doc["program"]), dict(doc.get("params", {}))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelConfigError(f"{where}: {path.name} must be JSON with a 'program' name: {e}") from None
        loader = PROGRAMS.get(name)
        if loader is None:
            raise ModelConfigError(f"{where}: unknown kernel program '{name}' (known: {', '.join(sorted(PROGRAMS))})")
        from infer.runtimes.gpu import gpu_request

        request = gpu_request(config)
        if request.wanted:  # programs that run an ONNX file open it where the config asks (onnx.model_session)
            params.update(_gpu=request, _model=config.name)
        try:
            program = loader()(path.parent, params)
        except InferError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelConfigError(f"{where}: program '{name}' cannot load: {e}") from None
        state_dir = None
        if options.state_dir is not None:
            state_dir = options.state_dir / config.name / path.parent.name
            if (state_dir / _SAVED).is_file() and hasattr(program, "load_state"):
                try:
                    program.load_state(state_dir)
                except (OSError, ValueError, KeyError) as e:
                    raise ModelConfigError(f"{where}: saved state in {state_dir} cannot be read: {e}") from None
                log.info("model %s: state restored from %s", config.name, state_dir)
        return cls(program, name, state_dir)

    def signature(self) -> Signature:
        return Signature(self._program.inputs, self._program.outputs)

    def prepare(self, inputs: dict[str, Array]) -> None:
        """The program's per-request checks, before the request joins a batch (one bad event fails alone)."""
        if self._prepare is not None:
            self._prepare(inputs)

    def batch_key(self, inputs: Mapping[str, Array]) -> Hashable:
        return None if self._batch_key is None else self._batch_key(inputs)

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        with self._lock:
            try:
                return self._program.run(inputs, outputs)
            except InferError:
                raise
            except (ValueError, TypeError) as e:
                raise ModelExecutionError(f"kernel program '{self._name}' failed: {e}") from None

    def close(self) -> None:
        """Save the state where ``--state-dir`` says (written beside, then renamed: a crash keeps the old one)."""
        if self._state_dir is None:
            return
        with self._lock:
            tmp = self._state_dir.with_name(f".{self._state_dir.name}.saving")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                tmp.mkdir(parents=True)
                self._program.save_state(tmp)  # type: ignore[attr-defined]
                (tmp / _SAVED).write_text(str(time.time()))
                old = self._state_dir.with_name(f".{self._state_dir.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                if self._state_dir.exists():
                    os.rename(self._state_dir, old)
                os.rename(tmp, self._state_dir)
                shutil.rmtree(old, ignore_errors=True)
            except OSError as e:
                log.error("cannot save the state of kernel program %s to %s: %s", self._name, self._state_dir, e)

    def describe(self) -> str:
        return f"kernel program {self._name}"
