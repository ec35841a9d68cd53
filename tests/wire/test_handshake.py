"""
The connecting side of the handshake: it refuses a master that cannot prove
the shared secret before it gives its own proof.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.protocols.amp import AMP
from twisted.test.iosim import connectedServerAndClient

import cwtx
from cwtx.wire import handshake as _auth
from cwtx.wire.commands import Authenticate, Hello
from cwtx.wire.peer import Peer

SECRET = b"the master's secret, 32 bytes at least"


def result(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "no answer"
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


class FakeMaster(Peer):
    """Answers Hello with a proof made by ``make_proof``; records Authenticate."""

    def __init__(self, make_proof: Any) -> None:
        super().__init__(Clock())
        self.make_proof = make_proof
        self.authenticated = False

    def ampBoxReceived(self, box: Any) -> None:
        if not self.refused_box(box):  # one box a frame, as every peer
            AMP.ampBoxReceived(self, box)  # a master's side: commands before sealing

    @Hello.responder
    def hello(self, role, name, protocol, python, cloudpickle, nonce, **where):
        mine = b"m" * 32
        return {
            "protocol": protocol,
            "master": "fake",
            "nonce": mine,
            "proof": self.make_proof(nonce, mine),
        }

    @Authenticate.responder
    def authenticate(self, proof):
        self.authenticated = True
        return {}


@pytest.mark.parametrize(
    "make_proof",
    [
        lambda theirs, mine: _auth.proof(SECRET, "client", theirs, mine),  # wrong label
        lambda theirs, mine: _auth.proof(SECRET, "master", mine, theirs),  # nonces swapped
        lambda theirs, mine: _auth.proof(b"y" * 40, "master", theirs, mine),  # wrong secret
        lambda theirs, mine: b"",
    ],
    ids=["label", "order", "secret", "empty"],
)
def test_the_client_refuses_a_master_that_cannot_prove_the_secret(make_proof):
    clock = Clock()
    fake = FakeMaster(make_proof)
    client = Peer(clock)
    _, _, pump = connectedServerAndClient(lambda: fake, lambda: client, clock=clock)
    d = Deferred.fromCoroutine(_auth.handshake(client, "client", "c", SECRET))
    pump.flush()
    with pytest.raises(cwtx.AuthenticationError, match="could not prove"):
        result(d)
    assert not fake.authenticated  # it never got our proof


def test_the_client_accepts_a_master_that_proves_the_secret():
    clock = Clock()
    fake = FakeMaster(lambda theirs, mine: _auth.proof(SECRET, "master", theirs, mine))
    client = Peer(clock)
    _, _, pump = connectedServerAndClient(lambda: fake, lambda: client, clock=clock)
    d = Deferred.fromCoroutine(_auth.handshake(client, "client", "c", SECRET))
    pump.flush()
    assert result(d)["master"] == "fake" and fake.authenticated


def test_proofs_are_exactly_what_docs_protocol_md_says():
    """HMAC-SHA256(secret, "cwtx <label>\\0" + first nonce + second nonce)."""
    import hashlib
    import hmac

    first, second = b"a" * 32, b"b" * 32
    for label in ("master", "client", "worker", "status"):
        expected = hmac.new(
            SECRET, b"cwtx " + label.encode() + b"\0" + first + second, hashlib.sha256
        ).digest()
        assert _auth.proof(SECRET, label, first, second) == expected
        assert _auth.verify(SECRET, label, first, second, expected)
        assert not _auth.verify(SECRET, label, second, first, expected)


def test_the_refusal_says_what_may_be_wrong():
    clock = Clock()
    fake = FakeMaster(lambda theirs, mine: b"")
    client = Peer(clock)
    _, _, pump = connectedServerAndClient(lambda: fake, lambda: client, clock=clock)
    d = Deferred.fromCoroutine(_auth.handshake(client, "client", "c", SECRET))
    pump.flush()
    with pytest.raises(
        cwtx.AuthenticationError,
        match=r"^the master could not prove it knows our shared secret "
        r"\(a different secret, or not a cwtx master\)$",
    ):
        result(d)
