"""Kernel programs of the vision family (see :mod:`infer.runtimes.kernel`).

``vision_quality``  ``image`` BYTES [N, 1] (encoded files) -> ``quality`` FP32 [N, 1] (0-1), its components
                    ``quality_components`` FP32 [N, 4] (sharpness, exposure, noise, resolution, each 0-1), the raw
                    ``quality_features`` FP32 [N, 6] and ``size`` INT32 [N, 2] (height, width) of each image.
                    Images are decoded and measured in ``prepare``, in a worker thread, one request at a time (a
                    corrupt image fails its own request, never a batch); the batch step turns measures into scores.
``vision_classify`` ``image`` BYTES [N, 1] -> ``labels`` BYTES [N, k] and ``scores`` FP32 [N, k] (top-k classes and
                    their softmax probabilities), ``embedding`` FP32 [N, D] (the network's pooled penultimate
                    features, L2-normalised: cosine similarity is a dot product). ``prepare`` decodes, resizes and
                    crops each image (in a worker thread); the batch step normalises the pixels
                    (:func:`kernels.image.to_tensor`) and runs the ONNX classifier once for the whole batch. Any
                    ONNX file with an input ``[N, 3, S, S]`` and outputs ``logits`` and ``embedding`` works, with
                    its labels file and normalisation in the parameters.
``vision_search``   ``image`` -> ``neighbours`` BYTES [N, k] (ids of the most similar indexed images),
                    ``similarity`` FP32 [N, k] (cosine) and ``embedding``: the classifier's embedding against an
                    index written by :func:`infer.tasks.vision.build.build_search_model`.

Measures and mappings: :mod:`kernels.image`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from infer.core.types import DataType, TensorSpec
from infer.runtimes.base import Array
from infer.runtimes.images import decode_images, resize_crop
from infer.runtimes.kernel import inside_version
from infer.runtimes.onnx import model_session
from kernels.ranking import top_k

__all__ = ["IMAGE_SIZES", "ClassifyProgram", "QualityProgram", "SearchProgram", "decode_request", "vision_classify",
           "vision_quality", "vision_search"]

_MEASURES = "_quality_measures"  # what prepare hands to the batch step in place of the encoded images
IMAGE_SIZES: Final = "_image_sizes"  # what decode_request leaves: each image's (height, width)


def decode_request(inputs: dict[str, Array]) -> list[NDArray[np.uint8]]:
    """The request's ``image`` input decoded (and taken out of ``inputs``: the batch step never sees encoded
    files); each image's (height, width) is left in ``inputs`` for the ``size`` output. Vision programs split
    their ``prepare`` into this and ``prepare_images(images, inputs)``, so the ``vision`` pipeline decodes once
    for all its tasks."""
    images = decode_images(np.asarray(inputs.pop("image"), dtype=object).reshape(-1))
    inputs[IMAGE_SIZES] = np.array([im.shape[:2] for im in images], np.int32).reshape(-1, 2)
    return images


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
        self.prepare_images(decode_request(inputs), inputs)

    def prepare_images(self, images: list[NDArray[np.uint8]], inputs: dict[str, Array]) -> None:
        inputs[_MEASURES] = np.stack([self._image.quality_features(im) for im in images])

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        measures = np.asarray(inputs[_MEASURES], np.float64)
        score, components = self._image.quality_score(measures, self.min_side)
        return {"quality": score.astype(np.float32).reshape(-1, 1),
                "quality_components": components.astype(np.float32),
                "quality_features": measures.astype(np.float32), "size": np.asarray(inputs[IMAGE_SIZES], np.int32)}


def vision_quality(directory: Path, params: dict[str, Any]) -> QualityProgram:
    return QualityProgram(directory, params)


_PIXELS = "_pixels"


class ClassifyProgram:
    prepare_in_thread = True
    thread_safe = True  # stateless; its session runs concurrent batches (one per model instance)

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        from kernels import image

        self._image = image
        labels = inside_version(directory, params.get("labels", "labels.txt")).read_text().splitlines()
        self.labels = np.array([x.encode() for x in labels], dtype=object)
        self.mean = np.asarray(params["mean"], np.float32)
        self.std = np.asarray(params["std"], np.float32)
        self.size, self.resize = int(params.get("size", 224)), int(params.get("resize", 256))
        self.top_k = int(params.get("top_k", 5))
        if not 1 <= self.top_k <= len(labels) or self.mean.shape != (3,) or self.std.shape != (3,):
            raise ValueError("top_k must be within the number of labels; mean and std need 3 values each")
        self._session = model_session(inside_version(directory, params.get("model", "model.onnx")), params)
        width = self._session.get_outputs()[1].shape[1]
        self.inputs: tuple[TensorSpec, ...] = (TensorSpec("image", DataType.BYTES, (-1, 1)),)
        self.outputs: tuple[TensorSpec, ...] = (
            TensorSpec("labels", DataType.BYTES, (-1, self.top_k)),
            TensorSpec("scores", DataType.FP32, (-1, self.top_k)),
            TensorSpec("embedding", DataType.FP32, (-1, int(width) if isinstance(width, int) else -1)),
            TensorSpec("size", DataType.INT32, (-1, 2)),
        )
        image.warm_up()

    def prepare(self, inputs: dict[str, Array]) -> None:
        self.prepare_images(decode_request(inputs), inputs)

    def prepare_images(self, images: list[NDArray[np.uint8]], inputs: dict[str, Array]) -> None:
        inputs[_PIXELS] = np.stack([resize_crop(im, self.resize, self.size) for im in images])

    def embed(self, inputs: Mapping[str, Array]) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        """Class probabilities [N, C] and L2-normalised embeddings [N, D] of a prepared batch (one ONNX call)."""
        pixels = self._image.to_tensor(np.asarray(inputs[_PIXELS], np.uint8), self.mean, self.std)
        logits, embedding = self._session.run(["logits", "embedding"], {self._session.get_inputs()[0].name: pixels})
        z = np.asarray(logits, np.float64)
        probs = np.exp(z - z.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        emb = np.asarray(embedding, np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return probs, (emb / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        probs, embedding = self.embed(inputs)
        top = top_k(probs, self.top_k)
        return {"labels": self.labels[top], "scores": np.take_along_axis(probs, top, axis=1).astype(np.float32),
                "embedding": embedding, "size": np.asarray(inputs[IMAGE_SIZES], np.int32)}


def vision_classify(directory: Path, params: dict[str, Any]) -> ClassifyProgram:
    return ClassifyProgram(directory, params)


class SearchProgram(ClassifyProgram):
    """``vision_search``: the classifier's embedding of each image, then its ``top_k`` nearest images of an index
    (``index.npz``: ``embeddings`` float32 [M, D] L2-normalised, ``ids`` [M] strings) by exact cosine similarity
    (one matrix product per batch; fine up to a few hundred thousand images, beyond that an ANN library)."""

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        super().__init__(directory, {**params, "top_k": 1})
        with np.load(inside_version(directory, params.get("index", "index.npz"))) as index:  # no pickles
            self.index = np.ascontiguousarray(index["embeddings"], np.float32)
            self.ids = np.array([str(i).encode() for i in index["ids"]], dtype=object)
        self.neighbours = min(int(params.get("neighbours", 5)), len(self.ids))
        if self.index.ndim != 2 or len(self.ids) != self.index.shape[0] or self.neighbours < 1:
            raise ValueError("index.npz needs embeddings [M, D] and M ids, M >= 1")
        k = self.neighbours
        self.outputs = (TensorSpec("neighbours", DataType.BYTES, (-1, k)),
                        TensorSpec("similarity", DataType.FP32, (-1, k)),
                        TensorSpec("embedding", DataType.FP32, (-1, self.index.shape[1])))

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        _, embedding = self.embed(inputs)
        sim = embedding @ self.index.T
        order = top_k(sim, self.neighbours)
        return {"neighbours": self.ids[order], "similarity": np.take_along_axis(sim, order, axis=1).astype(np.float32),
                "embedding": embedding}


def vision_search(directory: Path, params: dict[str, Any]) -> SearchProgram:
    return SearchProgram(directory, params)

