"""
Put data in a slot child (``cwtx.Ref``): the pickles its supervisor sends
ahead of the first task here that names them, unpickled when a task's
arguments first name them, and kept, as objects, for the later tasks of
this child, until the supervisor says to forget them.

A Ref in a job's arguments is pickled, by the client, as a call of
:func:`load` with its hash: unpickling the arguments within
:meth:`DataCache.loading` puts the object in its place.  Standard library
only: the slot child imports it.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

#: The cache of the arguments being unpickled (the child unpickles them in
#: one thread; a test runs several children's code in one process, one
#: after the other).
_loading: DataCache | None = None


def load(ref: str) -> Any:
    """The object put under ``ref`` (its SHA-256 in hex), from the cache of
    the arguments being unpickled.  What a Ref unpickles as."""
    if _loading is None:
        raise RuntimeError(
            f"put data {ref[:16]}... (a cwtx.Ref) can be unpickled only as a job's argument"
        )
    return _loading.get(ref)


class DataCache:
    """One child's put data: pickles until first use, then objects."""

    def __init__(self) -> None:
        self._pickles: dict[str, Any] = {}  # bytes-like, until a task names it
        self._objects: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._pickles) + len(self._objects)

    def keep(self, ref: str, data: Any) -> None:
        if ref not in self._objects:
            self._pickles[ref] = data

    def forget(self, refs: Iterable[str]) -> None:
        for ref in refs:
            self._pickles.pop(ref, None)
            self._objects.pop(ref, None)

    def get(self, ref: str) -> Any:
        """The object, unpickled once (in the job's environment: its cwd
        and sys.path are in place while arguments are unpickled)."""
        try:
            return self._objects[ref]
        except KeyError:
            pass
        data = self._pickles.get(ref)
        if data is None:
            raise LookupError(f"put data {ref[:16]}... (a cwtx.Ref) never reached this worker")
        try:
            obj = pickle.loads(data)
        except Exception as e:
            raise RuntimeError(
                f"put data {ref[:16]}... (a cwtx.Ref) could not be unpickled: "
                f"{type(e).__name__}: {e}"
            ) from e
        self._objects[ref] = obj
        del self._pickles[ref]
        return obj

    @contextmanager
    def loading(self) -> Iterator[None]:
        """Within: a Ref being unpickled is this cache's object."""
        global _loading
        saved, _loading = _loading, self
        try:
            yield
        finally:
            _loading = saved
