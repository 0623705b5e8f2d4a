"""The ``nlp_entities`` kernel program (see :mod:`infer.runtimes.kernel`): named entities found by a spaCy
pipeline's ``ner`` component (spaCy 3.x, the optional ``ner`` extra: ``pip install 'infer[ner]'``).

``text`` BYTES [N, 1] (UTF-8) -> ``entities`` BYTES [N, K] (each entity's text), ``entity_labels`` BYTES [N, K]
(``PERSON``, ``ORG``, ``GPE``, ``DATE``... the pipeline's label scheme), ``entity_spans`` INT32 [N, K, 2] (start
and end of the entity in the text, counted in characters, i.e. Unicode code points, end exclusive:
``text[start:end]`` in Python), ``entity_count`` INT32 [N, 1]; in text order, padded with ``b""`` and zeros past
``entity_count``. ``K`` is ``max_entities``: a text with more keeps its first ``K``.

``prepare`` (a worker thread, one request at a time) decodes the texts (``prepare_texts`` alone when the ``nlp``
pipeline has decoded them) and checks their length, so a text that is not UTF-8 or longer than ``max_chars``
fails its own request by index; the batch step hands the whole batch to ``nlp.pipe``. Tokenization stays in the
batch step, under the runtime's lock: spaCy's tokenizer writes its cache and the shared vocabulary, and spaCy
makes no promise that one pipeline object may be used from two threads at once. Each batch runs inside
``nlp.memory_zone()`` (spaCy >= 3.8), which frees the strings and lexemes the batch added: without it the
vocabulary of a long-running server grows with every new word it sees (about 100 MiB per 3,000 texts of novel
tokens).

The version directory holds a spaCy pipeline directory (``pipeline``: ``config.cfg``, ``meta.json``,
``tokenizer``, ``vocab/`` and one directory per component, as :func:`infer.tasks.nlp.entities.write_entities_model`
copies it from an installed model package). It is loaded with ``spacy.load`` and every component but ``pipes``
(``["ner"]``) and those they listen to (a shared ``tok2vec``) excluded, so nothing else is read or run. spaCy
reads that directory without unpickling anything: ``config.cfg`` is resolved against functions registered by
installed packages, component weights (``*/model``), the tokenizer and lookups are msgpack through srsly (whose
NumPy hook rebuilds arrays with ``np.frombuffer``, which refuses object dtypes), ``cfg``, ``moves`` and
``strings.json`` are JSON, and vectors, when present, go through ``numpy.load`` (``allow_pickle`` off); spaCy
unpickles only in ``Doc``/``Vocab.__reduce__`` paths, which loading a directory never takes.

Parameters (``kernel.json``): ``pipeline`` (``pipeline``), ``pipes`` (``["ner"]``; ``["parser", "ner"]`` lets
the parser's sentence boundaries constrain the entities, as spaCy's full default pipeline does, at about twice
the cost), ``max_entities`` (16), ``max_chars`` (100000: spaCy needs about 1 GB per 100,000 characters for a
text's parse), ``batch_size`` (``nlp.pipe``'s, 128).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infer.core.types import DataType, TensorSpec
from infer.errors import InvalidArgument
from infer.runtimes.base import Array
from infer.runtimes.kernel import inside_version
from infer.runtimes.texts import decode_request

__all__ = ["EntitiesProgram", "load_pipeline", "needed_pipes", "nlp_entities"]

_TEXT = (TensorSpec("text", DataType.BYTES, (-1, 1)),)
_PREPARED = "_texts"  # what prepare hands the batch step: one str per text
_SHARED_FACTORIES = ("tok2vec", "transformer")  # components whose output a listener reads


def _listeners(node: object) -> Iterator[str]:
    """The ``upstream`` of every listener layer (``spacy.Tok2VecListener``...) in a component's config."""
    if isinstance(node, dict):
        arch = node.get("@architectures")
        if isinstance(arch, str) and "Listener" in arch:
            yield str(node.get("upstream", "*"))
        for value in node.values():
            yield from _listeners(value)


def needed_pipes(config: Mapping[str, Any], pipes: Sequence[str]) -> list[str]:
    """``pipes`` and the components they listen to, in pipeline order (``config``: a pipeline's ``config.cfg``)."""
    pipeline = [str(p) for p in config["nlp"]["pipeline"]]
    components = config["components"]
    unknown = [p for p in pipes if p not in pipeline]
    if unknown or not pipes:
        raise ValueError(f"pipes {unknown or list(pipes)} must name components of the pipeline ({pipeline})")
    needed = set(pipes)
    for pipe in pipes:
        for upstream in _listeners(components[pipe]):
            if upstream != "*":
                if upstream not in pipeline:
                    raise ValueError(f"component {pipe!r} listens to {upstream!r}, which the pipeline lacks")
                needed.add(upstream)
                continue
            shared = [q for q in pipeline[:pipeline.index(pipe)]
                      if components[q].get("factory") in _SHARED_FACTORIES]
            if not shared:
                raise ValueError(f"component {pipe!r} listens to a shared component the pipeline lacks")
            needed.add(shared[-1])
    return [p for p in pipeline if p in needed]


def load_pipeline(path: Path, pipes: Sequence[str] = ("ner",)) -> Any:
    """The spaCy pipeline in ``path`` with only ``pipes`` and what they listen to loaded and enabled."""
    try:
        import spacy
    except ImportError:
        raise ValueError("spaCy is not installed: pip install 'infer[ner]'") from None
    config = spacy.util.load_config(path / "config.cfg", interpolate=True)
    keep = needed_pipes(config, pipes)
    nlp = spacy.load(path, exclude=[p for p in config["nlp"]["pipeline"] if p not in keep])
    for pipe in list(nlp.disabled):  # disabled by the pipeline's config (en_core_web_sm's senter)
        nlp.enable_pipe(pipe)
    return nlp


class EntitiesProgram:
    prepare_in_thread = True

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        pipes = params.get("pipes", ["ner"])
        self.k = int(params.get("max_entities", 16))
        self.max_chars = int(params.get("max_chars", 100_000))
        self.batch_size = int(params.get("batch_size", 128))
        if not isinstance(pipes, list) or not all(isinstance(p, str) for p in pipes) or "ner" not in pipes:
            raise ValueError("pipes must be a list of component names that includes 'ner'")
        if not 1 <= self.k <= 1024 or not 1 <= self.max_chars <= 1_000_000 or not 1 <= self.batch_size <= 4096:
            raise ValueError("max_entities must be within 1..1024, max_chars 1..1000000, batch_size 1..4096")
        self.nlp = load_pipeline(inside_version(directory, params.get("pipeline", "pipeline")), pipes)
        self.labels: tuple[str, ...] = tuple(self.nlp.get_pipe("ner").labels)
        self._label_bytes = {label: label.encode() for label in self.labels}
        self.inputs: tuple[TensorSpec, ...] = _TEXT
        self.outputs: tuple[TensorSpec, ...] = (
            TensorSpec("entities", DataType.BYTES, (-1, self.k)),
            TensorSpec("entity_labels", DataType.BYTES, (-1, self.k)),
            TensorSpec("entity_spans", DataType.INT32, (-1, self.k, 2)),
            TensorSpec("entity_count", DataType.INT32, (-1, 1)))
        list(self.nlp.pipe(["Warm up the pipeline in London on Monday."]))  # first-call set-up, not a request's
        self.nlp.max_length = self.max_chars  # prepare refuses longer texts first, by index

    def prepare(self, inputs: dict[str, Array]) -> None:
        self.prepare_texts(decode_request(inputs), inputs)

    def prepare_texts(self, texts: list[str], inputs: dict[str, Array]) -> None:
        for i, text in enumerate(texts):
            if len(text) > self.max_chars:
                raise InvalidArgument(f"input 'text'[{i}]: {len(text)} characters, more than this model's "
                                      f"max_chars {self.max_chars}")
        arr = np.empty(len(texts), dtype=object)
        arr[:] = texts
        inputs[_PREPARED] = arr

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        texts = inputs[_PREPARED]
        n, k = len(texts), self.k
        names = np.full((n, k), b"", dtype=object)
        labels = np.full((n, k), b"", dtype=object)
        spans = np.zeros((n, k, 2), np.int32)
        count = np.zeros((n, 1), np.int32)
        label_bytes = self._label_bytes
        with self.nlp.memory_zone():  # the batch's new strings and lexemes freed after it: a bounded vocabulary
            for i, doc in enumerate(self.nlp.pipe(texts.tolist(), batch_size=self.batch_size)):
                ents = doc.ents[:k]
                count[i, 0] = len(ents)
                for j, ent in enumerate(ents):  # spaCy's objects: one Python step per entity, beside the model's
                    names[i, j] = ent.text.encode()
                    labels[i, j] = label_bytes.get(ent.label_) or ent.label_.encode()
                    spans[i, j] = ent.start_char, ent.end_char
        return {"entities": names, "entity_labels": labels, "entity_spans": spans, "entity_count": count}


def nlp_entities(directory: Path, params: dict[str, Any]) -> EntitiesProgram:
    return EntitiesProgram(directory, params)
