"""A cache of values by key within a budget of bytes: the least recently used go first; a budget of 0 keeps
nothing. Not thread-safe: each user keeps it on one thread (the event loop, or a batcher's worker)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SizedCache(Generic[K, V]):
    """Values by key, each counted as `size(value)` bytes, within `max_bytes`."""

    def __init__(self, max_bytes: int, size: Callable[[V], int]) -> None:
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self._size = size
        self._values: OrderedDict[K, V] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K) -> V | None:
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Keep `value` (one larger than the whole budget is not kept), dropping the least recently used."""
        size = self._size(value)
        if size > self.max_bytes:
            return
        previous = self._values.pop(key, None)
        self.size_bytes += size - (self._size(previous) if previous is not None else 0)
        self._values[key] = value
        while self.size_bytes > self.max_bytes:
            _, dropped = self._values.popitem(last=False)
            self.size_bytes -= self._size(dropped)
