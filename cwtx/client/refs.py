"""
Reused data: ``client.put(obj)`` pickles ``obj`` once and returns a
:class:`Ref`, which any number of jobs may take as an argument (anywhere
in their arguments); each job gets the object itself.

The pickle is named by its SHA-256 and crosses each connection once: the
client sends it (``PutData``) just before the first job record that names
it, the master keeps it for the client's session and sends it to each
worker before the first task there that names it, and each slot child
unpickles it once and keeps the object for its later jobs.  When the last
Python reference to the Ref goes (the jobs that name it hold it until they
end), the client tells the master (``FreeData``), which drops it and has
the workers drop it.

A Ref in a job's arguments is pickled as a call of
``cwtx.worker.data.load`` with its hash, which in the slot child returns
the object; pickled any other way (into a put, a function's closure, a
result) it refuses, with a TypeError that says so.
"""

from __future__ import annotations

import io
import threading
import weakref
from collections import ChainMap, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import cloudpickle

from cwtx.wire.names import PICKLE_PROTOCOL, data_hash
from cwtx.worker.data import load

#: Put data one job may name (the master refuses more: master.MAX_JOB_REFS).
MAX_JOB_REFS = 1000


class Ref:
    """Data put on the cluster once (``put``), for any number of jobs.

    Pass it to jobs as an argument, or anywhere inside their arguments
    (lists, dicts, keyword arguments, objects): each job gets the object
    that was put, unpickled once per worker process.  Only jobs of the
    client that put it may use it.  ``size`` is its pickle's size in bytes.
    The data is freed once no reference to the Ref is left (here, and in
    the client's jobs that have not ended).
    """

    __slots__ = ("__weakref__", "_data", "_owner", "hash", "size")

    def __init__(self, data: bytes, owner: RefTable) -> None:
        self._data = data
        self._owner = owner
        #: The SHA-256 of the object's pickle: its name on the wire.
        self.hash = data_hash([data])
        self.size = len(data)

    def __repr__(self) -> str:
        return f"<cwtx.Ref {self.hash.hex()[:12]}, {self.size:,} bytes>"

    def __reduce__(self) -> Any:
        raise TypeError(
            f"{self!r} cannot be pickled: a cwtx.Ref may be passed only in a job's "
            "arguments (anywhere in them), not inside put data, a function's "
            "closure or globals, or a job's result"
        )

    def __copy__(self) -> Ref:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Ref:
        return self


class Arguments(NamedTuple):
    """A job's pickled ``(args, kwargs)``, and the Refs they name."""

    data: bytes
    refs: tuple[Ref, ...]


_found = threading.local()


def _reduce_ref(ref: Ref) -> Any:
    """Pickle a Ref as a call that gives its object in the slot child, and
    note it for the job record."""
    found = getattr(_found, "refs", None)
    if found is None:
        return ref.__reduce__()  # raises
    found.append(ref)
    return load, (ref.hash.hex(),)


class RefPickler(cloudpickle.CloudPickler):
    """cloudpickle, with each Ref pickled as its object's stand-in."""

    dispatch_table = ChainMap({Ref: _reduce_ref}, *cloudpickle.CloudPickler.dispatch_table.maps)


@contextmanager
def _collecting() -> Iterator[list[Ref]]:
    saved = getattr(_found, "refs", None)
    _found.refs = found = []
    try:
        yield found
    finally:
        _found.refs = saved


def pickle_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], pickler: type[RefPickler] = RefPickler
) -> Arguments:
    """Pickle a job's arguments with ``pickler``, noting the Refs they name."""
    buffer = io.BytesIO()
    with _collecting() as found:
        pickler(buffer, protocol=PICKLE_PROTOCOL).dump((args, kwargs))
    return Arguments(buffer.getvalue(), tuple(found))


class RefTable:
    """One client's Refs: how many of each are alive, which the current
    connection has been sent, and which were dropped.

    ``put`` may be called from any thread.  A Ref may die in any thread,
    inside the garbage collector: its finalizer only notes the hash and
    schedules :meth:`_collect` in the reactor thread (``schedule``), which
    calls ``on_freed(hashes)`` with the data no Ref is left for that the
    current connection has.
    """

    def __init__(self, schedule: Callable[[Callable[[], None]], Any]) -> None:
        self._schedule = schedule
        self._lock = threading.Lock()
        self._live: dict[bytes, int] = {}  # hash -> Ref objects alive
        self._dropped: deque[bytes] = deque()
        self._collecting = False
        #: (reactor thread) hashes whose data went over the current connection.
        self.sent: set[bytes] = set()
        #: (reactor thread) called with the hashes to free at the master.
        self.on_freed: Callable[[list[bytes]], None] = lambda hashes: None

    def __len__(self) -> int:
        """Distinct data with a Ref alive."""
        with self._lock:
            return len(self._live)

    def put(self, obj: Any) -> Ref:
        """Pickle ``obj`` (here: an error raises in the caller) into a new Ref."""
        ref = Ref(cloudpickle.dumps(obj, protocol=PICKLE_PROTOCOL), self)
        with self._lock:
            self._live[ref.hash] = self._live.get(ref.hash, 0) + 1
        weakref.finalize(ref, self._dropped_one, ref.hash).atexit = False
        return ref

    def check(self, refs: tuple[Ref, ...]) -> None:
        """ValueError unless a job may name these Refs on this client."""
        for ref in refs:
            if ref._owner is not self:
                raise ValueError(
                    f"{ref!r} was put by another client: a job may use only the "
                    "Refs of the client it is submitted to"
                )
        if len({ref.hash for ref in refs}) > MAX_JOB_REFS:
            raise ValueError(
                f"a job may name at most {MAX_JOB_REFS} distinct Refs; put them in one "
                "list and pass its Ref"
            )

    def _dropped_one(self, hash: bytes) -> None:
        # Any thread, from the garbage collector: no lock, no I/O.
        self._dropped.append(hash)
        if not self._collecting:
            self._collecting = True
            self._schedule(self._collect)

    def _collect(self) -> None:
        self._collecting = False
        freed = []
        with self._lock:
            while self._dropped:
                hash = self._dropped.popleft()
                left = self._live[hash] - 1
                if left:
                    self._live[hash] = left
                    continue
                del self._live[hash]
                if hash in self.sent:
                    self.sent.discard(hash)
                    freed.append(hash)
        if freed:
            self.on_freed(freed)


def scheduler(reactor: Any) -> Callable[[Callable[[], None]], Any]:
    """How to run a call in the reactor thread from any thread, or from
    inside the garbage collector (a test's Clock: on its next turn)."""
    from_thread = getattr(reactor, "callFromThread", None)
    if from_thread is not None:
        return from_thread  # type: ignore[no-any-return]
    return lambda f: reactor.callLater(0, f)
