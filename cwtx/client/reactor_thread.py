"""
One reactor thread per process, for blocking programs.

crochet does this job well, but cwtx needs only two small pieces (start the
reactor once in a daemon thread, run a call there and wait for its result
with a timeout), and crochet's own reactor setup and its logging hooks would
become part of every cwtx user's process; so we keep the small equivalent.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.python.failure import Failure

from cwtx.client.handoff import Handoff

T = TypeVar("T")

_lock = threading.Lock()
_thread: threading.Thread | None = None
_handoff: Handoff | None = None


def reactor_thread() -> Any:
    """The global reactor, running in a daemon thread started on first use."""
    global _thread, _handoff
    from twisted.internet import reactor

    with _lock:
        if _thread is None:
            if reactor.running:
                raise RuntimeError(
                    "the Twisted reactor already runs in this process: use the "
                    "Deferred API (cwtx.connect) instead of a blocking client"
                )
            _thread = threading.Thread(
                target=reactor.run,
                kwargs={"installSignalHandlers": False},
                name="cwtx-reactor",
                daemon=True,
            )
            _handoff = Handoff(reactor)
            _thread.start()
            atexit.register(_stop_reactor)
    return reactor


def call_soon(f: Callable[..., Any], *args: Any) -> None:
    """Run ``f(*args)`` in the reactor thread, after every call made
    through here before it (in the reactor thread's order, not the
    caller's: the caller does not wait).  Many calls cost one wake-up of
    the reactor: the blocking clients hand every job over this way."""
    handoff = _handoff
    if handoff is None:
        reactor_thread()
        handoff = _handoff
        assert handoff is not None
    handoff(f, *args)


def in_reactor_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def _stop_reactor() -> None:
    from twisted.internet import reactor

    if _thread is not None and _thread.is_alive():
        reactor.callFromThread(reactor.stop)
        _thread.join(timeout=5)


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
    """Run ``fn`` in the reactor thread; a Future of its (awaited) result."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        d: Deferred[Any] = maybeDeferred(fn, *args, **kwargs)
        d.addCallback(lambda r: ensureDeferred(r) if inspect.iscoroutine(r) else r)

        def done(result: Any) -> None:
            if isinstance(result, Failure):
                future.set_exception(result.value)
            else:
                future.set_result(result)

        d.addBoth(done)

    call_soon(run)
    return future


def blocking(
    fn: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any
) -> Any:
    """Run ``fn`` in the reactor thread and wait (at most ``timeout``) for it."""
    if in_reactor_thread():
        raise RuntimeError("a blocking cwtx call was made from the reactor thread")
    return call(fn, *args, **kwargs).result(timeout)
