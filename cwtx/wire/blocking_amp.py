"""
AMP over a plain blocking socket, for code that has no running reactor:
launchers waiting for their master, and ``cw status``.  Boxes are built and
read by the same Command classes as everywhere else.
"""

from __future__ import annotations

import socket
import struct
import time
from contextlib import closing
from itertools import count
from typing import Any

from twisted.protocols.amp import AmpBox, Command

from cwtx.wire.commands import Heartbeat
from cwtx.wire.session import NOT_ONE_BOX, Framer

_LEN = struct.Struct("!H")


class BlockingAMP:
    """Calls commands on a connected socket, one at a time, and answers the
    master's heartbeats while it waits."""

    def __init__(self, sock: socket.socket, timeout: float | None = None) -> None:
        """``timeout``: seconds for everything this caller will ever wait
        for, in all (the socket's own timeout bounds each read only, and a
        peer could trickle heartbeats for ever)."""
        self.sock = sock
        self.framer = Framer()
        self.deadline = None if timeout is None else time.monotonic() + timeout
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

    def send_raw(self, amp_bytes: bytes) -> None:
        """Send these bytes as one frame (sealed once the session is)."""
        self.sock.sendall(self.framer.frame(amp_bytes))

    def _read_box(self) -> dict[bytes, bytes]:
        """The next box: exactly one frame's payload, as every peer sends
        them (anything else could have been added by someone on the path)."""
        payload = self._next_frame()
        box: dict[bytes, bytes] = {}
        key: bytes | None = None
        at = 0
        while at + _LEN.size <= len(payload):
            (n,) = _LEN.unpack_from(payload, at)
            value = payload[at + _LEN.size : at + _LEN.size + n]
            at += _LEN.size + n
            if len(value) < n:
                break
            if key is None:
                if n == 0:
                    if at != len(payload):
                        break  # more after the box's end
                    return box
                key = value
            else:
                box[key] = value
                key = None
        raise ConnectionError(f"the master {NOT_ONE_BOX}")

    def _next_frame(self) -> bytes:
        """One frame's payload, no more: the master seals its side right after
        answering Authenticate, so the frame after that answer can arrive in
        the same read, and must wait until our side is sealed too."""
        data = b""
        while True:
            with closing(self.framer.feed(data)) as payloads:
                for payload in payloads:
                    return payload
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise TimeoutError("the master did not answer in time")
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
