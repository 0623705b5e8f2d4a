"""Kernel programs of the vision family (see :mod:`infer.runtimes.kernel`).

``vision_quality``  ``image`` BYTES [N, 1] (encoded files) -> ``quality`` FP32 [N, 1] (0-1), its components
                    ``quality_components`` FP32 [N, 4] (sharpness, exposure, noise, resolution, each 0-1), the raw
                    ``quality_features`` FP32 [N, 6] and ``size`` INT32 [N, 2] (height, width) of each image.
                    Images are decoded and measured in ``prepare``, in a worker thread, one request at a time (a
                    corrupt image fails its own request, never a batch); the batch step turns measures into scores.

Measures and mappings: :mod:`kernels.image`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infer.core.types import DataType, TensorSpec
from infer.runtimes.base import Array
from infer.runtimes.images import decode_images

__all__ = ["QualityProgram", "vision_quality"]

_MEASURES = "_quality_measures"  # what prepare hands to the batch step in place of the encoded images
_SIZES = "_image_sizes"


class QualityProgram:
    prepare_in_thread = True

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        from kernels import image

        self._image = image
        self.min_side = float(params.get("min_side", 224))
        if not self.min_side > 0:
            raise ValueError(f"min_side must be positive (got {self.min_side})")
        self.inputs: tuple[TensorSpec, ...] = (TensorSpec("image", DataType.BYTES, (-1, 1)),)
        self.outputs: tuple[TensorSpec, ...] = (
            TensorSpec("quality", DataType.FP32, (-1, 1)),
            TensorSpec("quality_components", DataType.FP32, (-1, len(image.QUALITY_COMPONENTS))),
            TensorSpec("quality_features", DataType.FP32, (-1, len(image.QUALITY_FEATURES))),
            TensorSpec("size", DataType.INT32, (-1, 2)),
        )
        image.warm_up()

    def prepare(self, inputs: dict[str, Array]) -> None:
        images = decode_images(np.asarray(inputs.pop("image"), dtype=object).reshape(-1))
        inputs[_MEASURES] = np.stack([self._image.quality_features(im) for im in images])
        inputs[_SIZES] = np.array([im.shape[:2] for im in images], np.int32).reshape(-1, 2)

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        measures = np.asarray(inputs[_MEASURES], np.float64)
        score, components = self._image.quality_score(measures, self.min_side)
        return {"quality": score.astype(np.float32).reshape(-1, 1),
                "quality_components": components.astype(np.float32),
                "quality_features": measures.astype(np.float32), "size": np.asarray(inputs[_SIZES], np.int32)}


def vision_quality(directory: Path, params: dict[str, Any]) -> QualityProgram:
    return QualityProgram(directory, params)
