"""``nlp_classify``: text classification heads on the sentence embedding, batched with the encoder in one program.

``text`` BYTES [N, 1] (UTF-8) in; out, for each head ``H`` of the parameters: ``H`` BYTES [N, 1] (the top label,
UTF-8) and ``H_score`` FP32 [N, 1] (that label's probability), plus the encoder's ``embedding`` FP32 [N, D],
``tokens`` INT32 [N, 1] and ``truncated`` BOOL [N, 1] (see :mod:`infer.runtimes.nlp_programs`).

The request path is ``nlp_embed``'s (:class:`~infer.runtimes.nlp_programs.EmbedProgram`): decoding and tokenization
in ``prepare`` (a text that is not UTF-8 fails its own request, naming its index), batches keyed by length bucket.
The batch step makes one encoder call, then one call per head on the batch's embeddings: a head is any ONNX graph
with a float input ``embedding`` [N, D] and an output ``probabilities`` [N, C] (the scikit-learn logistic
regressions that :mod:`infer.tasks.nlp.heads` exports with skl2onnx, zipmap off).

A head may reject: with ``reject: {"threshold": t, "label": "oos"}`` a text whose top probability is below ``t``
gets the label ``oos`` instead of its top class (``H_score`` stays that top probability, so a caller sees how
unsure the head was); a head whose own classes include ``oos`` (CLINC150's out-of-scope class) answers it
when that class wins, threshold or not.

Parameters (``kernel.json``): the encoder's (``model``, ``tokenizer``, ``max_length``, ``buckets``, ``bucketing``,
``threads``) and ``heads``: ``{"sentiment": {"model": "sentiment.onnx", "labels": ["negative", "positive"]},
"intent": {"model": "intent.onnx", "labels": [...], "reject": {"threshold": 0.3, "label": "oos"}}, ...}``, in
output order. Built by :func:`infer.tasks.nlp.heads.build_heads`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from infer.core.types import DataType, TensorSpec
from infer.runtimes.base import Array
from infer.runtimes.kernel import inside_version
from infer.runtimes.nlp_programs import EmbedProgram
from infer.runtimes.onnx import cpu_session

__all__ = ["ClassifyProgram", "Head", "nlp_classify"]

_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_RESERVED: Final = frozenset({"text", "embedding", "tokens", "truncated"})


@dataclass(frozen=True)
class Head:
    """One classification head: its ONNX session, labels (UTF-8, index order) and optional rejection."""

    name: str
    session: Any
    labels: NDArray[np.object_]  # bytes [C]
    threshold: float = 0.0  # top probability below this: the reject label (0: never)
    reject: bytes = b"oos"

    def classify(self, embedding: NDArray[np.float32]) -> tuple[NDArray[np.object_], NDArray[np.float32]]:
        """Top labels ``[N, 1]`` (bytes) and their probabilities ``[N, 1]`` for embeddings ``[N, D]``."""
        (probs,) = self.session.run(["probabilities"], {"embedding": embedding})
        probs = np.asarray(probs, np.float32)
        top = probs.argmax(axis=1)
        score = probs[np.arange(len(top)), top]
        label = self.labels[top]
        if self.threshold > 0.0:
            label[score < self.threshold] = self.reject
        return label.reshape(-1, 1), score.reshape(-1, 1)


def _head(directory: Path, name: str, spec: Mapping[str, Any], width: int, threads: int) -> Head:
    if not _NAME.fullmatch(name) or name in _RESERVED or name.endswith("_score"):
        raise ValueError(f"head name {name!r} must be lower-case [a-z0-9_], not ending in _score nor one of "
                         f"{sorted(_RESERVED)}")
    labels = [str(x) for x in spec.get("labels", ())]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"head {name!r}: labels must be at least two distinct names")
    session = cpu_session(inside_version(directory, spec.get("model", f"{name}.onnx")), threads)
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if "embedding" not in inputs or "probabilities" not in outputs:
        raise ValueError(f"head {name!r}: the ONNX graph needs an input 'embedding' and an output 'probabilities' "
                         f"(it has {sorted(inputs)} -> {sorted(outputs)})")
    d, c = inputs["embedding"].shape[-1], outputs["probabilities"].shape[-1]
    if isinstance(d, int) and width > 0 and d != width:
        raise ValueError(f"head {name!r} takes embeddings of {d}, the encoder gives {width}")
    if isinstance(c, int) and c != len(labels):
        raise ValueError(f"head {name!r} gives {c} probabilities for {len(labels)} labels")
    reject = dict(spec.get("reject") or {})
    threshold = float(reject.get("threshold", 0.0))
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"head {name!r}: reject threshold must be within [0, 1) (got {threshold})")
    return Head(name, session, np.array([x.encode() for x in labels], dtype=object), threshold,
                str(reject.get("label", "oos")).encode())


class ClassifyProgram(EmbedProgram):
    """``nlp_embed`` plus heads: one encoder call per batch, then each head on its embeddings."""

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        super().__init__(directory, params)
        heads = params.get("heads")
        if not isinstance(heads, Mapping) or not heads:
            raise ValueError("nlp_classify needs 'heads': {name: {model, labels}}")
        width = self.outputs[0].shape[1]
        threads = int(params.get("threads", 0))
        self.heads = tuple(_head(directory, str(n), spec, width, threads) for n, spec in heads.items())
        specs = [(TensorSpec(h.name, DataType.BYTES, (-1, 1)), TensorSpec(f"{h.name}_score", DataType.FP32, (-1, 1)))
                 for h in self.heads]
        self.outputs = tuple(s for pair in specs for s in pair) + self.outputs

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        result = super().run(inputs, ("embedding",))  # the heads need it, declared or not
        embedding = np.ascontiguousarray(result["embedding"], np.float32)
        wanted = set(outputs)
        for head in self.heads:
            if head.name in wanted or f"{head.name}_score" in wanted:
                result[head.name], result[f"{head.name}_score"] = head.classify(embedding)
        if "embedding" not in wanted:
            del result["embedding"]
        return result


def nlp_classify(directory: Path, params: dict[str, Any]) -> ClassifyProgram:
    return ClassifyProgram(directory, params)
