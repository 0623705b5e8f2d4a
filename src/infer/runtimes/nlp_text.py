"""Kernel programs of the NLP family that need no neural encoder (see :mod:`infer.runtimes.kernel`).

Every program takes ``text`` BYTES [N, 1] (UTF-8). ``prepare`` decodes each request's texts in a worker thread
(text that is not valid UTF-8 fails its own request, naming the element: ``input 'text'[2]: not valid UTF-8``)
and leaves the batch step one object element per text (its normalised bytes, or its term ids), so requests of any
length share batches; the batch step runs :mod:`kernels.text` once for the whole batch.

``nlp_language`` -> ``language`` BYTES [N, 1] (the model's language code: ISO 639-1 where the language has one,
                 else ISO 639-3, ``zxx`` for no linguistic content) and ``confidence`` FP32 [N, 1] (0-1). The
                 byte-level naive Bayes model of langid.py as py3langid ships it, converted to ``langid.npz`` at
                 build time (:func:`infer.tasks.nlp.text.write_language_model`): the tokenizer DFA walks the bytes
                 into feature counts, one sparse product scores every language, and the confidence is
                 py3langid's normalised probability (softmax of the scores over ``sqrt(bytes)``). A text with no
                 feature (empty) answers ``b""`` with confidence 0.
``nlp_keywords`` -> ``keywords`` BYTES [N, k] and ``keyword_scores`` FP32 [N, k]: the text's ``top_k`` terms
                 (unigrams and bigrams) by TF-IDF weight against a vocabulary and IDF fitted at build time, a
                 unigram left out when it is a word of a chosen bigram; padded with ``b""`` and 0.
``nlp_topics``   -> ``topic`` BYTES [N, 1] (the label of the strongest topic: its top terms) and
                 ``topic_weights`` FP32 [N, K]: the TF-IDF row projected on the K fixed NMF components (non-negative
                 least squares, as ``NMF.transform``); a text with no known term answers ``b""`` and zeros.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from infer.core.types import DataType, TensorSpec
from infer.runtimes.base import Array
from infer.runtimes.kernel import inside_version
from infer.runtimes.texts import decode_request
from kernels import text as kt

__all__ = ["KeywordsProgram", "LanguageProgram", "TopicsProgram", "nlp_keywords", "nlp_language",
           "nlp_topics"]

_TEXT = (TensorSpec("text", DataType.BYTES, (-1, 1)),)
_PREPARED = "_texts"  # what prepare hands the batch step: one object element per text


def _objects(items: Sequence[object]) -> NDArray[np.object_]:
    arr = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):  # element by element: equal-length arrays must not become a 2-D array
        arr[i] = x
    return arr


class LanguageProgram:
    prepare_in_thread = True

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        with np.load(inside_version(directory, params.get("model", "langid.npz")), allow_pickle=False) as m:
            self.nextmove = np.ascontiguousarray(m["nextmove"], np.int32)
            self.rowbase = np.asarray(m["nextmove_row"], np.int64) << 8
            self.out_feat = np.ascontiguousarray(m["out_feat"], np.int32)
            self.ptc = np.ascontiguousarray(m["ptc"], np.float32)  # [features, classes]
            self.pc = np.asarray(m["pc"], np.float64)
            classes = [str(c) for c in m["classes"]]
        states, (features, n_classes) = len(self.out_feat), self.ptc.shape
        if (len(self.rowbase) != states or self.pc.shape != (n_classes,) or len(classes) != n_classes
                or len(self.nextmove) % 256 or self.nextmove.min() < 0 or self.nextmove.max() >= states
                or self.rowbase.max() + 256 > len(self.nextmove) or self.out_feat.max() >= features):
            raise ValueError("langid.npz: inconsistent tokenizer and naive Bayes arrays")
        labels = list(dict.fromkeys(classes))  # a language with two scripts has two columns and one label
        self.labels = np.array([c.encode() for c in [*labels, ""]], dtype=object)  # "" for a text with no feature
        self.column_label = np.array([labels.index(c) for c in classes], np.int64)
        self.inputs: tuple[TensorSpec, ...] = _TEXT
        self.outputs: tuple[TensorSpec, ...] = (TensorSpec("language", DataType.BYTES, (-1, 1)),
                                                 TensorSpec("confidence", DataType.FP32, (-1, 1)))
        kt.warm_up()

    def prepare(self, inputs: dict[str, Array]) -> None:
        self.prepare_texts(decode_request(inputs), inputs)

    def prepare_texts(self, texts: list[str], inputs: dict[str, Array]) -> None:
        """py3langid's normalisation: an all-uppercase text lowercased, then NFC, as UTF-8."""
        inputs[_PREPARED] = _objects([unicodedata.normalize("NFC", t.lower() if t.isupper() else t).encode()
                                      for t in texts])

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        texts = inputs[_PREPARED]
        nbytes = np.fromiter((len(b) for b in texts), np.int64, len(texts))
        offsets = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(nbytes, out=offsets[1:])
        data = np.frombuffer(b"".join(texts), np.uint8)
        indptr, features, counts = kt.dfa_counts(data, offsets, self.nextmove, self.rowbase, self.out_feat,
                                                 self.ptc.shape[0])
        raw = kt.csr_dot(indptr, features, np.log1p(counts), self.ptc) + self.pc
        probs = kt.nb_probabilities(raw, nbytes, self.column_label, len(self.labels) - 1)
        best = self.column_label[raw.argmax(axis=1)]  # py3langid.classify's choice: the best column's label
        confidence = probs[np.arange(len(best)), best]
        blank = indptr[1:] == indptr[:-1]
        best[blank], confidence[blank] = len(self.labels) - 1, 0.0
        return {"language": self.labels[best].reshape(-1, 1),
                "confidence": confidence.astype(np.float32).reshape(-1, 1)}


def nlp_language(directory: Path, params: dict[str, Any]) -> LanguageProgram:
    return LanguageProgram(directory, params)


class _Tfidf:
    """The vocabulary, stop words and IDF that ``infer.tasks.nlp.text`` saved from a fitted ``TfidfVectorizer``
    (``vocabulary.json``: terms in id order, stop words, token pattern, n-gram range; ``tfidf.npz``: ``idf``)."""

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        doc = json.loads(inside_version(directory, params.get("vocabulary", "vocabulary.json")).read_text())
        self.terms: list[str] = [str(t) for t in doc["terms"]]
        self.stop_words = frozenset(str(w) for w in doc["stop_words"])
        self.ngram_max = int(doc.get("ngram_range", [1, 2])[1])
        if doc.get("token_pattern") != kt.TOKEN_PATTERN or doc.get("lowercase") is not True \
                or list(doc.get("ngram_range", [1, 2])) not in ([1, 1], [1, 2]):
            raise ValueError("vocabulary.json: only the default token pattern, lowercasing and n-grams (1, 1) or "
                             "(1, 2) are served")
        self.vocabulary = {t: i for i, t in enumerate(self.terms)}
        with np.load(inside_version(directory, params.get("idf", "tfidf.npz")), allow_pickle=False) as f:
            self.idf = np.ascontiguousarray(f["idf"], np.float32)
        if self.idf.shape != (len(self.terms),) or len(self.vocabulary) != len(self.terms):
            raise ValueError("tfidf.npz: one IDF per distinct vocabulary term needed")
        kt.warm_up()

    def term_ids(self, texts: list[str], inputs: dict[str, Array]) -> None:
        """``prepare``: each text's known terms (with repeats) as int32 ids."""
        vocab, stop, n = self.vocabulary, self.stop_words, self.ngram_max
        analyze = kt.analyze
        inputs[_PREPARED] = _objects([
            np.array([i for i in map(vocab.get, analyze(t, stop, n)) if i is not None], np.int32)
            for t in texts])

    def rows(self, inputs: Mapping[str, Array]) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
        """The batch's L2-normalised TF-IDF rows (CSR)."""
        ids = inputs[_PREPARED]
        indptr = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(np.fromiter((len(a) for a in ids), np.int64, len(ids)), out=indptr[1:])
        flat = np.concatenate([*ids, np.zeros(0, np.int32)]).astype(np.int32, copy=False)
        result: tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]] = \
            kt.tfidf_rows(indptr, flat, self.idf)
        return result


class KeywordsProgram:
    prepare_in_thread = True

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        self._tfidf = _Tfidf(directory, params)
        self.top_k = int(params.get("top_k", 5))
        if not 1 <= self.top_k <= 100:
            raise ValueError(f"top_k must be within 1..100 (got {self.top_k})")
        self._part_a, self._part_b = kt.bigram_parts(self._tfidf.terms)
        self._words = np.array([t.encode() for t in [*self._tfidf.terms, ""]], dtype=object)  # id -1: padding
        self.inputs: tuple[TensorSpec, ...] = _TEXT
        self.outputs: tuple[TensorSpec, ...] = (TensorSpec("keywords", DataType.BYTES, (-1, self.top_k)),
                                                 TensorSpec("keyword_scores", DataType.FP32, (-1, self.top_k)))

    def prepare(self, inputs: dict[str, Array]) -> None:
        self.prepare_texts(decode_request(inputs), inputs)

    def prepare_texts(self, texts: list[str], inputs: dict[str, Array]) -> None:
        self._tfidf.term_ids(texts, inputs)

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        indptr, ids, values = self._tfidf.rows(inputs)
        top, scores = kt.top_terms(indptr, ids, values, self._part_a, self._part_b, self.top_k)
        return {"keywords": self._words[top], "keyword_scores": scores}


def nlp_keywords(directory: Path, params: dict[str, Any]) -> KeywordsProgram:
    return KeywordsProgram(directory, params)


class TopicsProgram:
    prepare_in_thread = True

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        self._tfidf = _Tfidf(directory, params)
        with np.load(inside_version(directory, params.get("topics", "topics.npz")), allow_pickle=False) as f:
            components = np.asarray(f["components"], np.float32)  # [K, V]
        labels = json.loads(inside_version(directory, params.get("labels", "topics.json")).read_text())["labels"]
        self.iterations = int(params.get("iterations", 200))
        k = len(components)
        if components.shape != (k, len(self._tfidf.terms)) or len(labels) != k or not (components >= 0).all() \
                or not 1 <= self.iterations <= 10_000:
            raise ValueError("topics.npz needs non-negative components [K, vocabulary], topics.json K labels, "
                             "iterations 1..10000")
        self.components_t = np.ascontiguousarray(components.T)  # [V, K]: X Hᵀ is one sparse product
        h = components.astype(np.float64)
        self.hht = h @ h.T
        self.labels = np.array([str(x).encode() for x in [*labels, ""]], dtype=object)
        self.inputs: tuple[TensorSpec, ...] = _TEXT
        self.outputs: tuple[TensorSpec, ...] = (TensorSpec("topic", DataType.BYTES, (-1, 1)),
                                                 TensorSpec("topic_weights", DataType.FP32, (-1, k)))

    def prepare(self, inputs: dict[str, Array]) -> None:
        self.prepare_texts(decode_request(inputs), inputs)

    def prepare_texts(self, texts: list[str], inputs: dict[str, Array]) -> None:
        self._tfidf.term_ids(texts, inputs)

    def weights(self, inputs: Mapping[str, Array]) -> NDArray[np.float64]:
        xht = kt.csr_dot(*self._tfidf.rows(inputs), self.components_t)
        w: NDArray[np.float64] = kt.nmf_project(xht, self.hht, self.iterations)
        return w

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        w = self.weights(inputs)
        best = np.where(w.max(axis=1, initial=0.0) > 0, w.argmax(axis=1), len(self.labels) - 1)
        return {"topic": self.labels[best].reshape(-1, 1), "topic_weights": w.astype(np.float32)}


def nlp_topics(directory: Path, params: dict[str, Any]) -> TopicsProgram:
    return TopicsProgram(directory, params)
