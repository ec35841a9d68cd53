"""
The pipes between a worker's supervisor and its slot children: which file
descriptors, which header keys, and the framing.  Both ends import this
module, so it needs only the standard library.

The child reads tasks on TASK_FD and writes results on RESULT_FD, not on
stdin and stdout, so whatever a job prints cannot corrupt the protocol.

A message is a list of parts: a 4-byte part count, then for each part an
8-byte length and the bytes.  Part 0 is a small JSON header (keys in
:class:`Header`); the others are payloads.  A task is [header, arguments]
plus the function's pickle the first time this child sees that function; a
result is [header, value].  Two messages have no answer: put data
([header, pickle], ahead of the first task that names it) and a list of put
data to forget ([header]).  The supervisor decodes incrementally (it must
never block); the child reads and writes blocking file objects.
"""

from __future__ import annotations

import struct
from enum import StrEnum
from typing import Any, BinaryIO

from cwtx._errors import FramingError
from cwtx.wire.payload import CHUNK_SIZE, Payload

#: The child's ends of its two pipes.
TASK_FD = 3
RESULT_FD = 4


class Header(StrEnum):
    """The keys of a message's JSON header."""

    TASK = "task"  # both ways: the master's task id
    FUNCTION = "fn"  # to the child: the function's sha256, in hex
    ENV = "env"  # to the child: the client's cwd and sys.path, JSON
    VARS = "vars"  # to the child: environment variables for this job only (resources)
    OUTPUT = "output"  # to the child: true to capture the job's stdout and stderr
    STREAM = "stream"  # from the child: this message is output on that stream (OutputStream)
    STATUS = "status"  # from the child: a names.JobStatus (ok or error)
    ERROR = "error"  # from the child, with error: {type, message, traceback}
    DATA = "data"  # to the child: keep the put data that follows (SHA-256 in hex); no answer
    FORGET = "forget"  # to the child: drop these put data (SHA-256s in hex); no answer


_COUNT = struct.Struct("!I")
_LENGTH = struct.Struct("!Q")

#: A message with more parts than this is corrupt.
MAX_PARTS = 8
#: The header part is JSON and small.
MAX_HEADER = 1 << 20


def encode_message(parts: list[Any]) -> list[bytes]:
    """Parts (bytes or Payload) as a sequence for writeSequence, uncopied."""
    out = [_COUNT.pack(len(parts))]
    for part in parts:
        if isinstance(part, Payload):
            out.append(_LENGTH.pack(part.size))
            out.extend(part.pieces)
        else:
            out.append(_LENGTH.pack(len(part)))
            out.append(part)
    return out


class MessageDecoder:
    """Incremental decoder; payload parts come out as Payloads of big pieces."""

    def __init__(self, max_header: int = MAX_HEADER) -> None:
        self._buffer = bytearray()
        self._max_header = max_header
        self._reset()

    def _reset(self) -> None:
        self._parts: list[Payload] = []
        self._nparts: int | None = None
        self._remaining: int | None = None  # bytes left in the current part
        self._piece = bytearray()

    def feed(self, data: bytes) -> list[list[Payload]]:
        """Take bytes; return every message they complete."""
        self._buffer += data
        done: list[list[Payload]] = []
        while True:
            if self._nparts is None:
                if len(self._buffer) < _COUNT.size:
                    return done
                (self._nparts,) = _COUNT.unpack_from(self._buffer)
                del self._buffer[: _COUNT.size]
                if not 0 < self._nparts <= MAX_PARTS:
                    raise FramingError(f"message claims {self._nparts} parts")
            if len(self._parts) == self._nparts and self._remaining is None:
                done.append(self._parts)
                self._reset()
                continue
            if self._remaining is None:
                if len(self._buffer) < _LENGTH.size:
                    return done
                (self._remaining,) = _LENGTH.unpack_from(self._buffer)
                del self._buffer[: _LENGTH.size]
                if not self._parts and self._remaining > self._max_header:
                    raise FramingError(f"header of {self._remaining} bytes")
                self._parts.append(Payload())
            if not self._buffer and self._remaining:
                return done
            self._consume()

    def _consume(self) -> None:
        """Move buffered bytes into the current part, CHUNK_SIZE at a time."""
        assert self._remaining is not None
        part = self._parts[-1]
        while self._remaining and self._buffer:
            room = min(CHUNK_SIZE - len(self._piece), self._remaining)
            taken = self._buffer[:room]
            del self._buffer[:room]
            self._piece += taken
            self._remaining -= len(taken)
            if len(self._piece) == CHUNK_SIZE or not self._remaining:
                part.append(bytes(self._piece))
                self._piece = bytearray()
        if not self._remaining:
            self._remaining = None


def read_exactly(stream: BinaryIO, n: int) -> bytearray | None:
    """Read n bytes into one buffer; None at a clean end of stream."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            if got == 0:
                return None
            raise FramingError(f"stream ended after {got} of {n} bytes")
        got += k
    return buf


def read_message(stream: BinaryIO) -> list[bytearray] | None:
    """Blocking read of one message; None at end of stream."""
    head = read_exactly(stream, _COUNT.size)
    if head is None:
        return None
    (nparts,) = _COUNT.unpack(head)
    if not 0 < nparts <= MAX_PARTS:
        raise FramingError(f"message claims {nparts} parts")
    parts = []
    for _ in range(nparts):
        raw = read_exactly(stream, _LENGTH.size)
        if raw is None:
            raise FramingError("stream ended inside a message")
        (length,) = _LENGTH.unpack(raw)
        part = read_exactly(stream, length) if length else bytearray()
        if part is None:
            raise FramingError("stream ended inside a message")
        parts.append(part)
    return parts


def write_message(stream: BinaryIO, parts: list[bytes]) -> None:
    for piece in encode_message(parts):
        stream.write(piece)
    stream.flush()
