"""
:class:`ClusterExecutor`: a ``concurrent.futures.Executor`` whose jobs run
on a cwtx cluster.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.python.failure import Failure

from cwtx.client import reactor_thread
from cwtx.client.blocking import connect_blocking, settings, submit_in_reactor
from cwtx.client.chunks import ChunkRunner
from cwtx.client.client import JobOptions
from cwtx.client.connect import CONNECT_TIMEOUT, RECONNECT_TIMEOUT
from cwtx.client.serialize import FunctionDef, pickle_arguments, pickle_function
from cwtx.wire.peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT


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
        reactor = reactor_thread.reactor_thread()
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
        port: int | None = None,
        *,
        endpoint: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        **job_options: Any,
    ) -> None:
        self._options = JobOptions().replace(**job_options)
        connection = settings(
            connect_timeout, reconnect_timeout, heartbeat_interval, heartbeat_timeout
        )
        self._client = connect_blocking(host, port, endpoint, connection)
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
        reactor_thread.reactor_thread().callFromThread(self._start, future, options, fn, arguments)
        return future

    def _start(self, future: _JobFuture, options: JobOptions, fn: FunctionDef, args: bytes) -> None:
        """(reactor thread) hand the job to the client, unless cancelled already."""
        if future.done():
            return
        future._deferred = submit_in_reactor(self._client, options, fn, args, future._settle)

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
        reactor_thread.reactor_thread().callFromThread(self._client.close)

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
        _check_map_sizes(chunksize, buffersize)
        end_time = None if timeout is None else timeout + time.monotonic()
        total = _length(iterables)
        function, inputs = _map_inputs(fn, iterables, chunksize)

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
            from cwtx.client.progress import bar

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


def _check_map_sizes(chunksize: int, buffersize: int | None) -> None:
    if buffersize is not None and not isinstance(buffersize, int):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and buffersize < 1:
        raise ValueError("buffersize must be None or > 0")
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1.")


def _map_inputs(
    fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...], chunksize: int
) -> tuple[FunctionDef, Iterator[tuple[Any, ...]]]:
    """The pickled function map sends once, and the argument tuples of its jobs."""
    if chunksize == 1:
        return pickle_function(fn), zip(*iterables, strict=False)
    chunks = _batched(zip(*iterables, strict=False), chunksize)
    return pickle_function(ChunkRunner(fn)), ((chunk,) for chunk in chunks)


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
