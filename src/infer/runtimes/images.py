"""Decoding images sent as encoded files (V2 BYTES: JPEG, PNG, WebP, BMP, GIF, TIFF...) with Pillow.

Every element is decoded on its own; the first one that is not an image, is truncated, or exceeds
:data:`MAX_PIXELS` (a decompression bomb) raises InvalidArgument naming its index, so the request that carried
it fails alone. Decoding is heavy: programs that decode set ``prepare_in_thread`` so the data plane runs their
``prepare`` in a worker thread, not on the event loop.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Final

import numpy as np
from numpy.typing import NDArray

from infer.errors import InvalidArgument

__all__ = ["MAX_PIXELS", "decode_image", "decode_images", "resize_crop"]

MAX_PIXELS: Final = 64 * 1024 * 1024  # 64 megapixels: an 8k x 8k image fits, a decompression bomb does not


def decode_image(data: bytes, where: str = "input 'image'") -> NDArray[np.uint8]:
    """One encoded image -> uint8 [H, W, 3] RGB (greyscale, palette and alpha images are converted), turned
    upright as its EXIF orientation tag says (phone photos)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise InvalidArgument(f"{where}: {img.width}x{img.height} exceeds {MAX_PIXELS} pixels")
            rgb = img.convert("RGB")  # decodes the whole file: truncation shows here
            rgb = ImageOps.exif_transpose(rgb) if img.getexif().get(0x0112, 1) != 1 else rgb  # camera rotation
            return np.asarray(rgb, dtype=np.uint8)
    except InvalidArgument:
        raise
    except UnidentifiedImageError:
        raise InvalidArgument(f"{where}: not an image in a format infer decodes") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise InvalidArgument(f"{where}: the image cannot be decoded ({e})") from None


def decode_images(values: Iterable[object], name: str = "image") -> list[NDArray[np.uint8]]:
    """Every element of a BYTES tensor (bytes, or str for text-safe payloads) decoded, in order."""
    out = []
    for i, v in enumerate(values):
        data = v if isinstance(v, bytes) else str(v).encode("latin-1")
        if not data:
            raise InvalidArgument(f"input '{name}'[{i}]: empty; send an encoded image file")
        out.append(decode_image(data, f"input '{name}'[{i}]"))
    return out


def resize_crop(image: NDArray[np.uint8], resize: int, crop: int) -> NDArray[np.uint8]:
    """The usual ImageNet evaluation view: shorter side scaled to ``resize`` (bilinear, Pillow), then the central
    ``crop`` x ``crop`` square."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = resize / min(h, w)
    nh, nw = max(crop, round(h * scale)), max(crop, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.uint8)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return np.ascontiguousarray(resized[top:top + crop, left:left + crop])
