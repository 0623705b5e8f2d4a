"""A bounded multi-level request queue: priority levels served in order, earliest deadline first within one.

Items that reached a queue-policy timeout with action DELAY lose their place and wait in a
last level served after every other. Nothing here touches asyncio: the batcher owns the clock,
the futures and the locking (there is none: one event loop).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Pending", "RequestQueue"]


@dataclass(slots=True, eq=False)
class Pending:
    """A request waiting for a batch. ``key`` groups requests whose non-batch dims agree."""

    inputs: dict[str, npt.NDArray[np.generic]]
    samples: int
    key: tuple[Any, ...]
    future: Any  # asyncio.Future[dict[str, array]]
    arrival: float
    level: int
    deadline: float = math.inf  # hard: answered DEADLINE_EXCEEDED once passed
    queue_timeout: float = math.inf  # policy: REJECT or DELAY once passed
    delay_on_timeout: bool = False
    seq: int = 0
    queued: bool = False
    started: float = 0.0
    user: Any = None  # whatever the caller wants back with the result (e.g. its request)
    expired: bool = False  # answered DEADLINE_EXCEEDED while its batch was still running

    def due(self) -> float:
        return min(self.deadline, self.queue_timeout)


@dataclass(slots=True)
class _Level:
    bound: int
    heap: list[tuple[float, int, Pending]] = field(default_factory=list)


class RequestQueue:
    """Levels 1..n (1 = highest priority) plus a trailing DELAY level."""

    def __init__(self, bounds: list[int]) -> None:
        self._levels = [_Level(b) for b in bounds] + [_Level(1 << 62)]
        self._seq = 0
        self._arrivals: deque[Pending] = deque()  # arrival order, stale entries skipped lazily
        self.count = 0
        self.samples = 0

    def __len__(self) -> int:
        return self.count

    def full(self, level: int) -> bool:
        lv = self._levels[level - 1]
        return len(lv.heap) >= lv.bound

    def push(self, item: Pending) -> None:
        self._seq += 1
        item.seq = self._seq
        self._push(item, item.level - 1)
        arrivals = self._arrivals
        arrivals.append(item)
        # Entries of requests that left the queue are dropped from the front as they go (``oldest``), but a
        # scheduler that never asks for the oldest (every batch launched at once) would keep them all, inputs
        # and futures included: keep the deque within twice what is queued.
        if len(arrivals) > 2 * self.count + 64:
            while arrivals and not arrivals[0].queued:
                arrivals.popleft()
            if len(arrivals) > 2 * self.count + 64:
                self._arrivals = deque(p for p in arrivals if p.queued)

    def _push(self, item: Pending, index: int) -> None:
        heapq.heappush(self._levels[index].heap, (item.due(), item.seq, item))
        item.queued = True
        self.count += 1
        self.samples += item.samples

    def head(self) -> Pending | None:
        for lv in self._levels:
            if lv.heap:
                return lv.heap[0][2]
        return None

    def oldest(self) -> Pending | None:
        """The queued request that arrived first (the batching delay counts from it)."""
        arrivals = self._arrivals
        while arrivals and not arrivals[0].queued:
            arrivals.popleft()
        return arrivals[0] if arrivals else None

    def take(
        self, max_samples: int, max_requests: int, now: float, horizon: Callable[[int], float]
    ) -> tuple[list[Pending], list[Pending]]:
        """Pop one batch of same-key requests up to ``max_samples`` samples and ``max_requests`` requests.

        Returns (batch, expired). Expired: requests whose deadline passes before a batch of
        the would-be size finishes (``now + horizon(size)``), or whose REJECT queue timeout
        passed, and those whose future is already done (the caller cancelled).
        """
        batch: list[Pending] = []
        expired: list[Pending] = []
        aside: list[tuple[int, Pending]] = []
        key: tuple[Any, ...] | None = None
        total = 0
        scanned = 0
        last = len(self._levels) - 1
        for index, lv in enumerate(self._levels):
            heap = lv.heap
            while heap and total < max_samples and len(batch) < max_requests and scanned < 4 * max_samples + 16:
                item = self._pop(heap)
                scanned += 1
                if item.future.done():
                    expired.append(item)
                    continue
                if item.deadline < now + horizon(total + item.samples):
                    expired.append(item)
                    continue
                if item.queue_timeout <= now:
                    if not item.delay_on_timeout:
                        expired.append(item)
                        continue
                    if index != last:
                        item.queue_timeout = math.inf
                        aside.append((last, item))
                        continue
                if key is None:
                    key = item.key
                if item.key != key or total + item.samples > max_samples:
                    aside.append((index, item))
                    continue
                batch.append(item)
                total += item.samples
        for index, item in aside:
            self._push(item, index)
        return batch, expired

    def next_due(self) -> float:
        """The earliest deadline or queue-policy timeout of anything queued (inf when none)."""
        return min((lv.heap[0][0] for lv in self._levels if lv.heap), default=math.inf)

    def expire(self, now: float) -> list[Pending]:
        """Remove and return what is due by ``now`` (deadline passed, REJECT timeout passed) and what was
        cancelled at the head of a level; a DELAY timeout moves its request to the trailing level. Called when
        no instance is free to take from the queue, so that waiting requests are still answered on time."""
        out: list[Pending] = []
        last = len(self._levels) - 1
        for index, lv in enumerate(self._levels):
            heap = lv.heap
            while heap and (heap[0][0] <= now or heap[0][2].future.done()):
                item = self._pop(heap)
                if item.deadline > now and item.delay_on_timeout and not item.future.done():
                    item.queue_timeout = math.inf
                    self._push(item, last if index != last else index)
                    continue
                out.append(item)
        return out

    def discard_done(self) -> list[Pending]:
        """Remove and return every queued request whose future is already done (its caller cancelled), so
        that abandoned requests do not hold places in a bounded queue."""
        out: list[Pending] = []
        for lv in self._levels:
            keep = [entry for entry in lv.heap if not entry[2].future.done()]
            if len(keep) == len(lv.heap):
                continue
            out += [entry[2] for entry in lv.heap if entry[2].future.done()]
            heapq.heapify(keep)
            lv.heap = keep
        for item in out:
            self._forget(item)
        return out

    def _pop(self, heap: list[tuple[float, int, Pending]]) -> Pending:
        item = heapq.heappop(heap)[2]
        self._forget(item)
        return item

    def _forget(self, item: Pending) -> None:
        """The counts of a request that has left the heaps."""
        item.queued = False
        self.count -= 1
        self.samples -= item.samples

    def drain(self) -> list[Pending]:
        """Remove and return everything queued."""
        out = [entry[2] for lv in self._levels for entry in lv.heap]
        for lv in self._levels:
            lv.heap.clear()
        for item in out:
            item.queued = False
        self._arrivals.clear()
        self.count = self.samples = 0
        return out
