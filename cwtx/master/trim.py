"""
Give what a departed client held back to the system.

A client's session at the master is a web of cycles (its connection, its
responders, their batch senders, the session's callbacks), so it is freed
only by a full garbage collection, which CPython runs seldom in a master
that mostly frees what it allocates (jobs end).  And what Python frees,
glibc's malloc keeps in its heap for later: a master that ran 100 clients
one after another stayed hundreds of MiB above where it started.  So once
a client has left, the master collects and then asks glibc to hand its
free pages back (``malloc_trim``), at most every MIN_INTERVAL seconds, and
less often if that costs more than MAX_SHARE of the time.
"""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Callable
from typing import Any

import txaio
from twisted.internet.interfaces import IReactorTime

txaio.use_twisted()
log = txaio.make_logger()

#: Seconds between two trims at least.
MIN_INTERVAL = 5.0
#: Of the time, what trimming may take at most: a trim that took T seconds
#: waits T / MAX_SHARE before the next.
MAX_SHARE = 0.01


def malloc_trim() -> Callable[[], Any] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none
    (musl, macOS, Windows): there it is not needed, or not available."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # this process's own C library
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class Trimmer:
    """Collects garbage and trims the heap soon after :meth:`soon` is
    called (a client left), on the reactor, rate-limited."""

    def __init__(
        self,
        clock: IReactorTime,
        release: Callable[[], Any] | None = None,
        collect: Callable[[], Any] = gc.collect,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.clock = clock
        self._release = release if release is not None else malloc_trim()
        self._collect = collect
        self._timer = timer
        self._call: Any = None
        self._next = 0.0  # clock time before which it does not run again
        #: Seconds the last trim took, and how many have run.
        self.last_cost = 0.0
        self.runs = 0

    def soon(self) -> None:
        """Much was freed: collect and trim now, or once the last trim is
        far enough behind."""
        if self._call is not None:
            return
        delay = max(0.0, self._next - self.clock.seconds())
        self._call = self.clock.callLater(delay, self._run)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _run(self) -> None:
        self._call = None
        started = self._timer()
        collected = self._collect()
        if self._release is not None:
            self._release()
        self.last_cost = cost = self._timer() - started
        self.runs += 1
        self._next = self.clock.seconds() + max(MIN_INTERVAL, cost / MAX_SHARE)
        log.debug(
            "memory trimmed: {collected} objects collected, heap trimmed, in {ms:.1f} ms",
            collected=collected,
            ms=cost * 1000,
        )
