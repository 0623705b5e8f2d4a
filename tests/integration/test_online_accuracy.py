"""Online accuracy on the real server: requests carry ids, callers report the ground truth later through the
control plane (the Python SDK), and GetModelPerformance and the metrics port agree with scikit-learn computed on
the same predictions and truths.

Three models: ``acc_multi`` (an MLP, 8 scores argmax'ed: macro-averaged), ``acc_binary`` (one sigmoid column
thresholded at 0.5, classes named ``neg,pos``: binary for ``pos``), ``acc_reg`` (y = 2x, four values per row:
MAE and RMSE); ``plain`` tracks nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import onnx
import pytest
from fixtures import ServerProcess, metric_value, scrape_metrics, write_dense, write_double
from onnx import TensorProto, helper, numpy_helper
from sklearn.metrics import mean_absolute_error, mean_squared_error, precision_recall_fscore_support

from infer.client import InferClient, InferClientError, InvalidArgument, NotFound


def _config(name: str, inputs: int, outputs: int, *params: tuple[str, str]) -> str:
    text = (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
            f'input [ {{ name: "x" data_type: TYPE_FP32 dims: [ {inputs} ] }} ]\n'
            f'output [ {{ name: "y" data_type: TYPE_FP32 dims: [ {outputs} ] }} ]\n')
    return text + "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in params)


def _write_sigmoid(repo: Path, name: str, config: str) -> None:
    """x FP32 [N, 4] -> y = sigmoid(x . w) FP32 [N, 1]: a one-column probability."""
    w = numpy_helper.from_array(np.array([[1.0], [-0.5], [0.25], [0.0]], np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["y"])]
    graph = helper.make_graph(nodes, name, [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = repo / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    (repo / name / "config.pbtxt").write_text(config)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("accuracy-repo")
    write_dense(repo, "acc_multi", config=_config("acc_multi", 64, 8, ("infer.accuracy.kind", "classification")))
    _write_sigmoid(repo, "acc_binary", _config("acc_binary", 4, 1, ("infer.accuracy.kind", "classification"),
                                               ("infer.accuracy.labels", "neg,pos")))
    write_double(repo, "acc_reg", config=_config("acc_reg", 4, 4, ("infer.accuracy.kind", "regression")))
    write_double(repo, "plain", config=_config("plain", 4, 4))
    with ServerProcess(repo) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[InferClient]:
    with InferClient(server.address, timeout=30) as c:
        yield c


Classes = npt.NDArray[Any]


def _classify_and_report(client: InferClient, model: str, seed: int, rounds: int, shape: tuple[int, int],
                         classes: Callable[[Classes], Classes], keep: float,
                         wrong: Callable[[np.random.Generator, Classes], Classes],
                         send: Callable[[int, Classes], list[Any]] = lambda i, t: t.tolist(),
                         ) -> tuple[list[str], list[str]]:
    """``rounds`` requests of ``shape`` rows, with ids ``{model}-{i}``; each row's predicted class read from the
    answer's ``y`` by ``classes``, its truth the prediction with probability ``keep`` (else ``wrong``'s), reported
    as ``send`` spells it. Returns (truths, predictions) as text, for scikit-learn."""
    rng = np.random.default_rng(seed)
    truth: list[str] = []
    pred: list[str] = []
    for i in range(rounds):
        x = rng.standard_normal(shape).astype(np.float32)
        p = classes(client.infer(model, {"x": x}, request_id=f"{model}-{i}")["y"])
        t = np.where(rng.random(shape[0]) < keep, p, wrong(rng, p))
        resp = client.report_ground_truth(f"{model}-{i}", labels=send(i, t))
        assert (resp.model, resp.version, resp.rows) == (model, "1", shape[0])
        truth += [str(v) for v in t]
        pred += [str(v) for v in p]
    return truth, pred


def _check_classification(got: Any, truth: list[str], pred: list[str], average: str, pos: str = "") -> None:
    p, r, f, _ = precision_recall_fscore_support(truth, pred, average=average, pos_label=pos or 1, zero_division=0)
    assert got.kind == "classification" and got.samples == len(truth)
    assert got.accuracy == pytest.approx(np.mean(np.array(truth) == np.array(pred)))
    assert (got.precision, got.recall, got.f1) == pytest.approx((p, r, f))
    assert math.isnan(got.mae) and math.isnan(got.rmse)


def test_multiclass_macro_matches_sklearn(server: ServerProcess, client: InferClient) -> None:
    truth, pred = _classify_and_report(client, "acc_multi", 3, 20, (10, 64), lambda y: np.argmax(y, axis=-1), 0.6,
                                       lambda rng, p: rng.integers(0, 8, p.size))
    got = client.model_performance("acc_multi")
    assert (got.model, got.version) == ("acc_multi", "1")
    _check_classification(got, truth, pred, "macro")
    _check_classification(client.model_performance("acc_multi", "1", window_s=300), truth, pred, "macro")
    assert got.series and all(0.0 <= point.value <= 1.0 and point.t > 0 for point in got.series)

    text = scrape_metrics(server.metrics_port)
    assert metric_value(text, "infer_ground_truth_reports_total", model="acc_multi", version="1") == 20
    for metric in ("accuracy", "precision", "recall", "f1"):
        for window in ("5m", "1h", "all"):
            value = metric_value(text, "infer_online_metric", model="acc_multi", version="1", metric=metric,
                                 window=window)
            assert value == pytest.approx(getattr(got, metric)), (metric, window)
    assert metric_value(text, "infer_online_metric", model="acc_multi", metric="mae") is None


def test_binary_probability_column_with_named_classes(server: ServerProcess, client: InferClient) -> None:
    truth, pred = _classify_and_report(
        client, "acc_binary", 4, 12, (16, 4), lambda y: np.where(y.reshape(-1) >= 0.5, "pos", "neg"), 0.75,
        lambda rng, p: np.where(p == "pos", "neg", "pos"),
        lambda i, t: [("1" if v == "pos" else "0") if i % 3 == 0 else str(v) for v in t])  # indexes name classes too
    _check_classification(client.model_performance("acc_binary"), truth, pred, "binary", "pos")
    text = scrape_metrics(server.metrics_port)
    f1 = precision_recall_fscore_support(truth, pred, average="binary", pos_label="pos")[2]
    assert metric_value(text, "infer_online_metric", model="acc_binary", metric="f1", window="all") == pytest.approx(f1)


def test_regression_mae_rmse(server: ServerProcess, client: InferClient) -> None:
    rng = np.random.default_rng(5)
    ys, actuals = [], []
    for i in range(8):
        x = rng.standard_normal((3, 4)).astype(np.float32)
        y = client.infer("acc_reg", {"x": x}, request_id=f"reg-{i}")["y"]
        actual = y + rng.normal(scale=0.5, size=y.shape)
        assert client.report_ground_truth(f"reg-{i}", values=actual).rows == 3  # rows x 4, row-major
        ys.append(y.reshape(-1).astype(np.float64))
        actuals.append(actual.reshape(-1))
    got = client.model_performance("acc_reg", window_s=3600)
    y_all, a_all = np.concatenate(ys), np.concatenate(actuals)
    assert got.kind == "regression" and got.samples == y_all.size
    assert got.mae == pytest.approx(mean_absolute_error(a_all, y_all))
    assert got.rmse == pytest.approx(math.sqrt(mean_squared_error(a_all, y_all)))
    assert math.isnan(got.f1) and math.isnan(got.accuracy)
    text = scrape_metrics(server.metrics_port)
    mae = metric_value(text, "infer_online_metric", model="acc_reg", metric="mae", window="all")
    rmse = metric_value(text, "infer_online_metric", model="acc_reg", metric="rmse", window="5m")
    assert (mae, rmse) == pytest.approx((got.mae, got.rmse))


def test_bad_reports_and_queries_are_named(server: ServerProcess, client: InferClient) -> None:
    before = metric_value(scrape_metrics(server.metrics_port), "infer_ground_truth_unmatched_total") or 0.0
    with pytest.raises(NotFound, match="request_id"):
        client.report_ground_truth("never-sent", labels=["1"])
    client.infer("plain", {"x": np.ones((2, 4), np.float32)}, request_id="plain-1")
    with pytest.raises(NotFound, match="request_id"):
        client.report_ground_truth("plain-1", values=[1.0] * 8)  # answered by a model that tracks nothing
    after = metric_value(scrape_metrics(server.metrics_port), "infer_ground_truth_unmatched_total") or 0.0
    assert after >= before + 2

    client.infer("acc_multi", {"x": np.ones((2, 64), np.float32)}, request_id="multi-bad")
    with pytest.raises(InvalidArgument, match="labels"):
        client.report_ground_truth("multi-bad", labels=["1"])  # two rows
    with pytest.raises(InvalidArgument, match="labels"):
        client.report_ground_truth("multi-bad")
    with pytest.raises(InvalidArgument, match="request_id"):
        client.report_ground_truth("", labels=["1", "2"])
    assert client.report_ground_truth("multi-bad", labels=["1", "2"]).rows == 2  # a refused report credits nothing
    with pytest.raises(NotFound, match="request_id"):
        client.report_ground_truth("multi-bad", labels=["1", "2"])  # credited once

    with pytest.raises(InferClientError) as e:
        client.model_performance("plain")
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and "infer.accuracy.kind" in e.value.message
    with pytest.raises(NotFound, match="nope"):
        client.model_performance("nope")
    with pytest.raises(InvalidArgument, match="window_s"):
        client.model_performance("acc_reg", window_s=-1)
    with pytest.raises(InvalidArgument, match="model"):
        client.model_performance("")
    with pytest.raises(InferClientError) as e:
        client.drift("acc_reg")  # no drift reference beside it
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
