"""The response cache: keys, LRU bound in bytes, time to live, per-version invalidation (no sockets)."""

from __future__ import annotations

import numpy as np

from infer.core.clock import ManualClock
from infer.dataplane.cache import ResponseCache, cache_key


def _x(v: float, n: int = 4) -> dict[str, np.ndarray]:
    return {"x": np.full((1, n), v, np.float32)}


def test_keys_depend_on_contents_shape_dtype_and_version() -> None:
    base = cache_key(1, _x(1.0))
    assert base == cache_key(1, _x(1.0))
    assert base != cache_key(1, _x(2.0))
    assert base != cache_key(1, _x(1.0, n=8))
    assert base != cache_key(1, {"x": np.full((1, 4), 1.0, np.float64)})
    assert base != cache_key(2, _x(1.0))
    words = {"t": np.array([[b"a", b"bc"]], dtype=object)}
    assert cache_key(1, words) != cache_key(1, {"t": np.array([[b"ab", b"c"]], dtype=object)})


def test_hit_miss_ttl_and_private_copies() -> None:
    clock = ManualClock()
    cache = ResponseCache(1 << 20, clock)
    key = cache_key(1, _x(1.0))
    assert cache.get(key) is None
    batch = np.arange(8, dtype=np.float32).reshape(2, 4)
    cache.put(key, 1, {"y": batch[:1]}, ttl_s=10)
    batch[:] = -1  # the batch buffer is reused: the cache kept its own copy
    hit = cache.get(key)
    assert hit is not None and hit["y"].tolist() == [[0, 1, 2, 3]]
    clock.advance(11)
    assert cache.get(key) is None and len(cache) == 0 and cache.bytes == 0


def test_bounded_in_bytes_least_recently_used_goes_first() -> None:
    cache = ResponseCache(3 * (20 + 4 * 1024 + 64), ManualClock())
    keys = [cache_key(1, _x(float(i))) for i in range(4)]
    for k in keys[:3]:
        cache.put(k, 1, {"y": np.zeros(1024, np.float32)}, ttl_s=60)
    assert cache.get(keys[0]) is not None  # keys[0] is now the most recently used
    cache.put(keys[3], 1, {"y": np.zeros(1024, np.float32)}, ttl_s=60)
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None and cache.get(keys[3]) is not None
    assert cache.bytes <= cache.max_bytes
    cache.put(cache_key(1, _x(9.0)), 1, {"y": np.zeros(10**6, np.float32)}, ttl_s=60)  # larger than the cache
    assert len(cache) == 3


def test_dropping_a_version_removes_only_its_entries() -> None:
    cache = ResponseCache(1 << 20, ManualClock())
    a, b = cache_key(1, _x(1.0)), cache_key(2, _x(1.0))
    cache.put(a, 1, {"y": np.zeros(4)}, ttl_s=60)
    cache.put(b, 2, {"y": np.zeros(4)}, ttl_s=60)
    cache.drop_version(1)
    assert cache.get(a) is None and cache.get(b) is not None
