"""Build the anomaly model and print its held-out metrics.

    python -m infer.tasks.anomaly.evaluate [--repo DIR] [--seed N] [--n-train N] [--json]

Without ``--repo`` the model is built into a temporary directory that is removed afterwards.  The
metrics are measured on the written ONNX file with onnxruntime (see :func:`build.build_model`).
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infer.tasks.anomaly.build import build_model


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infer.tasks.anomaly.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=None, help="model repository to build into (default: temp dir)")
    parser.add_argument("--name", default="anomaly", help="model name inside the repository")
    parser.add_argument("--seed", type=int, default=0, help="seed for training data, model and held-out data")
    parser.add_argument("--n-train", type=int, default=20000, help="number of normal training events")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    return parser.parse_args(argv)


def format_metrics(metrics: dict[str, Any]) -> str:
    """Human-readable table of :func:`build_model`'s metrics."""
    lines = [
        f"model {metrics['model']}  seed {metrics['seed']}  n_train {metrics['n_train']}",
        f"held-out events {metrics['n_eval']} ({metrics['n_anomalies']} anomalies)",
        f"  ROC AUC              {metrics['roc_auc']:.4f}",
        f"  average precision    {metrics['average_precision']:.4f}",
        f"  precision @ label    {metrics['precision']:.4f}",
        f"  recall @ label       {metrics['recall']:.4f}",
        f"  false positive rate  {metrics['false_positive_rate']:.4f}",
        "  per anomaly kind (ROC AUC vs normal events, recall @ label):",
    ]
    for kind, row in metrics["per_kind"].items():
        lines.append(f"    {kind:<20} {row['roc_auc']:.4f}  {row['recall']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.perf_counter()
    if args.repo is None:
        with tempfile.TemporaryDirectory(prefix="infer-anomaly-") as tmp:
            metrics = build_model(Path(tmp), name=args.name, n_train=args.n_train, seed=args.seed)
    else:
        metrics = build_model(args.repo, name=args.name, n_train=args.n_train, seed=args.seed)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_metrics(metrics))
        print(f"built and evaluated in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
