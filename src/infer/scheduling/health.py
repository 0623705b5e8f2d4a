"""A model version's recent error rate and compute latency, for the ACTIVE <-> DEGRADED decision.

The last ``window`` request outcomes are kept; once ``min_requests`` are in, an error rate at or above
``degrade_at`` degrades the version and one below half of it restores it (the gap keeps it from
flapping). Only model failures count: deadlines and cancellations are the callers', not the model's.

With ``degrade_latency_s`` set, the compute time of the last ``latency_window`` batches is kept too: a p99
above it degrades the version, and a p99 back under 80 % of it (with the error rate fine) restores it.
Queueing is not counted: a busy server is overloaded, not unhealthy, and has its own answer (backpressure).
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["HealthWindow"]

RECOVER_LATENCY_FRACTION = 0.8


class HealthWindow:
    def __init__(
        self,
        window: int = 100,
        min_requests: int = 20,
        degrade_at: float = 0.5,
        degrade_latency_s: float = 0.0,
        latency_window: int = 50,
    ) -> None:
        self._outcomes: deque[bool] = deque(maxlen=max(1, window))
        self._errors = 0
        self.min_requests = min_requests
        self.degrade_at = degrade_at
        self.degrade_latency_s = degrade_latency_s
        self._latencies: deque[float] = deque(maxlen=max(1, latency_window))

    def record(self, ok: bool, count: int = 1) -> None:
        outcomes = self._outcomes
        for _ in range(min(count, outcomes.maxlen or count)):
            if len(outcomes) == outcomes.maxlen and not outcomes[0]:
                self._errors -= 1
            outcomes.append(ok)
            if not ok:
                self._errors += 1

    def record_latency(self, seconds: float) -> None:
        """One batch's compute time (kept only when a latency threshold is set)."""
        if self.degrade_latency_s > 0:
            self._latencies.append(seconds)

    @property
    def error_rate(self) -> float | None:
        """The error rate over the window, or None while it holds too few requests to judge."""
        n = len(self._outcomes)
        return self._errors / n if n >= self.min_requests and n else None

    @property
    def latency_p99(self) -> float | None:
        """p99 compute time over the latency window, or None while it holds too few batches to judge."""
        lat = self._latencies
        if self.degrade_latency_s <= 0 or len(lat) < min(lat.maxlen or 1, self.min_requests):
            return None
        return float(np.percentile(np.fromiter(lat, float, len(lat)), 99))

    def verdict(self, degraded: bool) -> bool | None:
        """True: degrade now; False: recover now; None: stay as it is."""
        decision = self.judge(degraded)
        return None if decision is None else decision[0]

    def judge(self, degraded: bool) -> tuple[bool, str] | None:
        """Like :meth:`verdict`, with the reason to record."""
        rate, p99 = self.error_rate, self.latency_p99
        slow = p99 is not None and p99 > self.degrade_latency_s
        failing = rate is not None and self.degrade_at > 0 and rate >= self.degrade_at
        if not degraded:
            if failing:
                return True, f"error rate {rate:.0%} over the last requests"
            if slow and p99 is not None:
                return True, f"p99 compute time {p99 * 1e3:.1f} ms over {self.degrade_latency_s * 1e3:.1f} ms"
            return None
        rate_ok = rate is None or self.degrade_at <= 0 or rate < self.degrade_at / 2
        latency_ok = p99 is None or p99 < self.degrade_latency_s * RECOVER_LATENCY_FRACTION
        if rate is None and p99 is None:
            return None  # nothing to judge by
        if rate_ok and latency_ok:
            parts = [] if rate is None else [f"error rate {rate:.0%}"]
            parts += [] if p99 is None else [f"p99 compute time {p99 * 1e3:.1f} ms"]
            return False, " and ".join(parts) + " back within bounds"
        return None
