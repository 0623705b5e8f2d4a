"""BatchScheduler with a FakeRuntime: batching, ordering, deadlines, errors, instances, shutdown, statistics.

No sockets. Time that decides anything comes from a ManualClock; requests pile up while the fake
runtime waits on a threading.Event, so every batch composition asserted here is exact. The
scheduler pumps its queue at the end of the event-loop iteration in which requests arrive, so
tests give the loop one turn (``settle``) before they look at what was launched.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from fixtures import FakeCall, FakeRuntime, fake_config, fake_version

from infer.config.model import ModelInput, ModelOutput
from infer.core.clock import Clock, ManualClock
from infer.errors import DeadlineExceeded, InvalidArgument, ModelExecutionError, QueueFull, Unavailable
from infer.observability.metrics import Metrics
from infer.registry.registry import LoadedVersion
from infer.scheduling.batcher import BatchScheduler, LatencyCurve

Fut = asyncio.Future[dict[str, np.ndarray]]


@dataclass
class Rig:
    sched: BatchScheduler
    rt: FakeRuntime
    version: LoadedVersion
    metrics: Metrics
    clock: ManualClock
    gate: threading.Event

    def x(self, tag: int, rows: int = 1, dim: int = 4) -> np.ndarray:
        """A request's input; every value is its tag, so a batch row tells whose it is."""
        return np.full((rows, dim), float(tag), np.float32)

    def put(self, tag: int, rows: int = 1, dim: int = 4, **kw: Any) -> Fut:
        return self.sched.enqueue({"x": self.x(tag, rows, dim)}, **kw)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"model": "fake", "version": "1", **labels})
        return value or 0.0

    @property
    def stats(self) -> Any:
        return self.version.stats

    async def settle(self) -> None:
        """One turn of the event loop: the scheduler's deferred pump runs."""
        await asyncio.sleep(0)

    async def entered(self, n: int) -> None:
        """Let the loop launch what was enqueued, then wait until ``n`` runs in all have started."""
        await self.settle()
        self.rt.wait_entered(n)


def tags_of(call: FakeCall) -> list[int]:
    """Request tags in a batch, in row order, each once."""
    col = call.inputs["x"][:, 0].tolist()
    return [int(v) for i, v in enumerate(col) if i == 0 or col[i - 1] != v]


MakeRig = Callable[..., Rig]


@pytest_asyncio.fixture
async def make() -> AsyncIterator[MakeRig]:
    rigs: list[Rig] = []

    def factory(clock: Clock | None = None, blocked: bool = True, **cfg: Any) -> Rig:
        gate = threading.Event()
        if not blocked:
            gate.set()
        rt = FakeRuntime(gate=gate)
        version = fake_version(fake_config(**cfg), rt)
        metrics = Metrics()
        manual = ManualClock(100.0)
        sched = BatchScheduler(version, metrics=metrics.version("fake", "1"), clock=clock or manual)
        rigs.append(Rig(sched, rt, version, metrics, manual, gate))
        return rigs[-1]

    yield factory
    for r in rigs:
        r.gate.set()
        await r.sched.stop(0.5)


async def outcome(fut: Fut, timeout: float = 5.0) -> Any:
    """The result, or the exception, of a request."""
    try:
        return await asyncio.wait_for(fut, timeout)
    except Exception as e:
        return e


# ---- batching ----------------------------------------------------------------------------------


async def test_an_idle_scheduler_launches_at_once_whatever_the_delay(make: MakeRig) -> None:
    r = make(delay_us=10_000_000, preferred=[8], instances=2)
    fut = r.put(1)
    await r.entered(1)  # one loop turn, no timer: the 10 s delay does not apply to an idle scheduler
    assert r.sched.queued == 0 and r.sched.in_flight == 1
    r.gate.set()
    out = await asyncio.wait_for(fut, 2.0)
    np.testing.assert_array_equal(out["y"], r.x(1) * 2)
    assert r.clock.now() == 100.0  # the manual clock never moved


async def test_requests_arriving_together_on_an_idle_scheduler_form_one_batch(make: MakeRig) -> None:
    r = make(delay_us=10_000_000, preferred=[8], instances=2)
    futs = [r.put(t, rows=t) for t in (1, 2, 3)]  # all within one loop iteration
    await r.entered(1)
    assert r.sched.queued == 0 and len(r.rt.calls) == 1
    assert tags_of(r.rt.calls[0]) == [1, 2, 3] and r.rt.calls[0].rows == 6
    r.gate.set()
    outs = await asyncio.gather(*futs)
    for t, out in zip((1, 2, 3), outs, strict=True):
        np.testing.assert_array_equal(out["y"], r.x(t, rows=t) * 2)


async def test_requests_pile_up_into_one_concatenated_batch(make: MakeRig) -> None:
    r = make(max_batch_size=8)
    first = r.put(100)
    await r.entered(1)
    sizes = [1, 2, 1, 3, 1, 2, 1, 1, 2, 3, 1, 1]
    futs = [r.put(i + 1, rows=n) for i, n in enumerate(sizes)]
    assert r.sched.queued == len(sizes) and r.sched.in_flight == len(sizes) + 1
    r.gate.set()
    outs = await asyncio.gather(first, *futs)
    calls = r.rt.calls[1:]
    assert 1 < len(calls) < len(sizes)
    assert r.stats.execution_count == 1 + len(calls)
    assert r.stats.inference_count == 1 + sum(sizes)

    for i, (n, out) in enumerate(zip(sizes, outs[1:], strict=True)):
        alone = FakeRuntime().run({"x": r.x(i + 1, n)}, ["y"])["y"]  # the same request, unbatched
        np.testing.assert_array_equal(out["y"], alone)
        assert out["y"].shape == (n, 4)
    order = [t for c in calls for t in tags_of(c)]
    assert sorted(order) == list(range(1, len(sizes) + 1))  # nobody twice, nobody missing
    assert tags_of(calls[0]) == [1, 2, 3, 4, 5]  # FIFO up to max_batch_size 8 (1+2+1+3+1)
    for call in calls:
        members = tags_of(call)
        assert members == sorted(members) and call.rows <= 8
        # the runtime received one concatenation of exactly these requests' inputs ...
        np.testing.assert_array_equal(call.inputs["x"], np.concatenate([r.x(t, sizes[t - 1]) for t in members]))
        # ... and each caller got a view of that batch's output
        for t in members:
            assert np.shares_memory(outs[t]["y"], call.outputs["y"])


async def test_a_batch_waits_for_the_delay_counted_from_its_first_arrival(make: MakeRig) -> None:
    r = make(instances=2, delay_us=1_000_000, preferred=[4])
    a = r.put(1)
    await r.entered(1)
    b = r.put(2)
    await r.settle()
    assert r.sched.queued == 1  # one instance is free, but b waits for company or the delay
    r.clock.advance(0.5)
    c = r.put(3)
    await r.settle()
    assert r.sched.queued == 2
    r.clock.advance(0.6)  # b has waited 1.1 s: past the delay, whatever c's arrival
    d = r.put(4)
    await r.settle()
    assert r.sched.queued == 0
    await r.entered(2)
    assert tags_of(r.rt.calls[1]) == [2, 3, 4]
    r.gate.set()
    await asyncio.gather(a, b, c, d)


async def test_a_batch_launches_when_it_reaches_the_preferred_size(make: MakeRig) -> None:
    r = make(instances=2, delay_us=10_000_000, preferred=[2, 4])
    a = r.put(1)
    await r.entered(1)
    b, c = r.put(2), r.put(3, rows=2)
    await r.settle()
    assert r.sched.queued == 2  # 3 samples < 4
    d = r.put(4)
    await r.settle()
    assert r.sched.queued == 0
    await r.entered(2)
    assert tags_of(r.rt.calls[1]) == [2, 3, 4] and r.rt.calls[1].rows == 4
    r.gate.set()
    await asyncio.gather(a, b, c, d)


async def test_the_delay_timer_fires_on_the_real_clock() -> None:
    from infer.core.clock import MonotonicClock

    gate = threading.Event()
    rt = FakeRuntime(gate=gate)
    version = fake_version(fake_config(instances=2, delay_us=20_000, preferred=[8]), rt)
    sched = BatchScheduler(version, metrics=Metrics().version("fake", "1"), clock=MonotonicClock())
    try:
        a = sched.enqueue({"x": np.ones((1, 4), np.float32)})
        await asyncio.sleep(0)
        rt.wait_entered(1)
        t0 = time.monotonic()
        b = sched.enqueue({"x": np.ones((1, 4), np.float32)})
        await asyncio.sleep(0)
        assert sched.queued == 1
        while len(rt.calls) < 2 and time.monotonic() - t0 < 5.0:  # nothing but the timer can launch b
            await asyncio.sleep(0.002)
        assert len(rt.calls) == 2 and time.monotonic() - t0 >= 0.015
        assert not a.done()  # the first batch is still held: b went to the second instance
        gate.set()
        await asyncio.gather(a, b)
    finally:
        gate.set()
        await sched.stop(0.5)


async def test_different_non_batch_dims_are_never_batched_together(make: MakeRig) -> None:
    r = make(dims=[-1], max_batch_size=16)
    first = r.put(100, dim=4)
    await r.entered(1)
    shapes = [(1, 4), (2, 3), (1, 4), (1, 3), (3, 4), (1, 5), (1, 3)]
    futs = [r.put(i + 1, rows=n, dim=d) for i, (n, d) in enumerate(shapes)]
    r.gate.set()
    outs = await asyncio.gather(first, *futs)
    for (n, d), i, out in zip(shapes, range(1, len(shapes) + 1), outs[1:], strict=True):
        np.testing.assert_array_equal(out["y"], r.x(i, n, d) * 2)
    later = r.rt.calls[1:]
    assert len(later) == 3
    for call in later:
        members = tags_of(call)
        assert len({shapes[t - 1][1] for t in members}) == 1
        assert call.inputs["x"].shape[1] == shapes[members[0] - 1][1]
    assert sorted(t for c in later for t in tags_of(c)) == list(range(1, len(shapes) + 1))


async def test_requests_batch_only_with_those_of_the_same_runtime_batch_key(make: MakeRig) -> None:
    # a runtime may name values that must agree within a batch (the forecast program's horizon)
    r = make(max_batch_size=16)
    r.rt.batch_key = lambda inputs: int(inputs["x"][0, 0]) % 2  # type: ignore[method-assign]
    first = r.put(100)
    await r.entered(1)
    futs = [r.put(t) for t in range(1, 7)]
    r.gate.set()
    outs = await asyncio.gather(first, *futs)
    for t, out in zip(range(1, 7), outs[1:], strict=True):
        np.testing.assert_array_equal(out["y"], r.x(t) * 2)
    groups = sorted(tags_of(c) for c in r.rt.calls[1:])
    assert groups == [[1, 3, 5], [2, 4, 6]]


async def test_priority_levels_order_execution(make: MakeRig) -> None:
    r = make(max_batch_size=1, priority_levels=3)  # default level 3; one request per batch
    first = r.put(100, priority=1)
    await r.entered(1)
    prios = {1: 3, 2: 2, 3: 1, 4: 0, 5: 1, 6: 2, 7: 3}  # tag -> priority (0 = the default, 3)
    futs = [r.put(t, priority=p) for t, p in prios.items()]
    with pytest.raises(InvalidArgument, match="priority"):
        r.put(99, priority=4)
    r.gate.set()
    await asyncio.gather(first, *futs)
    assert [tags_of(c)[0] for c in r.rt.calls] == [100, 3, 5, 2, 6, 1, 4, 7]


async def test_priority_levels_order_the_rows_of_one_batch(make: MakeRig) -> None:
    r = make(max_batch_size=8, priority_levels=2)
    first = r.put(100)
    await r.entered(1)
    futs = [r.put(1, priority=2), r.put(2, priority=1), r.put(3), r.put(4, priority=1)]
    r.gate.set()
    await asyncio.gather(first, *futs)
    assert tags_of(r.rt.calls[1]) == [2, 4, 1, 3]


async def test_a_model_without_batching_runs_each_request_alone(make: MakeRig) -> None:
    r = make(max_batch_size=0, dynamic=False, blocked=False)
    futs = [r.sched.enqueue({"x": np.full((4,), float(i), np.float32)}) for i in range(3)]
    outs = await asyncio.gather(*futs)
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out["y"], np.full((4,), 2.0 * i, np.float32))
    assert all(c.inputs["x"].shape == (4,) for c in r.rt.calls)
    assert r.stats.execution_count == r.stats.inference_count == 3


# ---- requests that are never computed ------------------------------------------------------------


async def test_a_passed_deadline_is_answered_without_computing(make: MakeRig) -> None:
    r = make()
    first = r.put(100)
    await r.entered(1)
    late = r.put(1, timeout_us=1_000)
    late_abs = r.put(2, deadline=r.clock.now() + 0.005)
    fine = r.put(3, deadline=r.clock.now() + 60.0)
    free = r.put(4)
    r.clock.advance(0.010)
    r.gate.set()
    results = [await outcome(f) for f in (first, late, late_abs, fine, free)]
    assert isinstance(results[1], DeadlineExceeded) and isinstance(results[2], DeadlineExceeded)
    assert "deadline" in str(results[1])
    assert all(isinstance(x, dict) for x in (results[0], results[3], results[4]))
    computed = {t for c in r.rt.calls for t in tags_of(c)}
    assert computed == {100, 3, 4}
    assert r.stats.expired == 2
    assert r.stats.fail.count == 2 and r.stats.success.count == 3
    assert r.metric("infer_request_failure_total", reason="DEADLINE_EXCEEDED") == 2
    assert r.metric("infer_queued_requests") == 0


async def test_a_cancelled_request_is_never_computed(make: MakeRig) -> None:
    r = make()
    first = r.put(100)
    await r.entered(1)
    gone, kept = r.put(1), r.put(2)
    gone.cancel()
    r.gate.set()
    await asyncio.gather(first, kept)
    assert gone.cancelled()
    assert {t for c in r.rt.calls for t in tags_of(c)} == {100, 2}
    assert r.stats.cancelled == 1 and r.stats.expired == 0
    assert r.stats.success.count == 2 and r.stats.inference_count == 2
    assert r.metric("infer_queued_requests") == 0


async def test_a_queue_timeout_with_reject_is_deadline_exceeded(make: MakeRig) -> None:
    r = make(queue_timeout_us=1_000)
    first = r.put(100)
    await r.entered(1)
    waited = r.put(1)
    r.clock.advance(0.002)
    r.gate.set()
    assert isinstance(await outcome(waited), DeadlineExceeded)
    await first
    assert r.stats.expired == 1 and len(r.rt.calls) == 1


async def test_a_queue_timeout_with_delay_moves_the_request_behind_the_rest(make: MakeRig) -> None:
    r = make(max_batch_size=1, queue_timeout_us=1_000, timeout_action="DELAY")
    first = r.put(100)
    await r.entered(1)
    old = r.put(1)
    r.clock.advance(0.002)  # old's queue timeout passed
    new = r.put(2)
    r.gate.set()
    await asyncio.gather(first, old, new)
    assert [tags_of(c)[0] for c in r.rt.calls] == [100, 2, 1]
    assert r.stats.expired == 0


# ---- backpressure, errors ----------------------------------------------------------------------


async def test_a_full_queue_raises_queue_full_with_a_retry_hint(make: MakeRig) -> None:
    r = make(max_batch_size=1, max_queue_size=2)
    futs = [r.put(1)]
    await r.entered(1)
    futs += [r.put(2), r.put(3)]
    with pytest.raises(QueueFull) as info:
        r.put(4)
    assert info.value.retry_after_s > 0
    assert "queue is full" in info.value.message
    assert r.stats.rejected == 1 and r.metric("infer_queue_rejected_total") == 1
    assert r.sched.queued == 2
    r.gate.set()
    await asyncio.gather(*futs)
    r.put(5)  # room again
    assert r.stats.success.count == 3


async def test_a_runtime_error_fails_its_whole_batch_and_the_next_batch_works(make: MakeRig) -> None:
    r = make(max_batch_size=8)
    first = r.put(100)
    await r.entered(1)
    queued = [r.put(t) for t in (1, 2, 3)]
    r.rt.error = RuntimeError("boom")
    r.gate.set()
    results = [await outcome(f) for f in (first, *queued)]
    assert all(isinstance(e, ModelExecutionError) for e in results)
    assert "RuntimeError: boom" in str(results[1])
    assert [tags_of(c) for c in r.rt.calls] == [[100], [1, 2, 3]]
    assert r.stats.fail.count == 4 and r.stats.execution_count == 0
    assert r.metric("infer_request_failure_total", reason="INTERNAL") == 4

    r.rt.error = None
    outs = await asyncio.gather(r.put(4), r.put(5, rows=2))
    np.testing.assert_array_equal(outs[1]["y"], r.x(5, 2) * 2)
    assert r.stats.success.count == 2


async def test_a_runtime_returning_the_wrong_number_of_rows_fails_that_batch(make: MakeRig) -> None:
    r = make(max_batch_size=8)
    first = r.put(100, rows=2)
    await r.entered(1)
    queued = [r.put(1), r.put(2, rows=3)]
    r.rt.wrong_rows = True
    r.gate.set()
    results = [await outcome(f) for f in (first, *queued)]
    assert all(isinstance(e, ModelExecutionError) for e in results)
    assert "output 'y' has shape [1, 4] for a batch of 2" in str(results[0])
    assert "output 'y' has shape [3, 4] for a batch of 4" in str(results[1])
    r.rt.wrong_rows = False
    out = await r.put(3)
    np.testing.assert_array_equal(out["y"], r.x(3) * 2)


# ---- instances, shutdown -----------------------------------------------------------------------


async def test_two_instances_execute_concurrently_on_two_threads(make: MakeRig) -> None:
    r = make(instances=2, dynamic=False)
    a, b = r.put(1), r.put(2)
    await r.settle()
    r.rt.wait_active(2)
    assert r.rt.calls[0].thread != r.rt.calls[1].thread
    c = r.put(3)
    await r.settle()
    assert r.sched.queued == 1  # both instances busy
    r.gate.set()
    await asyncio.gather(a, b, c)
    assert r.rt.max_active == 2
    assert len({c.thread for c in r.rt.calls}) == 2


async def test_stop_drains_queued_work_and_refuses_new_requests(make: MakeRig) -> None:
    r = make(max_batch_size=2)
    futs = [r.put(1)]
    await r.entered(1)
    futs += [r.put(t) for t in (2, 3, 4)]
    stopping = asyncio.ensure_future(r.sched.stop(5.0))
    await asyncio.sleep(0)
    with pytest.raises(Unavailable, match="unloading"):
        r.put(5)
    r.gate.set()
    await asyncio.wait_for(stopping, 5.0)
    outs = await asyncio.gather(*futs)
    assert [int(o["y"][0, 0]) for o in outs] == [2, 4, 6, 8]
    assert r.stats.success.count == 4


async def test_stop_fails_what_is_still_queued_when_the_grace_runs_out(make: MakeRig) -> None:
    r = make()
    running = r.put(1)
    await r.entered(1)
    queued = r.put(2)
    await r.sched.stop(0.02)
    assert isinstance(await outcome(queued), Unavailable)
    with pytest.raises(Unavailable):
        r.put(3)
    r.gate.set()
    out = await asyncio.wait_for(running, 5.0)  # the running batch still answers
    np.testing.assert_array_equal(out["y"], r.x(1) * 2)
    assert r.sched.in_flight == 0
    assert r.stats.fail.count == 1 and r.stats.success.count == 1
    assert r.metric("infer_request_failure_total", reason="UNAVAILABLE") == 1


# ---- statistics, latency curve -----------------------------------------------------------------


async def test_statistics_add_up(make: MakeRig) -> None:
    r = make(max_batch_size=8, instances=2, preferred=[4], delay_us=0)
    rng = np.random.default_rng(0)
    sizes: list[int] = []
    for _burst in range(4):
        r.gate.clear()
        futs = []
        for _ in range(8):
            n = int(rng.integers(1, 4))
            sizes.append(n)
            futs.append(r.put(len(sizes), rows=n))
        r.gate.set()
        await asyncio.gather(*futs)
    s = r.stats
    assert s.success.count == len(sizes)
    assert s.inference_count == sum(sizes)
    assert s.execution_count == len(r.rt.calls) < len(sizes)
    assert sum(b.compute_infer.count for b in s.batches.values()) == s.execution_count
    assert sum(size * b.compute_infer.count for size, b in s.batches.items()) == s.inference_count
    assert s.queue.count == s.success.count == s.compute_infer.count == s.compute_input.count
    assert s.fail.count == s.expired == s.cancelled == s.rejected == 0
    assert r.metric("infer_execution_count_total") == s.execution_count
    assert r.metric("infer_inference_count_total") == s.inference_count
    assert r.metric("infer_batch_size_count") == s.execution_count
    assert r.metric("infer_batch_size_sum") == s.inference_count
    assert r.metric("infer_request_success_total") == len(sizes)
    assert r.sched.in_flight == 0


def test_latency_curve_predictions() -> None:
    c = LatencyCurve(alpha=0.5)
    assert c.predict(4) == 0.0  # nothing learnt
    c.observe(4, 0.010)
    assert c.predict(4) == pytest.approx(0.010)
    assert c.predict(2) == pytest.approx(0.010)  # smaller: no faster than the nearest known
    assert c.predict(8) == pytest.approx(0.020)  # larger: scaled from the nearest known
    c.observe(4, 0.020)
    assert c.predict(4) == pytest.approx(0.015)  # moving average
    c.observe(16, 0.030)
    assert c.predict(14) == pytest.approx(0.030)  # nearest is 16
    assert c.predict(32) == pytest.approx(0.060)


async def test_the_scheduler_learns_its_latency_curve(make: MakeRig) -> None:
    r = make(blocked=False)
    r.rt.delay_s = 0.05
    await r.put(1)
    assert r.sched.latency.predict(1) >= 0.05
    assert r.sched.latency.predict(2) >= 0.10


async def test_a_request_that_cannot_finish_before_its_deadline_is_not_computed(make: MakeRig) -> None:
    r = make(blocked=False)
    r.rt.delay_s = 0.05
    await r.put(1)  # learnt: a batch of 1 takes 50 ms
    r.rt.delay_s = 0.0
    calls = len(r.rt.calls)
    short = await outcome(r.put(2, deadline=r.clock.now() + 0.010))
    also_short = await outcome(r.put(3, timeout_us=10_000))
    assert isinstance(short, DeadlineExceeded) and isinstance(also_short, DeadlineExceeded)
    assert len(r.rt.calls) == calls and r.stats.expired == 2
    roomy = await outcome(r.put(4, deadline=r.clock.now() + 1.0))  # enough time: computed
    assert isinstance(roomy, dict) and len(r.rt.calls) == calls + 1


async def test_optional_inputs_batch_only_with_requests_giving_the_same_inputs(make: MakeRig) -> None:
    r = make(max_batch_size=8)
    cfg = r.version.config.model_copy(update={
        "input": [ModelInput(name="x", data_type="TYPE_FP32", dims=[4], optional=True),
                  ModelInput(name="x2", data_type="TYPE_FP32", dims=[4], optional=True)],
        "output": [ModelOutput(name="y", data_type="TYPE_FP32", dims=[4]),
                   ModelOutput(name="y2", data_type="TYPE_FP32", dims=[4])],
    })
    version = fake_version(cfg, r.rt)
    sched = BatchScheduler(version, metrics=Metrics().version("fake", "1"), clock=r.clock)
    try:
        first = sched.enqueue({"x": r.x(100)})
        await r.entered(1)
        only_x2 = sched.enqueue({"x2": r.x(1, rows=2)})  # the first declared input is absent
        only_x = sched.enqueue({"x": r.x(2)})
        both = sched.enqueue({"x2": r.x(3), "x": r.x(4)})
        r.gate.set()
        outs = await asyncio.gather(first, only_x2, only_x, both)
    finally:
        r.gate.set()
        await sched.stop(0.5)
    assert set(outs[1]) == {"y2"} and outs[1]["y2"].shape == (2, 4)
    np.testing.assert_array_equal(outs[1]["y2"], r.x(1, rows=2) * 2)
    np.testing.assert_array_equal(outs[2]["y"], r.x(2) * 2)
    np.testing.assert_array_equal(outs[3]["y"], r.x(4) * 2)
    np.testing.assert_array_equal(outs[3]["y2"], r.x(3) * 2)
    assert sorted(tuple(sorted(c.inputs)) for c in r.rt.calls[1:]) == [("x",), ("x", "x2"), ("x2",)]


async def test_batches_predicted_faster_than_a_thread_hand_off_run_on_the_loop(make: MakeRig) -> None:
    r = make(blocked=False, inline_max_us=1_000_000)  # inline below 1 s: anything learnt qualifies
    loop_thread = threading.current_thread().name
    await r.put(1)  # nothing learnt yet: a worker thread
    assert r.rt.calls[0].thread != loop_thread
    assert 0 < r.sched.latency.predict(1) < 1.0
    out = await r.put(2, rows=2)
    assert r.rt.calls[1].thread == loop_thread
    np.testing.assert_array_equal(out["y"], r.x(2, rows=2) * 2)

    r.rt.error = RuntimeError("inline boom")
    failed = await asyncio.gather(r.put(3), r.put(4), return_exceptions=True)
    assert all(isinstance(e, ModelExecutionError) and "inline boom" in str(e) for e in failed)
    r.rt.error = None
    await r.put(5)
    assert r.stats.success.count == 3 and r.stats.fail.count == 2
    assert r.stats.execution_count == 3 and r.stats.inference_count == 4
    assert r.sched.in_flight == 0 and r.metric("infer_queued_requests") == 0


# ---- faults: stuck batches, slow inline runs, outliers -----------------------------------------------


async def test_a_deadline_passing_while_the_batch_runs_is_answered_then(make: MakeRig) -> None:
    from infer.core.clock import MonotonicClock

    r = make(clock=MonotonicClock(), max_batch_size=8)  # the gate holds the batch: a model stuck on an input
    t0 = time.monotonic()
    stuck = r.put(1, timeout_us=50_000)
    roomy = r.put(2, deadline=time.monotonic() + 60)
    await r.entered(1)
    queued = r.put(3, timeout_us=80_000)  # waits behind the stuck instance
    got = await outcome(stuck)
    assert isinstance(got, DeadlineExceeded) and "while its batch was running" in str(got)
    got = await outcome(queued)
    assert isinstance(got, DeadlineExceeded) and "before execution" in str(got)
    assert time.monotonic() - t0 < 5  # answered at the deadlines, not when the gate opens
    assert not roomy.done() and r.sched.in_flight == 2  # the running batch still counts
    r.gate.set()
    out = await outcome(roomy)
    assert isinstance(out, dict)
    assert r.stats.expired == 2 and r.stats.cancelled == 0 and r.stats.success.count == 1
    assert r.stats.fail.count == 2 and r.metric("infer_request_failure_total", reason="DEADLINE_EXCEEDED") == 2
    assert len(r.rt.calls) == 1  # the queued request was never computed


async def test_cancelled_requests_give_their_places_in_a_full_queue_back(make: MakeRig) -> None:
    r = make(max_batch_size=1, max_queue_size=2)
    running = r.put(1)
    await r.entered(1)
    abandoned = [r.put(2), r.put(3)]
    for f in abandoned:
        f.cancel()
    kept = r.put(4)  # the queue was full of cancelled requests: they go, this one comes in
    assert r.sched.queued == 1 and r.stats.cancelled == 2
    r.gate.set()
    await asyncio.gather(running, kept)
    assert [tags_of(c) for c in r.rt.calls] == [[1], [4]]


async def test_a_model_that_holds_the_loop_once_runs_in_threads_from_then_on(make: MakeRig) -> None:
    r = make(blocked=False, inline_max_us=1_000)
    loop_thread = threading.current_thread().name
    await r.put(1)  # nothing learnt: a thread; learns a cost far under 1 ms
    await r.put(2)
    assert r.rt.calls[1].thread == loop_thread
    r.rt.delay_s = 0.05  # slow on this input: 50 ms on the loop, over 20 x the 1 ms inline budget
    await r.put(3)
    assert r.rt.calls[2].thread == loop_thread
    r.rt.delay_s = 0.0
    for tag in (4, 5):
        await r.put(tag)
    assert loop_thread not in {c.thread for c in r.rt.calls[3:]}


async def test_one_slow_outlier_does_not_refuse_every_deadline_after_it(make: MakeRig) -> None:
    r = make(blocked=False)
    r.rt.delay_s = 0.002
    await r.put(1)
    r.rt.delay_s = 0.2  # one outlier: counts as at most 10 times the estimate
    await r.put(2)
    r.rt.delay_s = 0.0
    assert r.sched.latency.predict(1) < 0.01
    assert isinstance(await outcome(r.put(3, deadline=r.clock.now() + 0.05)), dict)
    r.rt.delay_s = 0.2
    for tag in range(10):  # the model really became slow: learnt within a few batches
        await r.put(10 + tag)
    r.rt.delay_s = 0.0
    assert r.sched.latency.predict(1) > 0.1
    calls = len(r.rt.calls)
    assert isinstance(await outcome(r.put(30, deadline=r.clock.now() + 0.05)), DeadlineExceeded)
    assert len(r.rt.calls) == calls  # refused without computing while the estimate is fresh
    r.clock.advance(1.5)  # nothing measured for over a second: the next batch runs and refreshes the estimate
    assert isinstance(await outcome(r.put(31, deadline=r.clock.now() + 0.05)), dict)
