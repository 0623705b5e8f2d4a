"""The ``nlp`` kernel program: the NLP family's tasks on each text in one call, the text decoded once (a
:class:`~infer.runtimes.task_pipeline.TaskPipeline`: one subdirectory per task, each a complete kernel program).

``text`` BYTES [N, 1] (UTF-8) ->
  embed:     ``embedding`` FP32 [N, D], ``tokens`` INT32 [N, 1], ``truncated`` BOOL [N, 1]
  classify:  the same three, and per head H (sentiment, intent, topic...) ``H`` BYTES [N, 1] and ``H_score``
             FP32 [N, 1] (one encoder call serves the embedding and every head: a pipeline with ``classify``
             needs no ``embed``)
  language:  ``language`` BYTES [N, 1], ``language_confidence`` FP32 [N, 1]
  keywords:  ``keywords`` BYTES [N, k], ``keyword_scores`` FP32 [N, k]
  topics:    ``topic_label`` BYTES [N, 1] (the NMF topic's top terms), ``topic_weights`` FP32 [N, K]
  entities:  ``entities`` BYTES [N, E], ``entity_labels`` BYTES [N, E], ``entity_spans`` INT32 [N, E, 2],
             ``entity_count`` INT32 [N, 1]
  summarize: ``summary`` BYTES [N, 1], ``sentence_count`` INT32 [N, 1]
A text that is not UTF-8 fails its own request, naming its index.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from infer.core.types import TensorSpec
from infer.runtimes.base import Array
from infer.runtimes.task_pipeline import TaskPipeline
from infer.runtimes.texts import decode_request

__all__ = ["RENAMES", "NlpPipeline", "nlp"]

# task -> {program output: pipeline output}; tasks not here expose every output under its own name
RENAMES: Final[dict[str, dict[str, str]]] = {
    "language": {"language": "language", "confidence": "language_confidence"},
    "topics": {"topic": "topic_label", "topic_weights": "topic_weights"},
}


class NlpPipeline(TaskPipeline):
    PROGRAMS = {"embed": "nlp_embed", "classify": "nlp_classify", "language": "nlp_language",
                "keywords": "nlp_keywords", "topics": "nlp_topics", "entities": "nlp_entities",
                "summarize": "nlp_summarize"}
    PREPARE = "prepare_texts"

    def __init__(self, directory: Path, params: dict[str, Any]) -> None:
        tasks = params.get("tasks")
        if isinstance(tasks, dict) and "embed" in tasks and "classify" in tasks:
            raise ValueError("tasks: classify already answers embedding, tokens and truncated; leave embed out")
        super().__init__(directory, params)

    def renames(self, task: str, outputs: Sequence[TensorSpec]) -> dict[str, str]:
        return RENAMES.get(task) or {s.name: s.name for s in outputs}

    def decode(self, inputs: dict[str, Array]) -> list[Any]:
        return decode_request(inputs)


def nlp(directory: Path, params: dict[str, Any]) -> NlpPipeline:
    return NlpPipeline(directory, params)
