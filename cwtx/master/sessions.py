"""
What the master knows of each peer and each job: a client's session (its
functions, its queue, its live jobs, its flow-control limits), a worker's
session (its slots and the tasks sent to it); the jobs themselves are
``jobs``.  No I/O: a session is handed ``deliver`` callables by its connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed

from cwtx._errors import ProtocolError
from cwtx.master.functions import Function
from cwtx.master.jobs import Job, Options, Task
from cwtx.wire.names import FUNCTION_OVERHEAD as FUNCTION_OVERHEAD
from cwtx.wire.names import JobStatus
from cwtx.wire.payload import Data, Payload, size_of
from cwtx.wire.resources import MAX_RESOURCES as MAX_RESOURCES

DEFAULT_MAX_RETRIES = 3
#: Tasks sent to a worker beyond its slots, queued there so that a slot that
#: frees up starts its next task without waiting for a round trip.
DEFAULT_PREFETCH = 4
#: A client whose jobs that have not ended hold more argument bytes, or are
#: more, than this waits for its SubmitJobs answers (flow control).
MAX_CLIENT_BYTES = 1024 * 1024 * 1024
MAX_CLIENT_JOBS = 1_000_000
#: SubmitJobs a client may have waiting for their answer.  An honest client
#: sends at most a few batches ahead of its answers; one that sends more
#: ignores flow control, and is closed.
MAX_UNANSWERED_SUBMITS = 16
#: What a result waiting to be sent costs besides its value and error text.
RESULT_OVERHEAD = 128
#: What put data costs besides its bytes, as counted (about what its
#: objects take: so that a million tiny puts count for something).
DATA_OVERHEAD = 512

#: (Python, cloudpickle) of a peer that did not say (tests): matches anything.
UNKNOWN_VERSIONS = ("?", "?")


@dataclass(eq=False)
class HeldData:
    """Put data (a client's ``cwtx.Ref``), kept while its client holds the
    Ref or a live job of its names it."""

    hash: bytes
    data: Payload
    users: int = 0  # live jobs of its client that name it
    freed: bool = False  # its client dropped the Ref: it goes once users is 0

    @property
    def size(self) -> int:
        return self.data.size + DATA_OVERHEAD


#: What the master hands a client session to send: (job id, status, value, error).
ResultItem = tuple[int, JobStatus, Data, str]
#: Lines a job printed, to send its client: (job id, worker, stream, text).
OutputItem = tuple[int, str, str, str]


def _result_size(item: ResultItem) -> int:
    value = item[2]
    size = len(value) if type(value) is bytes else value.size  # size_of, inlined: twice a job
    return size + len(item[3]) + RESULT_OVERHEAD


class ClientSession:
    """One connected client: its functions, its queue and its live jobs."""

    def __init__(
        self,
        name: str,
        deliver: Callable[[ResultItem], None],
        versions: tuple[str, str] = UNKNOWN_VERSIONS,
        deliver_started: Callable[[int], None] = lambda job_id: None,
        deliver_output: Callable[[OutputItem], None] = lambda item: None,
    ) -> None:
        self.name = name
        self._deliver = deliver
        self.deliver_started = deliver_started
        #: Hand lines a job printed to the connection (which bounds them).
        self.deliver_output = deliver_output
        self.versions = versions  # (python, cloudpickle)
        self.number = 0  # the master's number for this session (set when added)
        #: Its functions that a live job names, or idle in the master's
        #: cache (``functions``), by hash.
        self.functions: dict[bytes, Function] = {}
        #: Told when no live job names a function any more, and when one does
        #: again (the master's cache of idle functions).
        self.function_idle: Callable[[Function], None] = lambda function: None
        self.function_used: Callable[[Function], None] = lambda function: None
        #: Tell the client the master drops this function: a Deferred that
        #: fires once the client has answered (set by its connection).
        self.deliver_drop: Callable[[bytes], Deferred[None]] = lambda fn: succeed(None)
        self._drops = 0  # DropFunctions said so far: each dropping function has its number
        #: Its put data, by hash; and what it counts against its limit.
        self.data: dict[bytes, HeldData] = {}
        self.data_bytes = 0
        #: Told of put data this session no longer holds (the master drops
        #: it at workers that have it, unless another client holds it too).
        self.data_gone: Callable[[HeldData], None] = lambda data: None
        self.jobs: dict[int, Job] = {}
        #: Its jobs' options, shared by the jobs that asked for the same
        #: (timeout, max_retries, priority, resources, forward_output).
        self.options: dict[tuple[Any, ...], Options] = {}
        self.held_bytes = 0  # argument bytes of the jobs it has not seen end
        self.function_bytes = 0  # bytes of its functions that a live job names
        self.kept_function_bytes = 0  # bytes of every function it has here (for status)
        #: Bytes of its functions the master dropped, kept until it answers.
        self.dropping_bytes = 0
        # Results handed to its connection and not yet sent: a client that
        # does not take its results must not make the master hold them all.
        self.unsent = 0
        self.unsent_bytes = 0
        self.max_bytes = MAX_CLIENT_BYTES
        self.max_jobs = MAX_CLIENT_JOBS
        self._below: list[Deferred[None]] = []
        self.assigned = 0  # its jobs that are on a worker (the others are queued)
        self.started = 0  # of those, the ones that have started
        self.done = 0  # its jobs that ended with a value
        self.failed = 0  # its jobs that ended with an error (timeouts, memory, lost jobs too)
        self.origin: dict[str, Any] = {}  # host, pid, user, as its hello said
        self.joined_at = 0.0  # on the master's clock

    def add_job(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        self.held_bytes += size_of(job.args) + len(job.options.resources)  # (as drop_job)
        function = job.fn
        function.users += 1
        if function.users == 1:
            self.function_bytes += function.size
            self._undrop(function)  # (a record that crossed the drop: it stays)
            self.function_used(function)
        for data in job.data:
            data.users += 1

    def drop_job(self, job_id: int) -> Job | None:
        """The job leaves this client's table (it ended, or was cancelled):
        its arguments are let go at once, even while the queue still holds
        the job (the policy skips it)."""
        job = self.jobs.pop(job_id, None)
        if job is not None:
            self.held_bytes -= size_of(job.args) + len(job.options.resources)
            job.args = b""
            function = job.fn
            function.users -= 1
            if not function.users:
                self.function_bytes -= function.size
                self.function_idle(function)
            for data in job.data:
                data.users -= 1
                if data.freed and not data.users:
                    self._forget(data)
            job.data = ()
            if job.task is not None:
                self.assigned -= 1
                if job.task.started:
                    self.started -= 1
            if self._below:
                self._release()
        return job

    def assign(self, job: Job, task: Task | None) -> None:
        """Put one of this client's live jobs on a worker as ``task`` (None:
        back off it), keeping count, so that ``queued`` costs nothing to ask."""
        self.assigned += (task is not None) - (job.task is not None)
        job.task = task

    def deliver(self, item: ResultItem) -> None:
        """Hand a result to the connection; it counts against this client's
        limits until :meth:`sent` says it has gone."""
        self.unsent += 1
        self.unsent_bytes += _result_size(item)
        self._deliver(item)

    def sent(self, item: ResultItem) -> None:
        """A result handed over by :meth:`deliver` has been sent."""
        self.unsent -= 1
        self.unsent_bytes -= _result_size(item)
        if self._below:
            self._release()

    def _release(self) -> None:
        """Answer the SubmitJobs held back, if the client is below its limits now."""
        if not self.over_limit():
            waiting, self._below = self._below, []
            for d in waiting:
                d.callback(None)

    def add_function(self, function: Function) -> None:
        """Keep a client's function.  It counts against the client's limit
        (flow control) while a live job names it; until one does, and after,
        it is idle, in the master's cache (which bounds those).  One that
        would take the functions live jobs name over the limit is refused:
        flow control alone would let a client that ignores it send more."""
        if self.function_bytes + function.size > self.max_bytes:
            raise ProtocolError(
                f"this client's functions would hold over {self.max_bytes} bytes at the master"
            )
        self.functions[function.hash] = function
        self.kept_function_bytes += function.size
        self.function_idle(function)

    def sent_again(self, function: Function) -> None:
        """The client sent a function's code again, which it does once told
        of a drop: it counts on the master having it from now on."""
        if function.dropping:
            self._undrop(function)
            if not function.users:
                self.function_idle(function)

    def drop_function(self, function: Function) -> None:
        """The master's cache let go of this idle function: the client is
        told, and it goes once the client answers (records it had queued
        may still name it without code), unless meanwhile a job named it
        again or the client sent its code again."""
        self._drops += 1
        function.dropping = number = self._drops
        self.dropping_bytes += function.size
        self.deliver_drop(function.hash).addCallback(lambda _: self._dropped(function, number))

    def _undrop(self, function: Function) -> None:
        if function.dropping:
            function.dropping = 0
            self.dropping_bytes -= function.size

    def _dropped(self, function: Function, number: int) -> None:
        if function.dropping == number:
            self._undrop(function)
            if self.functions.get(function.hash) is function:
                del self.functions[function.hash]
                self.kept_function_bytes -= function.size

    def add_data(self, data: HeldData) -> None:
        """Keep put data; its bytes count against the client's limit until
        it is freed."""
        if self.function_bytes + self.data_bytes + data.size > self.max_bytes:
            raise ProtocolError(
                f"this client's functions and put data would hold over {self.max_bytes} "
                "bytes at the master"
            )
        self.data[data.hash] = data
        self.data_bytes += data.size

    def free_data(self, data: HeldData) -> None:
        """The client dropped its Ref: the data goes now, or once no live
        job names it."""
        data.freed = True
        if not data.users:
            self._forget(data)

    def free_all_data(self) -> None:
        """The session ended."""
        for data in list(self.data.values()):
            self._forget(data)

    def _forget(self, data: HeldData) -> None:
        if self.data.get(data.hash) is data:
            del self.data[data.hash]
            self.data_bytes -= data.size
            self._release()
            self.data_gone(data)

    def over_limit(self) -> bool:
        held = self.held_bytes + self.function_bytes + self.data_bytes + self.unsent_bytes
        return held > self.max_bytes or len(self.jobs) + self.unsent > self.max_jobs

    def when_below_limit(self) -> Deferred[None]:
        """Fires once the client holds less than its limits (flow control:
        the master answers its SubmitJobs only then).  A client with more
        than MAX_UNANSWERED_SUBMITS answers held back is not waiting for
        them: ProtocolError."""
        if not self.over_limit():
            return succeed(None)
        if len(self._below) >= MAX_UNANSWERED_SUBMITS:
            raise ProtocolError(
                f"this client ignores flow control: {len(self._below)} SubmitJobs "
                "are waiting for their answer and it sends more"
            )
        d: Deferred[None] = Deferred()
        self._below.append(d)
        return d

    @property
    def queued(self) -> int:
        return len(self.jobs) - self.assigned


class WorkerSession:
    """One registered worker: its slots and the tasks sent to it."""

    def __init__(
        self,
        name: str,
        slots: int,
        deliver_run: Callable[[Task], None],
        deliver_cancel: Callable[[int], None],
        resources: dict[str, float] | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        versions: tuple[str, str] = UNKNOWN_VERSIONS,
        deliver_take_back: Callable[[list[int]], Deferred[list[int]]] | None = None,
        deliver_free: Callable[[bytes], None] = lambda ref: None,
    ) -> None:
        """``resources``: the amounts it offers, checked (``wire.resources``)."""
        self.name = name
        self.versions = versions  # (python, cloudpickle)
        self.slots = slots
        self.capacity = slots + prefetch
        self.amounts: dict[str, float] = dict(resources or {})
        self.deliver_run = deliver_run
        self.deliver_cancel = deliver_cancel
        #: Ask it to hand back tasks it has not started: a Deferred of those it did.
        self.deliver_take_back = deliver_take_back or (lambda tasks: succeed([]))
        #: Tell it to drop put data no job needs any more.
        self.deliver_free = deliver_free
        self.running: dict[int, Task] = {}  # by task id: sent or about to be
        self.functions: set[bytes] = set()  # hashes already sent to it
        self.data: set[bytes] = set()  # put data sent to it and not freed there
        self.leaving = False  # shutting down: no new tasks
        self.joined_at = 0.0  # on the master's clock
        self.done = 0  # jobs that ended here with a value
        self.failed = 0  # jobs that ended here with an error, a timeout or over memory
        self.lost = 0  # attempts that died here
        self.origin: dict[str, Any] = {}  # host, pid, user, as its hello said
        #: When its connection last heard from it, on the master's clock.
        self.heard_at: Callable[[], float] = lambda: self.joined_at

    @property
    def resources(self) -> dict[str, float]:
        return self.amounts
