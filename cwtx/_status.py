"""
A blocking status query, for launchers and the ``cw`` command: they must
wait for a master before any reactor runs, so this speaks the two AMP
commands it needs (Hello, Status) over a plain socket.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from twisted.protocols.amp import AmpBox

from . import _auth as auth
from ._errors import AuthenticationError
from ._secret import load_secret
from ._versions import hello_arguments

_LEN = struct.Struct("!H")


def _read_box(sock: socket.socket, buffer: bytearray) -> dict[bytes, bytes]:
    box: dict[bytes, bytes] = {}
    key: bytes | None = None
    while True:
        while len(buffer) < 2:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the master closed the connection")
            buffer += data
        (n,) = _LEN.unpack_from(buffer)
        while len(buffer) < 2 + n:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the master closed the connection")
            buffer += data
        value = bytes(buffer[2 : 2 + n])
        del buffer[: 2 + n]
        if key is None:
            if n == 0:
                return box
            key = value
        else:
            box[key] = value
            key = None


def _call(
    sock: socket.socket, buffer: bytearray, tag: int, command: str, **args: Any
) -> dict[bytes, bytes]:
    box = AmpBox({b"_command": command.encode(), b"_ask": str(tag).encode()})
    for k, v in args.items():
        if isinstance(v, bool):
            v = "True" if v else "False"
        box[k.encode()] = v if isinstance(v, bytes) else str(v).encode("utf-8")
    sock.sendall(box.serialize())
    while True:
        reply = _read_box(sock, buffer)
        if b"_command" in reply:  # the master asks too (heartbeats): answer
            if b"_ask" in reply:
                sock.sendall(AmpBox({b"_answer": reply[b"_ask"]}).serialize())
            continue
        if reply.get(b"_answer", reply.get(b"_error")) == str(tag).encode():
            break
    if b"_error" in reply:
        raise ConnectionError(
            f"the master refused {command}: "
            f"{reply.get(b'_error_description', b'').decode(errors='replace')}"
        )
    return reply


def query_status(
    host: str, port: int, timeout: float = 5.0, secret: bytes | None = None
) -> dict[str, Any]:
    """The master's status as a dict; raises OSError if it does not answer
    (AuthenticationError, an OSError too, if the secrets differ)."""
    secret = load_secret() if secret is None else secret
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        buffer = bytearray()
        mine = auth.nonce()
        hello = _call(sock, buffer, 1, "Hello", nonce=mine, **hello_arguments("status", "status"))
        theirs = hello.get(b"nonce", b"")
        if not auth.verify(secret, "master", mine, theirs, hello.get(b"proof", b"")):
            raise AuthenticationError(
                f"the master at {host}:{port} could not prove it knows our shared secret"
            )
        _call(sock, buffer, 2, "Authenticate", proof=auth.proof(secret, "status", theirs, mine))
        reply = _call(sock, buffer, 3, "Status", detail=False)
        return json.loads(reply[b"status"])
