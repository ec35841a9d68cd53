"""
Logging what peers send, safely: their strings escaped, and lines about a
misbehaving peer rate-limited, so that no peer can fill the log (twistd
keeps every rotated file) or forge lines in it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


def debugging(log: Any) -> bool:
    """Whether a txaio logger emits debug events now: one attribute read,
    so a hot path skips building a debug event nobody will see (below its
    level txaio binds ``log.debug`` to a no-op, but the call and its
    arguments would still cost).  ``--log-level`` changes it at startup."""
    return log._log_level in _DEBUG_LEVELS  # type: ignore[no-any-return]


_DEBUG_LEVELS = frozenset({"debug", "trace"})


def printable(text: object, limit: int = 120) -> str:
    """A peer-supplied value made safe for one log line: control characters
    and escapes written out (``\\r``, ``\\x1b``), and cut to ``limit``."""
    escaped = str(text).encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


class RateLimit:
    """At most ``burst`` lines per key in each ``period`` seconds.

    ``allow(key)`` says whether to log now, and how many lines for that key
    were held back since the last one logged (so the next line can say so).
    """

    def __init__(
        self,
        period: float = 60.0,
        burst: int = 3,
        keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.period = period
        self.burst = burst
        self._clock = clock
        self._keys = keys
        self._windows: OrderedDict[object, list[float | int]] = OrderedDict()

    def allow(self, key: object) -> tuple[bool, int]:
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.period:
            held = int(window[2]) if window is not None else 0
            self._windows[key] = [now, 1, 0]
            self._windows.move_to_end(key)
            while len(self._windows) > self._keys:
                self._windows.popitem(last=False)
            return True, held
        if window[1] < self.burst:
            window[1] += 1
            held, window[2] = int(window[2]), 0
            return True, held
        window[2] += 1
        return False, 0
