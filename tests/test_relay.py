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

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.protocols.amp import AmpBox
from twisted.test.iosim import connectedServerAndClient
from zope.interface import implementer

from cwtx.client.connect import connect_to
from cwtx.client.serialize import pickle_arguments, pickle_function
from cwtx.master.connection import MasterConnection
from cwtx.testing import FakeProcessReactor, MemoryCluster
from cwtx.wire.commands import JobResults, RunTasks
from cwtx.wire.reconnect import DescribedEndpoint
from cwtx.wire.session import Framer
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


@implementer(IStreamClientEndpoint)
class Relay:
    """The fake master: the victim connects here, and it connects on to the real one."""

    def __init__(self, cluster: MemoryCluster) -> None:
        self.cluster = cluster
        self.fronts: list[Half] = []
        self.backs: list[Half] = []

    def connect(self, factory: Any) -> Any:
        victim = factory.buildProtocol(None)
        front, back = Half(), Half()
        front.other, back.other = back, front
        c = self.cluster
        real = MasterConnection(c.master, c.monitor, c.clock, c.secret)
        _, _, to_victim = connectedServerAndClient(lambda: front, lambda: victim, clock=c.clock)
        _, _, to_master = connectedServerAndClient(lambda: real, lambda: back, clock=c.clock)
        c._pumps += [to_victim, to_master]
        self.fronts.append(front)
        self.backs.append(back)
        return succeed(victim)

    def inject(self, data: bytes) -> None:
        """Send the victim bytes of the attacker's own making."""
        self.fronts[-1].transport.write(data)
        self.cluster.flush()


def plain_frame(command: type, **arguments: Any) -> bytes:
    box = command.makeArguments(arguments, None)
    box[b"_command"], box[b"_ask"] = command.commandName, b"666"
    return Framer().frame(AmpBox(box).serialize())


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
        "timeout": 0.0,
    }


def worker_behind(relay: Relay, cluster: MemoryCluster) -> Worker:
    worker = Worker(
        DescribedEndpoint(relay, "the fake master"),
        FakeProcessReactor(cluster.clock),
        secret=cluster.secret,
        name="victim",
    )
    worker.startService()
    cluster.flush()
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
