"""Kernels of the text family: language identification, TF-IDF terms and NMF topics, on arrays.

A batch of texts travels as CSR rows: ``indptr`` int64 ``[N + 1]``, ``indices`` int32 ``[nnz]`` (feature or
term ids) and ``values`` float32 ``[nnz]``; every kernel accepts empty rows and empty batches.

Language identification (the byte-level naive Bayes model of langid.py / py3langid, its arrays converted once
at build time):

``dfa_counts``        UTF-8 bytes of N texts (one buffer and ``offsets`` ``[N + 1]``) walked through the tokenizer
                      DFA (``nextmove`` rows of 256 transitions, ``rowbase`` = each state's row * 256, ``out_feat``
                      the feature a state emits or -1) -> CSR feature counts.
``csr_dot``           CSR rows times a dense float32 ``[F, C]`` table -> float64 ``[N, C]`` (the naive Bayes scores
                      of ``log1p(counts)`` against ``P(t|c)``; the TF-IDF rows against NMF components).
``nb_probabilities``  (NumPy) raw scores ``[N, C]`` -> per-label probabilities ``[N, L]``: the scores divided by
                      ``sqrt(bytes)`` (py3langid's temperature), a softmax, and columns sharing a label summed.

Terms:

``analyze``           (Python) one text -> its terms as scikit-learn's ``TfidfVectorizer`` makes them with the
                      default ``token_pattern`` (``TOKEN_PATTERN``), lowercasing, stop words removed before the
                      n-grams are formed (so a bigram may span a removed stop word).
``count_rows``        ids of N rows, with repeats -> CSR of the distinct ids and their counts.
``tfidf_rows``        (NumPy) term ids of N texts (with repeats) -> CSR TF-IDF rows, raw counts times ``idf``, each
                      row L2-normalised (``TfidfVectorizer``'s defaults: ``norm="l2"``, ``sublinear_tf=False``).
``bigram_parts``      (Python) a vocabulary's bigrams -> the ids of their two words.
``top_terms``         the ``k`` best-scoring terms of each row (a NumPy sort, then a compiled greedy pass), a unigram
                      dropped when it is a word of a chosen bigram (``part_a``, ``part_b``: a bigram's two unigram
                      ids, -1 for a unigram or a word out of the vocabulary); ids ``[N, k]`` padded with -1, scores
                      padded with 0.

Topics:

``nmf_project``       (NumPy) non-negative least squares of each row against fixed NMF components by
                      multiplicative updates, from ``X Hᵀ`` ``[N, K]`` and ``H Hᵀ`` ``[K, K]``: every row on its
                      own (unlike ``NMF.transform``, whose starting point and stopping test depend on the batch).

The kernels compile on first call; :func:`warm_up` does it ahead.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Final, TypeAlias

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["TOKEN_PATTERN", "analyze", "bigram_parts", "count_rows", "csr_dot", "dfa_counts", "nb_probabilities",
           "nmf_project", "tfidf_rows", "top_terms", "warm_up"]

_F64: TypeAlias = NDArray[np.float64]
_F32: TypeAlias = NDArray[np.float32]
_I64: TypeAlias = NDArray[np.int64]
_I32: TypeAlias = NDArray[np.int32]
Csr: TypeAlias = tuple[_I64, _I32, _F32]

TOKEN_PATTERN: Final = r"(?u)\b\w\w+\b"  # scikit-learn's default: words of two or more word characters
_TOKEN = re.compile(TOKEN_PATTERN)


# --- language identification -----------------------------------------------------------------------------------


@njit(cache=False, nogil=True)
def dfa_counts(data: NDArray[np.uint8], offsets: _I64, nextmove: _I32, rowbase: _I64, out_feat: _I32,
               n_features: int) -> Csr:  # pragma: no cover - compiled
    n = len(offsets) - 1
    indptr = np.zeros(n + 1, np.int64)
    indices = np.empty(len(data), np.int32)  # at most one feature per byte
    counts = np.empty(len(data), np.float32)
    slot = np.full(n_features, -1, np.int64)  # where a feature sits in the output (a stale slot: an earlier row)
    nnz = 0
    for i in range(n):
        first = nnz
        state = 0
        for p in range(offsets[i], offsets[i + 1]):
            state = nextmove[rowbase[state] + data[p]]
            f = out_feat[state]
            if f >= 0:
                s = slot[f]
                if s < first:
                    slot[f] = nnz
                    indices[nnz] = f
                    counts[nnz] = 1.0
                    nnz += 1
                else:
                    counts[s] += 1.0
        indptr[i + 1] = nnz
    return indptr, indices[:nnz].copy(), counts[:nnz].copy()


@njit(cache=False, nogil=True)
def csr_dot(indptr: _I64, indices: _I32, values: _F32, table: _F32) -> _F64:  # pragma: no cover - compiled
    n, c = len(indptr) - 1, table.shape[1]
    out = np.zeros((n, c), np.float64)
    for i in range(n):
        for j in range(indptr[i], indptr[i + 1]):
            v = np.float64(values[j])
            row = table[indices[j]]
            for k in range(c):
                out[i, k] += v * row[k]
    return out


def nb_probabilities(raw: _F64, nbytes: _I64, column_label: _I64, n_labels: int) -> _F64:
    """Softmax of ``raw / sqrt(nbytes)`` over the columns, then the columns of each label summed (a language
    with two scripts in the model, e.g. Serbian, has two columns): ``[N, n_labels]``."""
    z = raw / np.sqrt(np.maximum(nbytes, 1)).reshape(-1, 1)
    z = np.exp(z - z.max(axis=1, keepdims=True)) if len(z) else z
    z /= z.sum(axis=1, keepdims=True)
    onehot = np.zeros((len(column_label), n_labels))
    onehot[np.arange(len(column_label)), column_label] = 1.0
    probs: _F64 = z @ onehot
    return probs


# --- terms -----------------------------------------------------------------------------------------------------


def analyze(text: str, stop_words: Collection[str], ngram_max: int = 2) -> list[str]:
    """``text``'s unigrams then n-grams up to ``ngram_max``, as ``TfidfVectorizer(ngram_range=(1, ngram_max),
    stop_words=...)`` builds them (its ``_word_ngrams``)."""
    tokens = [t for t in _TOKEN.findall(text.lower()) if t not in stop_words]
    terms = list(tokens)
    for n in range(2, min(ngram_max, len(tokens)) + 1):
        terms += [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return terms


def bigram_parts(terms: Sequence[str]) -> tuple[_I32, _I32]:
    """For each term of a vocabulary (terms in id order), the ids of a bigram's two words; -1 for a unigram or a
    word not in the vocabulary (``top_terms``'s ``part_a``, ``part_b``)."""
    vocabulary = {t: i for i, t in enumerate(terms)}
    a, b = np.full(len(terms), -1, np.int32), np.full(len(terms), -1, np.int32)
    for i, t in enumerate(terms):
        words = t.split(" ")
        if len(words) == 2:
            a[i], b[i] = vocabulary.get(words[0], -1), vocabulary.get(words[1], -1)
    return a, b


@njit(cache=False, nogil=True)
def count_rows(indptr: _I64, ids: _I32, n_ids: int) -> Csr:  # pragma: no cover - compiled
    """Rows of ids with repeats -> CSR of each distinct id and its count (in order of first occurrence)."""
    n = len(indptr) - 1
    out_ptr = np.zeros(n + 1, np.int64)
    out_ids = np.empty(len(ids), np.int32)
    counts = np.empty(len(ids), np.float32)
    slot = np.full(n_ids, -1, np.int64)
    nnz = 0
    for i in range(n):
        first = nnz
        for p in range(indptr[i], indptr[i + 1]):
            t = ids[p]
            s = slot[t]
            if s < first:
                slot[t] = nnz
                out_ids[nnz] = t
                counts[nnz] = 1.0
                nnz += 1
            else:
                counts[s] += 1.0
        out_ptr[i + 1] = nnz
    return out_ptr, out_ids[:nnz].copy(), counts[:nnz].copy()


def tfidf_rows(indptr: _I64, ids: _I32, idf: _F32) -> Csr:
    """Term ids of N texts (with repeats) -> CSR TF-IDF rows: counts times ``idf``, each row L2-normalised."""
    out_ptr, terms, counts = count_rows(indptr, ids, len(idf))
    values = counts * idf[terms]
    rows = np.repeat(np.arange(len(out_ptr) - 1), np.diff(out_ptr))
    norms = np.sqrt(np.bincount(rows, weights=np.square(values, dtype=np.float64), minlength=len(out_ptr) - 1))
    values = (values / np.where(norms > 0, norms, 1.0)[rows]).astype(np.float32)
    return out_ptr, terms, values


def top_terms(indptr: _I64, indices: _I32, values: _F32, part_a: _I32, part_b: _I32, k: int) -> tuple[_I32, _F32]:
    """The ``k`` best terms of each row (ties: the smaller id first), a unigram dropped when a chosen bigram holds
    it: ids ``[N, k]`` padded with -1, scores ``[N, k]`` padded with 0."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    order = np.lexsort((indices, -values, rows))  # within each row: best first
    return _greedy_terms(indptr, indices[order], values[order], part_a, part_b, k)


@njit(cache=False, nogil=True)
def _greedy_terms(indptr: _I64, indices: _I32, values: _F32, part_a: _I32, part_b: _I32,
                  k: int) -> tuple[_I32, _F32]:  # pragma: no cover - compiled
    n = len(indptr) - 1
    out = np.full((n, k), -1, np.int32)
    scores = np.zeros((n, k), np.float32)
    for i in range(n):
        m = 0
        for j in range(indptr[i], indptr[i + 1]):
            t = indices[j]
            if part_a[t] < 0 and part_b[t] < 0:  # a unigram: not when a chosen bigram holds it
                inside = False
                for q in range(m):
                    if part_a[out[i, q]] == t or part_b[out[i, q]] == t:
                        inside = True
                if inside:
                    continue
            else:  # a bigram: its words chosen before it make way
                q = 0
                while q < m:
                    if out[i, q] == part_a[t] or out[i, q] == part_b[t]:
                        for r in range(q, m - 1):
                            out[i, r] = out[i, r + 1]
                            scores[i, r] = scores[i, r + 1]
                        m -= 1
                        out[i, m] = -1
                        scores[i, m] = 0.0
                    else:
                        q += 1
            out[i, m] = t
            scores[i, m] = values[j]
            m += 1
            if m == k:
                break
    return out, scores


# --- topics ----------------------------------------------------------------------------------------------------


def nmf_project(xht: _F64, hht: _F64, iterations: int = 200, eps: float = 1e-12) -> _F64:
    """``argmin_{W >= 0} ||X - W H||²`` for each row, approximately: ``W <- W * (X Hᵀ) / (W H Hᵀ)``
    ``iterations`` times (Lee and Seung), vectorised over the batch. The start, ``(X Hᵀ) / diag(H Hᵀ)``, is each
    topic's own least-squares weight; rows with ``X Hᵀ = 0`` stay 0."""
    w = np.maximum(xht, 0.0) / np.maximum(np.diag(hht), eps)
    for _ in range(iterations):
        w *= xht / np.maximum(w @ hht, eps)
    return w


def warm_up() -> None:
    """Compile every kernel now (a second or two) rather than on the first real batch."""
    data = np.frombuffer(b"ab\x00c", np.uint8)
    offsets = np.array([0, 2, 2, 4], np.int64)
    nextmove = (np.arange(2 * 256, dtype=np.int32) % 2).astype(np.int32)
    rowbase = np.array([0, 256], np.int64)
    out_feat = np.array([-1, 0], np.int32)
    indptr, indices, counts = dfa_counts(data, offsets, nextmove, rowbase, out_feat, 1)
    csr_dot(indptr, indices, np.log1p(counts), np.ones((1, 3), np.float32))
    ptr, ids, val = tfidf_rows(np.array([0, 3, 3], np.int64), np.array([0, 2, 0], np.int32), np.ones(3, np.float32))
    top_terms(ptr, ids, val, np.array([-1, -1, 0], np.int32), np.array([-1, -1, 1], np.int32), 2)
