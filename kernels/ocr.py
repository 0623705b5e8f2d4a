"""OCR post-processing: pure array functions for a DB text detector and a CTC line recogniser (PP-OCR style).

``db_boxes``       a DB probability map ``[H, W]`` -> text rectangles ``[M, 4, 2]`` (corners in map pixels, turned
                   along each component's principal axis, so a slightly skewed line is cut straight) and their
                   scores ``[M]``: threshold, optional 2x2 dilation, 8-connected components
                   (``scipy.ndimage.label``), per-component moments, extents and mean probability by ``bincount``
                   / ``reduceat`` (no loop over components), then each rectangle grown by
                   ``area * ratio / perimeter`` on every side ("unclip": for a rectangle, exactly the bounding
                   rectangle of the polygon offset with round joins).
``quad_bounds``    corners ``[M, 4, 2]`` -> axis-aligned boxes ``[M, 4]`` (x1, y1, x2, y2).
``reading_order``  boxes -> the order to read them (rows top to bottom, left to right inside a row) and the row of
                   each box in that order.
``ctc_greedy``     per-step class probabilities ``[N, T, C]`` of a CTC recogniser -> the kept class indices of each
                   line (best class per step, repeats merged, blanks dropped), their count and the line's
                   confidence (mean probability of the kept steps), vectorised over the batch.
``edit_distance``  Levenshtein distance between two integer sequences (one NumPy pass per row).

Everything here is NumPy/SciPy and vectorised over pixels, components, lines or a DP row: no numba, because nothing
here has a per-element Python loop left to compile (labelling is ``scipy.ndimage`` in C, decoding a handful of
array operations on ``[N, T]``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["ctc_greedy", "db_boxes", "edit_distance", "quad_bounds", "reading_order"]

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as contour tracing sees a component


def db_boxes(prob: ArrayLike, thresh: float = 0.3, box_thresh: float = 0.5, unclip_ratio: float = 1.6,
             min_size: float = 3.0, max_candidates: int = 1000,
             dilate: bool = True) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Text boxes of a DB probability map (float ``[H, W]``, values 0..1), as turned rectangles.

    Pixels above ``thresh`` form the text kernels (grown by one pixel right and down when ``dilate``); each
    8-connected component (``scipy.ndimage.label``) is one candidate, scored by its mean probability. Its
    rectangle follows the component's principal axis (second moments; kept level for a component less than
    twice as long as wide, whose axis says little) and spans its pixels; the rectangle is kept when the score
    reaches ``box_thresh`` and its shorter side ``min_size`` (``min_size + 2`` after growing every side by
    ``area * unclip_ratio / perimeter``). At most ``max_candidates`` components are considered (the first in
    raster order). Coordinates are continuous (pixel ``i`` spans ``[i, i + 1)``), clipped to the map.

    Returns float32 ``[M, 4, 2]`` corners (x, y): top-left, top-right, bottom-right, bottom-left in the
    rectangle's own frame (turned by at most 45 degrees either way, so a vertical line is taller than wide),
    and float32 ``[M]`` scores, in raster order of the components.
    """
    from scipy import ndimage

    p = np.asarray(prob, dtype=np.float32)
    if p.ndim != 2:
        raise ValueError(f"prob must be a 2-D map, got shape {p.shape}")
    mask = p > thresh
    if dilate:  # max over the 2x2 neighbourhood above-left: the mask grows one pixel right and down
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        mask = grown.copy()
        mask[:, 1:] |= grown[:, :-1]
    labels, n = ndimage.label(mask, structure=_EIGHT)
    n = min(n, int(max_candidates))
    ys, xs = np.nonzero((labels > 0) & (labels <= n))
    if n == 0:
        return np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32)
    lab = labels[ys, xs] - 1
    x, y = xs + 0.5, ys + 0.5  # pixel centres
    count = np.bincount(lab, minlength=n).astype(np.float64)
    scores = np.bincount(lab, weights=p[ys, xs], minlength=n) / count
    dx, dy = x - (np.bincount(lab, x, n) / count)[lab], y - (np.bincount(lab, y, n) / count)[lab]
    sxx, syy, sxy = (np.bincount(lab, d, n) / count for d in (dx * dx, dy * dy, dx * dy))
    theta = _level_angle(sxx, syy, sxy)
    c, s = np.cos(theta), np.sin(theta)
    u, v = x * c[lab] + y * s[lab], y * c[lab] - x * s[lab]  # along and across the rectangle
    by_label = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[by_label], np.arange(n))
    u0, u1 = (f.reduceat(u[by_label], starts) for f in (np.minimum, np.maximum))
    v0, v1 = (f.reduceat(v[by_label], starts) for f in (np.minimum, np.maximum))
    w, h = u1 - u0 + 1.0, v1 - v0 + 1.0
    grow = w * h * unclip_ratio / (2.0 * (w + h))
    keep = (np.minimum(w, h) >= min_size) & (scores >= box_thresh) & (np.minimum(w, h) + 2 * grow >= min_size + 2)
    u0, u1 = u0[keep] - 0.5 - grow[keep], u1[keep] + 0.5 + grow[keep]
    v0, v1 = v0[keep] - 0.5 - grow[keep], v1[keep] + 0.5 + grow[keep]
    c, s = c[keep, None], s[keep, None]
    cu, cv = np.stack([u0, u1, u1, u0], axis=1), np.stack([v0, v0, v1, v1], axis=1)
    corners = np.stack([cu * c - cv * s, cu * s + cv * c], axis=2)
    corners = np.clip(corners, 0.0, np.array([p.shape[1], p.shape[0]], dtype=np.float64))
    return corners.astype(np.float32), scores[keep].astype(np.float32)


def _level_angle(sxx: NDArray[np.float64], syy: NDArray[np.float64],
                 sxy: NDArray[np.float64]) -> NDArray[np.float64]:
    """The principal axis of each component's second moments, folded into (-45, 45] degrees (radians); 0 where
    the larger variance is under 4 times the smaller (a blob less than about twice as long as wide)."""
    phi = 0.5 * np.arctan2(2.0 * sxy, sxx - syy)
    theta = np.where(phi > np.pi / 4, phi - np.pi / 2, np.where(phi <= -np.pi / 4, phi + np.pi / 2, phi))
    half, spread = (sxx + syy) / 2, np.sqrt(((sxx - syy) / 2) ** 2 + sxy ** 2)
    return np.where(half + spread >= 4.0 * (half - spread), theta, 0.0)


def quad_bounds(quads: ArrayLike) -> NDArray[np.float32]:
    """Axis-aligned bounds ``[M, 4]`` (x1, y1, x2, y2) of quadrilaterals ``[M, 4, 2]``."""
    q = np.asarray(quads, dtype=np.float32).reshape(-1, 4, 2)
    return np.concatenate([q.min(axis=1), q.max(axis=1)], axis=1)


def reading_order(boxes: ArrayLike, row_tolerance: float = 0.5) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Reading order of boxes ``[M, 4]`` (x1, y1, x2, y2): by vertical centre, a new row wherever the next centre
    lies more than ``row_tolerance`` times the median box height below the previous one, then left to right in
    each row. Returns (``order`` [M] indices into ``boxes``, ``rows`` [M] row number of each box in that order)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    centre = (b[:, 1] + b[:, 3]) / 2
    tolerance = row_tolerance * float(np.median(b[:, 3] - b[:, 1]))
    by_y = np.argsort(centre, kind="stable")
    row_of_sorted = np.concatenate([[0], np.cumsum(np.diff(centre[by_y]) > tolerance)])
    rows = np.empty(len(b), np.intp)
    rows[by_y] = row_of_sorted
    order = np.lexsort((b[:, 0], rows))
    return order.astype(np.intp), rows[order]


def ctc_greedy(probs: ArrayLike, steps: ArrayLike | None = None,
               blank: int = 0) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.float32]]:
    """Greedy CTC decoding of a batch of per-step class probabilities ``[N, T, C]``.

    Each step's best class is kept unless it is ``blank`` or repeats the previous step's class; only the first
    ``steps[i]`` steps of line ``i`` count (the rest is padding; all ``T`` when ``steps`` is None). Returns
    ``tokens`` int32 ``[N, T]`` (the kept classes first, then -1), ``lengths`` int32 ``[N]`` and ``confidence``
    float32 ``[N]``: the mean probability of the kept steps, 0 for an empty line.
    """
    p = np.asarray(probs)
    if p.ndim != 3:
        raise ValueError(f"probs must be [N, T, C], got shape {p.shape}")
    n, t, _ = p.shape
    best = p.argmax(axis=2)
    top = np.take_along_axis(p, best[:, :, None], axis=2)[:, :, 0].astype(np.float64)
    keep = best != blank
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    if steps is not None:
        keep &= np.arange(t)[None, :] < np.asarray(steps).reshape(-1, 1)
    lengths = keep.sum(axis=1)
    confidence = np.where(lengths > 0, (top * keep).sum(axis=1) / np.maximum(lengths, 1), 0.0)
    first = np.argsort(~keep, axis=1, kind="stable")  # kept steps first, each group in time order
    tokens = np.where(np.arange(t)[None, :] < lengths[:, None], np.take_along_axis(best, first, axis=1), -1)
    return tokens.astype(np.int32).reshape(n, t), lengths.astype(np.int32), confidence.astype(np.float32)


def edit_distance(a: ArrayLike, b: ArrayLike) -> int:
    """Levenshtein distance (insertions, deletions, substitutions, each 1) between two 1-D integer sequences.

    One row of the dynamic programme per element of ``a``; inside a row the insertion chain
    ``d[j] = min(c[j], d[j-1] + 1)`` is ``min_k<=j (c[k] - k) + j``, a running minimum.
    """
    x, y = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if len(x) == 0 or len(y) == 0:
        return int(max(len(x), len(y)))
    ramp = np.arange(len(y) + 1)
    row = ramp.copy()
    for ch in x:
        cand = np.empty_like(row)
        cand[0] = row[0] + 1
        cand[1:] = np.minimum(row[1:] + 1, row[:-1] + (y != ch))
        row = np.minimum.accumulate(cand - ramp) + ramp
    return int(row[-1])
