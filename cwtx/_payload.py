"""
Payloads: opaque bytes that may be far larger than one AMP value.

A payload is kept as a list of pieces so that a 256 MiB argument is never
joined, copied or concatenated on its way through the master.  Large payloads
are streamed with :class:`~cwtx._commands.BlobChunk`, a bounded number of
chunks in flight at once (flow control), before the record that names them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from itertools import count, islice
from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols.amp import AMP, MAX_VALUE_LENGTH

from ._commands import BlobChunk
from ._errors import ProtocolError

#: Bytes per streamed chunk: under AMP's 65,535-byte value limit.
CHUNK_SIZE = 65_000
#: Payloads up to this size travel inline in their record.
INLINE_MAX = 16 * 1024
#: Chunks per BlobChunk command (one AMP box of about 1 MiB).
CHUNKS_PER_BOX = 16
#: BlobChunk commands sent but not yet acknowledged, per stream.
WINDOW = 4

assert CHUNK_SIZE < MAX_VALUE_LENGTH


class Payload:
    """Opaque bytes held as pieces; never joined unless someone needs bytes."""

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: list[bytes] | None = None) -> None:
        self.pieces: list[Any] = pieces if pieces is not None else []
        self.size = sum(len(p) for p in self.pieces)

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview) -> Payload:
        return cls([data])

    def append(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self.size += len(piece)

    def chunks(self) -> Iterator[bytes]:
        """Yield bytes objects of at most CHUNK_SIZE, one at a time."""
        for piece in self.pieces:
            if isinstance(piece, bytes) and len(piece) <= CHUNK_SIZE:
                yield piece
                continue
            view = memoryview(piece)
            for start in range(0, len(view), CHUNK_SIZE):
                yield bytes(view[start : start + CHUNK_SIZE])

    def tobytes(self) -> bytes:
        """The payload as one bytes object (one copy at most)."""
        if len(self.pieces) == 1 and isinstance(self.pieces[0], bytes):
            return self.pieces[0]
        return b"".join(self.pieces)

    def __repr__(self) -> str:
        return f"<Payload {self.size} bytes in {len(self.pieces)} pieces>"


EMPTY = Payload.of(b"")


class BlobReceiver:
    """Collects streamed chunks per blob id until a record claims them."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self._blobs: dict[int, Payload] = {}
        self.held_bytes = 0
        #: Refuse to hold more than this many unclaimed bytes (None: no limit).
        self.max_bytes = max_bytes

    def chunk(self, blob: int, pieces: list[bytes]) -> None:
        if blob <= 0:
            raise ProtocolError(f"blob id must be positive, got {blob}")
        size = sum(len(p) for p in pieces)
        if self.max_bytes is not None and self.held_bytes + size > self.max_bytes:
            raise ProtocolError(
                f"over {self.max_bytes} bytes streamed and not yet claimed by a record"
            )
        payload = self._blobs.get(blob)
        if payload is None:
            payload = self._blobs[blob] = Payload()
        for piece in pieces:
            payload.append(piece)
        self.held_bytes += size

    def take(self, inline: bytes, blob: int) -> Payload:
        """The payload a record names: inline bytes, or a streamed blob."""
        if blob == 0:
            return Payload.of(inline)
        try:
            payload = self._blobs.pop(blob)
        except KeyError:
            raise ProtocolError(f"record names blob {blob}, which was never streamed")
        self.held_bytes -= payload.size
        return payload

    def clear(self) -> None:
        self._blobs.clear()
        self.held_bytes = 0


class BlobSender:
    """Streams large payloads over one connection, WINDOW chunks in flight."""

    def __init__(self, amp: AMP) -> None:
        self._amp = amp
        self._ids = count(1)

    async def encode(self, payload: Payload) -> tuple[bytes, int]:
        """Return (inline, blob) for a record; stream the payload if big."""
        if payload.size <= INLINE_MAX:
            return payload.tobytes(), 0
        blob = next(self._ids)
        inflight: deque[Deferred[Any]] = deque()
        chunks = payload.chunks()
        while box := list(islice(chunks, CHUNKS_PER_BOX)):
            if len(inflight) >= WINDOW:
                await inflight.popleft()
            inflight.append(self._amp.callRemote(BlobChunk, blob=blob, data=box))
        while inflight:
            await inflight.popleft()
        return b"", blob
