"""
Blocking clients for ordinary scripts: :class:`ClientThread` (the seed's
callback API) and :class:`ClusterExecutor` (``concurrent.futures``).

Both drive a Deferred :class:`~cwtx.Client` in cwtx's one reactor thread per
process (see ``_reactor_thread``).  They pickle in the calling thread, so an
unpicklable function or argument raises right there, and hand only bytes to
the reactor thread.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.python.failure import Failure

from . import _reactor_thread
from ._client import CONNECT_TIMEOUT, PORT, RECONNECT_TIMEOUT, Client, JobOptions, connect
from ._discovery import master_address
from ._peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT
from ._serialize import FunctionDef, pickle_arguments, pickle_function


def randid() -> int:
    """A random 128-bit job id, as the seed's ``cw.randid()``."""
    return random.getrandbits(128)


def _connect_blocking(
    host: str | None, port: int, endpoint: str | None, settings: dict[str, float]
) -> Client:
    """Connect from a blocking caller; ConnectionError after connect_timeout."""
    if endpoint is None:
        host, port = master_address(host, port)
    return _reactor_thread.blocking(
        lambda: connect(host, port, endpoint=endpoint, **settings),
        timeout=settings["connect_timeout"] + 5,
    )


def _settings(
    connect_timeout: float,
    reconnect_timeout: float,
    heartbeat_interval: float,
    heartbeat_timeout: float,
) -> dict[str, float]:
    return {
        "connect_timeout": connect_timeout,
        "reconnect_timeout": reconnect_timeout,
        "heartbeat_interval": heartbeat_interval,
        "heartbeat_timeout": heartbeat_timeout,
    }


def _submit_in_reactor(
    client: Client,
    options: JobOptions,
    fn: FunctionDef,
    args: bytes,
    on_done: Callable[[Any], None],
) -> Any:
    """(reactor thread) submit, and call ``on_done(result or Failure)``."""
    try:
        d = client.submit_pickled(options, fn, args)
    except Exception:
        on_done(Failure())
        return None
    d.addBoth(on_done)
    return d


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
    """

    def __init__(
        self,
        callback: Callable[[Any, Any], Any],
        host: str | None = None,
        port: int = PORT,
        *,
        endpoint: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        **job_options: Any,
    ) -> None:
        self.callback = callback
        self.host, self.port, self._endpoint = host, port, endpoint
        self._settings = _settings(
            connect_timeout, reconnect_timeout, heartbeat_interval, heartbeat_timeout
        )
        self._options = JobOptions().replace(**job_options)
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
        self._client = _connect_blocking(self.host, self.port, self._endpoint, self._settings)
        self._thread = threading.Thread(
            target=self._deliver, name="cwtx-client-callbacks", daemon=True
        )
        self._thread.start()

    def submit(self, jobid: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``func(*args, **kwargs)`` on a worker; ``callback(jobid, result)`` later."""
        client = self._client
        if client is None:
            raise RuntimeError("call start() (or use `with`) before submit()")
        fn, arguments = pickle_function(func), pickle_arguments(args, kwargs)
        with self._cond:
            self._active += 1
        reactor = _reactor_thread.reactor_thread()
        reactor.callFromThread(
            _submit_in_reactor,
            client,
            self._options,
            fn,
            arguments,
            lambda result: self._results.put((jobid, result)),
        )
        return jobid

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
            _reactor_thread.blocking(client.close, timeout=30)
        if self._thread is not None:
            self._results.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None

    def __enter__(self) -> ClientThread:
        self.start()
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        try:
            if exc_type is None:
                self.wait()
        finally:
            self.stop()


class _JobFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """A Future whose cancel() also cancels the job at the master.

    It stays pending until the job ends, so cancel() works on a running job
    too: the job's worker kills it.  (concurrent.futures cannot cancel a
    running Future; cwtx can, so its Futures never report running().)
    """

    _deferred: Any = None
    _submitted = False

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        reactor = _reactor_thread.reactor_thread()
        reactor.callFromThread(self._cancel_job)
        return True

    def _cancel_job(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()

    def _settle(self, result: Any) -> None:
        """(reactor thread) the job ended."""
        self._deferred = None
        if self.done():
            return
        try:
            if isinstance(result, Failure):
                self.set_exception(result.value)
            else:
                self.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled from another thread just now


class ClusterExecutor(concurrent.futures.Executor):
    """
    A ``concurrent.futures.Executor`` whose jobs run on a cwtx cluster.

    ``submit``, ``map`` (with ``timeout``, ``chunksize`` and ``buffersize``
    as in Python 3.14), ``shutdown(wait, cancel_futures)``, and use as a
    context manager.  ``options(...)`` gives a view that submits with job
    options (timeout, priority, max_retries, resources).
    """

    def __init__(
        self,
        host: str | None = None,
        port: int = PORT,
        *,
        endpoint: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        **job_options: Any,
    ) -> None:
        self._options = JobOptions().replace(**job_options)
        settings = _settings(
            connect_timeout, reconnect_timeout, heartbeat_interval, heartbeat_timeout
        )
        self._client = _connect_blocking(host, port, endpoint, settings)
        self._lock = threading.Lock()
        self._pending: set[_JobFuture] = set()
        self._idle = threading.Condition(self._lock)
        self._shutdown = False
        self._closed = False

    def options(self, **options: Any) -> _ExecutorView:
        """A view of this executor whose submit and map apply ``options``."""
        return _ExecutorView(self, self._options.replace(**options))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> _JobFuture:
        return self._submit(self._options, pickle_function(fn), pickle_arguments(args, kwargs))

    def _submit(self, options: JobOptions, fn: FunctionDef, arguments: bytes) -> _JobFuture:
        future = _JobFuture()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.add(future)
        future.add_done_callback(self._forget)
        _reactor_thread.reactor_thread().callFromThread(self._start, future, options, fn, arguments)
        return future

    def _start(self, future: _JobFuture, options: JobOptions, fn: FunctionDef, args: bytes) -> None:
        """(reactor thread) hand the job to the client, unless cancelled already."""
        if future.done():
            return
        future._deferred = _submit_in_reactor(self._client, options, fn, args, future._settle)

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)  # type: ignore[arg-type]
            if not self._pending:
                self._idle.notify_all()
                close = self._shutdown and not self._closed
                self._closed = self._closed or close
            else:
                close = False
        if close:
            self._close()

    def _close(self) -> None:
        _reactor_thread.reactor_thread().callFromThread(self._client.close)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        progress: bool = False,
    ) -> Iterator[Any]:
        return self._map(self._options, fn, iterables, timeout, chunksize, buffersize, progress)

    def _map(
        self,
        options: JobOptions,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        timeout: float | None,
        chunksize: int,
        buffersize: int | None,
        progress: bool,
    ) -> Iterator[Any]:
        """Executor.map as in Python 3.14, sending ``fn`` pickled once.

        With ``chunksize`` > 1 each job runs ``fn`` over that many items (as
        ProcessPoolExecutor does) and ``buffersize`` counts chunks.
        """
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else timeout + time.monotonic()
        total = _length(iterables)
        if chunksize == 1:
            function = pickle_function(fn)
            inputs: Iterator[Any] = zip(*iterables, strict=False)
        else:
            function = pickle_function(_ChunkRunner(fn))
            inputs = ((chunk,) for chunk in _batched(zip(*iterables, strict=False), chunksize))

        def submit(args: tuple[Any, ...]) -> _JobFuture:
            return self._submit(options, function, pickle_arguments(args, {}))

        if buffersize:
            fs = collections.deque(submit(a) for a in itertools.islice(inputs, buffersize))
        else:
            fs = collections.deque(submit(a) for a in inputs)

        def results() -> Iterator[Any]:
            try:
                fs.reverse()
                while fs:
                    if buffersize:
                        more = next(inputs, None)
                        if more is not None:
                            fs.appendleft(submit(more))
                    remaining = None if end_time is None else end_time - time.monotonic()
                    value = _result_or_cancel(fs.pop(), remaining)
                    if chunksize == 1:
                        yield value
                    else:
                        yield from value
            finally:
                for future in fs:
                    future.cancel()

        iterator = results()
        if progress:
            from ._progress import bar

            iterator = bar(iterator, total=total)
        return iterator

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new jobs; with ``cancel_futures`` cancel those not ended; with
        ``wait`` block until every job has ended.  The connection closes
        once the last job ends."""
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for future in pending:
                future.cancel()
        with self._lock:
            close = not self._pending and not self._closed
            self._closed = self._closed or close
        if close:
            self._close()
        if wait:
            with self._idle:
                while self._pending:
                    self._idle.wait()


class _ExecutorView:
    """``executor.options(...)``: submit and map with these job options."""

    def __init__(self, executor: ClusterExecutor, options: JobOptions) -> None:
        self._executor = executor
        self._options = options

    def options(self, **options: Any) -> _ExecutorView:
        return _ExecutorView(self._executor, self._options.replace(**options))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> _JobFuture:
        return self._executor._submit(
            self._options, pickle_function(fn), pickle_arguments(args, kwargs)
        )

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        progress: bool = False,
    ) -> Iterator[Any]:
        return self._executor._map(
            self._options, fn, iterables, timeout, chunksize, buffersize, progress
        )


class _ChunkRunner:
    """Runs a function over a chunk of argument tuples (map's chunksize)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, chunk: tuple[tuple[Any, ...], ...]) -> list[Any]:
        return [self.fn(*args) for args in chunk]


def _batched(iterable: Iterable[Any], n: int) -> Iterator[tuple[Any, ...]]:
    """itertools.batched, which Python 3.11 lacks."""
    it = iter(iterable)
    while chunk := tuple(itertools.islice(it, n)):
        yield chunk


def _length(iterables: tuple[Iterable[Any], ...]) -> int | None:
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None


def _result_or_cancel(future: concurrent.futures.Future[Any], timeout: float | None) -> Any:
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        del future
