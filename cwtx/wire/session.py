"""
Every byte on a connection travels in a frame; after the handshake, every
frame is sealed: encrypted and authenticated with AES-256-GCM under keys
that only holders of the shared secret can derive, one key and one counter
per direction.  A relay that passed the handshake along therefore holds no
key: a frame it injects, alters, replays or reorders fails to open, and
the connection closes.

A frame is a 4-byte big-endian body length, a kind byte, and the body:

* ``PLAIN`` (0): an AMP box in clear, allowed only before the session is
  sealed (Hello and Authenticate, and their answers);
* ``SEALED`` (1): AES-256-GCM of the AMP bytes, tag appended; the nonce is
  the direction's frame counter (4 zero bytes, then a 64-bit count), and
  the 5-byte frame header is authenticated with it.

Keys: HKDF-SHA256 of the shared secret, salted with the connecting side's
nonce then the master's, with the info ``cwtx session 4 <role>\0`` and the
handshake's transcript (what Hello and its answer said): the first 32
bytes seal what the connecting side sends, the next 32 what the master
sends.  Standard library and ``cryptography`` only (no Twisted): the
blocking status query uses it too.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cwtx._errors import ProtocolError

HEADER = struct.Struct("!IB")
PLAIN, SEALED = 0, 1
TAG_BYTES = 16
#: No frame body may be longer: an AMP box (at most 8 MiB), sealed.
MAX_FRAME = 8 * 1024 * 1024 + 64 * 1024
_NONCE = struct.Struct("!4xQ")


#: Why a peer is refused that put more after the box that sealed its
#: session, in the same frame, in the clear: anyone on the path could have.
AFTER_SEALING = "sent more in the clear after the box that sealed the session"
#: Why a peer is refused whose frame is not exactly one AMP box.
NOT_ONE_BOX = "sent a frame that was not exactly one AMP box"


class SessionError(ProtocolError):
    """A frame that is malformed, too long, of the wrong kind, or fails to open."""


def transcript(hello: dict[str, Any], answer: dict[str, Any]) -> bytes:
    """SHA-256 of what Hello and its answer said (the nonces and proofs
    aside): bound into the keys, so that a relay that rewrites a name, a
    version or the master's id leaves the two sides with different keys."""
    said = [hello[k] for k in ("role", "name", "protocol", "python", "cloudpickle")]
    said += [hello.get("host", ""), hello.get("pid", 0), hello.get("user", "")]
    said += [answer["protocol"], answer["master"]]
    return hashlib.sha256(json.dumps(said).encode("ascii")).digest()


def session_keys(
    secret: bytes,
    connecting_nonce: bytes,
    master_nonce: bytes,
    role: str,
    said: bytes,
) -> tuple[bytes, bytes]:
    """(the connecting side's sending key, the master's sending key);
    ``said`` is the handshake's :func:`transcript`."""
    hkdf = HKDF(
        algorithm=SHA256(),
        length=64,
        salt=connecting_nonce + master_nonce,
        info=b"cwtx session 4 " + role.encode() + b"\0" + said,
    )
    keys = hkdf.derive(secret)
    return keys[:32], keys[32:]


class _Direction:
    """One direction's key and frame counter."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._count = 0

    def nonce(self) -> bytes:
        nonce = _NONCE.pack(self._count)
        self._count += 1
        return nonce


class Framer:
    """Frames what one end of a connection sends, and unframes what it receives.

    ``feed`` yields the AMP bytes of each frame in turn, so the caller can
    handle a frame (a handshake that seals the session, say) before the
    next frame's kind is checked.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        #: A frame whose body is longer is refused before it is buffered.
        self.max_frame = max_frame
        self._send: _Direction | None = None
        self._receive: _Direction | None = None
        self._buffer = bytearray()

    @property
    def sealed(self) -> bool:
        return self._receive is not None

    def seal_sending(self, key: bytes) -> None:
        self._send = _Direction(key)

    def seal_receiving(self, key: bytes) -> None:
        self._receive = _Direction(key)

    def frame(self, data: bytes) -> bytes:
        """One frame carrying ``data``: sealed once the session is."""
        send = self._send
        if send is None:
            return HEADER.pack(len(data), PLAIN) + data
        header = HEADER.pack(len(data) + TAG_BYTES, SEALED)
        return header + send._aead.encrypt(send.nonce(), data, header)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The payloads of the frames ``data`` completes; SessionError if one is bad."""
        buffer = self._buffer
        buffer += data
        start = 0
        try:
            while len(buffer) - start >= HEADER.size:
                length, kind = HEADER.unpack_from(buffer, start)
                if length > self.max_frame:
                    raise SessionError(f"sent a frame of {length} bytes (at most {self.max_frame})")
                end = start + HEADER.size + length
                if len(buffer) < end:
                    break
                # No copy until the payload itself; both views released even when
                # _open raises, so the buffer can be trimmed below.
                with memoryview(buffer) as view, view[start + HEADER.size : end] as body:
                    header = bytes(view[start : start + HEADER.size])
                    payload = self._open(kind, header, body)
                start = end
                yield payload
        finally:
            del buffer[:start]

    def _open(self, kind: int, header: bytes, body: memoryview) -> bytes:
        receive = self._receive
        if kind == PLAIN and receive is None:
            return bytes(body)
        if kind == SEALED and receive is not None:
            try:
                return receive._aead.decrypt(receive.nonce(), body, header)
            except InvalidTag:
                raise SessionError(
                    "a frame failed authentication (altered, replayed, out of order, "
                    "or not from a holder of the shared secret)"
                ) from None
        state = "sealed" if receive is not None else "not yet sealed"
        raise SessionError(f"a frame of kind {kind} on a session {state}")
