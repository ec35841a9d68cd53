"""
Test doubles for code that uses cwtx, in the manner of ``treq.testing``.

:class:`MemoryCluster` runs the real master, the real worker supervisor and
real clients, connected in memory (``twisted.test.iosim``) on a
``twisted.internet.task.Clock``.  Jobs run in this process, through the same
code the worker's child process uses, so functions, arguments and results
really are pickled and unpickled.  Nothing touches the network, and nothing
waits on wall-clock time::

    cluster = MemoryCluster(workers=2)
    client = cluster.client()
    d = client.submit(pow, 2, 10)
    cluster.flush()
    assert cluster.result(d) == 1024
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient

from ._auth import handshake
from ._child import Child
from ._client import Client, ClientProtocol
from ._errors import error_json
from ._master import Master
from ._master_protocol import MasterProtocol
from ._payload import EMPTY, Payload
from ._peer import HeartbeatMonitor
from ._slot import KILL_MESSAGES, ResultCallback, Task
from ._worker import Worker, WorkerProtocol

__all__ = ["InProcessSlot", "MemoryCluster"]


class InProcessSlot:
    """A slot that runs tasks in this process, one clock tick after they arrive.

    With ``hold=True`` a task stays running until :meth:`finish` is called,
    so tests can cancel, time out or lose a job while it runs.
    """

    def __init__(
        self,
        index: int,
        clock: Clock,
        on_result: ResultCallback,
        on_free: Callable[[], None],
        hold: bool = False,
    ) -> None:
        self.index = index
        self._clock = clock
        self._on_result = on_result
        self._on_free = on_free
        self._child = Child()
        self.hold = hold
        self.current: Task | None = None
        self.ran: list[int] = []  # task ids this slot started

    @property
    def free(self) -> bool:
        return self.current is None

    def start(self) -> None:
        pass

    def run(self, task: Task) -> None:
        self.current = task
        self.ran.append(task.task)
        if task.timeout and task.timeout > 0:
            self._clock.callLater(task.timeout, self._timeout, task)
        if not self.hold:
            self._clock.callLater(0, self.finish)

    def finish(self) -> None:
        """Run the current task now and report its result."""
        task = self.current
        if task is None:
            return
        header = {"task": task.task, "fn": task.fn.hex(), "env": task.env}
        parts = [bytearray(task.args.tobytes()), bytearray(task.code.tobytes())]
        reply, value = self._child.run(header, parts)
        info = json.loads(reply)
        error = json.dumps(info["error"]) if "error" in info else ""
        self.current = None
        self._on_result(task, info["status"], Payload.of(value), error)
        self._on_free()

    def _timeout(self, task: Task) -> None:
        if self.current is task:
            self.kill("timeout")

    def kill(self, reason: str) -> None:
        """End the current task as the real slot does when it kills its child."""
        task = self.current
        if task is None:
            return
        self.current = None
        if reason in KILL_MESSAGES:
            status, message = reason, KILL_MESSAGES[reason].format(timeout=task.timeout)
        else:
            status, message = "lost", f"killed ({reason})"
        self._on_result(task, status, EMPTY, error_json(status, message))
        self._on_free()

    def stop(self, on_ended: Callable[[], None]) -> None:
        on_ended()


class MemoryCluster:
    """A master, workers and clients wired together in memory on a Clock."""

    def __init__(
        self,
        workers: int = 1,
        slots: int = 1,
        max_retries: int = 3,
        clock: Clock | None = None,
        hold: bool = False,
        prefetch: int = 0,
        secret: bytes = b"cwtx.testing MemoryCluster secret",
    ) -> None:
        self.secret = secret
        self.clock = clock if clock is not None else Clock()
        self.master = Master(max_retries=max_retries, prefetch=prefetch)
        self.monitor = HeartbeatMonitor(self.clock)
        self.monitor.start()
        self._pumps: list[IOPump] = []
        #: While True, clients that try to (re)connect are refused.
        self.refuse_clients = False
        self._links: dict[Any, tuple[Any, Any]] = {}
        self.workers: list[Worker] = []
        for _ in range(workers):
            self.add_worker(slots, hold=hold)

    def _link(self, client_proto: Any) -> MasterProtocol:
        server = MasterProtocol(self.master, self.monitor, self.clock, self.secret)
        _, _, pump = connectedServerAndClient(
            lambda: server, lambda: client_proto, clock=self.clock
        )
        self._pumps.append(pump)
        self._links[client_proto] = (server, pump)
        return server

    def add_worker(self, slots: int = 1, name: str | None = None, hold: bool = False) -> Worker:
        """Connect and register a worker whose slots run jobs in-process."""
        name = name or f"memory-{len(self.workers)}"
        worker = Worker(
            None,
            self.clock,
            secret=self.secret,
            slots=slots,
            name=name,
            slot_factory=lambda *a: InProcessSlot(*a, hold=hold),
        )
        proto = WorkerProtocol(worker)
        self._link(proto)
        self._wait(Deferred.fromCoroutine(worker.handshake(proto)))
        self.workers.append(worker)
        return worker

    def client(self, name: str = "client", secret: bytes | None = None, **settings: Any) -> Client:
        """A connected :class:`cwtx.Client` (``settings`` as for cwtx.connect).

        If its connection is lost it reconnects to this cluster, as a real
        client reconnects to a restarted master.
        """

        def connector() -> Deferred[ClientProtocol]:
            if self.refuse_clients:
                return fail(ConnectionRefusedError("MemoryCluster.refuse_clients is set"))
            proto = ClientProtocol(self.clock)
            self._link(proto)
            d = Deferred.fromCoroutine(handshake(proto, "client", name, secret or self.secret))

            return d.addCallback(lambda _: proto)

        first = connector()
        self.flush()
        client = Client(self.clock, name, connector, where="the MemoryCluster", **settings)

        client._attach(self.result(first))
        return client

    def disconnect(self, thing: Worker | Client) -> None:
        """Drop a worker's or a client's connection, as if it died."""
        proto = thing.connection if isinstance(thing, Worker) else thing._protocol
        if proto is None:
            raise ValueError(f"{thing!r} is not connected")
        server, pump = self._links.pop(proto)
        self._pumps.remove(pump)
        from twisted.internet.error import ConnectionLost

        reason = Failure(ConnectionLost("dropped by MemoryCluster.disconnect"))
        proto.connectionLost(reason)
        server.connectionLost(reason)
        self.flush()

    def flush(self) -> None:
        """Move every byte and fire every due call until nothing happens."""
        for _ in range(10_000):
            moved = False
            for pump in list(self._pumps):
                moved = pump.pump() or moved
            self.clock.advance(0)
            if not moved and not any(
                c.getTime() <= self.clock.seconds() for c in self.clock.getDelayedCalls()
            ):
                return
        raise AssertionError("MemoryCluster.flush: still busy after 10,000 rounds")

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (heartbeats, timeouts), flushing as it goes."""
        self.clock.advance(seconds)
        self.flush()

    def _wait(self, d: Deferred[Any]) -> Any:
        self.flush()
        return self.result(d)

    @staticmethod
    def result(d: Deferred[Any]) -> Any:
        """A fired Deferred's result; raises its exception, or if it has not fired."""
        box: list[Any] = []
        d.addBoth(box.append)
        if not box:
            raise AssertionError(f"{d!r} has not fired")
        if isinstance(box[0], Failure):
            box[0].raiseException()
        return box[0]
