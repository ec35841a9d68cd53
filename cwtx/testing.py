"""
Test doubles for code that uses cwtx, in the manner of ``treq.testing``.

:class:`MemoryCluster` runs the real master, the real worker supervisor with
its real slots, and real clients, connected in memory
(``twisted.test.iosim``) on a ``twisted.internet.task.Clock``.  Only the
slot children are fakes: :class:`FakeChildProcess` runs each job in this
process through the same code the real child process runs, so functions,
arguments and results really are pickled and unpickled, and timeouts,
cancellation and crashes go through the real slot.  Nothing touches the
network or starts a process, and nothing waits on wall-clock time::

    cluster = MemoryCluster(workers=2)
    client = cluster.client()
    d = client.submit(pow, 2, 10)
    cluster.flush()
    assert cluster.result(d) == 1024
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import count
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import (
    ConnectionLost,
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.interfaces import IProcessTransport, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient
from zope.interface import implementer

from cwtx.client.client import Client
from cwtx.client.connect import connect_to
from cwtx.master.connection import MasterConnection
from cwtx.master.functions import DEFAULT_FUNCTION_CACHE as MASTER_FUNCTION_CACHE
from cwtx.master.master import Master
from cwtx.wire.peer import HeartbeatMonitor
from cwtx.wire.reconnect import DescribedEndpoint
from cwtx.wire.resources import parse_spec
from cwtx.worker.child import Child, Tasks
from cwtx.worker.functions import DEFAULT_FUNCTION_CACHE as WORKER_FUNCTION_CACHE
from cwtx.worker.pipe import (
    HAND_BACK_AFTER,
    RESULT_FD,
    TASK_FD,
    Header,
    MessageDecoder,
    encode_message,
)
from cwtx.worker.supervisor import START_REPORT_DELAY, Worker

if TYPE_CHECKING:
    from cwtx.worker.limits import Limits

__all__ = ["FakeChildProcess", "FakeProcessReactor", "MemoryCluster", "MemoryEndpoint"]

_pids = count(1_000_000)


@implementer(IProcessTransport)
class FakeChildProcess:
    """A slot child that runs its jobs in this process, on the clock.

    It speaks the real pipe framing with the real :class:`~cwtx.worker.slot.Slot`
    and runs each job with the real child's code.  A job runs one clock tick
    after it starts, or, with ``hold``, only when :meth:`finish` is called.
    As the real child, it reads what the slot writes (tasks written ahead,
    skips) only between jobs, or once its job has run HAND_BACK_AFTER.
    """

    def __init__(self, reactor: FakeProcessReactor, proto: Any, hold: bool) -> None:
        self.pid = next(_pids)
        self._reactor = reactor
        self.proto = proto
        self.hold = hold
        self._decoder = MessageDecoder()
        #: What it says to the slot, in order: output the job's capture
        #: sent (from its threads), skips, results.
        self._sent: list[list[bytes]] = []
        self._child = Child(self._sent.append)
        #: The real child's bookkeeping: tasks read and not started, skips,
        #: and each result naming the task started after it.
        self._tasks = Tasks(self._sent.append, self._child.keep)
        self._current: tuple[dict[str, Any], list[bytearray]] | None = None
        #: Messages written while a job runs: the child reads them later.
        self._unread: list[list[bytearray]] = []
        #: The real child's watch, on the clock: fires once the current job
        #: has run HAND_BACK_AFTER; then tasks written ahead come back.
        self._watch: Any = None
        self._long = False
        #: Every message the slot wrote to it: [header, arguments(, function)],
        #: or a skip.
        self.messages: list[list[bytes]] = []
        self._eof = False
        self.ended = False

    @property
    def running(self) -> int | None:
        """The task id of the job it is running (or holding), if any."""
        return self._current[0][Header.TASK] if self._current else None

    # -- IProcessTransport ------------------------------------------------------

    def writeToChild(self, childFD: int, data: bytes) -> None:
        if childFD != TASK_FD or self.ended:
            return
        for message in self._decoder.feed(data):
            parts = [bytearray(p.tobytes()) for p in message]
            self.messages.append([bytes(p) for p in parts])
            self._unread.append(parts)
        if self._current is None:
            self._read()
            self._start_next()
            if self._sent:  # (a skip for a task it no longer holds: none)
                self._reactor.callLater(0, self._deliver)
        elif self._long:
            self._hand_back()

    def _read(self) -> None:
        unread, self._unread = self._unread, []
        for parts in unread:
            self._tasks.take(parts)

    def closeChildFD(self, childFD: int) -> None:
        if childFD == TASK_FD:
            self._eof = True
            if self._current is None:
                self._reactor.callLater(0, self.exit, 0)

    def signalProcess(self, signalID: Any) -> None:
        if self.ended:
            raise ProcessExitedAlready()
        signum = {"KILL": 9, "TERM": 15, "INT": 2}.get(signalID, signalID)
        self._set_current(None)
        self._tasks, self._unread = Tasks(self._sent.append, self._child.keep), []
        self._reactor.callLater(0, self.exit, None, signum)

    def closeStdin(self) -> None:
        pass

    def closeStdout(self) -> None:
        pass

    def closeStderr(self) -> None:
        pass

    def loseConnection(self) -> None:
        self.closeChildFD(TASK_FD)

    # -- driving it from a test ---------------------------------------------------

    def _start_next(self) -> None:
        """Start the next task it holds, as the real child does when one
        ends (or one arrives while it is idle); the last result goes now."""
        self._set_current(self._tasks.next())
        if self._current is not None:
            self._reactor.ran.append(self._current[0][Header.TASK])
            if not self.hold:
                self._reactor.callLater(0, self.finish)

    def _set_current(self, task: tuple[dict[str, Any], list[bytearray]] | None) -> None:
        if self._watch is not None and self._watch.active():
            self._watch.cancel()
        self._current, self._long, self._watch = task, False, None
        if task is not None:
            self._watch = self._reactor.callLater(HAND_BACK_AFTER, self._hand_back)

    def _hand_back(self) -> None:
        """The job has run HAND_BACK_AFTER: what waits behind it goes back
        (skips answered too)."""
        self._long = True
        self._read()
        self._tasks.hand_back()
        self._deliver()

    def _deliver(self) -> None:
        sent, self._sent[:] = list(self._sent), []
        for message in sent:
            if self.ended:
                return
            self.proto.childDataReceived(RESULT_FD, b"".join(encode_message(message)))

    def finish(self) -> None:
        """Run the job it holds and send its result back (what it printed
        first); then it starts the next it holds."""
        if self.ended or self._current is None:
            return
        header, parts = self._current
        self._tasks.finished(*self._child.run(header, parts))
        self._read()
        self._start_next()
        self._deliver()
        if self._eof and self._current is None:
            self._reactor.callLater(0, self.exit, 0)

    def exit(self, code: int | None = 0, signal: int | None = None) -> None:
        """End the process as if it exited with ``code`` or died of ``signal``."""
        if self.ended:
            return
        self.ended = True
        self._set_current(None)
        if code == 0 and signal is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(exitCode=code, signal=signal))
        self.proto.processEnded(reason)


class FakeProcessReactor:
    """A clock that "spawns" :class:`FakeChildProcess` children (what a
    worker's slots need of a reactor: time and spawnProcess)."""

    def __init__(self, clock: Clock, hold: bool = False) -> None:
        self.clock = clock
        self.hold = hold
        self.children: list[FakeChildProcess] = []
        #: Task ids the children started, in order, across restarts.
        self.ran: list[int] = []

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay: float, f: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        return self.clock.callLater(delay, f, *a, **kw)

    def getDelayedCalls(self) -> Any:
        return self.clock.getDelayedCalls()

    def spawnProcess(self, processProtocol: Any, *args: Any, **kwargs: Any) -> FakeChildProcess:
        child = FakeChildProcess(self, processProtocol, self.hold)
        self.children.append(child)
        processProtocol.makeConnection(child)
        return child


class FakeMemory:
    """The memory of fake children, by pid, as a worker's limits read it
    (``worker.limits.proc``, a :class:`cwtx.worker.limits.Proc`): what a
    test sets.  A child it was told nothing of uses none."""

    def __init__(self) -> None:
        self.resident: dict[int, int] = {}  # pid -> RSS, bytes
        self.peaks: dict[int, int] = {}  # pid -> VmHWM, if more than its RSS
        self.caps: dict[int, int] = {}  # pid -> its RLIMIT_DATA, as the worker set it

    def rss(self, pid: int) -> int | None:
        return self.resident.get(pid, 0)

    def peak(self, pid: int) -> int | None:
        return max(self.peaks.get(pid, 0), self.resident.get(pid, 0))

    def cap_data(self, pid: int, size: int) -> None:
        self.caps[pid] = size


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """An endpoint whose connections reach a MemoryCluster's master in memory."""

    def __init__(self, cluster: MemoryCluster, refused: Callable[[], bool]) -> None:
        self._cluster = cluster
        self._refused = refused

    def connect(self, factory: Any) -> Deferred[Any]:
        if self._refused():
            return fail(ConnectionRefusedError("the MemoryCluster refuses connections just now"))
        proto = factory.buildProtocol(None)
        self._cluster._link(proto)
        return succeed(proto)


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
        priority_clients: Sequence[str] = (),
        function_cache: int = MASTER_FUNCTION_CACHE,
    ) -> None:
        """``hold=True``: every job stays running until :meth:`finish`.
        ``function_cache``: the master's (``cw-master --function-cache``)."""
        self.secret = secret
        self.clock = clock if clock is not None else Clock()
        self.master = Master(
            max_retries=max_retries,
            prefetch=prefetch,
            priority_clients=priority_clients,
            now=self.clock.seconds,
            function_cache=function_cache,
        )
        self.monitor = HeartbeatMonitor(self.clock)
        self.monitor.start()
        self._pumps: list[IOPump] = []
        #: While True, clients that try to (re)connect are refused.
        self.refuse_clients = False
        #: While True, workers that try to (re)connect are refused.
        self.refuse_workers = False
        # Each connection: its client-side protocol -> (master's end, pump, what iosim holds).
        self._links: dict[Any, tuple[MasterConnection, IOPump, Any]] = {}
        self.workers: list[Worker] = []
        for _ in range(workers):
            self.add_worker(slots, hold=hold)

    def _link(self, client_side: Any) -> MasterConnection:
        server = MasterConnection(self.master, self.monitor, self.clock, self.secret)
        _, _, pump = connectedServerAndClient(lambda: server, lambda: client_side, clock=self.clock)
        self._pumps.append(pump)
        self._links[client_side.unwrapped] = (server, pump, client_side)
        return server

    def master_end(self, thing: Worker | Client) -> MasterConnection:
        """The master's end of a worker's or a client's connection."""
        return self._links[self._protocol(thing)][0]

    def add_worker(
        self,
        slots: int = 1,
        name: str | None = None,
        hold: bool = False,
        isolate_clients: bool = False,
        resources: str = "",
        limits: Limits | None = None,
        function_cache: int = WORKER_FUNCTION_CACHE,
    ) -> Worker:
        """Connect and register a worker whose slot children are fakes.
        ``resources`` as ``cw-worker --resources`` takes them (``gpu=2,mem=64G``);
        ``limits`` on its children's memory (they use what its
        ``worker.limits.proc``, a :class:`FakeMemory`, says);
        ``function_cache`` as ``cw-worker --function-cache``.

        If its connection is lost it reconnects, as a real worker does,
        unless ``refuse_workers`` is set; :meth:`kill` ends it for good.
        """
        name = name or f"memory-{len(self.workers)}"
        amounts, devices = parse_spec(resources)
        worker = Worker(
            DescribedEndpoint(
                MemoryEndpoint(self, lambda: self.refuse_workers), "the MemoryCluster"
            ),
            FakeProcessReactor(self.clock, hold=hold),
            secret=self.secret,
            slots=slots,
            name=name,
            isolate_clients=isolate_clients,
            resources=amounts,
            devices=devices,
            limits=limits,
            function_cache=function_cache,
        )
        worker.limits.proc = FakeMemory()
        worker.startService()
        self.flush()
        if worker.connection is None:
            raise AssertionError(f"worker {name} did not register: {worker.endpoint.last_failure}")
        self.workers.append(worker)
        return worker

    def client(self, name: str = "client", secret: bytes | None = None, **settings: Any) -> Client:
        """A connected :class:`cwtx.Client` (``settings`` as for cwtx.connect).

        If its connection is lost it reconnects to this cluster, as a real
        client reconnects to a restarted master, unless ``refuse_clients``
        is set.
        """
        endpoint = DescribedEndpoint(
            MemoryEndpoint(self, lambda: self.refuse_clients), "the MemoryCluster"
        )
        d = Deferred.fromCoroutine(
            connect_to(
                endpoint, reactor=self.clock, secret=secret or self.secret, name=name, **settings
            )
        )
        self.flush()
        return self.result(d)

    # -- slots and their children ---------------------------------------------------

    @staticmethod
    def child(worker: Worker, slot: int = 0) -> FakeChildProcess:
        """The (current) fake child process of one of a worker's slots."""
        return worker.slots[slot].transport

    def finish(self, worker: Worker | None = None, slot: int = 0) -> None:
        """Let the job held by a slot (of the first worker by default) end, and flush."""
        self.child(worker or self.workers[0], slot).finish()
        self.flush()

    @staticmethod
    def ran(worker: Worker) -> list[int]:
        """Task ids the worker's slot children started, in order, restarts included."""
        return list(worker.reactor.ran)

    # -- connections ----------------------------------------------------------------

    @staticmethod
    def _protocol(thing: Worker | Client) -> Any:
        proto = thing.connection if isinstance(thing, Worker) else thing._protocol
        if proto is None:
            raise ValueError(f"{thing!r} is not connected")
        return proto

    def disconnect(self, thing: Worker | Client) -> None:
        """Drop a worker's or a client's connection, as a network failure
        would; both reconnect unless refused (see ``refuse_clients``,
        ``refuse_workers``)."""
        server, pump, client_side = self._links.pop(self._protocol(thing))
        self._pumps.remove(pump)
        reason = Failure(ConnectionLost("dropped by MemoryCluster.disconnect"))
        client_side.connectionLost(reason)
        server.connectionLost(reason)
        self.flush()

    def kill(self, worker: Worker) -> None:
        """The worker's process dies: its connection drops and it never returns."""
        worker.service.stopService()
        worker.monitor.stop()
        if worker.connection is not None:
            self.disconnect(worker)

    def pump(self, thing: Worker | Client) -> None:
        """Move the bytes waiting on one connection only (both ways), so that
        a test can order what crosses the wire."""
        self._links[self._protocol(thing)][1].pump()

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

    def report_starts(self) -> None:
        """Flush, then let the workers report the jobs that started (they
        wait START_REPORT_DELAY, so that a job that ends sooner costs none)."""
        self.flush()
        self.advance(START_REPORT_DELAY)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (heartbeats, timeouts), flushing as it goes."""
        self.clock.advance(seconds)
        self.flush()

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
