"""A worker joining its master: bounded in time whatever the other side does."""

from __future__ import annotations

from twisted.internet.task import Clock

from cwtx.testing import FakeProcessReactor
from cwtx.wire.reconnect import DescribedEndpoint
from cwtx.worker.supervisor import Worker

from ..wire.test_reconnect import ScriptedEndpoint


def test_a_master_that_never_answers_the_handshake_is_given_up_on_and_retried():
    """A peer that accepts the connection and says nothing (a stalled
    master, a relay holding the answer back) must not hold the worker."""
    clock = Clock()
    silent = ScriptedEndpoint()  # connects, and nobody ever answers
    worker = Worker(
        DescribedEndpoint(silent, "a silent master"),
        FakeProcessReactor(clock),
        secret=b"s" * 32,
        name="w",
        heartbeat_timeout=30,
    )
    worker.startService()
    assert silent.attempts == 1
    clock.advance(29)
    assert not silent.transports[0].disconnecting  # still within the timeout
    clock.advance(2)
    assert silent.transports[0].disconnecting  # given up on...
    for _ in range(10):
        clock.advance(10)
    assert silent.attempts >= 2  # ...and tried again, with backoff
    assert worker.connection is None
    worker.stopService()
