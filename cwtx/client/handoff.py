"""
Calls from other threads, run in the reactor thread in batches.

``reactor.callFromThread`` wakes the reactor (a write to its waker pipe,
and a context switch) for every call: a program that submits 100,000 jobs
from its own thread would pay that 100,000 times.  A :class:`Handoff`
queues the calls and wakes the reactor only when no wake-up is pending
already; the reactor thread then runs every queued call, in the order they
were made, a bounded number per turn of its loop (so that the network is
served between them).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import txaio

txaio.use_twisted()
log = txaio.make_logger()

#: Calls run per turn of the reactor loop; the rest on the next turn.
PER_TURN = 1_000


class Handoff:
    """Queued calls for the reactor thread, with at most one wake-up pending."""

    def __init__(self, reactor: Any, per_turn: int = PER_TURN) -> None:
        self._reactor = reactor
        self._per_turn = per_turn
        self._lock = threading.Lock()
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        #: A run is due: the reactor was woken, or the last run left calls.
        self._due = False
        #: Wake-ups asked of the reactor (callFromThread), for tests and profiles.
        self.wakeups = 0

    def __len__(self) -> int:
        return len(self._calls)

    def __call__(self, f: Callable[..., Any], *args: Any) -> None:
        """Run ``f(*args)`` in the reactor thread, after every call queued before it."""
        with self._lock:
            self._calls.append((f, args))
            if self._due:
                return
            self._due = True
            self.wakeups += 1
        self._reactor.callFromThread(self._run)

    def _run(self) -> None:
        """(reactor thread) run the queued calls, at most ``per_turn`` of them."""
        with self._lock:
            n = min(len(self._calls), self._per_turn)
            calls = [self._calls.popleft() for _ in range(n)]
            more = self._due = bool(self._calls)
        if more:
            self._reactor.callLater(0, self._run)
        for f, args in calls:
            try:
                f(*args)
            except Exception:
                # As callFromThread does: one failing call must not lose the others.
                log.failure("cwtx: a call handed to the reactor thread failed")
