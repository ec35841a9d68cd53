"""
The master's bookkeeping: clients and workers come and go, jobs are
submitted, cancelled, started, and end; retries are counted.  No I/O happens
here: sessions are handed ``deliver`` callables by their connections, so
this logic is tested without sockets.  Which job goes where is the
policy's business (``policy``).

The master never unpickles anything: functions, arguments and results are
Payloads, opaque bytes.
"""

from __future__ import annotations

import uuid
from itertools import count
from typing import Any

import txaio

from cwtx._errors import ProtocolError, error_json, parse_error
from cwtx._logs import RateLimit, printable
from cwtx.master.policy import Refuse, RoundRobin, mismatch_message
from cwtx.master.sessions import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_PREFETCH,
    MAX_CLIENT_BYTES,
    MAX_CLIENT_JOBS,
    MAX_RESOURCES,
    ClientSession,
    Function,
    Job,
    WorkerSession,
)
from cwtx.master.status import snapshot
from cwtx.wire.names import JobStatus, function_hash
from cwtx.wire.payload import EMPTY, Payload

txaio.use_twisted()
log = txaio.make_logger()


class Master:
    """Routes jobs from clients to workers and results back."""

    def __init__(
        self,
        max_retries: int = DEFAULT_MAX_RETRIES,
        prefetch: int = DEFAULT_PREFETCH,
        max_client_bytes: int = MAX_CLIENT_BYTES,
        max_client_jobs: int = MAX_CLIENT_JOBS,
    ) -> None:
        """``max_client_bytes`` and ``max_client_jobs``: what one client's
        unfinished jobs (and functions) may hold before it waits (flow control)."""
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {max_retries}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more, not {prefetch}")
        self.id = uuid.uuid4().hex[:12]
        self.max_retries = max_retries
        self.prefetch = prefetch
        self.max_client_bytes = max_client_bytes
        self.max_client_jobs = max_client_jobs
        self.clients: list[ClientSession] = []
        self.workers: list[WorkerSession] = []
        self.policy = RoundRobin()
        #: Lines about misbehaving peers, rate-limited per host.
        self.log_limit = RateLimit()
        self._tasks = count(1)
        self._sessions = count(1)
        self.completed = 0

    # -- clients --------------------------------------------------------------

    def add_client(self, session: ClientSession) -> None:
        session.max_bytes = self.max_client_bytes
        session.max_jobs = self.max_client_jobs
        session.number = next(self._sessions)
        self.clients.append(session)

    def remove_client(self, session: ClientSession) -> None:
        """A client left: drop its queued jobs, cancel its running ones."""
        if session not in self.clients:
            return
        self.clients.remove(session)
        for job in list(session.jobs.values()):
            session.drop_job(job.job_id)
            self._abandon(job)
        self.dispatch()

    def define(self, session: ClientSession, fn: bytes, env: str, code: Payload) -> None:
        """A client sends a function: its hash must be its content's, so that
        no client can pass its code off as another's."""
        if fn in session.functions:
            return
        if function_hash(env, code.pieces) != fn:
            raise ProtocolError(f"function {fn.hex()[:16]}... does not match its code")
        session.add_function(Function(fn, env, code))

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
        """Queue a job (``max_retries`` -1: the master's default); a bad one
        ends at once with a clear error."""
        if job_id in session.jobs:
            log.debug("client {c} resubmitted job {j}", c=session.name, j=job_id)
            return
        function = session.functions.get(fn)
        if function is None:
            message = f"job {job_id} names function {fn.hex()}, never sent"
            self._refuse(session, job_id, "ProtocolError", message)
            return
        if len(resources) > MAX_RESOURCES:
            n = len(resources)
            message = f"job {job_id}: resources of {n} characters (at most {MAX_RESOURCES})"
            self._refuse(session, job_id, "ValueError", message)
            return
        if timeout < 0 or timeout != timeout:
            self._refuse(session, job_id, "ValueError", f"job {job_id}: timeout must be 0 or more")
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

    @staticmethod
    def _refuse(session: ClientSession, job_id: int, kind: str, message: str) -> None:
        session.deliver((job_id, JobStatus.ERROR, EMPTY, error_json(kind, message)))

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

    def task_result(
        self, worker: WorkerSession, task: int, status: str, value: Payload, error: str
    ) -> None:
        """A worker says how one of its tasks ended."""
        job = worker.running.pop(task, None)
        if job is None:
            allowed, held = self.log_limit.allow(("unknown task", worker.name))
            if allowed:
                log.warn(
                    "ignoring a result for task {t}, which worker {w} was not given{also}",
                    t=task,
                    w=worker.name[:60],  # escaped as it arrived
                    also=f" ({held} more held back)" if held else "",
                )
            return
        if job.ended:
            return  # cancelled, or its client left
        if status in (JobStatus.LOST, JobStatus.REQUEUE):
            # lost: it died under the job (an attempt); requeue: a leaving
            # worker handed it back (not an attempt).
            cause = parse_error(error)["message"] or str(status)
            self._attempt_failed(
                job, worker, printable(cause, 500), counted=status == JobStatus.LOST
            )
            return
        if status not in (JobStatus.OK, JobStatus.ERROR, JobStatus.TIMEOUT, JobStatus.CANCELLED):
            message = (
                f"worker {worker.name} sent a malformed result (status {printable(status, 40)})"
            )
            self._end(job, JobStatus.ERROR, EMPTY, error_json("ProtocolError", message))
            return
        self._end(job, JobStatus(status), value, error)

    def _attempt_failed(self, job: Job, worker: WorkerSession, cause: str, counted: bool) -> None:
        job.client.assign(job, None)
        job.sent = False
        if counted:
            job.attempts.append({"worker": worker.name, "cause": cause})
        if len(job.attempts) > job.max_retries:
            lines = "; ".join(f"{a['worker']}: {a['cause']}" for a in job.attempts)
            message = (
                f"job {job.job_id} was lost {len(job.attempts)} times "
                f"(max_retries={job.max_retries}): {lines}"
            )
            error = error_json("JobLost", message, attempts=job.attempts)
            self._end(job, JobStatus.LOST, EMPTY, error)
        else:
            job.client.push(job, front=True)

    def _end(self, job: Job, status: JobStatus, value: Payload, error: str) -> None:
        job.ended = True
        job.client.drop_job(job.job_id)
        self.completed += 1
        job.client.deliver((job.job_id, status, value, error))

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot of what the master knows (``master.status``)."""
        return snapshot(self)

    # -- dispatch -------------------------------------------------------------

    def dispatch(self) -> None:
        """Give free places on workers to queued jobs, as the policy decides.

        A job whose client's Python and cloudpickle no registered worker
        matches ends with a clear error.
        """
        while (decision := self.policy.next(self.clients, self.workers)) is not None:
            job = decision.job
            if isinstance(decision, Refuse):
                error = error_json("VersionMismatch", mismatch_message(job.client, self.workers))
                self._end(job, JobStatus.ERROR, EMPTY, error)
                continue
            job.task = next(self._tasks)
            job.client.assign(job, decision.worker)
            decision.worker.running[job.task] = job
            decision.worker.deliver_run(job)
