"""Build the anomaly pipeline: generate event streams, extract features, train five detectors and the ensemble
scorer, write every stage and the ensemble into a model repository, evaluate on a held-out stream.

Models written (each also served on its own)::

    anomaly_features     kernel program: raw event fields -> features [F], series (user hash)
    anomaly_iforest      ONNX: IsolationForest            x [F] -> score, prob
    anomaly_lof          ONNX: LocalOutlierFactor          x [F] -> score, prob
    anomaly_autoencoder  ONNX: PyTorch autoencoder, INT8   x [F] -> score, prob   (needs the torch extra to build)
    anomaly_streaming    kernel program: EW z-score and moving-average deviation per user -> probs [2]
    anomaly_scorer       kernel program: weights, thresholds, severity, type, top features
    anomaly              the ensemble of them: raw events in; score, is_anomalous, severity, anomaly_type,
                         top_features, detector_probs out

Training uses the normal-only training stream (unsupervised detectors); the scorer's weights, decision and
severity thresholds and type classifier are fitted on the labelled validation stream; the test stream is only
evaluated. The states shipped (rolling features, per-series histories) are those at the end of validation, so
the model continues where its data ended.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve

from infer.core.files import write_atomic
from infer.observability.drift import REFERENCE_FILE as DRIFT_REFERENCE
from infer.observability.drift import build_reference
from infer.tasks.anomaly import detectors as det
from infer.tasks.anomaly import events as ev

__all__ = ["BuildConfig", "Progress", "best_f1_threshold", "build_pipeline", "ensemble_config"]

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
STREAM_COLUMNS = ("log_api_latency_ms", "hash_ms_per_mb", "log_file_size", "user_events_last_hour")
# features kept for context (the scorer's per-feature z-scores, top features) but not given to the unsupervised
# detectors: as their inputs they cost IsolationForest about 0.04 PR-AUC
CONTEXT_ONLY = ("day_of_week", "log_seconds_since_user_last", "user_rate_per_hour", "namespace_rate_per_hour",
                "user_namespace_entropy")
# drift references (infer.observability.drift): the events' time and identifiers carry no distribution to
# compare; nor do the calendar features (any window shorter than a week differs from a month of them) or those
# that move as the rolling state fills (novelties fall, entropy rises: on anomaly-free streams they were
# reported drifted in every window)
DRIFT_IGNORED = ("timestamp", "user", "content_hash")
DRIFT_CATEGORICAL = ("namespace", "file_type")
DRIFT_UNSTEADY_FEATURES = ("hour_sin", "hour_cos", "weekend", "day_of_week", "user_hour_novelty",
                           "user_file_type_novelty", "user_namespace_novelty", "user_namespace_entropy",
                           "log_seconds_since_hash_seen")  # hashes seen again grow with the state: PSI 14
# rows per drift window: load, and with it concurrency and latency, follows the hour and the weekday, and a few
# users dominate any half day; on anomaly-free streams after the default build's training, windows of 1000
# events (half a day) were reported drifted 93% of the time, of 5000 20%, of 10000 (four to five days) never
# (raw fields; 1 of 56 for the detectors' features), while a second population (other habits) was reported in
# every 10000-event window
DRIFT_WINDOW = 10_000


@dataclass(frozen=True)
class BuildConfig:
    n_train: int = 60_000
    n_validation: int = 30_000
    n_test: int = 30_000
    n_users: int = 50  # with 50 users 60k events span about a month: every weekday and hour is seen
    seed: int = 0
    capacity: int = 8192  # rolling-state slots (users, namespaces, series): a power of two
    lof_rows: int = 5_000  # LOF compares each event with this many training rows at serve time
    ae_epochs: int = 30
    whiten_iforest: bool = True
    max_batch_size: int = 256
    with_autoencoder: bool | None = None  # None: when torch is installed


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self._t0 = time.monotonic()
        self._tty = sys.stderr.isatty()

    def step(self, what: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 24
        filled = int(width * self.done / self.total)
        took = time.monotonic() - self._t0
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {what} ({took:.0f} s)"
        print(("\r" + line.ljust(100)) if self._tty else line, end="" if self._tty else "\n", file=sys.stderr,
              flush=True)
        if self._tty and self.done == self.total:
            print(file=sys.stderr)


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def best_f1_threshold(y: NDArray[np.bool_], score: NDArray[np.floating]) -> float:
    """The score threshold with the best F1 on labels ``y`` (also how single detectors are thresholded)."""
    precision, recall, thresholds = precision_recall_curve(y, score)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def _f1_at(y: NDArray[np.bool_], score: NDArray[np.floating], threshold: float) -> float:
    flag = score >= threshold
    tp = float(np.sum(flag & y))
    return 2 * tp / max(float(flag.sum() + y.sum()), 1.0)


def _fit_combiner(x: NDArray[np.float64], y: NDArray[np.bool_]) -> tuple[NDArray[np.float64], float, dict[str, Any]]:
    """Logistic weights over the detector logits, regularisation and class weighting chosen by F1 on the other
    half of the validation stream (fit on the first half, judged on the second, and the other way round),
    then refitted on all of it."""
    half = len(y) // 2
    folds = [(slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))]
    best: tuple[float, dict[str, Any]] = (-1.0, {})
    for c in (0.01, 0.1, 1.0, 10.0):
        for cw in (None, "balanced"):
            f1 = 0.0
            for fit, judge in folds:
                lr = LogisticRegression(C=c, class_weight=cw, max_iter=3000).fit(x[fit], y[fit])
                thr = best_f1_threshold(y[fit], lr.decision_function(x[fit]))
                f1 += _f1_at(y[judge], lr.decision_function(x[judge]), thr) / len(folds)
            if f1 > best[0]:
                best = (f1, {"C": c, "class_weight": cw, "cross_f1": round(f1, 4)})
    params = best[1]
    lr = LogisticRegression(C=params["C"], class_weight=params["class_weight"], max_iter=3000).fit(x, y)
    return lr.coef_[0].astype(np.float64), float(lr.intercept_[0]), params


def _robust_scale(x: F32) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    centre = np.median(x, axis=0).astype(np.float64)
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    scale = np.maximum.reduce([(q75 - q25) / 1.349, 0.1 * x.std(axis=0), np.full(x.shape[1], 1e-3)])
    return centre, scale.astype(np.float64)


def _drift_parameters() -> str:
    return "".join(f'parameters: {{ key: "infer.drift.{k}" value: {{ string_value: "{v}" }} }}\n'
                   for k, v in (("window", DRIFT_WINDOW), ("min_rows", DRIFT_WINDOW), ("every_s", 30)))


def _onnx_model(repo: Path, name: str, model: onnx.ModelProto, mbs: int) -> None:
    write_atomic(repo / name / "1" / "model.onnx", model.SerializeToString())
    # no spinning intra-op threads: six stages share the cores, and idle spinners took them from the busy ones
    # (benchmarks/RESULTS.md, anomaly pipeline: 2x throughput at 64 events a request with spinning off)
    write_atomic(repo / name / "config.pbtxt", f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {mbs}\n'
                                         "dynamic_batching { }\n"
                                         'parameters: { key: "infer.allow_spinning" value: { string_value: "0" } }\n'
                                         + _drift_parameters())


def _kernel_model(repo: Path, name: str, program: str, params: dict[str, Any], mbs: int) -> Path:
    d = repo / name / "1"
    write_atomic(d / "kernel.json", json.dumps({"program": program, "params": params}, indent=1))
    # no zero-event warm-up: it would fold fake events into the shipped rolling state (the programs compile
    # their kernels on a throwaway state when they load)
    write_atomic(repo / name / "config.pbtxt", f'name: "{name}"\nbackend: "kernel"\nmax_batch_size: {mbs}\n'
                                         "dynamic_batching { }\n"
                                         'parameters: { key: "infer.warmup" value: { string_value: "false" } }\n')
    return d


def ensemble_config(name: str, detectors: list[str], n_detector_columns: int, top_k: int, mbs: int) -> str:
    """The config.pbtxt of the ``anomaly`` ensemble over the stage models."""
    from infer.runtimes.anomaly_programs import RAW_FIELDS

    types = {"FP64": "TYPE_FP64", "BYTES": "TYPE_STRING", "INT64": "TYPE_INT64", "FP32": "TYPE_FP32",
             "INT32": "TYPE_INT32"}
    ins = ", ".join(f'{{ name: "{n}" data_type: {types[dt.value]} dims: [1] }}' for n, dt in RAW_FIELDS)
    outs = [("score", "TYPE_FP32", 1), ("is_anomalous", "TYPE_BOOL", 1), ("severity", "TYPE_STRING", 1),
            ("anomaly_type", "TYPE_STRING", 1), ("top_features", "TYPE_STRING", top_k),
            ("detector_probs", "TYPE_FP32", n_detector_columns)]
    out_text = ", ".join(f'{{ name: "{n}" data_type: {t} dims: [{d}] }}' for n, t, d in outs)

    def step(model: str, ins: dict[str, str], outs: dict[str, str]) -> str:
        imap = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in ins.items())
        omap = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outs.items())
        return f'  {{ model_name: "{model}" model_version: -1 {imap} {omap} }}'

    steps = [step(f"{name}_features", {n: n for n, _ in RAW_FIELDS}, {"features": "features", "series": "series"})]
    steps += [step(f"{name}_{d}", {"x": "features"}, {"prob": f"p_{d}"}) for d in detectors]
    steps.append(step(f"{name}_streaming", {"features": "features", "series": "series"}, {"probs": "p_streaming"}))
    scorer_in = {"features": "features", "series": "series", **{d: f"p_{d}" for d in detectors},
                 "streaming": "p_streaming"}
    steps.append(step(f"{name}_scorer", scorer_in, {o[0]: o[0] for o in outs}))
    return (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {mbs}\ninput [ {ins} ]\noutput [ {out_text} ]\n'
            "ensemble_scheduling { step [\n" + ",\n".join(steps) + "\n] }\n" + _drift_parameters())


def build_pipeline(
    repo: Path, name: str = "anomaly", config: BuildConfig | None = None, *, progress: bool = True,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train every stage, write them and the ensemble into ``repo``; return the held-out evaluation."""
    from infer.runtimes.anomaly_programs import StreamingProgram
    from kernels import anomaly_features as af
    from kernels import anomaly_scoring as sc

    cfg = config or BuildConfig()
    with_ae = _has_torch() if cfg.with_autoencoder is None else cfg.with_autoencoder
    bar = Progress(9 if evaluate else 8, enabled=progress)
    split = ev.generate_split(cfg.n_train, cfg.n_validation, cfg.n_test, cfg.seed, n_users=cfg.n_users)
    bar.step("generated event streams")

    state = af.new_state(cfg.capacity)
    x_tr, x_va = af.extract(split.train.events, state), af.extract(split.validation.events, state)
    enc = {k: af.encode_events(s.events).user for k, s in (("train", split.train), ("val", split.validation))}
    bar.step("extracted features")

    rng = np.random.default_rng(cfg.seed)
    cols = [i for i, n in enumerate(af.FEATURE_NAMES) if n not in CONTEXT_ONLY]
    x_det = x_tr[:, cols]
    lof_rows = x_det[np.sort(rng.choice(len(x_det), min(cfg.lof_rows, len(x_det)), replace=False))]
    models: dict[str, onnx.ModelProto] = {
        "iforest": det.train_isolation_forest(x_det, cfg.seed, whiten=cfg.whiten_iforest, n_estimators=200),
    }
    bar.step("trained the isolation forest")
    models["lof"] = det.train_lof(lof_rows, cfg.seed, n_neighbors=20)
    bar.step("trained the local outlier factor")
    ae_fp32 = None
    if with_ae:
        ae_fp32 = det.train_autoencoder(x_det, cfg.seed, epochs=cfg.ae_epochs)
        models["autoencoder"] = det.quantize_int8(ae_fp32, x_det)
    if len(cols) < x_tr.shape[1]:  # the served detectors take every feature and read their own columns
        models = {d: det.with_columns(m, x_tr.shape[1], cols) for d, m in models.items()}
        ae_fp32 = det.with_columns(ae_fp32, x_tr.shape[1], cols) if ae_fp32 is not None else None
    bar.step("trained and quantized the autoencoder" if with_ae else "skipped the autoencoder (no torch)")

    stream = StreamingProgram(Path("."), {"columns": list(STREAM_COLUMNS), "capacity": cfg.capacity})
    p_stream = {k: stream.run({"features": x, "series": enc[k]}, ["probs"])["probs"]
                for k, x in (("train", x_tr), ("val", x_va))}
    detectors = list(models)
    probs = {k: np.concatenate([*(det.score_onnx(models[d], x)[1][:, None] for d in detectors), p_stream[k]], axis=1)
             for k, x in (("train", x_tr), ("val", x_va))}
    columns = [*detectors, "zscore", "madev"]
    bar.step("scored the detectors")

    y_va = split.validation.is_anomaly
    centre, scale = _robust_scale(x_tr)
    contribs = {k: sc.contributions(x, centre, scale) for k, x in (("train", x_tr), ("val", x_va))}
    weights, bias, chosen = _fit_combiner(sc.combiner_inputs(probs["val"], contribs["val"]), y_va)
    score_va = sc.combine(probs["val"], weights, bias, contribs["val"])
    decision = best_f1_threshold(y_va, score_va)
    lg = sc.logit(score_va)
    above = lg[lg >= sc.logit(np.array([decision]))[0]]
    thresholds = [float(sc.logit(np.array([decision]))[0]),
                  *(float(q) for q in np.quantile(above, [0.5, 0.8, 0.95]))]
    anomalies = y_va & (split.validation.kind > 0)
    contrib = contribs["val"][anomalies]
    typer = LogisticRegression(C=0.5, max_iter=3000).fit(
        np.concatenate([np.log1p(contrib.astype(np.float64)), sc.logit(probs["val"][anomalies])], axis=1),
        split.validation.kind[anomalies] - 1)
    type_w = np.zeros((x_va.shape[1] + len(columns), len(ev.KINDS)))
    type_b = np.full(len(ev.KINDS), -1e9)
    type_w[:, typer.classes_] = typer.coef_.T
    type_b[typer.classes_] = typer.intercept_
    series_state = _warm_series(sc, probs, contribs, weights, bias, enc, thresholds, cfg.capacity)
    bar.step("fitted the ensemble scorer")

    # ---- write the repository
    mbs = cfg.max_batch_size
    feat_dir = _kernel_model(repo, f"{name}_features", "anomaly_features", {"state": "state.npz"}, mbs)
    state.save(feat_dir / "state.npz")
    for d, model in models.items():
        _onnx_model(repo, f"{name}_{d}", model, mbs)
    stream_dir = _kernel_model(repo, f"{name}_streaming", "anomaly_streaming",
                               {"columns": list(STREAM_COLUMNS), "states": True}, mbs)
    stream.save(stream_dir, STREAM_COLUMNS)
    scorer_params = {
        "detectors": [[d, 1] for d in detectors] + [["streaming", 2]], "detector_columns": columns,
        "weights": weights.tolist(), "bias": bias, "thresholds": thresholds, "centre": centre.tolist(),
        "scale": scale.tolist(), "type_weights": type_w.tolist(), "type_bias": type_b.tolist(),
        "kinds": list(ev.KINDS), "top_k": 3, "series_state": "series.npz",
    }
    scorer_dir = _kernel_model(repo, f"{name}_scorer", "anomaly_scorer", scorer_params, mbs)
    series_state.save(scorer_dir / "series.npz")
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    write_atomic(repo / name / "config.pbtxt", ensemble_config(name, detectors, len(columns), 3, mbs))
    drift = _drift_references(repo, name, split.train.events, x_tr, detectors, cfg.seed)
    bar.step("wrote the models")

    summary: dict[str, Any] = {
        "model": name, "config": asdict(cfg), "detectors": columns,
        "weights": dict(zip([*columns, *(f"z:{n}" for n in af.FEATURE_NAMES)], weights.tolist(), strict=True)),
        "bias": bias, "combiner": chosen, "thresholds_logit": thresholds,
        "autoencoder": "PyTorch MLP, static INT8 (QDQ)" if with_ae else "not built (torch not installed)",
        "n_features": int(x_tr.shape[1]), "feature_names": list(af.FEATURE_NAMES),
        "detector_features": [af.FEATURE_NAMES[i] for i in cols], "drift_reference": drift,
    }
    if evaluate:
        from infer.tasks.anomaly.pipeline_eval import evaluate_pipeline

        summary["evaluation"] = evaluate_pipeline(repo, name, split, columns, probs["val"], ae_fp32)
        bar.step("evaluated on the held-out stream")
    write_atomic(repo / name / "metrics.json", json.dumps(summary, indent=1))
    if evaluate:
        from infer.tasks.anomaly.pipeline_eval import model_card

        write_atomic(repo / name / "MODEL_CARD.md", model_card(summary))
    return summary


def _drift_references(repo: Path, name: str, events: dict[str, Any], x_train: F32, detectors: list[str],
                      seed: int) -> dict[str, Any]:
    """Write the drift references built from the training stream: the raw events for the ensemble, the feature
    matrix (unsteady features left out) for each detector; return the model card's summary of them."""
    from kernels import anomaly_features as af

    ref = build_reference(events, ignore=DRIFT_IGNORED, categorical=DRIFT_CATEGORICAL, seed=seed,
                          source=f"{name}: training events")
    ref.save(repo / name / "1" / DRIFT_REFERENCE)
    feats = build_reference({"x": x_train}, names={"x": list(af.FEATURE_NAMES)}, seed=seed,
                            source=f"{name}: training features")
    feats = replace(feats, features=tuple(f for f in feats.features if f.name not in DRIFT_UNSTEADY_FEATURES))
    for d in detectors:
        feats.save(repo / f"{name}_{d}" / "1" / DRIFT_REFERENCE)
    return {"file": f"{name}/1/{DRIFT_REFERENCE}", "rows": ref.rows, "window": DRIFT_WINDOW,
            "features": ref.describe(), "detector_features": [f.name for f in feats.features]}


def _warm_series(sc: Any, probs: dict[str, Any], contribs: dict[str, Any], weights: Any, bias: float,
                 users: dict[str, Any], thresholds: list[float], capacity: int) -> Any:
    """Each user's score history over train and validation, as serving would have built it."""
    from kernels import streaming

    state = streaming.new_series_state("zscore", capacity)
    for k in ("train", "val"):
        sc.severity(sc.combine(probs[k], weights, bias, contribs[k]), users[k], state, np.asarray(thresholds))
    return state


def clean_repository_model(repo: Path, name: str) -> None:
    """Remove what :func:`build_pipeline` writes for ``name`` (before a rebuild)."""
    for suffix in ("", "_features", "_iforest", "_lof", "_autoencoder", "_streaming", "_scorer"):
        shutil.rmtree(repo / f"{name}{suffix}", ignore_errors=True)


Builder = Callable[[Path], dict[str, Any]]
