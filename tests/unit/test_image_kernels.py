"""kernels.image: every kernel against a NumPy/SciPy reference or a hand count, and the quality score on the two
real photos of scikit-learn's sample images against blurred, noisy, darkened and cropped copies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
from numpy.typing import NDArray
from scipy.signal import convolve2d
from sklearn.datasets import load_sample_images

from kernels import image as im

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet's
STD = np.array([0.229, 0.224, 0.225], np.float32)
LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float64)
COMPONENT = {name: i for i, name in enumerate(im.QUALITY_COMPONENTS)}


@pytest.fixture(scope="module")
def photos() -> dict[str, U8]:
    data = load_sample_images()
    names = [path.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".jpg") for path in data.filenames]
    return dict(zip(names, data.images, strict=True))


def random_plane(seed: int, shape: tuple[int, int]) -> F32:
    """A smooth gradient plus texture, 0..255, float32."""
    rng = np.random.default_rng(seed)
    ii, jj = np.indices(shape)
    plane = 100.0 + 0.5 * ii - 0.3 * jj + rng.normal(0.0, 20.0, shape)
    return np.clip(plane, 0.0, 255.0).astype(np.float32)


# --- references ----------------------------------------------------------------------------------------------


def to_tensor_reference(images: U8, mean: F32, std: F32) -> F32:
    x = (images.astype(np.float32) / np.float32(255.0) - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def gray_reference(image: U8) -> F32:
    luma: F64 = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return luma.astype(np.float32)


def noise_sigma_reference(g: F32) -> float:
    """Immerkær's formula with the mask spelt out as shifted slices."""
    x = g.astype(np.float64)
    H, W = x.shape
    if H < 3 or W < 3:
        return 0.0

    def at(di: int, dj: int) -> F64:
        return x[1 + di:H - 1 + di, 1 + dj:W - 1 + dj]

    conv = (at(-1, -1) + at(-1, 1) + at(1, -1) + at(1, 1)
            - 2.0 * (at(-1, 0) + at(1, 0) + at(0, -1) + at(0, 1)) + 4.0 * at(0, 0))
    total = float(np.abs(conv).sum())
    return float(math.sqrt(math.pi / 2.0) / (6.0 * (W - 2) * (H - 2)) * total)


# --- to_tensor -----------------------------------------------------------------------------------------------


def test_to_tensor_matches_numpy(photos: dict[str, U8]) -> None:
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, 7, 5, 3), dtype=np.uint8)
    batch[0, 0, 0] = [0, 128, 255]
    out = im.to_tensor(batch, MEAN, STD)
    assert out.dtype == np.float32 and out.shape == (3, 3, 7, 5)
    np.testing.assert_allclose(out, to_tensor_reference(batch, MEAN, STD), rtol=1e-6, atol=1e-6)

    real = np.stack([photos["china"][:32, :48], photos["flower"][100:132, 200:248]])
    np.testing.assert_allclose(im.to_tensor(real, MEAN, STD), to_tensor_reference(real, MEAN, STD),
                               rtol=1e-6, atol=1e-6)
    assert im.to_tensor(batch[:0], MEAN, STD).shape == (0, 3, 7, 5)


def test_to_tensor_writes_into_out() -> None:
    batch = (np.arange(2 * 4 * 6 * 3) % 256).astype(np.uint8).reshape(2, 4, 6, 3)
    out = np.full((2, 3, 4, 6), np.nan, np.float32)
    result = im.to_tensor(batch, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], out=out)  # list parameters read as float32
    assert result is out
    half, quarter = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    np.testing.assert_allclose(out, to_tensor_reference(batch, half, quarter), rtol=1e-6, atol=1e-6)


def test_to_tensor_rejects_bad_arrays() -> None:
    batch = np.zeros((1, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="out must be"):
        im.to_tensor(batch, MEAN, STD, out=np.empty((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        im.to_tensor(batch, MEAN, STD, out=np.empty((1, 3, 4, 4), np.float64))
    with pytest.raises(ValueError, match="images must be"):
        im.to_tensor(batch[0], MEAN, STD)
    with pytest.raises(ValueError, match="images must be"):
        im.to_tensor(batch.astype(np.float32), MEAN, STD)
    with pytest.raises(ValueError, match="mean and std"):
        im.to_tensor(batch, MEAN[:2], STD)


# --- measures against references -----------------------------------------------------------------------------


def test_gray_matches_numpy(photos: dict[str, U8]) -> None:
    for image in photos.values():
        g = im.gray(image)
        assert g.dtype == np.float32 and g.shape == image.shape[:2]
        np.testing.assert_allclose(g, gray_reference(image), rtol=0, atol=1e-4)
    white = np.full((2, 2, 3), 255, np.uint8)
    np.testing.assert_allclose(im.gray(white), 255.0, atol=1e-4)


def test_laplacian_variance_matches_valid_convolution(photos: dict[str, U8]) -> None:
    planes = [im.gray(photos["china"]), random_plane(1, (37, 53)), random_plane(2, (3, 3)), random_plane(3, (3, 9))]
    for g in planes:
        expected = convolve2d(g.astype(np.float64), LAPLACIAN, mode="valid").var()
        assert im.laplacian_variance(g) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    flat = np.full((10, 12), 77.0, np.float32)
    assert im.laplacian_variance(flat) == 0.0


def test_noise_sigma_matches_immerkaer(photos: dict[str, U8]) -> None:
    for g in [im.gray(photos["flower"]), random_plane(4, (41, 29)), random_plane(5, (3, 3))]:
        assert im.noise_sigma(g) == pytest.approx(noise_sigma_reference(g), rel=1e-9, abs=1e-9)
    # the estimator's point: on a flat plane with Gaussian noise it reads the noise's sigma
    rng = np.random.default_rng(6)
    noisy = (128.0 + rng.normal(0.0, 10.0, (256, 256))).astype(np.float32)
    assert im.noise_sigma(noisy) == pytest.approx(10.0, rel=0.03)
    assert im.noise_sigma(np.full((8, 8), 3.0, np.float32)) == 0.0


def test_exposure_by_hand() -> None:
    g = np.array([[0.0, 5.0, 5.5, 100.0],
                  [249.5, 250.0, 255.0, 6.0],
                  [4.0, 128.0, 200.0, 251.0]], np.float32)
    mean, dark, bright = im.exposure(g)
    assert mean == pytest.approx(float(g.astype(np.float64).sum()) / 12 / 255, rel=1e-12)
    assert dark == pytest.approx(3 / 12)  # 0, 5, 4
    assert bright == pytest.approx(3 / 12)  # 250, 255, 251
    assert im.exposure(np.zeros((0, 3), np.float32)) == (0.0, 0.0, 0.0)


def test_quality_features_compose_the_measures(photos: dict[str, U8]) -> None:
    image = photos["china"]
    g = im.gray(image)
    f = im.quality_features(image)
    assert f.dtype == np.float64 and f.shape == (len(im.QUALITY_FEATURES),)
    expected = [im.laplacian_variance(g), *im.exposure(g), im.noise_sigma(g), 427.0]
    np.testing.assert_allclose(f, expected, rtol=1e-12)


# --- quality score -------------------------------------------------------------------------------------------


def test_quality_score_mappings() -> None:
    features = np.array([
        [100.0, 0.5, 0.0, 0.0, 10.0, 224.0],  # every documented half point / full mark
        [900.0, 0.25, 0.05, 0.05, 0.0, 448.0],
        [0.0, 0.0, 1.0, 0.0, 20.0, 112.0],  # flat black
    ])
    score, comp = im.quality_score(features)
    assert comp.shape == (3, 4) and score.shape == (3,)
    np.testing.assert_allclose(comp[0], [0.5, 1.0, 0.5, 1.0])
    np.testing.assert_allclose(comp[1], [0.9, 0.75 * 0.8, 1.0, 1.0])
    np.testing.assert_allclose(comp[2], [0.0, 0.0, 0.2, 0.5])
    np.testing.assert_allclose(score, np.prod(comp, axis=1) ** 0.25)
    np.testing.assert_allclose(score[0], math.sqrt(0.5))
    assert im.quality_score(features, min_side=112.0)[1][2, COMPONENT["resolution"]] == 1.0

    rng = np.random.default_rng(7)
    random = np.column_stack([rng.uniform(0, 1e4, 50), rng.uniform(0, 1, 50), rng.uniform(0, 0.6, 50),
                              rng.uniform(0, 0.6, 50), rng.uniform(0, 50, 50), rng.uniform(0, 1000, 50)])
    score, comp = im.quality_score(random)
    assert np.all((comp >= 0.0) & (comp <= 1.0)) and np.all((score >= 0.0) & (score <= 1.0))
    assert im.quality_score(np.zeros((0, 6)))[0].shape == (0,)
    with pytest.raises(ValueError, match="features must be"):
        im.quality_score(np.zeros(6))
    with pytest.raises(ValueError, match="min_side"):
        im.quality_score(features, min_side=0.0)


def degraded(image: U8) -> dict[str, U8]:
    rng = np.random.default_rng(8)
    h, w = image.shape[:2]
    return {
        "blur": np.stack([ndi.gaussian_filter(image[..., c], sigma=3) for c in range(3)], axis=-1),
        "noise": np.clip(image + rng.normal(0.0, 25.0, image.shape), 0, 255).astype(np.uint8),
        "dark": (image * 0.15).astype(np.uint8),
        "crop": np.ascontiguousarray(image[h // 2 - 32:h // 2 + 32, w // 2 - 32:w // 2 + 32]),
    }


@pytest.mark.parametrize("name", ["china", "flower"])
def test_quality_on_real_photos(photos: dict[str, U8], name: str) -> None:
    variants = {"original": photos[name], **degraded(photos[name])}
    features = np.stack([im.quality_features(v) for v in variants.values()])
    score, comp = im.quality_score(features)
    row = {key: i for i, key in enumerate(variants)}
    orig = row["original"]
    noise = im.QUALITY_FEATURES.index("noise")

    assert comp[row["blur"], COMPONENT["sharpness"]] < 0.2 * comp[orig, COMPONENT["sharpness"]]
    assert features[row["noise"], noise] > features[orig, noise] + 5.0
    assert comp[row["noise"], COMPONENT["noise"]] < comp[orig, COMPONENT["noise"]] - 0.2
    assert comp[row["dark"], COMPONENT["exposure"]] < comp[orig, COMPONENT["exposure"]] - 0.3
    assert comp[row["crop"], COMPONENT["resolution"]] == pytest.approx(64 / 224)
    assert comp[orig, COMPONENT["resolution"]] == 1.0
    for key in ("blur", "noise", "dark", "crop"):
        assert score[row[key]] < score[orig] - 0.1, key


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (5, 2), (3, 3), (0, 4)])
def test_tiny_images(shape: tuple[int, int]) -> None:
    image = (np.arange(shape[0] * shape[1] * 3) * 37 % 256).astype(np.uint8).reshape(*shape, 3)
    f = im.quality_features(image)
    assert np.all(np.isfinite(f)) and f[im.QUALITY_FEATURES.index("min_side")] == min(shape)
    if min(shape) < 3:
        assert f[0] == 0.0 and f[4] == 0.0
    score, comp = im.quality_score(f[None, :])
    assert np.all(np.isfinite(comp)) and 0.0 <= score[0] <= 1.0
    assert im.to_tensor(image[None], MEAN, STD).shape == (1, 3, *shape)


def test_warm_up_covers_read_only_images() -> None:
    im.warm_up()
    compiled = len(im.quality_features.signatures), len(im.gray.signatures)
    image = np.zeros((6, 7, 3), np.uint8)
    image.flags.writeable = False  # like np.asarray of a decoded PIL image
    im.quality_features(image)
    im.to_tensor(image[None], MEAN, STD)
    assert (len(im.quality_features.signatures), len(im.gray.signatures)) == compiled
