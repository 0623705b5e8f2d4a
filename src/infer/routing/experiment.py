"""A/B test statistics: per-variant counters and a two-sided test between two variants.

Outcomes reported by callers (a conversion 0/1, a score) are compared with Welch's t-test on the
means; without outcomes the variants' error rates are compared with a two-proportion z-test. Both
give the difference (second minus first), its 95 % confidence interval and a p-value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Comparison", "VariantStats", "compare"]


@dataclass(slots=True)
class VariantStats:
    requests: int = 0
    errors: int = 0
    latency_s: float = 0.0
    outcomes: int = 0
    outcome_sum: float = 0.0
    outcome_sumsq: float = 0.0

    def add_outcome(self, value: float) -> None:
        self.outcomes += 1
        self.outcome_sum += value
        self.outcome_sumsq += value * value

    @property
    def outcome_mean(self) -> float:
        return self.outcome_sum / self.outcomes if self.outcomes else 0.0

    @property
    def outcome_var(self) -> float:
        n = self.outcomes
        if n < 2:
            return 0.0
        return max(0.0, (self.outcome_sumsq - n * self.outcome_mean**2) / (n - 1))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Comparison:
    metric: str
    difference: float
    ci95_low: float
    ci95_high: float
    p_value: float


def compare(a: VariantStats, b: VariantStats) -> Comparison:
    from scipy import stats

    if a.outcomes >= 2 and b.outcomes >= 2:
        diff = b.outcome_mean - a.outcome_mean
        va, vb = a.outcome_var / a.outcomes, b.outcome_var / b.outcomes
        se = math.sqrt(va + vb)
        if se == 0:
            return Comparison("outcome", diff, diff, diff, 1.0 if diff == 0 else 0.0)
        df = (va + vb) ** 2 / ((va**2 / (a.outcomes - 1) if va else 0) + (vb**2 / (b.outcomes - 1) if vb else 0))
        t = diff / se
        half = float(stats.t.ppf(0.975, df)) * se
        return Comparison("outcome", diff, diff - half, diff + half, float(2 * stats.t.sf(abs(t), df)))
    if a.requests == 0 or b.requests == 0:
        return Comparison("error_rate", 0.0, 0.0, 0.0, 1.0)
    pa, pb = a.error_rate, b.error_rate
    diff = pb - pa
    pooled = (a.errors + b.errors) / (a.requests + b.requests)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / a.requests + 1 / b.requests))
    se = math.sqrt(pa * (1 - pa) / a.requests + pb * (1 - pb) / b.requests)
    p = 1.0 if se0 == 0 else float(2 * stats.norm.sf(abs(diff) / se0))
    half = 1.959963984540054 * se
    return Comparison("error_rate", diff, diff - half, diff + half, p)
