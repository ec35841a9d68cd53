"""
Every name that crosses a process boundary, beside the AMP commands
themselves (``commands``): the protocol version, the roles a peer says it
plays, how a job ended, and the pickle protocol.  Standard library only, so
that the slot child can use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")

#: Bumped whenever what crosses the wire changes; docs/protocol.md says what it is.
PROTOCOL_VERSION = 8

#: The pickle protocol for functions, arguments and results.
PICKLE_PROTOCOL = 5


class Role(StrEnum):
    """What a peer says it is in its Hello."""

    CLIENT = "client"
    WORKER = "worker"
    STATUS = "status"


class JobStatus(StrEnum):
    """How a job (or one attempt at it) ended: the ``status`` of a result."""

    OK = "ok"  # value: the pickled result
    ERROR = "error"  # value: the pickled exception, or empty; error: type, message, traceback
    LOST = "lost"  # its process died under it: an attempt, retried up to max_retries
    TIMEOUT = "timeout"  # it ran over its timeout and was killed
    CANCELLED = "cancelled"  # cancelled before it ended
    MEMORY = "memory"  # over its worker's memory limit: killed (or an allocation failed)
    REQUEUE = "requeue"  # a leaving worker handed it back: it runs elsewhere, no attempt counted


class OutputStream(StrEnum):
    """Which of a job's streams a forwarded line was printed on."""

    STDOUT = "stdout"
    STDERR = "stderr"


def dropped_notice(lines: int) -> str:
    """The line that stands for forwarded output lines dropped (a bound hit)."""
    return f"[cwtx: {lines} line{'s' if lines != 1 else ''} dropped]\n"


def function_hash(env: str, code: Iterable[bytes]) -> bytes:
    """A function's name on the wire: the SHA-256 of its environment (JSON),
    a zero byte, and its pickle (given in pieces).  Clients name functions
    by it; the master and the workers check it before they keep any code."""
    digest = hashlib.sha256(env.encode("utf-8") + b"\0")
    for piece in code:
        digest.update(piece)
    return digest.digest()


#: Bytes of one SHA-256: functions and put data are named by one.
HASH_SIZE = 32
#: Hashes one FreeData or DropFunctions command carries, at most (they are one AMP value).
MAX_FREE = 60_000 // HASH_SIZE

#: What a function costs besides its code and environment, as the master
#: and the workers count it (their function caches, a client's limit).
FUNCTION_OVERHEAD = 256


def function_size(env: str, code_size: int) -> int:
    """A function's bytes as counted: its environment, its pickle, and
    FUNCTION_OVERHEAD."""
    return len(env) + code_size + FUNCTION_OVERHEAD


def per_command(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` (one per hash) in runs of at most MAX_FREE: one
    FreeData or DropFunctions command each."""
    for start in range(0, len(items), MAX_FREE):
        yield items[start : start + MAX_FREE]


def data_hash(pieces: Iterable[bytes]) -> bytes:
    """Put data's name on the wire (a ``cwtx.Ref``): the SHA-256 of its
    pickle (given in pieces).  The master and the workers check it before
    they keep the data: they cache it by this name, across clients."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return digest.digest()


def split_hashes(joined: bytes) -> list[bytes]:
    """The hashes a ``refs`` field or argument holds, 32 bytes each, joined;
    ValueError if its length is not a multiple of 32."""
    if len(joined) % HASH_SIZE:
        raise ValueError(f"{len(joined)} bytes of hashes is not a multiple of {HASH_SIZE}")
    return [joined[i : i + HASH_SIZE] for i in range(0, len(joined), HASH_SIZE)]
