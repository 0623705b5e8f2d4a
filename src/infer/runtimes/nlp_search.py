# ruff: noqa: RUF001 - CJK full stops and typographic quotes are the point of the sentence splitter
"""Kernel programs of the NLP family on the sentence encoder (see :mod:`infer.runtimes.kernel` and
:mod:`infer.runtimes.nlp_programs`): similarity, search and extractive summaries.

``nlp_similarity`` ``text`` BYTES [N, 1] and ``other`` BYTES [N, 1] (UTF-8) -> ``similarity`` FP32 [N, 1]: the
                   cosine of the two texts' embeddings (-1..1; roughly 0.5 to 0.8 for paraphrases with
                   all-MiniLM-L6-v2, near 0 for unrelated texts). ``prepare`` tokenizes both sides of a request
                   into one ``[N, 2, W]`` block padded to the length bucket of its longest text, so a batch of
                   pairs is embedded by one encoder call.
``nlp_search``     ``text`` -> ``neighbours`` BYTES [N, k] (ids of the ``k`` indexed texts most similar to each
                   text, most similar first), ``similarity`` FP32 [N, k] (their cosine) and ``embedding`` FP32
                   [N, D]: exact cosine top-k (one matrix product per batch) against ``index.npz`` (``embeddings``
                   float32 [M, D] L2-normalised, ``ids`` [M] strings) written by
                   :func:`infer.tasks.nlp.search.build_text_index`. Exact search is fine up to a few hundred
                   thousand texts (M x 384 float32 held in memory: 1.5 KiB a text); beyond that an ANN library.
``nlp_summarize``  ``text`` (a document) -> ``summary`` BYTES [N, 1] (its ``sentences`` most central sentences by
                   TextRank, in their original order) and ``sentence_count`` INT32 [N, 1] (the sentences the
                   splitter found). A document of at most ``sentences`` sentences is returned as it is, with no
                   encoder call.

Summaries: :func:`split_sentences` cuts the document (a regex splitter: ``.``, ``!``, ``?`` and ellipses before
whitespace, with abbreviations, initials and dotted acronyms such as ``Mr.``, ``e.g.``, ``U.S.`` kept inside a
sentence; CJK full stops; blank lines); every sentence of the whole batch is embedded, sorted by token count and cut
into encoder calls of one length bucket each; each document's sentences form a graph weighted by their cosine
(negative similarities cut to 0), and :func:`pagerank` ranks them (power iteration, damping 0.85, all documents of
the batch at once, padded to the longest); ties go to the earlier sentence. Chosen sentences keep their original
text and are joined by one space (none after a CJK full stop). A document of more than ``max_sentences`` sentences
(default 512) fails its own request, naming its index.

Parameters (``kernel.json``): the encoder's (``model``, ``tokenizer``, ``max_length``, ``buckets``, ``bucketing``,
``threads``: see :mod:`infer.runtimes.nlp_programs`) plus ``index`` and ``neighbours`` (search, default
``index.npz`` and 5), ``sentences``, ``max_sentences``, ``damping`` and ``tokens_per_call`` (summaries, default 3,
512, 0.85 and 16384: the padded tokens one encoder call may hold). Built by :mod:`infer.tasks.nlp.search`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from infer.core.types import DataType, TensorSpec
from infer.errors import InvalidArgument
from infer.runtimes.base import Array
from infer.runtimes.kernel import inside_version
from infer.runtimes.nlp_programs import EmbedProgram, tokenize
from infer.runtimes.texts import decode_request
from kernels.ranking import top_k

__all__ = ["DAMPING", "Document", "SearchProgram", "SimilarityProgram", "SummarizeProgram", "join_sentences",
           "nlp_search", "nlp_similarity", "nlp_summarize", "pagerank", "split_sentences"]

DAMPING: Final = 0.85
_TEXT = TensorSpec("text", DataType.BYTES, (-1, 1))

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


# --- sentences ---------------------------------------------------------------------------------------------------

#: Words that stand before a name and never end a sentence (compared lower-case, without the period).
_TITLES: Final = frozenset(
    "mr mrs ms mx dr prof rev fr st mt ft gen gov sen rep lt col capt cmdr sgt maj adm hon pres supt insp det "
    "messrs mme mlle vs cf eg ie approx ca".split())
#: Abbreviations that stand before a number (``No. 5``, ``pp. 3``): no boundary when a digit follows.
_NUMBERED: Final = frozenset("no nos vol vols p pp fig figs eq ch sec art op ed".split())
#: Abbreviations that may end a sentence: a boundary only when a usual sentence opener follows (``Corp. The``).
_MAY_END: Final = frozenset(
    "inc ltd co corp bros llc plc jr sr esq etc al dept est univ assn "
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs fri sat sun "
    "ala ariz ark calif colo conn fla ga ind kan kans ky md mich minn mont neb nev okla penn tenn tex va vt wis wyo"
    .split())
#: Capitalised words that usually open a sentence (after an abbreviation that may end one: ``the U.S. The``).
_OPENERS: Final = frozenset(
    "a an the he she it its they we i you this that these those there here his her their our my your some many "
    "most all both each one two but and or so yet still also now then however meanwhile moreover instead "
    "in on at as if when while after before since until although though because for with without by from "
    "what who why how where which no not nor only such".split())
_BOUNDARY: Final = re.compile(
    r"(?P<cjk>[。！？]+[」』”’）》〉\"']*)"  # CJK full stops end a sentence wherever they stand
    r"|(?P<term>[.!?…]+)(?P<close>[\"'”’»)\]]*(?:\s+[\"”](?=\s))?)"  # Latin ones before whitespace (a stray
    r"(?P<space>\s+)(?=\S)"  # closing quote after a space, as in 'more. " Next', stays with the sentence)
    r"|(?P<blank>\n[ \t]*\n\s*)(?=\S)")  # and a blank line (a paragraph) always
_LAST_WORD: Final = re.compile(r"[\w.'’-]+$")
_WORD: Final = re.compile(r"\w")
_OPENING: Final = re.compile(r"[\"'“‘«(\[]*(\w+)")


def _ends_here(text: str, m: re.Match[str]) -> bool:
    """Whether the Latin terminator matched by ``m`` (followed by whitespace) ends a sentence."""
    if "\n\n" in m["space"].replace("\r", "").replace(" ", "").replace("\t", ""):
        return True
    if text[m.end()] in ",;:":  # "Oracle Corp. , the vendor": a sentence does not start with a comma
        return False
    nxt = _OPENING.match(text, m.end())
    word = nxt[1] if nxt else ""
    if word[:1].islower():  # "e.g. the", "Yahoo! shares": a sentence does not start in lower case
        return False
    term = m["term"]
    if term != ".":  # "!", "?", "...": a boundary before anything but lower case
        return True
    prev = _LAST_WORD.search(text, 0, m.start())
    if prev is None:
        return True
    token = prev[0].strip("'’-")
    bare = token.replace(".", "").lower()
    if bare in _TITLES or (len(token) == 1 and token.isalpha() and token.isupper()):  # "Dr. Who", "J. K. Rowling"
        return False
    if bare in _NUMBERED and word[:1].isdigit():
        return False
    if bare in _MAY_END or "." in token:  # "Corp.", "Tenn.", "U.S.", "a.m.": a boundary before a usual opener only
        return word.lower() in _OPENERS  # ("Microsoft Corp. The", not "the U.S. Army" or "Nashville, Tenn. --")
    return True


def split_sentences(text: str) -> list[tuple[int, int]]:
    """The sentences of ``text`` as ``(start, end)`` character spans (whitespace around them left out), in order;
    a piece without a letter or digit (a stray quote) joins the sentence before it; no span for a text of
    whitespace only."""
    cuts: list[tuple[int, int]] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        if m["term"] is not None and not _ends_here(text, m):
            continue
        end = m.end("cjk") if m["cjk"] is not None else m.end("close") if m["term"] is not None else m.start()
        cuts.append((start, end))
        start = m.end()
    cuts.append((start, len(text)))
    out: list[tuple[int, int]] = []
    carry: int | None = None  # the start of a leading piece without a word, kept for the first sentence
    for a, b in cuts:
        piece = text[a:b]
        if not piece.strip():
            continue
        a, b = a + len(piece) - len(piece.lstrip()), b - (len(piece) - len(piece.rstrip()))
        if _WORD.search(text, a, b) is None:
            if out:
                out[-1] = (out[-1][0], b)
            elif carry is None:
                carry = a
            continue
        out.append((a if carry is None else carry, b))
        carry = None
    if carry is not None:  # nothing but punctuation
        out.append((carry, len(text.rstrip())))
    return out


def join_sentences(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """The sentences of ``text`` at ``spans`` joined by one space, none after a CJK full stop."""
    parts: list[str] = []
    for a, b in spans:
        if parts and not parts[-1].endswith(("。", "！", "？", "」", "』")):
            parts.append(" ")
        parts.append(text[a:b])
    return "".join(parts)


# --- ranking -----------------------------------------------------------------------------------------------------

def pagerank(weights: NDArray[np.floating[Any]], sizes: NDArray[np.integer[Any]], *, damping: float = DAMPING,
             tol: float = 1e-8, max_iter: int = 200) -> F64:
    """PageRank of a batch of weighted graphs ``[B, S, S]`` (``weights[b, i, j]``: edge i -> j, non-negative),
    graph ``b`` on its first ``sizes[b]`` nodes (the rest padding, scored 0). Each graph's scores sum to 1, as
    ``networkx.pagerank``: uniform teleport, a node without edges (dangling) spreads its score uniformly; the
    diagonal is ignored. Power iteration on all graphs at once until each moves less than ``tol`` (L1)."""
    w = np.array(weights, dtype=np.float64)
    b, s = w.shape[0], w.shape[1]
    sizes = np.asarray(sizes, np.int64)
    valid = np.arange(s)[None, :] < sizes[:, None]  # [B, S]
    w[:, np.arange(s), np.arange(s)] = 0.0
    w *= valid[:, :, None] & valid[:, None, :]
    out_weight = w.sum(axis=2)  # [B, S]
    dangling = valid & (out_weight <= 0)
    w /= np.where(out_weight > 0, out_weight, 1.0)[:, :, None]  # rows sum to 1 (or 0 when dangling)
    teleport = valid / np.maximum(sizes, 1)[:, None]
    r = teleport.copy()
    active = np.ones(b, np.bool_)
    for _ in range(max_iter):
        spread = (r * dangling).sum(axis=1, keepdims=True) * teleport
        new = (1.0 - damping) * teleport + damping * (np.matmul(r[:, None, :], w)[:, 0, :] + spread)
        moved = np.abs(new - r).sum(axis=1)
        r = np.where(active[:, None], new, r)
        active &= moved >= tol
        if not active.any():
            break
    out: F64 = r
    return out


# --- programs ----------------------------------------------------------------------------------------------------

_PAIR_IDS = "_pair_token_ids"  # int32 [N, 2, W]: the text's and the other's ids, padded to one bucket
_PAIR_COUNTS = "_pair_token_counts"  # int32 [N, 2]


class SimilarityProgram(EmbedProgram):
    """``nlp_similarity``: the cosine of two texts' embeddings."""

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        super().__init__(directory, params)
        self.inputs = (_TEXT, TensorSpec("other", DataType.BYTES, (-1, 1)))
        self.outputs = (TensorSpec("similarity", DataType.FP32, (-1, 1)),)

    def prepare(self, inputs: dict[str, Array]) -> None:
        texts, others = decode_request(inputs, "text"), decode_request(inputs, "other")
        if len(texts) != len(others):
            raise InvalidArgument(f"inputs 'text' and 'other' hold {len(texts)} and {len(others)} texts")
        ids, counts, _ = tokenize(self.tokenizer, texts + others, self.widths)
        n = len(texts)
        inputs[_PAIR_IDS] = np.stack([ids[:n], ids[n:]], axis=1)
        inputs[_PAIR_COUNTS] = np.stack([counts[:n], counts[n:]], axis=1)

    def batch_key(self, inputs: Mapping[str, Array]) -> Hashable:
        return int(inputs[_PAIR_IDS].shape[2]) if self.bucketing else None

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        ids = np.asarray(inputs[_PAIR_IDS], np.int32)
        n, _, width = ids.shape
        counts = np.asarray(inputs[_PAIR_COUNTS], np.int32).reshape(-1)
        e = self.embed(ids.reshape(2 * n, width), counts).reshape(n, 2, -1)
        norms = np.linalg.norm(e, axis=2)
        cos = np.sum(e[:, 0] * e[:, 1], axis=1) / np.maximum(norms[:, 0] * norms[:, 1], 1e-12)
        return {"similarity": cos.astype(np.float32).reshape(-1, 1)}


def nlp_similarity(directory: Path, params: dict[str, Any]) -> SimilarityProgram:
    return SimilarityProgram(directory, params)


class SearchProgram(EmbedProgram):
    """``nlp_search``: each text's embedding, then its ``neighbours`` nearest texts of the index (exact cosine)."""

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        super().__init__(directory, params)
        with np.load(inside_version(directory, params.get("index", "index.npz")), allow_pickle=False) as index:
            self.index = np.ascontiguousarray(index["embeddings"], np.float32)
            self.ids = np.array([str(i).encode() for i in index["ids"]], dtype=object)
        if self.index.ndim != 2 or len(self.ids) != self.index.shape[0] or not len(self.ids):
            raise ValueError("index.npz needs embeddings [M, D] and M ids, M >= 1")
        width = self.outputs[0].shape[1]
        if width not in (-1, self.index.shape[1]):
            raise ValueError(f"index.npz holds {self.index.shape[1]}-wide embeddings, the encoder makes {width}")
        self.neighbours = min(int(params.get("neighbours", 5)), len(self.ids))
        if self.neighbours < 1:
            raise ValueError("neighbours must be at least 1")
        k = self.neighbours
        self.outputs = (TensorSpec("neighbours", DataType.BYTES, (-1, k)),
                        TensorSpec("similarity", DataType.FP32, (-1, k)),
                        TensorSpec("embedding", DataType.FP32, (-1, self.index.shape[1])))

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        embedding = np.asarray(super().run(inputs, ("embedding",))["embedding"], np.float32)
        sim = embedding @ self.index.T
        order = top_k(sim, self.neighbours)
        return {"neighbours": self.ids[order], "similarity": np.take_along_axis(sim, order, axis=1),
                "embedding": embedding}


def nlp_search(directory: Path, params: dict[str, Any]) -> SearchProgram:
    return SearchProgram(directory, params)


@dataclass(frozen=True)
class Document:
    """What ``prepare`` leaves of one document: its text, its sentences' spans ``[S, 2]`` and, when it has more
    than the summary's sentences, their token ids ``[S, W]`` and counts ``[S]``."""

    text: str
    spans: NDArray[np.int64]
    ids: NDArray[np.int32] | None = None
    counts: NDArray[np.int32] | None = None


_DOCUMENTS = "_documents"  # object [N]: one Document a row (what the batch step sees of the texts)


def _objects(items: Sequence[object]) -> NDArray[np.object_]:
    arr = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        arr[i] = x
    return arr


class SummarizeProgram(EmbedProgram):
    """``nlp_summarize``: the ``sentences`` most central sentences of each document by TextRank, in order."""

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        super().__init__(directory, params)
        self.sentences = int(params.get("sentences", 3))
        self.max_sentences = int(params.get("max_sentences", 512))
        self.damping = float(params.get("damping", DAMPING))
        self.tokens_per_call = int(params.get("tokens_per_call", 16384))
        if not 1 <= self.sentences <= self.max_sentences or not 0 < self.damping < 1 or self.tokens_per_call < 1:
            raise ValueError("need 1 <= sentences <= max_sentences, 0 < damping < 1 and tokens_per_call >= 1")
        self.inputs = (_TEXT,)
        self.outputs = (TensorSpec("summary", DataType.BYTES, (-1, 1)),
                        TensorSpec("sentence_count", DataType.INT32, (-1, 1)))

    def prepare(self, inputs: dict[str, Array]) -> None:
        self.prepare_texts(decode_request(inputs), inputs)

    def prepare_texts(self, texts: list[str], inputs: dict[str, Array]) -> None:
        """Split each document into sentences and tokenize those of the documents to summarise (one tokenizer
        call for the request)."""
        spans = [split_sentences(t) for t in texts]
        for i, s in enumerate(spans):
            if len(s) > self.max_sentences:
                raise InvalidArgument(f"input 'text'[{i}]: {len(s)} sentences, more than the {self.max_sentences} "
                                      "this model summarises")
        pieces = [t[a:b] for t, s in zip(texts, spans, strict=True) if len(s) > self.sentences for a, b in s]
        ids, counts, _ = tokenize(self.tokenizer, pieces, self.widths) if pieces else (None, None, None)
        docs, at = [], 0
        for t, s in zip(texts, spans, strict=True):
            arr = np.array(s, np.int64).reshape(-1, 2)
            if len(s) > self.sentences and ids is not None and counts is not None:
                docs.append(Document(t, arr, ids[at:at + len(s)], counts[at:at + len(s)]))
                at += len(s)
            else:
                docs.append(Document(t, arr))
        inputs[_DOCUMENTS] = _objects(docs)

    def batch_key(self, inputs: Mapping[str, Array]) -> Hashable:
        return None  # documents of any length share a batch: the batch step groups their sentences by length

    def sentence_embeddings(self, docs: Sequence[Document]) -> list[F32]:
        """The embeddings ``[S, D]`` of the sentences of each document that carries token ids, in order: all the
        batch's sentences sorted by token count, one encoder call per length bucket (split at
        ``tokens_per_call`` padded tokens)."""
        rows = [d for d in docs if d.ids is not None and d.counts is not None]
        if not rows:
            return []
        counts = np.concatenate([d.counts for d in rows if d.counts is not None])
        ids = np.zeros((len(counts), max(d.ids.shape[1] for d in rows if d.ids is not None)), np.int32)
        bounds = np.cumsum([0, *(len(d.spans) for d in rows)])
        for d, a in zip(rows, bounds, strict=False):
            if d.ids is not None:
                ids[a:a + d.ids.shape[0], :d.ids.shape[1]] = d.ids
        order = np.argsort(counts, kind="stable")
        widths = np.asarray(self.widths)
        bucket = np.minimum(np.searchsorted(widths, counts[order]), len(widths) - 1)
        parts: list[tuple[I64, F32]] = []
        start = 0
        while start < len(order):
            stop = min(int(np.searchsorted(bucket, bucket[start], side="right")),
                       start + max(1, self.tokens_per_call // int(widths[bucket[start]])))
            idx = order[start:stop]
            parts.append((idx, self.embed(ids[idx], counts[idx])))
            start = stop
        emb = np.empty((len(counts), parts[0][1].shape[1]), np.float32)
        for idx, e in parts:
            emb[idx] = e
        return [emb[a:b] for a, b in itertools.pairwise(bounds)]

    def documents(self, texts: list[str]) -> list[Document]:
        """``texts`` split and tokenized as ``prepare`` leaves them (for evaluations)."""
        inputs: dict[str, Array] = {}
        self.prepare_texts(texts, inputs)
        return list(inputs[_DOCUMENTS])

    def textrank(self, embeddings: Sequence[F32]) -> list[F64]:
        """Each document's TextRank scores ``[S]`` from its sentence embeddings ``[S, D]`` (all documents in one
        padded PageRank)."""
        if not embeddings:
            return []
        sizes = np.array([len(e) for e in embeddings], np.int64)
        padded = np.zeros((len(embeddings), int(sizes.max()), embeddings[0].shape[1]), np.float32)
        for e, p in zip(embeddings, padded, strict=True):
            p[:len(e)] = e
        norms = np.linalg.norm(padded, axis=2, keepdims=True)
        padded /= np.where(norms > 0, norms, 1.0)
        scores = pagerank(np.maximum(padded @ padded.transpose(0, 2, 1), 0.0), sizes, damping=self.damping)
        return [row[:n] for row, n in zip(scores, sizes, strict=True)]

    def choose(self, docs: Sequence[Document]) -> list[I64]:
        """Per document, the sentence indices of its summary in ascending order (all of them for a document of
        at most ``sentences`` sentences): its ``sentences`` best TextRank scores, ties to the earlier sentence."""
        chosen = [np.arange(len(d.spans), dtype=np.int64) for d in docs]
        long = [i for i, d in enumerate(docs) if d.ids is not None]
        for i, scores in zip(long, self.textrank(self.sentence_embeddings(docs)), strict=True):
            chosen[i] = np.sort(top_k(scores[None, :], self.sentences)[0])
        return chosen

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        docs: list[Document] = list(np.asarray(inputs[_DOCUMENTS], dtype=object).reshape(-1))
        chosen = self.choose(docs)
        summary = _objects([(d.text if d.ids is None else join_sentences(d.text, d.spans[c].tolist())).encode()
                            for d, c in zip(docs, chosen, strict=True)])
        count = np.array([len(d.spans) for d in docs], np.int32)
        return {"summary": summary.reshape(-1, 1), "sentence_count": count.reshape(-1, 1)}


def nlp_summarize(directory: Path, params: dict[str, Any]) -> SummarizeProgram:
    return SummarizeProgram(directory, params)
