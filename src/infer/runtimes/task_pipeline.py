"""A kernel program that runs several programs of one family on the same inputs, decoded once.

Its version directory holds one subdirectory per task, each a complete kernel program of its own (its
``kernel.json`` and files); ``params.tasks`` maps each task to its subdirectory. ``prepare`` (in a worker thread)
decodes the request once and hands the decoded items to every task's ``prepare_<items>`` method; the batch step
runs every task on the whole batch and renames each task's outputs to the pipeline's names, so two tasks'
``scores`` do not collide. A family subclass says which tasks exist, which program each runs, how a request is
decoded and how outputs are renamed: :mod:`infer.runtimes.vision_pipeline`, :mod:`infer.runtimes.nlp_pipeline`.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from infer.core.types import TensorSpec
from infer.runtimes.base import Array
from infer.runtimes.kernel import PROGRAMS, inside_version

__all__ = ["TaskPipeline"]


class TaskPipeline:
    prepare_in_thread = True
    #: task -> the kernel program it runs
    PROGRAMS: ClassVar[dict[str, str]] = {}
    #: the method each part prepares decoded items with (``prepare_images``, ``prepare_texts``)
    PREPARE: ClassVar[str] = ""
    #: inputs the decoder leaves that every part's batch step reads too (e.g. image sizes)
    SHARED: ClassVar[tuple[str, ...]] = ()

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        tasks = params.get("tasks")
        if not isinstance(tasks, dict) or not tasks:
            raise ValueError(f"params.tasks must map tasks ({', '.join(self.PROGRAMS)}) to subdirectories")
        self._tasks: list[tuple[str, Any, dict[str, str]]] = []
        for task, sub in tasks.items():
            if task not in self.PROGRAMS:
                raise ValueError(f"unknown task {task!r} (known: {', '.join(self.PROGRAMS)})")
            where = inside_version(directory, sub)
            doc = json.loads((where / "kernel.json").read_text())
            if doc.get("program") != self.PROGRAMS[task]:
                raise ValueError(f"{sub}/kernel.json must name program {self.PROGRAMS[task]!r} for task {task!r}")
            part_params = dict(doc.get("params", {}))
            part_params.update({k: params[k] for k in ("_gpu", "_model") if k in params})  # the pipeline's device
            program = PROGRAMS[self.PROGRAMS[task]]()(where, part_params)
            if not callable(getattr(program, self.PREPARE, None)):
                raise ValueError(f"program {self.PROGRAMS[task]!r} has no {self.PREPARE}")
            self._tasks.append((task, program, self.renames(task, program.outputs)))
        self.inputs: tuple[TensorSpec, ...] = self._tasks[0][1].inputs
        outputs: dict[str, TensorSpec] = {}
        for _, program, names in self._tasks:
            for spec in program.outputs:
                if spec.name in names and names[spec.name] not in outputs:
                    outputs[names[spec.name]] = TensorSpec(names[spec.name], spec.datatype, spec.shape)
        self.outputs: tuple[TensorSpec, ...] = tuple(outputs.values())

    def renames(self, task: str, outputs: Sequence[TensorSpec]) -> dict[str, str]:
        """``task``'s outputs the pipeline exposes: {program output: pipeline output}."""
        raise NotImplementedError

    def decode(self, inputs: dict[str, Array]) -> list[Any]:
        """The request's items, decoded (and taken out of ``inputs``)."""
        raise NotImplementedError

    def prepare(self, inputs: dict[str, Array]) -> None:
        items = self.decode(inputs)
        for task, program, _ in self._tasks:
            own: dict[str, Array] = {}
            getattr(program, self.PREPARE)(items, own)
            for key, value in own.items():
                inputs[f"{task}.{key}"] = value

    def _own(self, task: str, inputs: Mapping[str, Array]) -> dict[str, Array]:
        prefix = f"{task}."
        own = {key[len(prefix):]: value for key, value in inputs.items() if key.startswith(prefix)}
        own.update({key: inputs[key] for key in self.SHARED if key in inputs})
        return own

    def batch_key(self, inputs: Mapping[str, Array]) -> Hashable:
        """The parts' own batch keys (length buckets...), together."""
        keys = tuple(program.batch_key(self._own(task, inputs)) for task, program, _ in self._tasks
                     if callable(getattr(program, "batch_key", None)))
        return keys or None

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        result: dict[str, Array] = {}
        for task, program, names in self._tasks:
            produced = program.run(self._own(task, inputs), [s.name for s in program.outputs])
            result.update({names[k]: v for k, v in produced.items() if k in names and names[k] not in result})
        return result
