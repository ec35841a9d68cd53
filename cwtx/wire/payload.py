"""
Payloads: opaque bytes that may be far larger than one AMP value.

A payload is kept as a list of pieces so that a 256 MiB argument is never
joined, copied or concatenated on its way through the master (see
``blobs`` for how big ones are streamed).  Standard library only: the slot
child's pipe framing uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: Bytes per piece handed on, and per streamed chunk: under AMP's 65,535-byte value limit.
CHUNK_SIZE = 65_000


class Payload:
    """Opaque bytes held as pieces; never joined unless someone needs bytes."""

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: list[bytes] | None = None) -> None:
        self.pieces: list[Any] = pieces if pieces is not None else []
        self.size = sum(map(len, self.pieces))

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

#: A payload as a process may keep it: small ones (inline in their record)
#: as plain bytes, which cost far less to hold than a Payload and its list.
Data = bytes | Payload


def size_of(data: Data) -> int:
    return len(data) if type(data) is bytes else data.size


def pieces_of(data: Data) -> list[Any]:
    return [data] if type(data) is bytes else data.pieces
