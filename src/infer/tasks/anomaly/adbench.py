"""Evaluate the exported anomaly detectors on ADBench's real tabular sets (BSD-2-Clause, from ADBench).

    python -m infer.tasks.anomaly.adbench [--data DIR] [--out results.json] [--seed N] [--detectors NAME ...]

Each ``*.npz`` holds ``X`` (rows x features) and ``y`` (1 = anomaly).  Per set, a seeded split trains every
detector unsupervised on a random 70 % of the normal rows and tests on the other normal rows plus all
anomalies.  The detectors are scored through their ONNX files in onnxruntime, exactly as served: isolation
forest, local outlier factor, autoencoder FP32 and its INT8 variant (see :mod:`.detectors`), beside
scikit-learn's own ``IsolationForest`` fitted in-process on the raw rows of the same split with the same
seed, as the reference.  Metrics: ROC-AUC and PR-AUC (``average_precision_score``) of ``score``.

The data directory: ``--data``, else ``$INFER_ADBENCH_DIR``, else ``../shared/data/anomaly/adbench`` beside
the repository; without one the command says so and exits 0.  Nothing here is needed at serve time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score

from infer.tasks.anomaly import detectors as det

__all__ = [
    "DETECTORS",
    "ENV_VAR",
    "REFERENCE",
    "default_data_dir",
    "evaluate_set",
    "format_table",
    "main",
    "run",
    "split",
]

ENV_VAR: Final = "INFER_ADBENCH_DIR"
DETECTORS: Final = ("isolation_forest", "lof", "autoencoder", "autoencoder_int8")
REFERENCE: Final = "sklearn_isolation_forest"
TRAIN_FRACTION: Final = 0.7
_LABELS: Final = {
    "isolation_forest": "IF (ONNX)",
    "lof": "LOF (ONNX)",
    "autoencoder": "AE FP32",
    "autoencoder_int8": "AE INT8",
    REFERENCE: "sklearn IF (ref)",
}
_REPO_ROOT: Final = Path(__file__).resolve().parents[4]  # src/infer/tasks/anomaly/adbench.py


def default_data_dir() -> Path | None:
    """``$INFER_ADBENCH_DIR`` if set, else ``../shared/data/anomaly/adbench`` beside the repository if present."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    candidate = _REPO_ROOT.parent / "shared" / "data" / "anomaly" / "adbench"
    return candidate if candidate.is_dir() else None


def split(
    y: NDArray[Any], seed: int, train_fraction: float = TRAIN_FRACTION
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """``(train, test)`` row indices: train is a seeded ``train_fraction`` of the normal rows, test the rest of
    the normal rows plus every anomaly.  Both sorted."""
    labels = np.asarray(y).astype(bool)
    normals = np.random.default_rng(seed).permutation(np.flatnonzero(~labels))
    n_train = round(train_fraction * normals.shape[0])
    train = np.sort(normals[:n_train])
    test = np.sort(np.concatenate([normals[n_train:], np.flatnonzero(labels)]))
    return train, test


def _metrics(y: NDArray[np.bool_], score: NDArray[Any], seconds: float) -> dict[str, float]:
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "seconds": round(seconds, 3),
    }


def evaluate_set(
    x: NDArray[Any], y: NDArray[Any], *, seed: int = 0, detectors: Sequence[str] = DETECTORS
) -> dict[str, Any]:
    """Train on the split's normal rows, score the test rows; metrics per detector plus the reference."""
    unknown = set(detectors) - set(DETECTORS)
    if unknown:
        raise ValueError(f"unknown detectors {sorted(unknown)}; choose from {DETECTORS}")
    x32 = np.asarray(x, dtype=np.float32)
    labels = np.asarray(y).astype(bool)
    train, test = split(labels, seed)
    x_train, x_test, y_test = x32[train], x32[test], labels[test]
    results: dict[str, dict[str, float]] = {}

    def timed(name: str, fit: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        model = fit()
        score, _ = det.score_onnx(model, x_test)
        results[name] = _metrics(y_test, score, time.perf_counter() - start)
        return model

    if "isolation_forest" in detectors:
        timed("isolation_forest", lambda: det.train_isolation_forest(x_train, seed))
    if "lof" in detectors:
        timed("lof", lambda: det.train_lof(x_train, seed))
    if "autoencoder" in detectors or "autoencoder_int8" in detectors:
        ae = timed("autoencoder", lambda: det.train_autoencoder(x_train, seed))
        if "autoencoder_int8" in detectors:
            timed("autoencoder_int8", lambda: det.quantize_int8(ae, x_train, seed=seed))
        if "autoencoder" not in detectors:
            del results["autoencoder"]
    start = time.perf_counter()
    reference = IsolationForest(random_state=seed).fit(x_train)
    results[REFERENCE] = _metrics(y_test, -reference.score_samples(x_test), time.perf_counter() - start)
    return {
        "n_rows": int(labels.shape[0]),
        "n_features": int(x32.shape[1]),
        "n_anomalies": int(labels.sum()),
        "n_train": int(train.shape[0]),
        "n_test": int(test.shape[0]),
        "results": results,
    }


def _set_order(path: Path) -> tuple[int, str]:
    match = re.match(r"(\d+)_", path.name)
    return (int(match.group(1)) if match else sys.maxsize, path.name)


def run(data_dir: Path, *, seed: int = 0, detectors: Sequence[str] = DETECTORS) -> dict[str, Any]:
    """Every ``*.npz`` in ``data_dir`` (ADBench id order), plus the mean of each metric over the sets."""
    paths = sorted(data_dir.glob("*.npz"), key=_set_order)
    if not paths:
        raise FileNotFoundError(f"no *.npz files in {data_dir}")
    sets: dict[str, Any] = {}
    for path in paths:
        with np.load(path) as data:
            sets[path.stem] = evaluate_set(data["X"], data["y"], seed=seed, detectors=detectors)
    names = list(next(iter(sets.values()))["results"])
    mean = {
        name: {m: float(np.mean([s["results"][name][m] for s in sets.values()])) for m in ("roc_auc", "pr_auc")}
        for name in names
    }
    return {
        "seed": seed,
        "train_fraction": TRAIN_FRACTION,
        "metrics": "roc_auc and pr_auc (average precision) of score on the test rows; mean: unweighted over sets",
        "sets": sets,
        "mean": mean,
    }


def format_table(report: dict[str, Any]) -> str:
    """Markdown: one row per set, ``ROC-AUC / PR-AUC`` per detector, the mean row last."""
    names = list(report["mean"])
    head = ["set", "rows", "F", "anomalies", *(_LABELS.get(n, n) for n in names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "--:", "--:", "--:"] + [":-:"] * len(names)) + "|"]

    def cells(res: dict[str, dict[str, float]]) -> list[str]:
        return [f"{res[n]['roc_auc']:.3f} / {res[n]['pr_auc']:.3f}" for n in names]

    for set_name, s in report["sets"].items():
        row = [set_name, str(s["n_rows"]), str(s["n_features"]), str(s["n_anomalies"]), *cells(s["results"])]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("| " + " | ".join(["**mean**", "", "", "", *cells(report["mean"])]) + " |")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infer.tasks.anomaly.adbench", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help=f"directory of *.npz sets (default: ${ENV_VAR})")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of every detector")
    parser.add_argument("--detectors", nargs="+", choices=DETECTORS, default=list(DETECTORS))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    data_dir = args.data or default_data_dir()
    if data_dir is None or not data_dir.is_dir():
        where = data_dir or f"${ENV_VAR} unset and no ../shared/data/anomaly/adbench beside {_REPO_ROOT}"
        print(f"ADBench data not found ({where}); skipping the evaluation.", file=sys.stderr)
        return 0
    report = run(data_dir, seed=args.seed, detectors=args.detectors)
    print(format_table(report))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
