"""
Jobs whose arguments are other jobs.

A Future (ClusterExecutor) or a Deferred (the Deferred client) passed to
``submit`` as an argument, or as an item of a list, tuple or dict argument
(one level deep, as Dask does), is a dependency: the job waits here, at
the client, unsent, until every dependency has ended; then its arguments
are pickled with each dependency's result in its place and the job is
submitted.  If a dependency fails or is cancelled, the job fails with
:class:`~cwtx.DependencyFailed` and is never sent.

Resolving at the client keeps the master simple (it never unpickles
anything), at the price of each intermediate result travelling master ->
client -> master: docs/clients.md says when that matters.

A Future or Deferred anywhere else in the arguments cannot be replaced,
and pickling one would send a useless copy (or fail on its lock), so
:func:`pickle_arguments` refuses it with a TypeError that says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from cwtx._errors import DependencyFailed
from cwtx.client import refs
from cwtx.client.errors import JobCancelled
from cwtx.client.refs import Arguments, RefPickler

#: What a dependency may be, for either client.
Kind = type | tuple[type, ...]
#: ``report(dependency, ok, result or error)``: a dependency ended.
Report = Callable[[Any, bool, Any], None]


def _items(value: Any) -> list[Any]:
    """The items of a top-level list, tuple or dict argument (dict values)."""
    if type(value) is dict:
        return list(value.values())
    if type(value) in (list, tuple):
        return list(value)
    return []


def find(args: tuple[Any, ...], kwargs: dict[str, Any], kind: Kind) -> list[Any]:
    """The distinct dependencies (instances of ``kind``) in ``args`` and
    ``kwargs``, in the order they appear."""
    found: dict[int, Any] = {}
    for value in (*args, *kwargs.values()):
        for item in (value, *_items(value)):
            if isinstance(item, kind):
                found.setdefault(id(item), item)
    return list(found.values())


def substitute(
    args: tuple[Any, ...], kwargs: dict[str, Any], kind: Kind, values: Mapping[int, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``args`` and ``kwargs`` with each dependency replaced by
    ``values[id(dependency)]`` (new containers; the caller's stay as they are)."""

    def one(value: Any) -> Any:
        if isinstance(value, kind):
            return values[id(value)]
        if type(value) is dict:
            return {k: one_item(v) for k, v in value.items()}
        if type(value) in (list, tuple):
            return type(value)(one_item(v) for v in value)
        return value

    def one_item(value: Any) -> Any:
        return values[id(value)] if isinstance(value, kind) else value

    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def _refuse(obj: Any) -> Any:
    kind = "Future" if isinstance(obj, concurrent.futures.Future) else type(obj).__name__
    raise TypeError(
        f"a {kind} cannot be sent to a cwtx job: only one passed as an argument, "
        "or as an item of a list, tuple or dict argument, is replaced by its "
        "result (not in map's chunks when chunksize > 1; see docs/clients.md, "
        "Dependencies); pass its result instead"
    )


#: Types whose instances never travel to a job (exact types: a dispatch
#: table costs nothing per object, where a reducer_override would).
_REFUSED: dict[type, Callable[[Any], Any]] = dict.fromkeys(
    [concurrent.futures.Future, Deferred, asyncio.Future, asyncio.Task], _refuse
)


def refuse_to_pickle(cls: type) -> None:
    """Refuse ``cls`` too (a Future subclass, say) with the same clear error."""
    _REFUSED[cls] = _refuse


class _Pickler(RefPickler):
    """cloudpickle with Refs (``refs``), refusing futures and Deferreds
    with a clear error."""

    dispatch_table = ChainMap(_REFUSED, *RefPickler.dispatch_table.maps)


def pickle_job(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Arguments:
    """A job's pickled ``(args, kwargs)`` and the Refs they name; a Future
    or Deferred left among them is a clear TypeError."""
    return refs.pickle_arguments(args, kwargs, _Pickler)


def pickle_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """:func:`pickle_job`'s bytes alone."""
    return pickle_job(args, kwargs).data


def check_picklable(args: tuple[Any, ...], kwargs: dict[str, Any], kind: Kind) -> None:
    """Raise now, in the caller, what pickling the arguments later would
    raise (the dependencies themselves aside)."""
    placeholders = dict.fromkeys(map(id, find(args, kwargs, kind)))
    pickle_arguments(*substitute(args, kwargs, kind, placeholders))


def _failed(error: BaseException) -> DependencyFailed:
    if isinstance(error, concurrent.futures.CancelledError | CancelledError):
        what = "was cancelled"
    else:
        what = f"failed: {type(error).__name__}: {error}"
    return DependencyFailed(f"a job this job depends on {what}", error)


def wait_for(
    dependencies: list[Any],
    watch: Callable[[Any, Report], None],
    ready: Callable[[dict[int, Any]], None],
    failed: Callable[[DependencyFailed], None],
) -> None:
    """Call ``ready({id(dependency): result})`` once every dependency has
    succeeded, or ``failed(DependencyFailed)`` as soon as one has not;
    ``watch(dependency, report)`` calls ``report`` when it ends.  Reports
    must all come from one thread (the reactor's)."""
    values: dict[int, Any] = {}
    left = [len(dependencies)]

    def report(dependency: Any, ok: bool, value: Any) -> None:
        if left[0] <= 0:
            return  # already failed (or done)
        if not ok:
            left[0] = 0
            values.clear()
            failed(_failed(value))
            return
        values[id(dependency)] = value
        left[0] -= 1
        if left[0] == 0:
            done = dict(values)
            values.clear()
            ready(done)

    for dependency in dependencies:
        watch(dependency, report)


def watch_deferred(d: Deferred[Any], report: Report) -> None:
    """Report ``d``'s result when it fires, and pass that result on unchanged."""

    def observe(result: Any) -> Any:
        if isinstance(result, Failure):
            report(d, False, result.value)
        else:
            report(d, True, result)
        return result

    d.addBoth(observe)


def watch_future(reactor: Any) -> Callable[[concurrent.futures.Future[Any], Report], None]:
    """A ``watch`` for concurrent Futures that reports in the reactor thread,
    whichever thread completes the Future."""

    def watch(future: concurrent.futures.Future[Any], report: Report) -> None:
        def done(f: concurrent.futures.Future[Any]) -> None:
            if f.cancelled():
                outcome: tuple[bool, Any] = (False, concurrent.futures.CancelledError())
            elif f.exception() is not None:
                outcome = (False, f.exception())
            else:
                outcome = (True, f.result())
            reactor.callFromThread(report, f, *outcome)

        future.add_done_callback(done)

    return watch


class HeldDeferredJob:
    """A Deferred client's job that waits for Deferred dependencies.

    ``deferred`` is what submit returns: it fires with the job's result
    once the job, submitted when its dependencies are done, ends.
    Cancelling it before then drops the job unsent (JobCancelled).
    """

    def __init__(
        self,
        submit: Callable[[Arguments], Deferred[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        dependencies: list[Deferred[Any]],
        clock: Any,
    ) -> None:
        """``clock``: the failure of a dependency reaches the dependent on
        the next turn of the event loop, not from inside the dependency's
        own callbacks (whose result a caller may then await at once)."""
        check_picklable(args, kwargs, Deferred)
        self._clock = clock
        self._submit = submit
        self._call: tuple[tuple[Any, ...], dict[str, Any]] | None = (args, kwargs)
        self._job: Deferred[Any] | None = None
        self.deferred: Deferred[Any] = Deferred(self._cancel)
        wait_for(dependencies, watch_deferred, self._ready, self._failed)

    def _cancel(self, deferred: Deferred[Any]) -> None:
        if self._job is not None:
            self._job.cancel()  # fires self.deferred through the chain
        else:
            self._call = None
            deferred.errback(JobCancelled("the job was cancelled before its dependencies ended"))

    def _ready(self, values: dict[int, Any]) -> None:
        if self._call is None:
            return  # cancelled meanwhile
        (args, kwargs), self._call = self._call, None
        try:
            job = self._submit(pickle_job(*substitute(args, kwargs, Deferred, values)))
        except Exception:
            self.deferred.errback(Failure())
            return
        self._job = job
        job.addCallbacks(self.deferred.callback, self.deferred.errback)

    def _failed(self, error: DependencyFailed) -> None:
        if self._call is not None:
            self._call = None
            self._clock.callLater(0, self.deferred.errback, Failure(error))
