"""
SLURM's commands, as functions: ``sbatch``, ``squeue``, ``scancel``.

Nothing here decides anything; :mod:`cwtx.launch.slurm` does.  Every call
has a timeout, and a failing command is a LaunchError that quotes what the
command said.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cwtx._errors import LaunchError

#: Seconds any one SLURM command may take (slurmctld may be busy).
COMMAND_TIMEOUT = 60.0

#: squeue's fields, in this order: id, name, state, reason, nodes, user,
#: working directory (a cluster's jobs run in its state directory).
_FORMAT = "%i|%j|%T|%r|%N|%u|%Z"


def available() -> bool:
    """Whether SLURM's ``sbatch`` is on the PATH."""
    return shutil.which("sbatch") is not None


def _run(argv: Sequence[str], input: str | None = None) -> str:
    try:
        done = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise LaunchError(f"{argv[0]} is not on the PATH: is SLURM installed here?") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{' '.join(argv)} did not finish within {COMMAND_TIMEOUT:g} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise LaunchError(f"{argv[0]} failed: {said}")
    return done.stdout


def sbatch(script: str, options: Sequence[str] = ()) -> str:
    """Submit ``script`` (its text, on standard input); the job id."""
    out = _run(["sbatch", "--parsable", *options], input=script).strip()
    job_id = out.split(";", 1)[0]  # "ID;CLUSTER" on a federation
    if not job_id.isdigit():
        raise LaunchError(f"sbatch printed {out!r}, not a job id")
    return job_id


@dataclass(frozen=True)
class Job:
    """One line of squeue: a job, or one task of an array (``12_3``)."""

    id: str
    name: str
    state: str
    reason: str
    nodes: str
    user: str
    workdir: str = ""

    @property
    def base_id(self) -> str:
        """The array's id for an array task (``12`` for ``12_3``), else the id."""
        return self.id.split("_", 1)[0]

    @property
    def pending(self) -> bool:
        return self.state == "PENDING"


#: States of a job that has ended (squeue may list one for a little while).
ENDED = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)


def parse_squeue(text: str) -> list[Job]:
    jobs = []
    for line in text.splitlines():
        fields = line.strip().split("|", 6)
        if len(fields) == 7:
            jobs.append(Job(*fields))
    return jobs


def squeue(job_ids: Iterable[str] = (), names: Iterable[str] = ()) -> list[Job]:
    """This user's jobs with these ids or names (one line per array task)."""
    argv = ["squeue", "--noheader", "--array", f"--format={_FORMAT}", f"--user={user()}"]
    ids, wanted = list(job_ids), list(names)
    if ids:
        argv.append("--jobs=" + ",".join(ids))
    if wanted:
        argv.append("--name=" + ",".join(wanted))
    try:
        return parse_squeue(_run(argv))
    except LaunchError as e:
        if ids and "Invalid job id" in str(e):
            return []  # every one of them has ended and been forgotten
        raise


def scancel(job_ids: Sequence[str], signal: str | None = None, batch: bool = False) -> None:
    """Cancel these jobs, or send them ``signal``; ``batch``: to the batch
    shell only (our scripts exec the worker, so it is the worker)."""
    if not job_ids:
        return
    argv = ["scancel"]
    if signal:
        argv.append(f"--signal={signal}")
    if batch:
        argv.append("--batch")
    _run([*argv, *job_ids])


def user() -> str:
    """The user whose jobs these are, as SLURM knows them."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
