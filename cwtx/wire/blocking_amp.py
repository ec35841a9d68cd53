"""
AMP over a plain blocking socket, for code that has no running reactor:
launchers waiting for their master, and ``cw status``.  Boxes are built and
read by the same Command classes as everywhere else.
"""

from __future__ import annotations

import socket
import struct
from contextlib import closing
from itertools import count
from typing import Any

from twisted.protocols.amp import AmpBox, Command

from cwtx.wire.commands import Heartbeat
from cwtx.wire.session import Framer

_LEN = struct.Struct("!H")


class BlockingAMP:
    """Calls commands on a connected socket, one at a time, and answers the
    master's heartbeats while it waits."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.framer = Framer()
        self._buffer = bytearray()  # AMP bytes out of frames, not yet parsed
        self._tags = count(1)

    def call(self, command: type[Command], **arguments: Any) -> dict[str, Any]:
        """Send ``command``; its parsed response, or the exception it declares
        for the error the master sent (ConnectionError for others)."""
        tag = str(next(self._tags)).encode()
        box = command.makeArguments(arguments, None)
        box[b"_command"] = command.commandName
        box[b"_ask"] = tag
        self.send_raw(box.serialize())
        while True:
            reply = self._read_box()
            if reply.get(b"_command") == Heartbeat.commandName and b"_ask" in reply:
                self.send_raw(AmpBox({b"_answer": reply[b"_ask"]}).serialize())
            elif reply.get(b"_answer") == tag:
                return command.parseResponse(reply, None)
            elif reply.get(b"_error") == tag:
                raise _error(command, reply)

    @property
    def unparsed(self) -> int:
        """AMP bytes read from frames but not yet parsed."""
        return len(self._buffer)

    def send_raw(self, amp_bytes: bytes) -> None:
        """Send these bytes as one frame (sealed once the session is)."""
        self.sock.sendall(self.framer.frame(amp_bytes))

    def _read_box(self) -> dict[bytes, bytes]:
        box: dict[bytes, bytes] = {}
        key: bytes | None = None
        while True:
            (n,) = _LEN.unpack(self._read(_LEN.size))
            value = self._read(n)
            if key is None:
                if n == 0:
                    return box
                key = value
            else:
                box[key] = value
                key = None

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._buffer += self._next_frame()
        value = bytes(self._buffer[:n])
        del self._buffer[:n]
        return value

    def _next_frame(self) -> bytes:
        """One frame's payload, no more: the master seals its side right after
        answering Authenticate, so the frame after that answer can arrive in
        the same read, and must wait until our side is sealed too."""
        data = b""
        while True:
            with closing(self.framer.feed(data)) as payloads:
                for payload in payloads:
                    return payload
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the master closed the connection")


def _error(command: type[Command], reply: dict[bytes, bytes]) -> Exception:
    code = reply.get(b"_error_code", b"")
    description = reply.get(b"_error_description", b"").decode(errors="replace")
    declared = command.reverseErrors.get(code)
    if declared is not None:
        return declared(description)
    name = command.commandName.decode()
    return ConnectionError(f"the master refused {name}: {description}")
