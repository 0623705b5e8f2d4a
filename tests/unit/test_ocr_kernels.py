"""kernels.ocr: text rectangles from synthetic DB probability maps (level, turned, vertical, weak, tiny, at the
border), reading order, greedy CTC decoding of constructed probabilities (repeats, blanks, padding, empty lines)
against a per-line reference, the edit distance / CER against a plain dynamic programme, and the install hint
when rapidocr (whose model files the OCR model is built from) is absent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infer.tasks.vision.ocr import cer, default_models
from kernels.ocr import ctc_greedy, db_boxes, edit_distance, quad_bounds, reading_order


def _grown(w: float, h: float, ratio: float = 1.6) -> float:
    return w * h * ratio / (2 * (w + h))


def test_a_level_rectangle_gives_its_box_grown_by_area_ratio_over_perimeter() -> None:
    prob = np.zeros((60, 120), np.float32)
    prob[10:20, 20:80] = 0.9  # 60 x 10 pixels
    quads, scores = db_boxes(prob, dilate=False)
    assert quads.shape == (1, 4, 2) and scores.shape == (1,)
    assert scores[0] == pytest.approx(0.9)
    d = _grown(60, 10)
    np.testing.assert_allclose(quad_bounds(quads)[0], [20 - d, 10 - d, 80 + d, 20 + d], atol=1e-4)
    tl, tr, br, bl = quads[0]
    assert tl[0] < tr[0] and tl[1] < bl[1] and br[0] == pytest.approx(tr[0]) and br[1] == pytest.approx(bl[1])


def test_dilation_grows_the_kernel_one_pixel_right_and_down() -> None:
    prob = np.zeros((60, 120), np.float32)
    prob[10:20, 20:80] = 0.9
    quads, scores = db_boxes(prob, dilate=True)
    d = _grown(61, 11)
    np.testing.assert_allclose(quad_bounds(quads)[0], [20 - d, 10 - d, 81 + d, 21 + d], atol=1e-4)
    assert 0.8 < scores[0] < 0.9  # the grown rim is below the threshold, and counts in the mean


def test_components_are_kept_by_score_and_size_in_raster_order() -> None:
    prob = np.zeros((100, 200), np.float32)
    prob[60:70, 10:90] = 0.95  # second in raster order
    prob[10:20, 100:180] = 0.8  # first
    prob[40:50, 10:90] = 0.4  # above thresh, below box_thresh: dropped
    prob[85:87, 150:152] = 0.99  # 2 x 2: under min_size
    quads, scores = db_boxes(prob, dilate=False)
    np.testing.assert_allclose(scores, [0.8, 0.95], rtol=1e-6)
    bounds = quad_bounds(quads)
    assert bounds[0, 0] < 100 < bounds[0, 2] and bounds[1, 1] < 60 < bounds[1, 3]
    assert len(db_boxes(prob, box_thresh=0.3, dilate=False)[0]) == 3
    assert len(db_boxes(prob, dilate=False, max_candidates=1)[0]) == 1


def test_empty_and_blank_maps_give_no_boxes() -> None:
    for prob in (np.zeros((32, 32), np.float32), np.full((32, 64), 0.2, np.float32)):
        quads, scores = db_boxes(prob)
        assert quads.shape == (0, 4, 2) and scores.shape == (0,)
    with pytest.raises(ValueError, match="2-D"):
        db_boxes(np.zeros((1, 32, 32), np.float32))


def test_a_turned_line_gets_a_turned_rectangle() -> None:
    yy, xx = np.mgrid[0:200, 0:300] + 0.5
    angle = math.radians(8.0)
    u = (xx - 150) * math.cos(angle) + (yy - 100) * math.sin(angle)
    v = (yy - 100) * math.cos(angle) - (xx - 150) * math.sin(angle)
    prob = ((np.abs(u) < 100) & (np.abs(v) < 8)).astype(np.float32)
    quads, _ = db_boxes(prob, dilate=False)
    tl, tr, _, bl = quads[0].astype(np.float64)
    assert math.degrees(math.atan2(tr[1] - tl[1], tr[0] - tl[0])) == pytest.approx(8.0, abs=0.5)
    width, height = np.linalg.norm(tr - tl), np.linalg.norm(bl - tl)
    d = _grown(200, 16)
    assert width == pytest.approx(200 + 2 * d, abs=2.5) and height == pytest.approx(16 + 2 * d, abs=2.5)


def test_a_vertical_line_is_taller_than_wide_and_a_blob_stays_level() -> None:
    prob = np.zeros((200, 100), np.float32)
    prob[20:180, 40:52] = 0.9
    prob[5:12, 80:90] = 0.9  # 10 x 7: no reliable axis
    quads, _ = db_boxes(prob, dilate=False)
    bounds = quad_bounds(quads)
    blob, bar = bounds[0], bounds[1]
    assert bar[3] - bar[1] > 5 * (bar[2] - bar[0])
    blob_quad = quads[0]
    assert blob_quad[0, 1] == pytest.approx(blob_quad[1, 1]) and blob[2] - blob[0] > blob[3] - blob[1]


def test_boxes_are_clipped_to_the_map() -> None:
    prob = np.zeros((40, 100), np.float32)
    prob[0:10, 0:60] = 0.9
    quads, _ = db_boxes(prob)
    assert quads.min() == 0.0 and (quads[..., 0] <= 100).all() and (quads[..., 1] <= 40).all()


def test_reading_order_is_rows_top_down_then_left_to_right() -> None:
    boxes = np.array([[300, 52, 400, 70],  # row 1, right
                      [10, 10, 120, 30],  # row 0, left
                      [10, 50, 200, 72],  # row 1, left (centre 61 vs 61)
                      [200, 12, 280, 31],  # row 0, right, a little lower
                      [15, 100, 90, 118]], np.float32)  # row 2
    order, rows = reading_order(boxes)
    assert order.tolist() == [1, 3, 2, 0, 4] and rows.tolist() == [0, 0, 1, 1, 2]
    empty_order, empty_rows = reading_order(np.zeros((0, 4)))
    assert len(empty_order) == 0 and len(empty_rows) == 0


def _probs(paths: list[list[int]], classes: int = 6, peak: float = 0.9) -> np.ndarray:
    """[N, T, C] probabilities putting ``peak`` on each step's class and the rest spread evenly."""
    t = max(len(p) for p in paths)
    out = np.full((len(paths), t, classes), (1 - peak) / (classes - 1), np.float32)
    for i, path in enumerate(paths):
        path = path + [0] * (t - len(path))
        out[i, np.arange(t), path] = peak
    return out


def _reference(best: list[int], steps: int) -> list[int]:
    kept, previous = [], None
    for c in best[:steps]:
        if c != 0 and c != previous:
            kept.append(c)
        previous = c
    return kept


def test_ctc_greedy_merges_repeats_and_drops_blanks() -> None:
    paths = [[1, 1, 0, 1, 2, 2, 0, 0, 3],  # a blank between repeats keeps both
             [0, 0, 0, 0],  # empty
             [4, 4, 4, 4, 4, 5, 5, 0, 5]]
    tokens, lengths, confidence = ctc_greedy(_probs(paths))
    assert lengths.tolist() == [4, 0, 3]
    assert tokens[0, :4].tolist() == [1, 1, 2, 3] and (tokens[0, 4:] == -1).all()
    assert (tokens[1] == -1).all() and confidence[1] == 0.0
    assert tokens[2, :3].tolist() == [4, 5, 5]
    np.testing.assert_allclose(confidence[[0, 2]], 0.9, rtol=1e-6)
    assert tokens.dtype == np.int32 and tokens.shape == (3, 9)


def test_ctc_greedy_confidence_is_the_mean_of_the_kept_steps() -> None:
    probs = _probs([[1, 1, 0, 2]])
    probs[0, 0, 1], probs[0, 3, 2] = 0.6, 0.8  # the first of a repeat counts, not the second
    _, _, confidence = ctc_greedy(probs)
    assert confidence[0] == pytest.approx((0.6 + 0.8) / 2)


def test_ctc_greedy_ignores_padding_steps_and_matches_a_per_line_reference() -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(7, 0.3), size=(12, 30)).astype(np.float32)
    steps = rng.integers(0, 31, size=12)
    tokens, lengths, _ = ctc_greedy(probs, steps)
    best = probs.argmax(axis=2)
    for i in range(12):
        want = _reference(best[i].tolist(), int(steps[i]))
        assert tokens[i, :lengths[i]].tolist() == want and (tokens[i, lengths[i]:] == -1).all()
    with pytest.raises(ValueError, match=r"\[N, T, C\]"):
        ctc_greedy(probs[0])


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def test_edit_distance_matches_a_plain_dynamic_programme() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = "".join(rng.choice(list("abcd"), int(rng.integers(0, 12))))
        b = "".join(rng.choice(list("abcd"), int(rng.integers(0, 12))))
        got = edit_distance(np.array([ord(c) for c in a], np.int64), np.array([ord(c) for c in b], np.int64))
        assert got == _levenshtein(a, b), (a, b)
    assert edit_distance([1, 2, 3], []) == 3 and edit_distance([], []) == 0


def test_cer_normalises_whitespace_and_width_only() -> None:
    assert cer("Total: 12.50", "Total: 12.50") == 0.0
    assert cer("line one line two", "line one\nline two") == 0.0  # layout is not scored
    assert cer("Total\uff1a12,50", "Total:12,50") == 0.0  # full-width colon
    assert cer("kitten", "sitting") == pytest.approx(3 / 7)
    assert cer("", "abcd") == 1.0 and cer("ab", "") == 2.0


def test_default_models_without_rapidocr_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'infer\[ocr\]'"):
        default_models()
