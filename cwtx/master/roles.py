"""
What an authenticated peer may ask the master, one responder set per role.
A connection's AMP locator becomes one of these once the peer has proved
the shared secret (``connection``); each turns commands into calls on the
:class:`~cwtx.master.master.Master` and its deliveries into batched commands.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import txaio
from twisted.internet.defer import Deferred

from cwtx._errors import ProtocolError
from cwtx.master.jobs import Task
from cwtx.master.sessions import (
    MAX_RESOURCES,
    ClientSession,
    HeldData,
    OutputItem,
    ResultItem,
    WorkerSession,
)
from cwtx.master.status import page as status_page
from cwtx.wire.batch import BatchSender
from cwtx.wire.batch import Encoded as BatchEncoded
from cwtx.wire.commands import (
    BlobChunk,
    CancelJobs,
    CancelTasks,
    DropFunctions,
    FreeData,
    Heartbeat,
    JobOutput,
    JobResults,
    JobsStarted,
    LeaveWorker,
    PutData,
    RegisterWorker,
    RunTasks,
    SetShare,
    Status,
    SubmitJobs,
    TakeBackTasks,
    TaskOutput,
    TaskResults,
    TasksStarted,
)
from cwtx.wire.names import OutputStream, Role, dropped_notice, per_command, split_hashes
from cwtx.wire.payload import Data
from cwtx.wire.peer import Guarded
from cwtx.wire.resources import amounts
from cwtx.wire.status import pieces as status_pieces

if TYPE_CHECKING:
    from cwtx.master.connection import MasterConnection

txaio.use_twisted()
log = txaio.make_logger()

#: Start notices waiting to go to one client (see _deliver_started).
MAX_UNSENT_STARTS = 100_000
#: Characters of forwarded output waiting to go to one client (see
#: _deliver_output); beyond, lines are dropped and counted.
MAX_UNSENT_OUTPUT = 1024 * 1024

#: What one batched record is encoded from: (fields, payloads), or None to skip it.
Encoded = tuple[dict[str, Any], dict[str, Data]]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ProtocolError(message)


class Responders(Guarded):
    """Every role may send heartbeats."""

    def __init__(self, connection: MasterConnection) -> None:
        self.connection = connection
        self.master = connection.master

    def refused(self, why: str) -> None:
        self.connection.note("refused and closed: " + why)
        self.connection.dead = True  # what it sent after that is not read

    @Heartbeat.responder
    def heartbeat(self) -> dict[str, Any]:
        return {}

    def lost(self, why: str) -> None:
        """The connection closed (``why``)."""


class StatusResponders(Responders):
    """A status query (``cw status``, launchers): Status only."""

    @Status.responder
    def status(self, page: int) -> dict[str, Any]:
        _check(page >= 0, f"no status page {page}")
        return {"status": status_pieces(status_page(self.master, page))}


class BlobResponders(Responders):
    """Peers that send payloads too large for one AMP value stream them first."""

    @BlobChunk.responder
    def blob_chunk(self, blob: int, data: list[bytes]) -> dict[str, Any]:
        self.connection.blobs_in.chunk(blob, data)
        return {}


class ClientResponders(StatusResponders, BlobResponders):
    """A client: submit and cancel jobs, ask for status; results go back in batches."""

    def __init__(self, connection: MasterConnection) -> None:
        super().__init__(connection)
        self.sender: BatchSender[ResultItem] = BatchSender(
            connection, JobResults, "results", self._encode_result
        )
        self.started: BatchSender[int] = BatchSender(
            connection, JobsStarted, "jobs", self._encode_started
        )
        self.output: BatchSender[OutputItem] = BatchSender(
            connection, JobOutput, "output", self._encode_output
        )
        self.output_chars = 0  # of the text waiting in self.output
        self._had_output: set[int] = set()  # jobs with output sent or waiting, not ended
        #: Lines dropped for a client that does not take them: job id -> (worker, lines).
        self.output_dropped: dict[int, tuple[str, int]] = {}
        self.session = ClientSession(
            connection.name,
            self._deliver_result,
            connection.versions,
            self._deliver_started,
            self._deliver_output,
        )
        self.session.origin = connection.origin
        self.session.deliver_drop = self._drop_function
        self._to_drop: list[tuple[bytes, Deferred[None]]] = []  # DropFunctions to send
        self.master.add_client(self.session)
        log.info(
            "client {name} connected (python {py}, cloudpickle {cp})",
            name=connection.name,
            py=connection.versions[0],
            cp=connection.versions[1],
        )

    @SubmitJobs.responder
    def submit(self, jobs: list[dict[str, Any]]) -> Deferred[dict[str, Any]]:
        blobs = self.connection.blobs_in
        for r in jobs:
            if r["fn_code"] or r["fn_code_blob"]:
                code = blobs.take(r["fn_code"], r["fn_code_blob"])
                if code.size:
                    self.master.define(self.session, r["fn"], r["fn_env"], code)
            # Inline arguments are kept as the bytes they came in.
            args = blobs.take(r["args"], r["args_blob"]) if r["args_blob"] else r["args"]
            self.master.submit(
                self.session,
                r["job"],
                r["fn"],
                args,
                timeout=r["timeout"],
                max_retries=r["max_retries"],
                priority=r["priority"],
                resources=r["resources"],
                forward_output=bool(r["forward_output"]),
                refs=r["refs"],
            )
        self.master.dispatch()
        # Flow control: a client holding too much waits for this answer, and
        # its sender sends at most a few batches ahead of its answers.
        return self.session.when_below_limit().addCallback(lambda _: {})

    @PutData.responder
    def put_data(self, ref: bytes, data: bytes, data_blob: int) -> dict[str, Any]:
        payload = self.connection.blobs_in.take(data, data_blob)
        self.master.put_data(self.session, ref, payload)
        return {}

    @FreeData.responder
    def free_data(self, refs: bytes) -> dict[str, Any]:
        try:
            hashes = split_hashes(refs)
        except ValueError as e:
            raise ProtocolError(str(e)) from None
        self.master.free_data(self.session, hashes)
        return {}

    @CancelJobs.responder
    def cancel(self, jobs: list[int]) -> dict[str, Any]:
        self.master.cancel(self.session, jobs)
        return {}

    @SetShare.responder
    def set_share(self, share: float) -> dict[str, Any]:
        self.master.set_share(self.session, share)
        self.master.dispatch()
        return {}

    def _deliver_started(self, job_id: int) -> None:
        """A start notice is a courtesy: a client that does not take them
        (its JobsStarted answers never come) gets no more once
        MAX_UNSENT_STARTS wait, rather than the master keeping them all."""
        if len(self.started) < MAX_UNSENT_STARTS:
            self.started.add(job_id)

    def _deliver_result(self, item: ResultItem) -> None:
        """A result goes after the job's output (so the client has every
        line before its result), and after a notice of lines dropped."""
        job_id = item[0]
        dropped = self.output_dropped.pop(job_id, None)
        if dropped is not None:
            self._queue_output(
                (job_id, dropped[0], OutputStream.STDERR, dropped_notice(dropped[1]))
            )
        if job_id in self._had_output:
            # (not only while its records wait: one may be in a batch not
            # yet handed to the connection)
            self._had_output.discard(job_id)
            self.output.flushed().addCallback(lambda _: self.sender.add(item))
        else:
            self.sender.add(item)

    def _deliver_output(self, item: OutputItem) -> None:
        """Forwarded output is bounded per client: beyond MAX_UNSENT_OUTPUT
        characters waiting (a client slow to take them), lines are dropped,
        and counted in a notice that goes with the job's next lines, or
        before its result."""
        job_id, worker, stream, text = item
        if self.output_chars + len(text) > MAX_UNSENT_OUTPUT:
            lines = self.output_dropped.get(job_id, (worker, 0))[1] + text.count("\n")
            self.output_dropped[job_id] = (worker, lines)
            return
        dropped = self.output_dropped.pop(job_id, None)
        if dropped is not None:
            item = (job_id, worker, stream, dropped_notice(dropped[1]) + text)
        self._queue_output(item)

    def _queue_output(self, item: OutputItem) -> None:
        self.output_chars += len(item[3])
        self._had_output.add(item[0])
        self.output.add(item)

    def _drop_function(self, fn: bytes) -> Deferred[None]:
        """Tell the client the master drops a function, with the others of
        this turn: the Deferred fires at its answer (never, if it leaves)."""
        if not self._to_drop:
            self.connection.clock.callLater(0, self._send_drops)
        d: Deferred[None] = Deferred()
        self._to_drop.append((fn, d))
        return d

    def _send_drops(self) -> None:
        drops, self._to_drop = self._to_drop, []
        if self.session.dropping_bytes > self.session.max_bytes:
            # An honest client answers once its queued records are out.
            self.connection.drop(
                f"it holds over {self.session.max_bytes} bytes of dropped functions "
                "at the master: it does not answer DropFunctions"
            )
            return
        for chunk in per_command(drops):
            fns = b"".join(fn for fn, _ in chunk)
            sent = self.connection.callRemote(DropFunctions, fns=fns)
            sent.addCallbacks(
                lambda _, chunk=chunk: [d.callback(None) for _, d in chunk], lambda _: None
            )

    def _encode_output(self, item: OutputItem) -> Encoded:
        job_id, worker, stream, text = item
        self.output_chars -= len(text)
        return {"job": job_id, "worker": worker, "stream": stream, "text": text}, {}

    def _encode_started(self, job_id: int) -> Encoded | None:
        if job_id not in self.session.jobs:
            return None  # it ended already: its result says more
        return {"job": job_id}, {}

    def _encode_result(self, item: ResultItem) -> Encoded:
        # Its turn to go out: in flight from here (BATCH_WINDOW bounds that).
        self.session.sent(item)
        job_id, status, value, error = item
        return {"job": job_id, "status": status, "error": error}, {"value": value}

    def lost(self, why: str) -> None:
        self.sender.stop()
        self.started.stop()
        self.output.stop()
        self.output_dropped.clear()
        self._had_output.clear()
        log.info("client {name} left ({why})", name=self.connection.name, why=why)
        self.master.remove_client(self.session)


class WorkerResponders(BlobResponders):
    """A worker: register, report how tasks ended, leave; tasks go to it in batches."""

    def __init__(self, connection: MasterConnection) -> None:
        super().__init__(connection)
        self.session: WorkerSession | None = None
        self.sender: BatchSender[Task] = BatchSender(
            connection, RunTasks, "tasks", self._encode_task
        )
        self._to_free: list[bytes] = []  # put data it is yet to be told to drop

    @RegisterWorker.responder
    def register(self, slots: int, resources: str) -> dict[str, Any]:
        _check(self.session is None, "this worker is already registered")
        _check(0 < slots <= 100_000, f"slots must be from 1 to 100000, not {slots}")
        try:
            res = json.loads(resources) if resources else {}
        except ValueError:
            res = None
        _check(isinstance(res, dict), "resources must be a JSON object")
        size = len(json.dumps(res))  # as status shows it (non-ASCII escaped)
        _check(size <= MAX_RESOURCES, f"resources of {size} bytes (at most {MAX_RESOURCES})")
        try:
            res = amounts(res)
        except ValueError as e:
            raise ProtocolError(str(e)) from None
        self.session = WorkerSession(
            self.connection.name,
            slots,
            self.sender.add,
            self._send_cancel,
            res,
            prefetch=self.master.prefetch,
            versions=self.connection.versions,
            deliver_take_back=self._take_back,
            deliver_free=self._free,
        )
        self.session.origin = self.connection.origin
        self.session.heard_at = lambda: self.connection.last_seen
        self.master.add_worker(self.session)
        return {}

    @DropFunctions.responder
    def drop_functions(self, fns: bytes) -> Deferred[dict[str, Any]]:
        """The worker dropped these functions: the next task there that
        names one carries its code.  Answered once the tasks queued for it
        (which may name them without code) are on their way."""
        session = self._registered()
        try:
            session.functions.difference_update(split_hashes(fns))
        except ValueError as e:
            raise ProtocolError(str(e)) from None
        return self.sender.flushed().addCallback(lambda _: {})

    def _registered(self) -> WorkerSession:
        _check(self.session is not None, "a worker must register first")
        assert self.session is not None
        return self.session

    @TaskResults.responder
    def results(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        session = self._registered()
        blobs = self.connection.blobs_in
        for r in results:
            value = blobs.take(r["value"], r["value_blob"]) if r["value_blob"] else r["value"]
            self.master.task_result(
                session, r["task"], r["status"], value, r["error"], r["seconds"]
            )
        self.master.dispatch()
        return {}

    @TaskOutput.responder
    def task_output(self, output: list[dict[str, Any]]) -> dict[str, Any]:
        session = self._registered()
        for r in output:
            self.master.task_output(session, r["task"], r["stream"], r["text"])
        return {}

    @TasksStarted.responder
    def tasks_started(self, started: list[dict[str, Any]]) -> dict[str, Any]:
        session = self._registered()
        for r in started:
            self.master.task_started(session, r["task"])
        self.master.dispatch()  # work stealing looks at what started
        return {}

    def _take_back(self, tasks: list[int]) -> Deferred[list[int]]:
        d = self.connection.callRemote(TakeBackTasks, tasks=tasks)
        return d.addCallback(lambda answer: answer["returned"])

    @LeaveWorker.responder
    def leave(self) -> dict[str, Any]:
        self.master.worker_leaving(self._registered())
        log.info("worker {name} is leaving", name=self.connection.name)
        return {}

    def _encode_task(self, task: Task) -> BatchEncoded | None:
        worker = self.session
        job = task.job
        if worker is None or job.ended or job.task is not task:
            return None  # cancelled, or moved on, before its turn came
        task.sent = True
        options = job.options
        fields: dict[str, Any] = {
            "task": task.id,
            "session": job.client.number,
            "fn": job.fn.hash,
            "fn_env": "",
            "timeout": options.timeout,
            "resources": options.resources,
            "order": task.order,
            "forward_output": int(options.forward_output),
            "refs": b"",
        }
        code: Data = b""
        if job.fn.hash not in worker.functions:
            worker.functions.add(job.fn.hash)
            fields["fn_env"], code = job.fn.env, job.fn.code
        payloads = {"fn_code": code, "args": job.args}
        if not job.data:
            return fields, payloads
        fields["refs"] = b"".join(data.hash for data in job.data)
        new = [data for data in job.data if data.hash not in worker.data]
        if not new:
            return fields, payloads
        worker.data.update(data.hash for data in new)
        return fields, payloads, lambda: self._put_data(new)

    async def _put_data(self, new: list[HeldData]) -> None:
        """Send put data the worker lacks, ahead of the task that names it."""
        for data in new:
            sent = await self.connection.blobs_out.call(PutData, {"data": data.data}, ref=data.hash)
            sent.addErrback(lambda _: None)  # (lost: the worker is gone)

    def _free(self, ref: bytes) -> None:
        """Tell the worker to drop put data, with the others freed in this
        turn, once what is queued for it is on its way (put data streamed
        for a task already queued must not arrive after its free)."""
        if not self._to_free:
            self.connection.clock.callLater(0, self._send_free)
        self._to_free.append(ref)

    def _send_free(self) -> None:
        refs, self._to_free = self._to_free, []

        def send(_: Any) -> None:
            # Data sent to it again meanwhile (put again, by its client or
            # another) went ahead of a task that names it: keep it there.
            again = self.session.data if self.session is not None else set()
            left = [ref for ref in refs if ref not in again]
            for chunk in per_command(left):
                self.connection.callRemote(FreeData, refs=b"".join(chunk)).addErrback(
                    lambda _: None
                )

        self.sender.flushed().addCallback(send)

    def _send_cancel(self, task: int) -> None:
        # Sent after any RunTasks batch already on the wire; a record still
        # queued in the sender is skipped instead (see Master._abandon).
        self.connection.callRemote(CancelTasks, tasks=[task]).addErrback(lambda _: None)

    def lost(self, why: str) -> None:
        self.sender.stop()
        if self.session is not None:
            self.master.remove_worker(self.session, f"connection lost ({why})")


RESPONDERS: dict[Role, type[Responders]] = {
    Role.CLIENT: ClientResponders,
    Role.WORKER: WorkerResponders,
    Role.STATUS: StatusResponders,
}
