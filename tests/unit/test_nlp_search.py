# ruff: noqa: RUF001 - CJK full stops are the point of the splitter cases
"""Similarity, search and summaries without sockets: the sentence splitter, PageRank against networkx and a plain
loop, top-k ordering, and the three programs and their builders on a tiny fake encoder (a word-level tokenizer and
an ONNX graph that averages one fixed vector per word), so that what they choose is known in advance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures import write_toy_encoder

from infer.errors import InvalidArgument
from infer.runtimes.nlp_search import (
    SearchProgram,
    SimilarityProgram,
    SummarizeProgram,
    join_sentences,
    pagerank,
    split_sentences,
)
from infer.tasks.nlp.encoder import write_encoder_model
from infer.tasks.nlp.search import (
    build_text_index,
    index_folder,
    read_texts,
    write_similarity_model,
    write_summarize_model,
)
from kernels.ranking import top_k


def _sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in split_sentences(text)]


@pytest.mark.parametrize(("text", "want"), [
    ("Mr. Smith went to Washington. He met Dr. Jones there!",
     ["Mr. Smith went to Washington.", "He met Dr. Jones there!"]),
    ("The U.S. Army said so. The U.S. said it. Then they left.",
     ["The U.S. Army said so.", "The U.S. said it.", "Then they left."]),
    ("Prices rose, e.g. for oil, i.e. a lot. Is it over? Yes... It is.",
     ["Prices rose, e.g. for oil, i.e. a lot.", "Is it over?", "Yes...", "It is."]),
    ("Microsoft Corp. said it would. Shares of Oracle Corp. The company fell.",
     ["Microsoft Corp. said it would.", "Shares of Oracle Corp.", "The company fell."]),
    ('J. K. Rowling wrote it. He said "Stop." Then he left.',
     ["J. K. Rowling wrote it.", 'He said "Stop."', "Then he left."]),
    ("He arrived at 9 a.m. The meeting began at 5 p.m. Eastern time.",
     ["He arrived at 9 a.m.", "The meeting began at 5 p.m. Eastern time."]),
    ("Version 3.5 is out. See No. 5 on pp. 3-4. He said no. Yahoo! shares rose.",
     ["Version 3.5 is out.", "See No. 5 on pp. 3-4.", "He said no.", "Yahoo! shares rose."]),
    ("NASHVILLE, Tenn. -- It rained in Washington, D.C. yesterday. Oracle Corp. , the vendor, agreed.",
     ["NASHVILLE, Tenn. -- It rained in Washington, D.C. yesterday.", "Oracle Corp. , the vendor, agreed."]),
    ("A headline\n\nThe first paragraph. And more", ["A headline", "The first paragraph.", "And more"]),
    ('Find out more. " Then go.', ['Find out more. "', "Then go."]),
    ("今天天气很好。我们去公园吧！你来吗？好的。", ["今天天气很好。", "我们去公园吧！", "你来吗？", "好的。"]),
    ("「行こう。」と彼は言った。", ["「行こう。」", "と彼は言った。"]),
    ("No terminal punctuation", ["No terminal punctuation"]),
    ("", []), ("  \n ", []), ("?!", ["?!"]),
])
def test_sentence_splitter(text: str, want: list[str]) -> None:
    assert _sentences(text) == want


def test_spans_are_the_stripped_sentences_in_order() -> None:
    text = "  First one.   Second one!\n\nThird?  "
    spans = split_sentences(text)
    assert spans == sorted(spans) and all(text[a:b] == text[a:b].strip() for a, b in spans)
    assert join_sentences(text, spans) == "First one. Second one! Third?"
    assert join_sentences("甲。乙。丙", split_sentences("甲。乙。丙")) == "甲。乙。丙"


def _pagerank_loop(w: np.ndarray, damping: float = 0.85, iters: int = 500) -> np.ndarray:
    """A plain per-node loop: the textbook formula, dangling nodes spreading uniformly."""
    n = len(w)
    w = w.copy()
    np.fill_diagonal(w, 0.0)
    out = w.sum(axis=1)
    r = [1.0 / n] * n
    for _ in range(iters):
        dangling = sum(r[i] for i in range(n) if out[i] <= 0)
        r = [(1 - damping) / n + damping * (sum(r[i] * w[i, j] / out[i] for i in range(n) if out[i] > 0)
                                              + dangling / n) for j in range(n)]
    return np.array(r)


def _graphs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = np.maximum(rng.normal(size=(4, 7, 7)), 0.0)
    w = (w + w.transpose(0, 2, 1)) / 2
    w[2, 3, :] = w[2, :, 3] = 0.0  # a node without edges (dangling)
    return w, np.array([7, 5, 6, 1])


def test_pagerank_matches_a_plain_loop_with_padding_and_dangling_nodes() -> None:
    w, sizes = _graphs()
    got = pagerank(w, sizes, tol=1e-13)
    for b, n in enumerate(sizes):
        np.testing.assert_allclose(got[b, :n], _pagerank_loop(w[b, :n, :n]), atol=1e-9)
        assert np.all(got[b, n:] == 0) and got[b].sum() == pytest.approx(1.0)


def test_pagerank_matches_networkx() -> None:
    nx = pytest.importorskip("networkx")
    w, sizes = _graphs(1)
    got = pagerank(w, sizes, tol=1e-13)
    for b, n in enumerate(sizes):
        g = nx.DiGraph()
        g.add_nodes_from(range(n))
        g.add_weighted_edges_from((i, j, w[b, i, j]) for i in range(n) for j in range(n) if i != j and w[b, i, j] > 0)
        ref = nx.pagerank(g, alpha=0.85, tol=1e-14, max_iter=2000)
        np.testing.assert_allclose(got[b, :n], [ref[i] for i in range(n)], atol=1e-9)


def test_top_k_orders_by_value_then_index() -> None:
    sim = np.array([[0.1, 0.5, 0.5, 0.3, 0.9], [1.0, 1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(top_k(sim, 3), [[4, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(top_k(sim, 9), [[4, 1, 2, 3, 0], [0, 1, 2, 3, 4]])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 200))
    np.testing.assert_array_equal(top_k(x, 7), np.argsort(-x, axis=1, kind="stable")[:, :7])


# --- the programs on a fake encoder ------------------------------------------------------------------------------

WORDS = {"sport": ["match", "goal", "team", "coach", "league", "season", "player"],
         "money": ["bank", "rates", "shares", "profit", "market", "stock", "price"]}
DIM = 16


def _fake_encoder(directory: Path) -> tuple[Path, Path]:
    """A word-level tokenizer (``[CLS] ... [SEP]``, lower-cased, whitespace and punctuation split) and an ONNX graph:
    the L2-normalised sum of one vector per token. Sport words point one way, money words another, every other
    word (``[UNK]``) and the special tokens nearly nowhere."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    for words in WORDS.values():
        for w in words:
            vocab[w] = len(vocab)
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                             ("[SEP]", 3)])
    tokenizer = directory / "tokenizer.json"
    tok.save(str(tokenizer))
    rng = np.random.default_rng(0)
    table = rng.normal(scale=0.05, size=(len(vocab), DIM)).astype(np.float32)
    for axis, words in enumerate(WORDS.values()):
        for w in words:
            table[vocab[w], axis] += 1.0
    model = write_toy_encoder(directory / "model.onnx", table, normalise=True)
    return model, tokenizer


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("nlp_search")
    model, tokenizer = _fake_encoder(work)
    write_encoder_model(work / "repo", "nlp_embed", model, tokenizer, max_length=32, buckets=(8, 16))
    return work / "repo"


def _program(repo: Path, name: str, cls: Any) -> Any:
    version = repo / name / "1"
    return cls(version, json.loads((version / "kernel.json").read_text())["params"])


def _request(**tensors: list[str | bytes]) -> dict[str, Any]:
    return {k: np.array([t.encode() if isinstance(t, str) else t for t in v], object).reshape(-1, 1)
            for k, v in tensors.items()}


def _serve(program: Any, *requests: dict[str, Any]) -> dict[str, np.ndarray]:
    """Requests prepared one by one and run as one batch, as the batcher does."""
    for r in requests:
        program.prepare(r)
    keys = {program.batch_key(r) for r in requests}
    assert len(keys) == 1
    batch = {n: np.concatenate([r[n] for r in requests]) for n in requests[0]}
    return program.run(batch, [s.name for s in program.outputs])


def test_similarity(repo: Path) -> None:
    program = _program(repo, write_similarity_model(repo).name, SimilarityProgram)
    assert [s.name for s in program.inputs] == ["text", "other"] and program.outputs[0].shape == (-1, 1)
    got = _serve(program, _request(text=["goal team coach", "bank rates"], other=["the match and the league", "goal"]),
                 _request(text=["profit"], other=["Shares of the bank"]))["similarity"]
    assert got.shape == (3, 1) and got.dtype == np.float32
    assert got[0, 0] > 0.9 and got[1, 0] < 0.3 and got[2, 0] > 0.9
    long = _request(text=["goal " * 20], other=["goal"])
    program.prepare(long)
    assert program.batch_key(long) == 32  # both sides padded to the longer one's bucket
    with pytest.raises(InvalidArgument, match=r"input 'other'\[1\]: not valid UTF-8"):
        program.prepare(_request(text=["a", "b"], other=["a", b"\xff"]))


def test_search_index_and_builders(repo: Path, tmp_path: Path) -> None:
    texts = {"s1": "the team won the match", "s2": "a goal in the league season", "m1": "bank shares fell",
             "m2": "profit and stock price", "x": "nothing known here"}
    program = _program(repo, build_text_index(repo, texts, neighbours=3).name, SearchProgram)
    assert [(s.name, s.shape) for s in program.outputs] == [("neighbours", (-1, 3)), ("similarity", (-1, 3)),
                                                            ("embedding", (-1, DIM))]
    got = _serve(program, _request(text=["the team won the match", "market rates"]))
    assert got["neighbours"][0, 0] == b"s1" and got["similarity"][0, 0] == pytest.approx(1.0, abs=1e-5)
    assert set(got["neighbours"][1, :2]) == {b"m1", b"m2"}
    assert (np.diff(got["similarity"], axis=1) <= 0).all()
    np.testing.assert_allclose(np.linalg.norm(got["embedding"], axis=1), 1.0, rtol=1e-5)
    with np.load(repo / "nlp_search" / "1" / "index.npz", allow_pickle=False) as index:
        assert list(index["ids"]) == list(texts) and index["embeddings"].dtype == np.float32
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("the coach of the team")
    (folder / "more.jsonl").write_text('{"id": "b", "text": "bank profit"}\n\n{"id": 7, "text": "stock"}\n')
    assert read_texts(folder) == {"a.txt": "the coach of the team", "b": "bank profit", "7": "stock"}
    path, count = index_folder(repo, folder, name="nlp_search_docs", neighbours=10)
    assert count == 3 and _program(repo, path.name, SearchProgram).neighbours == 3
    (folder / "dup.jsonl").write_text('{"id": "b", "text": "again"}\n')
    with pytest.raises(ValueError, match="given twice"):
        read_texts(folder)
    with pytest.raises(ValueError, match="at least one text"):
        build_text_index(repo, {})


SPORT = ["The team won the match.", "A late goal for the team!", "The coach praised the player.",
         "The league season ends soon.", "The match was the best of the season."]
MONEY = "Bank shares and stock price fell."


def test_summaries_choose_the_central_sentences_in_order(repo: Path) -> None:
    program = _program(repo, write_summarize_model(repo, sentences=3, max_sentences=8).name, SummarizeProgram)
    doc = " ".join([SPORT[0], SPORT[1], MONEY, SPORT[2], SPORT[4]])
    short = "One sentence only.  Two of them!"
    got = _serve(program, _request(text=[doc, short]), _request(text=["", doc]))
    summary = [s.decode() for s in got["summary"][:, 0]]
    assert got["sentence_count"][:, 0].tolist() == [5, 2, 0, 5]
    assert summary[1] == short and summary[2] == ""  # returned as they are
    assert summary[0] == summary[3]
    chosen = _sentences(summary[0])
    assert len(chosen) == 3 and MONEY not in chosen
    assert all(s in SPORT for s in chosen) and sorted(chosen, key=doc.index) == chosen


def test_summaries_split_encoder_calls_by_length(repo: Path) -> None:
    program = _program(repo, "nlp_summarize", SummarizeProgram)
    docs = [" ".join([*SPORT, MONEY]), " ".join([MONEY, "Profit rose. Market rates. The goal.", SPORT[0] * 3])]
    alone = _serve(program, _request(text=docs))["summary"]
    program.tokens_per_call = 8  # one sentence a call
    calls: list[int] = []
    embed = program.embed
    program.embed = lambda ids, counts: calls.append(len(ids)) or embed(ids, counts)
    assert _serve(program, _request(text=docs))["summary"].tolist() == alone.tolist()
    assert max(calls) == 1 and len(calls) == sum(len(split_sentences(d)) for d in docs)


def test_summaries_fail_by_index(repo: Path) -> None:
    program = _program(repo, "nlp_summarize", SummarizeProgram)
    with pytest.raises(InvalidArgument, match=r"input 'text'\[1\]: 9 sentences, more than the 8"):
        program.prepare(_request(text=["Fine.", "Yes. " * 9]))
    with pytest.raises(InvalidArgument, match=r"input 'text'\[0\]: not valid UTF-8"):
        program.prepare(_request(text=[b"caf\xe9", "fine"]))
