"""What every connection shares: liveness by heartbeat, and being dropped."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.amp import AmpBox

from cwtx.wire.peer import HeartbeatMonitor, Peer


def connected(clock: Clock) -> Peer:
    peer = Peer(clock)
    peer.makeConnection(StringTransport())
    return peer


def test_heartbeats_need_positive_settings():
    with pytest.raises(ValueError, match="must be positive"):
        HeartbeatMonitor(Clock(), interval=0)
    with pytest.raises(ValueError, match="must be positive"):
        HeartbeatMonitor(Clock(), timeout=-1)


def test_a_silent_peer_is_dropped_and_a_dead_one_forgotten():
    clock = Clock()
    monitor = HeartbeatMonitor(clock, interval=1, timeout=3)
    silent, gone = connected(clock), connected(clock)
    monitor.watch(silent)
    monitor.watch(gone)
    gone.dead = True  # its connection closed between beats
    monitor.start()
    clock.advance(1)
    assert monitor._peers == {silent}
    clock.advance(3)
    assert silent.dead
    assert monitor._peers == set()
    monitor.stop()


def test_a_dropped_peer_ignores_what_it_still_receives():
    clock = Clock()
    peer = connected(clock)
    peer.drop("for this test")
    before = peer.last_seen
    clock.advance(5)
    peer.ampBoxReceived(AmpBox({b"_command": b"Heartbeat", b"_ask": b"1"}))
    assert peer.last_seen == before and peer.transport.value() == b""


def test_a_peer_describes_its_connection():
    peer = connected(Clock())
    assert peer.describe().startswith("connection from ")
    assert peer.unwrapped is peer


def test_a_stopped_batch_sender_takes_nothing_more():
    from cwtx.wire.batch import BatchSender
    from cwtx.wire.commands import SubmitJobs

    peer = connected(Clock())
    sender = BatchSender(peer, SubmitJobs, "jobs", lambda item: None)
    sender.stop()
    sender.add(1)
    assert len(sender) == 0 and sender.drained().called
