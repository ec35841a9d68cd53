"""
What the master keeps of each job, made small: the master may hold a
million queued jobs, so a queued job is one compact record, its options
are shared with the client's other jobs that asked for the same, and what
only an attempt on a worker needs (a :class:`Task`) is made when the job
is dispatched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cwtx.wire.payload import Data

if TYPE_CHECKING:
    from cwtx.master.sessions import ClientSession, Function, HeldData, WorkerSession


@dataclass(eq=False, slots=True)
class Options:
    """What a job asked for besides its function and arguments.  The jobs of
    a client that asked for the same share one (see ``ClientSession.options``).
    Never changed once made."""

    timeout: float
    max_retries: int
    priority: int
    resources: str  # as sent: the canonical text of ``needs`` (its shape)
    needs: dict[str, float]  # never changed: shared
    forward_output: bool  # what it prints goes to its client


@dataclass(eq=False, slots=True)
class Job:
    """A client's job, from submission until it ends for the client."""

    client: ClientSession
    job_id: int
    fn: Function
    args: Data  # bytes, or the Payload it was streamed as
    options: Options
    task: Task | None = None  # its attempt on a worker; None while it is queued
    attempts: Sequence[dict[str, str]] = ()  # those that failed and counted
    losses: int = 0  # workers lost while it was on them, started or not
    announced: bool = False  # its client was told it started
    ended: bool = False
    data: tuple[HeldData, ...] = ()  # the put data its arguments name

    @property
    def queued(self) -> bool:
        return self.task is None and not self.ended

    @property
    def worker(self) -> WorkerSession | None:
        return self.task.worker if self.task is not None else None


@dataclass(eq=False, slots=True)
class Task:
    """One attempt at running a job on a worker, named by the master's task
    id: from its dispatch until it leaves the worker (ended, lost, handed
    or taken back)."""

    job: Job
    worker: WorkerSession
    order: float  # the worker starts its waiting tasks lowest order first
    vstart: float  # its client's pass when it was sent
    id: int = 0
    sent_at: float = 0.0  # when the master gave it to the worker
    sent: bool = False  # its RunTasks record went out to the worker
    started: bool = False  # the worker reported it started
    started_at: float = 0.0
    # Kept by the policy, while it waits on its worker:
    asked: bool = False  # it was asked back at least once (the fields below may be set)
    reclaiming: bool = False  # asked back from its worker, answer pending
    kept: bool = False  # its worker did not hand it back, ASKS times: not asked again
    asks: int = 0  # take-backs its worker answered without it
    reclaim_by: Any = None  # the take-back (policy.TakeBack) that asked for it
