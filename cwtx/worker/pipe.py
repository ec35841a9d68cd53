"""
The pipes between a worker's supervisor and its slot children: which file
descriptors, which header keys, and the framing.  Both ends import this
module, so it needs only the standard library.

The child reads tasks on TASK_FD and writes results on RESULT_FD, not on
stdin and stdout, so whatever a job prints cannot corrupt the protocol.

A message is a list of parts: a 4-byte part count, then for each part an
8-byte length and the bytes.  Part 0 is a small JSON header (keys in
:class:`Header`); the others are payloads.

To the child: a task is [header, arguments] plus the function's pickle the
first time this child sees that function; a skip is [{"skip": task id}];
put data is [{"data": hash}, pickle], ahead of the first task that names
it; put data to forget is [{"forget": hashes}].  The last three have no
answer, and the child applies put data in the order written, among the
tasks it starts.  From the child: a result is [header, value]; output a
task printed is [{"task", "stream"}, bytes]; a skipped task is
[{"skipped": task id}].

The supervisor writes a few tasks ahead (``slot.PIPELINE_DEPTH``), so the
child starts the next one as soon as one ends, without waiting for a round
trip.  The child runs them in the order written.  A result's header names
the task the child started right after it (``next``), so the supervisor
learns of the start without a message of its own; a result without
``next`` means the child had nothing more when it sent it, and it starts
the next task written as soon as that arrives (whatever skip for it comes
with it: that task counts as started).

A task written ahead is not started yet, and the supervisor may want it
back: a skip asks the child not to start it.  Before starting each task
the child reads whatever has arrived, without blocking, drops the tasks
skipped and says so (``skipped``); a skip for a task it has started, or
ended, it ignores.  And while one task runs longer than HAND_BACK_AFTER,
the child hands back, unasked, every task written ahead of it (``skipped``
too), so that they can run in another slot meanwhile.

The supervisor decodes incrementally (it must never block); the child reads
with :class:`MessageReader` and writes a blocking file object.
"""

from __future__ import annotations

import io
import os
import select
import struct
from collections.abc import Callable
from enum import StrEnum
from typing import Any, BinaryIO

from cwtx._errors import FramingError
from cwtx.wire.payload import CHUNK_SIZE, Payload

#: The child's ends of its two pipes.
TASK_FD = 3
RESULT_FD = 4

#: Seconds: once its task has run this long, a child hands back the tasks
#: written ahead of it (another slot may run them meanwhile), and the
#: supervisor writes none ahead behind it.
HAND_BACK_AFTER = 0.5


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
    NEXT = "next"  # from the child, in a result: the task it started right after
    SKIP = "skip"  # to the child: do not start this task (alone in its header)
    SKIPPED = "skipped"  # from the child: it dropped this task unstarted (asked, or handing back)
    DATA = "data"  # to the child: keep the put data that follows (SHA-256 in hex); no answer
    FORGET = "forget"  # to the child: drop these put data (SHA-256s in hex); no answer
    DROP = "drop"  # to the child: drop these functions (SHA-256s in hex); no answer
    #: (the child's own, never on the pipe: the function code a task it
    #: did not start brought, kept in its place among the messages)
    LEARN = "learn"


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


class MessageReader:
    """
    The child's end of the task pipe: :meth:`poll` takes the messages that
    have arrived, without blocking; :meth:`wait` blocks for at least one.

    ``raw`` is a non-blocking raw stream (``read`` and ``readinto`` answer
    None when nothing has arrived); ``ready`` blocks until it has something.
    It reads up to ``chunk`` bytes at a time, so one read takes many small
    messages; a part larger than that is read straight into its buffer.
    """

    def __init__(
        self, raw: Any, ready: Callable[[], object] = lambda: None, chunk: int = 65536
    ) -> None:
        self._raw = raw
        self._ready = ready
        self._chunk = chunk
        self._buffer = bytearray()
        self._at = 0  # where the unparsed bytes in _buffer begin
        self._eof = False
        self._nparts: int | None = None  # of the message being read
        self._parts: list[bytearray] = []
        self._part: bytearray | None = None  # being filled
        self._filled = 0

    @classmethod
    def of_fd(cls, fd: int) -> MessageReader:
        """A reader of a pipe's file descriptor (made non-blocking)."""
        os.set_blocking(fd, False)
        raw = io.FileIO(fd, "rb", closefd=False)
        return cls(raw, lambda: select.select([fd], [], []))

    def poll(self) -> list[list[bytearray]]:
        """The messages completed by what has arrived (a short read means
        the pipe is empty for now)."""
        done: list[list[bytearray]] = []
        while not self._eof:
            n = self._read()
            if n is None:
                break
            done += self._parse()
            if n < self._chunk:
                break
        return done

    def wait(self) -> list[list[bytearray]] | None:
        """At least one message, blocking as long as it takes; None at the
        end of the stream."""
        while True:
            done = self._parse()
            if done:
                return done
            if self._eof:
                if self._nparts is not None or self._at < len(self._buffer):
                    raise FramingError("stream ended inside a message")
                return None
            if self._read() is None:
                self._ready()

    def _read(self) -> int | None:
        """Read once: bytes read (0 at the end), None if nothing has arrived."""
        part = self._part
        if part is not None and self._at == len(self._buffer):
            left = len(part) - self._filled
            if left >= self._chunk:  # a large part: no copy through the buffer
                with memoryview(part) as view:
                    n = self._raw.readinto(view[self._filled :])
                if n is None:
                    return None
                self._filled += n
                self._eof = not n
                return n
        data = self._raw.read(self._chunk)
        if data is None:
            return None
        if self._at:
            del self._buffer[: self._at]
            self._at = 0
        self._buffer += data
        self._eof = not data
        return len(data)

    def _parse(self) -> list[list[bytearray]]:
        """Every message the buffered bytes complete."""
        done: list[list[bytearray]] = []
        buffer = self._buffer
        while True:
            avail = len(buffer) - self._at
            if self._nparts is None:
                if avail < _COUNT.size:
                    return done
                (nparts,) = _COUNT.unpack_from(buffer, self._at)
                self._at += _COUNT.size
                if not 0 < nparts <= MAX_PARTS:
                    raise FramingError(f"message claims {nparts} parts")
                self._nparts = nparts
                continue
            part = self._part
            if part is None:
                if avail < _LENGTH.size:
                    return done
                (length,) = _LENGTH.unpack_from(buffer, self._at)
                self._at += _LENGTH.size
                avail -= _LENGTH.size
                part = self._part = bytearray(length)
                self._filled = 0
            take = min(avail, len(part) - self._filled)
            if take:
                part[self._filled : self._filled + take] = buffer[self._at : self._at + take]
                self._at += take
                self._filled += take
            if self._filled < len(part):
                return done
            self._parts.append(part)
            self._part = None
            if len(self._parts) == self._nparts:
                done.append(self._parts)
                self._parts = []
                self._nparts = None


def write_message(stream: BinaryIO, parts: list[bytes]) -> None:
    for piece in encode_message(parts):
        stream.write(piece)
    stream.flush()
