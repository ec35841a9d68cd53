"""
A cache bounded in bytes, least recently used first out: what the master,
each worker and each slot child keep of the functions they were sent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class SizedLRU(Generic[K, V]):
    """Entries with a size each, at most ``limit`` bytes of them, except
    that the one put last always stays (a single entry over the limit is
    kept until the next one comes)."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"a cache limit must be 0 or more, not {limit}")
        self.limit = limit
        self.bytes = 0
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def items(self) -> Iterator[tuple[K, V]]:
        """Every entry, oldest first (without making any more recent)."""
        return ((key, entry[0]) for key, entry in self._entries.items())

    def put(self, key: K, value: V, size: int) -> list[tuple[K, V]]:
        """Keep ``value`` under ``key`` as the most recent; the entries
        that no longer fit, oldest first."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (value, size)
        self.bytes += size
        evicted: list[tuple[K, V]] = []
        while self.bytes > self.limit and len(self._entries) > 1:
            oldest, (value, size) = self._entries.popitem(last=False)
            self.bytes -= size
            evicted.append((oldest, value))
        return evicted

    def get(self, key: K) -> V | None:
        """The value, now the most recent; None if not kept."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self.bytes -= entry[1]
        return entry[0]

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
