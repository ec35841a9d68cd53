"""
What every cwtx connection shares: framing and sealing (``session``),
liveness by heartbeat, blob reception, and ignoring a peer once it has been
declared dead.
"""

from __future__ import annotations

import copy
from typing import Any

import txaio
from twisted.internet.defer import fail
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.protocols.amp import (
    AMP,
    BinaryBoxProtocol,
    CommandLocator,
    ConnectionLost,
    RemoteAmpError,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from cwtx._logs import printable
from cwtx.wire.blobs import BlobReceiver, BlobSender
from cwtx.wire.commands import BlobChunk, Heartbeat
from cwtx.wire.session import AFTER_SEALING, NOT_ONE_BOX, Framer, SessionError

txaio.use_twisted()
log = txaio.make_logger()

#: Bytes we may have written to a peer that it has not taken before we stop
#: reading from it: far beyond what honest windows put in flight.
MAX_UNFLUSHED = 16 * 1024 * 1024

#: Seconds between heartbeats, and of silence before a peer is dead.
HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_TIMEOUT = 30.0


class Guarded(CommandLocator):
    """Responders for boxes that do not parse (a missing or malformed
    argument, a bad Records value) end in a fatal PROTOCOL_ERROR that says
    why, where AMP would answer "Unknown Error" and log a traceback."""

    def locateResponder(self, name: bytes) -> Any:
        responder = super().locateResponder(name)
        if responder is None:
            return None

        def guarded(box: Any) -> Any:
            try:
                answer = responder(box)  # raises only while parsing the box
            except Exception as e:
                why = f"malformed {printable(name.decode('ascii', 'replace'), 40)}: {printable(e)}"
                self.refused(why)
                return fail(RemoteAmpError(b"PROTOCOL_ERROR", why, fatal=True))
            return answer.addErrback(self._refusing)

        return guarded

    def _refusing(self, failure: Any) -> Any:
        error = failure.value
        if isinstance(error, RemoteAmpError) and error.fatal:
            self.refused(printable(error.description, 300))
        return failure

    def refused(self, why: str) -> None:
        """A box was refused, fatally: its sender is told why, then closed."""
        log.warn("refused: {why}", why=why)


@implementer(IPushProducer)
class Peer(Guarded, AMP):
    """An AMP connection in frames, sealed once the handshake is done, that
    tracks when it last heard from the other side.

    Before its session is sealed, the connecting side accepts nothing but
    answers: commands arrive only sealed, from a holder of the secret.  The
    box that seals a session (Authenticate, or its answer) must end its
    frame: whatever followed it in the clear could come from anyone on the
    path, and is refused.
    """

    def __init__(self, clock: IReactorTime) -> None:
        super().__init__()
        self.clock = clock
        self.last_seen = clock.seconds()
        self.dead = False
        self.framer = Framer()
        self._in_the_clear = False  # parsing a frame that was not sealed
        self._boxes_in_frame: int | None = None  # boxes so far in the frame being parsed
        self._backed_up: bool | None = None  # None: no flow control yet
        self.blobs_in = BlobReceiver()
        self.blobs_out = BlobSender(self)

    def sendBox(self, box: Any) -> None:
        # AMP writes to its transport nowhere else.
        if self.transport is None:
            raise ConnectionLost()
        frame = self.framer.frame(box.serialize())
        self.transport.write(frame)
        if self._backed_up is not None:
            self._count_unflushed(len(frame))

    def dataReceived(self, data: bytes) -> None:
        if self.dead:
            return
        try:
            for payload in self.framer.feed(data):
                self._in_the_clear = in_the_clear = not self.framer.sealed
                self._boxes_in_frame = 0
                try:
                    super().dataReceived(payload)
                finally:
                    self._in_the_clear = False
                    boxes, self._boxes_in_frame = self._boxes_in_frame, None
                if self.dead:
                    return
                if boxes != 1 or self._holds_part_of_a_box():
                    return self._refuse_frame(in_the_clear)
        except SessionError as e:
            self.drop(str(e))

    def _refuse_frame(self, in_the_clear: bool) -> None:
        """A frame that was not exactly one box: most telling when it was the
        frame that sealed the session (a relay adding to the handshake)."""
        sealed_here = in_the_clear and self.framer.sealed
        self.drop(AFTER_SEALING if sealed_here else NOT_ONE_BOX)

    def _holds_part_of_a_box(self) -> bool:
        """AMP has parsed part of a box that it has not delivered yet."""
        return bool(self._unprocessed) or self._currentBox is not None

    def refused_box(self, box: Any) -> bool:
        """Drop the connection, and say so, for a box that came in the clear
        after the session was sealed by an earlier box of the same frame, or
        that answers a question we never asked (AMP would raise KeyError).
        Every frame carries one box: a peer cannot make us handle thousands
        of boxes in one go, nor slip one in beside an honest one."""
        if self._boxes_in_frame is not None:
            self._boxes_in_frame += 1
            if self._boxes_in_frame > 1:
                self._refuse_frame(self._in_the_clear)
                return True
        tag = box.get(b"_answer", box.get(b"_error"))
        if tag is not None and tag not in self._outstandingRequests:
            self.drop(f"answered a question we did not ask (tag {printable(tag, 20)})")
            return True
        return False

    def connectionMade(self) -> None:
        super().connectionMade()
        # Many small commands, each awaited: Nagle's algorithm would add tens
        # of milliseconds to every round trip.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass

    # -- a peer that does not read ---------------------------------------------------

    def start_flow_control(self) -> None:
        """Once sealed (any TLS handshake is long done): stop reading from
        a peer that does not read what we send it.

        The transport tells us when its buffer fills (pauseProducing) and
        when it has written everything (resumeProducing).  Only when more
        than MAX_UNFLUSHED bytes wait for it, far beyond what an honest
        peer's windows allow, do we stop reading its requests: it cannot
        make us buffer replies without end, and an honest pair of peers,
        each sending a lot at once, never deadlocks.  A peer that reads
        nothing answers no heartbeat either, and is dropped.
        """
        self._backed_up = False
        self._unflushed = 0
        self._reading_paused = False
        # Beneath TLS, on the socket itself: a producer registered with TLS
        # would hold every loseConnection until it unregistered.
        self._socket = self.transport
        while getattr(self._socket, "transport", None) is not None:
            self._socket = self._socket.transport
        self._socket.registerProducer(self, True)

    def pauseProducing(self) -> None:
        self._backed_up = True

    def resumeProducing(self) -> None:
        self._backed_up = False
        self._unflushed = 0
        if self._reading_paused:
            self._reading_paused = False
            self._socket.resumeProducing()

    def stopProducing(self) -> None:
        pass

    def _count_unflushed(self, size: int) -> None:
        self._unflushed += size
        if self._backed_up and self._unflushed > MAX_UNFLUSHED and not self._reading_paused:
            self._reading_paused = True
            self._socket.pauseProducing()

    @property
    def unwrapped(self) -> Peer:
        """This protocol itself, even when asked through a wrapper that
        forwards attributes (ClientService hands prepareConnection one)."""
        return self

    def ampBoxReceived(self, box: Any) -> None:
        if self.dead:
            return  # late words from a peer already given up on
        if self.refused_box(box):
            return
        if not self.framer.sealed and b"_command" in box:
            what = box[b"_command"][:40]
            return self.drop(f"sent {what!r} before the session was sealed")
        self.last_seen = self.clock.seconds()
        super().ampBoxReceived(box)

    def declare_dead(self, why: str) -> None:
        self.drop(f"declared dead: {why}")

    def drop(self, why: str) -> None:
        """Abort the connection (logged); ignore anything it still sends."""
        if self.dead:
            return
        self.dead = True
        log.warn("dropping {peer}: {why}", peer=self.describe(), why=why)
        if self.transport is not None:
            self.transport.abortConnection()

    def describe(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return f"connection from {peer}"

    def makeConnection(self, transport: Any) -> None:
        # Not AMP.makeConnection: it logs every connection made, and lost, at
        # info level, so anyone who can connect could fill the log with
        # them.  What matters about a peer is logged by us, rate-limited.
        self._transportPeer, self._transportHost = transport.getPeer(), transport.getHost()
        BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Any) -> None:
        self.dead = True
        self.blobs_in.clear()
        reason = own_reason(reason)
        BinaryBoxProtocol.connectionLost(self, reason)  # not AMP's: see makeConnection
        self.transport = None

    @Heartbeat.responder
    def _heartbeat(self) -> dict[str, Any]:
        return {}

    @BlobChunk.responder
    def _blob_chunk(self, blob: int, data: list[bytes]) -> dict[str, Any]:
        self.blobs_in.chunk(blob, data)
        return {}


def own_reason(reason: Any) -> Any:
    """A copy of ``reason`` for one connection alone.

    Twisted hands every cleanly closed (or lost) TCP connection the same
    module-level Failure (``posixbase``'s ``faildict``), and AMP fails each
    call still awaiting its answer with it.  A coroutine awaiting one (a
    BatchSender's pump) raises its exception, whose ``__traceback__`` then
    holds that coroutine's frames, and through them the connection and its
    session, until another connection's coroutine raises it: the last client
    to leave stayed in memory.  A copy is garbage with the connection.
    """
    if not isinstance(reason, Failure):
        return reason
    return Failure(copy.copy(reason.value))


class HeartbeatMonitor:
    """Pings peers every ``interval``; drops one silent for ``timeout``."""

    def __init__(
        self,
        clock: IReactorTime,
        interval: float = HEARTBEAT_INTERVAL,
        timeout: float = HEARTBEAT_TIMEOUT,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("heartbeat interval and timeout must be positive")
        self.clock = clock
        self.interval = interval
        self.timeout = timeout
        self._peers: set[Peer] = set()
        self._loop = LoopingCall(self.beat)
        self._loop.clock = clock

    def watch(self, peer: Peer) -> None:
        self._peers.add(peer)

    def unwatch(self, peer: Peer) -> None:
        self._peers.discard(peer)

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def beat(self) -> None:
        now = self.clock.seconds()
        for peer in list(self._peers):
            if peer.dead:
                self._peers.discard(peer)
            elif now - peer.last_seen > self.timeout:
                peer.declare_dead(f"silent for {now - peer.last_seen:.1f} s")
                self._peers.discard(peer)
            else:
                peer.callRemote(Heartbeat).addErrback(lambda _: None)
