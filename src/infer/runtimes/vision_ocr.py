"""``vision_ocr``: text in images with PP-OCR ONNX models (a DB detector, an optional 0/180 degree direction
classifier and a CTC line recogniser), run by infer's own runtime and scheduler.

``image`` BYTES [N, 1] (encoded files) ->

- ``text`` BYTES [N, 1]: every line read, in reading order (rows top to bottom, boxes left to right; boxes of one
  row joined by a space, rows by a newline), UTF-8;
- ``lines`` BYTES [N, K], ``boxes`` FP32 [N, K, 4] (x1, y1, x2, y2 in the original image's pixels) and
  ``confidence`` FP32 [N, K] (the recogniser's mean probability of the line's characters): the first K lines in
  reading order, padded with ``b""`` and zeros (K = ``max_lines``);
- ``count`` INT32 [N, 1]: how many lines were read (more than K when ``text`` holds lines that ``lines`` lacks).

``prepare`` (a worker thread, one request at a time) decodes each image, runs the detector on it (images of one
request that share a detector size share one call), turns the probability map into boxes
(:func:`kernels.ocr.db_boxes`) and crops each box from the original image at the recogniser's height. The batch
step runs the direction classifier on all the batch's lines at once (turning a line over when it says 180 degrees
with ``cls_thresh`` confidence), then the recogniser on the lines sorted by width, in chunks of ``rec_batch``
padded to the chunk's widest (capped at ``rec_max_width``; wider lines are squeezed), and decodes with
:func:`kernels.ocr.ctc_greedy`. Lines below ``min_confidence`` or empty are dropped.

Pixels go to the networks as PaddleOCR trained them: BGR, ``x / 127.5 - 1``. The character dictionary is a text
file, one character a line; class 0 is the CTC blank and the class after the last character a space
(``use_space_char``). Written by :func:`infer.tasks.vision.ocr.write_ocr_model`.

Parameters (``kernel.json``; files are relative to the version directory):

``det``, ``rec``, ``cls``    the ONNX files (``cls`` optional; ``use_cls: false`` ignores it), ``dictionary`` the
                             characters (default: the recogniser's ``character`` metadata)
``max_lines``                K, default 32
``det_max_side`` (960), ``det_min_side`` (128)
                             the detector sees the image scaled so its longer side is at most ``det_max_side``,
                             and small images scaled up until the shorter side reaches ``det_min_side`` (where
                             the longer still fits); sides padded to multiples of 32 with the border's colour,
                             and a lone wide line padded to a height of at least an eighth of its width
``thresh`` (0.3), ``box_thresh`` (0.5), ``unclip_ratio`` (1.6), ``max_boxes`` (1000)
                             DB post-processing (:func:`kernels.ocr.db_boxes`)
``cls_thresh`` (0.9)         the direction classifier's confidence needed to turn a line over
``rec_batch`` (8), ``rec_min_width`` (320), ``rec_max_width`` (1600)
                             lines per recogniser call, and the padded input width's floor (PaddleOCR's 48 x 320)
                             and ceiling
``min_confidence`` (0.5)     lines read with less are dropped
``threads`` (0)              ONNX Runtime intra-op threads per network (0: its default, one per core)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from infer.core.types import DataType, TensorSpec
from infer.runtimes.base import Array
from infer.runtimes.images import decode_images
from infer.runtimes.kernel import inside_version
from infer.runtimes.onnx import cpu_session

__all__ = ["OcrProgram", "vision_ocr"]

_FOUND = "_ocr_found"  # what prepare hands to the batch step: one _Found per image (an object array)
_STRIDE = 32  # the detector's input sides are multiples of this
_REC_STRIDE = 8  # recogniser input columns per output step
_CLS_WIDTH = 192  # the direction classifier's input: 48 x 192


class _Found(NamedTuple):
    """One image's detected lines, in reading order."""

    boxes: NDArray[np.float32]  # [M, 4] original pixels
    rows: NDArray[np.intp]  # [M] row of each line
    crops: list[NDArray[np.uint8]]  # M x [height, w, 3] RGB, the recogniser's height


def _resize(image: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    from PIL import Image

    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def _normalise(pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
    """uint8 [..., H, W, 3] RGB -> float32 [..., 3, H, W] BGR in -1..1."""
    x = pixels[..., ::-1].astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def _read_dictionary(directory: Path, params: Mapping[str, Any], rec: Any) -> list[str]:
    """The recogniser's characters: the dictionary file, else the ONNX file's ``character`` metadata."""
    name = params.get("dictionary")
    if name:
        chars = [c.removesuffix("\r") for c in inside_version(directory, name).read_text(encoding="utf-8").split("\n")]
        return chars[:-1] if chars and chars[-1] == "" else chars  # a space or odd character may be a line
    meta = rec.get_modelmeta().custom_metadata_map
    if "character" not in meta:
        raise ValueError("the recogniser has no 'character' metadata: name a dictionary file in the parameters")
    return str(meta["character"]).splitlines()


class OcrProgram:
    prepare_in_thread = True

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        self.max_lines = int(params.get("max_lines", 32))
        self.det_max_side = int(params.get("det_max_side", 960))
        self.det_min_side = int(params.get("det_min_side", 128))
        self.thresh, self.box_thresh = float(params.get("thresh", 0.3)), float(params.get("box_thresh", 0.5))
        self.unclip_ratio = float(params.get("unclip_ratio", 1.6))
        self.max_boxes = int(params.get("max_boxes", 1000))
        self.min_confidence = float(params.get("min_confidence", 0.5))
        self.cls_thresh = float(params.get("cls_thresh", 0.9))
        self.rec_batch = int(params.get("rec_batch", 8))
        self.rec_min_width = int(params.get("rec_min_width", 320))
        self.rec_max_width = int(params.get("rec_max_width", 1600))
        if not (self.max_lines >= 1 and self.det_max_side >= self.det_min_side >= _STRIDE and self.rec_batch >= 1
                and 0 < self.thresh < 1 and 0 <= self.box_thresh < 1 and self.unclip_ratio >= 0
                and _REC_STRIDE <= self.rec_min_width <= self.rec_max_width and self.max_boxes >= 1):
            raise ValueError("OCR parameters out of range (max_lines >= 1, 32 <= det_min_side <= det_max_side, "
                             "thresholds in 0..1, 8 <= rec_min_width <= rec_max_width)")
        threads = int(params.get("threads", 0))
        self._det = cpu_session(inside_version(directory, params.get("det", "det.onnx")), threads)
        self._rec = cpu_session(inside_version(directory, params.get("rec", "rec.onnx")), threads)
        cls = params.get("cls") if params.get("use_cls", True) else None
        self._cls = cpu_session(inside_version(directory, cls), threads) if cls else None
        rec_shape = self._rec.get_inputs()[0].shape
        self.height = rec_shape[2] if isinstance(rec_shape[2], int) else 48
        chars = _read_dictionary(directory, params, self._rec)
        self._chars = np.array(["", *chars, *([" "] if params.get("use_space_char", True) else [])], dtype=object)
        classes = self._rec.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self._chars):
            raise ValueError(f"the recogniser has {classes} classes but the dictionary gives {len(self._chars)} "
                             "(blank, characters, space)")
        k = self.max_lines
        self.inputs: tuple[TensorSpec, ...] = (TensorSpec("image", DataType.BYTES, (-1, 1)),)
        self.outputs: tuple[TensorSpec, ...] = (
            TensorSpec("text", DataType.BYTES, (-1, 1)),
            TensorSpec("lines", DataType.BYTES, (-1, k)),
            TensorSpec("boxes", DataType.FP32, (-1, k, 4)),
            TensorSpec("confidence", DataType.FP32, (-1, k)),
            TensorSpec("count", DataType.INT32, (-1, 1)),
        )

    # ---- per request (worker thread) ---------------------------------------------------------------------

    def _det_size(self, h: int, w: int) -> tuple[float, int, int]:
        """Scale for the detector (down to fit ``det_max_side``, up to reach ``det_min_side`` where that fits), and
        the scaled image's height and width (before padding)."""
        scale = min(self.det_max_side / max(h, w), max(1.0, self.det_min_side / min(h, w)))
        return scale, max(1, round(h * scale)), max(1, round(w * scale))

    def _det_input(self, image: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], float, int]:
        """The image scaled, then padded with its border's median colour to multiples of 32 (and vertically
        to at least an eighth of its width, so a lone wide line is not cut by the frame): pixels, scale, top."""
        scale, sh, sw = self._det_size(*image.shape[:2])
        scaled = _resize(image, sw, sh)
        ph = max(_STRIDE * math.ceil(sh / _STRIDE), _STRIDE * math.ceil(sw / 8 / _STRIDE))
        pw = _STRIDE * math.ceil(sw / _STRIDE)
        top = (ph - sh) // 2 if ph - sh >= _STRIDE else 0
        border = np.concatenate([scaled[0], scaled[-1], scaled[:, 0], scaled[:, -1]])
        out = np.empty((ph, pw, 3), np.uint8)
        out[:] = np.median(border, axis=0).astype(np.uint8)
        out[top:top + sh, :sw] = scaled
        return out, scale, top

    def _detect(self, images: list[NDArray[np.uint8]]) -> list[NDArray[np.float32]]:
        """Text rectangles of each image (corners [M, 4, 2] in its pixels); one detector call per input size."""
        from kernels.ocr import db_boxes

        prepared = [self._det_input(im) for im in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (pixels, _, _) in enumerate(prepared):
            groups.setdefault(pixels.shape, []).append(i)
        name = self._det.get_inputs()[0].name
        found = [np.zeros((0, 4, 2), np.float32)] * len(images)
        for members in groups.values():
            batch = _normalise(np.stack([prepared[i][0] for i in members]))
            maps = np.asarray(self._det.run(None, {name: batch})[0])[:, 0]
            for i, prob in zip(members, maps, strict=True):
                quads, _ = db_boxes(prob, self.thresh, self.box_thresh, self.unclip_ratio,
                                    max_candidates=self.max_boxes)
                _, scale, top = prepared[i]
                h, w = images[i].shape[:2]
                quads = (quads - np.array([0, top], np.float32)) / np.float32(scale)
                quads = np.clip(quads, 0, np.array([w, h], np.float32))
                span = quads.max(axis=1) - quads.min(axis=1)
                found[i] = quads[(span >= 2).all(axis=1)]
        return found

    def _crop(self, image: Any, quad: NDArray[np.float32]) -> NDArray[np.uint8]:
        """A rectangle (corners TL, TR, BR, BL) of a Pillow image cut straight, scaled to the recogniser's height;
        a rectangle 1.5 times taller than wide is a vertical line, turned a quarter left to read top to bottom
        as left to right (as PP-OCR does)."""
        from PIL import Image

        width = max(1, round(float(max(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[2] - quad[3])))))
        height = max(1, round(float(max(np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1])))))
        corners = tuple(float(v) for v in quad[[0, 3, 2, 1]].reshape(-1))  # Pillow's order: UL, LL, LR, UR
        cut = image.transform((width, height), Image.Transform.QUAD, corners, Image.Resampling.BILINEAR)
        if height >= 1.5 * width:
            cut, width, height = cut.transpose(Image.Transpose.ROTATE_90), height, width
        out_width = min(self.rec_max_width, max(1, math.ceil(self.height * width / height)))
        return np.asarray(cut.resize((out_width, self.height), Image.Resampling.BILINEAR), dtype=np.uint8)

    def _found(self, image: NDArray[np.uint8], quads: NDArray[np.float32]) -> _Found:
        from PIL import Image

        from kernels.ocr import quad_bounds, reading_order

        boxes = quad_bounds(quads)
        order, rows = reading_order(boxes)
        pil = Image.fromarray(image)
        return _Found(boxes[order], rows, [self._crop(pil, q) for q in quads[order]])

    def prepare(self, inputs: dict[str, Array]) -> None:
        self.prepare_images(decode_images(np.asarray(inputs.pop("image"), dtype=object).reshape(-1)), inputs)

    def prepare_images(self, images: list[NDArray[np.uint8]], inputs: dict[str, Array]) -> None:
        """Text detection on decoded images (the ``vision`` pipeline decodes once for all its tasks)."""
        found = np.empty(len(images), dtype=object)
        for i, (im, quads) in enumerate(zip(images, self._detect(images), strict=True)):
            found[i] = self._found(im, quads)
        inputs[_FOUND] = found

    # ---- per batch ---------------------------------------------------------------------------------------

    def _turn_over(self, found: Sequence[_Found]) -> tuple[list[NDArray[np.uint8]], NDArray[np.bool_]]:
        """All the batch's line crops, those the direction classifier reads as upside down turned over, and which
        were (one classifier call). The classifier sees 48 x 192: the middle 192 columns of a longer line, not
        the whole line squeezed (on 80 rendered images turned over, 129 of 133 lines were caught so against
        114 squeezed, with no upright line turned either way)."""
        crops = [c for f in found for c in f.crops]
        if self._cls is None or not crops:
            return crops, np.zeros(len(crops), dtype=bool)
        batch = np.zeros((len(crops), 3, self.height, _CLS_WIDTH), np.float32)  # 0 is mid-grey once normalised
        for i, c in enumerate(crops):
            a = max(0, (c.shape[1] - _CLS_WIDTH) // 2)
            window = c[:, a:a + _CLS_WIDTH]
            batch[i, :, :, :window.shape[1]] = _normalise(window)
        probs = np.asarray(self._cls.run(None, {self._cls.get_inputs()[0].name: batch})[0])
        flip = (probs.argmax(axis=1) == 1) & (probs.max(axis=1) > self.cls_thresh)
        return [c[::-1, ::-1] if f else c for c, f in zip(crops, flip, strict=True)], flip

    def _recognise(self, crops: list[NDArray[np.uint8]]) -> tuple[list[str], NDArray[np.float32]]:
        """Text and confidence of each line crop: recogniser calls on width-sorted chunks."""
        from kernels.ocr import ctc_greedy

        texts, confidence = [""] * len(crops), np.zeros(len(crops), np.float32)
        widths = np.array([c.shape[1] for c in crops], np.int64)
        by_width = np.argsort(widths, kind="stable")
        name = self._rec.get_inputs()[0].name
        for a in range(0, len(crops), self.rec_batch):
            chunk = by_width[a:a + self.rec_batch]
            width = _REC_STRIDE * math.ceil(max(self.rec_min_width, int(widths[chunk].max())) / _REC_STRIDE)
            batch = np.zeros((len(chunk), 3, self.height, width), np.float32)
            for row, i in enumerate(chunk):
                batch[row, :, :, :widths[i]] = _normalise(crops[i])
            probs = np.asarray(self._rec.run(None, {name: batch})[0])
            steps = np.ceil(widths[chunk] / (width / probs.shape[1])).astype(np.int64) + 1
            tokens, lengths, conf = ctc_greedy(probs, steps)
            for row, i in enumerate(chunk):
                texts[i] = "".join(self._chars[tokens[row, :lengths[row]]])
                confidence[i] = conf[row]
        return texts, confidence

    def _read_order(self, f: _Found, texts: list[str], confidence: NDArray[np.float32],
                    flipped: NDArray[np.bool_]) -> tuple[NDArray[np.intp], str]:
        """One image's lines worth keeping (confident, not blank), in reading order (reversed when most lines
        were upside down: the whole image is), and its text (a space inside a row, a newline between rows)."""
        keep = np.flatnonzero((confidence >= self.min_confidence) & np.array([bool(t.strip()) for t in texts],
                                                                               dtype=bool))
        if len(keep) == 0:
            return keep, ""
        rows = f.rows[keep]
        if flipped.mean() > 0.5:
            keep, rows = keep[::-1], rows[::-1]
        seps = np.where(np.diff(rows) != 0, "\n", " ")
        text = "".join(part for pair in zip(["", *seps], (texts[j] for j in keep), strict=True) for part in pair)
        return keep, text

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        found: list[_Found] = list(np.asarray(inputs[_FOUND], dtype=object).reshape(-1))
        crops, flipped = self._turn_over(found)
        texts, confidence = self._recognise(crops)
        n, k = len(found), self.max_lines
        text = np.full((n, 1), b"", dtype=object)
        lines = np.full((n, k), b"", dtype=object)
        boxes = np.zeros((n, k, 4), np.float32)
        conf = np.zeros((n, k), np.float32)
        count = np.zeros((n, 1), np.int32)
        bounds = np.cumsum([0, *(len(f.crops) for f in found)])
        for i, (f, a, b) in enumerate(zip(found, bounds[:-1], bounds[1:], strict=True)):
            keep, joined = self._read_order(f, texts[a:b], confidence[a:b], flipped[a:b])
            m = min(len(keep), k)
            text[i, 0] = joined.encode()
            lines[i, :m] = [texts[a + j].encode() for j in keep[:m]]
            boxes[i, :m], conf[i, :m], count[i, 0] = f.boxes[keep[:m]], confidence[a + keep[:m]], len(keep)
        return {"text": text, "lines": lines, "boxes": boxes, "confidence": conf, "count": count}


def vision_ocr(directory: Path, params: dict[str, Any]) -> OcrProgram:
    return OcrProgram(directory, params)
