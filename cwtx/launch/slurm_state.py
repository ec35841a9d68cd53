"""
What a SLURM cluster's directory holds, and which jobs are its own.

Each cluster has a directory on the shared filesystem
(``$CWTX_SLURM_DIR/NAME``): its scripts, the master's address file, the
logs, the ids of the jobs it submitted (``jobs``) and how its workers are
started (``cluster.json``, for ``add``).  Its jobs run there (``--chdir``),
which tells them from another cluster's of the same name.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cwtx._errors import LaunchError
from cwtx.launch import slurm_commands as slurm
from cwtx.launch.slurm_commands import Job
from cwtx.launch.slurm_scripts import Docker, ScriptSettings, check_name, job_name

#: The cluster ``cw slurm`` and ``cwtx.slurm`` mean when not given a name.
DEFAULT_NAME = "default"


def default_state_dir() -> Path:
    """Where clusters keep their files: $CWTX_SLURM_DIR, else
    ``$XDG_STATE_HOME/cwtx/slurm`` (``~/.local/state/cwtx/slurm``).  It must
    be on a filesystem every node shares."""
    env = os.environ.get("CWTX_SLURM_DIR")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "cwtx" / "slurm"


def state_base(state_dir: str | os.PathLike[str] | None = None) -> Path:
    """``state_dir`` if given, else :func:`default_state_dir`."""
    return Path(state_dir) if state_dir is not None else default_state_dir()


def cluster_dir(name: str = DEFAULT_NAME, state_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory of cluster ``name``: its scripts, address file and logs."""
    return state_base(state_dir).absolute() / check_name(name)


def published(base: Path) -> list[str]:
    """The clusters under ``base`` whose master has written its address
    file (and not removed it: a master killed outright leaves it behind)."""
    return sorted(p.parent.name for p in base.glob("*/master.address"))


def jobs_file(directory: Path) -> Path:
    return directory / "jobs"


def record_job(directory: Path, role: str, job_id: str) -> None:
    """Every job we submit is written down first, so that stop can find it
    even if squeue has not shown it yet."""
    with open(jobs_file(directory), "a") as f:
        f.write(f"{job_id} {role}\n")


def recorded_jobs(directory: Path) -> dict[str, str]:
    try:
        lines = jobs_file(directory).read_text().splitlines()
    except OSError:
        return {}
    jobs = {}
    for line in lines:
        job_id, _, role = line.partition(" ")
        if job_id.isdigit():
            jobs[job_id] = role
    return jobs


def our_jobs(name: str, directory: Path) -> list[Job]:
    """The jobs of cluster ``name`` still known to SLURM: those we recorded,
    and any of this user's with its job names that run in its directory (a
    start interrupted before it recorded them).  A cluster of the same name
    under another state directory is not ours."""
    names = [job_name(name, "master"), job_name(name, "workers")]
    found = {
        j.id: j for j in slurm.squeue(names=names) if Path(j.workdir) == directory or not j.workdir
    }
    recorded = list(recorded_jobs(directory))
    if recorded:
        found.update((j.id, j) for j in slurm.squeue(job_ids=recorded))
    return sorted(found.values(), key=lambda j: j.id)


def settings_file(directory: Path) -> Path:
    return directory / "cluster.json"


@dataclass
class Setup:
    """How this cluster's workers are started: kept for ``add``."""

    settings: ScriptSettings
    slots: int
    grace: float
    worker_args: list[str]
    docker: Docker | None

    def save(self, directory: Path) -> None:
        s = self.settings
        data = {
            "settings": {**s.__dict__, "extra_worker_options": list(s.extra_worker_options)},
            "slots": self.slots,
            "grace": self.grace,
            "worker_args": self.worker_args,
            "docker": None if self.docker is None else self.docker.__dict__,
        }
        settings_file(directory).write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Setup:
        try:
            data = json.loads(settings_file(directory).read_text())
            setup = cls(
                ScriptSettings(**data["settings"]),
                data["slots"],
                data["grace"],
                data["worker_args"],
                None if data["docker"] is None else Docker(**data["docker"]),
            )
            _check_types(setup)
            return setup
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise LaunchError(
                f"cannot read how cluster {directory.name!r} was started "
                f"({settings_file(directory)}): {e}; is it running? (cw slurm start)"
            ) from None


#: What a state directory's path may hold: it goes into #SBATCH lines (where
#: '#', '%' and spaces mean something to SLURM) and into shell words.
_PLAIN_PATH = re.compile(r"[\w./+@:,=~-]+")


def _check_types(setup: Setup) -> None:
    """A hand-edited cluster.json is an error naming the field, not a traceback later."""
    s = setup.settings
    fields = {
        "slots": isinstance(setup.slots, int) and not isinstance(setup.slots, bool),
        "grace": isinstance(setup.grace, int | float) and not isinstance(setup.grace, bool),
        "worker_args": isinstance(setup.worker_args, list)
        and all(isinstance(a, str) for a in setup.worker_args),
        "settings": all(isinstance(v, str) for v in (s.cluster, s.state_dir, s.python))
        and all(isinstance(a, str) for a in s.extra_worker_options)
        and all(
            v is None or isinstance(v, str)
            for v in (s.pythonpath, s.secret_file, s.partition, s.time, s.account)
        ),
        "docker": setup.docker is None
        or (isinstance(setup.docker.image, str) and isinstance(setup.docker.args, str)),
    }
    wrong = [name for name, right in fields.items() if not right]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} of the wrong type")


def check_directory(directory: Path) -> None:
    if not _PLAIN_PATH.fullmatch(str(directory)):
        raise ValueError(
            f"the SLURM state directory {directory} has characters that SLURM or the "
            "shell would read (a space, '#', '%', '$', a quote...); set $CWTX_SLURM_DIR "
            "to a plain path on the shared filesystem"
        )


@contextmanager
def locked(directory: Path, report: Callable[[str], None], create: bool = False) -> Iterator[None]:
    """One ``cw slurm`` command at a time submits or cancels a cluster's
    jobs: two starts of one name, or a stop during an add's submission,
    would otherwise cancel each other's jobs or miss them.  Only ``start``
    (``create``) makes the directory; a filesystem without locks is said,
    and then gone without."""
    if create:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    elif not directory.is_dir():
        yield  # no such cluster here: nothing to guard
        return
    with open(directory / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(f"waiting for another cw slurm command on cluster {directory.name!r}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as e:  # ENOLCK, ENOSYS: a shared filesystem mounted without locks
            report(f"cannot lock {directory} ({e.strerror}): going on without")
        yield


def fresh_directory(directory: Path) -> None:
    """Make the cluster's directory; a previous run's files go, so that no
    old address or log is taken for this run's."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for pattern in ("master.*", "worker-*", "workers-*", "jobs", "cluster.json"):
        for old in directory.glob(pattern):
            old.unlink(missing_ok=True)
