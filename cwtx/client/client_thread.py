"""
The seed's blocking client, :class:`ClientThread`: ``submit(jobid, func,
*args)`` and a ``callback(jobid, result)`` for each job that succeeds.
"""

from __future__ import annotations

import queue
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from cwtx.client import reactor_thread
from cwtx.client.blocking import (
    check_not_exiting,
    connect_blocking,
    finish_at_exit,
    settings,
)
from cwtx.client.client import Client, ForwardOutput, JobOptions, check_forward_output
from cwtx.client.connect import CONNECT_TIMEOUT, RECONNECT_TIMEOUT
from cwtx.client.options import check_share
from cwtx.client.refs import Arguments, Ref, pickle_arguments
from cwtx.client.serialize import FunctionDef, pickle_function
from cwtx.wire.peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT


def randid() -> int:
    """A random 128-bit job id, as the seed's ``cw.randid()``."""
    return random.getrandbits(128)


_STOP = object()


class _Job:
    """A ClientThread job, as the client's sink for it (reactor thread)."""

    __slots__ = ("jobid", "owner")

    def __init__(self, jobid: Any, owner: ClientThread) -> None:
        self.jobid = jobid
        self.owner = owner

    def job_started(self) -> None:
        pass

    def job_ended(self, result: Any) -> None:
        self.owner._ended(self.jobid, result)


class ClientThread:
    """
    The seed's blocking client: ``submit(jobid, func, *args, **kwargs)`` and
    a ``callback(jobid, result)`` for each job that succeeds.

    The callback runs in this ClientThread's own callback thread, one call at
    a time, in the order jobs end: never in the caller's thread, and never in
    the reactor thread, so a slow callback delays other callbacks but not the
    network.  ``wait()`` blocks until every submitted job has ended, then
    raises the first job exception (or callback exception) in the caller.
    ``name`` names this client at the master, ``share`` is its weight in
    the fair share of slots; ``forward_output`` True (or a callback)
    forwards what every job prints.  At interpreter exit, jobs not ended still
    end and their callbacks run (an error is printed, not lost).
    """

    def __init__(
        self,
        callback: Callable[[Any, Any], Any],
        host: str | None = None,
        port: int | None = None,
        *,
        endpoint: str | None = None,
        name: str | None = None,
        share: float = 1.0,
        forward_output: ForwardOutput = False,
        connect_timeout: float = CONNECT_TIMEOUT,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        secret_file: str | None = None,
        **job_options: Any,
    ) -> None:
        self.callback = callback
        self.host, self.port, self._endpoint = host, port, endpoint
        self.name, self.share = name, check_share(share)
        self.forward_output = forward_output
        check_forward_output(forward_output)
        self._settings = settings(
            connect_timeout, reconnect_timeout, heartbeat_interval, heartbeat_timeout, secret_file
        )
        self._options = JobOptions().replace(**job_options)
        if forward_output:  # (a job's own option overrides it)
            self._options = self._options.replace(forward_output=True)
        self._client: Client | None = None
        #: Lists of (jobid, result or Failure) for the callback thread, or _STOP.
        self._results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: Results of this turn of the reactor loop, handed over together.
        self._ended_now: list[tuple[Any, Any]] = []
        self._cond = threading.Condition()
        self._active = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Connect to the master (ConnectionError after ``connect_timeout``)."""
        if self._client is not None:
            raise RuntimeError("this ClientThread is already started")
        self._client = connect_blocking(
            self.host,
            self.port,
            self._endpoint,
            self._settings,
            self.name,
            self.share,
            self.forward_output,
        )
        self._thread = threading.Thread(
            target=self._deliver, name="cwtx-client-callbacks", daemon=True
        )
        self._thread.start()
        finish_at_exit(self)

    def submit(self, jobid: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``func(*args, **kwargs)`` on a worker; ``callback(jobid, result)`` later."""
        client = self._client
        if client is None:
            raise RuntimeError("call start() (or use `with`) before submit()")
        check_not_exiting()
        fn, arguments = pickle_function(func), pickle_arguments(args, kwargs)
        client.refs.check(arguments.refs)
        with self._cond:
            self._active += 1
        reactor_thread.call_soon(self._start, client, _Job(jobid, self), fn, arguments)
        return jobid

    def put(self, obj: Any) -> Ref:
        """Pickle ``obj`` once, for any number of jobs: a :class:`cwtx.Ref`
        to pass them as an argument, which each gets as the object (see
        ClusterExecutor.put)."""
        client = self._client
        if client is None:
            raise RuntimeError("call start() (or use `with`) before put()")
        return client.put(obj)

    def _start(self, client: Client, job: _Job, fn: FunctionDef, arguments: Arguments) -> None:
        """(reactor thread) hand the job to the client."""
        try:
            client.submit_to(job, self._options, fn, arguments)
        except Exception:
            job.job_ended(Failure())  # the client was closed

    def _ended(self, jobid: Any, result: Any) -> None:
        """(reactor thread) a job ended: its callback runs in the callback
        thread, woken once for the jobs that end in one turn of the loop."""
        if not self._ended_now:
            reactor_thread.reactor_thread().callLater(0, self._hand_over)
        self._ended_now.append((jobid, result))

    def _hand_over(self) -> None:
        ended, self._ended_now = self._ended_now, []
        if ended:
            self._results.put(ended)

    @property
    def pending(self) -> int:
        """Jobs submitted whose callback has not run yet."""
        with self._cond:
            return self._active

    def _deliver(self) -> None:
        while True:
            ended = self._results.get()
            if ended is _STOP:
                return
            ended.reverse()
            while ended:  # (popped: no result outlives its callback here)
                self._deliver_one(*ended.pop())

    def _deliver_one(self, jobid: Any, result: Any) -> None:
        error: BaseException | None = None
        if isinstance(result, Failure):
            error = result.value
        else:
            try:
                self.callback(jobid, result)
            except BaseException as e:  # reported by wait(), not lost
                error = e
        with self._cond:
            if error is not None and self._error is None:
                self._error = error
            self._active -= 1
            if not self._active:
                self._cond.notify_all()  # (only wait() waits, for none left)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every submitted job has ended; raise the first error.

        A job that fails does not make wait() forget the jobs still running:
        it returns only when all have ended (or raises TimeoutError).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._active:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{self._active} cwtx jobs still running")
                self._cond.wait(remaining)
            error, self._error = self._error, None
        if error is not None:
            raise error

    def stop(self) -> None:
        """Disconnect; jobs not yet ended fail (and wait() will raise)."""
        client, self._client = self._client, None
        if client is not None:
            reactor_thread.blocking(self._close, client, timeout=30)
        if self._thread is not None:
            self._results.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None

    def _close(self, client: Client) -> Deferred[None]:
        """(reactor thread) close the client; the jobs it failed reach the
        callback thread before stop() stops it."""
        return client.close().addCallback(lambda _: self._hand_over())

    # -- the interpreter exits (cwtx.client.blocking) --------------------------------------

    def finish_at_exit(self) -> None:
        if self._client is None:
            return
        try:
            self.wait()
        except Exception:
            print("cwtx: a ClientThread job or callback failed at exit:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)

    def __enter__(self) -> ClientThread:
        self.start()
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        try:
            if exc_type is None:
                self.wait()
        finally:
            self.stop()
