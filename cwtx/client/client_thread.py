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

from twisted.python.failure import Failure

from cwtx.client import reactor_thread
from cwtx.client.blocking import (
    check_not_exiting,
    connect_blocking,
    finish_at_exit,
    settings,
    submit_in_reactor,
)
from cwtx.client.client import Client, ForwardOutput, JobOptions, check_forward_output
from cwtx.client.connect import CONNECT_TIMEOUT, RECONNECT_TIMEOUT
from cwtx.client.options import check_share
from cwtx.client.refs import Ref, pickle_arguments
from cwtx.client.serialize import pickle_function
from cwtx.wire.peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT


def randid() -> int:
    """A random 128-bit job id, as the seed's ``cw.randid()``."""
    return random.getrandbits(128)


_STOP = object()


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
        self._results: queue.SimpleQueue[Any] = queue.SimpleQueue()
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
        reactor = reactor_thread.reactor_thread()
        reactor.callFromThread(
            submit_in_reactor,
            client,
            self._options,
            fn,
            arguments,
            lambda result: self._results.put((jobid, result)),
        )
        return jobid

    def put(self, obj: Any) -> Ref:
        """Pickle ``obj`` once, for any number of jobs: a :class:`cwtx.Ref`
        to pass them as an argument, which each gets as the object (see
        ClusterExecutor.put)."""
        client = self._client
        if client is None:
            raise RuntimeError("call start() (or use `with`) before put()")
        return client.put(obj)

    @property
    def pending(self) -> int:
        """Jobs submitted whose callback has not run yet."""
        with self._cond:
            return self._active

    def _deliver(self) -> None:
        while True:
            item = self._results.get()
            if item is _STOP:
                return
            jobid, result = item
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
                self._cond.notify_all()

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
            reactor_thread.blocking(client.close, timeout=30)
        if self._thread is not None:
            self._results.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None

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
