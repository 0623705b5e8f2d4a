"""Classification heads on sentence embeddings without a server: a head exported with skl2onnx gives scikit-learn's
own probabilities; the ``nlp_classify`` program (a tiny ONNX stand-in for the encoder and a word-level tokenizer,
so no torch) answers each head's top label and its probability, by label index; out-of-scope is answered when the
``oos`` class wins or the top probability is under the threshold; the threshold and ``C`` are picked as
documented; broken heads fail at load; the labelled sets load with nothing held out leaking into fitting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures import write_toy_encoder
from sklearn.linear_model import LogisticRegression

from infer.errors import InvalidArgument
from infer.runtimes.nlp_heads import ClassifyProgram, Head, nlp_classify
from infer.runtimes.onnx import cpu_session
from infer.tasks.nlp.heads import OOS, export_head, load_sets, pick_threshold, train_head

WIDTH = 8
WORDS = ["[UNK]", "good", "great", "bad", "awful", "the", "film", "was", "weather", "rain", "goal", "match"]
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _toy_encoder(path: Path) -> None:
    """The attention-masked sum of a fixed random vector per token id, L2-normalised like the real encoder."""
    table = np.random.default_rng(0).normal(size=(len(WORDS), WIDTH)).astype(np.float32)
    write_toy_encoder(path, table, normalise=True)


def _toy_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))


def _fitted(classes: int, dim: int = WIDTH, rows: int = 300, seed: int = 0) -> tuple[LogisticRegression, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % classes
    x = (rng.normal(size=(classes, dim))[y] + rng.normal(size=(rows, dim))).astype(np.float32)
    return LogisticRegression(C=4.0, max_iter=1000).fit(x, y), x


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A version directory: the toy encoder and tokenizer, a 2-class and a 3-class head (the last label ``oos``)."""
    directory = tmp_path_factory.mktemp("nlp_classify") / "1"
    directory.mkdir()
    _toy_encoder(directory / "model.onnx")
    _toy_tokenizer(directory / "tokenizer.json")
    for name, classes in (("sentiment", 2), ("intent", 3)):
        model, _ = _fitted(classes, seed=classes)
        (directory / f"{name}.onnx").write_bytes(export_head(model, WIDTH))
    return directory


def _params(**override: Any) -> dict[str, Any]:
    heads = {"sentiment": {"model": "sentiment.onnx", "labels": ["negative", "positive"]},
             "intent": {"model": "intent.onnx", "labels": ["weather", "sport", OOS],
                        "reject": {"threshold": 0.5, "label": OOS}}}
    return {"max_length": 16, "buckets": [4, 8], "heads": heads, **override}


def _request(*texts: str | bytes) -> dict[str, np.ndarray]:
    return {"text": np.array([t.encode() if isinstance(t, str) else t for t in texts], dtype=object).reshape(-1, 1)}


@pytest.mark.parametrize("classes", [2, 5, 151])
def test_exported_head_gives_sklearns_probabilities(classes: int) -> None:
    model, x = _fitted(classes, dim=16, rows=max(300, 3 * classes))
    path_bytes = export_head(model, x.shape[1])
    import onnxruntime as ort

    session = ort.InferenceSession(path_bytes, providers=["CPUExecutionProvider"])
    probe = np.random.default_rng(7).normal(size=(64, x.shape[1])).astype(np.float32)
    (probs,) = session.run(["probabilities"], {"embedding": probe})
    assert probs.shape == (64, classes) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, model.predict_proba(probe), atol=2e-6)
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]  # zipmap off: a plain tensor


def test_program_answers_each_heads_top_label_and_its_probability(version: Path) -> None:
    program = nlp_classify(version, _params())
    names = [s.name for s in program.outputs]
    assert names == ["sentiment", "sentiment_score", "intent", "intent_score", "embedding", "tokens", "truncated"]
    texts = ["the film was good", "awful rain", "goal match", "rain rain", "great great great weather"]
    request = _request(*texts)
    program.prepare(request)
    out = program.run(request, names)
    embedding = out["embedding"]
    assert embedding.shape == (len(texts), WIDTH)
    for head, labels in (("sentiment", [b"negative", b"positive"]), ("intent", [b"weather", b"sport", b"oos"])):
        session = cpu_session(version / f"{head}.onnx")
        (probs,) = session.run(["probabilities"], {"embedding": embedding})
        top, score = probs.argmax(axis=1), probs.max(axis=1)
        want = np.array([labels[i] for i in top], dtype=object)
        if head == "intent":
            want[score < 0.5] = b"oos"
        assert out[head].shape == (len(texts), 1) and out[head].dtype == object
        assert out[head][:, 0].tolist() == want.tolist()
        assert out[f"{head}_score"].dtype == np.float32
        np.testing.assert_allclose(out[f"{head}_score"][:, 0], score, rtol=1e-6)
    assert out["tokens"][:, 0].tolist() == [4, 2, 2, 2, 4]


def test_embedding_left_out_when_not_declared_and_a_head_only_when_asked(version: Path) -> None:
    program = nlp_classify(version, _params())
    request = _request("good film", "rain")
    program.prepare(request)
    out = program.run(request, ["sentiment", "tokens", "truncated"])
    assert set(out) == {"sentiment", "sentiment_score", "tokens", "truncated"}


def test_reject_threshold_and_oos_class() -> None:
    class Fixed:
        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0]], np.float32)]

    labels = np.array([b"balance", b"transfer", b"oos"], dtype=object)
    x = np.zeros((4, 2), np.float32)
    label, score = Head("intent", Fixed(), labels, threshold=0.5).classify(x)
    assert label[:, 0].tolist() == [b"balance", b"oos", b"oos", b"balance"]  # 0.5 is not under 0.5; ties: first
    np.testing.assert_allclose(score[:, 0], [0.9, 0.4, 0.8, 0.5])
    label, _ = Head("intent", Fixed(), labels).classify(x)  # no threshold: only the class answers oos
    assert label[:, 0].tolist() == [b"balance", b"balance", b"oos", b"balance"]
    assert labels.tolist() == [b"balance", b"transfer", b"oos"]  # the head's labels were not overwritten


def test_pick_threshold_separates_unsure_out_of_scope_texts() -> None:
    rng = np.random.default_rng(0)
    inside = np.full((200, 3), 0.05, np.float32)
    inside[np.arange(200), rng.integers(0, 2, 200)] = rng.uniform(0.55, 0.95, 200)
    outside = np.full((50, 3), 0.3, np.float32)
    outside[:, 0] = rng.uniform(0.3, 0.45, 50)
    y = np.concatenate([inside[:, :2].argmax(axis=1), np.full(50, 2)])
    t = pick_threshold(np.concatenate([inside, outside]), y, oos=2)
    assert 0.45 <= t <= 0.55  # every out-of-scope text is under 0.45, every in-scope one over 0.55
    assert pick_threshold(inside, y[:200], oos=2) == 0.0  # nothing out of scope: never reject


def test_train_head_picks_c_and_a_threshold() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, WIDTH)) * 3
    y = np.repeat(np.arange(4), 60)
    x = (centres[y] + rng.normal(size=(len(y), WIDTH))).astype(np.float32)
    model, info = train_head(x, y, grid=(0.01, 1.0), oos=3)
    assert info["C"] in (0.01, 1.0) and set(info["tune_accuracy"]) == {0.01, 1.0}
    assert info["tune_accuracy"][info["C"]] == max(info["tune_accuracy"].values())
    assert 0.0 <= info["threshold"] < 1.0 and info["threshold_folds"] == 5 and info["converged"]
    assert (model.predict(x) == y).mean() > 0.9
    _, single = train_head(x, y, grid=(2.0,))
    assert single["C"] == 2.0 and single["tune_accuracy"] == {} and "threshold" not in single


def test_invalid_utf8_fails_its_request_by_index(version: Path) -> None:
    program = nlp_classify(version, _params())
    with pytest.raises(InvalidArgument, match=r"input 'text'\[1\]: not valid UTF-8"):
        program.prepare(_request("good", b"caf\xe9"))


@pytest.mark.parametrize(("change", "message"), [
    ({"heads": {}}, "needs 'heads'"),
    ({"heads": {"embedding": {"model": "sentiment.onnx", "labels": ["a", "b"]}}}, "head name"),
    ({"heads": {"x_score": {"model": "sentiment.onnx", "labels": ["a", "b"]}}}, "head name"),
    ({"heads": {"sentiment": {"model": "sentiment.onnx", "labels": ["a", "b", "c"]}}}, "2 probabilities for 3"),
    ({"heads": {"sentiment": {"model": "sentiment.onnx", "labels": ["a", "a"]}}}, "distinct"),
    ({"heads": {"sentiment": {"model": "model.onnx", "labels": ["a", "b"]}}}, "input 'embedding'"),
    ({"heads": {"sentiment": {"model": "../x.onnx", "labels": ["a", "b"]}}}, "inside the version"),
    ({"heads": {"intent": {"model": "intent.onnx", "labels": ["a", "b", "c"], "reject": {"threshold": 1.5}}}},
     "threshold"),
])
def test_broken_heads_fail_at_load(version: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassifyProgram(version, _params(**change))


@pytest.mark.skipif(not (DATA / "nlp").is_dir(), reason="../shared/data/nlp is not beside the checkout")
def test_labelled_sets_small_and_held_out_apart() -> None:
    sets = load_sets(DATA, small=True)
    assert list(sets) == ["sentiment", "intent", "topic"]
    sentiment, intent, topic = sets["sentiment"], sets["intent"], sets["topic"]
    assert sentiment.classes == ["negative", "positive"] and set(sentiment.train_y) == {0, 1}
    assert not set(sentiment.train_texts) & set(sentiment.test_texts)
    assert len(intent.classes) == 151 and OOS in intent.classes
    oos = intent.classes.index(OOS)
    assert (intent.train_y == oos).sum() == 20 and (intent.test_y == oos).sum() == 30
    assert np.bincount(intent.train_y[intent.train_y != oos]).max() == 3
    assert topic.classes == ["Business", "Sci/Tech", "Sports", "World"]
    assert not set(topic.train_texts) & set(topic.test_texts)
    for s in sets.values():
        assert 100 <= len(s.train_y) <= 500 and 100 <= len(s.test_y) <= 300
        assert len(s.train_texts) == len(s.train_y) and len(s.test_texts) == len(s.test_y)
    json.dumps({k: v.source for k, v in sets.items()})
