"""Staying connected: backoff, a handshake that fails, and what is logged."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from cwtx.wire.peer import Peer
from cwtx.wire.reconnect import DescribedEndpoint, reconnecting, retry_policy


@implementer(IStreamClientEndpoint)
class ScriptedEndpoint:
    """Refuses the first ``refusals`` attempts, then connects to a StringTransport."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.attempts = 0
        self.transports: list[StringTransport] = []
        self.built: list[Any] = []  # what ClientService's factory built: proxies

    def connect(self, factory: Any) -> Any:
        self.attempts += 1
        if self.attempts <= self.refusals:
            return fail(ConnectionRefusedError("nobody home"))
        proto = factory.buildProtocol(None)
        self.built.append(proto)
        transport = StringTransport()
        proto.makeConnection(transport)
        self.transports.append(transport)
        return succeed(proto)


def test_the_endpoint_says_where_it_goes_and_why_it_failed():
    endpoint = DescribedEndpoint(ScriptedEndpoint(refusals=1), "node7:5494")
    assert repr(endpoint) == "node7:5494"
    failures = []
    endpoint.connect(None).addErrback(failures.append)
    assert endpoint.last_failure and "nobody home" in endpoint.last_failure
    assert failures


def test_backoff_grows_to_its_ceiling_with_a_little_jitter():
    policy = retry_policy(initial=0.1, most=5.0)
    delays = [policy(n) for n in range(1, 12)]
    assert 0.2 <= delays[0] <= 0.2 + 0.5
    assert all(5.0 <= d <= 5.5 for d in delays[7:])


def test_a_failed_handshake_is_retried_and_the_connection_closed():
    clock = Clock()
    scripted = ScriptedEndpoint(refusals=1)
    endpoint = DescribedEndpoint(scripted, "the master")
    handshakes: list[Peer] = []

    async def prepare(proto: Peer) -> None:
        handshakes.append(proto)
        if len(handshakes) == 1:
            raise ValueError("the master has another secret")

    service = reconnecting(endpoint, lambda: Peer(clock), prepare, clock, retry_policy(0.1, 5.0))
    service.startService()
    assert scripted.attempts == 1 and "nobody home" in endpoint.last_failure
    clock.advance(1)  # the refused attempt is retried: the handshake fails
    assert len(handshakes) == 1 and endpoint.last_failure == "the master has another secret"
    assert scripted.transports[0].disconnecting
    # The closed connection must not upset the service's state machine.
    scripted.built[0].connectionLost(Failure(ConnectionDone()))
    clock.advance(2)  # retried again: this handshake succeeds
    assert len(handshakes) == 2 and all(isinstance(p, Peer) for p in handshakes)
    connected = []
    service.whenConnected().addCallback(connected.append)
    assert connected == [handshakes[1]]
    service.stopService()
