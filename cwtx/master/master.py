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

import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from itertools import count
from typing import TYPE_CHECKING, Any

import txaio

from cwtx._errors import ProtocolError, error_json, parse_error
from cwtx._logs import RateLimit, debugging, printable
from cwtx.master.functions import DEFAULT_FUNCTION_CACHE, IdleFunctions
from cwtx.master.jobs import Job, Options
from cwtx.master.policy import MAX_SHAPES, FairShare, Refuse, TakeBack, mismatch_message
from cwtx.master.sessions import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_PREFETCH,
    MAX_CLIENT_BYTES,
    MAX_CLIENT_JOBS,
    MAX_RESOURCES,
    ClientSession,
    Function,
    HeldData,
    WorkerSession,
)
from cwtx.master.status import snapshot
from cwtx.wire.names import JobStatus, OutputStream, data_hash, function_hash, split_hashes
from cwtx.wire.payload import Data, Payload, pieces_of
from cwtx.wire.resources import MAX_SHARE, MIN_SHARE
from cwtx.wire.resources import decode as decode_resources
from cwtx.wire.resources import encode as encode_resources

if TYPE_CHECKING:
    from cwtx.master.history import History

txaio.use_twisted()
log = txaio.make_logger()

#: The debug line of a job's end, whichever way it ended.
ENDED = "job {job} of client {client} ended: {status}"

OUTPUT_STREAMS = frozenset(OutputStream)
#: The statuses of a worker's result that end a job (lost and requeue retry it).
ENDINGS = frozenset(
    {JobStatus.OK, JobStatus.ERROR, JobStatus.TIMEOUT, JobStatus.CANCELLED, JobStatus.MEMORY}
)
#: Characters of one TaskOutput record's text the master forwards, at most
#: (a worker sends at most 8,192: worker.output.RECORD_TEXT).
MAX_OUTPUT_TEXT = 8192
#: Put data one job may name (its record must fit in one AMP value).
MAX_JOB_REFS = 1000
#: Distinct job options a client's session keeps to share (a client that
#: asks for more gets options of their own for the others' jobs).
MAX_SHARED_OPTIONS = 1024
#: The needs of a job that asks for no resources (most): one dict for all.
NO_NEEDS: dict[str, float] = {}


def _ignore(function: Function) -> None:
    pass


class Master:
    """Routes jobs from clients to workers and results back."""

    def __init__(
        self,
        max_retries: int = DEFAULT_MAX_RETRIES,
        prefetch: int = DEFAULT_PREFETCH,
        max_client_bytes: int = MAX_CLIENT_BYTES,
        max_client_jobs: int = MAX_CLIENT_JOBS,
        priority_clients: Iterable[str] = (),
        now: Callable[[], float] = time.monotonic,
        function_cache: int = DEFAULT_FUNCTION_CACHE,
    ) -> None:
        """``max_client_bytes`` and ``max_client_jobs``: what one client's
        unfinished jobs (and functions) may hold before it waits (flow
        control).  ``priority_clients``: name patterns of clients whose jobs
        go before all others.  ``now``: the clock run times are measured on.
        ``function_cache``: bytes of functions that no live job names kept
        (across clients) so that their clients need not send them again."""
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {max_retries}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more, not {prefetch}")
        if function_cache < 0:
            raise ValueError(f"function_cache must be 0 or more, not {function_cache}")
        self.id = uuid.uuid4().hex[:12]
        self.max_retries = max_retries
        self.prefetch = prefetch
        self.max_client_bytes = max_client_bytes
        self.max_client_jobs = max_client_jobs
        self.clients: list[ClientSession] = []
        #: Functions no live job names, kept up to ``function_cache`` bytes.
        self.idle_functions = IdleFunctions(function_cache, ClientSession.drop_function)
        self.workers: list[WorkerSession] = []
        self.policy = FairShare(priority_clients)
        self.now = now
        self.started_at = now()
        self.address = ""  # host:port it listens on, once it does (for status)
        #: Lines about misbehaving peers, rate-limited per host.
        self.log_limit = RateLimit()
        self._tasks = count(1)
        self._sessions = count(1)
        self.completed = 0
        #: Samples of the recent past (``history.History``), when something
        #: takes them (``twistd cw-master`` does).
        self.history: History | None = None
        #: The dashboard's URL, when ``--http`` serves one (without its token).
        self.http: str | None = None

    # -- clients --------------------------------------------------------------

    def add_client(self, session: ClientSession) -> None:
        session.max_bytes = self.max_client_bytes
        session.max_jobs = self.max_client_jobs
        session.number = next(self._sessions)
        session.joined_at = self.now()
        session.data_gone = self._data_gone
        session.function_idle = partial(self.idle_functions.add, session)
        session.function_used = self.idle_functions.used
        self.clients.append(session)
        self.policy.add_client(session)

    def set_share(self, session: ClientSession, share: float) -> None:
        """The client's weight in the fair share of slots."""
        if not (MIN_SHARE <= share <= MAX_SHARE):
            raise ProtocolError(
                f"a share must be from {MIN_SHARE:g} to {MAX_SHARE:g}, not {share!r}"
            )
        self.policy.set_share(session, share)
        if self.log_limit.allow(("share", session.name))[0]:  # a client cannot flood the log
            log.info("client {c} has share {s:g}", c=session.name, s=share)

    def remove_client(self, session: ClientSession) -> None:
        """A client left: drop its queued jobs, cancel its running ones."""
        if session not in self.clients:
            return
        self.clients.remove(session)
        session.function_idle = _ignore  # (its functions go with it, not into the cache)
        for job in list(session.jobs.values()):
            session.drop_job(job.job_id)
            self._abandon(job)
        self.idle_functions.forget_session(session)
        session.free_all_data()
        # Not remembered as sent to the workers: a client that sends the
        # same function later sends it again (issue 15: no residue).
        for worker in self.workers:
            worker.functions.difference_update(session.functions)
        self.policy.remove_client(session)
        self.dispatch()

    def define(self, session: ClientSession, fn: bytes, env: str, code: Data) -> None:
        """A client sends a function: its hash must be its content's, so that
        no client can pass its code off as another's."""
        known = session.functions.get(fn)
        if known is not None:
            session.sent_again(known)
            return
        if function_hash(env, pieces_of(code)) != fn:
            raise ProtocolError(f"function {fn.hex()[:16]}... does not match its code")
        session.add_function(Function(fn, env, code))

    def put_data(self, session: ClientSession, ref: bytes, data: Payload) -> None:
        """A client sends put data (a ``cwtx.Ref``): its hash must be its
        content's, as workers cache it by hash across clients."""
        held = session.data.get(ref)
        if held is not None:
            held.freed = False  # sent again after a free its jobs held back
            return
        if data_hash(data.pieces) != ref:
            raise ProtocolError(f"put data {ref.hex()[:16]}... does not match its hash")
        session.add_data(HeldData(ref, data))

    def free_data(self, session: ClientSession, refs: list[bytes]) -> None:
        """The client dropped these Refs: their data goes once no live job
        of its names it (at once, for an honest client)."""
        for ref in refs:
            data = session.data.get(ref)
            if data is not None:
                session.free_data(data)

    def _data_gone(self, data: HeldData) -> None:
        """A session let go of put data: the workers that have it drop it,
        unless another client holds the same bytes (cached by hash)."""
        if any(data.hash in c.data for c in self.clients):
            return
        for worker in self.workers:
            if data.hash in worker.data:
                worker.data.discard(data.hash)
                worker.deliver_free(data.hash)

    def submit(
        self,
        session: ClientSession,
        job_id: int,
        fn: bytes,
        args: Data,
        timeout: float = 0.0,
        max_retries: int = -1,
        priority: int = 0,
        resources: str = "{}",
        forward_output: bool = False,
        refs: bytes = b"",
    ) -> None:
        """Queue a job (``max_retries`` -1: the master's default); a bad one
        ends at once with a clear error.  ``forward_output``: what it prints
        goes to its client.  ``refs``: the put data it names (hashes, joined)."""
        if job_id in session.jobs:
            log.debug("client {c} resubmitted job {j}", c=session.name, j=job_id)
            return
        function = session.functions.get(fn)
        if function is None:
            message = f"job {job_id} names function {fn.hex()}, never sent"
            self._refuse(session, job_id, "ProtocolError", message)
            return
        try:
            data = self._job_data(session, job_id, refs) if refs else ()
        except ValueError as e:
            self._refuse(session, job_id, "ValueError", str(e))
            return
        key = (timeout, max_retries, priority, resources, forward_output)
        options = session.options.get(key)
        if options is None:
            options = self._options(session, job_id, *key)
            if options is None:
                return  # refused
        if options.needs and not self.policy.has_room_for(session, options.resources):
            message = (
                f"job {job_id}: this client already waits on {MAX_SHAPES} different "
                "resource requests; use fewer distinct ones"
            )
            self._refuse(session, job_id, "ValueError", message)
            return
        job = Job(session, job_id, function, args, options, data=data)
        session.add_job(job)
        self.policy.enqueue(job)
        if debugging(log):
            log.debug("job {job} of client {client} submitted", job=job_id, client=session.name)

    def _options(
        self,
        session: ClientSession,
        job_id: int,
        timeout: float,
        max_retries: int,
        priority: int,
        resources: str,
        forward_output: bool,
    ) -> Options | None:
        """A job's options, checked, and kept to share with the client's
        next jobs that ask for the same; None if refused."""
        if len(resources) > MAX_RESOURCES:
            n = len(resources)
            message = f"job {job_id}: resources of {n} characters (at most {MAX_RESOURCES})"
            self._refuse(session, job_id, "ValueError", message)
            return None
        try:
            needs = decode_resources(resources, f"job {job_id}: resources") or NO_NEEDS
        except ValueError as e:
            self._refuse(session, job_id, "ValueError", str(e))
            return None
        if timeout < 0 or timeout != timeout:
            self._refuse(session, job_id, "ValueError", f"job {job_id}: timeout must be 0 or more")
            return None
        options = Options(
            timeout=timeout,
            max_retries=self.max_retries if max_retries < 0 else max_retries,
            priority=priority,
            resources=encode_resources(needs) if needs else "{}",
            needs=needs,
            forward_output=forward_output,
        )
        if len(session.options) < MAX_SHARED_OPTIONS:
            session.options[(timeout, max_retries, priority, resources, forward_output)] = options
        return options

    @staticmethod
    def _job_data(session: ClientSession, job_id: int, refs: bytes) -> tuple[HeldData, ...]:
        """The put data a job names; ValueError if it names any its client
        does not hold (never sent, or freed)."""
        hashes = list(dict.fromkeys(split_hashes(refs)))
        if len(hashes) > MAX_JOB_REFS:
            raise ValueError(f"job {job_id} names {len(hashes)} put data (at most {MAX_JOB_REFS})")
        found = []
        for ref in hashes:
            data = session.data.get(ref)
            if data is None or data.freed:
                raise ValueError(
                    f"job {job_id} names put data {ref.hex()[:16]}... (a cwtx.Ref) "
                    "that its client never sent, or freed"
                )
            found.append(data)
        return tuple(found)

    @staticmethod
    def _refuse(session: ClientSession, job_id: int, kind: str, message: str) -> None:
        session.deliver((job_id, JobStatus.ERROR, b"", error_json(kind, message)))

    def cancel(self, session: ClientSession, job_ids: list[int]) -> None:
        """The client gave up on these jobs; it expects no answer."""
        for job_id in job_ids:
            job = session.drop_job(job_id)
            if job is not None:
                self._abandon(job)
        self.dispatch()

    def _abandon(self, job: Job) -> None:
        """Its client cancelled it, or left: it ends, with no result sent."""
        self._job_debug(
            job,
            ENDED,
            status=JobStatus.CANCELLED,
        )
        job.ended = True
        task = job.task
        if task is None:
            self.policy.dequeued(job)  # the queue skips it
            return
        if task.sent:
            if task.started or debugging(log):
                self._job_note(
                    job,
                    "job {job} of client {client} cancelled on worker {worker}: "
                    "task {task} is killed if it runs",
                    worker=task.worker.name,
                    task=task.id,
                )
            task.worker.deliver_cancel(task.id)  # stays on the worker until it answers
        else:
            self._unassign(job)  # its record will be skipped

    def _unassign(self, job: Job) -> None:
        """The job leaves its worker."""
        task = job.task
        if task is None:
            return
        live = job.client.jobs.get(job.job_id) is job
        if task.started and live:
            job.client.started -= 1  # (a dropped job's was taken off then)
        self.policy.released(task)
        task.worker.running.pop(task.id, None)
        if live:
            job.client.assign(job, None)
        else:
            job.task = None

    # -- workers --------------------------------------------------------------

    def add_worker(self, worker: WorkerSession) -> None:
        self.workers.append(worker)
        worker.joined_at = self.now()
        self.policy.add_worker(worker)
        log.info(
            "worker {w} joined with {slots}",
            w=worker.name,
            slots=f"{worker.slots} slot{'s' if worker.slots != 1 else ''}",
        )
        self.dispatch()

    def worker_leaving(self, worker: WorkerSession) -> None:
        """It takes no more tasks; it hands back those it has not started."""
        if worker in self.workers and not worker.leaving:
            self.policy.leaving(worker)

    def remove_worker(self, worker: WorkerSession, cause: str) -> None:
        """A worker is gone: the jobs it had started are retried, or end as
        lost; those it had not started go back to their queues (no attempt)."""
        if worker not in self.workers:
            return
        self.workers.remove(worker)
        log.info("worker {w} left: {cause}", w=worker.name, cause=cause)
        for _, task in sorted(worker.running.items()):
            job = task.job
            started = task.started
            self._unassign(job)
            if not job.ended:
                # A job that kills its worker before its start is reported
                # would never count an attempt: past this many lost workers
                # it counts anyway, so it cannot take down every worker.
                job.losses += 1
                suspect = job.losses > 2 * (job.options.max_retries + 1)
                self._attempt_failed(job, worker, cause, counted=started or suspect)
        worker.running = {}
        self.policy.remove_worker(worker)
        self.dispatch()

    def task_started(self, worker: WorkerSession, task_id: int) -> None:
        """A worker says one of its tasks started in a slot."""
        task = worker.running.get(task_id)
        if task is None or task.job.ended or task.started:
            return  # cancelled meanwhile, or said twice
        job = task.job
        self.policy.started(task, self.now())
        self._job_debug(
            job,
            "job {job} of client {client} started on worker {worker}",
            worker=worker.name,
            task=task_id,
        )
        job.client.started += 1
        if not job.announced:
            job.announced = True
            job.client.deliver_started(job.job_id)

    def task_output(self, worker: WorkerSession, task_id: int, stream: str, text: str) -> None:
        """A worker sends lines one of its tasks printed (it bounds them)."""
        if stream not in OUTPUT_STREAMS:
            raise ProtocolError(f"no output stream {printable(stream, 40)}")
        task = worker.running.get(task_id)
        job = task.job if task is not None else None
        if job is None or job.ended or not job.options.forward_output:
            return  # ended meanwhile, or not asked for
        job.client.deliver_output((job.job_id, worker.name, stream, text[:MAX_OUTPUT_TEXT]))

    def _taken_back(self, decision: TakeBack, returned: list[int]) -> None:
        for task in self.policy.taken_back(decision, set(returned)):
            job = task.job
            self._job_debug(
                job,
                "job {job} of client {client} taken back from worker {worker} "
                "(task {task} had not started) for {taker}",
                worker=decision.victim.name,
                task=task.id,
                taker=decision.taker.name,
            )
            self._unassign(job)
            if not job.ended:
                self.policy.enqueue(job, front=True)
        self.dispatch()

    def task_result(
        self,
        worker: WorkerSession,
        task_id: int,
        status: str,
        value: Data,
        error: str,
        seconds: float = 0.0,
    ) -> None:
        """A worker says how one of its tasks ended, and how long it ran."""
        task = worker.running.get(task_id)
        if task is None:
            allowed, held = self.log_limit.allow(("unknown task", worker.name))
            if allowed:
                log.warn(
                    "ignoring a result for task {t}, which worker {w} was not given{also}",
                    t=task_id,
                    w=worker.name[:60],  # escaped as it arrived
                    also=f" ({held} more held back)" if held else "",
                )
            return
        job = task.job
        # A worker's word, capped by what the master saw (a lying or skewed
        # clock cannot charge a client more than the time since it sent it).
        if seconds > 0:
            self.policy.ran(job, min(seconds, self.now() - task.sent_at))
        self._unassign(job)
        if job.ended:
            return  # cancelled, or its client left
        if status in (JobStatus.LOST, JobStatus.REQUEUE):
            # lost: it died under the job (an attempt); requeue: a leaving
            # worker handed it back (not an attempt).  A worker that hands
            # back tasks without having said it leaves is sent more, and
            # could bounce a job for ever: that counts as an attempt.
            honest = status == JobStatus.REQUEUE and worker.leaving
            if not honest:
                worker.lost += 1
            cause = parse_error(error)["message"] or str(status)
            if status == JobStatus.REQUEUE and not honest:
                cause = f"worker {worker.name} handed it back without leaving"
            if status == JobStatus.LOST:
                self._job_note(
                    job,
                    "job {job} of client {client} lost on worker {worker}: {cause}",
                    worker=worker.name,
                    task=task_id,
                    cause=printable(cause, 500),
                )
            self._attempt_failed(job, worker, printable(cause, 500), counted=not honest)
            return
        if status == JobStatus.OK:
            worker.done += 1
        elif status in (JobStatus.ERROR, JobStatus.TIMEOUT, JobStatus.MEMORY):
            worker.failed += 1
        if status == JobStatus.TIMEOUT:
            self._job_note(
                job,
                "job {job} of client {client} timed out on worker {worker} and was killed",
                worker=worker.name,
                task=task_id,
                timeout=job.options.timeout,
            )
        elif status == JobStatus.MEMORY:  # (like an error: it would fail again)
            self._job_note(
                job,
                "job {job} of client {client} went over the memory limit of worker {worker}",
                worker=worker.name,
                task=task,
            )
        if status not in ENDINGS:
            message = (
                f"worker {worker.name} sent a malformed result (status {printable(status, 40)})"
            )
            self._end(job, JobStatus.ERROR, b"", error_json("ProtocolError", message))
            return
        self._end(job, JobStatus(status), value, error)

    def _attempt_failed(self, job: Job, worker: WorkerSession, cause: str, counted: bool) -> None:
        """An attempt ended without a result (the job is off its worker)."""
        if counted:
            job.attempts = [*job.attempts, {"worker": worker.name, "cause": cause}]
        max_retries = job.options.max_retries
        if len(job.attempts) > max_retries:
            lines = "; ".join(f"{a['worker']}: {a['cause']}" for a in job.attempts)
            message = (
                f"job {job.job_id} was lost {len(job.attempts)} times "
                f"(max_retries={max_retries}): {lines}"
            )
            error = error_json("JobLost", message, attempts=list(job.attempts))
            self._end(job, JobStatus.LOST, b"", error)
        else:
            self._job_debug(
                job,
                "job {job} of client {client} retried after attempt {attempt} on worker "
                "{worker}: {cause}",
                worker=worker.name,
                attempt=len(job.attempts),
                counted=counted,
                cause=cause,
            )
            self.policy.enqueue(job, front=True)

    def _job_debug(self, job: Job, text: str, **fields: Any) -> None:
        """A step of a job's life, at debug level, its ids as fields (the
        check costs one attribute read when debug is off)."""
        if debugging(log):
            log.debug(text, job=job.job_id, client=job.client.name, **fields)

    def _job_note(self, job: Job, text: str, **fields: Any) -> None:
        """A kill worth an info line (cancel of a running job, timeout, lost),
        a few a minute per client at most: a client's jobs cannot fill the
        log; what is held back is counted in the next line."""
        allowed, held = self.log_limit.allow(("job note", job.client.name))
        if allowed:
            also = f" ({held} more such lines for this client held back)" if held else ""
            log.info(text + "{also}", job=job.job_id, client=job.client.name, also=also, **fields)

    def _end(self, job: Job, status: JobStatus, value: Data, error: str) -> None:
        if debugging(log):
            self._job_debug(job, ENDED, status=status)
        job.ended = True
        job.client.drop_job(job.job_id)
        self.completed += 1
        if status == JobStatus.OK:
            job.client.done += 1
        elif status != JobStatus.CANCELLED:
            job.client.failed += 1
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
        now = self.now()
        debug = debugging(log)  # (once, not per job)
        while (decision := self.policy.next()) is not None:
            job = decision.job
            if isinstance(decision, Refuse):
                error = error_json("VersionMismatch", mismatch_message(job.client, self.workers))
                self._end(job, JobStatus.ERROR, b"", error)
                continue
            task = decision
            task.id = next(self._tasks)
            task.sent_at = now
            job.client.assign(job, task)
            worker = task.worker
            worker.running[task.id] = task
            if debug:
                self._job_debug(
                    job,
                    "job {job} of client {client} dispatched to worker {worker} as task {task}",
                    worker=worker.name,
                    task=task.id,
                )
            worker.deliver_run(task)
        for steal in self.policy.steals():
            tasks = [task.id for task in steal.tasks]
            d = steal.victim.deliver_take_back(tasks)
            d.addCallbacks(
                lambda returned, steal=steal: self._taken_back(steal, returned),
                lambda _, steal=steal: self._taken_back(steal, []),
            )
