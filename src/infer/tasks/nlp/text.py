"""The NLP family's models without a neural encoder: language identification, TF-IDF keywords and NMF topics
(served by :mod:`infer.runtimes.nlp_text`), built into a model repository and evaluated.

``write_language_model``  py3langid's byte-level naive Bayes model (BSD-3-Clause; langid.py by Marco Lui and
                          Timothy Baldwin) converted once into ``langid.npz``: the tokenizer DFA (``nextmove``
                          rows, ``nextmove_row``, ``out_feat``) and the naive Bayes tables (``ptc``, ``pc``,
                          ``classes``). py3langid is needed to build, never to serve.
``build_keywords_topics`` a ``TfidfVectorizer`` (unigrams and bigrams, English stop words plus the news wires'
                          bylines) and an NMF topic model fitted on AG News (``<data>/nlp/agnews/train.tsv``; every
                          fifth row held out for :func:`evaluate_text_models`), or, with no data directory, on the
                          paragraphs of Python's own documentation (``pydoc_data``, shipped with CPython).
``evaluate_text_models``  language agreement with py3langid and accuracy on labelled translations, keyword
                          sanity, topic purity and accuracy on held-out AG News; printed and returned.

Repository files are JSON and ``.npz`` (loaded with ``allow_pickle=False``), never pickles.

    python -m infer.tasks.nlp.text REPO [--data ../shared/data] [--evaluate]
"""

from __future__ import annotations

import argparse
import html
import io
import json
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from infer.core.files import write_atomic
from kernels import text as kt

__all__ = [
    "HOLDOUT_EVERY",
    "Corpus",
    "TextModels",
    "agnews_file",
    "build_keywords_topics",
    "default_data_dir",
    "evaluate_text_models",
    "load_corpus",
    "write_language_model",
]

HOLDOUT_EVERY = 5  # AG News rows 0, 5, 10, ... are held out of fitting for the evaluation
EXTRA_STOP_WORDS = ("reuters", "ap", "afp", "said")  # news wires' bylines and their reporting verb
_MIN_DF, _MAX_DF, _MAX_FEATURES = 2, 0.5, 100_000


def _config(name: str, outputs: Sequence[tuple[str, str, int]], max_batch_size: int) -> bytes:
    lines = [f'name: "{name}"', 'backend: "kernel"', f"max_batch_size: {max_batch_size}",
             'input { name: "text" data_type: TYPE_STRING dims: [ 1 ] }']
    lines += [f'output {{ name: "{n}" data_type: {t} dims: [ {d} ] }}' for n, t, d in outputs]
    lines += ["dynamic_batching { }", 'parameters: { key: "infer.warmup" value: { string_value: "false" } }']
    return ("\n".join(lines) + "\n").encode()


def _npz(**arrays: NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _kernel(program: str, params: dict[str, Any]) -> bytes:
    return json.dumps({"program": program, "params": params}, indent=1).encode()


# --- language --------------------------------------------------------------------------------------------------


def write_language_model(repo: Path, name: str = "nlp_language", *, max_batch_size: int = 128) -> Path:
    """Write ``name``: ``text`` in, ``language`` and ``confidence`` out, from the model py3langid ships."""
    import py3langid
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE)
    output = ident.tk_output
    if isinstance(output, dict):
        raise ValueError("py3langid >= 0.4 needed (one feature per DFA state)")
    nextmove = np.asarray(ident.tk_nextmove)
    rows = np.asarray(getattr(ident, "tk_row", np.arange(len(nextmove) // 256)))
    ptc = np.asarray(ident.nb_ptc)
    arrays = {"nextmove": nextmove.astype(np.uint32), "nextmove_row": rows.astype(np.uint32),
              "out_feat": np.asarray(output, np.int32), "ptc": ptc.astype(np.float16 if ptc.dtype == np.float16
                                                                          else np.float32),
              "pc": np.asarray(ident.nb_pc, np.float32), "classes": np.array(list(ident.nb_classes), dtype=str)}
    version = repo / name / "1"
    write_atomic(version / "langid.npz", _npz(**arrays))
    source = f"py3langid {getattr(py3langid, '__version__', '?')} (BSD-3-Clause), converted to arrays"
    write_atomic(version / "kernel.json", _kernel("nlp_language", {"model": "langid.npz", "source": source}))
    write_atomic(repo / name / "config.pbtxt", _config(name, [("language", "TYPE_STRING", 1),
                                                              ("confidence", "TYPE_FP32", 1)], max_batch_size))
    return repo / name


# --- corpus ----------------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    texts: list[str]
    labels: list[str]  # empty for an unlabelled corpus
    source: str

    def split(self) -> tuple[list[int], list[int]]:
        """Row numbers fitted on and held out (every ``HOLDOUT_EVERY``-th row)."""
        n = len(self.texts)
        return [i for i in range(n) if i % HOLDOUT_EVERY], list(range(0, n, HOLDOUT_EVERY))


def default_data_dir() -> Path | None:
    """``<project root>/../shared/data`` when it exists (the data sets beside a checkout), else None."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            candidate = parent.parent / "shared" / "data"
            return candidate if candidate.is_dir() else None
    return None


def agnews_file(data_dir: Path) -> Path:
    """AG News' ``train.tsv`` under ``data_dir``: the shared data root, its ``nlp`` or ``agnews`` folder, or the
    file itself."""
    for candidate in (data_dir, data_dir / "train.tsv", data_dir / "agnews" / "train.tsv",
                      data_dir / "nlp" / "agnews" / "train.tsv"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no AG News train.tsv under {data_dir}")


_ENTITY = re.compile(r"(?<!&)(#\d+|quot|amp|lt|gt|hellip|nbsp);")  # entities that lost their '&'
_TAG = re.compile(r"<[^>]*>")
_BOILERPLATE = re.compile(r"\(?\s*Quote, (?:Profile, Research|Chart)\s*\)?")


def clean_agnews(text: str) -> str:
    """AG News as scraped: HTML entities missing their ``&`` restored, tags and quote-page links removed."""
    text = _TAG.sub(" ", html.unescape(_ENTITY.sub(r"&\1;", text)))
    return " ".join(_BOILERPLATE.sub(" ", text).split())


def _fallback_texts() -> list[str]:
    from pydoc_data.topics import topics

    return [" ".join(p.split()) for v in topics.values() for p in re.split(r"\n\s*\n", v) if len(p.split()) >= 12]


def load_corpus(data_dir: Path | None = None, rows: int | None = None) -> Corpus:
    """AG News (cleaned, its first ``rows`` rows when given) from ``data_dir``, else the fallback corpus."""
    if data_dir is None:
        texts = _fallback_texts()[:rows]
        return Corpus(texts, [], f"Python documentation paragraphs (pydoc_data), {len(texts)} texts")
    path = agnews_file(data_dir)
    texts, labels = [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            text, _, label = line.rstrip("\n").rpartition("\t")
            if text:
                texts.append(clean_agnews(text))
                labels.append(label)
            if rows is not None and len(texts) >= rows:
                break
    return Corpus(texts, labels, f"AG News ({path.parent.name}/{path.name}), {len(texts)} rows")


# --- keywords and topics ---------------------------------------------------------------------------------------


@dataclass
class TextModels:
    keywords: Path
    topics: Path
    corpus: str
    fitted: int  # texts the models were fitted on
    vocabulary: int
    labels: list[str]  # each topic's label


def _fit(docs: list[str], topics: int) -> tuple[Any, Any]:
    """The fitted ``TfidfVectorizer`` and ``NMF`` (deterministic: the evaluation refits them to compare)."""
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

    n = len(docs)
    vec = TfidfVectorizer(ngram_range=(1, 2), stop_words=sorted(ENGLISH_STOP_WORDS | set(EXTRA_STOP_WORDS)),
                          min_df=_MIN_DF if n >= 50 else 1, max_df=_MAX_DF if n >= 50 else 1.0,
                          max_features=_MAX_FEATURES, dtype=np.float32)
    x = vec.fit_transform(docs)
    with warnings.catch_warnings():  # an NMF stopped at max_iter still factorises; the figures say how well
        warnings.simplefilter("ignore", ConvergenceWarning)
        nmf = NMF(topics, init="nndsvda", max_iter=400, random_state=0).fit(x)
    return vec, nmf


def _topic_labels(components: NDArray[np.float32], terms: list[str], n: int = 3) -> list[str]:
    """Each topic's ``n`` heaviest terms, a word dropped when a chosen bigram holds it (as keywords are)."""
    a, b = kt.bigram_parts(terms)
    k, v = components.shape
    indptr = np.arange(k + 1, dtype=np.int64) * v
    ids = np.tile(np.arange(v, dtype=np.int32), k)
    top, _ = kt.top_terms(indptr, ids, np.ascontiguousarray(components, np.float32).reshape(-1), a, b, n)
    return [", ".join(terms[i] for i in row if i >= 0) for row in top]


def build_keywords_topics(repo: Path, data_dir: Path | None = None, *, keywords_name: str = "nlp_keywords",
                          topics_name: str = "nlp_topics", topics: int = 20, top_k: int = 5, rows: int | None = None,
                          max_batch_size: int = 128) -> TextModels:
    """Fit the TF-IDF and the ``topics``-topic NMF on the corpus (:func:`load_corpus`; its held-out rows left
    out) and write both models; each model directory holds its own copy of the vocabulary and IDF."""
    corpus = load_corpus(data_dir, rows)
    fit_rows, _ = corpus.split() if corpus.labels else (list(range(len(corpus.texts))), [])
    docs = [corpus.texts[i] for i in fit_rows]
    if not 2 <= topics <= 1000 or len(docs) < topics:
        raise ValueError(f"topics must be within 2..1000 and at most the {len(docs)} texts")
    vec, nmf = _fit(docs, topics)
    terms = [str(t) for t in vec.get_feature_names_out()]
    components = np.asarray(nmf.components_, np.float32)
    labels = _topic_labels(components, terms)
    vocabulary = json.dumps({"terms": terms, "stop_words": sorted(vec.get_stop_words()),
                             "token_pattern": vec.token_pattern, "lowercase": True, "ngram_range": [1, 2],
                             "corpus": corpus.source}).encode()
    idf = _npz(idf=np.asarray(vec.idf_, np.float32))
    for name in (keywords_name, topics_name):
        write_atomic(repo / name / "1" / "vocabulary.json", vocabulary)
        write_atomic(repo / name / "1" / "tfidf.npz", idf)
    kw = repo / keywords_name
    write_atomic(kw / "1" / "kernel.json", _kernel("nlp_keywords", {"top_k": top_k}))
    write_atomic(kw / "config.pbtxt", _config(keywords_name, [("keywords", "TYPE_STRING", top_k),
                                                             ("keyword_scores", "TYPE_FP32", top_k)], max_batch_size))
    tp = repo / topics_name
    write_atomic(tp / "1" / "topics.npz", _npz(components=components))
    write_atomic(tp / "1" / "topics.json", json.dumps({"labels": labels}, indent=1).encode())
    write_atomic(tp / "1" / "kernel.json", _kernel("nlp_topics", {"iterations": 200}))
    write_atomic(tp / "config.pbtxt", _config(topics_name, [("topic", "TYPE_STRING", 1),
                                                           ("topic_weights", "TYPE_FP32", topics)], max_batch_size))
    return TextModels(kw, tp, corpus.source, len(docs), len(terms), labels)


# --- evaluation ------------------------------------------------------------------------------------------------


def _serve(program: Any, texts: Sequence[str], batch: int = 256) -> dict[str, NDArray[Any]]:
    """``program``'s outputs for ``texts``, through its prepare and batch steps as the server runs them."""
    parts: list[dict[str, NDArray[Any]]] = []
    for i in range(0, len(texts), batch):
        inputs: dict[str, Any] = {"text": np.array([t.encode() for t in texts[i:i + batch]], object).reshape(-1, 1)}
        program.prepare(inputs)
        parts.append(program.run(inputs, [s.name for s in program.outputs]))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


_PLACEHOLDER = re.compile(r"%[-+ #0-9.$*]*[hlLqjzt]*[a-zA-Z%]|\{[^{}]*\}|<[^<>]*>|\\[nt]|&\w+;|_(?=\w)")


def _mo_strings(path: Path) -> list[tuple[str, str]]:
    """``(msgid, msgstr)`` pairs of a GNU gettext catalog (plural forms: the first), the header left out."""
    data = path.read_bytes()
    order = "<" if data[:4] == b"\xde\x12\x04\x95" else ">"
    n, orig, trans = np.frombuffer(data, f"{order}u4", 5)[2:5].tolist() if len(data) >= 20 else (0, 0, 0)
    out = []
    for i in range(int(n)):
        (lo, oo), (lt, ot) = (np.frombuffer(data, f"{order}u4", 2, off + 8 * i).tolist() for off in (orig, trans))
        msgid, msgstr = data[oo:oo + lo], data[ot:ot + lt]
        if msgid and msgstr and msgid != msgstr:
            out.append((msgid.split(b"\0")[0].decode("utf-8", "replace"), msgstr.split(b"\0")[0].decode("utf-8",
                                                                                                          "replace")))
    return out


def translations(labels: Sequence[str], root: Path = Path("/usr/share/locale"), per_language: int = 400,
                 min_chars: int = 40) -> list[tuple[str, str]]:
    """``(language, text)``: translated messages of the programs installed on this machine (GNU gettext catalogs
    under ``root``, the language from the catalog's folder, script variants left out), placeholders removed, at
    least ``min_chars`` characters, languages in ``labels`` only, at most ``per_language`` each (a fixed sample)."""
    by_language: dict[str, set[str]] = {}
    alias = {"nb": "no", "iw": "he", "in": "id"}
    for mo in sorted(root.glob("*/LC_MESSAGES/*.mo")):
        if "@" in mo.parts[-3]:  # script variants (be@latin, tt@iqtelif, sr@latin...): labels too loose
            continue
        code = re.split(r"[_.]", mo.parts[-3])[0]
        code = alias.get(code, code)
        if code not in labels or code == "en":
            continue
        try:
            pairs = _mo_strings(mo)
        except (OSError, ValueError):
            continue
        for _, msgstr in pairs:
            text = " ".join(_PLACEHOLDER.sub(" ", msgstr).split())
            if len(text) >= min_chars and "\ufffd" not in text:
                by_language.setdefault(code, set()).add(text)
    rng = np.random.default_rng(0)
    out = []
    for code in sorted(by_language):
        texts = sorted(by_language[code])
        pick = rng.permutation(len(texts))[:per_language]
        out += [(code, texts[i]) for i in sorted(pick)]
    return out


def _other_texts(data_dir: Path | None) -> list[str]:
    """English texts of the shared data sets (AG News, SST-2 dev, CLINC150) when present."""
    out: list[str] = []
    if data_dir is None:
        return out
    nlp = data_dir / "nlp" if (data_dir / "nlp").is_dir() else data_dir
    for tsv in (nlp / "agnews" / "train.tsv", nlp / "sst2" / "dev.tsv"):
        if tsv.is_file():
            out += [line.split("\t")[0] for line in tsv.read_text(encoding="utf-8").splitlines()[1:]]
    clinc = nlp / "clinc150" / "train_val.json"
    if clinc.is_file():
        out += [t for rows in json.loads(clinc.read_text()).values() for t, _ in rows][::5]
    return out


def _snippets(texts: Sequence[str], n: int, seed: int = 1) -> list[str]:
    """Short pieces (3-30 characters) cut from ``texts``, some uppercased: the hard cases."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = texts[int(rng.integers(len(texts)))]
        a = int(rng.integers(max(len(t) - 3, 1)))
        s = t[a:a + int(rng.integers(3, 31))]
        out.append(s.upper() if rng.random() < 0.1 else s)
    return out


def evaluate_language(repo: Path, data_dir: Path | None, name: str = "nlp_language") -> dict[str, Any]:
    import time

    import py3langid
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from infer.runtimes.nlp_text import LanguageProgram

    program = LanguageProgram(repo / name / "1", json.loads((repo / name / "1" / "kernel.json").read_text())["params"])
    normed = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    labelled = translations([x.decode() for x in program.labels[:-1]])
    texts = [t for _, t in labelled] + _other_texts(data_dir)
    texts += _snippets(texts, len(texts) // 4)
    t0 = time.perf_counter()
    ours = _serve(program, texts)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = [py3langid.classify(t)[0] for t in texts]
    ref_s = time.perf_counter() - t0
    ref_norm = [normed.classify(t) for t in texts]  # the label its summed probabilities pick, and that sum
    got = [x.decode() for x in ours["language"][:, 0]]
    agree = np.array([a == b for a, b in zip(got, ref, strict=True)])
    featureless = np.array([g == "" for g in got])  # py3langid answers its first class there, at the float floor
    same = np.array([g == r for g, (r, _) in zip(got, ref_norm, strict=True)]) & ~featureless
    ref_conf = np.array([c for _, c in ref_norm])
    truth = [c for c, _ in labelled]
    hits = np.array([g == c for g, c in zip(got, truth, strict=False)])
    per_language = {c: float(np.mean([h for h, d in zip(hits, truth, strict=True) if d == c])) for c in set(truth)}
    return {"texts": len(texts), "agreement": float(agree.mean()), "featureless": int(featureless.sum()),
            "agreement_with_features": float(agree[~featureless].mean()),
            "disagreements": int((~agree & ~featureless).sum()),
            "confidence_max_abs_diff": float(np.abs(ours["confidence"][same, 0] - ref_conf[same]).max()),
            "labelled": len(labelled), "languages": len(per_language),
            "accuracy": float(hits.mean()) if len(hits) else float("nan"), "per_language": per_language,
            "ours_texts_per_s": len(texts) / ours_s, "py3langid_texts_per_s": len(texts) / ref_s,
            "examples": [(t, g, r) for t, g, r, ok in zip(texts, got, ref, agree, strict=True) if not ok and g][:5]}


def evaluate_keywords_topics(repo: Path, data_dir: Path, keywords_name: str = "nlp_keywords",
                             topics_name: str = "nlp_topics", rows: int | None = None) -> dict[str, Any]:
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    from infer.runtimes.nlp_text import KeywordsProgram, TopicsProgram

    def params(name: str) -> dict[str, Any]:
        return dict(json.loads((repo / name / "1" / "kernel.json").read_text())["params"])

    corpus = load_corpus(data_dir, rows)
    fit_rows, held = corpus.split()
    labels = np.array(corpus.labels)
    keywords = KeywordsProgram(repo / keywords_name / "1", params(keywords_name))
    held_texts = [corpus.texts[i] for i in held]
    kw = _serve(keywords, held_texts)["keywords"]
    stop = keywords._tfidf.stop_words
    inside = [k.decode() in set(kt.analyze(t, stop)) for t, row in zip(held_texts, kw, strict=True) for k in row if k]
    nested = sum(len({w for k in row if b" " in k for w in k.split(b" ")} & set(row)) for row in kw)
    per_label = {lab: [w.decode() for w, _ in Counter(k for row in kw[labels[held] == lab] for k in row if k)
                       .most_common(8)] for lab in sorted(set(corpus.labels))}
    topics = TopicsProgram(repo / topics_name / "1", params(topics_name))
    w_fit = topics.weights(_prepared(topics, [corpus.texts[i] for i in fit_rows]))
    w_held = topics.weights(_prepared(topics, held_texts))
    y_fit, y_held = labels[fit_rows], labels[held]
    top_fit, top_held = w_fit.argmax(1), w_held.argmax(1)
    majority = {k: Counter(y_fit[top_fit == k]).most_common(1)[0][0] for k in set(top_fit.tolist())}
    mapped = np.array([majority.get(k, "") for k in top_held.tolist()])
    purity = sum(Counter(y_held[top_held == k]).most_common(1)[0][1] for k in set(top_held.tolist())) / len(held)
    lr = LogisticRegression(max_iter=2000).fit(w_fit, y_fit)

    def tfidf(texts: list[str]) -> Any:
        ptr, ids, val = topics._tfidf.rows(_prepared(topics, texts))
        return sparse.csr_matrix((val, ids, ptr), shape=(len(texts), len(topics._tfidf.terms)))

    full = LogisticRegression(max_iter=2000).fit(tfidf([corpus.texts[i] for i in fit_rows]), y_fit)
    vec, nmf = _fit([corpus.texts[i] for i in fit_rows], len(topics.labels) - 1)  # as built: the same model
    if not np.allclose(nmf.components_.T, topics.components_t, atol=1e-6):
        raise ValueError(f"{repo / topics_name} was not built from {data_dir} as build_keywords_topics does")
    sk_x = vec.transform(held_texts)
    sk_w = nmf.transform(sk_x)
    return {"held_out": len(held), "keywords_in_text": float(np.mean(inside)) if inside else float("nan"),
            "keywords_per_text": float((kw != b"").sum(1).mean()), "unigram_inside_bigram": nested,
            "keywords_by_label": per_label,
            "examples": [(held_texts[i][:100], [k.decode() for k in kw[i] if k]) for i in range(3)],
            "topics": len(topics.labels) - 1, "topic_labels": [x.decode() for x in topics.labels[:-1]],
            "purity": float(purity), "argmax_topic_accuracy": float(np.mean(mapped == y_held)),
            "lr_topic_weights_accuracy": float(lr.score(w_held, y_held)),
            "lr_full_tfidf_accuracy": float(full.score(tfidf(held_texts), y_held)),
            "tfidf_max_abs_diff": float(abs(tfidf(held_texts) - sk_x).max()),
            "nmf_max_abs_diff": float(np.abs(w_held - sk_w).max()),
            "nmf_argmax_agreement": float(np.mean(top_held == sk_w.argmax(1))),
            "nmf_argmax_agreement_nonzero": float(np.mean((top_held == sk_w.argmax(1))[sk_w.max(1) > 0]))}


def _prepared(program: Any, texts: Sequence[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {"text": np.array([t.encode() for t in texts], object).reshape(-1, 1)}
    program.prepare(inputs)
    return inputs


def evaluate_text_models(repo: Path, data_dir: Path | None, *, language_name: str = "nlp_language",
                         keywords_name: str = "nlp_keywords", topics_name: str = "nlp_topics") -> dict[str, Any]:
    """Evaluate the three models in ``repo`` (keywords and topics built by :func:`build_keywords_topics` from the
    same ``data_dir``), print the figures and return them."""
    lang = evaluate_language(repo, data_dir, language_name)
    print(f"language: {lang['texts']} texts, top language identical to py3langid.classify on "
          f"{lang['agreement_with_features']:.4%} of those with a feature ({lang['disagreements']} differ); "
          f"{lang['featureless']} without any (ours b'', py3langid its first class 'af'): {lang['agreement']:.4%} "
          f"of all; confidence within {lang['confidence_max_abs_diff']:.2e} of py3langid's normalised probability")
    print(f"language: {lang['ours_texts_per_s']:.0f} texts/s in batches of 256 vs py3langid "
          f"{lang['py3langid_texts_per_s']:.0f} texts/s one by one (one thread each)")
    for text, got, ref in lang["examples"]:
        print(f"  differs: {text[:60]!r}: ours {got}, py3langid {ref}")
    print(f"language: accuracy {lang['accuracy']:.4f} on {lang['labelled']} translated messages (>= 40 chars) of "
          f"{lang['languages']} languages from this machine's gettext catalogs")
    worst = sorted(lang["per_language"].items(), key=lambda kv: kv[1])[:8]
    print("  weakest languages: " + ", ".join(f"{c} {a:.2f}" for c, a in worst))
    result: dict[str, Any] = {"language": lang}
    if data_dir is None:
        print("keywords/topics: no data directory, no held-out AG News")
        return result
    kt_ = evaluate_keywords_topics(repo, data_dir, keywords_name, topics_name)
    result["keywords_topics"] = kt_
    print(f"keywords: {kt_['held_out']} held-out AG News rows, {kt_['keywords_per_text']:.2f} keywords per text, "
          f"{kt_['keywords_in_text']:.2%} are terms of their text, {kt_['unigram_inside_bigram']} unigrams inside "
          "a chosen bigram")
    for label, words in kt_["keywords_by_label"].items():
        print(f"  {label}: {', '.join(words)}")
    for text, words in kt_["examples"]:
        print(f"  {text!r} -> {words}")
    print(f"keywords/topics: served TF-IDF rows within {kt_['tfidf_max_abs_diff']:.1e} of "
          f"TfidfVectorizer.transform; topic weights within {kt_['nmf_max_abs_diff']:.1e} of NMF.transform, "
          f"strongest topic identical on {kt_['nmf_argmax_agreement_nonzero']:.2%} of the rows with a known term")
    print(f"topics: {kt_['topics']} topics: " + "; ".join(kt_["topic_labels"]))
    print(f"topics: held-out purity {kt_['purity']:.3f}, argmax topic -> training majority label accuracy "
          f"{kt_['argmax_topic_accuracy']:.3f}, logistic regression on the {kt_['topics']} weights "
          f"{kt_['lr_topic_weights_accuracy']:.3f} (on the full TF-IDF: {kt_['lr_full_tfidf_accuracy']:.3f})")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infer.tasks.nlp.text", description=__doc__.split("\n")[0])
    ap.add_argument("repo", type=Path)
    ap.add_argument("--data", type=Path, default=default_data_dir(),
                    help="the shared data root with nlp/agnews/train.tsv (default: ../shared/data if present; "
                         "without it, the fallback corpus)")
    ap.add_argument("--topics", type=int, default=20)
    ap.add_argument("--evaluate", action="store_true", help="evaluate after building")
    args = ap.parse_args(argv)
    write_language_model(args.repo)
    models = build_keywords_topics(args.repo, args.data, topics=args.topics)
    print(f"built {args.repo}: nlp_language, {models.keywords.name} and {models.topics.name} from {models.corpus} "
          f"({models.fitted} fitted, vocabulary {models.vocabulary})")
    if args.evaluate:
        evaluate_text_models(args.repo, args.data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
