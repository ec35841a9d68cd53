"""
The master's functions: kept for as long as a job that has not ended names
one, then in a cache of idle ones bounded in bytes (so that a client that
submits the same function job after job does not send its code each time),
and dropped beyond that bound, oldest idle first.  A dropped function's
client is told (``DropFunctions``) and sends the code again with its next
job that names it; until the client answers, the code stays (records it had
already queued may name it without code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cwtx._lru import SizedLRU
from cwtx.wire.names import function_size
from cwtx.wire.payload import Data, size_of

if TYPE_CHECKING:
    from cwtx.master.sessions import ClientSession

#: Bytes of idle functions (no live job names them) the master keeps, across
#: its clients, by default (``cw-master --function-cache``).
DEFAULT_FUNCTION_CACHE = 32 * 1024 * 1024


@dataclass(eq=False, slots=True)
class Function:
    hash: bytes
    env: str
    code: Data
    users: int = 0  # live jobs that name it
    dropping: int = 0  # its DropFunctions' number at its session (0: none): it goes at the answer
    size: int = 0  # as counted (names.function_size)

    def __post_init__(self) -> None:
        self.size = function_size(self.env, size_of(self.code))


class IdleFunctions:
    """Functions no live job names, least recently used first out beyond
    ``limit`` bytes: those go to ``drop``, with their session."""

    def __init__(self, limit: int, drop: Callable[[ClientSession, Function], None]) -> None:
        self._idle: SizedLRU[Function, ClientSession] = SizedLRU(limit)
        self._drop = drop

    def __len__(self) -> int:
        return len(self._idle)

    @property
    def bytes(self) -> int:
        return self._idle.bytes

    def add(self, session: ClientSession, function: Function) -> None:
        """No live job names ``function`` any more."""
        for oldest, owner in self._idle.put(function, session, function.size):
            self._drop(owner, oldest)

    def used(self, function: Function) -> None:
        """A job names ``function`` again (a no-op if it was not idle)."""
        self._idle.pop(function)

    def forget_session(self, session: ClientSession) -> None:
        """The session ended: its functions go with it."""
        for function in [f for f, owner in self._idle.items() if owner is session]:
            self._idle.pop(function)
