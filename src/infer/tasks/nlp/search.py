"""Models on the NLP family's sentence encoder (:mod:`infer.runtimes.nlp_search`): ``nlp_similarity``,
``nlp_search`` over an index of texts, and ``nlp_summarize`` (extractive summaries by TextRank).

Each is written from a repository's ``nlp_embed`` model (:func:`infer.tasks.nlp.encoder.write_encoder_model`):
its ONNX file, ``tokenizer.json`` and tokenizer parameters are copied, so the new model embeds exactly as the
encoder serves (FP32 or INT8, whichever that model holds). Models are written beside the repository entry and
renamed over it, after the program has loaded from the written files (a broken model fails here, not at serve
time). Repository files are ONNX, JSON and ``.npz`` (``allow_pickle=False``), never pickles.

:func:`evaluate_summaries` measures the summaries on pseudo-documents made of AG News rows (see its docstring for
what that does and does not measure); :func:`evaluate_search` measures search as nearest-neighbour intent retrieval
on CLINC150.

    python -m infer.tasks.nlp.search [REPO] [--data DIR] [--documents 300]   # build on the encoder, evaluate
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from infer.core.files import write_atomic
from infer.tasks.kernel_models import kernel_config, staged_model

__all__ = ["build_text_index", "evaluate_search", "evaluate_summaries", "index_folder", "read_texts",
           "write_similarity_model", "write_summarize_model"]


def _encoder(repo: Path, encoder: str) -> tuple[Path, dict[str, Any]]:
    """The version directory of the repository's encoder model and its parameters."""
    source = Path(repo) / encoder / "1"
    try:
        doc = json.loads((source / "kernel.json").read_text())
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"no encoder model '{encoder}' in {repo} ({e}): build it first") from None
    if doc.get("program") != "nlp_embed":
        raise ValueError(f"model '{encoder}' is program {doc.get('program')!r}, not the nlp_embed encoder")
    return source, dict(doc.get("params", {}))


def _write_model(repo: Path, name: str, program: str, encoder: str, params: dict[str, Any],
                 files: dict[str, bytes], loader: Callable[[Path, dict[str, Any]], Any],
                 max_batch_size: int) -> Path:
    """Write ``repo/name`` (version 1): the encoder's files, ``files``, and ``kernel.json`` running ``program``
    with the encoder's parameters updated by ``params``; config.pbtxt from the loaded program's tensors."""
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be positive")
    source, enc = _encoder(repo, encoder)
    with staged_model(repo, name) as staging:
        version = staging / "1"
        for key, default in (("model", "model.onnx"), ("tokenizer", "tokenizer.json")):
            write_atomic(version / str(enc.get(key, default)), (source / str(enc.get(key, default))).read_bytes())
        for f, data in files.items():
            write_atomic(version / f, data)
        merged = {**enc, **params}
        write_atomic(version / "kernel.json", json.dumps({"program": program, "params": merged}, indent=1))
        loaded = loader(version, merged)
        write_atomic(staging / "config.pbtxt",
                     kernel_config(name, loaded.inputs, loaded.outputs, max_batch_size=max_batch_size))
    return Path(repo) / name


def write_similarity_model(repo: Path, *, name: str = "nlp_similarity", encoder: str = "nlp_embed",
                           max_batch_size: int = 64) -> Path:
    """Write ``name``: ``text`` and ``other`` -> ``similarity`` (the cosine of their embeddings)."""
    from infer.runtimes.nlp_search import SimilarityProgram

    return _write_model(repo, name, "nlp_similarity", encoder, {}, {}, SimilarityProgram, max_batch_size)


def write_summarize_model(repo: Path, *, name: str = "nlp_summarize", encoder: str = "nlp_embed",
                          sentences: int = 3, max_sentences: int = 512, max_batch_size: int = 16) -> Path:
    """Write ``name``: a document -> its ``sentences`` most central sentences (TextRank) and its sentence count."""
    from infer.runtimes.nlp_search import SummarizeProgram

    params = {"sentences": int(sentences), "max_sentences": int(max_sentences)}
    return _write_model(repo, name, "nlp_summarize", encoder, params, {}, SummarizeProgram, max_batch_size)


def _embed_texts(program: Any, texts: Sequence[str], batch: int) -> NDArray[np.float32]:
    """Embeddings ``[N, D]`` of ``texts`` in order through the encoder program's prepare and batch steps (texts
    sorted by length first, so that each call pads little)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts = []
    for a in range(0, len(order), batch):
        inputs: dict[str, Any] = {"text": np.array([texts[i].encode() for i in order[a:a + batch]], object)}
        program.prepare(inputs)
        parts.append(np.asarray(program.run(inputs, ("embedding",))["embedding"], np.float32))
    out = np.empty((len(texts), parts[0].shape[1]), np.float32)
    out[np.asarray(order)] = np.concatenate(parts)
    return out


def build_text_index(repo: Path, texts: dict[str, str], *, name: str = "nlp_search", encoder: str = "nlp_embed",
                     neighbours: int = 5, batch: int = 64, max_batch_size: int = 64) -> Path:
    """Embed ``texts`` (id -> text) with the repository's ``encoder`` model, exactly as it serves (a text longer
    than its ``max_length`` tokens is embedded from its beginning), and write ``name``: that encoder plus
    ``index.npz``, answering each query text with its ``neighbours`` nearest ids."""
    import io

    from infer.runtimes.nlp_programs import EmbedProgram
    from infer.runtimes.nlp_search import SearchProgram

    if not texts:
        raise ValueError("an index needs at least one text")
    if neighbours < 1:
        raise ValueError("neighbours must be at least 1")
    source, enc = _encoder(repo, encoder)
    ids = [str(i) for i in texts]
    vectors = _embed_texts(EmbedProgram(source, enc), [texts[i] for i in texts], batch)
    buffer = io.BytesIO()
    np.savez(buffer, embeddings=vectors, ids=np.array(ids, dtype=str))
    params = {"index": "index.npz", "neighbours": min(neighbours, len(ids))}
    return _write_model(repo, name, "nlp_search", encoder, params, {"index.npz": buffer.getvalue()}, SearchProgram,
                        max_batch_size)


def read_texts(source: Path) -> dict[str, str]:
    """Texts to index from ``source``: a JSON-lines file (one ``{"id": ..., "text": ...}`` object a line), or a
    folder of ``.txt`` files (id: the file name) and ``.jsonl`` files, not recursing. Text must be UTF-8; an id
    given twice is an error."""
    source = Path(source)
    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file())
    texts: dict[str, str] = {}

    def add(key: str, text: str, where: str) -> None:
        if key in texts:
            raise ValueError(f"{where}: id {key!r} given twice")
        texts[key] = text

    for path in files:
        try:
            if path.suffix == ".txt" and path != source:
                add(path.name, path.read_text(encoding="utf-8"), str(path))
            elif path.suffix in (".jsonl", ".json") or path == source:
                for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if not isinstance(item, dict) or not isinstance(item.get("text"), str) or "id" not in item:
                        raise ValueError(f"line {n}: needs an object with 'id' and a string 'text'")
                    add(str(item["id"]), item["text"], f"{path}:{n}")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON lines ({e})") from None
    return texts


def index_folder(repo: Path, source: Path, **kwargs: Any) -> tuple[Path, int]:
    """Index the texts of ``source`` (see :func:`read_texts`) into ``repo`` with :func:`build_text_index` (its
    keyword arguments pass through); the model's path and how many texts it holds."""
    texts = read_texts(source)
    if not texts:
        raise ValueError(f"no texts in {source} (.txt files, or .jsonl lines with 'id' and 'text')")
    return build_text_index(repo, texts, **kwargs), len(texts)


# --- evaluation ------------------------------------------------------------------------------------------------

def _pseudo_documents(texts: Sequence[str], labels: Sequence[str], documents: int, seed: int,
                      majority: tuple[int, int], intruders: tuple[int, int]) -> list[tuple[str, list[int], list[bool]]]:
    """Documents of ``majority`` (inclusive range) rows of one label and ``intruders`` rows of another, shuffled,
    joined by a space; each with its rows' start offsets and whether each row is of the majority label. Every row
    is used once at most."""
    rng = np.random.default_rng(seed)
    names = sorted(set(labels))
    pools = {n: [int(i) for i in rng.permutation([i for i, x in enumerate(labels) if x == n])] for n in names}
    out = []
    for _ in range(documents):
        main = names[int(rng.integers(len(names)))]
        other = [n for n in names if n != main][int(rng.integers(len(names) - 1))]
        m, j = int(rng.integers(majority[0], majority[1] + 1)), int(rng.integers(intruders[0], intruders[1] + 1))
        if len(pools[main]) < m or len(pools[other]) < j:
            raise ValueError(f"not enough rows for {documents} documents")
        rows = [(pools[main].pop(), True) for _ in range(m)] + [(pools[other].pop(), False) for _ in range(j)]
        order = rng.permutation(len(rows))
        parts, starts, flags, at = [], [], [], 0
        for k in order:
            row, flag = rows[int(k)]
            parts.append(texts[row])
            starts.append(at)
            flags.append(flag)
            at += len(texts[row]) + 1
        out.append((" ".join(parts), starts, flags))
    return out


def _row_of(spans: NDArray[np.int64], starts: Sequence[int], length: int) -> NDArray[np.int64]:
    """For each sentence span, the row holding most of its characters."""
    bounds = np.array([*starts, length + 1], np.int64)
    lo = np.maximum(spans[:, :1], bounds[None, :-1])
    hi = np.minimum(spans[:, 1:], bounds[None, 1:])
    return np.asarray(np.argmax(hi - lo, axis=1), np.int64)


def _boundaries_found(text: str, starts: Sequence[int], spans: NDArray[np.int64]) -> NDArray[np.int64]:
    """Row boundaries of a pseudo-document, and those the splitter found (a sentence starts there, or after the
    row's opening quotes): [all, found, after a row that ends in a terminator, found among those]."""
    found = set(spans[:, 0].tolist())
    out = np.zeros(4, np.int64)
    for s in starts[1:]:
        lead = len(text[s:s + 8]) - len(text[s:s + 8].lstrip("\"'\u201c "))
        hit = any(s + i in found for i in range(lead + 1))
        terminal = text[:s - 1].rstrip().endswith((".", "!", "?", "…", '"', "'", "\u201d", "\u2019", ")"))
        out += (1, hit, terminal, hit and terminal)
    return out


def _tfidf_textrank(program: Any, sentences: list[list[str]]) -> list[NDArray[np.float64]]:
    """Lexical TextRank: the same PageRank on the TF-IDF cosine of the sentences (fitted on all of them)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from infer.runtimes.nlp_search import pagerank

    vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit([s for d in sentences for s in d])
    out = []
    for d in sentences:
        x = vectorizer.transform(d)
        w = np.asarray((x @ x.T).todense(), np.float64)
        out.append(pagerank(w[None], np.array([len(d)]), damping=program.damping)[0])
    return out


def _pick(scores: NDArray[np.floating[Any]], k: int) -> NDArray[np.int64]:
    from kernels.ranking import top_k

    return np.sort(top_k(np.asarray(scores, np.float64)[None, :], k)[0])


def evaluate_summaries(repo: Path, data_dir: Path, *, name: str = "nlp_summarize", documents: int = 300,
                       seed: int = 0, majority: tuple[int, int] = (5, 10), intruders: tuple[int, int] = (1, 2),
                       batch: int = 16) -> dict[str, Any]:
    """Topical coherence of ``name``'s summaries on pseudo-documents: ``majority`` AG News rows of one topic and
    ``intruders`` rows of another, shuffled and joined. A summary's *topic precision* is the share of its
    sentences that come from the majority topic's rows (each sentence attributed to the row holding most of its
    characters); *clean* means none comes from an intruder. Compared on the same sentences with: random choice
    (the expected value: the majority's share of the sentences), the first ``k`` sentences (lead), the sentences
    nearest the document's mean embedding (centroid) and TextRank on TF-IDF cosine (the lexical original).

    What it measures: whether the chosen sentences are central to what most of the document is about. What it
    does not: informativeness against a reference summary (no CNN/DailyMail or similar offline), redundancy,
    readability; AG News topics are coarse (two World rows are usually unrelated stories), and shuffled rows carry
    no lead bias, so lead here is no better than random, unlike on real news. Also reported: how many row
    boundaries (each a true sentence end) the splitter found, and the served path's documents per second."""
    from infer.runtimes.nlp_search import SummarizeProgram
    from infer.tasks.nlp.text import load_corpus

    version = Path(repo) / name / "1"
    program = SummarizeProgram(version, json.loads((version / "kernel.json").read_text())["params"])
    corpus = load_corpus(data_dir)
    made = _pseudo_documents(corpus.texts, corpus.labels, documents, seed, majority, intruders)
    k = program.sentences
    rows: dict[str, list[float]] = {m: [] for m in ("textrank", "centroid", "tfidf_textrank", "lead", "random")}
    clean: dict[str, list[float]] = {m: [] for m in rows}
    boundaries = np.zeros(4, np.int64)
    sentences_total = 0
    clock = np.zeros(3)  # seconds splitting and tokenizing, in the encoder, ranking
    for a in range(0, len(made), batch):
        part = made[a:a + batch]
        t0 = time.perf_counter()
        docs = program.documents([text for text, _, _ in part])
        t1 = time.perf_counter()
        embeddings = program.sentence_embeddings(docs)
        t2 = time.perf_counter()
        if len(embeddings) != len(docs):
            raise ValueError(f"a pseudo-document has at most {k} sentences: raise majority")
        ranks = program.textrank(embeddings)
        clock += (t1 - t0, t2 - t1, time.perf_counter() - t2)
        pieces = [[text[s:e] for s, e in d.spans] for (text, _, _), d in zip(part, docs, strict=True)]
        lexical = _tfidf_textrank(program, pieces)
        for (text, starts, flags), d, emb, rank, lex in zip(part, docs, embeddings, ranks, lexical, strict=True):
            majority_sentence = np.asarray(flags)[_row_of(d.spans, starts, len(text))]
            boundaries += _boundaries_found(text, starts, d.spans)
            sentences_total += len(d.spans)
            centre = emb.mean(axis=0)
            for method, chosen in (("textrank", _pick(rank, k)), ("centroid", _pick(emb @ centre, k)),
                                   ("tfidf_textrank", _pick(lex, k)), ("lead", np.arange(k))):
                rows[method].append(float(majority_sentence[chosen].mean()))
                clean[method].append(float(majority_sentence[chosen].all()))
            s, good = len(majority_sentence), int(majority_sentence.sum())
            rows["random"].append(good / s)
            clean["random"].append(float(np.prod([(good - i) / (s - i) for i in range(k)])))
    start = time.perf_counter()
    for a in range(0, len(made), batch):
        inputs: dict[str, Any] = {"text": np.array([t.encode() for t, _, _ in made[a:a + batch]], object)}
        program.prepare(inputs)
        program.run(inputs, ("summary", "sentence_count"))
    seconds = time.perf_counter() - start
    return {"documents": len(made), "sentences": k, "majority_rows": list(majority),
            "intruder_rows": list(intruders), "sentences_per_document": sentences_total / len(made),
            "topic_precision": {m: float(np.mean(v)) for m, v in rows.items()},
            "topic_precision_stderr": {m: float(np.std(v) / np.sqrt(len(v))) for m, v in rows.items()},
            "clean_summaries": {m: float(np.mean(v)) for m, v in clean.items()},
            "row_boundaries": int(boundaries[0]), "row_boundaries_split": float(boundaries[1] / boundaries[0]),
            "row_boundaries_after_terminator": int(boundaries[2]),
            "row_boundaries_after_terminator_split": float(boundaries[3] / boundaries[2]),
            "served_documents_per_s": len(made) / seconds, "served_sentences_per_s": sentences_total / seconds,
            "seconds_split_tokenize_encode_rank": [round(float(x), 3) for x in clock], "batch": batch,
            "corpus": corpus.source}


def _auroc(positive: NDArray[np.floating[Any]], negative: NDArray[np.floating[Any]]) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney U)."""
    greater = (positive[:, None] > negative[None, :]).mean()
    equal = (positive[:, None] == negative[None, :]).mean()
    return float(greater + equal / 2)


def evaluate_search(repo: Path, data_dir: Path, *, encoder: str = "nlp_embed", neighbours: int = 5,
                    batch: int = 64) -> dict[str, Any]:
    """Search as nearest-neighbour intent retrieval on CLINC150 (``nlp/clinc150/train_val.json``): its 15,000
    training utterances indexed (in a temporary repository holding a copy of ``encoder``), its 3,000 validation
    utterances as queries. Top-1: the nearest utterance has the query's intent; top-k vote: the most frequent
    intent of the ``neighbours`` (ties to the nearer); out of scope: AUROC of the best similarity, in-scope
    validation queries against the 100 out-of-scope ones (does a low best match flag an unknown request?)."""
    import tempfile

    from infer.runtimes.nlp_search import SearchProgram

    path = Path(data_dir)
    for candidate in (path, path / "clinc150", path / "nlp" / "clinc150"):
        if (candidate / "train_val.json").is_file():
            path = candidate / "train_val.json"
            break
    data = json.loads(path.read_text())
    train, val, oos = data["train"], data["val"], data["oos_val"]
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(Path(repo) / encoder, Path(tmp) / encoder)
        t0 = time.perf_counter()
        model = build_text_index(Path(tmp), {str(i): text for i, (text, _) in enumerate(train)}, encoder=encoder,
                                 neighbours=neighbours, batch=batch)
        index_s = time.perf_counter() - t0
        version = model / "1"
        program = SearchProgram(version, json.loads((version / "kernel.json").read_text())["params"])
        queries = [text for text, _ in val] + [text for text, _ in oos]
        found, best = [], []
        t0 = time.perf_counter()
        for a in range(0, len(queries), batch):
            inputs: dict[str, Any] = {"text": np.array([q.encode() for q in queries[a:a + batch]], object)}
            program.prepare(inputs)
            out = program.run(inputs, ("neighbours", "similarity"))
            found.append(out["neighbours"])
            best.append(out["similarity"][:, 0])
        query_s = time.perf_counter() - t0
    intents = np.array([intent for _, intent in train], dtype=object)
    got = intents[np.array([[int(x) for x in row] for row in np.concatenate(found)])]
    want = np.array([intent for _, intent in val], dtype=object)
    votes = []
    for row in got[:len(val)]:
        names, counts = np.unique(row, return_counts=True)
        tied = set(names[counts == counts.max()])
        votes.append(next(x for x in row if x in tied))
    sim = np.concatenate(best).astype(np.float64)
    return {"indexed": len(train), "queries": len(val), "neighbours": neighbours,
            "top1_intent_accuracy": float(np.mean(got[:len(val), 0] == want)),
            "topk_vote_intent_accuracy": float(np.mean(np.array(votes, dtype=object) == want)),
            "out_of_scope_auroc": _auroc(sim[:len(val)], sim[len(val):]),
            "index_texts_per_s": len(train) / index_s, "queries_per_s": len(queries) / query_s}


def main(argv: Sequence[str] | None = None) -> int:
    """Write the summarize model on each encoder of REPO (exporting FP32 and INT8 encoders into it when it has
    none), evaluate summaries on AG News pseudo-documents and search on CLINC150; print the figures as JSON."""
    import argparse
    import tempfile

    from infer.tasks.nlp.text import default_data_dir

    parser = argparse.ArgumentParser(prog="python -m infer.tasks.nlp.search", description=main.__doc__)
    parser.add_argument("repo", type=Path, nargs="?", default=None, help="a repository (default: a temporary one)")
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="the shared data root")
    parser.add_argument("--documents", type=int, default=300, help="pseudo-documents to summarise")
    parser.add_argument("--no-search", action="store_true", help="skip the CLINC150 search evaluation")
    args = parser.parse_args(argv)
    if args.data is None:
        parser.error("no data directory: give --data (../shared/data is not beside the repository)")
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or Path(tmp)
        if not (repo / "nlp_embed" / "1" / "kernel.json").is_file():
            from infer.tasks.nlp.encoder import default_encoder_dir, export_onnx, quantize_int8, write_encoder_model

            fp32 = export_onnx(None, Path(tmp) / "fp32.onnx")
            int8 = quantize_int8(fp32, Path(tmp) / "int8.onnx")
            tokenizer = default_encoder_dir() / "tokenizer.json"
            write_encoder_model(repo, "nlp_embed", int8, tokenizer)
            write_encoder_model(repo, "nlp_embed_fp32", fp32, tokenizer)
        result: dict[str, Any] = {}
        for encoder in ("nlp_embed", "nlp_embed_fp32"):
            if not (repo / encoder / "1" / "kernel.json").is_file():
                continue
            name = encoder.replace("nlp_embed", "nlp_summarize")
            write_summarize_model(repo, name=name, encoder=encoder)
            result[name] = evaluate_summaries(repo, args.data, name=name, documents=args.documents)
            if not args.no_search:
                result[f"search on {encoder}"] = evaluate_search(repo, args.data, encoder=encoder)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
