"""
Streaming payloads larger than one AMP value: :class:`BlobSender` sends
them as :class:`~cwtx.wire.commands.BlobChunk` commands, a bounded number
in flight at once (flow control), before the record that names them;
:class:`BlobReceiver` collects the chunks until that record claims them.
"""

from __future__ import annotations

from collections import deque
from itertools import count, islice
from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols.amp import AMP, MAX_VALUE_LENGTH, Command

from cwtx._errors import ProtocolError
from cwtx.wire.commands import BlobChunk
from cwtx.wire.payload import CHUNK_SIZE, Payload

#: Payloads up to this size travel inline in their record.
INLINE_MAX = 16 * 1024
#: Chunks per BlobChunk command (one AMP box of about 1 MiB).
CHUNKS_PER_BOX = 16
#: BlobChunk commands sent but not yet acknowledged, per stream.
WINDOW = 4

assert CHUNK_SIZE < MAX_VALUE_LENGTH


#: What an open blob costs besides its bytes, as the receiver counts it: so
#: that a million empty blobs count for something.
BLOB_OVERHEAD = 1024
#: Blobs a sender may have open (streamed, not yet claimed) at once; an
#: honest sender has a few.
MAX_OPEN_BLOBS = 1024
#: What each piece costs besides its bytes (a bytes object and a list slot,
#: rounded up): so that a million empty or one-byte pieces count for
#: something.  Honest pieces are CHUNK_SIZE bytes: 0.1% more.
PIECE_OVERHEAD = 64


class BlobReceiver:
    """Collects streamed chunks per blob id until a record claims them."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self._blobs: dict[int, Payload] = {}
        self._counted: dict[int, int] = {}  # what each open blob counts for
        #: Bytes held for open blobs, with BLOB_OVERHEAD for each and
        #: PIECE_OVERHEAD for each piece.
        self.held_bytes = 0
        #: Refuse to hold more than this many unclaimed bytes (None: no limit).
        self.max_bytes = max_bytes

    def chunk(self, blob: int, pieces: list[bytes]) -> None:
        if blob <= 0:
            raise ProtocolError(f"blob id must be positive, got {blob}")
        size = sum(len(p) for p in pieces) + PIECE_OVERHEAD * len(pieces)
        payload = self._blobs.get(blob)
        if payload is None:
            if len(self._blobs) >= MAX_OPEN_BLOBS:
                raise ProtocolError(f"over {MAX_OPEN_BLOBS} blobs streamed and not yet claimed")
            size += BLOB_OVERHEAD
        if self.max_bytes is not None and self.held_bytes + size > self.max_bytes:
            raise ProtocolError(
                f"over {self.max_bytes} bytes streamed and not yet claimed by a record"
            )
        if payload is None:
            payload = self._blobs[blob] = Payload()
        for piece in pieces:
            if piece:
                payload.append(piece)
        self._counted[blob] = self._counted.get(blob, 0) + size
        self.held_bytes += size

    def take(self, inline: bytes, blob: int) -> Payload:
        """The payload a record names: inline bytes, or a streamed blob."""
        if blob == 0:
            return Payload.of(inline)
        try:
            payload = self._blobs.pop(blob)
        except KeyError:
            raise ProtocolError(f"record names blob {blob}, which was never streamed")
        self.held_bytes -= self._counted.pop(blob)
        return payload

    def clear(self) -> None:
        self._blobs.clear()
        self._counted.clear()
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

    async def call(
        self, command: type[Command], payloads: dict[str, Payload], **fields: Any
    ) -> Deferred[Any]:
        """Call ``command`` with ``fields`` and, for each payload, its
        ``<name>`` and ``<name>_blob`` arguments; return once big payloads
        are streamed and the command is sent, with its answer's Deferred
        (so that many small calls go without a round trip each)."""
        for name, payload in payloads.items():
            fields[name], fields[name + "_blob"] = await self.encode(payload)
        return self._amp.callRemote(command, **fields)
