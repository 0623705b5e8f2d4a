"""Held-out evaluation of the anomaly pipeline, run through the same programs and ONNX files the server loads.

For the ensemble and for each single detector (its own probability, thresholded where it had its best F1 on
the validation stream): precision, recall, F1 and PR-AUC overall and per anomaly kind (each kind's events
against the normal ones), the type classifier's accuracy on detected anomalies, the severity mix, and the
INT8 autoencoder against its FP32 original. ``markdown`` renders it for the model card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score

from infer.tasks.anomaly import detectors as det
from infer.tasks.anomaly import events as ev
from infer.tasks.anomaly.pipeline import best_f1_threshold

__all__ = ["evaluate_pipeline", "markdown", "model_card", "run_programs"]


def _params(repo: Path, model: str) -> dict[str, Any]:
    params: dict[str, Any] = json.loads((repo / model / "1" / "kernel.json").read_text())["params"]
    return params


def run_programs(repo: Path, name: str, events: dict[str, Any], chunk: int = 0) -> dict[str, NDArray[Any]]:
    """The pipeline's answers for ``events`` in order, computed from the repository's files in process
    (``chunk`` > 0: in batches of that many events, as a server would see them)."""
    from infer.runtimes.anomaly_programs import FeatureProgram, ScorerProgram, StreamingProgram

    feats = FeatureProgram(repo / f"{name}_features" / "1", _params(repo, f"{name}_features"))
    stream = StreamingProgram(repo / f"{name}_streaming" / "1", _params(repo, f"{name}_streaming"))
    scorer = ScorerProgram(repo / f"{name}_scorer" / "1", _params(repo, f"{name}_scorer"))
    sessions = {d: det._session(str(repo / f"{name}_{d}" / "1" / "model.onnx"))
                for d, _ in scorer.detectors if d != "streaming"}
    n = len(events["timestamp"])
    step = chunk or n
    parts: list[dict[str, NDArray[Any]]] = []
    for a in range(0, n, step):
        batch = {k: np.asarray(v[a:a + step]).reshape(-1, 1) for k, v in events.items()}
        f = feats.run(batch, ["features", "series"])
        ins: dict[str, NDArray[Any]] = dict(f)
        for d, sess in sessions.items():
            ins[d] = sess.run(["prob"], {"x": f["features"]})[0]
        ins["streaming"] = stream.run(f, ["probs"])["probs"]
        out = scorer.run(ins, [])
        out["features"] = f["features"]
        parts.append(out)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _prf(y: NDArray[np.bool_], flag: NDArray[np.bool_], score: NDArray[Any]) -> dict[str, float]:
    tp = float(np.sum(flag & y))
    precision = tp / max(float(flag.sum()), 1.0)
    recall = tp / max(float(y.sum()), 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    pr_auc = float(average_precision_score(y, score)) if 0 < y.sum() < len(y) else float("nan")
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "pr_auc": round(pr_auc, 4)}


def evaluate_pipeline(
    repo: Path, name: str, split: ev.Split, columns: list[str], val_probs: NDArray[Any],
    ae_fp32: onnx.ModelProto | None,
) -> dict[str, Any]:
    test = split.test
    out = run_programs(repo, name, test.events)
    y, kind = test.is_anomaly, test.kind
    score = out["score"][:, 0]
    flags = {"ensemble": (out["is_anomalous"][:, 0], score)}
    y_va = split.validation.is_anomaly
    for j, col in enumerate(columns):
        p = out["detector_probs"][:, j]
        flags[col] = (p >= best_f1_threshold(y_va, val_probs[:, j]), p)
    overall = {who: _prf(y, f, s) for who, (f, s) in flags.items()}
    per_kind: dict[str, dict[str, dict[str, float]]] = {}
    for k, kname in enumerate(ev.KINDS, start=1):
        rows = (kind == 0) | (kind == k)
        per_kind[kname] = {who: _prf(kind[rows] == k, f[rows], s[rows]) for who, (f, s) in flags.items()}
    detected = out["is_anomalous"][:, 0] & y
    predicted = np.array([t.decode() for t in out["anomaly_type"][detected, 0]])
    truth = np.array([ev.KINDS[k - 1] for k in kind[detected]])
    severities, counts = np.unique(out["severity"][:, 0].astype(str), return_counts=True)
    chunked = run_programs(repo, name, {k: v[:512] for k, v in test.events.items()}, chunk=1)
    first = {k: v[:512] for k, v in run_programs(repo, name, {k: v[:512] for k, v in test.events.items()}).items()}
    result: dict[str, Any] = {
        "n_test": len(y), "n_anomalies": int(y.sum()),
        "overall": overall, "per_kind": per_kind,
        "type_accuracy": round(float(np.mean(predicted == truth)), 4) if len(truth) else float("nan"),
        "severity_counts": {str(s): int(c) for s, c in zip(severities, counts, strict=True)},
        "batched_vs_one_by_one_max_abs_diff": float(np.max(np.abs(chunked["score"] - first["score"]))),
    }
    if ae_fp32 is not None:
        int8 = onnx.load(str(repo / f"{name}_autoencoder" / "1" / "model.onnx"))
        result["autoencoder_int8_vs_fp32"] = det.compare_int8(ae_fp32, int8, out["features"], y, repeats=3)
    return result


def markdown(summary: dict[str, Any]) -> str:
    """The evaluation as model-card tables."""
    e = summary["evaluation"]
    whos = list(e["overall"])
    lines = [f"Held-out test stream: {e['n_test']:,} events, {e['n_anomalies']:,} anomalies "
             f"(seed {summary['config']['seed']}).", "",
             "| detector | precision | recall | F1 | PR-AUC |", "|---|--:|--:|--:|--:|"]
    for who in whos:
        m = e["overall"][who]
        lines.append(f"| {who} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['pr_auc']:.3f} |")
    lines += ["", "Per anomaly kind (that kind's events against the normal ones), F1 / PR-AUC:", "",
              "| kind | " + " | ".join(whos) + " |", "|---|" + "--:|" * len(whos)]
    for kind, row in e["per_kind"].items():
        lines.append(f"| {kind} | " + " | ".join(f"{row[w]['f1']:.3f} / {row[w]['pr_auc']:.3f}" for w in whos) + " |")
    lines += ["", f"Type accuracy on detected anomalies: {e['type_accuracy']:.3f}. Severity counts: "
              + ", ".join(f"{k} {v}" for k, v in e["severity_counts"].items()) + ".",
              f"Batched vs one event at a time (first 512 test events): max |score difference| "
              f"{e['batched_vs_one_by_one_max_abs_diff']:.2g}."]
    if "autoencoder_int8_vs_fp32" in e:
        c = e["autoencoder_int8_vs_fp32"]
        lines += ["", "Autoencoder INT8 against FP32 (test features): "
                  + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in c.items()
                              if not isinstance(v, dict))]
    return "\n".join(lines) + "\n"


def model_card(summary: dict[str, Any]) -> str:
    """MODEL_CARD.md for the ``anomaly`` ensemble written by :func:`infer.tasks.anomaly.pipeline.build_pipeline`."""
    cfg = summary["config"]
    weights = ", ".join(f"{k} {v:+.3f}" for k, v in summary["weights"].items() if not k.startswith("z:"))
    weights += "; and one per feature's robust z-score, the largest " + ", ".join(
        f"{k[2:]} {v:+.2f}" for k, v in sorted(((k, v) for k, v in summary["weights"].items() if k.startswith("z:")),
                                               key=lambda kv: -abs(kv[1]))[:4])
    text = f"""# Model card: {summary["model"]} (anomaly-detection pipeline)

**What it does.** Takes raw file-processing events (timestamp, user, namespace, file_type, content_hash,
file_size, hash_time_ms, api_latency_ms, concurrency) and answers, per event: `score` (0-1), `is_anomalous`,
`severity` (NONE, LOW, MEDIUM, HIGH, CRITICAL), `anomaly_type` (statistical, behavioural, temporal,
performance, content, security), the three `top_features` that drove it, and each detector's probability.

**How.** An ensemble of stage models, each batched by its own scheduler: numba feature kernels with per-user
and per-namespace rolling state ({summary["n_features"]} features) -> IsolationForest, LocalOutlierFactor and an
autoencoder ({summary["autoencoder"]}) as ONNX, plus streaming EW z-score and moving-average deviation per user
-> a logistic combination of the detectors' calibrated probabilities and the per-feature robust z-scores
(weights: {weights}; bias {summary["bias"]:+.3f}), a decision threshold chosen for F1 on validation,
severities from thresholds that move with each user's recent scores, a linear type classifier over feature
contributions and detector logits.

**Data.** Synthetic streams from `infer.tasks.anomaly.events` (see EVENTS.md): {cfg["n_users"]} users, seed
{cfg["seed"]}; {cfg["n_train"]:,} normal training events, {cfg["n_validation"]:,} labelled validation events
(ensemble weights, thresholds, type classifier), {cfg["n_test"]:,} held-out test events, in that time order.
The shipped rolling states are those at the end of validation.

## Held-out evaluation

"""
    return text + markdown(summary) + _drift_section(summary)


def _drift_section(summary: dict[str, Any]) -> str:
    """The model card's "Drift reference" section (empty for a summary without one)."""
    from infer.observability.drift import reference_markdown

    d = summary.get("drift_reference")
    if not d:
        return ""
    return f"""
## Drift reference

`{d["file"]}` records the training stream's raw fields (timestamp and the identifiers user and
content_hash left out). The server compares each window of {d["window"]:,} live events with it: a field drifts
when its Kolmogorov-Smirnov (numbers) or chi-squared (categories) test rejects at 1% over all fields
(Bonferroni) and its PSI reaches 0.2 (`infer_drift_*` metrics, `GetDrift`). The window is long because load
follows the hour and the weekday: on anomaly-free streams after the default build's training (50 users),
windows of half a day (1,000 events) were reported drifted 93% of the time, windows of 10,000 events never,
and a population with other habits in every one (`infer.drift.window` in the ensemble's config). Each
detector's version directory holds the same for its feature matrix ({len(d["detector_features"])} features;
calendar features and those that move as the rolling state fills left out).

""" + reference_markdown(d["features"], d["rows"])
