"""
One connection to the master, from a client, a worker or a status query.

Until it authenticates it may send only Hello and Authenticate, at most
PREAUTH_BYTES in all, within the authentication timeout; anything else
closes it.  Once it has proved the shared secret, its AMP locator becomes
the responders of the role it claimed (``roles``): a client cannot even
name a worker's command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import txaio
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.protocols.amp import AMP, AmpBox

from cwtx._errors import AuthenticationError, ProtocolMismatch
from cwtx._logs import printable
from cwtx.master.master import Master
from cwtx.master.roles import RESPONDERS, Responders
from cwtx.wire import handshake as auth
from cwtx.wire.commands import Authenticate, Hello
from cwtx.wire.names import PROTOCOL_VERSION, Role
from cwtx.wire.peer import Guarded, HeartbeatMonitor, Peer
from cwtx.wire.session import TAG_BYTES, session_keys, transcript

txaio.use_twisted()
log = txaio.make_logger()


#: Bytes a connection may send before it has authenticated.
PREAUTH_BYTES = 16 * 1024
#: Seconds a connection has to authenticate.
AUTH_TIMEOUT = 10.0
#: Bytes of one AMP box (a BlobChunk box is about 1 MiB).
MAX_BOX_BYTES = 8 * 1024 * 1024
#: What sealing adds to a frame's body.
SEAL_OVERHEAD = TAG_BYTES
#: Bytes of streamed payloads a connection may have in flight, unclaimed.
MAX_UNCLAIMED_BYTES = 2 * 1024 * 1024 * 1024

HANDSHAKE = (b"Hello", b"Authenticate")
#: How a protocol 1 or 2 peer's first box starts (plain AMP, "_ask" first).
OLD_AMP_HELLO = b"\x00\x04_ask"


class MasterConnection(Peer):
    """The master's end of one connection; see the module docstring."""

    def __init__(
        self,
        master: Master,
        monitor: HeartbeatMonitor,
        clock: IReactorTime,
        secret: bytes,
        auth_timeout: float = AUTH_TIMEOUT,
    ) -> None:
        super().__init__(clock)
        self.master = master
        self.monitor = monitor
        self.auth_timeout = auth_timeout
        self.role: Role | None = None
        self.name = "?"
        self.versions = ("?", "?")
        self.origin: dict[str, Any] = {}  # host, pid, user, as its hello said
        #: The responders of its role once it has authenticated, else None.
        self.responders: Responders | None = None
        self.locator = Handshake(self, secret)
        self.peer_address: Any = "?"
        self._received = 0  # bytes before authentication
        self._auth_timer: Any = None
        self._seal_sending_with: bytes | None = None
        #: Called once a client's connection is gone and its session removed.
        self.client_left: Callable[[], Any] = lambda: None
        self.framer.max_frame = PREAUTH_BYTES
        self.blobs_in.max_bytes = MAX_UNCLAIMED_BYTES

    @property
    def authenticated(self) -> bool:
        return self.responders is not None

    def describe(self) -> str:
        return f"{self.role or 'peer'} {self.name[:60]} ({self.peer_address})"  # escaped in hello

    def note(self, what: str) -> None:
        """Log ``what`` about this peer, at most a few lines a minute per
        host: a peer cannot fill the log."""
        host = getattr(self.peer_address, "host", "?")
        allowed, held = self.master.log_limit.allow(host)
        if allowed:
            also = f" ({held} more such lines from {host} held back)" if held else ""
            log.warn("{peer}: {what}{also}", peer=self.describe(), what=what, also=also)

    def drop(self, why: str) -> None:
        """Abort the connection; logged, rate-limited until it has authenticated."""
        if self.dead:
            return
        if self.authenticated:
            super().drop(why)
            return
        self.note(f"dropped: {why}")
        self.dead = True
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.peer_address = self.transport.getPeer()  # still known once it is lost
        self._auth_timer = self.clock.callLater(self.auth_timeout, self._auth_expired)

    def _auth_expired(self) -> None:
        self._auth_timer = None
        self.drop(f"did not authenticate within {self.auth_timeout:g} s")

    def dataReceived(self, data: bytes) -> None:
        if self.dead:
            return
        if self.responders is None:  # not authenticated
            if self._received == 0 and data.startswith(OLD_AMP_HELLO):
                return self._refuse_old_protocol(data)
            self._received += len(data)
            if self._received > PREAUTH_BYTES:
                return self.drop(f"sent over {PREAUTH_BYTES} bytes before authenticating")
        # After it: each frame is one box, of at most MAX_BOX_BYTES (the framer).
        super().dataReceived(data)

    def ampBoxReceived(self, box: Any) -> None:
        if self.dead or self.refused_box(box):
            return
        if self.responders is None and box.get(b"_command") not in HANDSHAKE:
            what = box.get(b"_command", b"an answer")[:40]
            return self.drop(f"sent {what!r} before authenticating")
        self.last_seen = self.clock.seconds()
        AMP.ampBoxReceived(self, box)

    def sendBox(self, box: Any) -> None:
        super().sendBox(box)
        if self._seal_sending_with is not None:  # that was Authenticate's answer
            self.framer.seal_sending(self._seal_sending_with)
            self._seal_sending_with = None

    def _refuse_old_protocol(self, data: bytes) -> None:
        """A peer of protocol 1 or 2 (plain AMP): answer its Hello with the
        error it understands, then close."""
        tag_length = int.from_bytes(data[6:8], "big")
        message = (
            f"this master speaks cwtx protocol {PROTOCOL_VERSION} (sealed frames), the peer "
            "an older one: install the same cwtx version everywhere"
        )
        error = AmpBox(
            _error=data[8 : 8 + tag_length],
            _error_code=b"REFUSED",
            _error_description=message.encode(),
        )
        self.transport.write(error.serialize())
        self.dead = True
        self.note("refused: it speaks an older cwtx protocol")
        self.transport.loseConnection()  # after the error is out

    def authenticated_as(self, role: Role, keys: tuple[bytes, bytes]) -> None:
        """The proof checked out: from now on it speaks as ``role``, sealed
        with ``keys`` (its sending key, ours).  Its next frame must be
        sealed; ours are once Authenticate's answer is out."""
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None
        theirs, ours = keys
        self.framer.seal_receiving(theirs)
        self._seal_sending_with = ours
        self.framer.max_frame = MAX_BOX_BYTES + SEAL_OVERHEAD
        self.monitor.watch(self)
        self.start_flow_control()
        self.responders = self.locator = RESPONDERS[role](self)

    def connectionLost(self, reason: Any) -> None:
        dropped = self.dead  # by us, and said why
        super().connectionLost(reason)
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self.monitor.unwatch(self)
        if self.responders is not None:
            why = reason.getErrorMessage() if reason is not None else "closed"
            self.responders.lost(why)
            if self.role is Role.CLIENT:
                self.client_left()
        elif self.role is not None and not dropped:
            # It heard our proof and left: most often, our secrets differ.
            self.note(
                "closed the connection after Hello, without authenticating "
                "(it may have a different shared secret)"
            )


class Handshake(Guarded):
    """What a connection may ask before it has authenticated."""

    def __init__(self, connection: MasterConnection, secret: bytes) -> None:
        self.connection = connection
        self._secret = secret
        self._nonces: tuple[bytes, bytes] | None = None
        self._said = b""  # the handshake's transcript, bound into the keys

    def refused(self, why: str) -> None:
        self.connection.note("refused and closed: " + why)
        self.connection.dead = True  # what it sent after that is not read

    @Hello.responder
    def hello(
        self,
        role: str,
        name: str,
        protocol: int,
        python: str,
        cloudpickle: str,
        nonce: bytes,
        host: str = "",
        pid: int = 0,
        user: str = "",
    ) -> dict[str, Any]:
        conn = self.connection
        if conn.role is not None:
            raise ProtocolMismatch("hello was already said on this connection")
        if protocol != PROTOCOL_VERSION:
            raise ProtocolMismatch(
                f"this master speaks cwtx protocol {PROTOCOL_VERSION}, the {role[:20]} protocol "
                f"{protocol}: install the same cwtx version everywhere"
            )
        if role not in Role.__members__.values() or len(nonce) != auth.NONCE_BYTES:
            raise ProtocolMismatch(f"bad hello (role {role[:20]!r}, nonce of {len(nonce)} bytes)")
        # Escaped once, here: names and versions reach logs and `cw status`.
        conn.role, conn.name = Role(role), printable(name, 200)
        conn.versions = (printable(python, 40), printable(cloudpickle, 40))
        pid = pid if 0 <= pid < 2**32 else 0  # a peer's word: a number that fits a column
        conn.origin = {"host": printable(host, 100), "pid": pid, "user": printable(user, 60)}
        mine = auth.nonce()
        self._nonces = (nonce, mine)
        answer = {
            "protocol": PROTOCOL_VERSION,
            "master": conn.master.id,
            "nonce": mine,
            "proof": auth.proof(self._secret, "master", nonce, mine),
        }
        said = dict(
            role=role,
            name=name,
            protocol=protocol,
            python=python,
            cloudpickle=cloudpickle,
            host=host,
            pid=pid,
            user=user,
        )
        self._said = transcript(said, answer)
        return answer

    @Authenticate.responder
    def authenticate(self, proof: bytes) -> dict[str, Any]:
        conn = self.connection
        if self._nonces is None or conn.role is None:
            raise AuthenticationError("authenticate once, after hello")
        theirs, mine = self._nonces
        if not auth.verify(self._secret, conn.role, mine, theirs, proof):
            # Logged (rate-limited) as this box is refused: see refused().
            raise AuthenticationError(
                "authentication failed: the master has a different shared secret"
            )
        keys = session_keys(self._secret, theirs, mine, conn.role, self._said)
        conn.authenticated_as(conn.role, keys)
        return {}


class MasterFactory(Factory):
    def __init__(
        self,
        master: Master,
        monitor: HeartbeatMonitor,
        clock: IReactorTime,
        secret: bytes,
        auth_timeout: float = AUTH_TIMEOUT,
        client_left: Callable[[], Any] | None = None,
    ) -> None:
        """``client_left()`` is called after each client's session is
        removed (the service trims the heap then: ``trim``)."""
        self.master = master
        self.monitor = monitor
        self.clock = clock
        self.secret = secret
        self.auth_timeout = auth_timeout
        self.client_left = client_left

    def buildProtocol(self, addr: Any) -> MasterConnection:
        proto = MasterConnection(
            self.master, self.monitor, self.clock, self.secret, self.auth_timeout
        )
        proto.factory = self
        if self.client_left is not None:
            proto.client_left = self.client_left
        return proto
