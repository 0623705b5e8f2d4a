"""Detection and moderation served (``vision_detect``): a user's own YOLO file (tiny YOLOv5- and YOLOv8-layout
ONNX graphs with known boxes, one with a fixed batch of 1) answers with boxes mapped back to the original pixels;
NudeNet's detector (the ``moderation`` extra, skipped without it) finds the astronaut's face where NudeNet itself
puts it and calls every sample photo safe, served exactly as in process; a corrupt image fails its own request
by index while requests beside it are answered; files, labels and parameters that do not fit fail at write."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image
from wire import decode, images, infer_request, serving

from infer._proto import grpc_service_pb2_grpc as pb_grpc
from infer.errors import FailedPrecondition
from infer.runtimes.vision_detect import DetectProgram
from infer.tasks.vision import detector

pytest.importorskip("onnx")

MODERATION = importlib.util.find_spec("nudenet") is not None
SIZE = 64
LABELS = ["cat", "dog"]
# anchors of the tiny model in its 64 x 64 input: (cx, cy, w, h, class probabilities); the objectness (YOLOv5) or
# the factor on the class scores (YOLOv8) is the input's mean brightness
ANCHORS = [(32, 32, 20, 10, (0.9, 0.1)),  # kept
           (33, 32, 20, 10, (0.8, 0.1)),  # the same cat, weaker: suppressed
           (32, 33, 20, 10, (0.1, 0.7)),  # a dog on the cat: kept (class-aware NMS)
           (2, 32, 20, 10, (0.85, 0.0))]  # a cat across the left edge: clipped
OUTPUTS = ("boxes", "classes", "scores", "count")


def tiny_yolo(path: Path, layout: str, batch: int | str = "batch") -> Path:
    """A real ONNX file with the YOLO output layout ``layout`` and constant anchors scaled by brightness."""
    import onnx
    from onnx import TensorProto, helper

    rows = np.array([[cx, cy, w, h, 0.0, *cls] for cx, cy, w, h, cls in ANCHORS], np.float32)  # [A, 5 + C]
    mask = np.zeros_like(rows)
    if layout == "yolov5":
        mask[:, 4] = 1.0  # objectness = brightness
        base = rows
    else:  # [4 + C, A]: the class scores times the brightness
        base, mask = np.delete(rows, 4, axis=1).T.copy(), np.delete(mask, 4, axis=1).T.copy()
        mask[4:] = base[4:]
        base[4:] = 0.0
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
             helper.make_node("Reshape", ["mean", "shape"], ["m"]),
             helper.make_node("Mul", ["m", "mask"], ["scaled"]),
             helper.make_node("Add", ["base", "scaled"], ["output0"])]
    inits = [helper.make_tensor("shape", TensorProto.INT64, [3], [-1, 1, 1]),
             helper.make_tensor("mask", TensorProto.FLOAT, [1, *mask.shape], mask.ravel().tolist()),
             helper.make_tensor("base", TensorProto.FLOAT, [1, *base.shape], base.ravel().tolist())]
    graph = helper.make_graph(
        nodes, "tiny_yolo", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, *base.shape])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {name: _png(im) for name, im in detector.sample_photos().items()}


Served = tuple[pb_grpc.GRPCInferenceServiceStub, Path]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    tmp = tmp_path_factory.mktemp("detect")
    repo = tmp / "repo"
    detector.write_detector_model(repo, "tiny_v5", tiny_yolo(tmp / "v5.onnx", "yolov5"), LABELS, max_detections=4)
    detector.write_detector_model(repo, "tiny_v8_b1", tiny_yolo(tmp / "v8.onnx", "yolov8", batch=1), LABELS,
                                  max_detections=4)
    if MODERATION:
        detector.build_moderation(repo)
    async with serving(repo) as stub:
        yield stub, repo


async def _infer(stub: pb_grpc.GRPCInferenceServiceStub, model: str, *payloads: bytes) -> dict[str, np.ndarray]:
    return decode(await stub.ModelInfer(infer_request(model, images(*payloads))))


@pytest.mark.parametrize("model", ["tiny_v5", "tiny_v8_b1"])
async def test_a_users_yolo_file_answers_in_original_pixels(served: Served, model: str) -> None:
    stub, _ = served
    white, black = np.full((100, 200, 3), 255, np.uint8), np.zeros((100, 200, 3), np.uint8)
    got = await _infer(stub, model, _png(white), _png(black), _png(white))
    assert got["boxes"].shape == (3, 4, 4) and got["classes"].shape == got["scores"].shape == (3, 4)
    np.testing.assert_array_equal(got["count"], [[3], [0], [3]])
    # 200 x 100 into 64 x 64: scale 0.32, 16 rows of padding above; brightness (64 * 32 white + the rest grey 114)
    brightness = 0.5 + 0.5 * 114 / 255
    for i in (0, 2):
        assert list(got["classes"][i]) == [b"cat", b"cat", b"dog", b""]
        np.testing.assert_allclose(got["scores"][i], np.array([0.9, 0.85, 0.7, 0]) * brightness,
                                   rtol=1e-5)
        np.testing.assert_allclose(got["boxes"][i], [[68.75, 34.375, 131.25, 65.625], [0, 34.375, 37.5, 65.625],
                                                     [68.75, 37.5, 131.25, 68.75], [0, 0, 0, 0]], rtol=1e-5)
    assert list(got["classes"][1]) == [b""] * 4 and not got["boxes"][1].any() and not got["scores"][1].any()
    assert "verdict" not in got


async def test_moderation_finds_the_face_nudenet_finds_and_calls_photos_safe(served: Served,
                                                                             photos: dict[str, bytes]) -> None:
    pytest.importorskip("nudenet")
    from nudenet import NudeDetector

    stub, repo = served
    names = list(photos)
    got = await _infer(stub, "vision_moderation", *photos.values())
    n = len(names)
    assert got["boxes"].shape == (n, 32, 4) and got["classes"].shape == got["scores"].shape == (n, 32)
    assert got["count"].shape == got["verdict"].shape == got["unsafe_score"].shape == (n, 1)
    assert set(got["verdict"][:, 0]) == {b"safe"} and (got["unsafe_score"] < 0.5).all()
    count = got["count"][:, 0]
    for i in range(n):  # padding past the count
        assert not got["scores"][i, count[i]:].any() and set(got["classes"][i, count[i]:]) <= {b""}
    a = names.index("astronaut")
    faces = [j for j in range(count[a]) if got["classes"][a, j] == b"FACE_FEMALE"]
    assert faces, got["classes"][a]
    astronaut = np.asarray(Image.open(io.BytesIO(photos["astronaut"])))
    theirs = [t for t in NudeDetector().detect(np.ascontiguousarray(astronaut[:, :, ::-1]))
              if t["class"] == "FACE_FEMALE"]
    x, y, w, h = theirs[0]["box"]
    assert max(detector._iou(got["boxes"][a, j].tolist(), [x, y, x + w, y + h]) for j in faces) > 0.9
    version = repo / "vision_moderation" / "1"
    program = DetectProgram(version, json.loads((version / "kernel.json").read_text())["params"])
    inputs = images(*photos.values())
    program.prepare(inputs)
    want = program.run(inputs, ())
    np.testing.assert_array_equal(got["classes"], want["classes"])
    np.testing.assert_array_equal(got["count"], want["count"])
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-3)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)


async def test_a_corrupt_image_fails_its_request_by_index(served: Served) -> None:
    stub, _ = served
    white = _png(np.full((100, 200, 3), 255, np.uint8))
    results = await asyncio.gather(_infer(stub, "tiny_v5", white), _infer(stub, "tiny_v5", white, white[:60]),
                                   _infer(stub, "tiny_v5", white, white), return_exceptions=True)
    error = results[1]
    assert isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'image'[1]" in (error.details() or "")
    for ok, n in ((results[0], 1), (results[2], 2)):
        assert isinstance(ok, dict)
        np.testing.assert_array_equal(ok["count"], [[3]] * n)


def test_files_labels_and_parameters_that_do_not_fit_fail_at_write(tmp_path: Path) -> None:
    v5 = tiny_yolo(tmp_path / "v5.onnx", "yolov5")
    with pytest.raises(ValueError, match="neither"):
        detector.write_detector_model(tmp_path / "repo", "three", v5, ["a", "b", "c"])
    with pytest.raises(ValueError, match="not among the labels"):
        detector.write_detector_model(tmp_path / "repo", "unsafe", v5, LABELS, unsafe_classes=["wolf"])
    with pytest.raises(ValueError, match="no labels"):
        detector.write_detector_model(tmp_path / "repo", "nolabels", v5, None)
    with pytest.raises(ValueError, match="differs"):
        detector.write_detector_model(tmp_path / "repo", "size", v5, LABELS, input_size=320)
    assert not (tmp_path / "repo" / "three" / "config.pbtxt").exists()
    detector.write_detector_model(tmp_path / "repo", "ok", v5, LABELS, unsafe_classes=["dog"], unsafe_threshold=0.3)
    version = tmp_path / "repo" / "ok" / "1"
    program = DetectProgram(version, json.loads((version / "kernel.json").read_text())["params"])
    inputs = images(_png(np.full((100, 200, 3), 255, np.uint8)), _png(np.full((50, 50, 3), 40, np.uint8)))
    program.prepare(inputs)
    out = program.run(inputs, ())
    assert list(out["verdict"][:, 0]) == [b"unsafe", b"safe"]  # the dog scores 0.51, then nothing scores
    np.testing.assert_allclose(out["unsafe_score"][:, 0], [0.7 * (0.5 + 0.5 * 114 / 255), 0.0], rtol=1e-5)


def test_moderation_without_nudenet_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FailedPrecondition, match=r"infer\[moderation\]"):
        detector.moderation_model_files()
