"""
A connection to the master, in memory (iosim on a Clock): the handshake
(fresh nonces, proofs bound to their label and both nonces), nothing before
authentication, the responders of each role, and the byte limits.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.protocols.amp import AmpBox, ConnectionLost, UnhandledCommand
from twisted.test.iosim import connectedServerAndClient

import cwtx
from cwtx.master import connection as _master_protocol
from cwtx.master.connection import MasterConnection
from cwtx.master.master import Master
from cwtx.master.roles import ClientResponders
from cwtx.wire import handshake as _auth
from cwtx.wire.blobs import BLOB_OVERHEAD, PIECE_OVERHEAD
from cwtx.wire.commands import (
    Authenticate,
    BlobChunk,
    CancelJobs,
    Hello,
    RegisterWorker,
    Status,
    SubmitJobs,
    TaskResults,
)
from cwtx.wire.peer import HeartbeatMonitor, Peer
from cwtx.wire.session import HEADER, PLAIN, SEALED, transcript
from cwtx.wire.status import read as status_read
from cwtx.wire.versions import hello_arguments

SECRET = b"the master's secret, 32 bytes at least"


class Link:
    """A raw AMP peer connected in memory to a fresh MasterConnection."""

    def __init__(self, master: Master | None = None, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.master = master or Master()
        self.server = MasterConnection(
            self.master, HeartbeatMonitor(self.clock), self.clock, SECRET, auth_timeout=10
        )
        self.peer = Peer(self.clock)  # it frames, and seals once authenticated
        _, _, self.pump = connectedServerAndClient(
            lambda: self.server, lambda: self.peer, clock=self.clock
        )

    def call(self, command: Any, **kwargs: Any) -> Any:
        """Send a command, move the bytes; its result (raises its error)."""
        box: list[Any] = []
        self.peer.callRemote(command, **kwargs).addBoth(box.append)
        self.pump.flush()
        return result_of(box)

    def hello(self, nonce: bytes, role: str = "client") -> dict[str, Any]:
        return self.call(Hello, nonce=nonce, **hello_arguments(role, "test"))

    def send_raw(self, data: bytes) -> None:
        """Send AMP bytes, framed (sealed once authenticated)."""
        self.send_bytes(self.peer.framer.frame(data))

    def send_bytes(self, data: bytes) -> None:
        """Send bytes as they are, no frame."""
        self.peer.transport.write(data)
        self.pump.flush()

    @property
    def dropped(self) -> bool:
        return self.server.dead and (
            self.server.transport is None or self.server.transport.disconnecting
        )


def result(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    return result_of(box)


def result_of(box: list[Any]) -> Any:
    assert box, "the command got no answer"
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


def authenticated(role: str = "client") -> Link:
    link = Link()
    mine = _auth.nonce()
    reply = link.hello(mine, role)
    link.call(Authenticate, proof=_auth.proof(SECRET, role, reply["nonce"], mine))
    assert link.server.authenticated
    said = transcript(hello_arguments(role, "test"), reply)
    _auth.seal_connecting_side(link.peer.framer, SECRET, mine, reply["nonce"], role, said)
    return link


# -- proofs ----------------------------------------------------------------------------


def test_the_master_proves_the_secret_over_both_nonces():
    link = Link()
    mine = _auth.nonce()
    reply = link.hello(mine)
    assert len(reply["nonce"]) == _auth.NONCE_BYTES
    assert reply["proof"] == _auth.proof(SECRET, "master", mine, reply["nonce"])
    assert reply["master"] == link.master.id


def test_each_connection_gets_a_fresh_master_nonce():
    same = b"n" * 32
    replies = [Link().hello(same) for _ in range(3)]
    assert len({r["nonce"] for r in replies}) == 3
    assert len({r["proof"] for r in replies}) == 3


def test_a_proof_replayed_on_another_connection_is_refused():
    """Someone who saw one connection's proof cannot log in with it again."""
    mine = b"c" * 32
    first = Link()
    seen = first.hello(mine)
    replayed = _auth.proof(SECRET, "client", seen["nonce"], mine)
    second = Link()
    second.hello(mine)
    with pytest.raises(Exception, match="authentication failed"):
        second.call(Authenticate, proof=replayed)
    assert not second.server.authenticated and second.dropped


def test_a_correct_proof_is_accepted_and_opens_the_role():
    link = authenticated("client")
    assert isinstance(link.server.responders, ClientResponders)
    assert status_read(link.call(Status, page=0)["status"])["master"] == link.master.id


@pytest.mark.parametrize(
    ("role", "command", "arguments"),
    [
        ("client", RegisterWorker, {"slots": 1, "resources": "{}"}),
        ("client", TaskResults, {"results": []}),
        ("worker", SubmitJobs, {"jobs": []}),
        ("worker", Status, {"page": 0}),
        ("status", SubmitJobs, {"jobs": []}),
        ("status", CancelJobs, {"jobs": [1]}),
    ],
)
def test_a_role_cannot_name_another_roles_commands(role, command, arguments):
    link = authenticated(role)
    with pytest.raises(UnhandledCommand):
        link.call(command, **arguments)
    assert link.master.workers == [] and len(link.master.clients) == (role == "client")


@pytest.mark.parametrize(
    ("role", "label", "order"),
    [
        ("client", "master", "theirs-first"),  # the master's own proof, reflected
        ("client", "master", "mine-first"),
        ("worker", "master", "theirs-first"),
        ("client", "worker", "theirs-first"),  # another role's proof
        ("worker", "client", "theirs-first"),
        ("client", "client", "mine-first"),  # nonces swapped
    ],
)
def test_a_proof_with_another_label_or_order_is_refused(role, label, order):
    link = Link()
    mine = _auth.nonce()
    reply = link.hello(mine, role)
    if order == "theirs-first":
        forged = _auth.proof(SECRET, label, reply["nonce"], mine)
    else:
        forged = _auth.proof(SECRET, label, mine, reply["nonce"])
    with pytest.raises(Exception, match="authentication failed"):
        link.call(Authenticate, proof=forged)
    assert not link.server.authenticated and link.dropped
    assert link.server.responders is None and link.master.clients == []


def test_the_masters_reply_proof_itself_is_refused_as_a_login():
    link = Link()
    reply = link.hello(_auth.nonce())
    with pytest.raises(Exception, match="authentication failed"):
        link.call(Authenticate, proof=reply["proof"])
    assert link.dropped


def test_a_wrong_secret_is_refused():
    link = Link()
    mine = _auth.nonce()
    reply = link.hello(mine)
    with pytest.raises(Exception, match="authentication failed"):
        link.call(Authenticate, proof=_auth.proof(b"x" * 40, "client", reply["nonce"], mine))
    assert link.dropped


def test_authenticate_before_hello_and_a_second_hello_are_refused():
    link = Link()
    with pytest.raises(Exception, match="authenticate once, after hello"):
        link.call(Authenticate, proof=b"p" * 32)
    assert link.dropped
    link = Link()
    link.hello(_auth.nonce())
    with pytest.raises(Exception, match="already"):
        link.hello(_auth.nonce())
    assert link.dropped


def test_names_and_versions_are_escaped_once_they_arrive():
    """They reach the log and `cw status`: a CR or an ANSI escape in a name
    must not forge a line or repaint a terminal."""
    link = Link()
    arguments = hello_arguments("client", "evil\r\x1b[2Jworker FORGED joined")
    arguments["python"] = "3.11\n\x1b[31m"
    link.call(Hello, nonce=_auth.nonce(), **arguments)
    conn = link.server
    assert conn.name == "evil\\r\\x1b[2Jworker FORGED joined"
    assert conn.versions[0] == "3.11\\n\\x1b[31m"
    assert all(c.isprintable() for c in conn.name + "".join(conn.versions))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"protocol": 999}, "protocol 999"),
        ({"role": "admin"}, "bad hello"),
        ({"nonce": b"short"}, "bad hello"),
    ],
)
def test_bad_hellos_are_refused(change, message):
    link = Link()
    args = {**hello_arguments("client", "x"), "nonce": _auth.nonce(), **change}
    with pytest.raises(Exception, match=message):
        link.call(Hello, **args)
    assert link.dropped


# -- before authentication ---------------------------------------------------------------


def test_nothing_but_the_handshake_before_authentication():
    link = Link()
    with pytest.raises(ConnectionDone):  # dropped before it could answer
        link.call(Status, page=0)
    assert link.dropped


def test_bytes_before_authentication_are_capped():
    link = Link()
    arguments = hello_arguments("client", "n" * 9_000)  # a long name: answered
    link.call(Hello, nonce=_auth.nonce(), **arguments)
    assert not link.dropped
    # 9 KB more is over the 16 KiB a peer may send before authenticating:
    # dropped before its proof is even read.
    answer: list[Any] = []
    link.peer.callRemote(Authenticate, proof=b"p" * 9_000).addBoth(answer.append)
    link.pump.flush()
    assert link.dropped
    assert answer and answer[0].check(ConnectionDone, ConnectionLost), answer  # no answer


def test_a_frame_that_is_not_exactly_one_box_is_refused():
    piece = AmpBox({b"k": b"v" * 1000}).serialize()
    for frame in (piece[:-2], piece + piece, piece + b"\x00"):  # cut short, two, more
        link = Link()
        link.send_raw(frame)
        assert link.dropped


def test_a_frame_longer_than_allowed_before_authentication_is_refused_at_once():
    link = Link()
    link.send_bytes(HEADER.pack(_master_protocol.PREAUTH_BYTES + 1, PLAIN))
    assert link.dropped


def test_a_connection_that_does_not_authenticate_in_time_is_dropped():
    link = Link()
    link.hello(_auth.nonce())
    link.clock.advance(9.9)
    assert not link.dropped
    link.clock.advance(0.2)
    assert link.dropped


def test_authenticating_in_time_cancels_the_timer():
    link = authenticated()
    link.clock.advance(60)
    assert not link.server.dead


# -- after authentication ----------------------------------------------------------------


def test_a_box_over_the_size_limit_drops_the_connection(monkeypatch):
    monkeypatch.setattr(_master_protocol, "MAX_BOX_BYTES", 200_000)
    link = authenticated()
    # A BlobChunk box of about 130 KB is fine.
    link.call(BlobChunk, blob=1, data=[b"a" * 65_000, b"b" * 65_000])
    assert not link.dropped
    # One of about 260 KB is not: refused by its frame's header, unread.
    box = AmpBox({b"_command": b"BlobChunk", b"_ask": b"9", b"blob": b"2", b"data": b"4"})
    data = box.serialize()[:-2]
    for i in range(4):
        data += AmpBox({b"data.%d" % i: b"x" * 65_000}).serialize()[:-2]
    frame = link.peer.framer.frame(data + b"\x00\x00")
    link.send_bytes(frame[: HEADER.size])
    assert link.dropped
    # Nor can it be spread over frames that are each small enough: a frame
    # is one whole box.
    link = authenticated()
    link.send_raw(data[:50_000])
    assert link.dropped


def test_the_real_box_limit_refuses_a_box_over_8_mib():
    link = authenticated()
    limit = 8 * 1024**2 + 16  # a box of 8 MiB, sealed
    link.send_bytes(HEADER.pack(limit + 1, SEALED))
    assert link.dropped
    link = authenticated()
    link.send_bytes(HEADER.pack(limit, SEALED))  # the largest frame: waited for
    assert not link.dropped


def test_the_real_box_limit_admits_a_full_blob_chunk_box():
    link = authenticated()
    link.call(BlobChunk, blob=1, data=[b"z" * 65_000] * 16)
    assert not link.dropped
    assert link.server.blobs_in.held_bytes == 16 * (65_000 + PIECE_OVERHEAD) + BLOB_OVERHEAD


def test_empty_pieces_count_and_are_not_kept(monkeypatch):
    """64 empty pieces a box, in one blob, box after box: each piece counts,
    none is kept, and the cap on unclaimed bytes is reached."""
    monkeypatch.setattr(_master_protocol, "MAX_UNCLAIMED_BYTES", 100_000)
    link = authenticated()
    link.call(BlobChunk, blob=1, data=[b""] * 64)
    blobs = link.server.blobs_in
    assert blobs.held_bytes == 64 * PIECE_OVERHEAD + BLOB_OVERHEAD
    assert blobs._blobs[1].pieces == []
    with pytest.raises(Exception, match="not yet claimed"):
        for _ in range(100_000 // (64 * PIECE_OVERHEAD) + 1):
            link.call(BlobChunk, blob=1, data=[b""] * 64)
    assert link.dropped


def test_unclaimed_blob_bytes_are_capped(monkeypatch):
    monkeypatch.setattr(_master_protocol, "MAX_UNCLAIMED_BYTES", 300_000)
    link = authenticated()
    for blob in (1, 2, 3, 4):
        link.call(BlobChunk, blob=blob, data=[b"u" * 65_000])
    with pytest.raises(Exception, match="not yet claimed"):
        link.call(BlobChunk, blob=5, data=[b"u" * 65_000])
    assert link.dropped


def test_the_default_unclaimed_limit_is_the_documented_one():
    link = authenticated()
    assert link.server.blobs_in.max_bytes == _master_protocol.MAX_UNCLAIMED_BYTES == 2 * 1024**3


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"slots": 0, "resources": "{}"}, "slots must be from 1 to 100000, not 0"),
        ({"slots": 1, "resources": "{oops"}, "resources must be a JSON object"),
        ({"slots": 1, "resources": "[1]"}, "resources must be a JSON object"),
        ({"slots": 1, "resources": '{"x": "' + "\u00e9" * 200 + '"}'}, "resources of 1209 bytes"),
    ],
)
def test_a_bad_registration_is_a_protocol_error(arguments, complaint):
    link = authenticated("worker")
    with pytest.raises(cwtx.ProtocolError, match=complaint):
        link.call(RegisterWorker, **arguments)
    assert link.dropped and link.master.workers == []


def test_a_worker_must_register_before_it_reports():
    link = authenticated("worker")
    with pytest.raises(cwtx.ProtocolError, match="a worker must register first"):
        link.call(TaskResults, results=[])


def test_nothing_is_read_from_a_dropped_connection():
    link = Link()
    link.server.drop("for this test")
    link.send_bytes(b"anything at all")  # ignored, no error
    assert link.server.role is None


# -- malformed boxes and what is logged ---------------------------------------------------


@pytest.fixture
def log_lines():
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []

    def keep(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(keep)
    yield lines
    globalLogPublisher.removeObserver(keep)


def test_a_malformed_hello_gets_a_protocol_error_that_says_why(log_lines):
    link = Link()
    box = AmpBox({b"_command": b"Hello", b"_ask": b"1", b"role": b"client"})  # no nonce...
    answers: list = []
    link.peer.ampBoxReceived = answers.append  # see the raw answer
    link.send_raw(box.serialize())
    (answer,) = answers
    assert answer[b"_error_code"] == b"PROTOCOL_ERROR"
    assert b"malformed Hello" in answer[b"_error_description"]
    assert link.dropped
    assert len([line for line in log_lines if "malformed Hello" in line]) == 1
    assert not [line for line in log_lines if "Traceback" in line]


def test_a_malformed_records_value_gets_a_protocol_error(log_lines):
    link = authenticated()
    box: list = []
    link.peer.callRemoteString(b"SubmitJobs", jobs=b"\x00\x01").addBoth(box.append)
    link.pump.flush()
    (failure,) = box
    assert failure.value.errorCode == b"PROTOCOL_ERROR"
    assert "malformed SubmitJobs: truncated record at byte 0" in failure.value.description
    assert link.dropped and not [line for line in log_lines if "Traceback" in line]


def test_lines_about_one_host_are_rate_limited(log_lines):
    master = Master()
    for _ in range(20):
        link = Link(master=master)
        link.send_raw(AmpBox({b"_command": b"Status", b"_ask": b"1"}).serialize())
        assert link.dropped
    said = [line for line in log_lines if "before authenticating" in line]
    assert len(said) == master.log_limit.burst


def test_a_peer_that_leaves_after_hello_is_logged_with_its_address(log_lines):
    """A worker or client with another secret refuses our proof and hangs
    up before Authenticate: the master's log says so."""
    link = Link()
    link.hello(_auth.nonce(), role="worker")
    link.peer.transport.loseConnection()
    link.pump.flush()
    (line,) = [line for line in log_lines if "after Hello" in line]
    assert "worker test (" in line and "different shared secret" in line
    assert f"({link.server.peer_address})" in line and "(?)" not in line


def test_peer_names_reach_the_log_escaped(log_lines):
    link = Link()
    args = {**hello_arguments("client", "evil\r\nFAKE LINE\x1b[31m"), "nonce": _auth.nonce()}
    link.call(Hello, **args)
    with pytest.raises(Exception, match="authentication failed"):  # noqa: B017
        link.call(Authenticate, proof=b"p" * 32)
    (line,) = [line for line in log_lines if "authentication failed" in line]
    assert "evil\\r\\nFAKE LINE\\x1b[31m" in line and "\r" not in line and "\x1b" not in line


def test_an_answer_to_a_question_the_master_never_asked_is_refused():
    link = authenticated()
    link.send_raw(AmpBox({b"_answer": b"424242"}).serialize())
    assert link.dropped


def test_a_connection_is_dropped_once():
    link = authenticated()
    link.server.drop("first")
    transport = link.server.transport
    link.server.drop("again")  # nothing more: no second abort, no second log line
    assert link.server.dead and transport.disconnecting


@pytest.mark.parametrize(("pid", "kept"), [(4242, 4242), (-1, 0), (2**32, 0), (-(10**4000), 0)])
def test_where_a_peer_says_it_runs_is_kept_within_bounds(pid, kept):
    link = Link()
    said = {**hello_arguments("client", "test"), "pid": pid, "host": "h\x1b[2J" * 50}
    link.call(Hello, nonce=_auth.nonce(), **said)
    origin = link.server.origin
    assert origin["pid"] == kept
    assert "\x1b" not in origin["host"] and len(origin["host"]) <= 110


# -- after a client leaves -------------------------------------------------------------


@pytest.mark.parametrize("role", ["client", "worker", "status"])
def test_the_master_hears_when_a_client_has_left(role):
    """So it can give back what the client held (``trim``): once its
    session is removed, and only for clients."""
    link = authenticated(role)
    seen: list[int] = []
    link.server.client_left = lambda: seen.append(len(link.master.clients))
    link.peer.transport.loseConnection()
    link.pump.flush()
    assert seen == ([0] if role == "client" else [])


def test_the_factory_hands_its_connections_what_to_call_when_a_client_leaves():
    hook = object()
    factory = _master_protocol.MasterFactory(
        Master(), HeartbeatMonitor(Clock()), Clock(), SECRET, client_left=hook
    )
    assert factory.buildProtocol(None).client_left is hook
