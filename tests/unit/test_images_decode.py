"""Decoding encoded images: formats and modes Pillow reads come out as RGB uint8; anything else is refused by
index with a reason, and an image over the pixel limit is refused before it is decoded."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from infer.errors import InvalidArgument
from infer.runtimes import images
from infer.runtimes.images import decode_image, decode_images


def _file(mode: str, fmt: str, size: tuple[int, int] = (7, 5)) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "PNG"), ("RGB", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"),
                                           ("P", "GIF"), ("RGB", "BMP"), ("RGB", "WEBP")])
def test_every_mode_and_format_comes_out_rgb(mode: str, fmt: str) -> None:
    out = decode_image(_file(mode, fmt))
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8


def test_lossless_png_round_trips_exactly() -> None:
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    np.testing.assert_array_equal(decode_image(buf.getvalue()), pixels)


@pytest.mark.parametrize(("payload", "why"), [(b"hello", "not an image"), (b"", "empty"),
                                              (_file("RGB", "PNG", (64, 64))[:60], "cannot be decoded")])
def test_bad_payloads_are_refused_by_index(payload: bytes, why: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"input 'image'\[1\].*{why}"):
        decode_images([_file("RGB", "PNG"), payload])


def test_an_image_over_the_pixel_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_PIXELS", 30)
    with pytest.raises(InvalidArgument, match="7x5 exceeds 30 pixels"):
        decode_image(_file("RGB", "PNG"))


def test_resize_crop_keeps_the_centre_at_the_requested_size() -> None:
    from infer.runtimes.images import resize_crop

    image = np.zeros((300, 600, 3), np.uint8)
    image[:, 250:350] = 255  # a white band in the middle
    out = resize_crop(image, 256, 224)
    assert out.shape == (224, 224, 3) and out.flags.c_contiguous
    # 600 -> 512 wide, the band (250-350 -> 213-299) lands at 69-155 after the 144-pixel crop offset
    assert out[:, 112].min() == 255 and out[:, 20].max() == 0 and out[:, 200].max() == 0
    small = resize_crop(np.zeros((10, 12, 3), np.uint8), 256, 224)
    assert small.shape == (224, 224, 3)


@pytest.mark.parametrize(("orientation", "turned"), [(1, False), (6, True), (8, True), (3, False)])
def test_exif_orientation_is_applied(orientation: int, turned: bool) -> None:
    """A phone photo stored sideways with an EXIF orientation tag comes out upright, as viewers show it."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="PNG", exif=exif)
    out = decode_image(buf.getvalue())
    assert out.shape == ((40, 20, 3) if turned else (20, 40, 3))
    if orientation == 3:  # rotated 180 degrees: the white half is now on the right
        assert out[:, 30].min() == 255 and out[:, 5].max() == 0
