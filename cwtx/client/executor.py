"""
:class:`ClusterExecutor`: a ``concurrent.futures.Executor`` whose jobs run
on a cwtx cluster.

Its Futures follow the stdlib's state machine: pending while the job is
queued, running once the master reports it started (``JobsStarted``),
then finished.  ``cancel()`` stops only a job that has not started, as the
stdlib's does; ``kill()`` is cwtx's own, for a running job too.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures._base import CANCELLED, PENDING
from typing import Any, Protocol

from twisted.python.failure import Failure

from cwtx.client import dependencies, reactor_thread
from cwtx.client.blocking import (
    check_not_exiting,
    connect_blocking,
    finish_at_exit,
    settings,
)
from cwtx.client.chunks import ChunkRunner
from cwtx.client.client import ForwardOutput, JobOptions, check_forward_output, job_options
from cwtx.client.connect import CONNECT_TIMEOUT, RECONNECT_TIMEOUT
from cwtx.client.options import check_share
from cwtx.client.refs import Arguments, Ref
from cwtx.client.serialize import FunctionDef, pickle_function
from cwtx.wire.peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT

Future = concurrent.futures.Future


class _Owner(Protocol):
    """What a _JobFuture asks of its executor."""

    def _forget(self, future: _JobFuture) -> None:
        """The future is done and its done-callbacks ran."""

    def _cancel_job(self, job: int) -> None:
        """(reactor thread) cancel the job at the client (and the master)."""


class _JobFuture(Future):  # type: ignore[type-arg]
    """A Future for one cwtx job, and the client's sink for its job.

    ``running()`` once the master reports the job started; ``cancel()`` then
    returns False, as the stdlib's does.  ``kill()`` stops the job whatever
    its state.  Its owner's ``_forget(future)`` runs once the future is done
    and its done-callbacks ran (the executor's bookkeeping:
    shutdown(wait=True) and the interpreter's exit wait for callbacks too).
    """

    def __init__(self, owner: _Owner) -> None:
        super().__init__()
        # The stdlib's Condition keeps its waiters in a deque, whose first
        # block alone is 624 bytes: most of a Future's memory, for a list
        # that is nearly always empty.  A list serves every use Condition
        # makes of it (append, remove, [0], len, clear): 200,000 pending
        # futures are then 130 MiB smaller.
        self._condition._waiters = []  # type: ignore[attr-defined]
        self._owner = owner
        #: The job's id in the client while it runs there (reactor thread).
        self._job: int | None = None

    def cancel(self) -> bool:
        """Cancel the job if it has not started: a queued job is dropped at
        the master and never runs.  False once it runs (see :meth:`kill`)."""
        if not super().cancel():
            return False
        self._notify_cancelled()
        reactor_thread.call_soon(self._drop_job)
        self._owner._forget(self)
        return True

    def kill(self) -> bool:
        """Stop the job, running or not: cwtx's addition to the stdlib API.

        A job that has not started is cancelled (``cancelled()`` is True);
        a running one is killed on its worker and this future fails with
        :class:`cwtx.JobCancelled` (the stdlib has no way from running to
        cancelled).  False if the job had already ended.
        """
        if self.cancel():
            return True
        if self.done():
            return False
        if reactor_thread.in_reactor_thread():
            return self._kill_job()
        return bool(reactor_thread.blocking(self._kill_job, timeout=30))

    def _kill_job(self) -> bool:
        """(reactor thread) cancel the running job at the master, which kills it."""
        job = self._job
        if self.done() or job is None:
            return False
        self._owner._cancel_job(job)  # the client ends it with JobCancelled: job_ended
        return True

    def _drop_job(self) -> None:
        """(reactor thread) after cancel(): drop the job at the master."""
        job = self._job
        if job is not None:
            self._owner._cancel_job(job)

    def _notify_cancelled(self) -> None:
        """Wake wait() and as_completed() on this cancelled future.

        The stdlib leaves that to the executor, through
        set_running_or_notify_cancel(), which must run exactly once."""
        with self._condition:
            if self._state == CANCELLED:
                self.set_running_or_notify_cancel()

    def job_started(self) -> None:
        """(reactor thread) the master reports the job started on a worker."""
        with self._condition:
            if self._state not in (PENDING, CANCELLED):
                return
            running = self.set_running_or_notify_cancel()
        if not running:
            self._drop_job()  # cancelled just now: the master kills it

    def job_ended(self, result: Any) -> None:
        """(reactor thread) the job ended (or never could be sent):
        its result, or a Failure."""
        self._job = None
        try:
            if isinstance(result, Failure):
                self.set_exception(result.value)
            else:
                self.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled (from another thread, perhaps just now)
        del result
        self._owner._forget(self)


dependencies.refuse_to_pickle(_JobFuture)


class ClusterExecutor(concurrent.futures.Executor):
    """
    A ``concurrent.futures.Executor`` whose jobs run on a cwtx cluster.

    ``submit``, ``map`` (with ``timeout``, ``chunksize`` and ``buffersize``
    as in Python 3.14), ``shutdown(wait, cancel_futures)``, and use as a
    context manager.  ``options(...)`` gives a view that submits with job
    options (timeout, priority, max_retries, resources).  ``name`` names
    this client at the master (status, ``--priority-clients``); ``share``
    is its weight in the master's fair share of slots; ``forward_output``
    True (or a callback) forwards what every job prints.  docs/clients.md
    states the contract, and where it differs from the stdlib.
    """

    def __init__(
        self,
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
        self._options = JobOptions().replace(**job_options)
        check_share(share)
        check_forward_output(forward_output)
        if forward_output:  # (a job's own option overrides it)
            self._options = self._options.replace(forward_output=True)
        connection = settings(
            connect_timeout, reconnect_timeout, heartbeat_interval, heartbeat_timeout, secret_file
        )
        self._client = connect_blocking(
            host, port, endpoint, connection, name, share, forward_output
        )
        self._lock = threading.Lock()
        #: Futures not done, in submission order (a dict as an ordered set).
        self._pending: dict[_JobFuture, None] = {}
        self._idle = threading.Condition(self._lock)
        self._shutdown = False
        self._closed = False
        finish_at_exit(self)

    def options(self, **options: Any) -> _ExecutorView:
        """A view of this executor whose submit and map apply ``options``."""
        return _ExecutorView(self, job_options(self._options, options))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> _JobFuture:
        """Run ``fn(*args, **kwargs)`` on a worker; a Future of its result.

        A Future among the arguments (or directly in a list, tuple or dict
        argument) is a dependency: the job is sent once it is done, with
        its result in its place (docs/clients.md, Dependencies).  A Ref
        (from :meth:`put`) anywhere among them arrives as its object.
        """
        return self._submit(self._options, pickle_function(fn), args, kwargs)

    def put(self, obj: Any) -> Ref:
        """Pickle ``obj`` once, for any number of jobs: a :class:`cwtx.Ref`
        to pass them as an argument, which each gets as the object.

        Returns at once (an object that does not pickle raises here); the
        data goes with the first job that names it, once per connection and
        worker, and is freed once the Ref is dropped and the jobs that name
        it have ended (docs/clients.md, Reused data).
        """
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot put after shutdown")
        return self._client.put(obj)

    def _submit(
        self,
        options: JobOptions,
        fn: FunctionDef,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> _JobFuture:
        waits_for = dependencies.find(args, kwargs, Future)
        if waits_for:
            dependencies.check_picklable(args, kwargs, Future)
            future = self._new_future()
            reactor_thread.call_soon(self._hold, future, options, fn, args, kwargs, waits_for)
            return future
        arguments = dependencies.pickle_job(args, kwargs)
        self._client.refs.check(arguments.refs)
        future = self._new_future()
        reactor_thread.call_soon(self._start, future, options, fn, arguments)
        return future

    def _new_future(self) -> _JobFuture:
        check_not_exiting()
        future = _JobFuture(self)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending[future] = None
        return future

    def _start(
        self, future: _JobFuture, options: JobOptions, fn: FunctionDef, args: Arguments
    ) -> None:
        """(reactor thread) hand the job to the client, unless cancelled already."""
        if future.done():
            return
        try:
            future._job = self._client.submit_to(future, options, fn, args)
        except Exception:
            future.job_ended(Failure())  # the client was closed

    def _cancel_job(self, job: int) -> None:
        self._client.cancel_job(job)

    def _hold(
        self,
        future: _JobFuture,
        options: JobOptions,
        fn: FunctionDef,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        waits_for: list[Future[Any]],
    ) -> None:
        """(reactor thread) submit the job once its dependencies are done."""

        def ready(values: dict[int, Any]) -> None:
            if future.done():
                return  # cancelled while it waited
            try:
                arguments = dependencies.pickle_job(
                    *dependencies.substitute(args, kwargs, Future, values)
                )
            except Exception:
                future.job_ended(Failure())
                return
            self._start(future, options, fn, arguments)

        def failed(error: BaseException) -> None:
            future.job_ended(Failure(error))

        reactor = reactor_thread.reactor_thread()
        dependencies.wait_for(waits_for, dependencies.watch_future(reactor), ready, failed)

    def _forget(self, future: _JobFuture) -> None:
        """A future is done and its callbacks ran."""
        with self._lock:
            self._pending.pop(future, None)
            if not self._pending:
                self._idle.notify_all()
                close = self._shutdown and not self._closed
                self._closed = self._closed or close
            else:
                close = False
        if close:
            self._close()

    def _close(self) -> None:
        reactor_thread.call_soon(self._client.close)

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
        ProcessPoolExecutor does) and ``buffersize`` counts chunks.  Like
        the stdlib's, the iterator keeps no reference to a result it has
        yielded.
        """
        _check_map_sizes(chunksize, buffersize)
        if progress:
            from cwtx.client.progress import require_tqdm

            require_tqdm()  # before any job is sent
        end_time = None if timeout is None else timeout + time.monotonic()
        total = _length(iterables)
        function, inputs = _map_inputs(fn, iterables, chunksize)

        def submit(args: tuple[Any, ...]) -> _JobFuture:
            return self._submit(options, function, args, {})

        if buffersize:
            fs = collections.deque(submit(a) for a in itertools.islice(inputs, buffersize))
        else:
            fs = collections.deque(submit(a) for a in inputs)

        def remaining() -> float | None:
            return None if end_time is None else end_time - time.monotonic()

        def results() -> Iterator[Any]:
            try:
                fs.reverse()
                while fs:
                    if buffersize:
                        more = next(inputs, None)
                        if more is not None:
                            fs.appendleft(submit(more))
                        del more
                    # Yield straight from the call: a local would keep the
                    # result alive while the caller holds the iterator.
                    if chunksize == 1:
                        yield _result_or_cancel(fs.pop(), remaining())
                    else:
                        chunk = _result_or_cancel(fs.pop(), remaining())
                        chunk.reverse()
                        while chunk:
                            yield chunk.pop()
            finally:
                for future in fs:
                    future.cancel()

        iterator = results()
        if progress:
            from cwtx.client.progress import bar

            iterator = bar(iterator, total=total)
        return iterator

    def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, kill_running: bool = False
    ) -> None:
        """No new jobs.  ``cancel_futures`` cancels the jobs that have not
        started (as the stdlib); ``kill_running`` (cwtx's own) also kills the
        running ones.  ``wait`` blocks until every job has ended and its
        callbacks ran.  The connection closes once the last job ends."""
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures or kill_running:
            for future in pending:  # cancels go out before any kill, below
                future.cancel()
        if kill_running:
            running = [f for f in pending if not f.done()]
            reactor_thread.call_soon(_kill_all, running)
        with self._lock:
            close = not self._pending and not self._closed
            self._closed = self._closed or close
        if close:
            self._close()
        if wait:
            self._wait_idle()

    def _wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        """Leaving the block: with no exception, wait for every job (as the
        stdlib); through an exception, cancel the jobs not started and wait
        for the running ones; through KeyboardInterrupt (also one that
        arrives while waiting), kill the running ones too."""
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        try:
            self.shutdown(wait=True, cancel_futures=exc_type is not None, kill_running=interrupted)
        except KeyboardInterrupt:
            self.shutdown(wait=False, kill_running=True)
            self._wait_idle(timeout=10)
            raise
        return False

    # -- the interpreter exits (cwtx.client.blocking) --------------------------------------

    def finish_at_exit(self) -> None:
        self._wait_idle()


def _kill_all(futures: list[_JobFuture]) -> None:
    """(reactor thread) kill each of these jobs that is still running."""
    for future in futures:
        future._kill_job()


class _ExecutorView:
    """``executor.options(...)``: submit and map with these job options."""

    def __init__(self, executor: ClusterExecutor, options: JobOptions) -> None:
        self._executor = executor
        self._options = options

    def options(self, **options: Any) -> _ExecutorView:
        return _ExecutorView(self._executor, job_options(self._options, options))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> _JobFuture:
        return self._executor._submit(self._options, pickle_function(fn), args, kwargs)

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


def _result_or_cancel(future: Future[Any], timeout: float | None) -> Any:
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        del future
