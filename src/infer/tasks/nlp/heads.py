"""Text classification heads on the sentence embeddings: sentiment (SST-2), intent (CLINC150, out-of-scope
included) and topic (AG News), each a scikit-learn logistic regression on all-MiniLM-L6-v2's embeddings,
exported with skl2onnx and served beside the encoder in one ``nlp_classify`` program
(:mod:`infer.runtimes.nlp_heads`).

Data (``<data>/nlp/``; labelled sets never ship with infer, so a build needs them):

- ``sst2/train.tsv`` (phrases; those also in ``dev.tsv`` dropped) subsampled to :data:`SST2_TRAIN` for fitting,
  ``sst2/dev.tsv`` held out. Both are phrases of GLUE's SST-2 train split (split 90/10 at random), so most held-out
  phrases sit inside a fitted phrase of the same sentence: those found inside none are also scored apart;
- ``clinc150/train_val.json``: ``train`` and ``oos_train`` (out-of-scope as a class of its own) for fitting,
  ``val`` and ``oos_val`` held out (the published test splits are not in the data directory);
- ``agnews/train.tsv`` (cleaned by :func:`infer.tasks.nlp.text.clean_agnews`): a stratified 20% held out.

Fitting: the texts are embedded as the server embeds them (its tokenizer and ``max_length``, the exported ONNX
encoder, in memory only); ``C`` is picked on a stratified 20% of the fitting rows from :data:`C_GRID`, then the
head is refitted on all of them. The intent head also gets a top-probability threshold under which it answers
``oos``: picked on out-of-fold probabilities of the fitting rows (5 folds at the chosen ``C``) to maximise in-scope
accuracy plus out-of-scope recall. Heads are fitted on the FP32 encoder's embeddings and served on the repository's
encoder (INT8 in the default build): the figures for INT8 are those FP32-trained heads applied to INT8
embeddings. Nothing held out is seen before the evaluation.

    python -m infer.tasks.nlp.heads REPO [--data ../shared/data] [--small]   # encoder too, if REPO lacks it
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from infer.core.files import write_atomic

__all__ = ["C_GRID", "HEADS", "OOS", "SST2_TRAIN", "Encoder", "LabelledSet", "build_heads", "export_head", "load_sets",
           "main", "model_card_section", "pick_threshold", "train_head"]

HEADS: Final = ("sentiment", "intent", "topic")
C_GRID: Final = (1.0, 4.0, 16.0, 64.0)
SST2_TRAIN: Final = 20_000  # SST-2 phrases fitted on (of ~60k): the embedding is most of a build's time
SMALL: Final = {"train": 400, "test": 200}  # rows per set with ``small`` (CLINC150: per intent, see _clinc)
OOS: Final = "oos"
OPSET: Final = 17
SENTIMENT: Final = ("negative", "positive")  # SST-2's 0 and 1
_SEED: Final = 0
_MAX_ITER: Final = 3000
_THRESHOLDS: Final = tuple(i / 100 for i in range(96))  # the rejection thresholds tried

I64 = NDArray[np.int64]
F32 = NDArray[np.float32]


@dataclass
class LabelledSet:
    """One head's data: texts and class indices (into ``classes``) to fit on and to hold out."""

    head: str
    source: str
    classes: list[str]
    train_texts: list[str]
    train_y: I64
    test_texts: list[str]
    test_y: I64
    subsets: dict[str, NDArray[np.bool_]] = field(default_factory=dict)  # held-out rows also scored apart


def _nlp_dir(data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    nlp = data_dir / "nlp" if (data_dir / "nlp").is_dir() else data_dir
    missing = [p for p in ("sst2/train.tsv", "sst2/dev.tsv", "clinc150/train_val.json", "agnews/train.tsv")
               if not (nlp / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{nlp} lacks {', '.join(missing)} (the labelled sets the heads are trained on)")
    return nlp


def _per_class(y: I64, k: int, rng: np.random.Generator, skip: int | None = None) -> I64:
    """Row numbers: up to ``k`` random rows of each class but ``skip``, in row order."""
    rows = [rng.permutation(np.flatnonzero(y == c))[:k] for c in np.unique(y) if c != skip]
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


def _stratified(y: I64, n: int, rng: np.random.Generator) -> I64:
    """Row numbers of a random sample of about ``n`` rows keeping the class shares (every class at least once)."""
    if n >= len(y):
        return np.arange(len(y))
    keep = [rng.permutation(rows)[:max(1, round(n * len(rows) / len(y)))]
            for rows in (np.flatnonzero(y == c) for c in np.unique(y))]
    return np.sort(np.concatenate(keep))


def _take(texts: Sequence[str], y: I64, rows: I64) -> tuple[list[str], I64]:
    return [texts[i] for i in rows], y[rows]


def _tsv(path: Path) -> tuple[list[str], I64]:
    """SST-2's ``sentence<TAB>label`` rows under a header, stripped, first occurrence of each text kept."""
    seen: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        text, _, label = line.rpartition("\t")
        if text.strip() and text.strip() not in seen:
            seen[text.strip()] = int(label)
    return list(seen), np.fromiter(seen.values(), np.int64, len(seen))


def _sst2(nlp: Path, small: bool, rng: np.random.Generator) -> LabelledSet:
    dev, dev_y = _tsv(nlp / "sst2" / "dev.tsv")
    train, train_y = _tsv(nlp / "sst2" / "train.tsv")
    held = set(dev)
    pool = np.array([i for i, t in enumerate(train) if t not in held], np.int64)
    rows = pool[_stratified(train_y[pool], SMALL["train"] if small else SST2_TRAIN, rng)]
    test = _stratified(dev_y, SMALL["test"], rng) if small else np.arange(len(dev))
    fitted, held_out = _take(train, train_y, rows), _take(dev, dev_y, test)
    # dev.tsv is a random tenth of GLUE's train phrases: most are parts of a sentence whose other phrases are in
    # train.tsv, often inside a fitted phrase verbatim; the held-out phrases found in none are scored apart too
    joined = "\n".join(f" {t} " for t in fitted[0])
    unseen = np.fromiter((f" {t} " not in joined for t in held_out[0]), np.bool_, len(held_out[0]))
    return LabelledSet("sentiment", f"SST-2 ({len(rows)} of {len(pool)} train phrases not in dev; dev held out)",
                       list(SENTIMENT), *fitted, *held_out, {"not_inside_a_fitted_phrase": unseen})


def _clinc(nlp: Path, small: bool, rng: np.random.Generator) -> LabelledSet:
    doc = json.loads((nlp / "clinc150" / "train_val.json").read_text(encoding="utf-8"))
    pairs = {split: [(str(t), str(c)) for t, c in doc[split]] for split in ("train", "oos_train", "val", "oos_val")}
    classes = sorted({c for _, c in pairs["train"]} | {OOS})
    index = {c: i for i, c in enumerate(classes)}

    def split(*names: str) -> tuple[list[str], I64]:
        rows = [p for n in names for p in pairs[n]]
        return [t for t, _ in rows], np.array([index[c] for _, c in rows], np.int64)

    train, train_y = split("train", "oos_train")
    test, test_y = split("val", "oos_val")
    if small:  # 3 per intent and 20 out-of-scope to fit on; 1 per intent and 30 out-of-scope held out
        oos = index[OOS]
        fit = np.concatenate([_per_class(train_y, 3, rng, skip=oos), np.flatnonzero(train_y == oos)[:20]])
        held = np.concatenate([_per_class(test_y, 1, rng, skip=oos), np.flatnonzero(test_y == oos)[:30]])
        (train, train_y), (test, test_y) = _take(train, train_y, np.sort(fit)), _take(test, test_y, np.sort(held))
    return LabelledSet("intent", "CLINC150 (train + oos_train fitted; val + oos_val held out)", classes,
                       train, train_y, test, test_y)


def _agnews(data_dir: Path, small: bool, rng: np.random.Generator) -> LabelledSet:
    from infer.tasks.nlp.text import load_corpus

    corpus = load_corpus(data_dir)
    classes = sorted(set(corpus.labels))
    y = np.array([classes.index(c) for c in corpus.labels], np.int64)
    held = _stratified(y, len(y) // 5, rng)
    fit = np.setdiff1d(np.arange(len(y)), held)
    if small:
        fit, held = fit[_stratified(y[fit], SMALL["train"], rng)], held[_stratified(y[held], SMALL["test"], rng)]
    return LabelledSet("topic", f"AG News ({len(y)} rows; a stratified 20% held out)", classes,
                       *_take(corpus.texts, y, fit), *_take(corpus.texts, y, held))


def load_sets(data_dir: Path, *, small: bool = False, seed: int = _SEED) -> dict[str, LabelledSet]:
    """The three heads' data from ``data_dir`` (the shared data root, or its ``nlp`` folder)."""
    nlp = _nlp_dir(data_dir)
    rng = np.random.default_rng(seed)
    return {"sentiment": _sst2(nlp, small, rng), "intent": _clinc(nlp, small, rng),
            "topic": _agnews(nlp / "agnews", small, rng)}


# --- embedding -------------------------------------------------------------------------------------------------


@dataclass
class Encoder:
    """A repository's ``nlp_embed`` model, run in process the way the server runs it (its tokenizer and
    ``max_length``, one ONNX call per batch of texts)."""

    model: str
    version: Path
    params: dict[str, Any]
    precision: str  # "int8" when the graph holds quantised MatMuls, else "fp32"

    @classmethod
    def open(cls, repo: Path, model: str) -> Encoder:
        import onnx

        version = Path(repo) / model / "1"
        doc = json.loads((version / "kernel.json").read_text())
        if doc.get("program") != "nlp_embed":
            raise ValueError(f"{model} is a '{doc.get('program')}' program, not nlp_embed")
        params = dict(doc.get("params", {}))
        graph = onnx.load(str(version / params.get("model", "model.onnx")), load_external_data=False).graph
        quantised = any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul") for n in graph.node)
        return cls(model, version, params, "int8" if quantised else "fp32")

    def embed(self, texts: Sequence[str], batch: int = 64) -> F32:
        """Embeddings ``[N, D]`` in the order of ``texts`` (batched by length, so little padding)."""
        from infer.runtimes.nlp_programs import MAX_LENGTH, load_tokenizer
        from infer.runtimes.onnx import cpu_session
        from infer.tasks.nlp.encoder import embed

        max_length = int(self.params.get("max_length", MAX_LENGTH))
        tokenizer = load_tokenizer(self.version / self.params.get("tokenizer", "tokenizer.json"), max_length)
        session = cpu_session(self.version / self.params.get("model", "model.onnx"), int(self.params.get("threads", 0)))
        order = np.argsort([len(t) for t in texts], kind="stable")
        ordered = embed(session, tokenizer, [texts[int(i)] for i in order], batch=batch, widths=(max_length,))
        out = np.empty_like(ordered)
        out[order] = ordered
        return out


# --- fitting and export ----------------------------------------------------------------------------------------


def _fit(x: F32, y: I64, c: float) -> tuple[Any, bool]:
    """A multinomial logistic regression and whether L-BFGS converged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=_MAX_ITER)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    return model, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def pick_threshold(probs: F32, y: I64, oos: int, grid: Sequence[float] = _THRESHOLDS) -> float:
    """The top-probability threshold under which a text is answered ``oos`` that maximises in-scope accuracy plus
    out-of-scope recall on ``probs`` [N, C] with true classes ``y`` (the smallest such threshold)."""
    top, score = probs.argmax(axis=1), probs.max(axis=1)
    inside, outside = y != oos, y == oos
    best, pick = -1.0, 0.0
    for t in grid:
        pred = np.where(score < t, oos, top)
        value = (float((pred[inside] == y[inside]).mean()) if inside.any() else 0.0) \
            + (float((pred[outside] == oos).mean()) if outside.any() else 0.0)
        if value > best + 1e-12:
            best, pick = float(value), float(t)
    return pick


def train_head(x: F32, y: I64, *, grid: Sequence[float] = C_GRID, oos: int | None = None,
               seed: int = _SEED) -> tuple[Any, dict[str, Any]]:
    """A logistic regression on embeddings ``x`` [N, D]: ``C`` from ``grid`` by accuracy on a stratified 20% of the
    rows (fitted on the rest), then refitted on all rows. With ``oos`` (the out-of-scope class), also a
    rejection threshold (:func:`pick_threshold`) on out-of-fold probabilities at that ``C``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    tune = _stratified(y, len(y) // 5, rng)
    fit = np.setdiff1d(np.arange(len(y)), tune)
    scores: dict[float, float] = {}
    if len(grid) > 1:
        for c in grid:
            tuned, _ = _fit(x[fit], y[fit], c)
            scores[c] = float((tuned.predict(x[tune]) == y[tune]).mean())
    c = max(grid, key=lambda v: (scores.get(v, 0.0), -v))  # ties: the smaller C (more regularised)
    model, converged = _fit(x, y, c)
    info: dict[str, Any] = {"C": c, "tune_accuracy": scores, "converged": converged, "rows": len(y),
                            "classes": len(np.unique(y))}
    if oos is not None:
        folds = max(2, min(5, int(np.unique(y, return_counts=True)[1].min())))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notices of the fold models (the final one is recorded)
            probs = cross_val_predict(LogisticRegression(C=c, max_iter=_MAX_ITER), x, y, method="predict_proba",
                                      cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
        info["threshold"] = pick_threshold(np.asarray(probs, np.float32), y, oos)
        info["threshold_folds"] = folds
    info["train_s"] = time.perf_counter() - t0
    return model, info


def export_head(model: Any, dim: int) -> bytes:
    """The fitted classifier as ONNX: input ``embedding`` float [N, dim] -> ``probabilities`` float [N, C] (and
    the converter's ``label``), zipmap off."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    graph = convert_sklearn(model, initial_types=[("embedding", FloatTensorType([None, dim]))],
                            options={id(model): {"zipmap": False}},
                            target_opset={"": OPSET, "ai.onnx.ml": 3})
    data: bytes = graph.SerializeToString()
    return data


# --- the model -------------------------------------------------------------------------------------------------


def _metrics(pred: I64, y: I64, oos: int | None = None) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    out: dict[str, Any] = {"accuracy": float((pred == y).mean()), "macro_f1": float(f1_score(y, pred, average="macro"))}
    if oos is not None:
        inside, outside = y != oos, y == oos
        out["in_scope_accuracy"] = float((pred[inside] == y[inside]).mean())
        out["oos_recall"] = float((pred[outside] == oos).mean()) if outside.any() else float("nan")
        said = pred == oos
        out["oos_precision"] = float((y[said] == oos).mean()) if said.any() else float("nan")
    return out


def _encoders(repo: Path, encoder_model: str, fp32_model: str | None) -> tuple[Encoder, dict[str, Encoder]]:
    """The served encoder, and the encoders to evaluate by precision: it and, when it is INT8, the FP32 one beside
    it (``<encoder_model>_fp32``)."""
    served = Encoder.open(repo, encoder_model)
    found = {served.precision: served}
    companion = fp32_model or f"{encoder_model}_fp32"
    if served.precision == "int8" and (Path(repo) / companion / "1" / "kernel.json").is_file():
        other = Encoder.open(repo, companion)
        if other.precision == "fp32":
            found["fp32"] = other
    return served, found


def _write(staging: Path, served: Encoder, heads: dict[str, tuple[bytes, list[str], float]]) -> dict[str, Any]:
    """Copy the encoder's files and write the heads and ``kernel.json`` into ``staging/1``; the params."""
    version = staging / "1"
    params = {k: v for k, v in served.params.items() if k != "heads"}
    for key, default in (("model", "model.onnx"), ("tokenizer", "tokenizer.json")):
        write_atomic(version / default, (served.version / str(served.params.get(key, default))).read_bytes())
        params[key] = default
    params["heads"] = {}
    for head, (graph, labels, threshold) in heads.items():
        write_atomic(version / f"{head}.onnx", graph)
        spec: dict[str, Any] = {"model": f"{head}.onnx", "labels": labels}
        if threshold > 0.0:
            spec["reject"] = {"threshold": threshold, "label": OOS}
        params["heads"][head] = spec
    write_atomic(version / "kernel.json", json.dumps({"program": "nlp_classify", "params": params}, indent=1))
    return params


def build_heads(repo: Path, encoder_model: str = "nlp_embed", data_dir: Path | None = None, *,
                name: str = "nlp_classify", small: bool = False, fp32_model: str | None = None,
                max_batch_size: int = 64) -> dict[str, Any]:
    """Train the sentiment, intent and topic heads on ``data_dir`` (the shared data root or its ``nlp`` folder;
    default ``../shared/data`` beside the checkout) and write ``repo/name``: the encoder of ``repo/encoder_model``
    (its files copied) with the heads, an ``nlp_classify`` program. Heads are fitted on the FP32 encoder
    (``fp32_model``, default ``<encoder_model>_fp32``, when ``encoder_model`` is INT8) and evaluated on every
    encoder found; returns what was measured. ``small``: a few hundred rows per set, one ``C`` (tests)."""

    from infer.runtimes.nlp_heads import ClassifyProgram
    from infer.tasks.kernel_models import kernel_config, staged_model
    from infer.tasks.nlp.text import default_data_dir

    t0 = time.perf_counter()
    data_dir = data_dir if data_dir is not None else default_data_dir()
    if data_dir is None:
        raise FileNotFoundError("no data directory: the heads need SST-2, CLINC150 and AG News (give data_dir)")
    repo = Path(repo)
    sets = load_sets(data_dir, small=small)
    served, encoders = _encoders(repo, encoder_model, fp32_model)
    fit_on = encoders.get("fp32", served)
    summary: dict[str, Any] = {"name": name, "encoder": encoder_model, "served_precision": served.precision,
                               "fitted_on": f"{fit_on.model} ({fit_on.precision})", "small": small, "heads": {}}
    written: dict[str, tuple[bytes, list[str], float]] = {}
    tests: dict[str, dict[str, F32]] = {}
    references: dict[str, NDArray[np.float64]] = {}  # scikit-learn's probabilities on the fitted encoder's
    for head, data in sets.items():
        t1 = time.perf_counter()
        x = fit_on.embed(data.train_texts)
        t2 = time.perf_counter()
        oos = data.classes.index(OOS) if OOS in data.classes else None
        model, info = train_head(x, data.train_y, grid=C_GRID[2:3] if small else C_GRID, oos=oos)
        written[head] = (export_head(model, x.shape[1]), data.classes, float(info.get("threshold", 0.0)))
        t3 = time.perf_counter()
        tests[head] = {p: enc.embed(data.test_texts) for p, enc in encoders.items()}
        summary["heads"][head] = {"source": data.source, "classes": len(data.classes), "train": len(data.train_y),
                                  "test": len(data.test_y), "embed_train_s": t2 - t1,
                                  "embed_test_s": time.perf_counter() - t3, **info}
        references[head] = model.predict_proba(tests[head][fit_on.precision])
    with staged_model(repo, name) as staging:
        params = _write(staging, served, written)
        program = ClassifyProgram(staging / "1", params)
        write_atomic(staging / "config.pbtxt",
                     kernel_config(name, program.inputs, program.outputs, max_batch_size=max_batch_size))
        for h in program.heads:
            summary["heads"][h.name].update(_evaluate(h, sets[h.name], tests[h.name]))
            (probs,) = h.session.run(["probabilities"], {"embedding": tests[h.name][fit_on.precision]})
            summary["heads"][h.name]["onnx_vs_sklearn_max_abs"] = float(np.abs(probs - references[h.name]).max())
    summary["build_s"] = time.perf_counter() - t0
    return summary


def _evaluate(head: Any, data: LabelledSet, embeddings: dict[str, F32]) -> dict[str, Any]:
    """Figures of the served head (its ONNX file, labels and threshold) on each encoder's held-out embeddings."""
    index = {c.encode(): i for i, c in enumerate(data.classes)}
    oos = data.classes.index(OOS) if OOS in data.classes else None
    out: dict[str, Any] = {}
    for precision, x in embeddings.items():
        labels, _ = head.classify(x)
        pred = np.array([index[b] for b in labels[:, 0]], np.int64)
        figures: dict[str, Any] = _metrics(pred, data.test_y, oos)
        if oos is not None:  # the out-of-scope class alone, no threshold
            (probs,) = head.session.run(["probabilities"], {"embedding": x})
            figures["class_only"] = _metrics(np.asarray(probs).argmax(axis=1), data.test_y, oos)
        for subset, mask in data.subsets.items():
            figures[subset] = {"rows": int(mask.sum()), **_metrics(pred[mask], data.test_y[mask], oos)}
        out[precision] = figures
    return out


# --- card and command ------------------------------------------------------------------------------------------


def _pct(figures: dict[str, Any], key: str) -> str:
    value = figures.get(key)
    return "-" if value is None or value != value else f"{100 * value:.1f}"


def model_card_section(summary: dict[str, Any]) -> str:
    """Markdown: what :func:`build_heads` measured, one table row per head and encoder, and where the data came
    from."""
    rows = []
    for head, h in summary["heads"].items():
        for precision in ("fp32", "int8"):
            if precision not in h:
                continue
            f = h[precision]
            extra = ""
            if "oos_recall" in f:
                c = f["class_only"]
                extra = (f"{_pct(f, 'in_scope_accuracy')} / {_pct(f, 'oos_recall')} / {_pct(f, 'oos_precision')} "
                         f"(class alone: {_pct(c, 'in_scope_accuracy')} / {_pct(c, 'oos_recall')} / "
                         f"{_pct(c, 'oos_precision')}; accuracy {_pct(c, 'accuracy')})")
            rows.append(f"| {head} | {precision.upper()} | {h['classes']} | {h['train']} | {h['test']} | "
                        f"{_pct(f, 'accuracy')} | {_pct(f, 'macro_f1')} | {extra} |")
    fits = "; ".join(f"{head} C={h['C']:g}, {h['train_s']:.1f} s" + (f", threshold {h['threshold']:.2f}"
                                                                       if "threshold" in h else "")
                     for head, h in summary["heads"].items())
    embed_s = sum(h["embed_train_s"] + h["embed_test_s"] for h in summary["heads"].values())
    small = " (small: a few hundred rows per set)" if summary.get("small") else ""
    served = summary["served_precision"].upper()
    sentiment = summary["heads"]["sentiment"]
    apart = [f"{p.upper()} {_pct(sentiment[p]['not_inside_a_fitted_phrase'], 'accuracy')}%" for p in ("fp32", "int8")
             if "not_inside_a_fitted_phrase" in sentiment.get(p, {})]
    unseen = next((sentiment[p]["not_inside_a_fitted_phrase"]["rows"] for p in ("fp32", "int8")
                   if "not_inside_a_fitted_phrase" in sentiment.get(p, {})), 0)
    return f"""## {summary['name']}: sentiment, intent and topic heads

Scikit-learn logistic regressions on the sentence embeddings of `{summary['encoder']}` (all-MiniLM-L6-v2),
exported with skl2onnx and served in the same `nlp_classify` program as the encoder: one encoder call per batch,
then one small ONNX call per head. Fitted on the embeddings of {summary['fitted_on']}; the model serves the
{served} encoder, and the INT8 rows are the same FP32-fitted heads applied to INT8 embeddings (no refit).
`C` was picked from {', '.join(f'{c:g}' for c in C_GRID)} on a stratified 20% of the fitting rows, then the head
refitted on all of them; the intent head answers `oos` when CLINC150's out-of-scope class wins or when its top
probability is below a threshold picked on 5-fold out-of-fold probabilities of the fitting rows (maximising
in-scope accuracy + OOS recall). Held-out rows are never seen before this evaluation.

| head | encoder | classes | fitted | held out | accuracy % | macro-F1 % | in-scope acc. / OOS recall / precision % |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Intent: accuracy and macro-F1 over all 151 classes (out-of-scope one of them). The threshold trades in-scope
accuracy for out-of-scope recall; at CLINC150's validation mix (3% out of scope) most `oos` answers it adds are
in-scope texts, so where out-of-scope requests are rare, drop `reject` from `kernel.json` (the "class alone" figures).
SST-2 held-out phrases found verbatim inside no fitted phrase ({unseen} of {sentiment['test']}): accuracy
{', '.join(apart) or '-'}.

Fitting (tuning and threshold folds included): {fits}. Embedding (ONNX Runtime, CPU; FP32: fitted and held-out
rows, INT8: held-out rows): {embed_s:.0f} s. Build {summary.get('build_s', 0.0):.0f} s in all{small}.

Data (`../shared/data/nlp`, never shipped with infer; a build needs it):

- **SST-2** (Stanford Sentiment Treebank, GLUE binary split; public research data, copied from forest-snow/alps,
  repository MIT): fitted on {summary['heads']['sentiment']['train']} `train.tsv` phrases (those also in
  `dev.tsv` removed), held out: `dev.tsv`. The two files are a random 90/10 split of GLUE's SST-2 *train*
  phrases (60,614 + 6,735 = 67,349): phrases of the treebank's parse trees (~9 words on average), not whole
  sentences, and most held-out phrases are parts of sentences whose other phrases were fitted on (hence the
  figure on the phrases found inside no fitted phrase). Not comparable with GLUE's sentence-level dev accuracy.
- **CLINC150** (Larson et al., 2019; CC BY 3.0): 150 intents + out-of-scope; fitted on `train` + `oos_train`,
  held out: `val` + `oos_val` (the published test split is not in the data directory).
- **AG News** (Zhang et al., 2015, from Antonio Gulli's corpus; academic, non-commercial use; copied from
  forest-snow/alps): World, Sports, Business, Sci/Tech; a stratified 20% of the 10,000 rows held out.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Build the heads into REPO (exporting the encoder first when REPO lacks it); print the figures as JSON and the
    model card section."""
    import argparse

    from infer.tasks.nlp.text import default_data_dir

    parser = argparse.ArgumentParser(prog="python -m infer.tasks.nlp.heads", description=main.__doc__)
    parser.add_argument("repo", type=Path)
    parser.add_argument("--data", type=Path, default=None, help="the data root holding nlp/ (default ../shared/data)")
    parser.add_argument("--encoder", default="nlp_embed", help="the nlp_embed model served with the heads")
    parser.add_argument("--name", default="nlp_classify")
    parser.add_argument("--small", action="store_true", help="a few hundred rows per set")
    args = parser.parse_args(argv)
    data = args.data or default_data_dir()
    if data is None:
        parser.error("no data directory: give --data (../shared/data is not beside the checkout)")
    if not (args.repo / args.encoder / "1" / "kernel.json").is_file():
        _write_encoders(args.repo, args.encoder)
    summary = build_heads(args.repo, args.encoder, data, name=args.name, small=args.small)
    print(json.dumps(summary, indent=1))
    print(model_card_section(summary))
    return 0


def _write_encoders(repo: Path, name: str) -> None:
    """``name`` (INT8) and ``name_fp32``: all-MiniLM-L6-v2 exported and quantised (the ``nlp`` and torch extras)."""
    import tempfile

    from infer.tasks.nlp.encoder import default_encoder_dir, export_onnx, quantize_int8, write_encoder_model

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(None, Path(tmp) / "fp32.onnx")
        int8 = quantize_int8(fp32, Path(tmp) / "int8.onnx")
        tokenizer = default_encoder_dir() / "tokenizer.json"
        write_encoder_model(repo, name, int8, tokenizer)
        write_encoder_model(repo, f"{name}_fp32", fp32, tokenizer)


if __name__ == "__main__":
    raise SystemExit(main())
