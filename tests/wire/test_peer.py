"""What every connection shares: liveness by heartbeat, and being dropped."""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.amp import AmpBox, ConnectionLost
from twisted.python.failure import Failure

from cwtx.wire.commands import Heartbeat
from cwtx.wire.peer import HeartbeatMonitor, Peer
from cwtx.wire.session import AFTER_SEALING, NOT_ONE_BOX, Framer


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


class Recording(Peer):
    """A peer that remembers why it dropped its connection."""

    whys: list[str]

    def drop(self, why: str) -> None:
        self.__dict__.setdefault("whys", []).append(why)
        super().drop(why)


def sealed_peer() -> tuple[Recording, Framer]:
    """A peer whose session is sealed both ways, and a framer that speaks to it."""
    peer = Recording(Clock())
    peer.makeConnection(StringTransport())
    peer.framer.seal_receiving(b"k" * 32)
    peer.framer.seal_sending(b"l" * 32)
    theirs = Framer()
    theirs.seal_sending(b"k" * 32)
    return peer, theirs


def test_a_command_before_the_session_is_sealed_is_refused():
    # The connecting side takes answers only (Hello's, Authenticate's) until
    # it has sealed: a relay could send commands in the clear otherwise.
    peer = Recording(Clock())
    peer.makeConnection(StringTransport())
    answered = peer.callRemote(Heartbeat)
    peer.dataReceived(Framer().frame(AmpBox({b"_answer": b"1"}).serialize()))
    assert answered.called and not peer.dead
    command = AmpBox({b"_command": b"RunJobs", b"_ask": b"2"})
    peer.dataReceived(Framer().frame(command.serialize()))
    assert peer.whys == ["sent b'RunJobs' before the session was sealed"]
    assert peer.dead and peer.transport.disconnecting


def test_a_malformed_box_is_refused_with_its_reason():
    peer, theirs = sealed_peer()
    box = AmpBox({b"_command": b"BlobChunk", b"_ask": b"1", b"blob": b"not a number"})
    peer.dataReceived(theirs.frame(box.serialize()))
    assert peer.transport.disconnecting
    ours = Framer()
    ours.seal_receiving(b"l" * 32)
    (answer,) = ours.feed(peer.transport.value())
    assert b"PROTOCOL_ERROR" in answer and b"malformed BlobChunk" in answer


def test_a_dropped_peer_reads_nothing_more_and_drops_once():
    peer, theirs = sealed_peer()
    peer.drop("first")
    peer.drop("second")
    assert peer.whys == ["first", "second"]  # asked twice...
    assert peer.transport.disconnecting
    # ...and bytes that still arrive, even garbage, are not even unframed.
    peer.dataReceived(b"\xff" * 100)
    assert peer.framer._buffer == b""


def test_sending_on_a_lost_connection_is_connection_lost():
    peer = connected(Clock())
    peer.connectionLost(Failure(ConnectionDone()))
    peer.transport = None
    with pytest.raises(ConnectionLost):
        peer.sendBox(AmpBox({b"_command": b"Heartbeat", b"_ask": b"1"}))


def test_a_transport_that_refuses_no_delay_is_still_used():
    class NoDelayRefused(StringTransport):
        def setTcpNoDelay(self, enabled: bool) -> None:
            raise OSError("not a TCP socket")

    peer = Peer(Clock())
    peer.makeConnection(NoDelayRefused())
    peer.sendBox(AmpBox({b"_command": b"Heartbeat", b"_ask": b"1"}))
    assert peer.transport.value()


def sealing_on_answer() -> tuple[Recording, bytes]:
    """A peer that seals its session when its call is answered (as the
    connecting side does on Authenticate's answer), and that answer."""
    peer = Recording(Clock())
    peer.makeConnection(StringTransport())
    peer.callRemote(Heartbeat).addCallback(lambda _: peer.framer.seal_receiving(b"k" * 32))
    return peer, AmpBox({b"_answer": b"1"}).serialize()


@pytest.mark.parametrize("whole", [True, False])
def test_nothing_may_follow_the_sealing_box_in_its_frame(whole):
    peer, answer = sealing_on_answer()
    command = AmpBox({b"_command": b"RunTasks", b"_ask": b"2"}).serialize()
    extra = command if whole else command[:12]  # finished later, it would pass as sealed
    peer.dataReceived(Framer().frame(answer + extra))
    assert peer.framer.sealed
    assert peer.whys == [AFTER_SEALING]
    assert peer.dead and peer.transport.disconnecting


def test_the_sealing_box_may_end_its_frame():
    peer, answer = sealing_on_answer()
    peer.dataReceived(Framer().frame(answer))
    assert peer.framer.sealed and not peer.dead


@pytest.mark.parametrize("key", [b"_answer", b"_error"])
def test_an_answer_to_a_question_never_asked_is_refused(key):
    peer, theirs = sealed_peer()
    peer.dataReceived(theirs.frame(AmpBox({key: b"77", b"_error_code": b"X"}).serialize()))
    assert peer.whys == ["answered a question we did not ask (tag b'77')"]
    assert peer.dead and peer.transport.disconnecting


def test_connections_made_and_lost_are_not_logged_one_line_each():
    """AMP logs both at info level: anyone who can connect could fill the
    log.  What matters about a peer is logged by cwtx, rate-limited."""
    from twisted.logger import globalLogPublisher

    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        for _ in range(3):
            peer = connected(Clock())
            peer.connectionLost(Failure(ConnectionDone()))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e for e in events if "connection" in str(e.get("log_format", ""))] == []
    assert peer.transport is None and peer.dead


@pytest.mark.parametrize("sealed", [True, False])
def test_a_frame_carries_exactly_one_box(sealed):
    """Every peer sends one box a frame.  Two boxes in one frame (a fake
    Authenticate answer after the Hello answer; thousands of Status calls
    handled in one go) or none close the connection."""
    heartbeat = AmpBox({b"_command": b"Heartbeat", b"_ask": b"5"}).serialize()
    answers = AmpBox({b"_answer": b"1"}).serialize() + AmpBox({b"_answer": b"2"}).serialize()
    for payload in (heartbeat + heartbeat if sealed else answers, b""):
        if sealed:
            peer, theirs = sealed_peer()
        else:
            peer, theirs = Recording(Clock()), Framer()
            peer.makeConnection(StringTransport())
            peer.callRemote(Heartbeat), peer.callRemote(Heartbeat)
        peer.dataReceived(theirs.frame(payload))
        assert peer.whys == [NOT_ONE_BOX], payload[:20]
        assert peer.dead and peer.transport.disconnecting


def test_flushed_fires_once_a_batch_is_handed_over_however_much_follows():
    """A result waits for its job's output to be on its way, not for the
    output sender to be idle: another job's endless output (each batch
    answered a little after the next has come) must not hold it back."""
    from cwtx.wire.batch import BatchSender
    from cwtx.wire.commands import TaskOutput

    clock = Clock()
    peer = connected(clock)
    sender = BatchSender(
        peer, TaskOutput, "output", lambda i: ({"task": i, "stream": "stdout", "text": "x"}, {})
    )
    sender.add(1)
    first = sender.flushed()
    assert not first.called
    clock.advance(0)
    assert first.called and b"TaskOutput" in peer.transport.value()
    for i in range(2, 50):  # more keeps coming before each answer
        sender.add(i)
        later = sender.flushed()
        clock.advance(0)
        peer.ampBoxReceived(AmpBox({b"_answer": b"%x" % (i - 1)}))  # the previous batch's
        assert later.called, i
        assert not sender.drained().called
