"""OCR served: the PP-OCR files rapidocr ships written into a repository by ``write_ocr_model`` and read by the
``vision_ocr`` kernel program over gRPC. Rendered images of known text in one request are read with a low
character error rate (measured in process on render_samples(8, seed=1..5): mean CER 0 to 0.003, no sample above
0.03; the bounds leave room for a character or two of numeric drift), boxes lie inside their images, a blank
image reads as nothing, an upside-down line is turned over, and a corrupt image fails its own request by index
while concurrent requests are answered. A dictionary that does not fit the recogniser is refused at load."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from wire import decode, images, infer_request, serving

from infer._proto import grpc_service_pb2_grpc as pb_grpc

pytest.importorskip("rapidocr")

from PIL import Image

from infer.tasks.vision.ocr import Sample, cer, render_samples, write_ocr_model

MODEL = "vision_ocr"
MAX_LINES = 8


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return render_samples(8, seed=1)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    repo = tmp_path_factory.mktemp("ocr") / "repo"
    write_ocr_model(repo, MODEL, max_lines=MAX_LINES)
    async with serving(repo) as s:
        yield s


async def _read(stub: pb_grpc.GRPCInferenceServiceStub, *payloads: bytes) -> dict[str, np.ndarray]:
    return decode(await stub.ModelInfer(infer_request(MODEL, images(*payloads))))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _size(payload: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(payload)) as im:
        return im.size


async def test_a_batch_of_rendered_text_is_read(stub: pb_grpc.GRPCInferenceServiceStub,
                                                samples: list[Sample]) -> None:
    blank = _png(Image.new("RGB", (320, 96), (240, 240, 240)))
    got = await _read(stub, *(s.image for s in samples), blank)
    n = len(samples) + 1
    assert got["text"].shape == (n, 1) and got["lines"].shape == (n, MAX_LINES)
    assert got["boxes"].shape == (n, MAX_LINES, 4) and got["confidence"].shape == (n, MAX_LINES)
    assert got["count"].shape == (n, 1) and got["count"].dtype == np.int32
    errors = [cer(t.decode(), s.text) for t, s in zip(got["text"][:, 0], samples, strict=False)]
    assert np.mean(errors) < 0.05 and max(errors) < 0.2, list(zip(got["text"][:, 0], errors, strict=False))
    for i, s in enumerate(samples):
        count = int(got["count"][i, 0])
        assert 1 <= count <= MAX_LINES and count >= s.text.count("\n") + 1
        width, height = _size(s.image)
        x1, y1, x2, y2 = got["boxes"][i, :count].T
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
        assert (x2 > x1).all() and (y2 > y1).all()
        assert all(line and line.decode() in got["text"][i, 0].decode() for line in got["lines"][i, :count])
        assert (got["lines"][i, count:] == b"").all() and not got["boxes"][i, count:].any()
        assert ((got["confidence"][i, :count] >= 0.5) & (got["confidence"][i, :count] <= 1)).all()
    assert got["text"][-1, 0] == b"" and got["count"][-1, 0] == 0 and not got["confidence"][-1].any()


async def test_an_upside_down_line_is_turned_over(stub: pb_grpc.GRPCInferenceServiceStub,
                                                  samples: list[Sample]) -> None:
    line = next(s for s in samples if "\n" not in s.text)
    with Image.open(io.BytesIO(line.image)) as im:
        flipped = _png(im.convert("RGB").rotate(180))
    got = await _read(stub, flipped)
    assert cer(got["text"][0, 0].decode(), line.text) < 0.1, got["text"][0, 0]


async def test_a_corrupt_image_fails_its_own_request_while_others_are_answered(
        stub: pb_grpc.GRPCInferenceServiceStub, samples: list[Sample]) -> None:
    corrupt = samples[0].image[:200]
    results = await asyncio.gather(*(_read(stub, s.image) for s in samples[:4]),
                                   _read(stub, samples[4].image, corrupt), return_exceptions=True)
    error = results[-1]
    assert isinstance(error, grpc.aio.AioRpcError), error
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 'image'[1]" in (error.details() or "")
    for got, s in zip(results[:4], samples[:4], strict=True):
        assert isinstance(got, dict), got
        assert cer(got["text"][0, 0].decode(), s.text) < 0.2, (got["text"][0, 0], s.text)


def test_a_dictionary_that_does_not_fit_the_recogniser_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short.txt").write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match=r"\d+ classes but the dictionary gives 5"):  # at write time, not load
        write_ocr_model(tmp_path, "short", dictionary=tmp_path / "short.txt", use_cls=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.txt"]  # nothing half-written left behind
