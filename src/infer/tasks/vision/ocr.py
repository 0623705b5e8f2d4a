"""OCR for the vision family: PP-OCR ONNX files (a DB text detector, a 0/180 degree direction classifier and a CTC
line recogniser) written into a model repository and served as the ``vision_ocr`` kernel program
(:mod:`infer.runtimes.vision_ocr`), by infer's own runtime and scheduler.

:func:`default_models` finds the files the ``rapidocr`` package ships (Apache-2.0; the ``ocr`` extra); only
building needs it, serving needs the copied files alone. :func:`write_ocr_model` takes any PP-OCR detector,
recogniser and classifier exported to ONNX, with the recogniser's character dictionary (a text file, one character
a line, or the ``character`` metadata that RapidOCR's exports carry, written out as ``dictionary.txt``).

Evaluation: :func:`render_samples` draws known text with TrueType fonts (sentences, numbers, dates, prices; one to
three lines; light blur and noise), :func:`evaluate` reads them in process and reports the character error rate
(:func:`cer`) and images per second, beside RapidOCR's own engine on the same files when it runs offline.
"""

from __future__ import annotations

import io
import json
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infer.core.files import write_atomic
from infer.tasks.kernel_models import kernel_config, staged_model

__all__ = ["OcrEvaluation", "Sample", "cer", "default_models", "evaluate", "render_samples", "write_ocr_model"]

INSTALL_HINT = "pip install 'infer[ocr]'"
DEFAULT_FILES = {"det": "PP-OCRv6_det_small.onnx", "rec": "PP-OCRv6_rec_small.onnx",
                 "cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx"}
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansCondensed.ttf")


def default_models() -> dict[str, Path]:
    """The detector, recogniser and direction classifier that the installed ``rapidocr`` package ships
    (``det``, ``rec``, ``cls`` -> path), found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the OCR models come with the rapidocr package: {INSTALL_HINT}")
    root = Path(next(iter(spec.submodule_search_locations))) / "models"
    paths = {role: root / name for role, name in DEFAULT_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"rapidocr is installed but lacks {', '.join(missing)}: {INSTALL_HINT}")
    return paths


def _dictionary_text(rec: Path, dictionary: Path | None) -> str:
    """The recogniser's characters as a text file's contents: ``dictionary`` itself, else the ONNX metadata."""
    if dictionary is not None:
        return Path(dictionary).read_text(encoding="utf-8")
    from infer.runtimes.onnx import cpu_session

    meta = cpu_session(Path(rec)).get_modelmeta().custom_metadata_map
    if "character" not in meta:
        raise ValueError(f"{rec} carries no 'character' metadata: pass its dictionary file")
    return "\n".join(str(meta["character"]).splitlines()) + "\n"


def write_ocr_model(repo: Path, name: str = "vision_ocr", *, det: Path | None = None, rec: Path | None = None,
                    cls: Path | None = None, use_cls: bool = True, dictionary: Path | None = None,
                    max_lines: int = 32, max_batch_size: int = 16, params: dict[str, Any] | None = None) -> Path:
    """Write ``name``: ``image`` BYTES in; ``text``, ``lines``, ``boxes``, ``confidence``, ``count`` out.

    ``det``, ``rec``, ``cls`` default to :func:`default_models`; ``use_cls=False`` leaves the direction classifier
    out. ``dictionary`` is the recogniser's character file (default: its ONNX ``character`` metadata).
    ``params`` overrides the program's other parameters (thresholds, detector sizes; see
    :mod:`infer.runtimes.vision_ocr`)."""
    if not 1 <= max_lines <= 1024:
        raise ValueError(f"max_lines must be within 1..1024 (got {max_lines})")
    files: dict[str, Path | None] = {"det": det, "rec": rec, "cls": cls}
    if det is None or rec is None or (use_cls and cls is None):
        shipped = default_models()
        files = {role: shipped[role] if path is None else path for role, path in files.items()}
    if not use_cls:
        files["cls"] = None
    from infer.runtimes.vision_ocr import OcrProgram

    with staged_model(repo, name) as staging:
        version = staging / "1"
        chars = _dictionary_text(Path(str(files["rec"])), dictionary)
        for role, path in files.items():
            if path is not None:
                write_atomic(version / f"{role}.onnx", Path(path).read_bytes())
        write_atomic(version / "dictionary.txt", chars.encode())
        program: dict[str, Any] = {**(params or {}), "det": "det.onnx", "rec": "rec.onnx",
                                   "dictionary": "dictionary.txt", "max_lines": max_lines}
        if files["cls"] is not None:
            program["cls"] = "cls.onnx"
        write_atomic(version / "kernel.json", json.dumps({"program": "vision_ocr", "params": program}).encode())
        loaded = OcrProgram(version, program)  # raises on files or parameters that do not fit, not in the server
        config = kernel_config(name, loaded.inputs, loaded.outputs, max_batch_size=max_batch_size, queue_delay_us=5000)
        write_atomic(staging / "config.pbtxt", config.encode())
    return repo / name


# ---- evaluation -----------------------------------------------------------------------------------------------

_WORDS = ("the quick brown fox jumps over lazy dog invoice total amount due payment received order number "
          "customer service delivery address street city account balance date time report summary page section "
          "table figure result value price discount shipping tax subtotal reference code model version release "
          "update system network server request response error warning status open closed pending approved "
          "morning evening market coffee water garden window station platform train ticket meeting room floor "
          "north south east west Monday Friday January August Paris London Berlin Tokyo").split()


def _phrase(rng: np.random.Generator) -> str:
    """A few words with the odd number, date, price, time or code among them."""
    words: list[str] = []
    for _ in range(int(rng.integers(2, 7))):
        kind = rng.random()
        if kind < 0.72:
            w = str(rng.choice(_WORDS))
            words.append(w.capitalize() if rng.random() < 0.2 else w)
        elif kind < 0.8:
            words.append(str(int(rng.integers(0, 100000))))
        elif kind < 0.86:
            day, month, year = int(rng.integers(1, 29)), int(rng.integers(1, 13)), int(rng.integers(1990, 2031))
            words.append(f"{day:02d}/{month:02d}/{year}")
        elif kind < 0.92:
            words.append(f"${rng.integers(1, 5000)}.{int(rng.integers(0, 100)):02d}")
        elif kind < 0.96:
            words.append(f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}")
        else:
            letters = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ"), 3))
            words.append(f"{letters}-{int(rng.integers(100, 1000))}")
    return " ".join(words)


def _font(index: int, size: int) -> Any:
    from PIL import ImageFont

    path = FONT_DIR / FONTS[index % len(FONTS)]
    return ImageFont.truetype(str(path), size) if path.is_file() else ImageFont.load_default(size=size)


@dataclass
class Sample:
    name: str
    image: bytes  # an encoded file (PNG, or JPEG for some)
    text: str  # the lines drawn, joined by newlines


def _render(rng: np.random.Generator, index: int) -> Sample:
    from PIL import Image, ImageDraw, ImageFilter

    lines = [_phrase(rng) for _ in range(1 if rng.random() < 0.65 else int(rng.integers(2, 4)))]
    font = _font(int(rng.integers(0, len(FONTS))), int(rng.integers(13, 44)))
    spacing = int(font.size * rng.uniform(0.4, 1.0))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = (round(v) for v in probe.multiline_textbbox((0, 0), "\n".join(lines), font=font,
                                                                          spacing=spacing))
    mx, my = int(rng.integers(6, 60)), int(rng.integers(6, 40))
    dark = rng.random() < 0.85  # dark text on a light ground, else the reverse
    contrast = int(rng.integers(90, 220))  # grey levels between ink and ground
    level = int(rng.integers(contrast, 256))
    ground = np.clip(level - rng.integers(0, 25, 3), 0, 255) if dark else np.clip(255 - level + rng.integers(0, 25, 3),
                                                                                   0, 255)
    ink = np.clip(ground - contrast, 0, 255) if dark else np.clip(ground + contrast, 0, 255)
    img = Image.new("RGB", (right - left + 2 * mx, bottom - top + 2 * my), tuple(int(v) for v in ground))
    ImageDraw.Draw(img).multiline_text((mx - left, my - top), "\n".join(lines), font=font,
                                       fill=tuple(int(v) for v in ink), spacing=spacing)
    if rng.random() < 0.3:  # a slightly skewed scan
        img = img.rotate(float(rng.uniform(-2.0, 2.0)), Image.Resampling.BICUBIC, expand=True,
                         fillcolor=tuple(int(v) for v in ground))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.1))))
    clean = np.asarray(img, dtype=np.float64)
    noisy = clean + rng.normal(0.0, float(rng.uniform(0.0, 9.0)), clean.shape)
    img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    jpeg = rng.random() < 0.3
    img.save(buf, format="JPEG", quality=int(rng.integers(70, 95))) if jpeg else img.save(buf, format="PNG")
    return Sample(f"sample-{index:03d}.{'jpg' if jpeg else 'png'}", buf.getvalue(), "\n".join(lines))


def render_samples(n: int, seed: int = 0) -> list[Sample]:
    """``n`` images of known text: one to three lines of words, numbers, dates, prices and codes in a DejaVu font
    (Pillow's own font where DejaVu is absent), 13-43 px, contrast 90-220 grey levels, some light text on dark,
    some turned by up to 2 degrees, half lightly blurred, all with a little Gaussian noise; PNG, or JPEG (quality
    70-94) for about a third."""
    rng = np.random.default_rng(seed)
    return [_render(rng, i) for i in range(n)]


def _normalised(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def cer(predicted: str, truth: str) -> float:
    """Character error rate: edit distance / characters of ``truth`` (1.0 per character for an empty truth's
    prediction), after NFKC normalisation (full-width punctuation as ASCII) and collapsing each run of whitespace,
    line breaks included, to one space: the reading, not the layout, is scored."""
    from kernels.ocr import edit_distance

    p, t = _normalised(predicted), _normalised(truth)
    distance = edit_distance(np.array([ord(c) for c in p], np.int64), np.array([ord(c) for c in t], np.int64))
    return distance / max(len(t), 1)


@dataclass
class OcrEvaluation:
    samples: int
    cer: float  # mean over samples
    exact: float  # share of samples read without an error
    images_per_s: float  # in process, decode to text, batches of ``batch``
    batch: int
    per_sample: dict[str, float] = field(default_factory=dict)
    peer: dict[str, Any] | None = None  # RapidOCR's own engine on the same files
    peer_note: str = ""


def _version_dir(model_dir: Path) -> Path:
    model_dir = Path(model_dir)
    if (model_dir / "kernel.json").is_file():
        return model_dir
    versions = sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise FileNotFoundError(f"{model_dir} has no version directory with a kernel.json")
    return versions[-1]


def _read_ours(model_dir: Path, samples: list[Sample], batch: int) -> tuple[list[str], float]:
    from infer.runtimes.vision_ocr import OcrProgram

    version = _version_dir(model_dir)
    program = OcrProgram(version, json.loads((version / "kernel.json").read_text())["params"])

    def read(chunk: list[Sample]) -> list[str]:
        inputs: dict[str, Any] = {"image": np.array([s.image for s in chunk], dtype=object).reshape(-1, 1)}
        program.prepare(inputs)
        return [t.decode() for t in program.run(inputs, ("text",))["text"][:, 0]]

    read(samples[:1])  # first calls allocate; not timed
    t0 = time.perf_counter()
    texts = [t for a in range(0, len(samples), batch) for t in read(samples[a:a + batch])]
    return texts, len(samples) / (time.perf_counter() - t0)


def _read_peer(samples: list[Sample]) -> tuple[list[str], float]:
    """RapidOCR's engine with its default configuration on the same files (one image per call, as it reads)."""
    default_models()  # its own files present: nothing to download
    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "error"})

    def read(image: bytes) -> str:
        out = engine(image)
        return "\n".join(getattr(out, "txts", None) or ())

    read(samples[0].image)
    t0 = time.perf_counter()
    texts = [read(s.image) for s in samples]
    return texts, len(samples) / (time.perf_counter() - t0)


def evaluate(model_dir: Path, samples: list[Sample], *, batch: int = 8, peer: bool = True) -> OcrEvaluation:
    """CER and speed of the model in ``model_dir`` (its newest version, or a version directory) on ``samples``,
    and of RapidOCR's own engine when ``peer`` and it is importable with its model files in place."""
    if not samples:
        raise ValueError("evaluate needs at least one sample")
    texts, rate = _read_ours(model_dir, samples, batch)
    errors = {s.name: cer(t, s.text) for s, t in zip(samples, texts, strict=True)}
    result = OcrEvaluation(len(samples), float(np.mean(list(errors.values()))),
                           float(np.mean([e == 0 for e in errors.values()])), rate, batch, errors)
    if not peer:
        return result
    try:
        peer_texts, peer_rate = _read_peer(samples)
    except Exception as e:  # not installed, its files missing, a download refused offline: no peer
        result.peer_note = f"RapidOCR peer skipped: {type(e).__name__}: {e}"
        return result
    peer_errors = {s.name: cer(t, s.text) for s, t in zip(samples, peer_texts, strict=True)}
    result.peer = {"engine": "rapidocr.RapidOCR() defaults", "cer": float(np.mean(list(peer_errors.values()))),
                   "exact": float(np.mean([e == 0 for e in peer_errors.values()])), "images_per_s": peer_rate,
                   "per_sample": peer_errors}
    return result
