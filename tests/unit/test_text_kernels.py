# ruff: noqa: RUF001 - text in other scripts (Greek capitals, dotless i, fullwidth commas) is the point
"""The text kernels against the libraries they port: the language program (py3langid's model converted to an
.npz, walked by our DFA kernel) against py3langid itself, the term analysis and TF-IDF against scikit-learn's
``TfidfVectorizer``, the NMF projection against ``NMF.transform``, and the keyword selection's rules."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest

from infer.errors import InvalidArgument
from infer.runtimes.nlp_text import KeywordsProgram, LanguageProgram, TopicsProgram
from infer.tasks.nlp.text import build_keywords_topics, default_data_dir, load_corpus, write_language_model
from kernels import text as kt

py3langid = pytest.importorskip("py3langid")

SENTENCES = {
    "en": "The central bank raised interest rates again on Thursday, citing persistent inflation.",
    "fr": "La banque centrale a relevé ses taux d'intérêt jeudi, en invoquant une inflation persistante.",
    "de": "Die Zentralbank hat am Donnerstag die Zinsen erneut angehoben und auf die hartnäckige Inflation verwiesen.",
    "es": "El banco central volvió a subir los tipos de interés el jueves, alegando una inflación persistente.",
    "zh": "中央银行周四再次提高利率，理由是通货膨胀持续。",
    "ru": "Центральный банк в четверг снова повысил процентные ставки, сославшись на устойчивую инфляцию.",
    "it": "La banca centrale ha alzato di nuovo i tassi di interesse giovedì, citando l'inflazione persistente.",
    "pt": "O banco central voltou a subir as taxas de juro na quinta-feira, citando a inflação persistente.",
    "nl": "De centrale bank heeft donderdag de rente opnieuw verhoogd, vanwege de aanhoudende inflatie.",
    "ja": "中央銀行は木曜日、根強いインフレを理由に再び金利を引き上げた。",
    "ar": "رفع البنك المركزي أسعار الفائدة مرة أخرى يوم الخميس مشيرا إلى استمرار التضخم.",
    "el": "Η κεντρική τράπεζα αύξησε ξανά τα επιτόκια την Πέμπτη, επικαλούμενη τον επίμονο πληθωρισμό.",
    "hi": "केंद्रीय बैंक ने गुरुवार को लगातार महंगाई का हवाला देते हुए फिर से ब्याज दरें बढ़ा दीं।",
    "ko": "중앙은행은 목요일 지속적인 인플레이션을 이유로 금리를 다시 인상했다.",
    "pl": "Bank centralny ponownie podniósł w czwartek stopy procentowe, powołując się na uporczywą inflację.",
    "tr": "Merkez bankası, kalıcı enflasyonu gerekçe göstererek perşembe günü faiz oranlarını yeniden artırdı.",
    "sv": "Centralbanken höjde räntan igen på torsdagen med hänvisning till den ihållande inflationen.",
}
DATA = default_data_dir()


def _texts() -> list[str]:
    """The sentences, pieces of them, uppercased and decomposed (NFD) copies, AG News rows when present."""
    base = list(SENTENCES.values())
    rng = np.random.default_rng(0)
    pieces = []
    for _ in range(400):
        s = base[int(rng.integers(len(base)))]
        a = int(rng.integers(len(s)))
        pieces.append(s[a:a + int(rng.integers(1, 40))])
    extra = [s.upper() for s in base] + [unicodedata.normalize("NFD", s) for s in base]
    if DATA is not None:
        extra += load_corpus(DATA, rows=400).texts
    return base + pieces + extra + ["", " ", "1234", "🙂🙂"]


def _request(texts: list[str] | list[bytes]) -> dict[str, np.ndarray]:
    return {"text": np.array([t if isinstance(t, bytes) else t.encode() for t in texts], object).reshape(-1, 1)}


def _serve(program: object, texts: list[str] | list[bytes]) -> dict[str, np.ndarray]:
    inputs = _request(texts)
    program.prepare(inputs)  # type: ignore[attr-defined]
    return program.run(inputs, [s.name for s in program.outputs])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def language(tmp_path_factory: pytest.TempPathFactory) -> LanguageProgram:
    repo = tmp_path_factory.mktemp("lang")
    write_language_model(repo)
    assert sorted(p.name for p in (repo / "nlp_language" / "1").iterdir()) == ["kernel.json", "langid.npz"]
    return LanguageProgram(repo / "nlp_language" / "1", {})


def test_language_matches_py3langid(language: LanguageProgram) -> None:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    normed = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    texts = _texts()
    got = _serve(language, texts)
    assert got["language"].shape == got["confidence"].shape == (len(texts), 1)
    compared = 0
    for text, lang, conf in zip(texts, got["language"][:, 0], got["confidence"][:, 0], strict=True):
        ref, ref_conf = py3langid.classify(text)
        if ref_conf < -1e38:  # no feature at all: py3langid answers its first class at the float floor
            assert (lang, conf) == (b"", 0.0), text
            continue
        compared += 1
        assert lang.decode() == ref, text
        norm_lang, norm_conf = normed.classify(text)
        if norm_lang == ref:  # (summed script columns can tip the normalised choice; not the raw one)
            assert conf == pytest.approx(norm_conf, abs=1e-4), text
    assert compared > 0.9 * len(texts)
    for code, text in SENTENCES.items():
        assert _serve(language, [text])["language"][0, 0] == code.encode()


def test_language_of_empty_text_and_batches(language: LanguageProgram) -> None:
    got = _serve(language, ["", SENTENCES["fr"], ""])
    assert got["language"][:, 0].tolist() == [b"", b"fr", b""]
    assert got["confidence"][[0, 2], 0].tolist() == [0.0, 0.0] and 0.5 < got["confidence"][1, 0] <= 1.0
    # two requests prepared apart and run as one batch answer as each alone
    a, b = _request([SENTENCES["de"], SENTENCES["ja"]]), _request([SENTENCES["ru"]])
    language.prepare(a)
    language.prepare(b)
    batch = {k: np.concatenate([a[k], b[k]]) for k in a}
    assert list(batch) == ["_texts"]  # the encoded input does not reach the batch step
    out = language.run(batch, ["language", "confidence"])
    alone = _serve(language, [SENTENCES["ru"]])
    assert out["language"][:, 0].tolist() == [b"de", b"ja", b"ru"]
    assert out["confidence"][2, 0] == alone["confidence"][0, 0]
    empty = language.run({"_texts": np.empty(0, object)}, ["language", "confidence"])
    assert empty["language"].shape == (0, 1)


@pytest.mark.parametrize("program", ["language", "keywords"])
def test_invalid_utf8_names_its_element(program: str, language: LanguageProgram, built: Path) -> None:
    prog = language if program == "language" else KeywordsProgram(built / "nlp_keywords" / "1", {})
    with pytest.raises(InvalidArgument, match=r"input 'text'\[2\]: not valid UTF-8 \(byte 0xff at offset 3"):
        prog.prepare(_request([b"ok", "é".encode(), b"abc\xffdef"]))
    with pytest.raises(InvalidArgument, match=r"input 'text'\[0\]: not valid UTF-8"):
        prog.prepare(_request(["é".encode()[:1]]))  # truncated sequence


def test_dfa_counts_match_py3langid_visits(language: LanguageProgram) -> None:
    from py3langid.langid import visit_counts

    ident = py3langid.langid._get_identifier()
    rng = np.random.default_rng(3)
    texts = [rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes() for _ in range(50)]
    texts += [s.encode() for s in SENTENCES.values()]
    lengths = np.array([len(t) for t in texts], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    data = np.frombuffer(b"".join(texts), np.uint8)
    indptr, ids, counts = kt.dfa_counts(data, offsets, language.nextmove, language.rowbase, language.out_feat,
                                        language.ptc.shape[0])
    for i, t in enumerate(texts):
        want = visit_counts(ident.tk_nextmove, ident._rowbase, ident.tk_output, t) or {}
        got = dict(zip(ids[indptr[i]:indptr[i + 1]].tolist(), counts[indptr[i]:indptr[i + 1]].tolist(), strict=True))
        assert got == {k: float(v) for k, v in want.items()}


# --- terms and topics ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return load_corpus(DATA, rows=1500).texts if DATA is not None else load_corpus(None).texts


def test_analyze_and_tfidf_match_scikit_learn(corpus: list[str]) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    tricky = ["Naïve café_au_lait costs $3.50 -- don't PANIC!", "x y zz", "", "日本語のテキスト と English",
              "São Paulo's 2004 Olympic bid", "e\u0301te\u0301 ÉTÉ straße STRASSE", "the and of"]
    fit, held = corpus[: len(corpus) * 4 // 5], corpus[len(corpus) * 4 // 5:] + tricky
    vec = TfidfVectorizer(ngram_range=(1, 2), stop_words="english", min_df=2, dtype=np.float32).fit(fit)
    stop = vec.get_stop_words()
    sk = vec.build_analyzer()
    for text in held:
        assert kt.analyze(text, stop) == sk(text), text
    vocab = vec.vocabulary_
    ids = [np.array([vocab[t] for t in kt.analyze(s, stop) if t in vocab], np.int32) for s in held]
    indptr = np.concatenate([[0], np.cumsum([len(i) for i in ids])]).astype(np.int64)
    ptr, terms, values = kt.tfidf_rows(indptr, np.concatenate(ids), vec.idf_.astype(np.float32))
    ours = np.zeros((len(held), len(vocab)), np.float32)
    for i in range(len(held)):
        ours[i, terms[ptr[i]:ptr[i + 1]]] = values[ptr[i]:ptr[i + 1]]
    np.testing.assert_allclose(ours, vec.transform(held).toarray(), atol=1e-6)


def test_nmf_projection_matches_scikit_learn(corpus: list[str]) -> None:
    from sklearn.decomposition import NMF
    from sklearn.feature_extraction.text import TfidfVectorizer

    fit, held = corpus[:1000], corpus[1000:1300]
    vec = TfidfVectorizer(stop_words="english", min_df=2).fit(fit)
    nmf = NMF(8, init="nndsvda", random_state=0, max_iter=1000, tol=1e-6).fit(vec.transform(fit))
    x = vec.transform(held).astype(np.float32)
    h = nmf.components_
    xht = kt.csr_dot(x.indptr.astype(np.int64), x.indices.astype(np.int32), x.data,
                     np.ascontiguousarray(h.T, np.float32))
    ours = kt.nmf_project(xht, h @ h.T, 200)
    want = nmf.transform(vec.transform(held))
    assert (ours >= 0).all()
    np.testing.assert_allclose(ours, want, atol=2e-3)
    strong = want.max(axis=1) > 0.02
    assert (ours.argmax(1) == want.argmax(1))[strong].mean() >= 0.98
    # one row alone gives what it gives in the batch
    np.testing.assert_allclose(kt.nmf_project(xht[3:4], h @ h.T, 200), ours[3:4], rtol=1e-12)


def test_top_terms_drop_a_unigram_inside_a_chosen_bigram() -> None:
    terms = ["red", "sox", "red sox", "win", "game", "big"]
    a, b = kt.bigram_parts(terms)
    assert a.tolist() == [-1, -1, 0, -1, -1, -1] and b.tolist() == [-1, -1, 1, -1, -1, -1]
    # row 0: "red" outscores "red sox", which then takes its place; "sox" below is skipped
    # row 1: fewer terms than k: padded; row 2: empty
    indptr = np.array([0, 6, 7, 7], np.int64)
    ids = np.array([0, 2, 1, 3, 4, 5, 4], np.int32)
    vals = np.array([0.9, 0.8, 0.7, 0.5, 0.5, 0.1, 1.0], np.float32)
    top, scores = kt.top_terms(indptr, ids, vals, a, b, 3)
    assert [[terms[i] if i >= 0 else "" for i in row] for row in top] == [
        ["red sox", "win", "game"], ["game", "", ""], ["", "", ""]]
    np.testing.assert_allclose(scores, [[0.8, 0.5, 0.5], [1.0, 0, 0], [0, 0, 0]])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keywords and topics from the fallback corpus (Python's documentation), as on a machine without data."""
    repo = tmp_path_factory.mktemp("terms")
    models = build_keywords_topics(repo, None, topics=6, top_k=4)
    assert "pydoc_data" in models.corpus and len(models.labels) == 6 and models.vocabulary > 1000
    return repo


def test_fallback_models_serve(built: Path) -> None:
    keywords = KeywordsProgram(built / "nlp_keywords" / "1", {"top_k": 4})
    topics = TopicsProgram(built / "nlp_topics" / "1", {"iterations": 200})
    texts = ["The for statement iterates over the items of any sequence, such as a list or a string.", "",
             "zzzz qqqq", "Exceptions raised in the try clause are handled by the except clause."]
    kw = _serve(keywords, texts)
    assert kw["keywords"].shape == kw["keyword_scores"].shape == (4, 4)
    assert kw["keywords"][1].tolist() == [b""] * 4 and kw["keyword_scores"][2].tolist() == [0.0] * 4
    words = {k.decode() for k in kw["keywords"][0] if k}
    assert words and words <= set(kt.analyze(texts[0], keywords._tfidf.stop_words))
    assert (np.diff(kw["keyword_scores"][0]) <= 0).all()
    tp = _serve(topics, texts)
    assert tp["topic_weights"].shape == (4, 6) and tp["topic_weights"].dtype == np.float32
    assert tp["topic"][1, 0] == tp["topic"][2, 0] == b"" and not tp["topic_weights"][1:3].any()
    assert tp["topic"][0, 0] in topics.labels[:-1] and tp["topic"][3, 0] in topics.labels[:-1]
