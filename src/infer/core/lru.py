"""A bounded map that forgets its oldest entries first: request ids remembered for later reports."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["BoundedLRU"]

V = TypeVar("V")


class BoundedLRU(Generic[V]):
    """At most ``capacity`` values by key (a request id): a put refreshes its key, the oldest is forgotten first."""

    __slots__ = ("_capacity", "_items")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity >= 1")
        self._capacity = capacity
        self._items: OrderedDict[str, V] = OrderedDict()

    def put(self, request_id: str, value: V) -> None:
        items = self._items
        items.pop(request_id, None)
        items[request_id] = value
        if len(items) > self._capacity:
            items.popitem(last=False)

    def get(self, request_id: str) -> V | None:
        return self._items.get(request_id)

    def pop(self, request_id: str) -> V | None:
        return self._items.pop(request_id, None)

    def __len__(self) -> int:
        return len(self._items)
