"""Kernels of the image family: model input tensors and no-reference image quality measures.

Images are uint8 RGB in HWC order (``[H, W, 3]``, a batch ``[N, H, W, 3]``); luma planes are float32 ``[H, W]``
in 0..255.  Every kernel loops in one thread and accepts empty and tiny images.

Model input:

``to_tensor``           uint8 ``[N, H, W, 3]`` -> float32 ``[N, 3, H, W]``, ``(x / 255 - mean[c]) / std[c]``,
                        optionally into a given ``out``.

Quality measures (on a luma plane):

``gray``                ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``.
``laplacian_variance``  variance of the 4-neighbour Laplacian over the interior pixels (the usual blur measure:
                        low = blurry).
``exposure``            ``(mean / 255, fraction <= 5, fraction >= 250)``: brightness, crushed shadows, blown
                        highlights.
``noise_sigma``         Immerkær's fast estimate of the standard deviation of additive Gaussian noise.

``quality_features``    the five measures and the short side of one image, ``float64 [6]`` named by
                        ``QUALITY_FEATURES``.
``quality_score``       (NumPy) rows of features -> a 0-1 score and its components, named by
                        ``QUALITY_COMPONENTS``.

The kernels compile on first call; :func:`warm_up` does it ahead.
"""

from __future__ import annotations

import math
from typing import Final, TypeAlias

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

__all__ = ["QUALITY_COMPONENTS", "QUALITY_FEATURES", "exposure", "gray", "laplacian_variance", "noise_sigma",
           "quality_features", "quality_score", "to_tensor", "warm_up"]

_F64: TypeAlias = NDArray[np.float64]
_F32: TypeAlias = NDArray[np.float32]
_U8: TypeAlias = NDArray[np.uint8]

QUALITY_FEATURES: Final[tuple[str, ...]] = ("sharpness", "brightness", "dark", "bright", "noise", "min_side")
QUALITY_COMPONENTS: Final[tuple[str, ...]] = ("sharpness", "exposure", "noise", "resolution")

_LUMA_R: Final = 0.299
_LUMA_G: Final = 0.587
_LUMA_B: Final = 0.114
_DARK_LEVEL: Final = 5.0  # luma <= this counts as a crushed shadow
_BRIGHT_LEVEL: Final = 250.0  # luma >= this counts as a blown highlight

_SHARPNESS_HALF: Final = 100.0  # Laplacian variance scoring 0.5 (the customary blur threshold)
_CLIPPED_ZERO: Final = 0.5  # clipped fraction (dark + bright) scoring 0
_NOISE_HALF: Final = 10.0  # noise sigma (luma levels) scoring 0.5


# --- model input ---------------------------------------------------------------------------------------------


@njit(cache=False, nogil=True)
def _to_tensor_into(images: _U8, mean: _F32, std: _F32, out: _F32) -> None:
    """``out[n, c, h, w] = (images[n, h, w, c] / 255 - mean[c]) / std[c]`` through a 3 x 256 table, each entry
    computed in float64 and rounded once."""
    lut = np.empty((3, 256), np.float32)
    for c in range(3):
        for v in range(256):
            lut[c, v] = (v / 255.0 - np.float64(mean[c])) / np.float64(std[c])
    for n in range(images.shape[0]):
        for c in range(3):
            for h in range(images.shape[1]):
                for w in range(images.shape[2]):
                    out[n, c, h, w] = lut[c, images[n, h, w, c]]


def to_tensor(images: _U8, mean: ArrayLike, std: ArrayLike, out: _F32 | None = None) -> _F32:
    """uint8 ``[N, H, W, 3]`` RGB -> float32 ``[N, 3, H, W]`` with ``(x / 255 - mean[c]) / std[c]``; ``mean`` and
    ``std`` are 3 values (read as float32).  Written into ``out`` (float32 ``[N, 3, H, W]``) when given, which is
    returned.  A wrong dtype or shape raises ``ValueError``."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    mean32 = np.ascontiguousarray(mean, np.float32).reshape(-1)
    std32 = np.ascontiguousarray(std, np.float32).reshape(-1)
    if mean32.shape != (3,) or std32.shape != (3,):
        raise ValueError(f"mean and std must hold 3 values, got {mean32.shape} and {std32.shape}")
    n, h, w, _ = images.shape
    if out is None:
        out = np.empty((n, 3, h, w), np.float32)
    elif out.dtype != np.float32 or out.shape != (n, 3, h, w):
        raise ValueError(f"out must be float32 {(n, 3, h, w)}, got {out.dtype} {out.shape}")
    _to_tensor_into(images, mean32, std32, out)
    return out


# --- quality measures ----------------------------------------------------------------------------------------


@njit(cache=False, nogil=True)
def gray(image: _U8) -> _F32:
    """BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of a uint8 ``[H, W, 3]`` image: float32 ``[H, W]``, 0..255."""
    out = np.empty((image.shape[0], image.shape[1]), np.float32)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            out[i, j] = _LUMA_R * image[i, j, 0] + _LUMA_G * image[i, j, 1] + _LUMA_B * image[i, j, 2]
    return out


@njit(cache=False, nogil=True)
def _laplacian(g: _F32, i: int, j: int) -> float:
    """``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` at the interior pixel ``(i, j)``, in float64."""
    return (np.float64(g[i - 1, j]) + np.float64(g[i + 1, j]) + np.float64(g[i, j - 1]) + np.float64(g[i, j + 1])
            - 4.0 * np.float64(g[i, j]))


@njit(cache=False, nogil=True)
def laplacian_variance(g: _F32) -> float:
    """Population variance of the 4-neighbour Laplacian over the ``(H - 2) x (W - 2)`` interior pixels (valid
    convolution, no padding); 0 when the image is smaller than 3 x 3.  Two passes (mean, then squared
    deviations), so large flat images do not lose precision."""
    H, W = g.shape
    if H < 3 or W < 3:
        return 0.0
    total = 0.0
    for i in range(1, H - 1):
        for j in range(1, W - 1):
            total += _laplacian(g, i, j)
    count = (H - 2) * (W - 2)
    mu = total / count
    ss = 0.0
    for i in range(1, H - 1):
        for j in range(1, W - 1):
            d = _laplacian(g, i, j) - mu
            ss += d * d
    return float(ss / count)


@njit(cache=False, nogil=True)
def exposure(g: _F32) -> tuple[float, float, float]:
    """``(mean / 255, fraction of pixels <= 5, fraction >= 250)`` of a luma plane; zeros for an empty one."""
    count = g.shape[0] * g.shape[1]
    if count == 0:
        return 0.0, 0.0, 0.0
    total = 0.0
    dark = 0
    bright = 0
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            v = np.float64(g[i, j])
            total += v
            if v <= _DARK_LEVEL:
                dark += 1
            if v >= _BRIGHT_LEVEL:
                bright += 1
    return total / count / 255.0, dark / count, bright / count


@njit(cache=False, nogil=True)
def noise_sigma(g: _F32) -> float:
    """Immerkær (1996), "Fast noise variance estimation": ``sqrt(pi / 2) / (6 (W - 2) (H - 2)) * sum |I * M|``
    with ``M = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` over the interior pixels, in luma levels; 0 when the image
    is smaller than 3 x 3.  ``M`` (the difference of two Laplacians) cancels smooth structure, not edges, so
    textured images read a little noisy."""
    H, W = g.shape
    if H < 3 or W < 3:
        return 0.0
    total = 0.0
    for i in range(1, H - 1):
        for j in range(1, W - 1):
            corners = (np.float64(g[i - 1, j - 1]) + np.float64(g[i - 1, j + 1]) + np.float64(g[i + 1, j - 1])
                       + np.float64(g[i + 1, j + 1]))
            edges = (np.float64(g[i - 1, j]) + np.float64(g[i + 1, j]) + np.float64(g[i, j - 1])
                     + np.float64(g[i, j + 1]))
            total += abs(corners - 2.0 * edges + 4.0 * np.float64(g[i, j]))
    return float(math.sqrt(0.5 * math.pi) / (6.0 * (W - 2) * (H - 2)) * total)


@njit(cache=False, nogil=True)
def quality_features(image: _U8) -> _F64:
    """float64 ``[6]`` of a uint8 ``[H, W, 3]`` image, named by ``QUALITY_FEATURES``: Laplacian variance, mean
    luma / 255, dark fraction, bright fraction, noise sigma (all on :func:`gray`) and ``min(H, W)``."""
    g = gray(image)
    out = np.empty(6)
    out[0] = laplacian_variance(g)
    out[1], out[2], out[3] = exposure(g)
    out[4] = noise_sigma(g)
    out[5] = min(image.shape[0], image.shape[1])
    return out


def quality_score(features: _F64, min_side: float = 224.0) -> tuple[_F64, _F64]:
    """``(score [N], components [N, 4])`` of feature rows ``[N, 6]`` from :func:`quality_features`; every value
    in [0, 1], higher is better, components named by ``QUALITY_COMPONENTS``:

    ``sharpness``   ``v / (v + 100)`` of the Laplacian variance ``v``: 0.5 at the customary blur threshold 100,
                    0.9 at 900, 0 for a flat (or smaller than 3 x 3) image.
    ``exposure``    ``(1 - (2 |m - 0.5|)^2) * (1 - min(1, (dark + bright) / 0.5))`` of the mean luma ``m``
                    (0..1) and the clipped fractions: 1 for a mid-grey mean and nothing clipped, 0.75 at
                    ``m = 0.25`` or 0.75, 0 for an all black or white image; 10 % clipped pixels cost 20 %, half
                    the image clipped costs everything.
    ``noise``       ``1 / (1 + (sigma / 10)^2)`` of the noise sigma in luma levels: 0.5 at sigma 10, 0.2 at 20.
    ``resolution``  ``min(1, min_side_px / min_side)``: 1 from a short side of ``min_side`` pixels (a model's
                    input size) up.

    ``score`` is the geometric mean of the four components, so any one of them near 0 pulls it near 0.  NaN
    features give NaN.  A ``features`` array not ``[N, 6]`` or ``min_side <= 0`` raises ``ValueError``."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[1] != len(QUALITY_FEATURES):
        raise ValueError(f"features must be [N, {len(QUALITY_FEATURES)}], got {x.shape}")
    if not min_side > 0.0:
        raise ValueError(f"min_side must be > 0, got {min_side}")
    lapvar, mean, dark, bright, sigma, side = x.T
    comp = np.empty((x.shape[0], len(QUALITY_COMPONENTS)))
    lapvar = np.maximum(lapvar, 0.0)
    comp[:, 0] = lapvar / (lapvar + _SHARPNESS_HALF)
    mean_term = 1.0 - np.minimum((2.0 * (mean - 0.5)) ** 2, 1.0)
    clip_term = 1.0 - np.minimum((dark + bright) / _CLIPPED_ZERO, 1.0)
    comp[:, 1] = mean_term * np.maximum(clip_term, 0.0)
    comp[:, 2] = 1.0 / (1.0 + (sigma / _NOISE_HALF) ** 2)
    comp[:, 3] = np.clip(side / min_side, 0.0, 1.0)
    score = np.prod(comp, axis=1) ** 0.25
    return score, comp


def warm_up() -> None:
    """Compile every kernel now (a few seconds) rather than on the first real image: for C-contiguous images both
    writeable and read-only (numba compiles each apart; ``np.asarray`` of a PIL image is read-only)."""
    images = (np.arange(2 * 4 * 5 * 3) % 256).astype(np.uint8).reshape(2, 4, 5, 3)
    frozen = images.copy()
    frozen.flags.writeable = False
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    for batch in (images, frozen):
        to_tensor(batch, mean, std)
        quality_score(quality_features(batch[0])[None, :])
