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


def test_a_slow_p99_degrades_and_a_fast_one_restores() -> None:
    h = HealthWindow(window=10, min_requests=5, degrade_at=0.5, degrade_latency_s=0.010, latency_window=10)
    h.record(True, 10)
    for _ in range(4):
        h.record_latency(0.050)
    assert h.latency_p99 is None and h.judge(degraded=False) is None  # too few batches yet
    h.record_latency(0.050)
    decision = h.judge(degraded=False)
    assert decision is not None and decision[0] is True and "p99 compute time 50.0 ms over 10.0 ms" in decision[1]
    for _ in range(10):
        h.record_latency(0.009)  # under the bound but above 80 % of it: stays DEGRADED
    assert h.judge(degraded=True) is None
    for _ in range(10):
        h.record_latency(0.002)
    decision = h.judge(degraded=True)
    assert decision is not None and decision[0] is False and "back within bounds" in decision[1]


def test_latency_is_not_kept_without_a_threshold() -> None:
    h = HealthWindow(window=10, min_requests=1)
    h.record_latency(5.0)
    assert h.latency_p99 is None and h.judge(degraded=False) is None
