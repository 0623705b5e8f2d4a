"""The error-rate window behind ACTIVE <-> DEGRADED (no sockets)."""

from __future__ import annotations

from infer.scheduling.health import HealthWindow


def test_no_verdict_until_enough_requests() -> None:
    h = HealthWindow(window=10, min_requests=5, degrade_at=0.5)
    h.record(False, 4)
    assert h.error_rate is None and h.verdict(degraded=False) is None
    h.record(False)
    assert h.error_rate == 1.0 and h.verdict(degraded=False) is True


def test_recovery_needs_the_rate_below_half_the_threshold() -> None:
    h = HealthWindow(window=10, min_requests=5, degrade_at=0.5)
    h.record(False, 10)
    h.record(True, 7)  # the window now holds 3 failures of 10
    assert h.error_rate == 0.3 and h.verdict(degraded=True) is None  # 30 % is not below 25 %
    h.record(True)
    assert h.error_rate == 0.2 and h.verdict(degraded=True) is False
    assert h.verdict(degraded=False) is None


def test_a_zero_threshold_turns_it_off() -> None:
    h = HealthWindow(window=10, min_requests=1, degrade_at=0)
    h.record(False, 10)
    assert h.verdict(degraded=False) is None
