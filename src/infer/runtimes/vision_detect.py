"""The ``vision_detect`` kernel program (see :mod:`infer.runtimes.kernel`): a YOLO-format ONNX detector served
on encoded image files, and content moderation on top of it.

``image`` BYTES [N, 1] (encoded files) -> ``boxes`` FP32 [N, K, 4] (``x1, y1, x2, y2`` in the original image's
pixels, clipped to it), ``classes`` BYTES [N, K] (label names), ``scores`` FP32 [N, K], best first, padded with
zeros and ``b""`` past ``count`` INT32 [N, 1]; ``K`` is ``max_detections``. With ``unsafe_classes`` (moderation)
also ``verdict`` BYTES [N, 1] (``b"unsafe"`` when a candidate of those classes scores at least
``unsafe_threshold``, else ``b"safe"``) and ``unsafe_score`` FP32 [N, 1] (the best such score, 0 when none). Both
read every candidate above ``score_threshold`` before suppression, so neither NMS nor the ``K`` cap can hide one.

``prepare`` (a worker thread, one request at a time: a corrupt image fails its own request by index) decodes
each image (``prepare_images`` alone when the ``vision`` pipeline has decoded them), letterboxes it into the
model's input (Pillow bilinear, padded with ``pad_value``) and keeps the geometry; the batch step runs the ONNX
file once for the batch (in chunks of its batch size when the file fixes one, the last chunk padded), decodes
and suppresses every image's candidates at once (:mod:`kernels.detect`) and maps the kept boxes back to
original pixels.

Any YOLO ONNX file works: input ``[B, 3, H, W]`` (RGB, 0-1, float32 or float16), first output (or ``output``)
``[B, 4 + C, A]`` (YOLOv8 and later) or ``[B, A, 5 + C]`` (YOLOv5/v7), told apart by the class count of its
labels file or named by ``format``. The input size is the model's when fixed, else ``input_size``, else the
``imgsz`` that Ultralytics writes into the file's metadata. The file is run once at load on a blank image, so a
file that does not fit fails its load, not a request.

Parameters (``kernel.json``): ``model`` (``model.onnx``), ``labels`` (``labels.txt``, one class a line),
``format``, ``input_size`` (int or ``[h, w]``), ``score_threshold`` (0.25), ``iou_threshold`` (0.45),
``max_detections`` (32), ``class_agnostic`` (false), ``center`` (true: the padding split around the image;
false: right and below), ``pad_value`` (114), ``unsafe_classes`` ([]), ``unsafe_threshold`` (0.5),
``threads`` (ONNX Runtime intra-op threads, 0 = its default).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from infer.core.types import DataType, TensorSpec
from infer.runtimes.base import Array
from infer.runtimes.kernel import inside_version
from infer.runtimes.onnx import cpu_session
from infer.runtimes.vision_programs import decode_request

__all__ = ["DetectProgram", "letterbox_image", "vision_detect"]

_PIXELS = "_letterboxed"  # what prepare hands to the batch step: uint8 [n, H, W, 3]
_GEOMETRY = "_geometry"  # float64 [n, 5]: scale, pad_x, pad_y, width, height
_VERDICTS = np.array([b"safe", b"unsafe"], dtype=object)


def letterbox_image(image: NDArray[np.uint8], input_h: int, input_w: int, *, center: bool = True,
                    pad_value: int = 114) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    """``image`` (uint8 [H, W, 3]) resized into an ``input_h x input_w`` canvas keeping its aspect ratio
    (Pillow bilinear), and its geometry ``(scale, pad_x, pad_y, width, height)`` for
    :func:`kernels.detect.to_original`."""
    from PIL import Image

    from kernels.detect import letterbox

    h, w = image.shape[:2]
    scale, nw, nh, px, py = letterbox(h, w, input_h, input_w, center=center)
    canvas = np.full((input_h, input_w, 3), pad_value, np.uint8)
    if (nw, nh) != (w, h):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    canvas[py:py + nh, px:px + nw] = image
    return canvas, np.array([scale, px, py, w, h], np.float64)


def _input_size(shape: Sequence[Any], params: dict[str, Any], metadata: dict[str, str]) -> tuple[int, int]:
    """(height, width): the model's own when fixed, else ``input_size``, else Ultralytics' ``imgsz``."""
    fixed = [d if isinstance(d, int) and d > 0 else None for d in shape[2:4]]
    given = params.get("input_size")
    if given is None and "imgsz" in metadata:
        given = ast.literal_eval(metadata["imgsz"])
    if given is not None:
        size = [int(given)] * 2 if isinstance(given, int | float) else [int(x) for x in given]
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"input_size must be a positive int or [height, width], got {given!r}")
        if any(f is not None and f != s for f, s in zip(fixed, size, strict=True)):
            raise ValueError(f"input_size {size} differs from the model's input {list(shape)}")
        return size[0], size[1]
    if fixed[0] is None or fixed[1] is None:
        raise ValueError(f"the model's input {list(shape)} has a dynamic size: give input_size")
    return fixed[0], fixed[1]


class DetectProgram:
    prepare_in_thread = True

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        from kernels import detect, image

        self._detect, self._image = detect, image
        labels = inside_version(directory, params.get("labels", "labels.txt")).read_text().splitlines()
        self.labels = np.array([x.encode() for x in labels] + [b""], dtype=object)  # index -1: padding
        self.k = int(params.get("max_detections", 32))
        self.score_threshold = float(params.get("score_threshold", 0.25))
        self.iou_threshold = float(params.get("iou_threshold", 0.45))
        self.class_agnostic = bool(params.get("class_agnostic", False))
        self.center, self.pad_value = bool(params.get("center", True)), int(params.get("pad_value", 114))
        unsafe = [str(c) for c in params.get("unsafe_classes", [])]
        self.unsafe_threshold = float(params.get("unsafe_threshold", 0.5))
        if not labels or self.k < 1 or not 0 <= self.pad_value <= 255:
            raise ValueError("labels must name at least one class, max_detections be >= 1, pad_value 0-255")
        if not 0.0 <= self.score_threshold < 1.0 or not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError("score_threshold must be in [0, 1) and iou_threshold in [0, 1]")
        if unknown := sorted(set(unsafe) - set(labels)):
            raise ValueError(f"unsafe_classes {unknown} are not among the labels")
        if unsafe and self.unsafe_threshold < self.score_threshold:
            raise ValueError("unsafe_threshold below score_threshold: such candidates are never seen")
        self.unsafe = np.isin(np.arange(len(labels)), [labels.index(c) for c in unsafe]) if unsafe else None
        self._session = cpu_session(inside_version(directory, params.get("model", "model.onnx")),
                                    int(params.get("threads", 0)))
        arg = self._session.get_inputs()[0]
        self._input_name, self._float16 = arg.name, arg.type == "tensor(float16)"
        batch = arg.shape[0]
        self.chunk = batch if isinstance(batch, int) and batch > 0 else 0  # 0: any batch size in one call
        self._output = str(params.get("output", self._session.get_outputs()[0].name))
        metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self.input_h, self.input_w = _input_size(arg.shape, params, metadata)
        probe = self.raw_output(np.zeros((1, self.input_h, self.input_w, 3), np.uint8))
        self.layout = str(params.get("format") or detect.detect_layout(probe.shape, len(labels)))
        detect.decode_yolo(probe, len(labels), self.layout, self.score_threshold)  # a wrong format fails here
        k = self.k
        outputs = [TensorSpec("boxes", DataType.FP32, (-1, k, 4)), TensorSpec("classes", DataType.BYTES, (-1, k)),
                   TensorSpec("scores", DataType.FP32, (-1, k)), TensorSpec("count", DataType.INT32, (-1, 1))]
        if self.unsafe is not None:
            outputs += [TensorSpec("verdict", DataType.BYTES, (-1, 1)),
                        TensorSpec("unsafe_score", DataType.FP32, (-1, 1))]
        self.inputs: tuple[TensorSpec, ...] = (TensorSpec("image", DataType.BYTES, (-1, 1)),)
        self.outputs: tuple[TensorSpec, ...] = tuple(outputs)
        detect.warm_up()  # to_tensor was compiled by the probe, for the arrays prepare makes

    def prepare(self, inputs: dict[str, Array]) -> None:
        self.prepare_images(decode_request(inputs), inputs)

    def prepare_images(self, images: list[NDArray[np.uint8]], inputs: dict[str, Array]) -> None:
        """Decoded images letterboxed into what the batch step reads (the ``vision`` pipeline decodes once for
        all its tasks and calls this)."""
        boxed = [letterbox_image(im, self.input_h, self.input_w, center=self.center, pad_value=self.pad_value)
                 for im in images]
        inputs[_PIXELS] = np.stack([b[0] for b in boxed])
        inputs[_GEOMETRY] = np.stack([b[1] for b in boxed])

    def raw_output(self, pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The model's raw output for letterboxed images uint8 [n, H, W, 3]: one session call, or one per chunk
        of the file's fixed batch size (the last padded with blank images)."""
        x = self._image.to_tensor(pixels, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # RGB / 255, NCHW
        if self._float16:
            x = x.astype(np.float16)
        n = len(x)
        if not self.chunk:
            return np.asarray(self._session.run([self._output], {self._input_name: x})[0], np.float32)
        parts = []
        for a in range(0, n, self.chunk):
            part = x[a:a + self.chunk]
            if len(part) < self.chunk:
                part = np.concatenate([part, np.zeros((self.chunk - len(part), *x.shape[1:]), x.dtype)])
            parts.append(np.asarray(self._session.run([self._output], {self._input_name: part})[0], np.float32))
        return np.concatenate(parts)[:n]

    def detect(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """The outputs of a prepared batch."""
        d = self._detect
        geometry = np.asarray(inputs[_GEOMETRY], np.float64)
        n = len(geometry)
        raw = self.raw_output(np.asarray(inputs[_PIXELS], np.uint8))
        groups, boxes, scores, classes = d.decode_yolo(raw, len(self.labels) - 1, self.layout, self.score_threshold)
        kept = d.nms(boxes, scores, classes, groups, self.iou_threshold, self.k, class_agnostic=self.class_agnostic)
        slots, counts = d.pack(kept, groups, n, self.k)
        used = slots >= 0  # row-major: image by image, best first, the order of ``kept``
        out_boxes = np.zeros((n, self.k, 4), np.float32)
        out_boxes[used] = d.to_original(boxes[kept], geometry[groups[kept]])
        out_scores = np.zeros((n, self.k), np.float32)
        out_scores[used] = scores[kept]
        out_classes = np.full((n, self.k), -1, np.int64)
        out_classes[used] = classes[kept]
        result = {"boxes": out_boxes, "classes": self.labels[out_classes], "scores": out_scores,
                  "count": counts.reshape(-1, 1)}
        if self.unsafe is not None:
            worst = np.zeros(n, np.float32)
            flagged = self.unsafe[classes]
            np.maximum.at(worst, groups[flagged], scores[flagged])
            result["verdict"] = _VERDICTS[(worst >= self.unsafe_threshold).astype(np.intp)].reshape(-1, 1)
            result["unsafe_score"] = worst.reshape(-1, 1)
        return result

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        return self.detect(inputs)


def vision_detect(directory: Path, params: dict[str, Any]) -> DetectProgram:
    return DetectProgram(directory, params)
