"""kernels.streaming: per-series detectors against the Python reference, chunking, state, CUDA simulator."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from fixtures import run_cuda_simulated
from numpy.typing import NDArray

from kernels import _cuda
from kernels import streaming as st

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def hashed_ids(series: NDArray[np.int64]) -> NDArray[np.uint64]:
    return (series.astype(np.uint64) + np.uint64(1)) * GOLDEN


def random_stream(n: int, seed: int, n_series: int = 40) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    series = rng.integers(0, n_series, n)
    values = rng.normal(series * 10.0, 1.0 + series % 3)
    values[rng.random(n) < 0.02] = np.nan
    values[rng.random(n) < 0.01] = np.inf
    values[rng.random(n) < 0.01] *= 100.0
    return series, values


@pytest.mark.parametrize("kind", st.KINDS)
@pytest.mark.parametrize("hashed", [True, False])
def test_kernel_matches_the_reference(kind: str, hashed: bool) -> None:
    series, values = random_stream(3000, seed=1)
    ids = hashed_ids(series) if hashed else series
    fast_state = st.new_series_state(kind, 32 if hashed else 64, alpha=0.1, warmup=5)  # 32: evictions
    ref_state = fast_state.copy()
    fast = st.score_series(ids, values, fast_state, backend="cpu")
    ref = st.score_series_reference(ids, values, ref_state)
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)
    assert np.isnan(fast).sum() == (~np.isfinite(values)).sum()
    for name in ("keys", "recency", "stats", "clock"):
        np.testing.assert_allclose(getattr(fast_state, name), getattr(ref_state, name), rtol=1e-12, err_msg=name)
    if hashed:  # the table really was contended: series were evicted and came back
        table = st.new_series_state(kind, 32)
        _, fresh = st._assign_slots(ids, True, table.keys, table.recency, table.clock)
        assert fresh.sum() > 2 * np.unique(ids).size


@pytest.mark.parametrize("kind", st.KINDS)
def test_chunked_stream_equals_one_call(kind: str) -> None:
    series, values = random_stream(2000, seed=2)
    ids = hashed_ids(series)
    whole_state = st.new_series_state(kind, 64)
    whole = st.score_series(ids, values, whole_state, backend="cpu")
    state = st.new_series_state(kind, 64)
    cuts = [0, 0, 1, 7, 500, 501, 1999, 2000]
    parts = np.concatenate(
        [st.score_series(ids[a:b], values[a:b], state, backend="cpu") for a, b in itertools.pairwise(cuts)]
    )
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(whole_state.stats, state.stats)


@pytest.mark.parametrize("kind", st.KINDS)
def test_a_spike_in_one_series_stands_out(kind: str) -> None:
    rng = np.random.default_rng(3)
    n_series, steps = 6, 120
    series = np.tile(np.arange(n_series), steps)
    values = rng.normal(100.0 * np.arange(n_series)[series], 2.0)
    spike_at = (steps - 1) * n_series + 2  # the last step of series 2
    values[spike_at] += 40.0  # twenty standard deviations
    scores = st.score_series(hashed_ids(series), values, st.new_series_state(kind, 64), backend="cpu")
    assert scores[spike_at] > 10.0
    others = np.delete(scores, spike_at)
    assert others.max() < 6.0 and np.median(others) < 1.5


@pytest.mark.parametrize("kind", st.KINDS)
def test_warm_up_scores_zero(kind: str) -> None:
    state = st.new_series_state(kind, 8, warmup=4)
    scores = st.score_series(np.zeros(6, np.int64), [1.0, 5.0, -3.0, 8.0, 100.0, 100.0], state, backend="cpu")
    assert scores[:4].tolist() == [0.0] * 4 and scores[4] > 0.0


def test_zscore_is_exact_mean_and_std_while_welford() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(5.0, 3.0, 30)
    state = st.new_series_state("zscore", 4, alpha=1e-9, warmup=2)
    scores = st.ewm_zscore(np.zeros(30, np.int64), x, state, backend="cpu")
    expected = [abs(x[k] - x[:k].mean()) / x[:k].std() for k in range(2, 30)]
    np.testing.assert_allclose(scores[2:], expected, rtol=1e-9)
    np.testing.assert_allclose(state.stats[0], [30, x.mean(), x.var()], rtol=1e-9)


def test_ma_deviation_levels_and_mean_absolute_deviation() -> None:
    state = st.new_series_state("madev", 4, alpha=1e-9, warmup=3)
    scores = st.ma_deviation(np.zeros(4, np.int64), [10.0, 12.0, 8.0, 20.0], state, backend="cpu")
    # level: 10 -> 11 -> 10; mad of the deviations 2 (12 vs 10) and 3 (8 vs 11): 2.5
    assert scores[3] == pytest.approx(abs(20.0 - 10.0) / 2.5)
    n, level, mad = state.stats[0]
    assert (n, level, mad) == pytest.approx((4, 12.5, (2 + 3 + 10) / 3))


def test_constant_series_uses_the_scale_floor() -> None:
    state = st.new_series_state("zscore", 4, warmup=2, min_scale=0.5)
    scores = st.ewm_zscore(np.zeros(5, np.int64), [1.0, 1.0, 1.0, 1.0, 2.0], state, backend="cpu")
    assert scores.tolist() == [0.0, 0.0, 0.0, 0.0, 2.0]


def test_save_load_round_trip(tmp_path: Path) -> None:
    series, values = random_stream(600, seed=5)
    ids = hashed_ids(series)
    whole = st.score_series(ids, values, st.new_series_state("madev", 64, alpha=0.2), backend="cpu")
    state = st.new_series_state("madev", 64, alpha=0.2)
    first = st.score_series(ids[:250], values[:250], state, backend="cpu")
    state.save(tmp_path / "series.npz")
    loaded = st.SeriesState.load(tmp_path / "series.npz")
    assert (loaded.kind, loaded.alpha, loaded.warmup, loaded.capacity) == ("madev", 0.2, 10, 64)
    second = st.score_series(ids[250:], values[250:], loaded, backend="cpu")
    np.testing.assert_array_equal(whole, np.concatenate([first, second]))


def test_bad_input_is_refused() -> None:
    state = st.new_series_state("zscore", 8)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        st.score_series(np.array([0, 8]), [1.0, 2.0], state)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        st.score_series(np.array([-1]), [1.0], state)
    with pytest.raises(TypeError, match="uint64"):
        st.score_series(np.array([0.5]), [1.0], state)
    with pytest.raises(ValueError, match="one length"):
        st.score_series(np.array([0, 1]), [1.0], state)
    with pytest.raises(ValueError, match="madev"):
        st.ma_deviation(np.array([0]), [1.0], state)
    for bad in ({"capacity": 12}, {"alpha": 0.0}, {"warmup": 0}, {"min_scale": 0.0}):
        with pytest.raises(ValueError):
            st.new_series_state("zscore", **bad)
    with pytest.raises(ValueError, match="kind"):
        st.new_series_state("median")


def test_find_slot_is_set_associative_with_lru_eviction() -> None:
    keys, recency = np.zeros(4, np.uint64), np.zeros(4, np.float64)
    got = []
    for t, h in enumerate([5, 6, 5, 7, 8, 9, 6]):
        slot, fresh = st.find_slot(keys, recency, np.uint64(h))
        recency[slot] = t
        got.append((slot, fresh))
    # one set of four: 5, 6, 7, 8 fill it; 9 evicts the least recent (6, seen at t=1); 6 then evicts 5 (t=2)
    assert got == [(0, True), (1, True), (0, False), (2, True), (3, True), (1, True), (0, True)]


# --- CUDA ----------------------------------------------------------------------------------------------------

_SIMULATED = """
import sys
import numpy as np
from kernels import _cuda
from kernels import streaming as st
with np.load(sys.argv[1]) as z:
    ids, values = z["ids"], z["values"]
out = {}
for kind in st.KINDS:
    state = st.new_series_state(kind, 16, warmup=3)
    first = _cuda.score_series(ids[:150], values[:150], state)
    out[kind] = np.concatenate([first, st.score_series(ids[150:], values[150:], state, backend="cuda")])
    out[kind + "_stats"] = state.stats
np.savez(sys.argv[2], **out)
"""


def test_cuda_detectors_match_cpu_in_the_simulator(tmp_path: Path) -> None:
    series, values = random_stream(400, seed=6, n_series=20)
    ids = hashed_ids(series)
    np.savez(tmp_path / "in.npz", ids=ids, values=values)
    run_cuda_simulated(_SIMULATED, str(tmp_path / "in.npz"), str(tmp_path / "out.npz"))
    with np.load(tmp_path / "out.npz") as got:
        for kind in st.KINDS:
            state = st.new_series_state(kind, 16, warmup=3)
            expected = st.score_series(ids, values, state, backend="cpu")
            np.testing.assert_allclose(got[kind], expected, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(got[kind + "_stats"], state.stats, rtol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda.available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", st.KINDS)
def test_cuda_detectors_on_the_gpu(kind: str) -> None:
    series, values = random_stream(20000, seed=7, n_series=500)
    ids = hashed_ids(series)
    cpu_state, gpu_state = st.new_series_state(kind, 1024), st.new_series_state(kind, 1024)
    cpu = st.score_series(ids, values, cpu_state, backend="cpu")
    gpu = st.score_series(ids, values, gpu_state, backend="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gpu_state.stats, cpu_state.stats, rtol=1e-9, atol=1e-12)
