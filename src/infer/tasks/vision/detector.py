"""Object detection and content moderation models of the vision family: ``vision_detect`` kernel programs
(:mod:`infer.runtimes.vision_detect`) around a YOLO-format ONNX file.

``write_detector_model``   any YOLO ONNX file a user brings (YOLOv8/YOLO11 ``[B, 4 + C, A]`` or YOLOv5/v7
                           ``[B, A, 5 + C]``) with its class names (read from Ultralytics' metadata when not given).
``build_moderation``       NudeNet's detector (``320n.onnx``, a YOLOv8n trained on 18 body-part classes: faces,
                           covered and exposed parts) with a verdict over the exposed-genitalia, breast, buttocks
                           and anus classes. NudeNet's model files are AGPL-3.0: they come only with the optional
                           ``moderation`` extra, are copied into the repository at build time, and nothing else of
                           infer needs them.
``evaluate``               the moderation model on the real photos installed packages ship: detections,
                           verdicts, throughput in process, and a cross-check against NudeNet's own detector.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from infer.core.files import write_atomic
from infer.errors import FailedPrecondition
from infer.tasks.kernel_models import kernel_config, staged_model

__all__ = ["MODERATION_INPUT", "UNSAFE_CLASSES", "build_moderation", "evaluate", "moderation_model_files",
           "onnx_labels", "sample_photos", "write_detector_model"]

# NudeNet's classes that make an image unsafe; faces, feet, belly, armpits, male breasts and every covered class
# do not
UNSAFE_CLASSES: tuple[str, ...] = ("FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED",
                                   "BUTTOCKS_EXPOSED", "ANUS_EXPOSED")
MODERATION_INPUT = 320  # 320n.onnx was trained (and NudeNet runs it) at 320 x 320
_EXTRA = "pip install 'infer[moderation]' (AGPL-3.0 model files)"

U8 = NDArray[np.uint8]


def onnx_labels(onnx_file: Path) -> list[str] | None:
    """Class names that Ultralytics writes into an exported file's metadata (``names``: ``{0: 'person', ...}``),
    in class order; ``None`` when the file has none."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    meta = ort.InferenceSession(str(onnx_file), so, providers=["CPUExecutionProvider"]).get_modelmeta()
    names = meta.custom_metadata_map.get("names")
    if not names:
        return None
    mapping = ast.literal_eval(names)
    return [str(mapping[i]) for i in range(len(mapping))] if isinstance(mapping, dict) else [str(x) for x in mapping]


def write_detector_model(repo: Path, name: str, onnx_file: Path, labels: Sequence[str] | None, *,
                         input_size: int | tuple[int, int] | None = None, unsafe_classes: Sequence[str] = (),
                         unsafe_threshold: float = 0.5, score_threshold: float = 0.25, iou_threshold: float = 0.45,
                         max_detections: int = 32, max_batch_size: int = 16, format: str | None = None,
                         class_agnostic: bool = False, center: bool = True, pad_value: int = 114) -> Path:
    """Write ``name``: ``onnx_file`` with ``labels`` (class names in class order; ``None``: from the file's
    Ultralytics metadata) served as ``vision_detect``. The program is loaded once (the file run on a blank image)
    before ``config.pbtxt`` is written, so a file that does not fit raises here, not in the server."""
    from infer.runtimes.vision_detect import DetectProgram

    names = list(labels) if labels is not None else onnx_labels(Path(onnx_file))
    if not names:
        raise ValueError(f"{onnx_file}: no labels given and none in the file's metadata")
    with staged_model(repo, name) as staging:
        version = staging / "1"
        params: dict[str, Any] = {"model": "model.onnx", "labels": "labels.txt", "score_threshold": score_threshold,
                                  "iou_threshold": iou_threshold, "max_detections": max_detections,
                                  "class_agnostic": class_agnostic, "center": center, "pad_value": pad_value}
        if input_size is not None:
            params["input_size"] = [input_size] * 2 if isinstance(input_size, int) else list(input_size)
        if format is not None:
            params["format"] = format
        if unsafe_classes:
            params |= {"unsafe_classes": list(unsafe_classes), "unsafe_threshold": unsafe_threshold}
        write_atomic(version / "model.onnx", Path(onnx_file).read_bytes())
        write_atomic(version / "labels.txt", "\n".join(names) + "\n")
        write_atomic(version / "kernel.json", json.dumps({"program": "vision_detect", "params": params}))
        program = DetectProgram(version, params)  # raises on a file, labels or parameters that do not fit
        write_atomic(staging / "config.pbtxt",
                     kernel_config(name, program.inputs, program.outputs, max_batch_size=max_batch_size))
    return repo / name


def moderation_model_files() -> tuple[Path, list[str]]:
    """NudeNet's ``320n.onnx`` in the installed ``nudenet`` package and its 18 class names (read from
    ``nudenet.py`` without importing it, else from the file's metadata). Without the package:
    FailedPrecondition naming the extra."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition(f"the moderation model needs the nudenet package: {_EXTRA}")
    package = Path(next(iter(spec.submodule_search_locations)))
    onnx_file = package / "320n.onnx"
    if not onnx_file.is_file():
        raise FailedPrecondition(f"{onnx_file} is missing from the installed nudenet: {_EXTRA}")
    labels: list[str] | None = None
    source = package / "nudenet.py"
    if source.is_file():
        for node in ast.parse(source.read_text()).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__labels"
                                                    for t in node.targets):
                labels = [str(x) for x in ast.literal_eval(node.value)]
    labels = labels or onnx_labels(onnx_file)
    if not labels:
        raise FailedPrecondition(f"cannot read nudenet's class names from {package}: {_EXTRA}")
    return onnx_file, labels


def build_moderation(repo: Path, name: str = "vision_moderation", *, unsafe_threshold: float = 0.5) -> Path:
    """Write ``name``: NudeNet's detector with a verdict over :data:`UNSAFE_CLASSES`, at 320 x 320, letterboxed
    the Ultralytics way (centred, grey padding: NudeNet's own top-left black padding gave the coffee photo a
    BUTTOCKS_EXPOSED at 0.33; centred gives none), class-aware NMS."""
    onnx_file, labels = moderation_model_files()
    return write_detector_model(repo, name, onnx_file, labels, input_size=MODERATION_INPUT,
                                unsafe_classes=UNSAFE_CLASSES, unsafe_threshold=unsafe_threshold)


def sample_photos() -> dict[str, U8]:
    """The classifier's sample photos (scikit-learn's china and flower; scikit-image's astronaut, coffee, chelsea,
    rocket) and scikit-image's ``camera`` (a man's face, greyscale made RGB) when installed."""
    from infer.tasks.vision.classifier import sample_images

    photos = sample_images()
    camera = _skimage("camera")
    if camera is not None and camera.ndim == 2:
        photos["camera"] = np.ascontiguousarray(np.repeat(camera[:, :, None], 3, axis=2))
    return photos


def _skimage(name: str) -> U8 | None:
    """scikit-image's sample image ``name`` as uint8, or ``None`` without it."""
    try:
        from skimage import data as skdata

        image = np.asarray(getattr(skdata, name)())
    except (ImportError, AttributeError, OSError):
        return None
    return image if image.dtype == np.uint8 else None


def _encode(image: U8) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")  # lossless: the same pixels for infer and NudeNet
    return buf.getvalue()


def _detections(out: dict[str, Any], i: int) -> list[dict[str, Any]]:
    n = int(out["count"][i, 0])
    return [{"class": out["classes"][i, j].decode(), "score": round(float(out["scores"][i, j]), 4),
             "box": [round(float(v), 1) for v in out["boxes"][i, j]]} for j in range(n)]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _same_output(photos: dict[str, U8], labels: list[str], params: dict[str, Any]) -> dict[str, Any]:
    """infer's decoding and suppression against NudeNet's on the very same network output: NudeNet's own
    preprocessing and session, then its ``_postprocess`` (class-agnostic ``cv2.dnn.NMSBoxes``) beside
    :func:`kernels.detect.decode_yolo`, :func:`~kernels.detect.nms` (class-agnostic here) and
    :func:`~kernels.detect.to_original`. Classes and scores must be equal; NudeNet truncates ``x`` and ``w`` to
    integers apart, so its corners may sit up to 2 pixels inside infer's."""
    from nudenet import NudeDetector
    from nudenet import nudenet as nn

    from kernels import detect

    read, post = getattr(nn, "_read_image", None), getattr(nn, "_postprocess", None)
    if read is None or post is None:
        return {"skipped": "this nudenet version has no _read_image/_postprocess"}
    session = NudeDetector().onnx_session
    size, agree, worst = MODERATION_INPUT, 0, 0.0
    differ = []
    for photo, image in photos.items():
        blob, x_ratio, y_ratio, x_pad, y_pad, w, h = read(np.ascontiguousarray(image[:, :, ::-1]), size)
        raw = session.run(None, {session.get_inputs()[0].name: blob})
        theirs = post(raw, x_pad, y_pad, x_ratio, y_ratio, w, h, size, size)
        groups, boxes, scores, classes = detect.decode_yolo(raw[0], len(labels), "yolov8",
                                                            float(params.get("score_threshold", 0.25)))
        kept = detect.nms(boxes, scores, classes, groups, float(params.get("iou_threshold", 0.45)), len(boxes) or 1,
                          class_agnostic=True)
        mapped = detect.to_original(boxes[kept], np.array([[size / max(w, h), 0.0, 0.0, w, h]]).repeat(len(kept), 0))
        same = len(kept) == len(theirs)
        for t, i, box in zip(theirs, kept, mapped, strict=False):
            x, y, bw, bh = t["box"]
            gap = float(np.abs(box - np.array([x, y, x + bw, y + bh], np.float32)).max())
            worst = max(worst, gap)
            same &= labels[classes[i]] == t["class"] and abs(float(scores[i]) - t["score"]) < 1e-6 and gap <= 2.0
        agree += same
        if not same:
            differ.append(photo)
    return {"photos_identical": agree, "photos": len(photos), "differ": differ, "max_box_gap_px": round(worst, 2)}


def _cross_check(ours: dict[str, list[dict[str, Any]]], photos: dict[str, U8]) -> dict[str, Any]:
    """infer as served against NudeNet's own ``NudeDetector().detect()`` on the same pixels (different resizing:
    Pillow's antialiased bilinear into a centred letterbox against OpenCV's bilinear of a padded square): each
    NudeNet detection matched to infer's of the same class with the highest IoU."""
    from nudenet import NudeDetector

    detector = NudeDetector()
    pairs, missed = [], []
    extra = 0
    for photo, image in photos.items():
        theirs = detector.detect(np.ascontiguousarray(image[:, :, ::-1]))  # NudeNet reads BGR (OpenCV)
        mine = list(ours[photo])
        for t in theirs:
            x, y, w, h = t["box"]
            box = [x, y, x + w, y + h]
            same = [(_iou(box, m["box"]), m) for m in mine if m["class"] == t["class"]]
            if not same:
                missed.append(f"{photo}: {t['class']} {t['score']:.2f}")
                continue
            iou, m = max(same, key=lambda p: p[0])
            mine.remove(m)
            pairs.append({"photo": photo, "class": t["class"], "iou": round(iou, 3),
                          "score_nudenet": round(float(t["score"]), 4), "score_infer": m["score"]})
        extra += len(mine)
    return {"matched": pairs, "missed_by_infer": missed, "only_in_infer": extra,
            "min_iou": min((p["iou"] for p in pairs), default=None),
            "max_score_diff": max((round(abs(p["score_nudenet"] - p["score_infer"]), 4) for p in pairs),
                                  default=None)}


def _throughput(program: Any, payloads: list[bytes], batch: int, rounds: int = 5) -> dict[str, float]:
    """Images/s of ``prepare`` (decode + letterbox, one thread) and of the batch step, in process."""
    data = [payloads[i % len(payloads)] for i in range(batch)]
    prep = run = 0.0
    for r in range(rounds + 1):
        inputs: dict[str, Any] = {"image": np.array(data, dtype=object).reshape(-1, 1)}
        t0 = time.perf_counter()
        program.prepare(inputs)
        t1 = time.perf_counter()
        program.run(inputs, ())
        t2 = time.perf_counter()
        if r:  # the first round warms up
            prep, run = prep + t1 - t0, run + t2 - t1
    n = batch * rounds
    return {"batch": batch, "prepare_images_per_s": n / prep, "run_images_per_s": n / run,
            "images_per_s": n / (prep + run)}


def _session_batching(program: Any, batch: int, rounds: int = 5) -> dict[str, float]:
    """The ONNX file alone: one call for ``batch`` images against ``batch`` calls of one (what a file with a
    fixed batch of 1 costs)."""
    pixels = np.zeros((batch, program.input_h, program.input_w, 3), np.uint8)
    program.raw_output(pixels)
    t0 = time.perf_counter()
    for _ in range(rounds):
        program.raw_output(pixels)
    t1 = time.perf_counter()
    for _ in range(rounds):
        for i in range(batch):
            program.raw_output(pixels[i:i + 1])
    t2 = time.perf_counter()
    return {"batch": batch, "one_call_images_per_s": batch * rounds / (t1 - t0),
            "per_image_images_per_s": batch * rounds / (t2 - t1)}


def _synthetic(program: Any) -> dict[str, Any]:
    """A known false positive, not a photo: scikit-image's colour wheel (NudeNet itself calls it
    BUTTOCKS_EXPOSED at 0.83)."""
    wheel = _skimage("colorwheel")
    if wheel is None:
        return {"skipped": "scikit-image is not installed"}
    wheel = np.ascontiguousarray(wheel[:, :, :3])
    inputs: dict[str, Any] = {"image": np.array([_encode(wheel)], dtype=object).reshape(-1, 1)}
    program.prepare(inputs)
    out = program.run(inputs, ())
    verdict = {"verdict": out["verdict"][0, 0].decode()} if "verdict" in out else {}
    return {"colorwheel": {"detections": _detections(out, 0), **verdict}}


def evaluate(model_dir: Path, *, batch: int = 16) -> dict[str, Any]:
    """The moderation model at ``model_dir`` (``<repo>/<name>``) on :func:`sample_photos` and their mirror images:
    detections and verdict per photo (all should be safe), throughput in process, and the cross-check against
    NudeNet's own detector (skipped, with a note, without nudenet)."""
    from infer.runtimes.vision_detect import DetectProgram

    version = Path(model_dir) / "1"
    params = json.loads((version / "kernel.json").read_text())["params"]
    program = DetectProgram(version, params)
    photos = sample_photos()
    photos |= {f"{name} (mirrored)": np.ascontiguousarray(im[:, ::-1]) for name, im in list(photos.items())}
    payloads = [_encode(im) for im in photos.values()]
    inputs: dict[str, Any] = {"image": np.array(payloads, dtype=object).reshape(-1, 1)}
    program.prepare(inputs)
    out = program.run(inputs, ())
    names = list(photos)
    detections = {name: _detections(out, i) for i, name in enumerate(names)}
    result: dict[str, Any] = {"photos": names, "detections": detections,
                              "throughput": _throughput(program, payloads, batch),
                              "session_batching": _session_batching(program, batch)}
    if "verdict" in out:
        result["verdicts"] = {name: out["verdict"][i, 0].decode() for i, name in enumerate(names)}
        result["unsafe_scores"] = {name: float(out["unsafe_score"][i, 0]) for i, name in enumerate(names)}
    result["synthetic"] = _synthetic(program)
    try:
        result["same_output"] = _same_output(photos, [x.decode() for x in program.labels[:-1]], params)
        result["cross_check"] = _cross_check(detections, photos)
    except ImportError as e:
        result["cross_check"] = {"skipped": f"nudenet is not installed ({e})"}
    return result
