"""RequestQueue: priority levels, earliest deadline first, same-key batches, bounds, drops and DELAY."""

from __future__ import annotations

import math
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from infer.scheduling.queue import Pending, RequestQueue

KEY4 = ((4,),)
KEY3 = ((3,),)


def no_horizon(size: int) -> float:
    return 0.0


def item(
    tag: str,
    *,
    level: int = 1,
    samples: int = 1,
    key: tuple[Any, ...] = KEY4,
    arrival: float = 0.0,
    deadline: float = math.inf,
    queue_timeout: float = math.inf,
    delay: bool = False,
) -> Pending:
    x = np.zeros((samples, key[0][0]), np.float32)
    return Pending({"x": x}, samples, key, Future(), arrival, level, deadline=deadline,
                   queue_timeout=queue_timeout, delay_on_timeout=delay, user=tag)


def tags(items: list[Pending]) -> list[str]:
    return [p.user for p in items]


def fill(q: RequestQueue, *items: Pending) -> None:
    for p in items:
        q.push(p)


def take(q: RequestQueue, max_samples: int = 64, max_requests: int = 64, now: float = 0.0,
         horizon: Any = no_horizon) -> tuple[list[str], list[str]]:
    batch, dropped = q.take(max_samples, max_requests, now, horizon)
    return tags(batch), tags(dropped)


def test_priority_levels_are_served_in_order() -> None:
    q = RequestQueue([100, 100, 100])
    fill(q, item("c1", level=3), item("b1", level=2), item("a1", level=1), item("c2", level=3), item("a2", level=1))
    assert q.head() is not None and q.head().user == "a1"  # type: ignore[union-attr]
    assert take(q, max_requests=3) == (["a1", "a2", "b1"], [])
    assert take(q) == (["c1", "c2"], [])
    assert len(q) == 0 and q.samples == 0 and q.head() is None


def test_earliest_deadline_first_within_a_level_fifo_on_ties() -> None:
    q = RequestQueue([100])
    fill(
        q,
        item("late", deadline=30.0),
        item("none1"),
        item("soon", deadline=10.0),
        item("tie1", deadline=20.0),
        item("none2"),
        item("tie2", deadline=20.0),
        item("tie3", deadline=20.0),
    )
    assert take(q) == (["soon", "tie1", "tie2", "tie3", "late", "none1", "none2"], [])


def test_queue_timeout_orders_like_a_deadline() -> None:
    q = RequestQueue([100])
    fill(q, item("hard", deadline=20.0), item("policy", queue_timeout=10.0), item("free"))
    assert take(q) == (["policy", "hard", "free"], [])


def test_one_key_per_batch_and_the_rest_comes_back_in_order() -> None:
    q = RequestQueue([100])
    fill(q, item("a4"), item("b3", key=KEY3), item("c4"), item("d3", key=KEY3), item("e4"), item("f3", key=KEY3))
    assert take(q) == (["a4", "c4", "e4"], [])
    assert len(q) == 3 and q.samples == 3
    assert take(q) == (["b3", "d3", "f3"], [])
    assert len(q) == 0


def test_the_first_key_comes_from_the_highest_level() -> None:
    q = RequestQueue([100, 100])
    fill(q, item("low4", level=2), item("low3", level=2, key=KEY3), item("high3", level=1, key=KEY3))
    assert take(q) == (["high3", "low3"], [])
    assert take(q) == (["low4"], [])


def test_max_samples_is_respected_and_smaller_items_fill_the_gap() -> None:
    q = RequestQueue([100])
    fill(q, item("a", samples=3), item("b", samples=3), item("c", samples=3), item("d", samples=2),
         item("e", samples=1))
    batch, _ = q.take(8, 64, 0.0, no_horizon)
    assert tags(batch) == ["a", "b", "d"]
    assert sum(p.samples for p in batch) == 8
    assert len(q) == 2 and q.samples == 4
    assert take(q) == (["c", "e"], [])


def test_max_requests_is_respected() -> None:
    q = RequestQueue([100])
    fill(q, *(item(str(i)) for i in range(5)))
    assert take(q, max_requests=2) == (["0", "1"], [])
    assert take(q, max_requests=2) == (["2", "3"], [])
    assert take(q, max_requests=2) == (["4"], [])
    assert take(q) == ([], [])


def test_expired_and_cancelled_items_are_returned_as_dropped() -> None:
    q = RequestQueue([100])
    cancelled = item("cancelled")
    fill(
        q,
        item("past", deadline=4.0),
        cancelled,
        item("ok"),
        item("rejected", queue_timeout=5.0),  # REJECT once its queue timeout passed
        item("future", deadline=50.0),
    )
    cancelled.future.cancel()
    batch, dropped = take(q, now=5.0)
    assert batch == ["future", "ok"]
    assert sorted(dropped) == ["cancelled", "past", "rejected"]
    assert len(q) == 0 and q.samples == 0


def test_a_deadline_that_passes_before_the_batch_would_finish_is_dropped() -> None:
    q = RequestQueue([100])
    fill(q, item("tight", deadline=10.010), item("loose", deadline=10.100), item("free"))

    def horizon(size: int) -> float:
        return 0.050 * size  # 50 ms per sample

    batch, dropped = take(q, now=10.0, horizon=horizon)
    # tight: 10.010 < 10.0 + 0.050 -> dropped; loose fits as the first of the batch (10.05 <= 10.1);
    # free has no deadline.
    assert (batch, dropped) == (["loose", "free"], ["tight"])


def test_delay_timeout_moves_an_item_behind_every_level() -> None:
    q = RequestQueue([100, 100])
    fill(
        q,
        item("slow", level=1, queue_timeout=1.0, delay=True),
        item("a", level=1),
        item("b", level=2),
    )
    assert take(q, max_requests=1, now=2.0) == (["a"], [])
    assert len(q) == 2
    assert take(q, max_requests=1, now=2.0) == (["b"], [])
    assert take(q, max_requests=1, now=2.0) == (["slow"], [])


def test_a_delayed_item_still_batches_and_keeps_its_hard_deadline() -> None:
    q = RequestQueue([100])
    fill(q, item("d1", queue_timeout=1.0, delay=True), item("d2", queue_timeout=1.0, delay=True, deadline=3.0),
         item("x"))
    assert take(q, now=2.0) == (["x"], [])  # both timed out: moved to the DELAY level
    fill(q, item("y"))
    assert take(q, max_requests=1, now=2.0) == (["y"], [])
    assert take(q, now=4.0) == (["d1"], ["d2"])  # d2's hard deadline passed while delayed


def test_delay_items_before_their_timeout_stay_in_place() -> None:
    q = RequestQueue([100])
    fill(q, item("d", queue_timeout=10.0, delay=True), item("x"))
    assert take(q, now=2.0) == (["d", "x"], [])


def test_full_is_per_level_and_counts_what_is_queued() -> None:
    q = RequestQueue([2, 1])
    assert not q.full(1) and not q.full(2)
    fill(q, item("a", level=1, samples=3), item("b", level=1, samples=2))
    assert q.full(1) and not q.full(2)
    assert len(q) == 2 and q.samples == 5
    q.push(item("c", level=2))
    assert q.full(2)
    assert take(q, max_requests=1) == (["a"], [])
    assert not q.full(1) and q.full(2)


def test_drain_returns_everything_and_resets_counts() -> None:
    q = RequestQueue([10, 10])
    fill(q, item("a"), item("b", level=2), item("c", queue_timeout=1.0, delay=True))
    assert sorted(tags(q.drain())) == ["a", "b", "c"]
    assert len(q) == 0 and q.samples == 0 and q.head() is None


@pytest.mark.parametrize("n", [1, 7, 40])
def test_counts_stay_consistent(n: int) -> None:
    q = RequestQueue([1000, 1000])
    rng = np.random.default_rng(n)
    pushed = 0
    for i in range(n):
        s = int(rng.integers(1, 4))
        q.push(item(f"r{i}", level=int(rng.integers(1, 3)), samples=s, key=KEY4 if i % 3 else KEY3))
        pushed += s
    seen = 0
    while len(q):
        batch, dropped = q.take(8, 5, 0.0, no_horizon)
        assert batch and not dropped
        assert sum(p.samples for p in batch) <= 8 and len(batch) <= 5
        assert len({p.key for p in batch}) == 1
        seen += sum(p.samples for p in batch)
        assert q.samples == pushed - seen
    assert seen == pushed


def test_arrival_order_holds_no_request_that_left_the_queue() -> None:
    # a scheduler that launches every request at once never asks for the oldest: the queue must not keep them
    q = RequestQueue([100])
    for i in range(10_000):
        q.push(item(str(i)))
        assert take(q) == ([str(i)], [])
    assert len(q._arrivals) <= 64 + 2
    fill(q, item("old"), item("new"))
    assert q.oldest() is not None and q.oldest().user == "old"  # type: ignore[union-attr]


def test_expire_removes_what_is_due_and_delays_what_asks_for_it() -> None:
    q = RequestQueue([100, 100])
    cancelled = item("cancelled", deadline=50.0)
    fill(q, item("late", deadline=5.0), item("timeout", queue_timeout=4.0), item("delay", level=2, queue_timeout=4.0,
                                                                                deadline=20.0, delay=True),
         item("later", deadline=9.0), cancelled)
    assert q.next_due() == 4.0
    assert tags(q.expire(3.0)) == []
    cancelled.future.cancel()
    assert sorted(tags(q.expire(6.0))) == ["late", "timeout"]
    assert len(q) == 3 and q.next_due() == 9.0  # "delay" moved to the DELAY level, its deadline kept
    assert tags(q.discard_done()) == ["cancelled"]
    assert len(q) == 2 and q.samples == 2
    assert take(q, now=6.0) == (["later", "delay"], [])
    assert q.next_due() == math.inf
