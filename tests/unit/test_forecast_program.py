"""The forecast program and its arithmetic without a build: a version directory written by hand with the two
candidates that need no training (seasonal naive, linear trend) and known calibration tables; the selector,
the intervals, what-if scenarios, per-request checks, the batch key; and the capacity-planning helper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infer.errors import InvalidArgument
from infer.runtimes.forecast_program import ForecastProgram
from infer.runtimes.forecasting import QUANTILE_GRID, interval_quantiles, plan_tasks
from infer.tasks.forecast.capacity import plan_capacity, replicas_needed

H_MAX = 48


@pytest.fixture
def program(tmp_path: Path) -> ForecastProgram:
    # half-width in scale units = 2 * p at step 0, growing by 1% a step: easy to check by hand
    table = 2.0 * QUANTILE_GRID[:, None] * (1.0 + 0.01 * np.arange(H_MAX))[None, :]
    np.savez(tmp_path / "calibration.npz", auto=table, snaive=table, linear=3.0 * table)
    spec = {"candidates": ["snaive", "linear"], "max_horizon": H_MAX, "origins": 3, "default_horizon": 12,
            "default_season": 24, "default_levels": [80, 95], "calibration": "calibration.npz"}
    (tmp_path / "forecast.json").write_text(json.dumps(spec))
    return ForecastProgram(tmp_path, {"spec": "forecast.json"})


def _run(program: ForecastProgram, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    program.prepare(inputs)
    return program.run(inputs, [s.name for s in program.outputs])


def _seasonal(n: int, noise: float = 0.0, trend: float = 0.0, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return 100 + 20 * np.sin(2 * np.pi * t / 24) + trend * t + noise * rng.standard_normal(n)


def test_the_selector_picks_the_candidate_that_backtests_best(program: ForecastProgram) -> None:
    hist = np.stack([_seasonal(300), 5.0 + 0.5 * np.arange(300)]).astype(np.float32)  # pure season; pure trend
    out = _run(program, {"history": hist, "horizon": np.full((2, 1), 24, np.int32)})
    assert list(out["model"][:, 0]) == [b"snaive", b"linear"]
    np.testing.assert_allclose(out["mean"][0], hist[0, -24:], rtol=1e-5)  # one season back
    np.testing.assert_allclose(out["mean"][1], 5.0 + 0.5 * np.arange(300, 324), rtol=1e-5)
    assert out["scores"].shape == (2, 2) and out["mase"][1, 0] < 1e-3  # the line backtests perfectly


def test_intervals_are_the_calibration_quantile_times_the_series_scale(program: ForecastProgram) -> None:
    hist = _seasonal(240, noise=2.0, seed=1)[None, :].astype(np.float32)
    out = _run(program, {"history": hist, "horizon": np.array([[6]], np.int32),
                         "levels": np.array([[50, 80]], np.float32), "season": np.array([[24]], np.int32)})
    y = hist[0].astype(np.float64)
    scale = np.mean(np.abs(y[24:] - y[:-24]))
    half = 2.0 * np.array([0.5, 0.8])[:, None] * (1.0 + 0.01 * np.arange(6))[None, :] * scale
    np.testing.assert_allclose(out["upper"][0] - out["mean"][0], half, rtol=1e-4)
    np.testing.assert_allclose(out["mean"][0] - out["lower"][0], half, rtol=1e-4)


def test_a_scenario_multiplies_the_forecast_and_its_bounds(program: ForecastProgram) -> None:
    hist = _seasonal(200, noise=1.0)[None, :].astype(np.float32)
    mult = np.linspace(1.0, 2.0, 12, dtype=np.float32)[None, :]
    out = _run(program, {"history": hist, "scenario": mult})
    np.testing.assert_allclose(out["scenario_mean"], out["mean"] * mult, rtol=1e-6)
    np.testing.assert_allclose(out["scenario_upper"], out["upper"] * mult[:, None, :], rtol=1e-6)
    np.testing.assert_allclose(out["scenario_lower"], out["lower"] * mult[:, None, :], rtol=1e-6)


def test_padded_rows_use_only_their_own_length(program: ForecastProgram) -> None:
    a, b = _seasonal(200, noise=1.0, seed=2), _seasonal(120, noise=1.0, seed=3)
    padded = np.full((2, 200), 1e6, np.float32)  # padding that would wreck any forecast that read it
    padded[0], padded[1, :120] = a, b
    both = _run(program, {"history": padded, "length": np.array([[200], [120]], np.int32)})
    alone = _run(program, {"history": b[None, :].astype(np.float32)})
    np.testing.assert_allclose(both["mean"][1], alone["mean"][0], rtol=1e-6)
    np.testing.assert_allclose(both["upper"][1], alone["upper"][0], rtol=1e-6)


def test_a_history_too_short_for_a_backtest_gets_the_first_candidate(program: ForecastProgram) -> None:
    out = _run(program, {"history": np.arange(1, 21, dtype=np.float32)[None, :], "horizon": np.array([[12]], np.int32)})
    assert out["model"][0, 0] == b"snaive" and np.isnan(out["mase"][0, 0]) and np.isnan(out["scores"]).all()


@pytest.mark.parametrize(("inputs", "field"), [
    ({"history": np.ones((1, 1), np.float32)}, "history"),
    ({"history": np.array([[1.0, np.inf, 2.0]], np.float32)}, "history"),
    ({"history": np.ones((1, 30), np.float32), "length": np.array([[1]], np.int32)}, "length"),
    ({"history": np.ones((2, 30), np.float32), "horizon": np.array([[6], [7]], np.int32)}, "horizon"),
    ({"history": np.ones((1, 30), np.float32), "horizon": np.array([[H_MAX + 1]], np.int32)}, "horizon"),
    ({"history": np.ones((1, 30), np.float32), "levels": np.array([[0.0]], np.float32)}, "levels"),
    ({"history": np.ones((1, 30), np.float32), "season": np.array([[-2]], np.int32)}, "season"),
    ({"history": np.ones((1, 30), np.float32), "scenario": np.ones((1, 3), np.float32)}, "scenario"),
])
def test_bad_inputs_are_refused_by_name(program: ForecastProgram, inputs: dict[str, np.ndarray], field: str) -> None:
    with pytest.raises(InvalidArgument, match=f"'{field}'"):
        program.prepare(inputs)


def test_nan_padding_past_a_rows_length_is_accepted(program: ForecastProgram) -> None:
    hist = np.full((1, 60), np.nan, np.float32)
    hist[0, :40] = _seasonal(40)
    out = _run(program, {"history": hist, "length": np.array([[40]], np.int32)})
    assert np.isfinite(out["mean"]).all()


def test_the_batch_key_is_the_horizon(program: ForecastProgram) -> None:
    assert program.batch_key({"history": np.ones((1, 9))}) == 12  # the model's default
    assert program.batch_key({"history": np.ones((1, 9)), "horizon": np.array([[30]], np.int32)}) == 30


def test_plan_tasks_puts_backtest_origins_one_horizon_apart() -> None:
    tasks = plan_tasks(np.array([100, 30], np.int64), np.array([24, 24], np.int64), horizon=10, origins=3)
    got = sorted(zip(tasks.rows.tolist(), tasks.cutoffs.tolist(), tasks.origin.tolist(), strict=True))
    # series 1 (30 values) keeps no origin: 20 values are fewer than m + 2 = 26
    assert got == [(0, 70, 3), (0, 80, 2), (0, 90, 1), (0, 100, 0), (1, 30, 0)]


def test_interval_quantiles_interpolate_between_grid_points() -> None:
    table = np.tile(QUANTILE_GRID[:, None], (1, 4)) * 10.0
    got = interval_quantiles(table, np.array([[80.0, 95.0, 99.9]]), horizon=6)
    np.testing.assert_allclose(got[0, :, 0], [8.0, 9.5, 9.95])
    np.testing.assert_allclose(got[0, :, 5], got[0, :, 3])  # past the table: its last step


def test_replicas_needed_by_hand() -> None:
    np.testing.assert_array_equal(replicas_needed([120.0, 400.0, 90.0, 0.0], 100.0, 0.2), [2, 5, 2, 1])
    np.testing.assert_array_equal(replicas_needed([160.0], 100.0, 0.2), [2])  # exactly 2 x 80: not 3
    np.testing.assert_array_equal(replicas_needed([1000.0], 100.0, 0.0, max_replicas=4), [4])
    for bad in ({"capacity_per_replica": 0.0}, {"capacity_per_replica": 1.0, "headroom": 1.0}):
        with pytest.raises(ValueError):
            replicas_needed([1.0], **bad)  # type: ignore[arg-type]


def test_plan_capacity_plans_on_the_upper_bound() -> None:
    plan = plan_capacity([100.0, 300.0, 200.0], [150.0, 420.0, 260.0], capacity_per_replica=100.0, headroom=0.25)
    np.testing.assert_array_equal(plan.replicas, [2, 6, 4])
    np.testing.assert_array_equal(plan.expected, [2, 4, 3])
    assert (plan.peak, plan.peak_step) == (6, 1)
