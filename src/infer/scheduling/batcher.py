"""The dynamic batcher: one per loaded model version.

Interface (as Triton's scheduler): :meth:`BatchScheduler.enqueue` returns a future of the
request's outputs, :attr:`in_flight` counts what it holds, :meth:`stop` drains it.

Policy, all on the event loop with no locks:
* an idle server launches at once: with every instance idle there is nothing to batch with, so
  a request never waits for company (it waits only for the end of the current event-loop
  iteration, so that requests delivered together are batched together); whatever queues while
  instances run forms the next batch;
* with an instance free but others busy, a batch launches when it reaches the preferred size
  (default max_batch_size) or when its oldest request has waited ``max_queue_delay``;
* priority levels are served in order, earliest deadline first within one; a request whose
  deadline would pass before a batch of the would-be size finishes (predicted from a per-size
  latency curve learnt while serving) is answered DEADLINE_EXCEEDED without being computed;
* concatenation, execution and the split of outputs run in the instance's worker thread: one
  copy into the batch, the outputs handed back as views. A batch the latency curve predicts to
  take under ``infer.inline_max_us`` (config parameter, default 250 us; 0 disables) runs on the
  event loop instead, because handing it to a thread and back costs the loop more than that;
  such a request arriving at an idle scheduler is computed before ``enqueue`` returns, so its
  caller finds the future done and never suspends. A model that once holds the loop far longer
  than that (it is slow only on some inputs) never runs there again;
* deadlines hold whatever the instances do: a request still queued when its deadline passes is
  answered DEADLINE_EXCEEDED then, even with every instance busy, and so is one whose batch is
  still running (the batch finishes in its thread, the instance stays busy until it does).
Every request that leaves the queue ends with a result or an error (try/finally around each
batch; cancelled callers are skipped; only futures not yet done are resolved).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from infer.config.model import DynamicBatching
from infer.core.clock import Clock, MonotonicClock
from infer.errors import (
    DeadlineExceeded,
    InferError,
    InvalidArgument,
    ModelExecutionError,
    QueueFull,
    Unavailable,
)
from infer.observability.metrics import VersionMetrics
from infer.registry.lifecycle import ModelState
from infer.registry.registry import LoadedVersion
from infer.scheduling.health import HealthWindow
from infer.scheduling.queue import Pending, RequestQueue

__all__ = ["BatchScheduler", "LatencyCurve"]

log = logging.getLogger(__name__)

Array = npt.NDArray[np.generic]
Outputs = dict[str, Array]
HealthSink = Callable[[LoadedVersion, ModelState, str], None]

# An inline run this many times over the inline budget held the event loop (and every other model) that
# long: the version runs in worker threads from then on.
INLINE_STRIKE = 20
# Without a measured batch for this long, deadline predictions are not trusted: the next batch runs, so a
# curve that one slow outlier pushed up cannot keep refusing every request with a deadline below it.
CURVE_STALE_S = 1.0
# While a bounded level is full, requests already cancelled are cleared from it at most this often.
PURGE_EVERY_S = 0.1


def _no_horizon(size: int) -> float:
    return 0.0


class LatencyCurve:
    """Execution time per batch size, learnt as an exponential moving average.

    ``alpha_up`` < ``alpha_down`` makes it follow the fast runs and shrug off stalls (a page
    fault, a busy neighbour): one slow run moves the estimate by at most ``alpha_up`` of the way
    to twice its value. Without ``alpha_up``, one run still counts as at most ``max_step`` times
    the estimate: a model that is slow only on rare inputs does not make every batch look slow,
    and a model that really became slower is learnt within a few runs.
    """

    def __init__(self, alpha: float = 0.2, alpha_up: float | None = None, max_step: float = 10.0) -> None:
        self._down = alpha
        self._up = alpha if alpha_up is None else alpha_up
        self._step = 2.0 if alpha_up is not None else max_step
        self._by_size: dict[int, float] = {}

    def observe(self, size: int, seconds: float) -> None:
        old = self._by_size.get(size)
        if old is None:
            self._by_size[size] = seconds
        elif seconds <= old:
            self._by_size[size] = old + self._down * (seconds - old)
        else:
            target = min(seconds, self._step * old)
            self._by_size[size] = old + self._up * (target - old)

    def lower(self, size: int, seconds: float) -> None:
        """Take a measurement only as an upper bound (thread timings include GIL waits)."""
        old = self._by_size.get(size)
        if old is None or seconds < old:
            self.observe(size, seconds)

    def predict(self, size: int) -> float:
        """Predicted seconds for a batch of ``size``; 0 before anything was seen."""
        known = self._by_size.get(size)
        if known is not None:
            return known
        if not self._by_size:
            return 0.0
        nearest = min(self._by_size, key=lambda s: abs(s - size))
        t = self._by_size[nearest]
        return t * size / nearest if size > nearest else t


class BatchScheduler:
    def __init__(
        self,
        version: LoadedVersion,
        *,
        metrics: VersionMetrics,
        default_queue_size: int = 4096,
        clock: Clock | None = None,
        on_health: HealthSink | None = None,
    ) -> None:
        cfg = version.config
        self.version = version
        self._metrics = metrics
        self._clock = clock or MonotonicClock()
        self._runtime = version.runtime
        self._stats = version.stats
        self._batching = cfg.max_batch_size > 0
        dynamic = self._batching and cfg.dynamic_batching is not None
        db = cfg.dynamic_batching or DynamicBatching()
        self._db = db
        self._max_samples = cfg.max_batch_size if self._batching else 1
        self._max_requests = self._max_samples if dynamic else 1
        self._preferred = max(db.preferred_batch_size) if db.preferred_batch_size else self._max_samples
        self._delay = db.max_queue_delay_microseconds / 1e6
        self._levels = db.priority_levels or 1
        self._default_level = db.default_priority_level or 1
        self._policies = [db.policy(lv) for lv in range(1, self._levels + 1)]
        bounds = [p.max_queue_size or default_queue_size for p in self._policies]
        self._queue = RequestQueue(bounds)
        self._instances = cfg.instance_count
        self._executor = ThreadPoolExecutor(self._instances, thread_name_prefix=f"infer-{version.name}")
        self._output_names = [t.name for t in version.outputs]
        self._busy = 0
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None  # the queue's next deadline, armed while it waits
        self._expiry_at = math.inf
        self._watches: dict[int, asyncio.TimerHandle] = {}  # running batches' deadlines, by id(batch)
        self._measured_at = -math.inf  # when the latency curve last learnt from a batch
        self._purged_at = -math.inf
        self._pump_soon = False
        self._deadline_aware = cfg.parameter("infer.deadline_aware", "true").lower() != "false"
        self._inline_s = float(cfg.parameter("infer.inline_max_us", "250") or 0) / 1e6
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.latency = LatencyCurve()
        self._on_health = on_health
        self.health = HealthWindow(
            window=int(cfg.parameter("infer.health_window", "100")),
            min_requests=int(cfg.parameter("infer.health_min_requests", "20")),
            degrade_at=float(cfg.parameter("infer.degrade_error_rate", "0.5")),
            degrade_latency_s=float(cfg.parameter("infer.degrade_p99_ms", "0") or 0) / 1e3,
        )
        # gauges read at scrape time: nothing to keep in step on the hot path
        metrics.queued = lambda: self._queue.count
        metrics.inflight = lambda: self.in_flight
        # Uncontended compute time, from warm-up and inline runs only: time measured in a worker
        # thread includes waiting for the GIL and would keep a cheap model off the loop forever.
        self._cost = LatencyCurve(alpha=0.5, alpha_up=0.05)
        if version.warmup_s > 0:
            self.latency.observe(1, version.warmup_s)
            self._cost.observe(1, version.warmup_s)

    # ---- the interface -------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests queued or executing."""
        return self._queue.count + self._running

    @property
    def queued(self) -> int:
        return self._queue.count

    def enqueue(
        self,
        inputs: dict[str, Array],
        *,
        priority: int = 0,
        timeout_us: int = 0,
        deadline: float | None = None,
    ) -> asyncio.Future[Outputs]:
        """Queue one validated request; the future resolves to its outputs or an InferError."""
        if self._closed:
            raise Unavailable(f"model '{self.version.name}' version {self.version.version} is unloading")
        level = self._level(priority)
        if self._queue.full(level) and (not self._purge_cancelled() or self._queue.full(level)):
            self._stats.rejected += 1
            self._metrics.rejected += 1
            raise QueueFull(
                f"model '{self.version.name}' queue is full ({self._queue.count} requests waiting)",
                retry_after_s=self._retry_hint(),
            )
        now = self._clock.now()
        policy = self._policies[level - 1]
        hard = deadline if deadline is not None else math.inf
        if timeout_us:
            hard = min(hard, now + timeout_us / 1e6)
        qt = policy.default_timeout_microseconds
        if self._batching:
            # optional inputs may be absent: the names are part of the key, and the batch size is
            # read from whichever input came (validation made them agree)
            first = next(iter(inputs.values()), None)
            samples = int(first.shape[0]) if first is not None and first.ndim else 1
            key: tuple[Any, ...] = tuple((n, a.shape[1:]) for n, a in inputs.items())
            extra = self._runtime.batch_key(inputs)
            if extra is not None:
                key += (extra,)
        else:
            samples, key = 1, ()
        loop = self._loop or self._bind_loop()
        fut: asyncio.Future[Outputs] = loop.create_future()
        self._queue.push(
            Pending(
                inputs, samples, key, fut, now, level, deadline=hard,
                queue_timeout=now + qt / 1e6 if qt else math.inf,
                delay_on_timeout=policy.timeout_action == "DELAY",
            )
        )
        if self._busy == 0 and self._queue.count == 1 and self._runs_inline(samples):
            # Idle, alone and cheap: compute now, so the caller finds its future done and the
            # handler never suspends (a suspension costs the gRPC server more than this model).
            self._pump()
        elif not self._pump_soon:
            # Pump once this loop iteration's other arrivals are queued too: they form one batch.
            self._pump_soon = True
            loop.call_soon(self._deferred_pump)
        return fut

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop taking requests, let queued and running ones finish within ``grace_s``, fail the rest."""
        self._closed = True
        end = time.monotonic() + grace_s
        while (self._queue.count or self._busy) and time.monotonic() < end:
            await asyncio.sleep(0.005)
        now = self._clock.now()
        for p in self._queue.drain():
            if p.future.done():
                self._stats.cancelled += 1
                continue
            self._stats.fail.add(int((now - p.arrival) * 1e9))
            self._metrics.failure(Unavailable.code.value)
            p.future.set_exception(Unavailable(f"model '{self.version.name}' was unloaded"))
        for handle in (self._timer, self._expiry, *self._watches.values()):
            if handle is not None:
                handle.cancel()
        self._watches.clear()
        self._executor.shutdown(wait=False)

    # ---- queue policy --------------------------------------------------------------------

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _level(self, priority: int) -> int:
        if priority == 0 or self._levels == 1:
            return self._default_level if self._levels > 1 else 1
        if not 1 <= priority <= self._levels:
            raise InvalidArgument(
                f"parameter 'priority': {priority} is outside 1..{self._levels} for model '{self.version.name}'"
            )
        return priority

    def _purge_cancelled(self) -> bool:
        """Clear cancelled requests out of a full queue (at most every PURGE_EVERY_S); True if any went."""
        now = self._clock.now()
        if now - self._purged_at < PURGE_EVERY_S:
            return False
        self._purged_at = now
        gone = self._queue.discard_done()
        self._stats.cancelled += len(gone)
        return bool(gone)

    def _retry_hint(self) -> float:
        per_batch = self.latency.predict(self._max_samples) or 0.01
        batches = self._queue.samples / max(self._max_samples, 1)
        return min(5.0, max(0.001, per_batch * batches / self._instances))

    def _horizon(self, size: int) -> float:
        return self.latency.predict(size) if self._deadline_aware else 0.0

    def _ready(self, now: float) -> bool:
        if self._max_requests == 1 or self._busy == 0 or self._queue.samples >= self._preferred:
            return True
        oldest = self._queue.oldest()
        return oldest is not None and oldest.arrival + self._delay <= now

    def _pump(self) -> None:
        q = self._queue
        while q.count and self._busy < self._instances:
            now = self._clock.now()
            if not self._ready(now):
                self._arm_timer(now)
                break
            stale = now - self._measured_at > CURVE_STALE_S
            batch, dropped = q.take(self._max_samples, self._max_requests, now,
                                    _no_horizon if stale else self._horizon)
            if dropped:
                self._drop(dropped, now)
            if batch:
                self._launch(batch, now)
        if q.count:
            self._arm_expiry()

    def _arm_expiry(self) -> None:
        """Wake up at the queue's next deadline: waiting requests are answered on time even while every
        instance is busy (a model stuck on one input must not hold the others' answers)."""
        due = self._queue.next_due()
        if due >= self._expiry_at or due == math.inf or self._loop is None:
            return
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry_at = due
        self._expiry = self._loop.call_later(max(0.0, due - self._clock.now()), self._on_expiry)

    def _on_expiry(self) -> None:
        self._expiry, self._expiry_at = None, math.inf
        now = self._clock.now()
        expired = self._queue.expire(now)
        if expired:
            self._drop(expired, now)
        self._pump()

    def _deferred_pump(self) -> None:
        self._pump_soon = False
        self._pump()

    def _arm_timer(self, now: float) -> None:
        oldest = self._queue.oldest()
        if self._timer is not None or oldest is None or self._loop is None:
            return
        wait = max(0.0, oldest.arrival + self._delay - now)
        self._timer = self._loop.call_later(wait, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _drop(self, items: list[Pending], now: float) -> None:
        for p in items:
            if p.future.done():
                self._stats.cancelled += 1
                continue
            self._stats.expired += 1
            self._stats.fail.add(int((now - p.arrival) * 1e9))
            self._metrics.failure("DEADLINE_EXCEEDED")
            p.future.set_exception(
                DeadlineExceeded(f"model '{self.version.name}': request deadline passed before execution")
            )

    # ---- execution -----------------------------------------------------------------------

    def _launch(self, batch: list[Pending], now: float) -> None:
        self._busy += 1
        self._running += len(batch)
        for p in batch:
            p.started = now
        assert self._loop is not None
        size = sum(p.samples for p in batch)
        if self._runs_inline(size):
            # A batch predicted to take less than handing it to a thread costs runs right here:
            # the thread round trip (wake-up, GIL hand-over, callback) would block the loop longer.
            done: asyncio.Future[Any] = self._loop.create_future()
            t0 = time.perf_counter()
            try:
                result = self._compute(batch)
                self._cost.observe(size, result[3] / 1e9)
                done.set_result(result)
            except Exception as e:
                done.set_exception(e)
            self._strike(time.perf_counter() - t0)
            self._finished(batch, done, pump=False)
            return
        first = min(p.deadline for p in batch)
        if first != math.inf:
            self._watches[id(batch)] = self._loop.call_later(max(0.0, first - now), self._expire_running, batch)
        fut = self._loop.run_in_executor(self._executor, self._compute, batch)
        fut.add_done_callback(partial(self._finished, batch))

    def _strike(self, seconds: float) -> None:
        """An inline run that held the loop far past the inline budget moves the version off the loop for good."""
        if seconds > INLINE_STRIKE * self._inline_s > 0:
            self._inline_s = 0.0
            log.warning("model %s version %d held the event loop for %.1f ms in one batch: it runs in worker "
                        "threads from now on", self.version.name, self.version.version, seconds * 1e3)

    def _expire_running(self, batch: list[Pending]) -> None:
        """A running batch's earliest deadline passed: answer DEADLINE_EXCEEDED to whoever is past theirs now,
        and wait for the next one."""
        now = self._clock.now()
        nxt = math.inf
        for p in batch:
            if p.future.done():
                continue
            if p.deadline <= now:
                self._expire(p, now, "request deadline passed while its batch was running")
            else:
                nxt = min(nxt, p.deadline)
        if nxt != math.inf and self._loop is not None:
            self._watches[id(batch)] = self._loop.call_later(nxt - now, self._expire_running, batch)
        else:
            self._watches.pop(id(batch), None)

    def _expire(self, p: Pending, now: float, why: str) -> None:
        p.expired = True
        self._stats.expired += 1
        self._stats.fail.add(int((now - p.arrival) * 1e9))
        self._metrics.failure("DEADLINE_EXCEEDED")
        p.future.set_exception(DeadlineExceeded(f"model '{self.version.name}': {why}"))

    def _runs_inline(self, size: int) -> bool:
        return self._inline_s > 0 and 0 < self._cost.predict(size) < self._inline_s

    def _compute(self, batch: list[Pending]) -> tuple[list[Outputs], int, int, int, int]:
        """Runs in a worker thread: concatenate, execute, split."""
        t0 = time.perf_counter_ns()
        total = sum(p.samples for p in batch)
        if len(batch) == 1:
            feeds = batch[0].inputs
        else:
            feeds = {n: np.concatenate([p.inputs[n] for p in batch]) for n in batch[0].inputs}
        t1 = time.perf_counter_ns()
        outs = self._runtime.run(feeds, self._output_names)
        t2 = time.perf_counter_ns()
        parts = self._split(batch, outs, total)
        return parts, total, t1 - t0, t2 - t1, time.perf_counter_ns() - t2

    def _split(self, batch: list[Pending], outs: Outputs, total: int) -> list[Outputs]:
        if self._batching:
            for name, arr in outs.items():
                if arr.ndim == 0 or arr.shape[0] != total:
                    raise ModelExecutionError(
                        f"model '{self.version.name}' output '{name}' has shape {list(arr.shape)} "
                        f"for a batch of {total}"
                    )
        if len(batch) == 1:
            return [outs]
        bounds = np.cumsum([p.samples for p in batch[:-1]]).tolist()
        pieces = {n: np.split(a, bounds) for n, a in outs.items()}
        return [{n: pieces[n][i] for n in pieces} for i in range(len(batch))]

    def _finished(self, batch: list[Pending], fut: asyncio.Future[Any], pump: bool = True) -> None:
        self._busy -= 1
        self._running -= len(batch)
        watch = self._watches.pop(id(batch), None)
        if watch is not None:
            watch.cancel()
        try:
            self._resolve(batch, fut)
        finally:
            if pump:
                self._pump()

    def _judge(self, ok: bool, count: int) -> None:
        """Feed the health window; degrade or restore the version when it says so."""
        self.health.record(ok, count)
        if self._on_health is None:
            return
        state = self.version.state
        if state not in (ModelState.ACTIVE, ModelState.DEGRADED):
            return
        decision = self.health.judge(degraded=state is ModelState.DEGRADED)
        if decision is not None:
            target = ModelState.DEGRADED if decision[0] else ModelState.ACTIVE
            self._on_health(self.version, target, decision[1])

    def _resolve(self, batch: list[Pending], fut: asyncio.Future[Any]) -> None:
        end = self._clock.now()
        error: InferError | None = None
        try:
            parts, total, in_ns, infer_ns, out_ns = fut.result()
        except InferError as e:
            error = e
        except Exception as e:  # a runtime bug must not leave callers waiting
            log.exception("model %s failed", self.version.name)
            error = ModelExecutionError(f"model '{self.version.name}' failed: {type(e).__name__}: {e}")
        stats, m = self._stats, self._metrics
        if error is not None:
            for p in batch:
                if p.expired:
                    continue
                stats.fail.add(int((end - p.arrival) * 1e9))
                m.failure(error.code.value)
                if not p.future.done():
                    p.future.set_exception(error)
            if not isinstance(error, InvalidArgument):  # a bad input is the caller's fault, not the model's
                self._judge(ok=False, count=len(batch))
            return
        self.health.record_latency(infer_ns / 1e9)
        self._judge(ok=True, count=len(batch))
        self.latency.observe(total, infer_ns / 1e9)
        self._measured_at = end
        self._cost.lower(total, infer_ns / 1e9)
        stats.record_batch(total, len(batch), in_ns, infer_ns, out_ns)
        stats.last_inference_ms = int(time.time() * 1000)
        m.batch(total, infer_ns / 1e9)
        for p, out in zip(batch, parts, strict=True):
            queue_s = p.started - p.arrival
            stats.queue.add(int(queue_s * 1e9))
            m.queue_duration.observe(queue_s)
            if p.future.done():
                stats.cancelled += 0 if p.expired else 1
                continue
            if p.deadline <= end:  # finished late (an inline batch cannot be watched while it runs)
                self._expire(p, end, "request deadline passed while its batch was running")
                continue
            stats.success.add(int((end - p.arrival) * 1e9))
            m.success += 1
            m.request_duration.observe(end - p.arrival)
            p.future.set_result(out)


