"""Kernels of object detection: letterbox geometry, decoding YOLO outputs, non-maximum suppression.

Boxes are ``[M, 4]`` rows ``(x1, y1, x2, y2)`` in pixels. Candidates of a whole batch travel as flat arrays with
the index of their image (``groups``), so nothing loops over images in Python.

Geometry (one image scaled to fit the model's input, the rest padded, as Ultralytics' ``letterbox``):

``letterbox``       ``(height, width)`` and the input size -> ``(scale, new_w, new_h, pad_x, pad_y)``: the image
                    is resized to ``new_w x new_h`` and pasted at ``(pad_x, pad_y)``, centred or top-left.
``to_original``     input-pixel boxes -> original-pixel boxes (padding removed, divided by the scale, clipped to
                    the image), each row with its own image's geometry.
``to_input``        the inverse, for tests and for drawing.

Decoding (``LAYOUTS``):

``yolov8``          output ``[B, 4 + C, A]``: ``cx, cy, w, h`` then ``C`` class scores per anchor (YOLOv8, YOLO11,
                    anything exported by Ultralytics since v8); the score is the best class score.
``yolov5``          output ``[B, A, 5 + C]``: ``cx, cy, w, h, objectness`` then ``C`` class probabilities
                    (YOLOv5, YOLOv7); the score is objectness times the best class probability.
``detect_layout``   which of the two a shape is, from the class count.
``decode_yolo``     a batch output -> every candidate whose score exceeds a threshold: image index, box in
                    input pixels, score, class (vectorised NumPy).

Suppression:

``nms``             greedy non-maximum suppression of a whole batch in one numba call: per image, candidates in
                    order of falling score, each kept unless it overlaps a kept box of the same class (any class
                    when ``class_agnostic``) by IoU above the threshold, at most ``max_detections`` kept per image.
                    O(M x kept) with no M x M matrix: measured faster than a NumPy IoU matrix from 100 to 1000
                    candidates (see the module's tests for the reference loop it must equal).
``pack``            kept candidates -> ``[N, K]`` slots (candidate index, -1 for padding) and counts per image.

The numba kernels compile on first call; :func:`warm_up` does it ahead.
"""

from __future__ import annotations

from typing import Final, TypeAlias

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

__all__ = ["LAYOUTS", "decode_yolo", "detect_layout", "letterbox", "nms", "pack", "to_input", "to_original",
           "warm_up"]

_F32: TypeAlias = NDArray[np.float32]
_F64: TypeAlias = NDArray[np.float64]
_I64: TypeAlias = NDArray[np.int64]
_I32: TypeAlias = NDArray[np.int32]

LAYOUTS: Final[tuple[str, ...]] = ("yolov8", "yolov5")


# --- geometry ------------------------------------------------------------------------------------------------


def letterbox(height: int, width: int, input_h: int, input_w: int, *,
              center: bool = True) -> tuple[float, int, int, int, int]:
    """``(scale, new_w, new_h, pad_x, pad_y)`` to fit a ``height x width`` image into ``input_h x input_w``
    keeping its aspect ratio: ``scale = min(input_h / height, input_w / width)`` (up or down), the resized size
    rounded (at least 1 pixel), the padding split evenly when ``center`` (Ultralytics' rounding: the odd pixel
    goes right and below) or all right and below otherwise (NudeNet's). Sizes below 1 raise ``ValueError``."""
    if min(height, width, input_h, input_w) < 1:
        raise ValueError(f"sizes must be positive, got image {height}x{width} into {input_h}x{input_w}")
    scale = min(input_h / height, input_w / width)
    new_w = min(input_w, max(1, round(width * scale)))
    new_h = min(input_h, max(1, round(height * scale)))
    if not center:
        return scale, new_w, new_h, 0, 0
    return scale, new_w, new_h, round((input_w - new_w) / 2 - 0.1), round((input_h - new_h) / 2 - 0.1)


def to_original(boxes: ArrayLike, geometry: ArrayLike) -> _F32:
    """Boxes ``[M, 4]`` in input pixels -> original pixels, row by row with ``geometry`` ``[M, 5]``: ``(scale,
    pad_x, pad_y, width, height)`` of the row's image. Clipped to ``[0, width] x [0, height]``."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    g = np.asarray(geometry, np.float64).reshape(-1, 5)
    scale, pad = g[:, :1], np.tile(g[:, 1:3], 2)
    out = (b - pad) / scale
    np.clip(out, 0.0, np.tile(g[:, 3:5], 2), out=out)
    return out.astype(np.float32)


def to_input(boxes: ArrayLike, geometry: ArrayLike) -> _F64:
    """The inverse of :func:`to_original` (without clipping): original-pixel boxes -> input pixels."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    g = np.asarray(geometry, np.float64).reshape(-1, 5)
    return b * g[:, :1] + np.tile(g[:, 1:3], 2)


# --- decoding ------------------------------------------------------------------------------------------------


def detect_layout(shape: tuple[int, ...], num_classes: int) -> str:
    """``"yolov8"`` when ``shape`` is ``[B, 4 + C, A]``, ``"yolov5"`` when it is ``[B, A, 5 + C]``; neither, or
    both (a model with as many anchors as channels), raises ``ValueError`` naming what was expected."""
    if len(shape) != 3 or num_classes < 1:
        raise ValueError(f"a YOLO output is [batch, 4 + classes, anchors] or [batch, anchors, 5 + classes], "
                         f"got {list(shape)} with {num_classes} classes")
    v8, v5 = shape[1] == 4 + num_classes, shape[2] == 5 + num_classes
    if v8 and v5:
        raise ValueError(f"output {list(shape)} fits both YOLO layouts for {num_classes} classes: name the format")
    if not (v8 or v5):
        raise ValueError(f"output {list(shape)} fits neither [batch, {4 + num_classes}, anchors] (YOLOv8) nor "
                         f"[batch, anchors, {5 + num_classes}] (YOLOv5) for {num_classes} classes")
    return "yolov8" if v8 else "yolov5"


def decode_yolo(output: ArrayLike, num_classes: int, layout: str,
                score_threshold: float) -> tuple[_I64, _F32, _F32, _I32]:
    """Every anchor of a batch output whose score exceeds ``score_threshold``: ``(groups [M], boxes [M, 4],
    scores [M], classes [M])``, the image index, the box ``(x1, y1, x2, y2)`` in the model's input pixels, the
    score and the best class. Ordered by image, then anchor. A shape that does not fit ``layout`` raises
    ``ValueError``."""
    out = np.asarray(output)
    if out.dtype != np.float32:
        out = out.astype(np.float32)
    if layout == "yolov8":
        if out.ndim != 3 or out.shape[1] != 4 + num_classes:
            raise ValueError(f"yolov8 output must be [B, {4 + num_classes}, A], got {list(out.shape)}")
        best = out[:, 4:, :].max(axis=1) if out.shape[2] else np.zeros((out.shape[0], 0), np.float32)
        groups, anchors = np.nonzero(best > score_threshold)
        rows = out[groups, :, anchors]  # [M, 4 + C]
        scores, classes = best[groups, anchors], rows[:, 4:].argmax(axis=1)
    elif layout == "yolov5":
        if out.ndim != 3 or out.shape[2] != 5 + num_classes:
            raise ValueError(f"yolov5 output must be [B, A, {5 + num_classes}], got {list(out.shape)}")
        groups, anchors = np.nonzero(out[:, :, 4] > score_threshold)  # a score never exceeds its objectness
        rows = out[groups, anchors]
        probs = rows[:, 5:] * rows[:, 4:5]
        classes = probs.argmax(axis=1)
        scores = np.take_along_axis(probs, classes[:, None], axis=1)[:, 0]
        sure = scores > score_threshold
        groups, rows, scores, classes = groups[sure], rows[sure], scores[sure], classes[sure]
    else:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    half = rows[:, 2:4] * 0.5
    boxes = np.concatenate([rows[:, :2] - half, rows[:, :2] + half], axis=1)
    return (groups.astype(np.int64), boxes.astype(np.float32), scores.astype(np.float32),
            classes.astype(np.int32))


# --- suppression ---------------------------------------------------------------------------------------------


@njit(cache=False, nogil=True)
def _iou(boxes: _F32, i: int, j: int) -> float:
    """IoU of rows ``i`` and ``j`` (areas without the +1 of pixel-inclusive conventions); 0 when both are empty."""
    w = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
    h = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
    if w <= 0.0 or h <= 0.0:
        return 0.0
    inter = np.float64(w) * np.float64(h)
    a = np.float64(boxes[i, 2] - boxes[i, 0]) * np.float64(boxes[i, 3] - boxes[i, 1])
    b = np.float64(boxes[j, 2] - boxes[j, 0]) * np.float64(boxes[j, 3] - boxes[j, 1])
    union = a + b - inter
    return inter / union if union > 0.0 else 0.0


@njit(cache=False, nogil=True)
def _greedy(boxes: _F32, classes: _I32, groups: _I64, order: _I64, iou_threshold: float, max_detections: int,
            class_agnostic: bool, keep: _I64) -> int:
    """Candidates in ``order`` (by image, then falling score) into ``keep``; returns how many were kept."""
    kept = 0
    start = 0  # where the current image's kept candidates begin in ``keep``
    current = -1
    for i in order:
        if groups[i] != current:
            current = groups[i]
            start = kept
        if kept - start >= max_detections:
            continue
        suppressed = False
        for t in range(start, kept):
            j = keep[t]
            if (class_agnostic or classes[j] == classes[i]) and _iou(boxes, i, j) > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            keep[kept] = i
            kept += 1
    return kept


def nms(boxes: ArrayLike, scores: ArrayLike, classes: ArrayLike, groups: ArrayLike, iou_threshold: float,
        max_detections: int, *, class_agnostic: bool = False) -> _I64:
    """Indices of the candidates that survive greedy NMS, ordered by image then falling score (ties: the earlier
    candidate first), at most ``max_detections`` per image. A candidate is dropped when its IoU with a kept box
    of its image (and of its class, unless ``class_agnostic``) exceeds ``iou_threshold``."""
    b = np.ascontiguousarray(boxes, np.float32).reshape(-1, 4)
    s = np.asarray(scores, np.float32).reshape(-1)
    c = np.ascontiguousarray(classes, np.int32).reshape(-1)
    g = np.ascontiguousarray(groups, np.int64).reshape(-1)
    if not len(b) == len(s) == len(c) == len(g):
        raise ValueError(f"boxes, scores, classes and groups differ in length: {len(b)}, {len(s)}, {len(c)}, {len(g)}")
    if max_detections < 1 or not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"max_detections must be >= 1 and iou_threshold in [0, 1], got {max_detections}, "
                         f"{iou_threshold}")
    order = np.lexsort((-s, g)).astype(np.int64)  # stable: equal scores keep their anchor order
    keep = np.empty(len(b), np.int64)
    n = _greedy(b, c, g, order, float(iou_threshold), int(max_detections), bool(class_agnostic), keep)
    return keep[:n]


def pack(kept: ArrayLike, groups: ArrayLike, n_images: int, k: int) -> tuple[_I64, _I32]:
    """``(slots [N, K], counts [N])``: ``slots[n, r]`` is the index of image ``n``'s ``r``-th kept candidate, -1
    past its count. ``kept`` must be ordered by image (as :func:`nms` returns it) with at most ``k`` per image."""
    idx = np.asarray(kept, np.int64).reshape(-1)
    img = np.asarray(groups, np.int64).reshape(-1)[idx]
    counts = np.bincount(img, minlength=n_images).astype(np.int32)
    if len(counts) > n_images or (counts > k).any():
        raise ValueError(f"more than {k} candidates for an image, or an image index >= {n_images}")
    first = np.searchsorted(img, img, side="left")
    slots = np.full((n_images, k), -1, np.int64)
    slots[img, np.arange(len(idx)) - first] = idx
    return slots, counts


def warm_up() -> None:
    """Compile :func:`nms` now rather than at the first request."""
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    nms(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3, np.int32), np.zeros(3, np.int64), 0.5, 10)
