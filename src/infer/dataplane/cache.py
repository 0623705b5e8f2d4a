"""The response cache: an LRU with a time to live, bounded in bytes, for models that enable it.

Keys hash the input tensors (names, datatypes, shapes, contents) together with the model version's
load serial, so a new or reloaded version never sees an old version's answers; a retiring version's
entries are dropped at once. Lookups and inserts happen on the event loop thread only.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from infer.core.clock import Clock, MonotonicClock

__all__ = ["ResponseCache", "cache_key"]

Array = npt.NDArray[np.generic]


def cache_key(serial: int, inputs: Mapping[str, Array]) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    h.update(serial.to_bytes(8, "little"))
    for name in sorted(inputs):
        arr = inputs[name]
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
        if arr.dtype == object:
            for item in arr.reshape(-1):
                b = item if isinstance(item, bytes) else str(item).encode()
                h.update(len(b).to_bytes(4, "little"))
                h.update(b)
        else:
            h.update(np.ascontiguousarray(arr).data)
    return h.digest()


@dataclass(slots=True)
class _Entry:
    serial: int
    outputs: dict[str, Array]
    size: int
    expires: float


class ResponseCache:
    def __init__(self, max_bytes: int, clock: Clock | None = None) -> None:
        self.max_bytes = max_bytes
        self._clock = clock or MonotonicClock()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> dict[str, Array] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock.now():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry.outputs

    def put(self, key: bytes, serial: int, outputs: Mapping[str, Array], ttl_s: float) -> None:
        """Keep a private copy of ``outputs`` (they may be views of a whole batch)."""
        copies = {n: np.array(a, copy=True) for n, a in outputs.items()}
        size = len(key) + sum(int(a.nbytes) for a in copies.values()) + 64 * len(copies)
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = _Entry(serial, copies, size, self._clock.now() + ttl_s)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    def drop_version(self, serial: int) -> None:
        for key in [k for k, e in self._entries.items() if e.serial == serial]:
            self._remove(key)

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size
