"""
One slot of a worker: a persistent child process that runs one job at a time.

The supervisor keeps the AMP connection and heartbeats in its own process;
user code runs only here, so a job that holds the GIL, segfaults or calls
os._exit cannot silence the worker.  The slot reports such a crash as a lost
attempt and starts a fresh child.

Behind the running task the slot writes up to PIPELINE_DEPTH more, which
the child starts as soon as the one before ends: a short job does not
wait for a round trip through the supervisor.  A task counts as started
(its timeout armed, its start reported) when the child says it started it,
or when it is written to an idle child.  Tasks written ahead come back if
they are cancelled, if the worker leaves, if the child dies, or if the
task before them runs long (``pipe.HAND_BACK_AFTER``).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import txaio
from twisted.internet import error as net_error
from twisted.internet.interfaces import (
    IDelayedCall,
    IPullProducer,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from cwtx._errors import FramingError, error_json
from cwtx._lru import SizedLRU
from cwtx.wire.names import JobStatus, OutputStream, function_size
from cwtx.wire.payload import EMPTY, Payload
from cwtx.wire.resources import environment
from cwtx.worker.functions import DEFAULT_FUNCTION_CACHE
from cwtx.worker.output import OutputLimiter
from cwtx.worker.pipe import (
    HAND_BACK_AFTER,
    RESULT_FD,
    TASK_FD,
    Header,
    MessageDecoder,
    encode_message,
)

if TYPE_CHECKING:
    from cwtx.worker.limits import ChildLimits

txaio.use_twisted()
log = txaio.make_logger()

#: What a slot child runs: ``python -m`` this.
CHILD_MODULE = "cwtx.worker.child"

#: Why the supervisor killed a running job, as the status it reports.
KILL_MESSAGES = {
    JobStatus.TIMEOUT: "the job ran over its timeout of {timeout:g} s and was killed",
    JobStatus.CANCELLED: "the job was cancelled while running",
    JobStatus.REQUEUE: "its worker left before the job finished; it runs again elsewhere",
}


@implementer(IPullProducer)
class _PiecesProducer:
    """Hands a pipe one piece at a time, as it drains.

    Writing every piece at once would make Twisted join them all into one
    buffer: a second copy of a 256 MiB argument in the supervisor.
    """

    def __init__(self, writer: Any, pieces: list[Any]) -> None:
        self._writer = writer
        self._pieces: deque[Any] = deque()
        self.extend(pieces)

    def extend(self, pieces: list[Any]) -> None:
        """More to write once these are (messages must not interleave)."""
        # An empty piece would be written as nothing, and the pipe would
        # never ask for the next one: the write would stall for good.
        self._pieces.extend(piece for piece in pieces if len(piece))

    def resumeProducing(self) -> None:
        if self._pieces:
            self._writer.write(self._pieces.popleft())
        else:
            self._writer.unregisterProducer()

    def stopProducing(self) -> None:
        self._pieces.clear()


#: Tasks a slot writes to its child beyond the running one.  Few: the
#: master cannot take back a task written to a child for an idle worker
#: (the child hands it back only after HAND_BACK_AFTER).  Only behind
#: tasks shorter than HAND_BACK_AFTER: behind a longer one a round trip
#: costs next to nothing.
PIPELINE_DEPTH = 1

#: A message up to this size is joined and written at once (one syscall).
SMALL_MESSAGE = 1 << 20


def _write_pieces(transport: Any, fd: int, pieces: list[Any]) -> None:
    writer = getattr(transport, "pipes", {}).get(fd)
    producer = getattr(writer, "producer", None)
    if isinstance(producer, _PiecesProducer):
        producer.extend(pieces)  # behind the large message it is writing
    elif sum(len(p) for p in pieces) <= SMALL_MESSAGE or writer is None or producer:
        transport.writeToChild(fd, b"".join(pieces))
    else:
        writer.registerProducer(_PiecesProducer(writer, pieces), False)


#: The size asked for the task and result pipes (Linux's default is 64 KiB;
#: 1 MiB is what an unprivileged process may ask, fs.pipe-max-size) ...
PIPE_SIZE = 1 << 20
#: ... and the most read from the result pipe at once (Twisted reads 8 KiB).
READ_SIZE = 1 << 20


def _widen_pipes(transport: Any) -> None:
    """
    A payload of megabytes crosses the child's pipes in a few big writes
    and reads, not one wake-up of each side per 64 KiB and one reactor turn
    per 8 KiB: bigger pipes, and the result pipe read 1 MiB at a time.
    """
    pipes = getattr(transport, "pipes", {})
    for fd in (TASK_FD, RESULT_FD):
        if fd in pipes:
            try:
                fcntl.fcntl(pipes[fd].fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except (OSError, AttributeError):
                pass  # not Linux, or a lower limit: the default size works
    reader = pipes.get(RESULT_FD)
    if reader is not None:
        reader.doRead = partial(_read_big, reader)


def _read_big(reader: Any) -> Any:
    """ProcessReader.doRead, reading up to READ_SIZE bytes at a time."""
    try:
        data = os.read(reader.fd, READ_SIZE)
    except BlockingIOError:
        return None
    except InterruptedError:
        return None
    except OSError:
        return CONNECTION_LOST
    if not data:
        return CONNECTION_DONE
    reader.dataReceived(data)
    return None


@dataclass
class Task:
    """A job as the worker knows it: the master's task id and what to run."""

    task: int
    fn: bytes
    env: str
    code: Payload
    args: Payload
    timeout: float = 0.0
    session: int = 0  # the client session it came from (for --isolate-clients)
    order: float = 0.0  # the worker starts its waiting tasks lowest order first
    needs: dict[str, float] = field(default_factory=dict)
    #: What it holds while it runs: device ids (a list) or an amount, by name.
    held: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0  # when it started in a slot (the reactor's clock)
    arrival: int = 0  # the worker's count when it came (its place among equal orders)
    forward_output: bool = False  # send what it prints to its client
    #: The put data its arguments name, (hash, pickle), until the child has it.
    data: list[tuple[bytes, Payload]] = field(default_factory=list)
    output_sent: bool = False  # some of its output went to the master
    output_dropped: int = 0  # lines dropped since (the master was slow to take them)


#: on_result(task, status, value, error_json)
ResultCallback = Callable[[Task, str, Payload, str], None]
#: on_output(task, stream, text): whole lines the task printed, bounded.
OutputCallback = Callable[[Task, OutputStream, str], None]
#: on_unstarted(task, reason): a task written ahead will not run in this
#: child: skipped as asked (reason: what :meth:`Slot.skip` was given), or
#: handed back, or its child died first (None).
UnstartedCallback = Callable[[Task, "str | None"], None]


class Slot(ProcessProtocol):
    """Runs tasks in a child process; restarts the child when it dies."""

    def __init__(
        self,
        index: int,
        reactor: Any,
        on_result: ResultCallback,
        on_free: Callable[[], None],
        python: str = sys.executable,
        on_output: OutputCallback | None = None,
        on_started: Callable[[Task], None] | None = None,
        on_unstarted: UnstartedCallback | None = None,
        function_cache: int = DEFAULT_FUNCTION_CACHE,
    ) -> None:
        """``on_free()``: it may take a task (idle, or room ahead);
        ``on_started(task)``: a task started in the child;
        ``function_cache``: bytes of functions its child keeps (the least
        recently used beyond go)."""
        self.index = index
        self._on_output = on_output or (lambda task, stream, text: None)
        self._on_started = on_started or (lambda task: None)
        self._on_unstarted = on_unstarted or (lambda task, reason: None)
        self._output: OutputLimiter | None = None  # the current task's, if it forwards
        self._reactor: IReactorProcess = reactor
        self._clock: IReactorTime = reactor
        self._on_result = on_result
        self._on_free = on_free
        self._python = python
        #: The task the child runs (started), if any.
        self.current: Task | None = None
        #: Tasks written to the child behind the current one, not started.
        self.queued: deque[Task] = deque()
        self._skips: dict[int, str] = {}  # task id -> why it is being skipped
        self._began_at = 0.0  # when the current task started
        self._last_run: float | None = None  # seconds the last task ran (None: none yet)
        self.function_cache = function_cache
        self._known: SizedLRU[bytes, bool] = SizedLRU(function_cache)  # what the child has
        self._data: set[bytes] = set()  # put data this child has
        self._forgotten: list[bytes] = []  # put data it is yet to be told to drop
        self._decoder = MessageDecoder()
        self._kill_reason: str | None = None
        self._timer: IDelayedCall | None = None
        self._stopping = False
        self._running = False
        self._quick_deaths = 0
        self._started_at = 0.0
        self._ended: list[Callable[[], None]] = []
        #: The client session whose task this child last ran (None: a fresh child).
        self.session: int | None = None
        self._recycling = False
        #: The worker's memory limits and recycling (worker.limits), if any.
        self.limits: ChildLimits | None = None
        self._retiring: str | None = None  # why the child goes once idle
        self._kill_error: str | None = None  # the error a kill reports, if not KILL_MESSAGES'

    @property
    def free(self) -> bool:
        """Idle: a task written now starts at once."""
        return self._running and self.current is None and not self._stopping and not self._recycling

    @property
    def room(self) -> int:
        """How many more tasks to write ahead, behind the running one: none
        unless the last one and this one ran shorter than HAND_BACK_AFTER."""
        if (
            self.current is None
            or not self._running
            or self._stopping
            or self._kill_reason is not None
            or self._retiring is not None
            or self._last_run is None
            or self._last_run >= HAND_BACK_AFTER
            or self._clock.seconds() - self._began_at >= HAND_BACK_AFTER
        ):
            return 0
        return PIPELINE_DEPTH - len(self.queued)

    def start(self) -> None:
        self._decoder = MessageDecoder()
        self._known = SizedLRU(self.function_cache)
        self._data, self._forgotten = set(), []
        self.session = None
        self._recycling = False
        self._kill_reason = None
        self._kill_error = self._retiring = None
        self._last_run = None
        self._started_at = self._clock.seconds()
        self._reactor.spawnProcess(
            self,
            self._python,
            [self._python, "-m", CHILD_MODULE],
            env=dict(os.environ),
            childFDs={0: "w", 1: 1, 2: 2, TASK_FD: "w", RESULT_FD: "r"},
        )
        self._running = True
        if self.limits is not None:
            self.limits.spawned(self)

    def connectionMade(self) -> None:
        self.transport.closeStdin()
        _widen_pipes(self.transport)

    def run(self, task: Task) -> None:
        """Send a task to the child, with its function and the put data it
        names if the child lacks them: it starts at once if the child is
        idle, else after those before it."""
        assert self.free or self.room > 0
        self._tell_forgotten()
        self.session = task.session
        header: dict[str, Any] = {
            Header.TASK: task.task,
            Header.FUNCTION: task.fn.hex(),
            Header.ENV: task.env,
        }
        if task.held:
            header[Header.VARS] = environment(task.held)
        if task.forward_output:
            header[Header.OUTPUT] = True
        parts: list[Any] = [json.dumps(header).encode("utf-8"), task.args]
        pieces = self._data_messages(task)
        if not self._known.get(task.fn):
            parts.append(task.code)
            size = function_size(task.env, task.code.size)
            dropped = [fn.hex() for fn, _ in self._known.put(task.fn, True, size)]
            if dropped:  # (applied by the child once the tasks before this one start)
                pieces += encode_message([json.dumps({Header.DROP: dropped}).encode("utf-8")])
        _write_pieces(self.transport, TASK_FD, pieces + encode_message(parts))
        if self.current is None:
            self._begin(task)
        else:
            self.queued.append(task)

    def _begin(self, task: Task) -> None:
        """The child started ``task``: arm its timeout, report it."""
        self.current = task
        self._began_at = self._clock.seconds()
        # It will not be sent again; the master keeps it for retries.
        task.args, task.data = EMPTY, []
        if self._skips.pop(task.task, None) == JobStatus.CANCELLED:
            self.kill(JobStatus.CANCELLED)  # its skip came too late
            return
        if task.forward_output:
            self._output = OutputLimiter(self._began_at)
        if task.timeout and task.timeout > 0:
            self._timer = self._clock.callLater(task.timeout, self.kill, JobStatus.TIMEOUT)
        if self.limits is not None:
            self.limits.began(self)
        self._on_started(task)

    def skip(self, task: Task, reason: str) -> bool:
        """Ask the child not to start a task written ahead: on_unstarted
        gets ``reason`` once the child says it dropped it.  If the child had
        started it, it runs on, unless ``reason`` is "cancelled": then it
        is killed.  False: not written ahead here."""
        if task not in self.queued:
            return False
        if task.task not in self._skips:
            self._skips[task.task] = reason
            if self._kill_reason is None:  # (a dying child: its end settles it)
                message = encode_message([json.dumps({Header.SKIP: task.task}).encode()])
                _write_pieces(self.transport, TASK_FD, message)
        return True

    def withdraw(self, reason: str) -> None:
        """Skip every task written ahead (the worker is leaving)."""
        for task in list(self.queued):
            self.skip(task, reason)

    def _data_messages(self, task: Task) -> list[Any]:
        """The put data the task names that this child lacks, one message
        each, to go just before the task (in the same write: in order)."""
        pieces: list[Any] = []
        for ref, data in task.data:
            if ref not in self._data:
                self._data.add(ref)
                header = json.dumps({Header.DATA: ref.hex()}).encode("utf-8")
                pieces += encode_message([header, data])
        return pieces  # (task.data is kept until it starts: sent again if its child dies first)

    def forget(self, refs: list[bytes]) -> None:
        """This put data is freed: the child drops it now if it is idle,
        else once its task ends (it applies put data in order among the
        tasks written ahead, so none written before loses what it names)."""
        had = [ref for ref in refs if ref in self._data]
        self._data.difference_update(had)
        self._forgotten += had
        if self.current is None:
            self._tell_forgotten()

    def _tell_forgotten(self) -> None:
        if self._forgotten and self._running and not self._stopping:
            refs = [ref.hex() for ref in self._forgotten]
            header = json.dumps({Header.FORGET: refs}).encode("utf-8")
            try:  # (behind a big task message still being written, if any)
                _write_pieces(self.transport, TASK_FD, encode_message([header]))
            except (KeyError, OSError):
                pass  # its pipe is gone: the child is, or soon, and a fresh one has none
        self._forgotten = []

    def recycle(self) -> None:
        """Replace an idle child with a fresh one (it is not free meanwhile):
        nothing an earlier job left in it reaches the next."""
        if self.current is None and self._running and not self._recycling:
            self._recycling = True
            self._signal("KILL")

    def retire(self, why: str) -> None:
        """Replace the child once it is idle, after the task it runs (and
        any it started after): write nothing more ahead to it."""
        self._retiring = why
        self._retire_if_idle()

    def _retire_if_idle(self) -> None:
        if self._retiring is not None and self.current is None and not self.queued:
            if self._running and not self._recycling:
                log.info(
                    "slot {slot}: replacing its child (pid {pid}): {why}",
                    slot=self.index,
                    pid=getattr(self.transport, "pid", None),
                    why=self._retiring,
                )
            self.recycle()

    def kill(self, reason: str, error: str | None = None) -> None:
        """End the running task as ``reason`` (timeout, cancelled, memory)
        by killing the child, reporting ``error`` (else KILL_MESSAGES');
        the tasks written ahead run in the next one."""
        task = self.current
        if task is None or self._kill_reason is not None:
            return
        log.info(
            "slot {slot}: killing task {task}: {reason}",
            slot=self.index,
            task=task.task,
            reason=reason,
            timeout=task.timeout,
        )
        self._kill_reason = reason
        self._kill_error = error
        self._signal("KILL")

    def _signal(self, name: str) -> None:
        pid = getattr(self.transport, "pid", None)
        if name == "KILL" and pid:
            try:  # and what its job forked, in the child's process group
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass  # (not a group leader yet, or already gone)
        try:
            self.transport.signalProcess(name)  # type: ignore[union-attr]
        except (net_error.ProcessExitedAlready, AttributeError, OSError):
            pass

    def processExited(self, reason: Failure) -> None:
        """The child is gone; a process its job forked may still hold its
        pipes, and Twisted waits for them to close before processEnded.
        So read what the child wrote, and close them: the slot restarts."""
        pipes = getattr(self.transport, "pipes", {})
        reader = pipes.get(RESULT_FD)
        if reader is not None:
            while reader.connected and not reader.disconnecting:
                try:
                    data = os.read(reader.fd, READ_SIZE)
                except OSError:
                    break  # none now (what a forked process writes later is not the child's)
                if not data:
                    break
                self.childDataReceived(RESULT_FD, data)
        for fd in list(pipes):
            self.transport.closeChildFD(fd)  # type: ignore[union-attr]

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd != RESULT_FD:
            return
        try:
            messages = self._decoder.feed(data)
        except FramingError as e:
            log.error("slot {index}: corrupt data from child: {e}", index=self.index, e=e)
            self._kill_corrupt()
            return
        for parts in messages:
            if self._kill_reason is not None:
                return  # it is being killed: processEnded settles everything
            self._child_message(parts)

    def _child_message(self, parts: list[Payload]) -> None:
        task = self.current
        try:
            header = json.loads(parts[0].tobytes())
            value = parts[1] if len(parts) > 1 else EMPTY
            if Header.STREAM in header:
                stream = OutputStream(header[Header.STREAM])
            elif Header.SKIPPED in header:
                skipped = self._written_ahead(header[Header.SKIPPED])
            else:
                if task is None or header.get(Header.TASK) != task.task:
                    raise ValueError(f"result for task {header.get(Header.TASK)!r}")
                status = JobStatus(header[Header.STATUS])
                error = json.dumps(header[Header.ERROR]) if Header.ERROR in header else ""
                if Header.NEXT in header:
                    self._written_ahead(header[Header.NEXT], first=True)
        except (ValueError, KeyError, TypeError) as e:
            log.error("slot {index}: bad message from child: {e}", index=self.index, e=e)
            self._kill_corrupt()
            return
        if Header.STREAM in header:
            # Output of an earlier task (a process it left running): dropped.
            if task is not None and header.get(Header.TASK) == task.task:
                self._child_output(task, stream, value)
        elif Header.SKIPPED in header:
            self.queued.remove(skipped)
            self._on_unstarted(skipped, self._skips.pop(skipped.task, None))
            self._on_free()
        else:
            assert task is not None
            self._end_current()
            self._tell_forgotten()
            self._quick_deaths = 0
            self._last_run = self._clock.seconds() - self._began_at
            if self.limits is not None:
                status, value, error = self.limits.ended(self, task, status, value, error)
            self._on_result(task, status, value, error)
            if self.queued:
                # Named by the result (next), or, if none is named, the child
                # had nothing more: it starts this one as soon as it reads it.
                self._begin(self.queued.popleft())
            self._retire_if_idle()
            self._on_free()

    def _written_ahead(self, task_id: object, first: bool = False) -> Task:
        """The task written ahead that the child names (the first of them),
        or ValueError."""
        candidates = list(self.queued)[:1] if first else self.queued
        for task in candidates:
            if task.task == task_id:
                return task
        raise ValueError(f"it names task {task_id!r}, not one written ahead")

    def _child_output(self, task: Task, stream: OutputStream, data: Payload) -> None:
        if self._output is None or self._kill_reason is not None:
            return  # a task that does not forward (or being killed): dropped
        for text in self._output.feed(stream, data.tobytes(), self._clock.seconds()):
            self._on_output(task, stream, text)

    def _end_output(self, task: Task) -> None:
        """The task ended: what is left of its output goes before its result."""
        output, self._output = self._output, None
        if output is not None:
            for stream, text in output.close():
                self._on_output(task, stream, text)

    def _kill_corrupt(self) -> None:
        """The child broke the pipe protocol: kill it, and say so."""
        self._kill_reason = self._kill_reason or "corrupt"
        self._signal("KILL")

    def _end_current(self) -> None:
        if self.current is not None:
            self._end_output(self.current)
        self.current = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def processEnded(self, reason: Failure) -> None:
        self._running = False
        task = self.current
        kill_reason, kill_error = self._kill_reason, self._kill_error
        self._end_current()
        ahead, self.queued = list(self.queued), deque()
        skips, self._skips = self._skips, {}
        code = getattr(reason.value, "exitCode", None)
        signum = getattr(reason.value, "signal", None)
        how = f"signal {signum}" if signum else f"exit code {code}"
        if task is not None:
            if kill_reason is not None and kill_error is not None:
                self._on_result(task, JobStatus(kill_reason), EMPTY, kill_error)
            elif kill_reason in KILL_MESSAGES:
                message = KILL_MESSAGES[kill_reason].format(timeout=task.timeout)
                status = JobStatus(kill_reason)
                self._on_result(task, status, EMPTY, error_json(status, message))
            elif kill_reason == "corrupt":
                cause = (
                    "its child process wrote corrupt data on the result pipe (fd "
                    f"{RESULT_FD}) while running the job, and was killed"
                )
                self._on_result(task, JobStatus.LOST, EMPTY, error_json("ChildCorrupt", cause))
            else:
                cause = f"its child process died ({how}) while running the job"
                log.info(
                    "slot {slot}: task {task} lost: {cause}",
                    slot=self.index,
                    task=task.task,
                    cause=cause,
                )
                self._on_result(task, JobStatus.LOST, EMPTY, error_json("ChildDied", cause))
        elif not self._stopping and not self._recycling:
            log.warn("slot {index}: child exited unexpectedly ({how})", index=self.index, how=how)
        for waiting in ahead:  # never started: skipped, or to run elsewhere
            self._on_unstarted(waiting, skips.get(waiting.task))
        if self._stopping:
            for callback in self._ended:
                callback()
            return
        quick = (
            self._clock.seconds() - self._started_at < 1.0 and task is None and not self._recycling
        )
        self._quick_deaths = self._quick_deaths + 1 if quick else 0
        delay = min(0.1 * 2**self._quick_deaths, 10.0) if quick else 0
        self._clock.callLater(delay, self._restart)

    def _restart(self) -> None:
        if self._stopping:
            return
        self.start()
        self._on_free()

    def stop(self, on_ended: Callable[[], None]) -> None:
        """Kill the child for good; call ``on_ended`` once it is gone."""
        self._stopping = True
        if not self._running:
            on_ended()
            return
        self._ended.append(on_ended)
        self.transport.closeChildFD(TASK_FD)  # type: ignore[union-attr]
        if self.current is not None:
            self._signal("KILL")
