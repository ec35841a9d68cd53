"""
The functions a worker was sent, bounded in bytes: the least recently used
beyond the bound are dropped, and the master is told (``DropFunctions``),
so that the next task naming one carries its code again.  Until the master
answers, a dropped function's code stays (tasks it had already queued may
name it without code); its answer comes after them.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Any

from twisted.internet.defer import Deferred

from cwtx._lru import SizedLRU
from cwtx.wire.names import function_size, per_command
from cwtx.wire.payload import Payload

#: Bytes of functions a worker keeps by default, and each slot's child
#: (``cw-worker --function-cache``).
DEFAULT_FUNCTION_CACHE = 32 * 1024 * 1024
#: A function as a worker keeps it: (environment, pickle).
Code = tuple[str, Payload]


class Functions:
    """What the supervisor knows of each function, by hash."""

    def __init__(
        self,
        limit: int,
        clock: Any,
        tell: Callable[[bytes], Deferred[Any]],
    ) -> None:
        """``tell(fns)`` says to the master which functions were dropped
        (hashes joined, at most MAX_FREE): a Deferred of its answer."""
        self._cache: SizedLRU[bytes, Code] = SizedLRU(limit)
        self._clock = clock
        self._tell = tell
        #: Dropped, until the master's answer: hash -> (its drop's number, code).
        self._dropping: dict[bytes, tuple[int, Code]] = {}
        self._to_tell: list[tuple[bytes, int]] = []
        self._numbers = count(1)

    @property
    def limit(self) -> int:
        return self._cache.limit

    @property
    def bytes(self) -> int:
        return self._cache.bytes

    def __len__(self) -> int:
        return len(self._cache)

    def learn(self, fn: bytes, env: str, code: Payload) -> None:
        """A task brought the function's code (checked against ``fn``)."""
        self._dropping.pop(fn, None)
        for old, value in self._cache.put(fn, (env, code), function_size(env, code.size)):
            number = next(self._numbers)
            self._dropping[old] = (number, value)
            if not self._to_tell:
                self._clock.callLater(0, self._send)
            self._to_tell.append((old, number))

    def get(self, fn: bytes) -> Code | None:
        """The function's environment and code, if this worker has them."""
        known = self._cache.get(fn)
        if known is None:
            dropping = self._dropping.get(fn)
            if dropping is not None:
                return dropping[1]
        return known

    def clear(self) -> None:
        """The master is gone: a new session sends every function again."""
        self._cache.clear()
        self._dropping.clear()
        self._to_tell = []

    def _send(self) -> None:
        told, self._to_tell = self._to_tell, []
        for chunk in per_command(told):
            d = self._tell(b"".join(fn for fn, _ in chunk))
            d.addCallbacks(lambda _, chunk=chunk: self._answered(chunk), lambda _: None)

    def _answered(self, told: list[tuple[bytes, int]]) -> None:
        for fn, number in told:
            dropping = self._dropping.get(fn)
            if dropping is not None and dropping[0] == number:
                del self._dropping[fn]
