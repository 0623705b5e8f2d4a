"""Train the anomaly detector and write it as a Triton-layout model directory.

Model: ``StandardScaler -> PCA(whiten=True) -> IsolationForest`` fitted on normal events only.  Trees
split on one coordinate at a time, so on raw features an isolation forest cannot see an event that
breaks a *correlation* (a hash far too slow for the file's size); in the whitened principal axes such an
event lies far out along a low-variance axis.  On the held-out set this lifts ROC AUC from about 0.84
(scaler + forest) to about 0.92.

Export: the scaler and the PCA fold into one affine map ``x @ W + b``, and the whole forest becomes one
``ai.onnx.ml.TreeEnsembleRegressor`` whose leaf values are the normalised path lengths, so the graph is
MatMul, Add, TreeEnsembleRegressor, Mul, Exp, Add, Greater, Cast.  skl2onnx's IsolationForest
converter emits a few nodes *per tree* (2710 nodes for 100 trees); it took 7.5 s to convert 100 trees
and 24.5 s for 200, and ran a batch of one in 1.6 ms.  The fused graph builds in well under a second and
runs a batch of one in tens of microseconds.  The tests check it against scikit-learn's
``decision_function``.

Served signature (batch dimension first, ``max_batch_size`` 1024):

* input ``features``: FP32 [batch, 16], columns as in :data:`~infer.tasks.anomaly.data.FEATURE_NAMES`;
* output ``score``: FP32 [batch, 1], ``-decision_function``: higher is more anomalous, > 0 is flagged;
* output ``label``: INT64 [batch, 1], 1 for an anomaly (``score > 0``), 0 otherwise.

The label threshold is set so that 1% of the normal training events are flagged (``contamination``).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from infer.core.files import write_atomic
from infer.tasks.anomaly.data import ANOMALY_KINDS, FEATURE_NAMES, Dataset, make_dataset, make_normal

__all__ = [
    "INPUT_NAME",
    "LABEL_NAME",
    "MAX_BATCH_SIZE",
    "SCORE_NAME",
    "build_model",
    "config_pbtxt",
    "evaluate_onnx",
    "export_onnx",
    "train_pipeline",
]

INPUT_NAME: Final = "features"
LABEL_NAME: Final = "label"
SCORE_NAME: Final = "score"
MAX_BATCH_SIZE: Final = 1024
N_ESTIMATORS: Final = 200
MAX_SAMPLES: Final = 1024
CONTAMINATION: Final = 0.01
N_EVAL: Final = 20_000
EVAL_ANOMALY_FRACTION: Final = 0.05
OPSET: Final = 17
ML_OPSET: Final = 3
IR_VERSION: Final = 8  # ONNX 1.12 / opset 17: loadable by older onnxruntime builds, e.g. in Triton

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRITON_TYPES: Final = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}


def train_pipeline(x: NDArray[np.float32], *, random_state: int) -> Pipeline:
    """Fit scaler, whitening PCA and isolation forest on normal events ``x``."""
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("pca", PCA(whiten=True, svd_solver="full")),
            (
                "forest",
                IsolationForest(
                    n_estimators=N_ESTIMATORS,
                    max_samples=min(MAX_SAMPLES, x.shape[0]),
                    contamination=CONTAMINATION,
                    random_state=random_state,
                ),
            ),
        ]
    )
    # float64 fit: precise PCA axes (the smallest variance is ~1e-5 of the largest).
    return pipeline.fit(x.astype(np.float64))


def _affine(pipeline: Pipeline) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``W, b`` with ``x @ W + b == pca.transform(scale.transform(x))``."""
    scale: StandardScaler = pipeline.named_steps["scale"]
    pca: PCA = pipeline.named_steps["pca"]
    proj = pca.components_.T / np.sqrt(pca.explained_variance_)  # [in, out]
    weight = proj / scale.scale_[:, None]
    bias = -(scale.mean_ / scale.scale_ + pca.mean_) @ proj
    return weight.astype(np.float32), bias.astype(np.float32)


def _average_path_length(n: NDArray[np.int64]) -> NDArray[np.float64]:
    """c(n): mean path length of an unsuccessful BST search among ``n`` points (Liu et al. 2008)."""
    n_f = n.astype(np.float64)
    out = np.where(n_f == 2.0, 1.0, 0.0)
    big = n_f > 2.0
    out[big] = 2.0 * (np.log(n_f[big] - 1.0) + np.euler_gamma) - 2.0 * (n_f[big] - 1.0) / n_f[big]
    return out


def _node_depths(left: NDArray[np.intp], right: NDArray[np.intp]) -> NDArray[np.int64]:
    depth = np.zeros(left.shape[0], dtype=np.int64)
    frontier, level = np.array([0]), 0
    while frontier.size:
        depth[frontier] = level
        inner = frontier[left[frontier] != -1]
        frontier, level = np.concatenate([left[inner], right[inner]]), level + 1
    return depth


def _round_down_f32(values: NDArray[np.float64]) -> NDArray[np.float32]:
    """Largest float32 <= each value, so ``x <= t`` and ``x <= t32`` agree for every float32 ``x``."""
    v32 = values.astype(np.float32)
    return np.where(v32.astype(np.float64) > values, np.nextafter(v32, np.float32(-np.inf)), v32)


def _tree_ensemble_attrs(forest: IsolationForest) -> dict[str, Any]:
    """TreeEnsembleRegressor attributes whose SUM output is ``mean path length / c(max_samples)``."""
    denom = len(forest.estimators_) * float(_average_path_length(np.array([forest.max_samples_]))[0])
    cols: dict[str, list[NDArray[Any]]] = {}
    for tree_id, (est, feats) in enumerate(zip(forest.estimators_, forest.estimators_features_, strict=True)):
        tree = est.tree_
        left, right = tree.children_left, tree.children_right
        leaf = left == -1
        leaves = np.flatnonzero(leaf)
        depth = _node_depths(left, right)
        node_cols = {
            "nodes_treeids": np.full(tree.node_count, tree_id),
            "nodes_nodeids": np.arange(tree.node_count),
            "nodes_featureids": np.where(leaf, 0, feats[np.maximum(tree.feature, 0)]),
            "nodes_values": np.where(leaf, np.float32(0.0), _round_down_f32(tree.threshold)),
            "nodes_modes": np.where(leaf, "LEAF", "BRANCH_LEQ"),
            "nodes_truenodeids": np.where(leaf, 0, left),
            "nodes_falsenodeids": np.where(leaf, 0, right),
            "target_treeids": np.full(leaves.shape[0], tree_id),
            "target_nodeids": leaves,
            "target_weights": (depth[leaves] + _average_path_length(tree.n_node_samples[leaves])) / denom,
        }
        for key, col in node_cols.items():
            cols.setdefault(key, []).append(col)
    attrs: dict[str, Any] = {k: np.concatenate(v).tolist() for k, v in cols.items()}
    attrs["target_ids"] = [0] * len(attrs["target_nodeids"])
    return attrs


def export_onnx(pipeline: Pipeline, *, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """The fitted pipeline as an ONNX model with the served signature (see the module docstring)."""
    forest: IsolationForest = pipeline.named_steps["forest"]
    weight, bias = _affine(pipeline)
    inits = [
        numpy_helper.from_array(weight, "pca_weight"),
        numpy_helper.from_array(bias, "pca_bias"),
        numpy_helper.from_array(np.array(-np.log(2.0), dtype=np.float32), "minus_ln2"),
        numpy_helper.from_array(np.array(forest.offset_, dtype=np.float32), "offset"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("MatMul", [INPUT_NAME, "pca_weight"], ["projected"]),
        helper.make_node("Add", ["projected", "pca_bias"], ["whitened"]),
        helper.make_node(
            "TreeEnsembleRegressor",
            ["whitened"],
            ["path_length"],
            domain="ai.onnx.ml",
            n_targets=1,
            aggregate_function="SUM",
            post_transform="NONE",
            **_tree_ensemble_attrs(forest),
        ),
        # Liu et al.'s anomaly score 2^(-E[h(x)] / c(n)), shifted by the contamination threshold.
        helper.make_node("Mul", ["path_length", "minus_ln2"], ["log_iso_score"]),
        helper.make_node("Exp", ["log_iso_score"], ["iso_score"]),
        helper.make_node("Add", ["iso_score", "offset"], [SCORE_NAME]),
        helper.make_node("Greater", [SCORE_NAME, "zero"], ["is_anomaly"]),
        helper.make_node("Cast", ["is_anomaly"], [LABEL_NAME], to=TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes,
        "anomaly_isolation_forest",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", len(FEATURE_NAMES)])],
        [
            helper.make_tensor_value_info(LABEL_NAME, TensorProto.INT64, ["batch", 1]),
            helper.make_tensor_value_info(SCORE_NAME, TensorProto.FLOAT, ["batch", 1]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        ir_version=IR_VERSION,
        producer_name="infer.tasks.anomaly",
        doc_string="Isolation forest over whitened event features; score > 0 (label 1) means anomaly.",
    )
    helper.set_model_props(model, {"feature_names": json.dumps(FEATURE_NAMES), **(metadata or {})})
    onnx.checker.check_model(model, full_check=True)
    return model


def config_pbtxt(name: str, session: ort.InferenceSession) -> str:
    """Triton ``config.pbtxt`` for ``session``'s signature; dims drop the leading batch dimension."""

    def tensors(args: list[ort.NodeArg]) -> str:
        rows = []
        for arg in args:
            if arg.type not in _TRITON_TYPES or isinstance(arg.shape[0], int):
                raise ValueError(f"unsupported tensor {arg.name}: {arg.type} {arg.shape}")
            dims = ", ".join(str(d) for d in arg.shape[1:])
            rows.append(f'  {{ name: "{arg.name}" data_type: {_TRITON_TYPES[arg.type]} dims: [ {dims} ] }}')
        return ",\n".join(rows)

    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {MAX_BATCH_SIZE}\n"
        f"input [\n{tensors(session.get_inputs())}\n]\n"
        f"output [\n{tensors(session.get_outputs())}\n]\n"
        "dynamic_batching { max_queue_delay_microseconds: 200 }\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        "# a tree ensemble this small runs faster on one thread than split across two\n"
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
    )


def evaluate_onnx(session: ort.InferenceSession, data: Dataset) -> dict[str, Any]:
    """Held-out metrics of the served model: ranking by ``score``, precision/recall of ``label``."""
    label, score = session.run([LABEL_NAME, SCORE_NAME], {INPUT_NAME: data.x})
    flagged, s = label[:, 0] == 1, score[:, 0].astype(np.float64)
    positive = data.y == 1
    tp = int(np.sum(flagged & positive))
    per_kind: dict[str, dict[str, float]] = {}
    for code, kind in enumerate(ANOMALY_KINDS, start=1):
        rows = (data.kind == 0) | (data.kind == code)
        per_kind[kind] = {
            "roc_auc": round(float(roc_auc_score(data.kind[rows] == code, s[rows])), 4),
            "recall": round(float(np.mean(flagged[data.kind == code])), 4),
        }
    return {
        "n_eval": int(data.y.shape[0]),
        "n_anomalies": int(positive.sum()),
        "roc_auc": round(float(roc_auc_score(positive, s)), 4),
        "average_precision": round(float(average_precision_score(positive, s)), 4),
        "precision": round(tp / max(int(flagged.sum()), 1), 4),
        "recall": round(tp / max(int(positive.sum()), 1), 4),
        "false_positive_rate": round(float(np.mean(flagged[~positive])), 4),
        "per_kind": per_kind,
    }


def build_model(repo: Path, *, name: str = "anomaly", n_train: int = 20000, seed: int = 0) -> dict[str, Any]:
    """Train on ``n_train`` normal events, write ``<repo>/<name>/{config.pbtxt,1/model.onnx,metrics.json}``
    and return the metrics of the written ONNX file on freshly generated held-out events.

    Deterministic for a given ``seed``: same bytes for the model, same metrics.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid model name {name!r}")
    train_seq, eval_seq, model_seq = np.random.SeedSequence(seed).spawn(3)
    pipeline = train_pipeline(
        make_normal(n_train, np.random.default_rng(train_seq)),
        random_state=int(model_seq.generate_state(1)[0]),
    )
    meta = {"seed": str(seed), "n_train": str(n_train), "generator": "infer.tasks.anomaly.data"}
    model_bytes = export_onnx(pipeline, metadata=meta).SerializeToString()
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])

    model_dir = Path(repo) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    write_atomic(model_dir / "1" / "model.onnx", model_bytes)
    write_atomic(model_dir / "config.pbtxt", config_pbtxt(name, session).encode())

    served = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    held_out = make_dataset(N_EVAL, np.random.default_rng(eval_seq), anomaly_fraction=EVAL_ANOMALY_FRACTION)
    metrics: dict[str, Any] = {
        "model": name,
        "seed": seed,
        "n_train": n_train,
        **evaluate_onnx(served, held_out),
        "onnx_sha256": hashlib.sha256(model_bytes).hexdigest(),
    }
    write_atomic(model_dir / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    return metrics
