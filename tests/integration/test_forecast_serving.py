"""The forecasting models served: a small build (package and generated series), then over gRPC the same
forecasts, intervals, chosen models and backtest scores as the program computes in process from the same files;
each candidate on its own; requests of different horizons in flight together; what-if scenarios; bad requests
refused by field; and the 80% interval's coverage on fresh series the build never saw."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import pytest_asyncio
from wire import decode, infer_request, serving

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc
from infer.runtimes.forecast_program import ForecastProgram
from infer.tasks.forecast.build import BuildConfig, build_forecast
from infer.tasks.forecast.data import synthetic_ops

OUTPUTS = ("mean", "lower", "upper", "model", "mase", "smape", "scores", "scenario_mean", "scenario_lower",
           "scenario_upper")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    repo = tmp_path_factory.mktemp("forecast") / "repo"
    cfg = BuildConfig(data_dir=None, peer=False, lstm_epochs=2).scaled_down()
    return repo, build_forecast(repo, "forecast", cfg)


Served = tuple[pb_grpc.GRPCInferenceServiceStub, Path]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def served(built: tuple[Path, dict[str, Any]]) -> AsyncIterator[Served]:
    repo, _ = built
    async with serving(repo) as stub:
        yield stub, repo


def _batch(count: int, seed: int, lengths: list[int] | None = None) -> dict[str, np.ndarray]:
    """Fresh series, right-padded with NaN to the longest, with their lengths."""
    series = [s.values for s in synthetic_ops(count, seed=seed)]
    lengths = lengths or [len(v) for v in series]
    width = max(lengths)
    hist = np.full((count, width), np.nan, np.float32)
    for i, (v, n) in enumerate(zip(series, lengths, strict=True)):
        hist[i, :n] = v[:n]
    return {"history": hist, "length": np.array(lengths, np.int32).reshape(-1, 1)}


def _in_process(repo: Path, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    program = ForecastProgram(repo / model / "1", {"spec": "forecast.json"})
    program.prepare(inputs)
    return program.run(inputs, OUTPUTS)


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(OUTPUTS)
    for k in OUTPUTS:
        if want[k].dtype == object:
            np.testing.assert_array_equal(got[k], want[k])
        else:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-4, err_msg=k)


async def _infer(stub: pb_grpc.GRPCInferenceServiceStub, model: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    return decode(await stub.ModelInfer(infer_request(model, inputs)))


async def test_forecasts_over_grpc_match_the_program_in_process(served: Served) -> None:
    stub, repo = served
    md = await stub.ModelMetadata(pb.ModelMetadataRequest(name="forecast"))
    assert md.inputs[0].name == "history" and {o.name for o in md.outputs} == set(OUTPUTS)
    inputs = {**_batch(5, seed=101, lengths=[400, 300, 720, 150, 500]),
              "horizon": np.full((5, 1), 24, np.int32), "levels": np.tile(np.float32([80, 95]), (5, 1)),
              "season": np.full((5, 1), 24, np.int32)}
    got = await _infer(stub, "forecast", inputs)
    _assert_same(got, _in_process(repo, "forecast", inputs))
    assert got["mean"].shape == (5, 24) and got["lower"].shape == (5, 2, 24)
    assert (got["lower"][:, 1] <= got["lower"][:, 0]).all() and (got["lower"][:, 0] <= got["mean"]).all()
    assert (got["upper"][:, 0] <= got["upper"][:, 1]).all() and np.isfinite(got["mase"]).all()
    candidates = (await stub.ModelConfig(pb.ModelConfigRequest(name="forecast"))).config.parameters
    names = candidates["candidates"].string_value.split(",")
    assert got["scores"].shape == (5, len(names)) and {m.decode() for m in got["model"][:, 0]} <= set(names)
    # the chosen model is the one with the lowest backtest MASE, and its scores are those returned
    best = np.nanargmin(got["scores"], axis=1)
    assert [names[i] for i in best] == [m.decode() for m in got["model"][:, 0]]
    np.testing.assert_allclose(got["mase"][:, 0], got["scores"][np.arange(5), best], rtol=1e-6)


async def test_defaults_apply_when_only_history_is_sent(served: Served) -> None:
    stub, repo = served
    inputs = {"history": _batch(2, seed=5)["history"]}
    got = await _infer(stub, "forecast", inputs)
    _assert_same(got, _in_process(repo, "forecast", inputs))
    assert got["mean"].shape == (2, 24) and got["lower"].shape == (2, 2, 24)  # horizon 24, levels 80 and 95


async def test_each_candidate_is_served_on_its_own(served: Served, built: tuple[Path, dict[str, Any]]) -> None:
    stub, repo = served
    kinds = built[1]["kinds"]
    assert {"snaive", "linear"} <= set(kinds)
    inputs = {**_batch(3, seed=202), "horizon": np.full((3, 1), 12, np.int32)}
    for kind in kinds:
        got = await _infer(stub, f"forecast_{kind}", inputs)
        assert list(got["model"][:, 0]) == [kind.encode()] * 3 and got["scores"].shape == (3, 1)
        _assert_same(got, _in_process(repo, f"forecast_{kind}", inputs))


async def test_different_horizons_in_flight_together_get_their_own_widths(served: Served) -> None:
    stub, _ = served
    base = _batch(1, seed=303)
    reqs = [{**base, "horizon": np.array([[h]], np.int32)} for h in (6, 12, 48) * 6]
    alone = [await _infer(stub, "forecast", r) for r in reqs[:3]]
    together = await asyncio.gather(*(_infer(stub, "forecast", r) for r in reqs))
    for i, got in enumerate(together):
        h = int(reqs[i]["horizon"][0, 0])
        assert got["mean"].shape == (1, h)
        np.testing.assert_allclose(got["mean"], alone[i % 3]["mean"], rtol=1e-5)


async def test_a_scenario_is_answered_beside_the_baseline(served: Served) -> None:
    stub, _ = served
    inputs = {**_batch(2, seed=404), "horizon": np.full((2, 1), 24, np.int32)}
    base = await _infer(stub, "forecast", inputs)
    mult = np.ones((2, 24), np.float32)
    mult[:, 8:16] = 1.5  # a launch doubling half the traffic for eight hours
    what_if = await _infer(stub, "forecast", {**inputs, "scenario": mult})
    np.testing.assert_allclose(what_if["mean"], base["mean"], rtol=1e-6)
    np.testing.assert_allclose(what_if["scenario_mean"], base["mean"] * mult, rtol=1e-5)
    np.testing.assert_allclose(what_if["scenario_upper"][:, 0], base["upper"][:, 0] * mult, rtol=1e-5)
    np.testing.assert_allclose(base["scenario_mean"], base["mean"], rtol=1e-6)


@pytest.mark.parametrize(("change", "field"), [
    ({"horizon": np.array([[0]], np.int32)}, "horizon"),
    ({"horizon": np.array([[1000]], np.int32)}, "horizon"),
    ({"levels": np.array([[80, 100]], np.float32)}, "levels"),
    ({"season": np.array([[0]], np.int32)}, "season"),
    ({"length": np.array([[10_000]], np.int32)}, "length"),
    ({"scenario": np.ones((1, 5), np.float32)}, "scenario"),
    ({"history": np.array([[1.0, np.nan, 3.0] * 20], np.float32)}, "history"),
    ({"history": np.array([[1.0]], np.float32)}, "history"),
])
async def test_bad_requests_are_refused_by_field(served: Served, change: dict[str, np.ndarray], field: str) -> None:
    stub, _ = served
    good = {**_batch(1, seed=505), "horizon": np.array([[24]], np.int32)}
    bad = {**good, **change}
    if "history" in change:
        bad.pop("length")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _infer(stub, "forecast", bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert f"'{field}'" in (e.value.details() or "")
    assert (await _infer(stub, "forecast", good))["mean"].shape == (1, 24)


def test_the_80_percent_interval_covers_about_80_percent_of_fresh_series(built: tuple[Path, dict[str, Any]]) -> None:
    repo, _ = built
    series = [s.values for s in synthetic_ops(60, seed=9_999)]
    hist = np.stack([v[:-48] for v in series]).astype(np.float32)
    actual = np.stack([v[-48:] for v in series])
    inputs = {"history": hist, "horizon": np.full((60, 1), 48, np.int32), "levels": np.full((60, 1), 80, np.float32)}
    out = _in_process(repo, "forecast", inputs)
    inside = (actual >= out["lower"][:, 0]) & (actual <= out["upper"][:, 0])
    assert 0.75 <= inside.mean() <= 0.85, inside.mean()
