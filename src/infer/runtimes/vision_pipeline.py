"""The ``vision`` kernel program: every vision task on each image in one call, the image decoded once.

Its version directory holds one subdirectory per task, each a complete kernel program of its own (a
``kernel.json`` naming ``vision_quality``, ``vision_classify``, ``vision_detect`` or ``vision_ocr``, and that
program's files); ``params.tasks`` maps each task to its subdirectory. ``prepare`` (in a worker thread) decodes
the request's images once and hands them to every task's ``prepare_images``; the batch step runs every task on
the whole batch. Each task's outputs appear under the pipeline's names (:data:`RENAMES`), so ``scores`` of the
classifier and of the detector do not collide; a task missing from ``params.tasks`` adds no outputs.

``image`` BYTES [N, 1] -> ``size`` INT32 [N, 2] and
  quality:  ``quality`` FP32 [N, 1], ``quality_components`` FP32 [N, 4]
  classify: ``labels`` BYTES [N, k], ``label_scores`` FP32 [N, k], ``embedding`` FP32 [N, D]
  detect:   ``object_boxes`` FP32 [N, K, 4], ``object_classes`` BYTES [N, K], ``object_scores`` FP32 [N, K],
            ``object_count`` INT32 [N, 1], and with moderation classes ``verdict`` BYTES [N, 1],
            ``unsafe_score`` FP32 [N, 1]
  ocr:      ``text`` BYTES [N, 1], ``text_lines`` BYTES [N, L], ``text_boxes`` FP32 [N, L, 4],
            ``text_confidence`` FP32 [N, L], ``text_count`` INT32 [N, 1]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, cast

import numpy as np
from numpy.typing import NDArray

from infer.core.types import TensorSpec
from infer.runtimes.base import Array
from infer.runtimes.kernel import PROGRAMS, inside_version
from infer.runtimes.vision_programs import decode_request

__all__ = ["RENAMES", "VisionPipeline", "vision"]

# task -> the program it runs -> {program output: pipeline output}; outputs not named here are not exposed
RENAMES: Final[dict[str, dict[str, str]]] = {
    "quality": {"quality": "quality", "quality_components": "quality_components"},
    "classify": {"labels": "labels", "scores": "label_scores", "embedding": "embedding"},
    "detect": {"boxes": "object_boxes", "classes": "object_classes", "scores": "object_scores",
               "count": "object_count", "verdict": "verdict", "unsafe_score": "unsafe_score"},
    "ocr": {"text": "text", "lines": "text_lines", "boxes": "text_boxes", "confidence": "text_confidence",
            "count": "text_count"},
}
_PROGRAMS: Final = {"quality": "vision_quality", "classify": "vision_classify", "detect": "vision_detect",
                    "ocr": "vision_ocr"}
_SIZES: Final = "_image_sizes"  # what decode_request leaves in the inputs


class _ImageProgram(Protocol):
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def prepare_images(self, images: list[NDArray[np.uint8]], inputs: dict[str, Array]) -> None: ...

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]: ...


class VisionPipeline:
    prepare_in_thread = True

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        tasks = params.get("tasks")
        if not isinstance(tasks, dict) or not tasks:
            raise ValueError(f"params.tasks must map tasks ({', '.join(RENAMES)}) to subdirectories")
        self._tasks: list[tuple[str, _ImageProgram]] = []
        for task, sub in tasks.items():
            if task not in RENAMES:
                raise ValueError(f"unknown vision task {task!r} (known: {', '.join(RENAMES)})")
            where = inside_version(directory, sub)
            doc = json.loads((where / "kernel.json").read_text())
            if doc.get("program") != _PROGRAMS[task]:
                raise ValueError(f"{sub}/kernel.json must name program {_PROGRAMS[task]!r} for task {task!r}")
            program = cast(_ImageProgram, PROGRAMS[_PROGRAMS[task]]()(where, dict(doc.get("params", {}))))
            self._tasks.append((task, program))
        first = self._tasks[0][1]
        self.inputs: tuple[TensorSpec, ...] = first.inputs
        size = [s for _, p in self._tasks for s in p.outputs if s.name == "size"]
        outputs = [TensorSpec(RENAMES[task][s.name], s.datatype, s.shape)
                   for task, p in self._tasks for s in p.outputs if s.name in RENAMES[task]]
        self.outputs: tuple[TensorSpec, ...] = tuple(outputs + size[:1])
        self._sized = bool(size)

    def prepare(self, inputs: dict[str, Array]) -> None:
        images = decode_request(inputs)
        for task, program in self._tasks:
            own: dict[str, Array] = {}
            program.prepare_images(images, own)
            for key, value in own.items():
                inputs[f"{task}.{key}"] = value

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        result: dict[str, Array] = {}
        sizes = inputs[_SIZES]
        for task, program in self._tasks:
            prefix = f"{task}."
            own = {key[len(prefix):]: value for key, value in inputs.items() if key.startswith(prefix)}
            own[_SIZES] = sizes
            names = RENAMES[task]
            produced = program.run(own, [s.name for s in program.outputs])
            result.update({names[k]: v for k, v in produced.items() if k in names})
        if self._sized:
            result["size"] = np.asarray(sizes, np.int32)
        return result


def vision(directory: Path, params: dict[str, Any]) -> VisionPipeline:
    return VisionPipeline(directory, params)
