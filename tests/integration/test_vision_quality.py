"""The image quality model served: real photos (scikit-learn's samples) sent as JPEG and PNG files over gRPC,
decoded in a worker thread; the same measures and scores as the program computes in process; a blurred copy
scores lower; corrupt, truncated and empty payloads fail their own request by index while requests in flight
beside them are answered."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image, ImageFilter
from sklearn.datasets import load_sample_images
from wire import decode, images, infer_request, serving

from infer._proto import grpc_service_pb2_grpc as pb_grpc
from infer.runtimes.vision_programs import QualityProgram
from infer.tasks.vision.quality import write_quality_model

OUTPUTS = ("quality", "quality_components", "quality_features", "size")


def _encode(pixels: np.ndarray, fmt: str, mode: str = "RGB", blur: float = 0.0) -> bytes:
    img = Image.fromarray(pixels).convert(mode)
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    china, flower = load_sample_images().images
    return {"china.jpg": _encode(china, "JPEG"), "flower.png": _encode(flower, "PNG"),
            "china-blurred.jpg": _encode(china, "JPEG", blur=3.0), "flower-grey.png": _encode(flower, "PNG", "L"),
            "flower-rgba.png": _encode(flower, "PNG", "RGBA")}


Served = tuple[pb_grpc.GRPCInferenceServiceStub, Path]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    repo = tmp_path_factory.mktemp("vision") / "repo"
    write_quality_model(repo)
    async with serving(repo) as stub:
        yield stub, repo


async def _infer(stub: pb_grpc.GRPCInferenceServiceStub, *payloads: bytes) -> dict[str, np.ndarray]:
    return decode(await stub.ModelInfer(infer_request("vision_quality", images(*payloads))))


async def test_real_photos_are_scored_as_in_process(served: Served, photos: dict[str, bytes]) -> None:
    stub, repo = served
    names = list(photos)
    got = await _infer(stub, *photos.values())
    program = QualityProgram(repo / "vision_quality" / "1", {"min_side": 224})
    inputs = images(*photos.values())
    program.prepare(inputs)
    want = program.run(inputs, OUTPUTS)
    for k in OUTPUTS:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)
    assert got["size"].tolist() == [[427, 640]] * len(names)
    q = dict(zip(names, got["quality"][:, 0], strict=True))
    assert ((got["quality_components"] >= 0) & (got["quality_components"] <= 1)).all()
    assert q["china-blurred.jpg"] < q["china.jpg"] - 0.1  # blur costs quality
    sharp = dict(zip(names, got["quality_components"][:, 0], strict=True))
    assert sharp["china-blurred.jpg"] < 0.5 * sharp["china.jpg"]


@pytest.mark.parametrize(("bad", "why"), [(b"GIF89a not really", "not an image"), (b"", "empty"),
                                          (None, "cannot be decoded")])
async def test_a_bad_payload_fails_its_request_by_index(served: Served, photos: dict[str, bytes], bad: bytes | None,
                                                        why: str) -> None:
    stub, _ = served
    payload = photos["china.jpg"][:5000] if bad is None else bad  # None: a truncated JPEG
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _infer(stub, photos["flower.png"], payload)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'image'[1]" in (e.value.details() or "") and why in (e.value.details() or "")


async def test_bad_requests_in_flight_do_not_touch_the_good_ones(served: Served, photos: dict[str, bytes]) -> None:
    stub, _ = served
    alone = await _infer(stub, photos["china.jpg"])
    calls = [_infer(stub, photos["china.jpg"]) if i % 3 else _infer(stub, b"\x89PNG broken") for i in range(15)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i, r in enumerate(results):
        if i % 3:
            assert isinstance(r, dict), r
            np.testing.assert_allclose(r["quality"], alone["quality"], rtol=1e-6)
        else:
            assert isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.INVALID_ARGUMENT
