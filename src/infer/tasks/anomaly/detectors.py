"""Unsupervised detectors trained on a float32 feature matrix and exported as self-contained ONNX models.

Every exported model has one signature, so the engine serves them alike and needs nothing but the file:

* input ``x``: FP32 [batch, F], raw features (the standardisation is inside the graph);
* output ``score``: FP32 [batch, 1], higher is more anomalous;
* output ``prob``: FP32 [batch, 1] in [0, 1], the score calibrated against the normal training rows.

``prob`` is the piecewise-linear empirical CDF of the training scores: with ``q_0 <= ... <= q_K`` the
training scores' quantiles at levels ``0, 1/K, ..., 1``, ``prob(s) = mean_i clip((s - q_i) / (q_{i+1} - q_i), 0, 1)``,
i.e. the fraction of normal training rows scoring below ``s`` (0 under the lowest, 1 above the highest),
interpolated between quantiles.  It is a Sub, Mul, Clip and ReduceMean over a baked [K] table, non-decreasing
in ``score`` by construction (each term is, and float rounding is monotone), and ``1 - prob`` is an
empirical p-value.

Detectors (``score`` is scikit-learn's ``-score_samples`` for the first two):

* **Isolation forest** ``2 ** (-E[h(z)] / c(max_samples))``: the graph is Sub, Div (scaler), one
  ``ai.onnx.ml.TreeEnsembleRegressor`` built by :func:`infer.tasks.anomaly.build._tree_ensemble_attrs`
  (skl2onnx's converter emits nodes per tree and converts 100 trees in seconds), Mul, Exp.
* **Local outlier factor** (``novelty=True``) ``mean(lrd(neighbours)) / lrd(z)``: hand-built, because
  skl2onnx's converter (faithful, 22 nodes) computes distances in a ``Scan`` loop: 20 ms for one row
  against 14k training rows.  Here distances come from one MatMul (``|z|^2 - 2 z.T^T + |T|^2``) in
  float64, then TopK, Gather of the training k-distances and lrds, Max, ReduceMean: sklearn's formula.
* **Autoencoder** (PyTorch MLP F -> 32 -> b -> 32 -> F, ReLU after the 32-wide layers, linear bottleneck
  ``b = min(8, max(2, F // 2))``) trained with MSE on standardised normal rows; ``score`` is the per-row mean
  squared reconstruction error of the standardised input, computed in the exported graph (Gemm, Relu, Sub,
  Mul, ReduceMean), exported by ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch).
  :func:`quantize_int8` makes its static INT8 QDQ variant: only Gemm/MatMul are quantized (onnxruntime runs
  them as QGemm), with percentile-calibrated activation ranges, and the ``prob`` table re-fitted to the INT8
  scores.  The residual uses a second, unquantized copy of the standardised input (``(x - mean) * (1 / scale)``
  beside the network's ``(x - mean) / scale``), so a value outside the calibration range still counts in full.

Training is deterministic for a seed (torch on one thread under a forked RNG).  torch is imported only
by :func:`train_autoencoder`; scoring needs onnxruntime only.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TypeAlias

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import rankdata
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import LocalOutlierFactor

from infer.tasks.anomaly.build import IR_VERSION, ML_OPSET, OPSET, _tree_ensemble_attrs

__all__ = [
    "INPUT_NAME",
    "PROB_NAME",
    "SCORE_NAME",
    "FittedDetector",
    "Standardiser",
    "compare_int8",
    "export_isolation_forest",
    "export_lof",
    "fit_isolation_forest",
    "fit_lof",
    "quantize_int8",
    "score_onnx",
    "train_autoencoder",
    "train_isolation_forest",
    "train_lof",
    "with_columns",
]

INPUT_NAME: Final = "x"
SCORE_NAME: Final = "score"
PROB_NAME: Final = "prob"
N_KNOTS: Final = 256  # quantile bins of the calibration table
_PRODUCER: Final = "infer.tasks.anomaly.detectors"

F32: TypeAlias = NDArray[np.float32]
ModelLike: TypeAlias = onnx.ModelProto | bytes | str | Path | ort.InferenceSession


# --------------------------------------------------------------------------------------------- shared parts


@dataclass(frozen=True)
class Standardiser:
    """``(x - mean) / scale`` in float32, exactly as the exported graphs compute it (Sub then Div)."""

    mean: F32
    scale: F32

    @classmethod
    def fit(cls, x: NDArray[Any]) -> Standardiser:
        x64 = np.asarray(x, dtype=np.float64)
        std = x64.std(axis=0)
        scale = np.where(std > 0.0, std, 1.0)  # constant columns pass through, as in StandardScaler
        return cls(x64.mean(axis=0).astype(np.float32), scale.astype(np.float32))

    def transform(self, x: NDArray[Any]) -> F32:
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)


@dataclass(frozen=True)
class FittedDetector:
    """A fitted scikit-learn detector, its scaler and the training scores (higher = more anomalous)."""

    kind: str
    scaler: Standardiser
    estimator: Any
    train_scores: NDArray[np.float64]
    seed: int
    whitening: tuple[F32, F32] | None = None  # (W, b): u = z @ W + b, PCA whitening after the scaler

    def features(self, x: NDArray[Any]) -> F32:
        """What the estimator sees: the scaled (and whitened) rows, as the exported graph computes them."""
        z = self.scaler.transform(x)
        if self.whitening is None:
            return z
        w, b = self.whitening
        return (z @ w + b).astype(np.float32)


def _check_x(x: NDArray[Any]) -> F32:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValueError(f"expected a 2-D feature matrix with at least 2 rows, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("feature matrix has NaN or infinite values")
    return arr


def _ecdf_table(train_scores: NDArray[Any], n_knots: int = N_KNOTS) -> tuple[F32, F32]:
    """``(lower knots, 1 / bin widths)`` of the interpolated empirical CDF (module docstring)."""
    knots = np.quantile(np.asarray(train_scores, dtype=np.float64), np.linspace(0.0, 1.0, n_knots + 1))
    knots32 = np.maximum.accumulate(knots.astype(np.float32))
    width = np.diff(knots32)
    inv_width = (1.0 / np.maximum(width, np.float32(1e-12))).astype(np.float32)
    return knots32[:-1].copy(), inv_width


def _scaler_nodes(scaler: Standardiser, out: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    inits = [numpy_helper.from_array(scaler.mean, "scaler_mean"), numpy_helper.from_array(scaler.scale, "scaler_scale")]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "scaler_mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scaler_scale"], [out]),
    ]
    return nodes, inits


def _ecdf_nodes(train_scores: NDArray[Any]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    lower, inv_width = _ecdf_table(train_scores)
    inits = [
        numpy_helper.from_array(lower, "ecdf_lower"),
        numpy_helper.from_array(inv_width, "ecdf_inv_width"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "ecdf_zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "ecdf_one"),
    ]
    nodes = [
        helper.make_node("Sub", [SCORE_NAME, "ecdf_lower"], ["ecdf_offset"]),  # [N, 1] - [K] -> [N, K]
        helper.make_node("Mul", ["ecdf_offset", "ecdf_inv_width"], ["ecdf_fraction"]),
        helper.make_node("Clip", ["ecdf_fraction", "ecdf_zero", "ecdf_one"], ["ecdf_clipped"]),
        helper.make_node("ReduceMean", ["ecdf_clipped"], [PROB_NAME], axes=[1], keepdims=1),
    ]
    return nodes, inits


def _metadata(fitted: FittedDetector, n_features: int) -> dict[str, str]:
    return {
        "detector": fitted.kind,
        "seed": str(fitted.seed),
        "n_train": str(fitted.train_scores.shape[0]),
        "n_features": str(n_features),
        "score": "higher = more anomalous",
        "prob": "interpolated empirical CDF of the training scores, in [0, 1]",
    }


def _make_model(
    name: str,
    n_features: int,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    metadata: Mapping[str, str],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", n_features])],
        [
            helper.make_tensor_value_info(SCORE_NAME, TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info(PROB_NAME, TensorProto.FLOAT, ["batch", 1]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        ir_version=IR_VERSION,
        producer_name=_PRODUCER,
        doc_string=f"{name}: input x = raw features; score higher = more anomalous; prob = calibrated [0, 1].",
    )
    helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model, full_check=True)
    return model


# ------------------------------------------------------------------------------------------ isolation forest


def fit_isolation_forest(x: NDArray[Any], seed: int = 0, *, whiten: bool = False, **params: Any) -> FittedDetector:
    """Standardise ``x`` and fit ``IsolationForest(random_state=seed, **params)`` on it.

    ``whiten``: rotate the scaled rows onto their principal axes with unit variance first (PCA whitening,
    folded into one MatMul + Add in the graph). Trees split one feature at a time; on the whitened axes they
    also isolate events that only break a correlation (a hash time too slow for the size).
    """
    arr = _check_x(x)
    scaler = Standardiser.fit(arr)
    z = scaler.transform(arr)
    whitening = None
    if whiten:
        pca = PCA(whiten=True, random_state=seed).fit(z)
        keep = pca.explained_variance_ > 1e-9 * max(float(pca.explained_variance_[0]), 1e-30)
        w = (pca.components_[keep].T / np.sqrt(pca.explained_variance_[keep])).astype(np.float32)
        whitening = (w, (-(pca.mean_ @ w)).astype(np.float32))
    fitted = FittedDetector("isolation_forest", scaler, None, np.zeros(0), seed, whitening)
    u = fitted.features(arr)
    forest = IsolationForest(random_state=seed, **params).fit(u)
    return replace(fitted, estimator=forest, train_scores=-forest.score_samples(u))


def export_isolation_forest(fitted: FittedDetector) -> onnx.ModelProto:
    """``score = 2 ** (-mean path length / c(max_samples))`` (sklearn's ``-score_samples``) plus ``prob``."""
    forest: IsolationForest = fitted.estimator
    scaler_nodes, scaler_inits = _scaler_nodes(fitted.scaler, "z0" if fitted.whitening is not None else "z")
    if fitted.whitening is not None:
        w, b = fitted.whitening
        scaler_inits += [numpy_helper.from_array(w, "whiten_w"), numpy_helper.from_array(b, "whiten_b")]
        scaler_nodes += [helper.make_node("MatMul", ["z0", "whiten_w"], ["z1"]),
                         helper.make_node("Add", ["z1", "whiten_b"], ["z"])]
    ecdf_nodes, ecdf_inits = _ecdf_nodes(fitted.train_scores)
    forest_nodes = [
        helper.make_node(
            "TreeEnsembleRegressor",
            ["z"],
            ["path_length"],  # mean path length / c(max_samples)
            domain="ai.onnx.ml",
            n_targets=1,
            aggregate_function="SUM",
            post_transform="NONE",
            **_tree_ensemble_attrs(forest),
        ),
        helper.make_node("Mul", ["path_length", "minus_ln2"], ["log_score"]),
        helper.make_node("Exp", ["log_score"], [SCORE_NAME]),
    ]
    inits = [*scaler_inits, numpy_helper.from_array(np.array(-math.log(2.0), dtype=np.float32), "minus_ln2")]
    n_features = fitted.scaler.mean.shape[0]
    return _make_model(
        "anomaly_isolation_forest",
        n_features,
        [*scaler_nodes, *forest_nodes, *ecdf_nodes],
        [*inits, *ecdf_inits],
        {**_metadata(fitted, n_features), "n_estimators": str(len(forest.estimators_))},
    )


def train_isolation_forest(x: NDArray[Any], seed: int = 0, **params: Any) -> onnx.ModelProto:
    """Fit and export an isolation forest on the normal rows ``x`` (see :func:`fit_isolation_forest`)."""
    return export_isolation_forest(fit_isolation_forest(x, seed, **params))


# ------------------------------------------------------------------------------------- local outlier factor


def fit_lof(x: NDArray[Any], seed: int = 0, **params: Any) -> FittedDetector:
    """Standardise ``x`` and fit ``LocalOutlierFactor(novelty=True, **params)``; euclidean metric only.

    LOF has no randomness; ``seed`` is recorded for symmetry with the other detectors.
    """
    metric, p = params.get("metric", "minkowski"), params.get("p", 2)
    if not (metric == "euclidean" or (metric == "minkowski" and p == 2)) or params.get("metric_params"):
        raise ValueError("the exported LOF supports the euclidean metric only")
    arr = _check_x(x)
    scaler = Standardiser.fit(arr)
    lof = LocalOutlierFactor(**{**params, "novelty": True}).fit(scaler.transform(arr))
    # The training rows' own outlier factors (each excluding itself), not score_samples on them.
    return FittedDetector("local_outlier_factor", scaler, lof, -lof.negative_outlier_factor_.astype(np.float64), seed)


def _lof_tables(lof: LocalOutlierFactor) -> list[onnx.TensorProto]:
    train = np.asarray(lof._fit_X, dtype=np.float64)
    k = int(lof.n_neighbors_)
    tables = {
        "lof_minus2_train_t": -2.0 * train.T,
        "lof_train_sq": np.sum(train * train, axis=1),
        "lof_train_kdist": np.asarray(lof._distances_fit_X_, dtype=np.float64)[:, k - 1],
        "lof_train_lrd": np.asarray(lof._lrd, dtype=np.float64),
        "lof_k": np.array([k], dtype=np.int64),
        "lof_zero": np.array(0.0, dtype=np.float64),
        "lof_eps": np.array(1e-10, dtype=np.float64),  # sklearn's guard in 1 / (mean reach distance + 1e-10)
        "lof_axis1": np.array([1], dtype=np.int64),
    }
    return [numpy_helper.from_array(np.ascontiguousarray(v), name) for name, v in tables.items()]


def export_lof(fitted: FittedDetector) -> onnx.ModelProto:
    """``score = mean(lrd of the k neighbours) / lrd(z)`` (sklearn's ``-score_samples``), in float64, plus ``prob``."""
    lof: LocalOutlierFactor = fitted.estimator
    scaler_nodes, scaler_inits = _scaler_nodes(fitted.scaler, "z")
    ecdf_nodes, ecdf_inits = _ecdf_nodes(fitted.train_scores)
    mk = helper.make_node
    lof_nodes = [
        mk("Cast", ["z"], ["zd"], to=TensorProto.DOUBLE),
        mk("Mul", ["zd", "zd"], ["zd_sq"]),
        mk("ReduceSum", ["zd_sq", "lof_axis1"], ["zd_norm"], keepdims=1),  # [N, 1]
        mk("MatMul", ["zd", "lof_minus2_train_t"], ["cross"]),  # [N, M]
        mk("Add", ["cross", "zd_norm"], ["d2_partial"]),
        mk("Add", ["d2_partial", "lof_train_sq"], ["d2"]),
        mk("TopK", ["d2", "lof_k"], ["nn_d2", "nn_idx"], largest=0, sorted=1),  # [N, k]
        mk("Max", ["nn_d2", "lof_zero"], ["nn_d2_pos"]),
        mk("Sqrt", ["nn_d2_pos"], ["nn_dist"]),
        mk("Gather", ["lof_train_kdist", "nn_idx"], ["nn_kdist"]),
        mk("Max", ["nn_dist", "nn_kdist"], ["reach"]),
        mk("ReduceMean", ["reach"], ["reach_mean"], axes=[1], keepdims=1),
        mk("Add", ["reach_mean", "lof_eps"], ["inv_lrd"]),  # 1 / lrd(z)
        mk("Gather", ["lof_train_lrd", "nn_idx"], ["nn_lrd"]),
        mk("ReduceMean", ["nn_lrd"], ["nn_lrd_mean"], axes=[1], keepdims=1),
        mk("Mul", ["nn_lrd_mean", "inv_lrd"], ["score_f64"]),
        mk("Cast", ["score_f64"], [SCORE_NAME], to=TensorProto.FLOAT),
    ]
    n_features = fitted.scaler.mean.shape[0]
    return _make_model(
        "anomaly_local_outlier_factor",
        n_features,
        [*scaler_nodes, *lof_nodes, *ecdf_nodes],
        [*scaler_inits, *_lof_tables(lof), *ecdf_inits],
        {**_metadata(fitted, n_features), "n_neighbors": str(lof.n_neighbors_)},
    )


def train_lof(x: NDArray[Any], seed: int = 0, **params: Any) -> onnx.ModelProto:
    """Fit and export a novelty LOF on the normal rows ``x`` (see :func:`fit_lof`)."""
    return export_lof(fit_lof(x, seed, **params))


# ----------------------------------------------------------------------------------------------- autoencoder


def _fit_autoencoder_net(
    z: F32, *, seed: int, epochs: int, min_steps: int, batch_size: int, hidden: int, bottleneck: int, lr: float
) -> tuple[Any, NDArray[np.float64]]:
    """The trained ``nn.Sequential`` and its per-row training errors; one thread, forked RNG: deterministic."""
    import torch
    from torch import nn

    n, f = z.shape
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers = [nn.Linear(f, hidden), nn.ReLU(), nn.Linear(hidden, bottleneck)]
            net = nn.Sequential(*layers, nn.Linear(bottleneck, hidden), nn.ReLU(), nn.Linear(hidden, f))
            data = torch.from_numpy(np.ascontiguousarray(z))
            gen = torch.Generator().manual_seed(seed)
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            n_epochs = max(epochs, math.ceil(min_steps / math.ceil(n / batch_size)))
            for _ in range(n_epochs):
                perm = torch.randperm(n, generator=gen)
                for start in range(0, n, batch_size):
                    batch = data[perm[start : start + batch_size]]
                    loss = ((net(batch) - batch) ** 2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            net.eval()
            with torch.no_grad():
                err = ((net(data) - data) ** 2).mean(dim=1).numpy().astype(np.float64)
    finally:
        torch.set_num_threads(threads)
    return net, err


def _export_autoencoder(net: Any, scaler: Standardiser, train_err: NDArray[np.float64]) -> onnx.ModelProto:
    """``torch.onnx.export`` of net + scaler + error + calibration; opset 17, dynamic batch."""
    import inspect

    import torch
    from torch import nn

    lower, inv_width = _ecdf_table(train_err)

    class Scored(nn.Module):  # type: ignore[misc,unused-ignore]  # Any when torch is not installed
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            buffers = {"mean": scaler.mean, "scale": scaler.scale, "inv_scale": 1.0 / scaler.scale}
            for name, value in {**buffers, "ecdf_lower": lower, "ecdf_inv_width": inv_width}.items():
                self.register_buffer(name, torch.from_numpy(np.array(value, dtype=np.float32)))

        def forward(self, x: Any) -> tuple[Any, Any]:
            centred = x - self.mean
            # Two copies of z: the network's (Div) gets quantized in the INT8 variant, the residual's (Mul) never.
            resid = self.net(centred / self.scale) - centred * self.inv_scale
            score = (resid * resid).mean(dim=1, keepdim=True)
            prob = torch.clamp((score - self.ecdf_lower) * self.ecdf_inv_width, 0.0, 1.0).mean(dim=1, keepdim=True)
            return score, prob

    kwargs: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": [SCORE_NAME, PROB_NAME],
        "dynamic_axes": {name: {0: "batch"} for name in (INPUT_NAME, SCORE_NAME, PROB_NAME)},
        "opset_version": OPSET,
    }
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the torch.export-based exporter needs onnxscript, which we do not install
    example = torch.zeros((2, scaler.mean.shape[0]), dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # torch >= 2.9 deprecates the TorchScript exporter (two DeprecationWarnings); it still exports exactly.
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        path = Path(tmp) / "autoencoder.onnx"
        torch.onnx.export(Scored().eval(), (example,), str(path), **kwargs)
        return onnx.load(str(path))


def train_autoencoder(
    x: NDArray[Any],
    seed: int = 0,
    *,
    epochs: int = 30,
    min_steps: int = 1000,
    batch_size: int = 256,
    hidden: int = 32,
    bottleneck: int = 8,
    lr: float = 3e-3,
) -> onnx.ModelProto:
    """Train the MLP autoencoder on standardised ``x`` and export it (needs the ``torch`` extra).

    Runs ``max(epochs, ceil(min_steps / batches per epoch))`` epochs of Adam on the MSE, so tiny sets still
    get ``min_steps`` updates.  The bottleneck is ``min(bottleneck, max(2, F // 2))`` so that it stays narrower
    than the input.  20k x 20 rows at the defaults: a few seconds on one CPU thread.
    """
    arr = _check_x(x)
    scaler = Standardiser.fit(arr)
    width = min(bottleneck, max(2, arr.shape[1] // 2))
    net, train_err = _fit_autoencoder_net(
        scaler.transform(arr),
        seed=seed,
        epochs=epochs,
        min_steps=min_steps,
        batch_size=batch_size,
        hidden=hidden,
        bottleneck=width,
        lr=lr,
    )
    model = _export_autoencoder(net, scaler, train_err)
    meta = _metadata(FittedDetector("autoencoder", scaler, None, train_err, seed), arr.shape[1])
    helper.set_model_props(model, {**meta, "layers": f"{arr.shape[1]}-{hidden}-{width}-{hidden}-{arr.shape[1]}"})
    model.producer_name = _PRODUCER
    onnx.checker.check_model(model, full_check=True)
    return model


# ------------------------------------------------------------------------------------------------------- INT8


def _rebake_ecdf(model: onnx.ModelProto, scores: NDArray[Any]) -> bool:
    """Replace the ``prob`` table of ``model`` in place by the ECDF of ``scores``; False if it has none."""
    lower, inv_width = _ecdf_table(scores)
    table = {init.name: init for init in model.graph.initializer}
    if not {"ecdf_lower", "ecdf_inv_width"} <= table.keys() or tuple(table["ecdf_lower"].dims) != lower.shape:
        return False
    table["ecdf_lower"].CopyFrom(numpy_helper.from_array(lower, "ecdf_lower"))
    table["ecdf_inv_width"].CopyFrom(numpy_helper.from_array(inv_width, "ecdf_inv_width"))
    return True


def quantize_int8(
    model: onnx.ModelProto,
    calibration_x: NDArray[Any],
    *,
    max_rows: int = 2048,
    percentile: float | None = 99.9,
    seed: int = 0,
) -> onnx.ModelProto:
    """INT8 variant of ``model``: static QDQ quantization (int8 weights and activations) of Gemm/MatMul only.

    Activation ranges are calibrated on up to ``max_rows`` seeded rows of ``calibration_x`` (normal training
    rows): the ``percentile`` of each tensor's histogram (``None``: min/max).  99.9 keeps the int8 steps fine
    where a few normal rows are extreme (on ADBench's shuttle min/max made the inliers' errors 23x larger and
    uncorrelated with FP32's; 99.9 gives 1.3x and rank correlation 0.85); values beyond the range saturate in
    the network only, never in the residual.  If static quantization fails, dynamic quantization runs instead.
    The metadata property ``quantization`` says which (``static-qdq`` or ``dynamic (...)``).  The ``prob``
    table is re-fitted to the INT8 model's own scores on all of ``calibration_x``.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rows = _check_x(calibration_x)
    calib = rows
    if calib.shape[0] > max_rows:
        calib = calib[np.sort(np.random.default_rng(seed).choice(calib.shape[0], max_rows, replace=False))]

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type hints
        # One batch: onnxruntime's histogram calibrators fail on batches of unequal size.
        def __init__(self) -> None:
            self._batches = iter([{INPUT_NAME: calib}])

        def get_next(self) -> dict[str, F32] | None:
            return next(self._batches, None)

    method_args = (
        {"calibrate_method": CalibrationMethod.MinMax}
        if percentile is None
        else {"calibrate_method": CalibrationMethod.Percentile, "extra_options": {"CalibPercentile": percentile}}
    )
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True, **method_args.pop("extra_options", {})}
    ops = ["Gemm", "MatMul"]
    # The histogram calibrators print their progress; keep it off our stdout (a CLI prints tables there).
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        src, pre, dst = (Path(tmp) / f"{name}.onnx" for name in ("fp32", "pre", "int8"))
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(pre))  # shape inference + graph optimisation, as ORT recommends
        method = "static-qdq"
        try:
            quantize_static(
                str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=ops,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, extra_options=extra, **method_args,
            )  # fmt: skip
        except Exception as exc:  # any failure of the static path: fall back, and say so in the metadata
            method = f"dynamic (static failed: {type(exc).__name__}: {exc})"[:200]
            quantize_dynamic(str(pre), str(dst), op_types_to_quantize=ops, weight_type=QuantType.QInt8)
        out = onnx.load(str(dst))
    rebaked = _rebake_ecdf(out, score_onnx(out, rows)[0])
    props = {p.key: p.value for p in model.metadata_props}
    ranges = "min/max" if percentile is None else f"percentile {percentile}"
    props |= {"quantization": method, "calibration": f"{calib.shape[0]} rows, {ranges}"}
    if rebaked:
        props["prob"] = f"interpolated empirical CDF of this model's scores on {rows.shape[0]} training rows"
    helper.set_model_props(out, props)
    return out


# -------------------------------------------------------------------------------------------- scoring, checks


def _session(model: ModelLike, threads: int | None = None) -> ort.InferenceSession:
    if isinstance(model, ort.InferenceSession):
        return model
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(
        source if isinstance(source, bytes) else str(source), opts, providers=["CPUExecutionProvider"]
    )


def score_onnx(model: ModelLike, x: NDArray[Any], *, batch_size: int = 512) -> tuple[F32, F32]:
    """``(score, prob)`` as 1-D float32 arrays, running ``model`` on ``x`` in batches of ``batch_size``."""
    sess = _session(model)
    arr = np.ascontiguousarray(x, dtype=np.float32)
    parts = [
        sess.run([SCORE_NAME, PROB_NAME], {INPUT_NAME: arr[i : i + batch_size]}) for i in range(0, len(arr), batch_size)
    ]
    if not parts:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    score, prob = (np.concatenate([p[k] for p in parts])[:, 0].astype(np.float32) for k in (0, 1))
    return score, prob


def _rows_per_second(sess: ort.InferenceSession, x: F32, batch: int, n_rows: int, repeats: int) -> float:
    """Best of ``repeats`` timed passes over ``n_rows`` rows in batches of ``batch`` (after one warm-up)."""
    rows = np.resize(x, (n_rows, x.shape[1])).astype(np.float32)
    feeds = [{INPUT_NAME: rows[i : i + batch]} for i in range(0, n_rows, batch)]
    best = math.inf
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        for feed in feeds:
            sess.run(None, feed)
        if attempt:  # the first pass warms up
            best = min(best, time.perf_counter() - start)
    return n_rows / best


def compare_int8(
    fp32: ModelLike,
    int8: ModelLike,
    x: NDArray[Any],
    y: NDArray[Any],
    *,
    repeats: int = 5,
    rows_batch1: int = 500,
    rows_batch256: int = 8192,
) -> dict[str, Any]:
    """Accuracy (ROC-AUC, PR-AUC on labels ``y``, 1 = anomaly) and speed (rows/s on one thread at batch
    1 and 256, best of ``repeats``) of the INT8 model beside the FP32 one, and how well their scores agree."""
    arr = _check_x(x)
    labels = np.asarray(y).astype(bool)
    out: dict[str, Any] = {"n_rows": int(arr.shape[0]), "n_anomalies": int(labels.sum())}
    scores = {}
    for name, model in (("fp32", fp32), ("int8", int8)):
        sess = _session(model, threads=1)
        score, prob = score_onnx(sess, arr)
        scores[name] = (score.astype(np.float64), prob.astype(np.float64))
        out[name] = {
            "roc_auc": float(roc_auc_score(labels, score)),
            "pr_auc": float(average_precision_score(labels, score)),
            "rows_per_s_batch1": _rows_per_second(sess, arr, 1, rows_batch1, repeats),
            "rows_per_s_batch256": _rows_per_second(sess, arr, 256, rows_batch256, repeats),
        }
    (s32, p32), (s8, p8) = scores["fp32"], scores["int8"]
    out["spearman"] = float(np.corrcoef(rankdata(s32), rankdata(s8))[0, 1])
    out["score_max_rel_diff"] = float(np.max(np.abs(s8 - s32) / np.maximum(np.abs(s32), 1e-12)))
    out["prob_max_abs_diff"] = float(np.max(np.abs(p8 - p32)))
    out["prob_mean_abs_diff"] = float(np.mean(np.abs(p8 - p32)))
    for batch in ("batch1", "batch256"):
        out[f"speedup_{batch}"] = out["int8"][f"rows_per_s_{batch}"] / out["fp32"][f"rows_per_s_{batch}"]
    return out


def with_columns(model: onnx.ModelProto, n_inputs: int, columns: list[int]) -> onnx.ModelProto:
    """The model reading a wider ``x`` [batch, n_inputs] and using only ``columns`` of it (a Gather first), so
    a detector trained on a subset of the features takes the feature stage's whole output."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if not 0 < len(columns) <= n_inputs or any(not 0 <= c < n_inputs for c in columns):
        raise ValueError(f"columns must be distinct indices into {n_inputs} features")
    selected = f"{INPUT_NAME}_selected"
    for node in graph.node:
        node.input[:] = [selected if name == INPUT_NAME else name for name in node.input]
    graph.initializer.append(numpy_helper.from_array(np.asarray(columns, np.int64), f"{INPUT_NAME}_columns"))
    graph.node.insert(0, helper.make_node("Gather", [INPUT_NAME, f"{INPUT_NAME}_columns"], [selected], axis=1))
    first = next(i for i in graph.input if i.name == INPUT_NAME)
    first.type.tensor_type.shape.dim[1].ClearField("dim_param")
    first.type.tensor_type.shape.dim[1].dim_value = n_inputs
    onnx.checker.check_model(out, full_check=True)
    return out
