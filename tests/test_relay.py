"""
A fake master that does not know the secret sits between a victim (a worker
or a client) and the real master, relaying the handshake so that the victim
accepts it.  Then it injects its own messages.  Nothing it injects is ever
acted on: the victim drops the connection, and no code of the attacker runs.
All in memory, with the real worker, client and master code.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.protocols.amp import AmpBox, parseString
from twisted.test.iosim import connectedServerAndClient
from zope.interface import implementer

from cwtx.client.connect import connect_to
from cwtx.client.serialize import pickle_arguments, pickle_function
from cwtx.master.connection import MasterConnection
from cwtx.testing import FakeProcessReactor, MemoryCluster
from cwtx.wire.commands import Heartbeat, JobResults, RunTasks, Status
from cwtx.wire.reconnect import DescribedEndpoint
from cwtx.wire.session import HEADER, PLAIN, Framer
from cwtx.worker.supervisor import Worker

#: What the attacker's code would append to, were it ever run in this process.
RAN: list[str] = []


def attackers_code() -> None:
    RAN.append("the attacker's job ran")


class Exploit:
    """Unpickling this runs the attacker's code."""

    def __reduce__(self) -> Any:
        return (RAN.append, ("the attacker's pickle was unpickled",))


class Half(Protocol):
    """One end of the relay; what it receives it passes to the other end."""

    other: Half
    log: list[bytes]

    def __init__(self) -> None:
        self.log = []

    def dataReceived(self, data: bytes) -> None:
        self.log.append(data)
        self.other.transport.write(data)


class FrameByFrame(Half):
    """Passes what it receives along frame by frame, through ``change``."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.log.append(data)
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            length, kind = HEADER.unpack_from(self.buffer)
            end = HEADER.size + length
            if len(self.buffer) < end:
                return
            frame, self.buffer = self.buffer[:end], self.buffer[end:]
            self.other.transport.write(self.change(kind, frame))

    def change(self, kind: int, frame: bytes) -> bytes:
        return frame


class Appending(FrameByFrame):
    """Adds ``extra`` AMP bytes inside the ``nth`` frame in the clear: after
    the box that seals the session (the second plain frame each way carries
    Authenticate or its answer)."""

    def __init__(self, nth: int, extra: bytes) -> None:
        super().__init__()
        self.nth, self.extra = nth, extra
        self.plain = 0

    def change(self, kind: int, frame: bytes) -> bytes:
        if kind == PLAIN:
            self.plain += 1
            if self.plain == self.nth:
                payload = frame[HEADER.size :] + self.extra
                return HEADER.pack(len(payload), PLAIN) + payload
        return frame


class Rewriting(FrameByFrame):
    """Rewrites one field of the first box (Hello, or its answer), as a
    relay without the secret could."""

    def __init__(self, key: bytes, value: bytes) -> None:
        super().__init__()
        self.key, self.value = key, value
        self.done = False

    def change(self, kind: int, frame: bytes) -> bytes:
        if self.done:
            return frame
        self.done = True
        (box,) = parseString(frame[HEADER.size :])
        box[self.key] = self.value
        return Framer().frame(box.serialize())


@implementer(IStreamClientEndpoint)
class Relay:
    """The fake master: the victim connects here, and it connects on to the real one."""

    def __init__(
        self, cluster: MemoryCluster, to_victim: bytes = b"", to_master: bytes = b""
    ) -> None:
        """``to_victim``, ``to_master``: AMP bytes to add inside the frame
        that seals the session on that side (none by default)."""
        self.cluster = cluster
        self.fronts: list[Half] = []
        self.backs: list[Half] = []
        self.to_victim, self.to_master = to_victim, to_master
        self.rewrite_hello: tuple[bytes, bytes] | None = None
        self.rewrite_answer: tuple[bytes, bytes] | None = None
        self.masters: list[MasterConnection] = []

    def connect(self, factory: Any) -> Any:
        victim = factory.buildProtocol(None)
        # front receives from the victim (sends to the master); back the reverse.
        front = Appending(2, self.to_master) if self.to_master else Half()
        back = Appending(2, self.to_victim) if self.to_victim else Half()
        if self.rewrite_hello:
            front = Rewriting(*self.rewrite_hello)
        if self.rewrite_answer:
            back = Rewriting(*self.rewrite_answer)
        front.other, back.other = back, front
        c = self.cluster
        real = MasterConnection(c.master, c.monitor, c.clock, c.secret)
        _, _, to_victim = connectedServerAndClient(lambda: front, lambda: victim, clock=c.clock)
        _, _, to_master = connectedServerAndClient(lambda: real, lambda: back, clock=c.clock)
        c._pumps += [to_victim, to_master]
        self.masters.append(real)
        self.fronts.append(front)
        self.backs.append(back)
        return succeed(victim)

    def inject(self, data: bytes) -> None:
        """Send the victim bytes of the attacker's own making."""
        self.fronts[-1].transport.write(data)
        self.cluster.flush()


def amp_box(command: type, **arguments: Any) -> bytes:
    box = command.makeArguments(arguments, None)
    box[b"_command"], box[b"_ask"] = command.commandName, b"666"
    return AmpBox(box).serialize()


def plain_frame(command: type, **arguments: Any) -> bytes:
    return Framer().frame(amp_box(command, **arguments))


def evil_task(task: int = 999) -> dict[str, Any]:
    fn = pickle_function(attackers_code)
    return {
        "task": task,
        "session": 0,
        "fn": fn.hash,
        "fn_env": fn.env,
        "fn_code": fn.code,
        "fn_code_blob": 0,
        "args": pickle_arguments((), {}),
        "args_blob": 0,
        "refs": b"",
        "timeout": 0.0,
        "resources": "{}",
        "order": 0.0,
        "forward_output": 0,
    }


def start_worker(relay: Relay, cluster: MemoryCluster) -> Worker:
    """A real worker whose master is the relay, started, the bytes moved."""
    worker = Worker(
        DescribedEndpoint(relay, "the fake master"),
        FakeProcessReactor(cluster.clock),
        secret=cluster.secret,
        name="victim",
    )
    worker.startService()
    cluster.flush()
    return worker


def worker_behind(relay: Relay, cluster: MemoryCluster) -> Worker:
    worker = start_worker(relay, cluster)
    assert worker.connection is not None, worker.endpoint.last_failure
    return worker


def test_a_relayed_worker_runs_nothing_the_relay_sends():
    RAN.clear()
    cluster = MemoryCluster(workers=0)
    relay = Relay(cluster)
    worker = worker_behind(relay, cluster)
    # The relay passes honest traffic along: a real job runs.
    client = cluster.client()
    d = client.submit(abs, -7)
    cluster.flush()
    assert cluster.result(d) == 7 and len(cluster.ran(worker)) == 1
    honest_frames = list(relay.backs[-1].log)  # what the master sent through the relay

    attacks = [
        plain_frame(RunTasks, tasks=[evil_task()]),  # in clear, after sealing
        b"\x00\x00\x00\x20\x01" + b"\x99" * 32,  # sealed, but not with the session key
        honest_frames[-1],  # a genuine frame of the master's, replayed
    ]
    for attack in attacks:
        first = worker.connection
        relay.inject(attack)
        assert worker.connection is None or worker.connection is not first, attack[:20]
        cluster.advance(11)  # the worker reconnects (through the relay, again)
        assert worker.connection is not None
    assert RAN == [] and len(cluster.ran(worker)) == 1  # nothing more ever ran


def test_a_relayed_client_never_unpickles_what_the_relay_sends():
    RAN.clear()
    cluster = MemoryCluster(workers=1, hold=True)
    relay = Relay(cluster)
    d = connect_to(
        DescribedEndpoint(relay, "the fake master"),
        reactor=cluster.clock,
        secret=cluster.secret,
        name="victim",
    )
    client_d = Deferred.fromCoroutine(d)
    cluster.flush()
    client = cluster.result(client_d)
    job = client.submit(abs, -1)
    cluster.flush()
    forged = {
        "job": 1,
        "status": "ok",
        "value": pickle.dumps(Exploit()),
        "value_blob": 0,
        "error": "",
    }
    relay.inject(plain_frame(JobResults, results=[forged]))
    assert RAN == [] and not job.called  # dropped, not believed
    cluster.advance(5)  # it reconnects and resubmits...
    assert client.reconnects == 1 and client.connected
    # ...while the relay holds its old session open.  That session cannot
    # answer heartbeats (it holds no key), so the master drops it, and its
    # job, within the heartbeat timeout; the resubmitted job then runs.
    for _ in range(8):
        cluster.advance(5)
    assert [c.name for c in cluster.master.clients] == ["victim"]
    cluster.finish()
    assert cluster.result(job) == 1 and RAN == []


# -- bytes added inside the frame that seals the session --------------------------------


def test_a_command_after_the_authenticate_answer_in_its_frame_is_refused():
    """The frame that carries Authenticate's answer is in the clear; a relay
    adds a RunTasks box after the answer, in that frame.  The worker seals
    its session on reading the answer, then must not take the rest."""
    RAN.clear()
    cluster = MemoryCluster(workers=0)
    relay = Relay(cluster, to_victim=amp_box(RunTasks, tasks=[evil_task()]))
    worker = start_worker(relay, cluster)
    cluster.advance(1)
    assert RAN == [] and cluster.ran(worker) == []
    assert worker.connection is None and len(relay.fronts) >= 1
    worker.stopService()


def test_a_relayed_client_takes_no_result_after_the_authenticate_answer():
    RAN.clear()
    cluster = MemoryCluster(workers=1)
    forged = {"job": 1, "status": "ok", "value": pickle.dumps(Exploit()), "value_blob": 0}
    forged["error"] = ""
    relay = Relay(cluster, to_victim=amp_box(JobResults, results=[forged]))
    d = Deferred.fromCoroutine(
        connect_to(
            DescribedEndpoint(relay, "the fake master"),
            reactor=cluster.clock,
            secret=cluster.secret,
            name="victim",
            connect_timeout=5,
        )
    )
    cluster.flush()
    client = cluster.result(d)  # the handshake itself was genuine...
    # ...but the connection is dropped at once, the forged result unread,
    # and so is every one after it through this relay.
    for _ in range(3):
        assert RAN == [] and not client.connected
        cluster.advance(10)


@pytest.mark.parametrize("command", [Heartbeat, Status])
def test_the_master_takes_nothing_after_authenticate_in_its_frame(command):
    """The same on the master's side: a relay adds a command after the
    victim's Authenticate, in its frame."""
    cluster = MemoryCluster(workers=0)
    extra = amp_box(command) if command is Heartbeat else amp_box(Status, page=0)
    relay = Relay(cluster, to_master=extra)
    worker = start_worker(relay, cluster)
    assert relay.masters and all(m.dead for m in relay.masters)
    assert cluster.master.workers == {} or not cluster.master.workers
    worker.stopService()


@pytest.mark.parametrize(
    ("side", "key", "value"),
    [
        ("hello", b"python", b"2.7.18"),  # a misleading version mismatch, or none at all
        ("hello", b"name", b"someone else"),
        ("answer", b"master", b"another master"),
    ],
)
def test_a_relay_cannot_rewrite_what_the_handshake_says(side, key, value):
    """Hello's fields and its answer's are not covered by the proofs; they
    are bound into the session keys, so a rewritten one leaves the two
    sides with different keys and nothing more happens."""
    cluster = MemoryCluster(workers=0)
    relay = Relay(cluster)
    setattr(relay, f"rewrite_{side}", (key, value))
    worker = start_worker(relay, cluster)
    assert worker.connection is None and cluster.master.workers == []
    assert relay.masters and all(m.dead for m in relay.masters)
    worker.stopService()


def test_the_rewriting_relay_passes_an_honest_handshake():
    """The control: the same relay, rewriting a field to what it was, works."""
    from cwtx.wire.versions import PYTHON

    cluster = MemoryCluster(workers=0)
    relay = Relay(cluster)
    relay.rewrite_hello = (b"python", PYTHON.encode())
    worker_behind(relay, cluster)
    assert [w.name for w in cluster.master.workers] == ["victim"]
