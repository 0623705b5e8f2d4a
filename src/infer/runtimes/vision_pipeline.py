"""The ``vision`` kernel program: every vision task on each image in one call, the image decoded once (a
:class:`~infer.runtimes.task_pipeline.TaskPipeline`: one subdirectory per task, each a complete kernel program).

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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from infer.core.types import DataType, TensorSpec
from infer.runtimes.base import Array
from infer.runtimes.task_pipeline import TaskPipeline
from infer.runtimes.vision_programs import IMAGE_SIZES, decode_request

__all__ = ["RENAMES", "VisionPipeline", "vision"]

# task -> {program output: pipeline output}; outputs not named here are not exposed
RENAMES: Final[dict[str, dict[str, str]]] = {
    "quality": {"quality": "quality", "quality_components": "quality_components"},
    "classify": {"labels": "labels", "scores": "label_scores", "embedding": "embedding"},
    "detect": {"boxes": "object_boxes", "classes": "object_classes", "scores": "object_scores",
               "count": "object_count", "verdict": "verdict", "unsafe_score": "unsafe_score"},
    "ocr": {"text": "text", "lines": "text_lines", "boxes": "text_boxes", "confidence": "text_confidence",
            "count": "text_count"},
}


class VisionPipeline(TaskPipeline):
    PROGRAMS = {"quality": "vision_quality", "classify": "vision_classify", "detect": "vision_detect",
                "ocr": "vision_ocr"}
    PREPARE = "prepare_images"
    SHARED = (IMAGE_SIZES,)

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        super().__init__(directory, params)
        self.outputs = (*self.outputs, TensorSpec("size", DataType.INT32, (-1, 2)))

    def renames(self, task: str, outputs: Sequence[TensorSpec]) -> dict[str, str]:
        return RENAMES[task]

    def decode(self, inputs: dict[str, Array]) -> list[Any]:
        return decode_request(inputs)

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        result = super().run(inputs, outputs)
        result["size"] = np.asarray(inputs[IMAGE_SIZES], np.int32)
        return result


def vision(directory: Path, params: dict[str, Any]) -> VisionPipeline:
    return VisionPipeline(directory, params)
