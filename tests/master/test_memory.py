"""
What a queued job costs the master, in bytes: measured with tracemalloc
over jobs submitted through a real connection (SubmitJobs records, in
memory) to a master with no worker, so that it cannot silently grow back.
And that a client that left leaves nothing of itself behind.
"""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.test.iosim import connectedServerAndClient

from cwtx.master.connection import MasterConnection
from cwtx.master.master import Master
from cwtx.testing import MemoryCluster
from cwtx.wire import handshake as auth
from cwtx.wire.batch import BATCH_BYTES
from cwtx.wire.commands import Authenticate, Hello, JobResults, SubmitJobs
from cwtx.wire.names import function_hash
from cwtx.wire.peer import HeartbeatMonitor, Peer
from cwtx.wire.session import transcript
from cwtx.wire.versions import hello_arguments

SECRET = b"the master's secret, 32 bytes at least"
ENV = '{"cwd": "/somewhere", "path": []}'
CODE = b"a pickled function" * 10
FN = function_hash(ENV, [CODE])
#: Measured (CPython 3.11): ~265 bytes per queued no-op job here: its Job
#: record (112), its 21 argument bytes (54), its id (28), its entries in the
#: client's table (~60 while that table grows) and in its queue (8).  It was
#: ~815 when each job had a dataclass with a __dict__, Payloads, a heap entry.
MAX_BYTES_PER_JOB = 360


class Client:
    """A raw client, authenticated, connected in memory to ``master``."""

    def __init__(self, master: Master, peer: type[Peer] = Peer) -> None:
        clock = Clock()
        self.server = server = MasterConnection(master, HeartbeatMonitor(clock), clock, SECRET)
        self.peer = peer(clock)
        _, _, self.pump = connectedServerAndClient(lambda: server, lambda: self.peer, clock=clock)
        mine = auth.nonce()
        said = hello_arguments("client", "test")
        reply = self.call(Hello, nonce=mine, **said)
        self.call(Authenticate, proof=auth.proof(SECRET, "client", reply["nonce"], mine))
        framer = self.peer.framer
        auth.seal_connecting_side(
            framer, SECRET, mine, reply["nonce"], "client", transcript(said, reply)
        )

    def call(self, command: Any, **kwargs: Any) -> Any:
        box: list[Any] = []
        self.peer.callRemote(command, **kwargs).addBoth(box.append)
        self.pump.flush()
        if hasattr(box[0], "raiseException"):
            box[0].raiseException()
        return box[0]


def no_op_jobs(
    first: int, n: int, priority: Callable[[int], int] = lambda i: 0
) -> list[list[dict[str, Any]]]:
    """SubmitJobs batches of ``n`` jobs as a client sends them for
    ``noop(i)``: 21 bytes of arguments, default options, the function's
    code only with the first."""
    size = dict(SubmitJobs.arguments)[b"jobs"].record_size
    batches: list[list[dict[str, Any]]] = [[]]
    total = 0
    for i in range(first, first + n):
        record = {
            "job": i,
            "fn": FN,
            "fn_env": ENV if i == 1 else "",
            "fn_code": CODE if i == 1 else b"",
            "fn_code_blob": 0,
            "args": b"pickled (i,) %8d" % i,  # as long as pickle_arguments((i,), {})
            "args_blob": 0,
            "timeout": 0.0,
            "max_retries": -1,
            "priority": priority(i),
            "resources": "{}",
            "forward_output": 0,
            "refs": b"",
        }
        if batches[-1] and total + size(record) > BATCH_BYTES:
            batches.append([])
            total = 0
        batches[-1].append(record)
        total += size(record)
    return batches


@pytest.mark.parametrize(
    ("priority", "bound"),
    [
        (lambda i: 0, MAX_BYTES_PER_JOB),
        # A priority each (to order them, say): ~495 bytes (options, and a
        # place in the queue's heap of priorities, each); it was ~880.
        (lambda i: -i, 720),
    ],
    ids=["same options", "a priority each"],
)
def test_a_queued_job_costs_the_master_few_bytes(priority, bound):
    master = Master()
    client = Client(master)
    for batch in no_op_jobs(1, 1000, priority):  # the function, and a warm start
        client.call(SubmitJobs, jobs=batch)
    n = 10_000
    batches = no_op_jobs(1001, n, priority)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for batch in batches:
            client.call(SubmitJobs, jobs=batch)
        del batches, batch
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(master.clients[0].jobs) == 1000 + n
    assert master.status()["queued"] == 1000 + n
    assert held / n < bound, f"{held / n:.0f} bytes per queued job"


class Unanswering(Peer):
    """A client that never answers the results it is sent."""

    @JobResults.responder
    def results(self, results: list[dict[str, Any]]) -> Deferred[dict[str, Any]]:
        return Deferred()


def test_a_client_that_left_is_garbage():
    """TCP (as iosim) hands every closed connection the same exception, and
    AMP fails the calls awaiting an answer with it: raised in the coroutine
    that sent them, it kept that coroutine's frames, and so the client's
    connection and session (and all its functions), until the next one."""
    master = Master()
    client = Client(master, Unanswering)
    never_sent = function_hash(ENV, [b"never sent"])
    job = dict(no_op_jobs(1, 1)[0][0], job=1, fn=never_sent, fn_env="", fn_code=b"")
    client.call(SubmitJobs, jobs=[job])  # ends at once: its result awaits an answer
    client.pump.flush()
    assert client.server.responders.sender._running
    session = weakref.ref(master.clients[0])
    connection = weakref.ref(client.server)
    client.peer.transport.loseConnection()
    client.pump.flush()
    del client
    gc.collect()
    assert master.clients == []
    assert session() is None
    assert connection() is None


def test_a_client_that_left_is_forgotten_by_the_workers_records():
    """The master forgets which of a departed client's functions it sent to
    each worker (a hash per function and worker, forever, in a cluster
    that runs for weeks); the next client to send the same function sends
    it again, and it runs."""
    cluster = MemoryCluster(workers=2)
    first = cluster.client(name="first")
    d = first.submit(abs, -1)
    cluster.flush()
    assert cluster.result(d) == 1
    assert any(worker.functions for worker in cluster.master.workers)
    closed = first.close()
    cluster.flush()
    cluster.result(closed)
    assert [worker.functions for worker in cluster.master.workers] == [set(), set()]
    second = cluster.client(name="second")
    ds = [second.submit(abs, -i) for i in range(1, 5)]  # (on both workers)
    cluster.flush()
    assert [cluster.result(d) for d in ds] == [1, 2, 3, 4]
