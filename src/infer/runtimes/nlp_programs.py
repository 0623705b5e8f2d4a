"""Kernel programs of the NLP family (see :mod:`infer.runtimes.kernel`).

``nlp_embed``  ``text`` BYTES [N, 1] (UTF-8) -> ``embedding`` FP32 [N, D] (mean-pooled, L2-normalised sentence
               embedding: cosine similarity is a dot product), ``tokens`` INT32 [N, 1] (the tokens the encoder saw,
               ``[CLS]`` and ``[SEP]`` included, after truncation) and ``truncated`` BOOL [N, 1] (the text had more
               than ``max_length`` tokens and its end was cut off).

Tokenization is server-side, with the Rust ``tokenizers`` library on the model's own ``tokenizer.json`` (the file
the sentence-transformers model ships: its normaliser, pre-tokeniser and ``[CLS] ... [SEP]`` template), in
``prepare`` in a worker thread, one request at a time: a text that is not UTF-8 fails its own request, naming its
index (``input 'text'[3]: not valid UTF-8``), never the batch. The empty string is a valid text: it is encoded as
``[CLS] [SEP]`` (``tokens`` 2) and gets that sequence's embedding, as ``SentenceTransformer.encode("")`` does.

Batching by length: ``prepare`` pads a request's token ids to the smallest of the parameters' ``buckets`` that holds
its longest text (``max_length`` when none does) and :meth:`EmbedProgram.batch_key` returns that width, so short
texts never share a batch with long ones (the batcher concatenates equal widths only). The batch step cuts the ids
back to the batch's own longest text (not the bucket) and makes one ONNX call. ``"bucketing": false`` pads every
request to ``max_length`` and lets any requests share a batch (still cut to the longest text in the batch step).

Parameters (``kernel.json``): ``model`` (ONNX file, default ``model.onnx``: inputs ``input_ids`` and
``attention_mask`` int64 ``[B, S]``, ``token_type_ids`` fed as zeros if the graph has it, output ``embedding``
``[B, D]``), ``tokenizer`` (default ``tokenizer.json``), ``max_length`` (default 256), ``buckets`` (default
16, 32, 64, 128, 256), ``bucketing`` (default true), ``threads`` (ONNX Runtime intra-op threads, 0 = its default).
Built by :func:`infer.tasks.nlp.encoder.write_encoder_model`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from infer.core.types import DataType, TensorSpec
from infer.runtimes.base import Array
from infer.runtimes.kernel import inside_version
from infer.runtimes.onnx import model_session
from infer.runtimes.texts import decode_request

__all__ = ["BUCKETS", "MAX_LENGTH", "EmbedProgram", "bucket_widths", "encoder_feeds", "load_tokenizer",
           "nlp_embed", "tokenize"]

MAX_LENGTH: Final = 256
BUCKETS: Final = (16, 32, 64, 128, 256)
_LIMIT: Final = 8192  # the longest max_length accepted (position tables of common encoders hold 512)

_IDS = "_token_ids"  # what prepare hands to the batch step in place of the texts: int32 [N, width]
_COUNTS = "_token_counts"  # int32 [N]: real tokens per row (the rest of the row is padding)
_TRUNCATED = "_truncated"  # bool [N]


def load_tokenizer(path: Path, max_length: int) -> Any:
    """``tokenizer.json`` as a ``tokenizers.Tokenizer`` that truncates to ``max_length`` tokens (special tokens
    included) and pads nothing (the padding and truncation settings saved in the file are replaced)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def bucket_widths(buckets: Iterable[int], max_length: int) -> tuple[int, ...]:
    """The padded widths a request may get: the buckets up to ``max_length``, and ``max_length`` itself."""
    widths = sorted({int(b) for b in buckets if 0 < int(b) < max_length} | {max_length})
    return tuple(widths)


def tokenize(tokenizer: Any, texts: Sequence[str], widths: Sequence[int]) -> tuple[
        NDArray[np.int32], NDArray[np.int32], NDArray[np.bool_]]:
    """Token ids ``[N, W]`` (zero-padded on the right; ``W`` the smallest of ``widths`` holding the longest text),
    tokens per text ``[N]`` and whether each text was truncated ``[N]``."""
    encodings = tokenizer.encode_batch(list(texts))
    counts = np.fromiter((len(e.ids) for e in encodings), np.int32, len(encodings))
    truncated = np.fromiter((len(e.overflowing) > 0 for e in encodings), np.bool_, len(encodings))
    longest = int(counts.max(initial=0))
    width = next((w for w in widths if w >= longest), longest)
    ids = np.zeros((len(encodings), width), np.int32)
    for row, e, n in zip(ids, encodings, counts, strict=True):
        row[:n] = e.ids
    return ids, counts, truncated


def encoder_feeds(ids: NDArray[np.integer[Any]], counts: NDArray[np.integer[Any]],
                  token_types: bool = False) -> dict[str, NDArray[np.int64]]:
    """The encoder's inputs for padded token ids ``[N, W]``, cut to the longest row (at least one column)."""
    longest = max(int(counts.max(initial=0)), 1)
    feeds = {"input_ids": np.ascontiguousarray(ids[:, :longest], np.int64),
             "attention_mask": (np.arange(longest)[None, :] < counts[:, None]).astype(np.int64)}
    if token_types:
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    return feeds


class EmbedProgram:
    prepare_in_thread = True
    thread_safe = True  # stateless; its session runs concurrent batches (one per model instance)

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        self.max_length = int(params.get("max_length", MAX_LENGTH))
        if not 2 <= self.max_length <= _LIMIT:
            raise ValueError(f"max_length must be within 2..{_LIMIT} (got {self.max_length})")
        buckets = [int(b) for b in params.get("buckets", BUCKETS)]
        if any(b < 1 for b in buckets):
            raise ValueError(f"buckets must be positive token counts (got {buckets})")
        self.bucketing = bool(params.get("bucketing", True))
        self.widths = bucket_widths(buckets, self.max_length) if self.bucketing else (self.max_length,)
        self.tokenizer = load_tokenizer(inside_version(directory, params.get("tokenizer", "tokenizer.json")),
                                        self.max_length)
        self._session = model_session(inside_version(directory, params.get("model", "model.onnx")), params,
                                      int(params.get("threads", 0)))
        names = {i.name for i in self._session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= names:
            raise ValueError(f"the ONNX model needs inputs input_ids and attention_mask (it has {sorted(names)})")
        self._token_types = "token_type_ids" in names
        out = {o.name: o for o in self._session.get_outputs()}
        if "embedding" not in out:
            raise ValueError(f"the ONNX model needs an output 'embedding' (it has {sorted(out)})")
        width = out["embedding"].shape[-1]
        self.inputs: tuple[TensorSpec, ...] = (TensorSpec("text", DataType.BYTES, (-1, 1)),)
        self.outputs: tuple[TensorSpec, ...] = (
            TensorSpec("embedding", DataType.FP32, (-1, width if isinstance(width, int) else -1)),
            TensorSpec("tokens", DataType.INT32, (-1, 1)),
            TensorSpec("truncated", DataType.BOOL, (-1, 1)),
        )

    def prepare(self, inputs: dict[str, Array]) -> None:
        """Decode and tokenize one request (the texts leave ``inputs``: the batch step sees token ids only)."""
        self.prepare_texts(decode_request(inputs), inputs)

    def prepare_texts(self, texts: list[str], inputs: dict[str, Array]) -> None:
        inputs[_IDS], inputs[_COUNTS], inputs[_TRUNCATED] = tokenize(self.tokenizer, texts, self.widths)

    def batch_key(self, inputs: Mapping[str, Array]) -> Hashable:
        """The request's padded width (its length bucket); one key for all when bucketing is off."""
        return int(inputs[_IDS].shape[1]) if self.bucketing else None

    def embed(self, ids: NDArray[np.integer[Any]], counts: NDArray[np.integer[Any]]) -> NDArray[np.float32]:
        """Embeddings ``[N, D]`` of padded token ids, cut to the longest row first (one ONNX call)."""
        (embedding,) = self._session.run(["embedding"], encoder_feeds(ids, counts, self._token_types))
        return np.asarray(embedding, np.float32)

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        counts = np.asarray(inputs[_COUNTS], np.int32)
        result: dict[str, Array] = {"tokens": counts.reshape(-1, 1),
                                    "truncated": np.asarray(inputs[_TRUNCATED], np.bool_).reshape(-1, 1)}
        if "embedding" in outputs:  # a config that declares no embedding (a token counter) makes no encoder call
            result["embedding"] = self.embed(np.asarray(inputs[_IDS]), counts)
        return result


def nlp_embed(directory: Path, params: dict[str, Any]) -> EmbedProgram:
    return EmbedProgram(directory, params)
