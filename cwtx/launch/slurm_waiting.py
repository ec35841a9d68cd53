"""
Waiting for a SLURM cluster to come up, and to go: polling with backoff
until a deadline, and saying, when it does not, what SLURM says is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from cwtx._errors import AuthenticationError, LaunchError
from cwtx.client.address import read_address_file
from cwtx.launch import slurm_commands as slurm
from cwtx.launch.procs import log_tail
from cwtx.launch.slurm_commands import Job

Report = Callable[[str], None]


class Cluster(Protocol):
    """What waiting needs of a cluster (cwtx.launch.slurm.SlurmCluster)."""

    name: str
    directory: Path
    host: str
    port: int

    def status(self, timeout: float = 5.0) -> dict[str, Any]: ...


#: Pending reasons that waiting cannot cure: start fails at once with them.
HOPELESS = frozenset(
    {
        "AccountNotAllowed",
        "BadConstraints",
        "DependencyNeverSatisfied",
        "InvalidAccount",
        "InvalidQOS",
        "JobHeldAdmin",
        "JobHeldUser",
        "PartitionConfig",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "QOSMaxCpuPerJobLimit",
        "QOSMaxNodePerJobLimit",
        "QOSMaxWallDurationPerJobLimit",
    }
)


def clock() -> float:
    return time.monotonic()


def backoff(deadline: float, first: float = 0.05, most: float = 1.0) -> Iterator[None]:
    """Yield, then sleep a little longer each time, until ``deadline``;
    always yields once more at the deadline."""
    delay = first
    while True:
        yield
        now = clock()
        if now >= deadline:
            return
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 1.5, most)


def why(job: Job) -> str:
    return f"{job.state.lower()} ({job.reason})" if job.reason not in ("", "None") else job.state


def wait_for_master(
    cluster: Cluster, job_id: str, deadline: float, report: Report
) -> tuple[str, int]:
    """The master's address, once it has written it; fails fast if its job
    ends or is pending for a reason waiting cannot cure."""
    path = cluster.directory / "master.address"
    said = ""
    job: Job | None = None
    for _ in backoff(deadline):
        found = read_address_file(path)
        if found is not None:
            return found
        try:
            job = job_of(job_id)
        except LaunchError:
            continue  # squeue had a hiccup: ask again, until the deadline
        if job is None or job.state not in ("PENDING", "RUNNING", "CONFIGURING"):
            state = "has ended" if job is None else f"is {job.state}"
            raise LaunchError(
                f"the master's SLURM job {job_id} {state} before it listened; "
                + master_log(cluster)
            )
        fail_if_hopeless([job], "the master's")
        if why(job) != said:
            said = why(job)
            report(f"the master's job {job_id} is {said}")
    where = f"its job {job_id} is {why(job)}" if job else f"its job {job_id} has not started"
    raise LaunchError(f"the master did not listen within the timeout: {where}{advice(job)}")


def wait_for_workers(
    cluster: Cluster,
    array_id: str,
    n: int,
    deadline: float,
    report: Report,
    master_id: str | None = None,
) -> list[str]:
    """Poll the master's status until the array's ``n`` workers have
    registered; fails fast if a task ends first, or cannot start, or if the
    master's job (``master_id``) ends meanwhile."""
    names = [f"slurm-{array_id}_{i}" for i in range(n)]
    registered: set[str] = set()
    tasks: list[Job] = []
    unanswered = ""  # why the master's status could not be read, if it could not
    said = ""
    for _ in backoff(deadline, most=2.0):
        try:
            registered = {w["name"] for w in cluster.status()["workers"]} & set(names)
            unanswered = ""
        except AuthenticationError as e:
            raise LaunchError(f"the master at {cluster.host}:{cluster.port} refused us: {e}")
        except OSError as e:
            unanswered = f"; its status could not be read: {e}"
        if len(registered) == n:
            report(f"all {n} workers registered")
            return names
        try:
            listed_jobs = slurm.squeue(job_ids=[array_id, *([master_id] if master_id else [])])
        except LaunchError:
            continue  # squeue had a hiccup: ask again, until the deadline
        tasks = [j for j in listed_jobs if j.base_id == array_id]
        if master_id and not any(
            j.id == master_id and j.state not in slurm.ENDED for j in listed_jobs
        ):
            raise LaunchError(
                f"the master's SLURM job {master_id} ended while the workers were starting; "
                + master_log(cluster)
            )
        fail_if_hopeless(tasks, "the workers'")
        listed = {j.id.replace("[", "").split("_")[-1] for j in tasks}
        ended = [x for x in names if x not in registered and x.rsplit("_", 1)[1] not in listed]
        if ended and not pending_range(tasks) and not unanswered:
            log = cluster.directory / ended[0].replace("slurm-", "worker-")
            raise LaunchError(
                f"worker {ended[0]} ended before it registered with the master; its log:\n"
                f"{tail(log.with_suffix('.log'))}\n{tail(log.with_suffix('.out'))}"
            )
        now = f"{len(registered)} of {n} workers registered" + pending_summary(tasks)
        if now != said:
            said = now
            report(now)
    pending = [j for j in tasks if j.pending]
    raise LaunchError(
        f"{n - len(registered)} of {n} workers did not register with the master at "
        f"{cluster.host}:{cluster.port} within the timeout"
        + unanswered
        + pending_summary(tasks)
        + (advice(pending[0]) if pending else f"; worker logs are in {cluster.directory}")
    )


def pending_range(tasks: list[Job]) -> bool:
    """squeue shows an array's pending tasks as one line, ``12_[3-7]``."""
    return any("[" in j.id for j in tasks)


def pending_summary(tasks: list[Job]) -> str:
    reasons = sorted({j.reason for j in tasks if j.pending and j.reason != "None"})
    return f"; SLURM holds some pending ({', '.join(reasons)})" if reasons else ""


def fail_if_hopeless(jobs: list[Job], whose: str) -> None:
    for job in jobs:
        if job.pending and job.reason in HOPELESS:
            raise LaunchError(
                f"{whose} SLURM job {job.id} is pending with reason {job.reason}, "
                f"which waiting will not change{advice(job)}"
            )


def advice(job: Job | None) -> str:
    if job is None or not job.pending:
        return ""
    return (
        f". `squeue -j {job.base_id} -o '%i %T %r'` and `scontrol show job {job.base_id}` "
        "say more; docs/slurm.md says what to do for each reason"
    )


def job_of(job_id: str) -> Job | None:
    for job in slurm.squeue(job_ids=[job_id]):
        if job.id == job_id:
            return job
    return None


def master_log(cluster: Cluster) -> str:
    """The end of the master's log and output, for an error message."""
    d = cluster.directory
    return f"its log ({d}/master.log):\n{tail(d / 'master.log')}\n{tail(d / 'master.out')}"


def tail(path: Path) -> str:
    """A log's end, or that there is none, naming it (two are shown)."""
    return log_tail(path, missing=f"    ({path.name}: none)")


def wait_gone(ids: Sequence[str], wait: float) -> bool:
    """Poll squeue until it lists none of these jobs (or array tasks) as
    still running, pending or completing."""
    deadline = clock() + wait
    bases = sorted({i.split("_")[0] for i in ids})
    for _ in backoff(deadline):
        try:
            listed = slurm.squeue(job_ids=bases)
        except LaunchError:
            continue  # squeue had a hiccup: ask again, until the deadline
        if all(j.state in slurm.ENDED for j in listed if j.id in ids or j.base_id in ids):
            return True
    return False
