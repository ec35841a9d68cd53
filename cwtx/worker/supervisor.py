"""
The worker supervisor (``twistd cw-worker``): holds the connection to the
master, answers heartbeats, and hands tasks to its slot children.
"""

from __future__ import annotations

import bisect
import json
import os
import socket
import time
from itertools import count
from typing import Any

import txaio
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed

from cwtx._errors import error_json
from cwtx._logs import debugging, printable
from cwtx._secret import load_secret
from cwtx.wire import handshake as auth
from cwtx.wire.batch import BatchSender
from cwtx.wire.commands import (
    CancelTasks,
    DropFunctions,
    FreeData,
    LeaveWorker,
    PutData,
    RegisterWorker,
    RunTasks,
    TakeBackTasks,
    TaskOutput,
    TaskResults,
    TasksStarted,
)
from cwtx.wire.names import (
    JobStatus,
    OutputStream,
    Role,
    data_hash,
    dropped_notice,
    function_hash,
    split_hashes,
)
from cwtx.wire.payload import EMPTY, Payload
from cwtx.wire.peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, HeartbeatMonitor, Peer
from cwtx.wire.reconnect import DescribedEndpoint, reconnecting, retry_policy
from cwtx.wire.resources import decode as decode_resources
from cwtx.wire.tls import tls_failure
from cwtx.worker.functions import DEFAULT_FUNCTION_CACHE, Functions
from cwtx.worker.limits import ChildLimits, Limits
from cwtx.worker.slot import Slot, Task

txaio.use_twisted()
log = txaio.make_logger()

#: A task's end: (task id, status, value, error, seconds it ran).
Result = tuple[int, JobStatus, Payload, str, float]
#: A task that started: (task id, slot, when).
Started = tuple[int, int, float]
#: Lines a task printed: (task id, stream, text).
Output = tuple[int, OutputStream, str]

#: TaskOutput records waiting to go to the master, at most (each at most
#: output.RECORD_TEXT characters); beyond, lines are dropped (and counted).
MAX_UNSENT_OUTPUT = 256

#: Starts are reported after this many seconds, in one batch: a task that
#: ends sooner is reported by its result alone (no-op jobs cost no more).
START_REPORT_DELAY = 0.01

#: Seconds a leaving worker lets its running jobs finish before it kills
#: them and hands them back (SLURM sends SIGKILL 30 s after scancel's signal).
GRACE = 25.0


class WorkerProtocol(Peer):
    """The worker's end of its connection to the master."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(worker.reactor)
        self.worker = worker
        self.results: BatchSender[Result] = BatchSender(
            self, TaskResults, "results", self._encode_result
        )
        self.started: BatchSender[Started] = BatchSender(
            self, TasksStarted, "started", self._encode_started
        )
        self.output: BatchSender[Output] = BatchSender(
            self, TaskOutput, "output", self._encode_output
        )

    def describe(self) -> str:
        return "master"

    @staticmethod
    def _encode_result(item: Result) -> tuple[dict[str, Any], dict[str, Payload]]:
        task, status, value, error, seconds = item
        fields = {"task": task, "status": status, "error": error, "seconds": seconds}
        return fields, {"value": value}

    def _encode_started(self, item: Started) -> tuple[dict[str, Any], dict[str, Payload]] | None:
        task, slot, at = item
        if task not in self.worker.tasks:
            return None  # it ended already: its result, on its way, says it ran
        return {"task": task, "slot": slot, "at": at}, {}

    @staticmethod
    def _encode_output(item: Output) -> tuple[dict[str, Any], dict[str, Payload]]:
        task, stream, text = item
        return {"task": task, "stream": stream, "text": text}, {}

    @TakeBackTasks.responder
    def _take_back(self, tasks: list[int]) -> Deferred[dict[str, Any]]:
        return self.worker.take_back(tasks).addCallback(lambda back: {"returned": back})

    @RunTasks.responder
    def _run_tasks(self, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        for record in tasks:
            self.worker.accept(self, record)
        self.worker.dispatch()
        return {}

    @CancelTasks.responder
    def _cancel_tasks(self, tasks: list[int]) -> dict[str, Any]:
        self.worker.cancel(tasks)
        return {}

    @PutData.responder
    def _put_data(self, ref: bytes, data: bytes, data_blob: int) -> dict[str, Any]:
        self.worker.put_data(ref, self.blobs_in.take(data, data_blob))
        return {}

    @FreeData.responder
    def _free_data(self, refs: bytes) -> dict[str, Any]:
        self.worker.free_data(split_hashes(refs))
        return {}

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.results.stop()
        self.started.stop()
        self.output.stop()
        self.worker.disconnected(self)


class Worker(Service):
    """Slots, the tasks they run, and the (re)connection to the master."""

    def __init__(
        self,
        endpoint: DescribedEndpoint,
        reactor: Any,
        slots: int = 1,
        name: str | None = None,
        resources: dict[str, float] | None = None,
        devices: set[str] | frozenset[str] = frozenset(),
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        grace: float = GRACE,
        secret: bytes | None = None,
        isolate_clients: bool = False,
        limits: Limits | None = None,
        function_cache: int = DEFAULT_FUNCTION_CACHE,
    ) -> None:
        """``endpoint`` leads to the master (cwtx.testing gives one in
        memory); ``reactor`` provides time, and spawnProcess for the slot
        children (cwtx.testing gives a fake one).  ``resources``: amounts
        offered, by name; those named in ``devices`` are that many devices,
        numbered from 0, whose ids the jobs holding them are told.
        ``limits``: on the slots' memory, and when their children are
        replaced (worker.limits).  ``function_cache``: bytes of functions
        kept here, and in each slot's child (worker.functions)."""
        if slots < 1:
            raise ValueError(f"a worker needs at least one slot, not {slots}")
        self.reactor = reactor
        self._secret = secret if secret is not None else load_secret()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.resources = dict(resources or {})
        self.devices = {n: list(range(int(a))) for n, a in self.resources.items() if n in devices}
        self.amounts = {n: a for n, a in self.resources.items() if n not in devices}
        self.slots = [
            Slot(
                i,
                reactor,
                self._slot_result,
                self.dispatch,
                on_output=self._slot_output,
                on_started=lambda task, i=i: self._started(task, i),
                on_unstarted=self._slot_unstarted,
                function_cache=function_cache,
            )
            for i in range(slots)
        ]
        self.limits = ChildLimits(reactor, limits or Limits(), self.name)
        self.limits.attach(self.slots)
        self.functions = Functions(function_cache, reactor, self._tell_dropped)
        #: Put data (cwtx.Ref) the master sent, by hash, until it frees it.
        self.data: dict[bytes, Payload] = {}
        #: Tasks waiting for a slot, lowest order first (then as they came).
        self.queue: list[tuple[float, int, Task]] = []
        self._arrivals = count()
        self.tasks: dict[int, Task] = {}
        # Cancels that overtook their RunTasks record on the wire.
        self.cancelled_early: set[int] = set()
        self.leaving = False
        self.grace = grace
        #: Run each client session's jobs in children no other session used.
        self.isolate_clients = isolate_clients
        self._idle: list[Deferred[None]] = []
        self._starts: list[Started] = []  # to report once START_REPORT_DELAY has passed
        #: Tasks written ahead that the master asked back: True once the
        #: child dropped one (handed back), False if it started or ended.
        self._taking: dict[int, Deferred[bool]] = {}
        self.connection: WorkerProtocol | None = None
        self.monitor = HeartbeatMonitor(reactor, heartbeat_interval, heartbeat_timeout)
        self.endpoint = endpoint
        self.service = reconnecting(
            endpoint,
            lambda: WorkerProtocol(self),
            self.handshake,
            reactor,
            retry_policy(initial=0.2, most=10.0),
        )

    # -- connection ---------------------------------------------------------

    async def handshake(self, proto: WorkerProtocol) -> None:
        """Authenticate and register; then the master may send tasks.

        On failure the connection is closed and the service tries again
        later, with backoff.
        """
        try:
            # Bounded, like the heartbeats: a peer that accepts and then says
            # nothing (a stalled master, a relay holding an answer back)
            # would hold this connection attempt, and the worker, for ever.
            d = Deferred.fromCoroutine(self._join(proto))
            reply = await d.addTimeout(self.monitor.timeout, self.reactor)
        except Exception as e:
            if isinstance(e, defer.TimeoutError):
                why = f"no answer within {self.monitor.timeout:g} s"
            else:
                why = tls_failure(e, proto.transport) or str(e) or type(e).__name__
            log.error(
                "worker {name} could not join the master at {where}: {why}",
                name=self.name,
                where=self.endpoint,
                why=why,
            )
            raise
        self.connection = proto
        self.monitor.watch(proto)
        log.info(
            "worker {name} registered with master {master} at {where} ({slots})",
            name=self.name,
            master=printable(reply["master"], 40),  # the master's word: escaped
            where=self.endpoint,
            slots=f"{len(self.slots)} slot{'s' if len(self.slots) != 1 else ''}",
        )

    async def _join(self, proto: WorkerProtocol) -> dict[str, Any]:
        reply = await auth.handshake(proto, Role.WORKER, self.name, self._secret)
        await proto.callRemote(
            RegisterWorker, slots=len(self.slots), resources=json.dumps(self.resources)
        )
        return reply

    def _tell_dropped(self, fns: bytes) -> Deferred[Any]:
        """Tell the master these functions were dropped here (worker.functions)."""
        if self.connection is None:
            return defer.fail(ConnectionError("no master"))
        return self.connection.callRemote(DropFunctions, fns=fns)

    def disconnected(self, proto: WorkerProtocol) -> None:
        """The master is gone: what it gave us will be retried elsewhere."""
        self.monitor.unwatch(proto)
        if self.connection is not proto:
            return
        self.connection = None
        if self.leaving:  # our own leave closed it: nothing was lost
            log.info("worker {name} disconnected from the master", name=self.name)
        else:
            log.warn("worker {name} lost the master; dropping its tasks", name=self.name)
        self.queue.clear()
        self.tasks.clear()
        self._settle_all_taking()
        self.cancelled_early.clear()
        self.functions.clear()
        self.free_data(list(self.data))  # (a new session with the master sends it again)
        for slot in self.slots:
            slot.kill("abandoned")

    # -- jobs ---------------------------------------------------------------

    def accept(self, proto: WorkerProtocol, record: dict[str, Any]) -> None:
        """Queue one task the master sent (or end it at once, saying why)."""
        task_id = record["task"]
        fn = record["fn"]
        if self.leaving:
            self._end(task_id, JobStatus.REQUEUE, self._leaving_message)
            return
        if task_id in self.cancelled_early:
            self.cancelled_early.discard(task_id)
            self._end(task_id, JobStatus.CANCELLED, "cancelled")
            return
        try:
            code = proto.blobs_in.take(record["fn_code"], record["fn_code_blob"])
            args = proto.blobs_in.take(record["args"], record["args_blob"])
            refs = split_hashes(record["refs"])
        except ValueError as e:
            self._end(task_id, JobStatus.ERROR, str(e), "ProtocolError")
            return
        missing = [ref for ref in refs if ref not in self.data]
        if missing:
            message = f"put data {missing[0].hex()[:16]}... was never sent"
            self._end(task_id, JobStatus.ERROR, message, "ProtocolError")
            return
        if code.size:
            if function_hash(record["fn_env"], code.pieces) != fn:
                message = f"function {fn.hex()[:16]}... does not match its code"
                self._end(task_id, JobStatus.ERROR, message, "ProtocolError")
                return
            self.functions.learn(fn, record["fn_env"], code)
        known = self.functions.get(fn)
        if known is None:
            message = f"function {fn.hex()} was never sent"
            self._end(task_id, JobStatus.ERROR, message, "ProtocolError")
            return
        try:
            needs = decode_resources(record["resources"], "resources")
        except ValueError as e:
            self._end(task_id, JobStatus.ERROR, str(e), "ProtocolError")
            return
        env, code = known
        task = Task(
            task_id,
            fn,
            env,
            code,
            args,
            timeout=record["timeout"],
            session=record["session"],
            order=record["order"],
            needs=needs,
            forward_output=bool(record["forward_output"]),
            arrival=next(self._arrivals),
            data=[(ref, self.data[ref]) for ref in refs],
        )
        self.tasks[task_id] = task
        bisect.insort(self.queue, (task.order, task.arrival, task))

    def put_data(self, ref: bytes, data: Payload) -> None:
        """Keep put data for the tasks that will name it, if it is what its
        hash says (it is cached by hash, across clients); else tasks that
        name it end with an error."""
        if data_hash(data.pieces) != ref:
            log.error("worker {name}: put data does not match its hash", name=self.name)
            return
        self.data[ref] = data

    def free_data(self, refs: list[bytes]) -> None:
        """No task will name this put data any more: drop it, here and in
        the slots' children.  (A task queued here keeps what it names.)"""
        for ref in refs:
            self.data.pop(ref, None)
        for slot in self.slots:
            slot.forget(refs)

    def dispatch(self) -> None:
        """Start waiting tasks in free slots, lowest order first; a task
        whose resources are held by running ones waits, and the next runs.
        Then write the next ones ahead into busy slots (:meth:`_write_ahead`)."""
        if self.leaving:
            return
        for slot in self.slots:
            if not self.queue:
                return
            if not slot.free:
                continue
            index = self._next_to_start()
            if index is None:
                break  # what waits needs resources that running tasks hold
            task = self.queue[index][2]
            if self.isolate_clients and slot.session not in (None, task.session):
                slot.recycle()  # a fresh child first; it runs the task once up
                continue
            del self.queue[index]
            self._hold(task)
            slot.run(task)
        self._write_ahead()

    def _write_ahead(self) -> None:
        """Write the tasks that would start next into busy slots' children,
        up to each slot's room, so a slot starts its next task without a
        round trip.  Only the first waiting task goes, and only if it needs
        no resources (it would hold them while it waits) and, with
        --isolate-clients, is of the session the slot runs: a task written
        to a child is committed to it."""
        for slot in self.slots:
            while self.queue and slot.room > 0:
                task = self.queue[0][2]
                if task.needs or (self.isolate_clients and task.session != slot.session):
                    return
                del self.queue[0]
                slot.run(task)

    def _started(self, task: Task, slot: int) -> None:
        """A slot's child started a task: the master hears of it soon."""
        self._settle_taking(task.task, False)
        task.started_at = self.reactor.seconds()
        if debugging(log):
            log.debug(
                "task {task} started in worker {worker}, slot {slot}",
                task=task.task,
                worker=self.name,
                slot=slot,
            )
        if not self._starts:
            self.reactor.callLater(START_REPORT_DELAY, self._report_starts)
        self._starts.append((task.task, slot, time.time()))

    def _report_starts(self) -> None:
        starts, self._starts = self._starts, []
        if self.connection is not None:
            for item in starts:
                if item[0] in self.tasks:  # not ended yet
                    self.connection.started.add(item)

    def _next_to_start(self) -> int | None:
        """The index in the queue of the first task whose resources are free."""
        for index, (_, _, task) in enumerate(self.queue):
            if not task.needs or self._fits(task):
                return index
        return None

    # -- resources ------------------------------------------------------------

    def _fits(self, task: Task) -> bool:
        for name, amount in task.needs.items():
            if name in self.devices:
                if len(self.devices[name]) < amount:
                    return False
            elif self.amounts.get(name, 0) < amount - 1e-9 * max(amount, 1.0):
                return False  # (a billionth is float rounding, as at the master)
        return True

    def _hold(self, task: Task) -> None:
        """Give the task what it asked for: whole devices by id, or amounts."""
        for name, amount in task.needs.items():
            if name in self.devices and amount == int(amount):
                free = self.devices[name]
                n = int(amount)
                task.held[name], free[:] = free[:n], free[n:]
            elif name in self.devices:
                task.held[name] = amount  # a fraction of a device: no id of its own
            else:
                self.amounts[name] = self.amounts.get(name, 0) - amount
                task.held[name] = amount

    def _release(self, task: Task) -> None:
        for name, held in task.held.items():
            if isinstance(held, list):
                self.devices[name] = sorted(self.devices[name] + held)
            elif name in self.devices:
                pass  # a fraction took no id
            else:
                self.amounts[name] = self.amounts.get(name, 0) + held
        task.held = {}

    def take_back(self, task_ids: list[int]) -> Deferred[list[int]]:
        """Hand back the tasks named that wait for a slot; the master runs
        them elsewhere.  Started (or ended) ones stay as they are.  For one
        written ahead to a slot's child the answer waits: it starts there
        when the task before it ends (not handed back: it was next anyway),
        or, if that one runs HAND_BACK_AFTER, the child hands it back."""
        wanted = set(task_ids)
        returned = [e[2].task for e in self.queue if e[2].task in wanted]
        if returned:
            self.queue = [e for e in self.queue if e[2].task not in wanted]
            for task_id in returned:
                del self.tasks[task_id]
        asked: list[Deferred[int | None]] = []
        for slot in self.slots:
            for task in list(slot.queued):
                if task.task in wanted and task.task not in self._taking:
                    d: Deferred[bool] = Deferred()
                    self._taking[task.task] = d
                    asked.append(d.addCallback(lambda back, t=task.task: t if back else None))
        if not asked:
            return succeed(returned)
        answers = gatherResults(asked)
        return answers.addCallback(lambda more: returned + [t for t in more if t is not None])

    def _settle_taking(self, task_id: int, back: bool) -> None:
        d = self._taking.pop(task_id, None)
        if d is not None:
            d.callback(back)

    def _settle_all_taking(self) -> None:
        taking, self._taking = self._taking, {}
        for d in taking.values():
            d.callback(False)

    def cancel(self, task_ids: list[int]) -> None:
        for task_id in task_ids:
            task = self.tasks.get(task_id)
            if task is None:
                if len(self.cancelled_early) >= 100_000:
                    self.cancelled_early.clear()  # crossed with results long ago
                self.cancelled_early.add(task_id)
                continue
            waiting = [e for e in self.queue if e[2] is task]
            if waiting:
                self.queue.remove(waiting[0])
                del self.tasks[task_id]
                self._end(task_id, JobStatus.CANCELLED, "cancelled")
                continue
            for slot in self.slots:
                if slot.current is task:
                    slot.kill(JobStatus.CANCELLED)
                elif slot.skip(task, JobStatus.CANCELLED):
                    break  # it ends when the child drops it (or is killed)

    def _slot_output(self, task: Task, stream: OutputStream, text: str) -> None:
        """Lines a task printed (bounded by its slot): to the master, unless
        MAX_UNSENT_OUTPUT records wait already (then they are counted, and
        a notice says so)."""
        proto = self.connection
        if proto is None or self.tasks.get(task.task) is not task:
            return
        if len(proto.output) >= MAX_UNSENT_OUTPUT:
            task.output_dropped += text.count("\n")
            return
        if task.output_dropped:
            text = dropped_notice(task.output_dropped) + text
            task.output_dropped = 0
        task.output_sent = True
        proto.output.add((task.task, stream, text))

    def _slot_unstarted(self, task: Task, reason: JobStatus | None) -> None:
        """A task written ahead to a child did not start there: skipped
        (cancelled, or handed back by a leaving worker), or the child handed
        it back (the task before it runs long) or died first: then it waits
        for a slot again, here, or on another worker if the master asked
        for it back meanwhile."""
        if self.tasks.get(task.task) is not task:
            return  # abandoned when the master went away
        taken = reason is None and task.task in self._taking
        self._settle_taking(task.task, taken)
        if reason is None and not taken and not self.leaving:
            bisect.insort(self.queue, (task.order, task.arrival, task))
            self.dispatch()
            return
        self._release(task)
        del self.tasks[task.task]
        if reason == JobStatus.CANCELLED:
            self._end(task.task, JobStatus.CANCELLED, "cancelled")
        elif not taken:  # (one the master takes back has no result)
            self._end(task.task, JobStatus.REQUEUE, self._leaving_message)
        self._check_idle()

    def _slot_result(self, task: Task, status: JobStatus, value: Payload, error: str) -> None:
        self._release(task)
        if self.tasks.get(task.task) is not task:
            return  # abandoned when the master went away
        self._settle_taking(task.task, False)
        del self.tasks[task.task]
        seconds = self.reactor.seconds() - task.started_at if task.started_at else 0.0
        if debugging(log):
            log.debug(
                "task {task} ended in worker {worker}: {status}",
                task=task.task,
                worker=self.name,
                status=status,
            )
        proto = self.connection
        if task.output_dropped and proto is not None:
            proto.output.add((task.task, OutputStream.STDERR, dropped_notice(task.output_dropped)))
            task.output_sent = True
        if task.output_sent and proto is not None:
            # Its result goes once its output is on its way to the master
            # (the connection keeps order), so the client sees every line a
            # job printed before its result; others' output does not hold it.
            item = (task.task, status, value, error, seconds)
            proto.output.flushed().addCallback(lambda _: proto.results.add(item))
        else:
            self._report(task.task, status, value, error, seconds)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self.tasks:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def _when_idle(self, timeout: float) -> Deferred[None]:
        """Fires when no task is left, or after ``timeout`` seconds."""
        if not self.tasks:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        d.addTimeout(timeout, self.reactor)
        return d.addErrback(lambda f: f.trap(defer.TimeoutError))

    def _report(
        self, task_id: int, status: JobStatus, value: Payload, error: str, seconds: float = 0.0
    ) -> None:
        if self.connection is not None:
            self.connection.results.add((task_id, status, value, error, seconds))

    def _end(self, task_id: int, status: JobStatus, message: str, kind: str = "") -> None:
        """Report a task that ends without running, and why."""
        self._report(task_id, status, EMPTY, error_json(kind or status, message))

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        for slot in self.slots:
            slot.start()
        self.limits.start()
        self.monitor.start()
        self.service.startService()

    def stopService(self) -> Deferred[Any]:
        """Leave gracefully (SIGINT, SIGTERM): see :meth:`leave`."""
        super().stopService()
        return Deferred.fromCoroutine(self.leave())

    async def leave(self) -> None:
        """
        Stop taking jobs, hand back the ones not started, let running ones
        finish for up to ``grace`` seconds (then kill and hand them back
        too), make sure the master has every result, then disconnect.
        Handed-back jobs run again elsewhere without counting an attempt.
        """
        self.leaving = True
        proto = self.connection
        if proto is not None and not proto.dead:
            log.info(
                "worker {name} leaving: finishing {n} running jobs (grace {g:g} s)",
                name=self.name,
                n=sum(1 for s in self.slots if s.current),
                g=self.grace,
            )
            try:
                await proto.callRemote(LeaveWorker).addTimeout(5, self.reactor)
            except Exception as e:
                # Most often it is stopping too (all were signalled at once).
                log.info("the master did not take our leave: {e}", e=e)
            while self.queue:
                task = self.queue.pop(0)[2]
                del self.tasks[task.task]
                self._end(task.task, JobStatus.REQUEUE, self._leaving_message)
            for slot in self.slots:  # and those written ahead to children
                slot.withdraw(JobStatus.REQUEUE)
            await self._when_idle(self.grace)
            for slot in self.slots:
                slot.kill(JobStatus.REQUEUE)
            await self._when_idle(10)
            # (a result of a job that forwards output waits for its output)
            await proto.output.drained().addTimeout(10, self.reactor).addErrback(lambda _: None)
            await proto.results.drained().addTimeout(10, self.reactor).addErrback(lambda _: None)
        self.monitor.stop()
        self.limits.stop()
        await self.service.stopService()
        waits = []
        for slot in self.slots:
            ended: Deferred[None] = Deferred()
            slot.stop(lambda ended=ended: ended.callback(None))
            waits.append(ended)
        await DeferredList(waits)
        log.info("worker {name} left", name=self.name)

    @property
    def _leaving_message(self) -> str:
        return f"worker {self.name} left before starting the job; it runs elsewhere"
