"""A blocking status query: launchers and ``cw status`` wait for a master
before any reactor runs (see ``wire.blocking_amp``)."""

from __future__ import annotations

import socket
from typing import Any

from cwtx._errors import AuthenticationError
from cwtx._secret import load_secret
from cwtx.wire import handshake as auth
from cwtx.wire.blocking_amp import BlockingAMP
from cwtx.wire.commands import Authenticate, Hello, Status
from cwtx.wire.names import Role
from cwtx.wire.session import transcript
from cwtx.wire.status import merge, read
from cwtx.wire.versions import hello_arguments


def query_status(
    host: str, port: int, timeout: float = 5.0, secret: bytes | None = None
) -> dict[str, Any]:
    """The master's status as a dict; raises OSError if it does not answer
    (AuthenticationError, an OSError too, if the secrets differ)."""
    secret = load_secret() if secret is None else secret
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        amp = authenticated(sock, secret, Role.STATUS, "status", f"{host}:{port}", timeout)
        first = read(amp.call(Status, page=0)["status"])
        rest = [read(amp.call(Status, page=n)["status"]) for n in range(1, first["pages"])]
        return merge([first, *rest])


def authenticated(
    sock: socket.socket,
    secret: bytes,
    role: Role,
    name: str,
    where: str,
    timeout: float | None = None,
) -> BlockingAMP:
    """Hello and Authenticate on a connected socket; the caller for what
    follows, which gives up ``timeout`` seconds from now (None: never)."""
    amp = BlockingAMP(sock, timeout)
    mine = auth.nonce()
    said = hello_arguments(role, name)
    hello = amp.call(Hello, nonce=mine, **said)
    if not auth.verify(secret, "master", mine, hello["nonce"], hello["proof"]):
        raise AuthenticationError(
            f"the master at {where} could not prove it knows our shared secret"
        )
    amp.call(Authenticate, proof=auth.proof(secret, role, hello["nonce"], mine))
    auth.seal_connecting_side(
        amp.framer, secret, mine, hello["nonce"], role, transcript(said, hello)
    )
    return amp
