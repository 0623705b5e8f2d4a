"""A/B statistics against scipy's own tests on the raw samples (no sockets)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from infer.routing.experiment import VariantStats, compare


def _variant(values: np.ndarray) -> VariantStats:
    v = VariantStats(requests=len(values))
    for x in values:
        v.add_outcome(float(x))
    return v


def test_outcomes_use_welch_t_test() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 300), rng.normal(1.3, 2.0, 200)
    got = compare(_variant(a), _variant(b))
    want = stats.ttest_ind(b, a, equal_var=False)
    assert got.metric == "outcome"
    assert got.difference == pytest.approx(b.mean() - a.mean())
    assert got.p_value == pytest.approx(want.pvalue, rel=1e-6)
    ci = want.confidence_interval(0.95)
    assert (got.ci95_low, got.ci95_high) == pytest.approx((ci.low, ci.high), rel=1e-6)


def test_identical_variants_are_not_significant() -> None:
    same = np.array([0, 1] * 50, dtype=float)
    got = compare(_variant(same), _variant(same))
    assert got.difference == 0 and got.p_value == pytest.approx(1.0)


def test_error_rates_use_a_two_proportion_z_test() -> None:
    got = compare(VariantStats(requests=1000, errors=100), VariantStats(requests=1000, errors=140))
    pooled = 240 / 2000
    z = 0.04 / np.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert got.metric == "error_rate" and got.difference == pytest.approx(0.04)
    assert got.p_value == pytest.approx(2 * stats.norm.sf(z))
    assert got.ci95_low < 0.04 < got.ci95_high
    assert compare(VariantStats(), VariantStats(requests=5)).p_value == 1.0
