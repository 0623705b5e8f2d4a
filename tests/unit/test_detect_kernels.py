"""kernels.detect: letterbox geometry and its round trip, YOLOv8 and YOLOv5 decoding on constructed outputs,
NMS against a plain Python greedy loop on random boxes (class-aware and class-agnostic, capped), packing; the
letterboxed pixels of :func:`infer.runtimes.vision_detect.letterbox_image`."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from infer.runtimes.vision_detect import letterbox_image
from kernels import detect as d

F32 = NDArray[np.float32]


def test_letterbox_centres_and_scales_like_ultralytics() -> None:
    assert d.letterbox(100, 200, 64, 64) == (0.32, 64, 32, 0, 16)
    assert d.letterbox(100, 200, 64, 64, center=False) == (0.32, 64, 32, 0, 0)
    assert d.letterbox(640, 427, 320, 320) == (0.5, 214, 320, 53, 0)  # 106 pixels of padding, the odd one right
    assert d.letterbox(10, 10, 320, 320)[:3] == (32.0, 320, 320)  # small images are scaled up
    assert d.letterbox(1, 5000, 64, 64)[1:3] == (64, 1)  # never below a pixel
    with pytest.raises(ValueError):
        d.letterbox(0, 10, 64, 64)


@pytest.mark.parametrize("center", [True, False])
def test_boxes_round_trip_through_the_letterbox(center: bool) -> None:
    rng = np.random.default_rng(1)
    sizes = [(100, 200), (480, 640), (333, 111), (50, 50)]
    geometry = np.array([[s, px, py, w, h] for h, w in sizes
                         for s, _, _, px, py in [d.letterbox(h, w, 320, 256, center=center)]], np.float64)
    image = rng.integers(0, len(sizes), 200)
    wh = geometry[image, 3:5]
    corner = rng.uniform(0, 1, (200, 2)) * wh * 0.8
    boxes = np.concatenate([corner, corner + rng.uniform(0.01, 0.2, (200, 2)) * wh], axis=1)
    back = d.to_original(d.to_input(boxes, geometry[image]), geometry[image])
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    inside = d.to_input(boxes, geometry[image])
    assert (inside >= 0).all() and (inside[:, [0, 2]] <= 256 + 1e-6).all() and (inside[:, [1, 3]] <= 320 + 1e-6).all()


def test_boxes_are_clipped_to_the_original_image() -> None:
    geometry = np.array([[0.32, 0, 16, 200, 100]])  # 200 x 100 into 64 x 64
    out = d.to_original([[-8, 10, 12, 60], [50, 40, 70, 50]], geometry.repeat(2, 0))
    np.testing.assert_allclose(out, [[0, 0, 37.5, 100], [156.25, 75, 200, 100]])


def test_letterbox_image_pastes_the_resized_image_into_padding() -> None:
    image = np.full((100, 200, 3), 200, np.uint8)
    canvas, geometry = letterbox_image(image, 64, 64)
    assert canvas.shape == (64, 64, 3)
    assert (canvas[16:48] == 200).all() and (canvas[:16] == 114).all() and (canvas[48:] == 114).all()
    np.testing.assert_allclose(geometry, [0.32, 0, 16, 200, 100])
    canvas, geometry = letterbox_image(image, 64, 64, center=False, pad_value=0)
    assert (canvas[:32] == 200).all() and (canvas[32:] == 0).all() and geometry[2] == 0


def _v8(rows: list[tuple[float, float, float, float, list[float]]], images: int = 1) -> F32:
    """[images, 4 + C, A] from (cx, cy, w, h, class scores) per anchor, the same for every image."""
    a = np.array([[cx, cy, w, h, *cls] for cx, cy, w, h, cls in rows], np.float32).T
    return np.repeat(a[None], images, axis=0)


def test_decode_yolov8() -> None:
    out = _v8([(10, 20, 4, 6, [0.1, 0.9, 0.0]), (50, 50, 10, 10, [0.2, 0.1, 0.3]), (5, 5, 2, 2, [0.05, 0.1, 0.2])],
              images=2)
    out[1, 4:, 0] = 0.0  # the first anchor scores nothing in the second image
    groups, boxes, scores, classes = d.decode_yolo(out, 3, "yolov8", 0.25)
    np.testing.assert_array_equal(groups, [0, 0, 1])
    np.testing.assert_allclose(boxes, [[8, 17, 12, 23], [45, 45, 55, 55], [45, 45, 55, 55]])
    np.testing.assert_allclose(scores, [0.9, 0.3, 0.3])
    np.testing.assert_array_equal(classes, [1, 2, 2])
    assert boxes.dtype == scores.dtype == np.float32 and groups.dtype == np.int64


def test_decode_yolov5_multiplies_objectness() -> None:
    a = np.array([[10, 20, 4, 6, 0.9, 0.1, 0.8],  # 0.72, class 1
                  [30, 30, 8, 8, 0.2, 1.0, 0.0],  # objectness under the threshold
                  [60, 60, 2, 4, 0.5, 0.4, 0.3]], np.float32)  # 0.2: under
    out = np.stack([a, a[::-1]])
    groups, boxes, scores, classes = d.decode_yolo(out, 2, "yolov5", 0.25)
    np.testing.assert_array_equal(groups, [0, 1])
    np.testing.assert_allclose(boxes, [[8, 17, 12, 23]] * 2)
    np.testing.assert_allclose(scores, [0.72, 0.72], rtol=1e-6)
    np.testing.assert_array_equal(classes, [1, 1])


def test_decode_empty_and_wrong_shapes() -> None:
    groups, boxes, _, _ = d.decode_yolo(np.zeros((3, 6, 10), np.float32), 2, "yolov8", 0.25)
    assert groups.shape == (0,) and boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="yolov5 output"):
        d.decode_yolo(np.zeros((1, 6, 10), np.float32), 2, "yolov5", 0.25)
    with pytest.raises(ValueError, match="layout"):
        d.decode_yolo(np.zeros((1, 6, 10), np.float32), 2, "yolox", 0.25)


def test_detect_layout() -> None:
    assert d.detect_layout((1, 84, 8400), 80) == "yolov8"
    assert d.detect_layout((1, 25200, 85), 80) == "yolov5"
    assert d.detect_layout((4, 22, 2100), 18) == "yolov8"
    with pytest.raises(ValueError, match="both"):
        d.detect_layout((1, 6, 7), 2)
    with pytest.raises(ValueError, match="neither"):
        d.detect_layout((1, 25200, 85), 18)


def _reference_nms(boxes: F32, scores: F32, classes: NDArray[np.int32], groups: NDArray[np.int64], thr: float,
                   k: int, agnostic: bool) -> list[int]:
    """Plain Python: per image, by falling score (ties by index), keep unless a kept box overlaps too much."""

    def iou(a: F32, b: F32) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        if w <= 0 or h <= 0:
            return 0.0
        inter = float(w) * float(h)
        union = float(a[2] - a[0]) * float(a[3] - a[1]) + float(b[2] - b[0]) * float(b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    keep: list[int] = []
    for g in sorted(set(groups.tolist())):
        mine: list[int] = []
        for i in sorted(np.flatnonzero(groups == g).tolist(), key=lambda i: (-scores[i], i)):
            if len(mine) < k and not any((agnostic or classes[j] == classes[i]) and iou(boxes[i], boxes[j]) > thr
                                         for j in mine):
                mine.append(i)
        keep += mine
    return keep


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("agnostic", [False, True])
def test_nms_equals_the_reference_loop(seed: int, agnostic: bool) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    centre = rng.uniform(0, 100, (n, 2))
    size = rng.uniform(2, 40, (n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    scores = rng.choice(np.linspace(0.3, 1.0, 20), n).astype(np.float32)  # ties included
    classes = rng.integers(0, 3, n).astype(np.int32)
    groups = np.sort(rng.integers(0, 4, n)).astype(np.int64)
    thr, k = float(rng.choice([0.3, 0.45, 0.7])), int(rng.choice([5, 32, 1000]))
    got = d.nms(boxes, scores, classes, groups, thr, k, class_agnostic=agnostic)
    assert got.tolist() == _reference_nms(boxes, scores, classes, groups, thr, k, agnostic)


def test_nms_is_class_aware_unless_told_otherwise() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0], np.int32)
    groups = np.zeros(4, np.int64)
    assert d.nms(boxes, scores, classes, groups, 0.45, 10).tolist() == [0, 2, 3]
    assert d.nms(boxes, scores, classes, groups, 0.45, 10, class_agnostic=True).tolist() == [0, 3]
    assert d.nms(boxes, scores, classes, groups, 0.45, 2).tolist() == [0, 2]
    groups = np.array([0, 1, 1, 1], np.int64)  # another image never suppresses
    assert d.nms(boxes, scores, classes, groups, 0.45, 10, class_agnostic=True).tolist() == [0, 1, 3]
    assert d.nms(boxes[:0], scores[:0], classes[:0], groups[:0], 0.45, 10).tolist() == []


def test_pack_fills_slots_by_image() -> None:
    groups = np.array([0, 0, 2, 2, 2], np.int64)
    slots, counts = d.pack(np.array([1, 0, 4, 2]), groups, 4, 3)
    np.testing.assert_array_equal(slots, [[1, 0, -1], [-1, -1, -1], [4, 2, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(counts, [2, 0, 2, 0])
    with pytest.raises(ValueError):
        d.pack(np.array([2, 3, 4]), groups, 3, 2)
