"""
The master's bookkeeping: per-client queues, the worker registry, which job
runs where, retries, and fair dispatch.  No I/O happens here: sessions are
handed a ``deliver`` callable, so this logic is tested without sockets.

The master never unpickles anything: functions, arguments and results are
Payloads, opaque bytes.
"""

from __future__ import annotations

import heapq
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import txaio
from twisted.internet.defer import Deferred, succeed

from ._errors import error_json
from ._payload import EMPTY, Payload

txaio.use_twisted()
log = txaio.make_logger()

DEFAULT_MAX_RETRIES = 3
#: Jobs sent to a worker beyond its slots, queued there so that a slot that
#: frees up starts its next job without waiting for a round trip.
DEFAULT_PREFETCH = 4
#: A client whose jobs that have not ended hold more argument bytes, or are
#: more, than this waits for its SubmitJobs answers (flow control).
MAX_CLIENT_BYTES = 1024 * 1024 * 1024
MAX_CLIENT_JOBS = 1_000_000

UNKNOWN_VERSIONS = ("?", "?")


def compatible(client: tuple[str, str], worker: tuple[str, str]) -> bool:
    """Can a worker unpickle what this client pickled?  Same Python
    major.minor and the same cloudpickle (its format is not promised to
    carry across versions).  Unknown versions (tests) match anything."""
    if UNKNOWN_VERSIONS in (client, worker):
        return True
    short = [".".join(v[0].split(".")[:2]) for v in (client, worker)]
    return short[0] == short[1] and client[1] == worker[1]


def mismatch_message(client: ClientSession, workers: list[WorkerSession]) -> str:
    theirs = "; ".join(
        f"{w.name}: Python {w.versions[0]}, cloudpickle {w.versions[1]}" for w in workers[:5]
    )
    return (
        f"no worker can run this client's jobs: the client runs Python "
        f"{client.versions[0]} with cloudpickle {client.versions[1]}, the workers run "
        f"{theirs}. Install the same Python (major.minor) and cloudpickle on both."
    )


@dataclass(eq=False)
class Function:
    hash: bytes
    env: str
    code: Payload


@dataclass(eq=False)
class Job:
    client: ClientSession
    job_id: int
    fn: Function
    args: Payload
    timeout: float = 0.0
    max_retries: int = DEFAULT_MAX_RETRIES
    priority: int = 0
    resources: str = "{}"
    attempts: list[dict[str, str]] = field(default_factory=list)
    worker: WorkerSession | None = None
    task: int = 0
    sent: bool = False  # its RunJobs record went out to the worker
    ended: bool = False

    @property
    def queued(self) -> bool:
        return self.worker is None and not self.ended


#: What the master hands a client session to send: (job id, status, value, error).
ResultItem = tuple[int, str, Payload, str]


class ClientSession:
    """One connected client: its functions, its queue and its live jobs."""

    def __init__(
        self,
        name: str,
        deliver: Callable[[ResultItem], None],
        versions: tuple[str, str] = UNKNOWN_VERSIONS,
    ) -> None:
        self.name = name
        self.deliver = deliver
        self.versions = versions  # (python, cloudpickle)
        self.functions: dict[bytes, Function] = {}
        self.jobs: dict[int, Job] = {}
        self.held_bytes = 0  # argument bytes of the jobs it has not seen end
        self.max_bytes = MAX_CLIENT_BYTES
        self.max_jobs = MAX_CLIENT_JOBS
        self._below: list[Deferred[None]] = []
        self._heap: list[tuple[int, int, Job]] = []
        self._seq = count()

    def add_job(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        self.held_bytes += job.args.size

    def drop_job(self, job_id: int) -> Job | None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            self.held_bytes -= job.args.size
            if self._below and not self.over_limit():
                waiting, self._below = self._below, []
                for d in waiting:
                    d.callback(None)
        return job

    def over_limit(self) -> bool:
        return self.held_bytes > self.max_bytes or len(self.jobs) > self.max_jobs

    def when_below_limit(self) -> Deferred[None]:
        """Fires once the client holds less than its limits (flow control:
        the master answers its SubmitJobs only then)."""
        if not self.over_limit():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._below.append(d)
        return d

    def push(self, job: Job, front: bool = False) -> None:
        seq = -next(self._seq) if front else next(self._seq)
        heapq.heappush(self._heap, (-job.priority, seq, job))

    def pop(self) -> Job | None:
        while self._heap:
            job = heapq.heappop(self._heap)[2]
            if job.queued:
                return job
        return None

    def peek(self) -> Job | None:
        while self._heap and not self._heap[0][2].queued:
            heapq.heappop(self._heap)
        return self._heap[0][2] if self._heap else None

    @property
    def queued(self) -> int:
        return sum(1 for job in self.jobs.values() if job.queued)


class WorkerSession:
    """One registered worker: its slots and the jobs running on it."""

    def __init__(
        self,
        name: str,
        slots: int,
        deliver_run: Callable[[Job], None],
        deliver_cancel: Callable[[int], None],
        resources: dict[str, Any] | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        versions: tuple[str, str] = UNKNOWN_VERSIONS,
    ) -> None:
        self.name = name
        self.versions = versions  # (python, cloudpickle)
        self.slots = slots
        self.capacity = slots + prefetch
        self.resources = resources or {}
        self.deliver_run = deliver_run
        self.deliver_cancel = deliver_cancel
        self.running: dict[int, Job] = {}
        self.functions: set[bytes] = set()  # hashes already sent to it
        self.leaving = False  # shutting down: no new jobs

    @property
    def free(self) -> int:
        """How many more jobs it may be sent (its slots, plus prefetch)."""
        if self.leaving:
            return 0
        return self.capacity - len(self.running)

    def started(self) -> set[int]:
        """Tasks it must have started: a worker runs what it is sent in
        order, ``slots`` at a time, so the earliest sent are the running ones."""
        sent = sorted(task for task, job in self.running.items() if job.sent)
        return set(sent[: self.slots])


class Master:
    """Routes jobs from clients to workers and results back."""

    def __init__(
        self, max_retries: int = DEFAULT_MAX_RETRIES, prefetch: int = DEFAULT_PREFETCH
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {max_retries}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more, not {prefetch}")
        self.id = uuid.uuid4().hex[:12]
        self.max_retries = max_retries
        self.prefetch = prefetch
        self.clients: list[ClientSession] = []
        self.workers: list[WorkerSession] = []
        self._tasks = count(1)
        self._next_client = 0
        self.completed = 0

    # -- clients --------------------------------------------------------------

    def add_client(self, session: ClientSession) -> None:
        self.clients.append(session)

    def remove_client(self, session: ClientSession) -> None:
        """A client left: drop its queued jobs, cancel its running ones."""
        if session not in self.clients:
            return
        self.clients.remove(session)
        for job in list(session.jobs.values()):
            self._abandon(job)
        session.jobs.clear()
        self.dispatch()

    def define(self, session: ClientSession, fn: bytes, env: str, code: Payload) -> None:
        if fn not in session.functions:
            session.functions[fn] = Function(fn, env, code)

    def submit(
        self,
        session: ClientSession,
        job_id: int,
        fn: bytes,
        args: Payload,
        timeout: float = 0.0,
        max_retries: int = -1,
        priority: int = 0,
        resources: str = "{}",
    ) -> None:
        """Queue a job; a bad one ends at once with a clear error."""
        if job_id in session.jobs:
            log.debug("client {c} resubmitted job {j}", c=session.name, j=job_id)
            return
        function = session.functions.get(fn)
        if function is None:
            session.deliver(
                (
                    job_id,
                    "error",
                    EMPTY,
                    error_json(
                        "ProtocolError", f"job {job_id} names function {fn.hex()}, never sent"
                    ),
                )
            )
            return
        if timeout < 0 or timeout != timeout:
            session.deliver(
                (
                    job_id,
                    "error",
                    EMPTY,
                    error_json("ValueError", f"job {job_id}: timeout must be 0 (none) or more"),
                )
            )
            return
        job = Job(
            session,
            job_id,
            function,
            args,
            timeout=timeout,
            max_retries=self.max_retries if max_retries < 0 else max_retries,
            priority=priority,
            resources=resources,
        )
        session.add_job(job)
        session.push(job)

    def cancel(self, session: ClientSession, job_ids: list[int]) -> None:
        """The client gave up on these jobs; it expects no answer."""
        for job_id in job_ids:
            job = session.drop_job(job_id)
            if job is not None:
                self._abandon(job)
        self.dispatch()

    def _abandon(self, job: Job) -> None:
        job.ended = True
        worker = job.worker
        if worker is None:
            return  # queued: the heap skips ended jobs
        if job.sent:
            worker.deliver_cancel(job.task)  # stays on the worker until it answers
        else:
            del worker.running[job.task]  # its record will be skipped

    # -- workers --------------------------------------------------------------

    def add_worker(self, worker: WorkerSession) -> None:
        self.workers.append(worker)
        log.info("worker {w} joined with {n} slots", w=worker.name, n=worker.slots)
        self.dispatch()

    def remove_worker(self, worker: WorkerSession, cause: str) -> None:
        """A worker is gone: its running jobs are retried, or end as lost."""
        if worker not in self.workers:
            return
        self.workers.remove(worker)
        log.info("worker {w} left: {cause}", w=worker.name, cause=cause)
        started = worker.started()
        running, worker.running = worker.running, {}
        for task, job in sorted(running.items()):
            if not job.ended:
                self._attempt_failed(job, worker, cause, counted=task in started)
        self.dispatch()

    def worker_result(
        self, worker: WorkerSession, task: int, status: str, value: Payload, error: str
    ) -> None:
        job = worker.running.pop(task, None)
        if job is None:
            log.debug("ignoring result for unknown task {t} from {w}", t=task, w=worker.name)
            return
        if job.ended:
            return  # cancelled, or its client left
        if status in ("lost", "requeue"):
            # lost: it died under the job (an attempt); requeue: a leaving
            # worker handed it back (not an attempt).
            info = json.loads(error) if error else {}
            cause = info.get("message", status)
            self._attempt_failed(job, worker, cause, counted=status == "lost")
            return
        self._end(job, status, value, error)

    def _attempt_failed(self, job: Job, worker: WorkerSession, cause: str, counted: bool) -> None:
        job.worker = None
        job.sent = False
        if counted:
            job.attempts.append({"worker": worker.name, "cause": cause})
        if len(job.attempts) > job.max_retries:
            lines = "; ".join(f"{a['worker']}: {a['cause']}" for a in job.attempts)
            message = (
                f"job {job.job_id} was lost {len(job.attempts)} times "
                f"(max_retries={job.max_retries}): {lines}"
            )
            self._end(job, "lost", EMPTY, error_json("JobLost", message, attempts=job.attempts))
        else:
            job.client.push(job, front=True)

    def _end(self, job: Job, status: str, value: Payload, error: str) -> None:
        job.ended = True
        job.client.drop_job(job.job_id)
        self.completed += 1
        job.client.deliver((job.job_id, status, value, error))

    # -- dispatch -------------------------------------------------------------

    def dispatch(self) -> None:
        """Give free slots to queued jobs, taking clients in turn.

        A job goes only to a worker whose Python and cloudpickle match its
        client's; if no registered worker matches, it ends with a clear error.
        """
        while self._dispatch_one():
            pass

    def _dispatch_one(self) -> bool:
        free = [w for w in self.workers if w.free > 0]
        if not free:
            return False
        n = len(self.clients)
        for i in range(n):
            client = self.clients[(self._next_client + i) % n]
            job = client.peek()
            if job is None:
                continue
            usable = [w for w in free if compatible(client.versions, w.versions)]
            if not usable:
                if not any(compatible(client.versions, w.versions) for w in self.workers):
                    client.pop()
                    self._end(
                        job,
                        "error",
                        EMPTY,
                        error_json("VersionMismatch", mismatch_message(client, self.workers)),
                    )
                    return True
                continue  # matching workers exist, but are busy
            client.pop()
            self._next_client = (self._next_client + i + 1) % n
            failed = {a["worker"] for a in job.attempts}
            fresh = [w for w in usable if w.name not in failed] or usable
            self._start(job, max(fresh, key=lambda w: w.free))
            return True
        return False

    def _start(self, job: Job, worker: WorkerSession) -> None:
        job.task = next(self._tasks)
        job.worker = worker
        worker.running[job.task] = job
        worker.deliver_run(job)

    # -- status ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "master": self.id,
            "workers": [
                {
                    "name": w.name,
                    "slots": w.slots,
                    "running": len(w.running),
                    "resources": w.resources,
                    "leaving": w.leaving,
                }
                for w in self.workers
            ],
            "clients": [
                {"name": c.name, "queued": c.queued, "jobs": len(c.jobs)} for c in self.clients
            ],
            "slots": sum(w.slots for w in self.workers),
            "queued": sum(c.queued for c in self.clients),
            # "running" counts jobs sent to workers, prefetched ones included.
            "running": sum(len(w.running) for w in self.workers),
            "completed": self.completed,
        }
