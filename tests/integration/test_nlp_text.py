# ruff: noqa: RUF001 - text in other scripts (Greek capitals, dotless i, fullwidth commas) is the point
"""The three text models served: language, keywords and topics built into a fresh repository (keywords and topics
from a slice of AG News when ../shared/data is there, else from the fallback corpus), one batch of texts in six
languages and scripts over gRPC; text that is not UTF-8 fails its own request by index while the requests beside
it are answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from wire import decode, infer_request, serving

from infer._proto import grpc_service_pb2_grpc as pb_grpc
from infer.tasks.nlp.text import build_keywords_topics, default_data_dir, write_language_model

pytest.importorskip("py3langid")

DATA = default_data_dir()
TEXTS = {
    "en": "The Boston Red Sox beat the New York Yankees in the baseball playoffs as their pitcher struck out ten "
          "batters and the team won the series.",
    "fr": "La banque centrale a relevé ses taux d'intérêt jeudi, en invoquant une inflation persistante.",
    "de": "Die Zentralbank hat am Donnerstag die Zinsen erneut angehoben und auf die hartnäckige Inflation verwiesen.",
    "es": "El banco central volvió a subir los tipos de interés el jueves, alegando una inflación persistente.",
    "zh": "中央银行周四再次提高利率，理由是通货膨胀持续。",
    "ru": "Центральный банк в четверг снова повысил процентные ставки, сославшись на устойчивую инфляцию.",
}
SPORTS = TEXTS["en"]
BUSINESS = ("Oil prices rose to a record as crude stocks fell, and shares of the company dropped after its quarterly "
            "profit missed forecasts; the stock market closed lower.")
SPORTS_TERMS = {"red sox", "sox", "red", "yankees", "new york", "baseball", "playoffs", "pitcher", "struck", "batters",
                "team", "won", "series", "beat", "boston"}

Served = tuple[pb_grpc.GRPCInferenceServiceStub, Path]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    repo = tmp_path_factory.mktemp("nlp") / "repo"
    write_language_model(repo)
    build_keywords_topics(repo, DATA, rows=2500 if DATA is not None else None, topics=20)
    async with serving(repo) as stub:
        yield stub, repo


async def _infer(stub: pb_grpc.GRPCInferenceServiceStub, model: str, *texts: str | bytes) -> dict[str, np.ndarray]:
    payload = np.array([t.encode() if isinstance(t, str) else t for t in texts], dtype=object).reshape(-1, 1)
    return decode(await stub.ModelInfer(infer_request(model, {"text": payload})))


async def test_languages_keywords_topics(served: Served) -> None:
    stub, _ = served
    lang = await _infer(stub, "nlp_language", *TEXTS.values(), "")
    assert [x.decode() for x in lang["language"][:, 0]] == [*TEXTS, ""]
    assert lang["confidence"].shape == (7, 1) and (lang["confidence"][:6] > 0.5).all() and lang["confidence"][6] == 0

    kw = await _infer(stub, "nlp_keywords", SPORTS, BUSINESS, "")
    assert kw["keywords"].shape == kw["keyword_scores"].shape == (3, 5)
    assert kw["keywords"][2].tolist() == [b""] * 5 and not kw["keyword_scores"][2].any()
    assert (np.diff(kw["keyword_scores"][:2], axis=1) <= 0).all() and (kw["keyword_scores"][:2, 0] > 0).all()
    sports = {k.decode() for k in kw["keywords"][0] if k}
    for row in kw["keywords"][:2]:  # no unigram beside a chosen bigram that holds it
        words = {w for k in row if b" " in k for w in k.split(b" ")}
        assert not words & set(row)
    if DATA is not None:  # an AG News vocabulary knows the sports terms
        assert len(sports & SPORTS_TERMS) >= 3, sports

    tp = await _infer(stub, "nlp_topics", SPORTS, BUSINESS, "")
    assert tp["topic_weights"].shape == (3, 20) and (tp["topic_weights"] >= 0).all()
    assert tp["topic"][2, 0] == b"" and not tp["topic_weights"][2].any()
    assert tp["topic"][0, 0] and tp["topic"][1, 0] and tp["topic"][0, 0] != tp["topic"][1, 0]
    if DATA is not None:
        assert np.argmax(tp["topic_weights"][0]) != np.argmax(tp["topic_weights"][1])


@pytest.mark.parametrize("model", ["nlp_language", "nlp_keywords", "nlp_topics"])
async def test_invalid_utf8_fails_its_request_alone(served: Served, model: str) -> None:
    stub, _ = served
    alone = await _infer(stub, model, TEXTS["de"], SPORTS)
    bad = (TEXTS["fr"], "ok", b"caf\xc3", SPORTS)  # [2]: a truncated two-byte sequence
    calls = [_infer(stub, model, *bad) if i % 3 == 0 else _infer(stub, model, TEXTS["de"], SPORTS) for i in range(12)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i, r in enumerate(results):
        if i % 3:
            assert isinstance(r, dict), r
            for name, value in alone.items():
                if value.dtype == object:
                    assert r[name].tolist() == value.tolist()
                else:
                    np.testing.assert_allclose(r[name], value, rtol=1e-6)
        else:
            assert isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.INVALID_ARGUMENT, r
            assert "input 'text'[2]: not valid UTF-8" in (r.details() or "")
