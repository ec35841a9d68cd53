"""
The dispatch policy: which queued job goes to which free worker.  Pure: it
reads sessions and returns a decision; :class:`~cwtx.master.master.Master`
acts on it.  A new scheduling rule belongs here.

Today: clients are served in turn (round robin), each client's queue by
priority then submission order, a job goes only to a worker whose Python
and cloudpickle match its client's, preferring workers it has not failed
on, then the worker with the most free places.
"""

from __future__ import annotations

from dataclasses import dataclass

from cwtx.master.sessions import UNKNOWN_VERSIONS, ClientSession, Job, WorkerSession


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


@dataclass
class Start:
    """Run ``job`` on ``worker``."""

    job: Job
    worker: WorkerSession


@dataclass
class Refuse:
    """No registered worker can ever run ``job`` (versions): end it."""

    job: Job


class RoundRobin:
    """Clients in turn; within a client, priority then order."""

    def __init__(self) -> None:
        self._next_client = 0

    def next(
        self, clients: list[ClientSession], workers: list[WorkerSession]
    ) -> Start | Refuse | None:
        """The next decision, or None when nothing more can start now.
        The chosen job is taken off its client's queue."""
        free = [w for w in workers if w.free > 0]
        if not free:
            return None
        n = len(clients)
        for i in range(n):
            client = clients[(self._next_client + i) % n]
            job = client.peek()
            if job is None:
                continue
            usable = [w for w in free if compatible(client.versions, w.versions)]
            if not usable:
                if not any(compatible(client.versions, w.versions) for w in workers):
                    client.pop()
                    return Refuse(job)
                continue  # matching workers exist, but are busy
            client.pop()
            self._next_client = (self._next_client + i + 1) % n
            failed = {a["worker"] for a in job.attempts}
            fresh = [w for w in usable if w.name not in failed] or usable
            return Start(job, max(fresh, key=lambda w: w.free))
        return None
