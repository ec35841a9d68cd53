"""
Simulated workers for the scale workload: N connections to a master from
this one process (its own reactor), each of which authenticates,
registers one slot and heartbeats, as a real worker does.

They run nothing.  A simulated worker takes the tasks it is sent, reports
each one started at once and never ends it (as a worker running long jobs
would), so once they are full the master sends them nothing more; it hands
nothing back when asked, and ends as cancelled what it is told to cancel.
The scale workload fills them first with a client of its own, then times
real jobs on 2 real workers beside them.

    python -m benchmarks.simulated_workers HOST PORT N

Prints ``ready`` once all N have registered; runs until it is terminated.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from cwtx._secret import load_secret
from cwtx.wire import handshake as auth
from cwtx.wire.commands import (
    CancelTasks,
    RegisterWorker,
    RunTasks,
    TakeBackTasks,
    TaskResults,
    TasksStarted,
)
from cwtx.wire.names import JobStatus, Role
from cwtx.wire.peer import HeartbeatMonitor, Peer

#: Connections being set up at once (each must authenticate within the
#: master's --auth-timeout).
JOINING = 50


def _ignore(_: Any) -> None:
    return None


class SimulatedWorker(Peer):
    """One simulated worker's connection; see the module docstring."""

    def describe(self) -> str:
        return "master"

    @RunTasks.responder
    def run_tasks(self, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        now = time.time()
        started = [{"task": t["task"], "slot": 0, "at": now} for t in tasks]
        self.callRemote(TasksStarted, started=started).addErrback(_ignore)
        return {}

    @CancelTasks.responder
    def cancel_tasks(self, tasks: list[int]) -> dict[str, Any]:
        ended = [
            {
                "task": t,
                "status": JobStatus.CANCELLED,
                "value": b"",
                "value_blob": 0,
                "error": "",
                "seconds": 0.0,
            }
            for t in tasks
        ]
        self.callRemote(TaskResults, results=ended).addErrback(_ignore)
        return {}

    @TakeBackTasks.responder
    def take_back(self, tasks: list[int]) -> dict[str, Any]:
        return {"returned": []}


async def join(
    reactor: Any, host: str, port: int, name: str, secret: bytes, monitor: HeartbeatMonitor
) -> SimulatedWorker:
    """Connect, authenticate, register one slot, heartbeat."""
    proto = SimulatedWorker(reactor)
    await connectProtocol(TCP4ClientEndpoint(reactor, host, port), proto)
    await auth.handshake(proto, Role.WORKER, name, secret)
    await proto.callRemote(RegisterWorker, slots=1, resources="{}")
    monitor.watch(proto)
    return proto


async def main(reactor: Any, host: str, port: str, n: str) -> None:
    secret = load_secret()
    monitor = HeartbeatMonitor(reactor)
    joining = defer.DeferredSemaphore(JOINING)

    def one(i: int) -> defer.Deferred[Any]:
        return defer.ensureDeferred(join(reactor, host, int(port), f"sim-{i}", secret, monitor))

    peers = await defer.gatherResults(
        [joining.run(one, i) for i in range(int(n))], consumeErrors=True
    )
    monitor.start()
    print(f"ready {len(peers)}", flush=True)
    await defer.Deferred()  # until terminated


if __name__ == "__main__":
    task.react(lambda reactor, *args: defer.ensureDeferred(main(reactor, *args)), sys.argv[1:4])
