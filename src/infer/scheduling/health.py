"""A model version's recent error rate, for the ACTIVE <-> DEGRADED decision.

The last ``window`` request outcomes are kept; once ``min_requests`` are in, an error rate at or above
``degrade_at`` degrades the version and one below half of it restores it (the gap keeps it from
flapping). Only model failures count: deadlines and cancellations are the callers', not the model's.
"""

from __future__ import annotations

from collections import deque

__all__ = ["HealthWindow"]


class HealthWindow:
    def __init__(self, window: int = 100, min_requests: int = 20, degrade_at: float = 0.5) -> None:
        self._outcomes: deque[bool] = deque(maxlen=max(1, window))
        self._errors = 0
        self.min_requests = min_requests
        self.degrade_at = degrade_at

    def record(self, ok: bool, count: int = 1) -> None:
        outcomes = self._outcomes
        for _ in range(min(count, outcomes.maxlen or count)):
            if len(outcomes) == outcomes.maxlen and not outcomes[0]:
                self._errors -= 1
            outcomes.append(ok)
            if not ok:
                self._errors += 1

    @property
    def error_rate(self) -> float | None:
        """The error rate over the window, or None while it holds too few requests to judge."""
        n = len(self._outcomes)
        return self._errors / n if n >= self.min_requests and n else None

    def verdict(self, degraded: bool) -> bool | None:
        """True: degrade now; False: recover now; None: stay as it is."""
        rate = self.error_rate
        if rate is None or self.degrade_at <= 0:
            return None
        if not degraded and rate >= self.degrade_at:
            return True
        if degraded and rate < self.degrade_at / 2:
            return False
        return None
