"""
The blocking AMP caller (``cw status``, launchers) against a real master
connection in memory: the same command classes, errors as the commands
declare them, and heartbeats answered while it waits.
"""

from __future__ import annotations

from unittest.mock import patch

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.amp import AmpBox

import cwtx
from cwtx.client.status import authenticated
from cwtx.master.connection import MasterConnection
from cwtx.master.master import Master
from cwtx.wire import handshake as auth
from cwtx.wire.blocking_amp import BlockingAMP
from cwtx.wire.commands import Heartbeat, Hello, Status
from cwtx.wire.names import Role
from cwtx.wire.peer import HeartbeatMonitor
from cwtx.wire.session import HEADER, PLAIN, Framer
from cwtx.wire.status import read
from cwtx.wire.versions import hello_arguments

SECRET = b"a secret for the blocking caller tests"


class FakeSocket:
    """What BlockingAMP needs of a socket, wired to a protocol in memory."""

    def __init__(self, server: MasterConnection) -> None:
        self.server = server
        self.transport = StringTransport()
        server.makeConnection(self.transport)
        self._unread = b""

    def sendall(self, data: bytes) -> None:
        self.server.dataReceived(data)

    def recv(self, n: int) -> bytes:
        self._unread += self.transport.value()
        self.transport.clear()
        if not self._unread:
            assert self.transport.disconnecting, "recv would block forever"
            return b""
        data, self._unread = self._unread[:n], self._unread[n:]
        return data


@pytest.fixture
def master():
    return Master()


def connect(master: Master) -> FakeSocket:
    clock = Clock()
    return FakeSocket(MasterConnection(master, HeartbeatMonitor(clock), clock, SECRET))


def test_status_through_the_command_classes(master):
    sock = connect(master)
    amp = authenticated(sock, SECRET, Role.STATUS, "status", "memory")
    status = read(amp.call(Status, page=0)["status"])
    assert status["master"] == master.id and status["workers"] == []


def test_heartbeats_from_the_master_are_answered_while_waiting(master):
    sock = connect(master)
    amp = authenticated(sock, SECRET, Role.STATUS, "status", "memory")
    answered = []
    sock.server.callRemote(Heartbeat).addCallback(answered.append)
    assert "status" in amp.call(Status, page=0)
    assert answered == [{}]


def test_a_sealed_frame_in_the_same_read_as_the_authenticate_answer(master):
    """The master seals right after answering Authenticate and may send at
    once (a heartbeat): both frames can arrive in one read, before our side
    is sealed."""
    sock = connect(master)
    sent = sock.sendall

    def sendall(data: bytes) -> None:
        sent(data)
        if sock.server.authenticated and not asked:
            asked.append(sock.server.callRemote(Heartbeat))

    asked: list = []
    sock.sendall = sendall
    amp = authenticated(sock, SECRET, Role.STATUS, "status", "memory")
    assert asked, "the heartbeat was not sent in the same read"
    assert "status" in amp.call(Status, page=0)
    answered = []
    asked[0].addCallback(answered.append)
    assert answered == [{}]


def test_a_master_without_our_secret_is_refused(master):
    sock = connect(master)
    with pytest.raises(cwtx.AuthenticationError, match="could not prove"):
        authenticated(sock, b"another secret entirely, not the master's", Role.STATUS, "s", "m")


def test_errors_arrive_as_the_commands_declare_them(master):
    args = {**hello_arguments(Role.CLIENT, "future"), "protocol": 999, "nonce": auth.nonce()}
    with pytest.raises(cwtx.ProtocolMismatch, match="protocol 999"):
        BlockingAMP(connect(master)).call(Hello, **args)


def test_a_closed_connection_is_a_connection_error(master):
    sock = connect(master)
    sock.transport.loseConnection()
    with pytest.raises(ConnectionError, match="closed the connection"):
        BlockingAMP(sock).call(Status, page=0)


def test_bytes_after_the_authenticate_answer_in_its_frame_are_refused(master):
    """A relay adds a forged Status answer after Authenticate's answer, in
    its frame, in the clear: it must not be read as the master's."""
    sock = connect(master)
    sent = sock.sendall
    forged = AmpBox({b"_answer": b"3", b"status": b"forged"}).serialize()

    def sendall(data: bytes) -> None:
        sent(data)
        if sock.server.authenticated and not done:
            done.append(True)
            out = sock.transport.value()
            sock.transport.clear()
            length, kind = HEADER.unpack_from(out)
            assert kind == PLAIN
            payload = out[HEADER.size : HEADER.size + length] + forged
            rest = out[HEADER.size + length :]
            sock.transport.write(HEADER.pack(len(payload), PLAIN) + payload + rest)

    done: list = []
    sock.sendall = sendall
    with pytest.raises(ConnectionError, match="a frame that was not exactly one AMP box"):
        authenticated(sock, SECRET, Role.STATUS, "status", "memory")
    assert done


@pytest.mark.parametrize(
    "payload",
    [
        AmpBox({b"_answer": b"1"}).serialize()[:-1],  # cut short
        AmpBox({b"_answer": b"1"}).serialize()[:5],  # cut inside a key
        AmpBox({b"_answer": b"1"}).serialize() + b"\x00",  # more after its end
        b"",
    ],
    ids=["cut short", "cut inside a key", "more after it", "empty"],
)
def test_a_frame_must_hold_exactly_one_box(payload):
    class OneFrame:
        def recv(self, n: int) -> bytes:
            return Framer().frame(payload)

    with pytest.raises(ConnectionError, match="not exactly one AMP box"):
        BlockingAMP(OneFrame())._read_box()  # type: ignore[arg-type]


def test_a_master_that_trickles_heartbeats_cannot_hold_us_past_the_timeout():
    """Each read has its own timeout; a peer that sends a heartbeat now and
    then would hold the caller for ever without a deadline for the whole."""

    class Trickle:
        def __init__(self) -> None:
            self.clock = 0.0

        def sendall(self, data: bytes) -> None:
            pass

        def recv(self, n: int) -> bytes:
            self.clock += 2  # a heartbeat every 2 s
            box = AmpBox({b"_command": b"Heartbeat", b"_ask": b"%d" % self.clock})
            return Framer().frame(box.serialize())

    trickle = Trickle()
    amp = BlockingAMP(trickle, timeout=5)  # type: ignore[arg-type]
    with patch("cwtx.wire.blocking_amp.time.monotonic", lambda: trickle.clock):
        amp.deadline = 5
        with pytest.raises(TimeoutError, match="did not answer in time"):
            amp.call(Status, page=0)
    assert trickle.clock <= 8
