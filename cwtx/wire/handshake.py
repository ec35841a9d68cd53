"""
Mutual HMAC challenge/response, before any other command.

Each side sends a fresh 32-byte nonce.  The master proves it knows the
secret with HMAC-SHA256(secret, "cwtx master" | client nonce | master
nonce); then the connecting side proves it with HMAC-SHA256(secret, "cwtx
<role>" | master nonce | client nonce).  Distinct labels keep one side's
proof useless as the other's; proofs are compared in constant time.  Then
both sides seal the connection with keys derived from the secret, both
nonces and what Hello and its answer said (``session``): proving the
secret once is not enough, every later frame proves it again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from cwtx._errors import AuthenticationError
from cwtx.wire.commands import Authenticate, Hello
from cwtx.wire.session import Framer, session_keys, transcript
from cwtx.wire.versions import hello_arguments

NONCE_BYTES = 32


def nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def proof(secret: bytes, label: str, first: bytes, second: bytes) -> bytes:
    return hmac.new(
        secret, b"cwtx " + label.encode() + b"\0" + first + second, hashlib.sha256
    ).digest()


def verify(secret: bytes, label: str, first: bytes, second: bytes, given: bytes) -> bool:
    return hmac.compare_digest(proof(secret, label, first, second), given)


async def handshake(proto: Any, role: str, name: str, secret: bytes) -> dict[str, Any]:
    """Hello and Authenticate on a fresh connection; the master's hello reply.

    Raises AuthenticationError if the master does not know our secret, or
    refuses our proof.  Once it returns, the connection is sealed.
    """
    mine = nonce()
    hello = hello_arguments(role, name)
    reply = await proto.callRemote(Hello, nonce=mine, **hello)
    theirs = reply["nonce"]
    if len(theirs) != NONCE_BYTES or not verify(secret, "master", mine, theirs, reply["proof"]):
        raise AuthenticationError(
            "the master could not prove it knows our shared secret "
            "(a different secret, or not a cwtx master)"
        )
    await proto.callRemote(Authenticate, proof=proof(secret, role, theirs, mine))
    seal_connecting_side(proto.framer, secret, mine, theirs, role, transcript(hello, reply))
    proto.start_flow_control()
    return reply


def seal_connecting_side(
    framer: Framer, secret: bytes, mine: bytes, theirs: bytes, role: str, said: bytes
) -> None:
    """The master took our proof: from now on every frame is sealed, with
    keys bound to what the handshake said (``said``, its transcript)."""
    ours, the_masters = session_keys(secret, mine, theirs, role, said)
    framer.seal_sending(ours)
    framer.seal_receiving(the_masters)
