"""
The batch scripts ``cw slurm`` submits: pure text, no SLURM, no I/O.

Each script ``exec``s its Python, so the worker is the batch shell itself:
``scancel --batch -s INT`` and ``#SBATCH --signal=B:INT@N`` reach it
directly, and it leaves gracefully (docs/slurm.md).  With a Docker image the
worker runs as ``docker run --init``, whose client passes the signals on to
the container's init, which passes them on to the worker.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

import cwtx
from cwtx import logfile

#: Cluster names: they go into SLURM job names, file names and shell words.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

#: Seconds before its time limit that SLURM asks a worker to leave: its
#: grace for running jobs, plus time to hand the rest back.
LEAVE_MARGIN = 15


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(
            f"cluster name {name!r}: use 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_value(option: str, value: str | None) -> str | None:
    """A value for an ``#SBATCH`` line: one word, or the line would end (or
    a new one, a shell command, begin) where the user did not mean it to."""
    if value is not None and (not value or any(c.isspace() for c in value)):
        raise ValueError(f"--{option} {value!r}: give one word, with no spaces or newlines")
    return value


def job_name(cluster: str, role: str) -> str:
    """The SLURM job name of a cluster's master or workers: one user may run
    several named clusters side by side, and each finds only its own jobs."""
    return f"cwtx-{cluster}-{role}"


@dataclass(frozen=True)
class ScriptSettings:
    """What both scripts need: where things go and what runs them."""

    cluster: str
    state_dir: str
    python: str
    pythonpath: str | None = None
    secret_file: str | None = None
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    extra_worker_options: Sequence[str] = field(default_factory=tuple)
    #: Each process's log rotates at this size (bytes), with this many
    #: rotated files kept (cwtx.logfile).
    log_size: int = logfile.DEFAULT_SIZE
    log_files: int = logfile.DEFAULT_FILES

    def __post_init__(self) -> None:
        for option in ("partition", "time", "account"):
            check_value(option, getattr(self, option))


def _directives(options: list[tuple[str, object]]) -> list[str]:
    return [f"#SBATCH --{key}={value}" for key, value in options if value is not None]


def _header(s: ScriptSettings, role: str, options: list[tuple[str, object]]) -> list[str]:
    common = [
        ("job-name", job_name(s.cluster, role)),
        ("chdir", s.state_dir),
        ("nodes", 1),
        ("ntasks", 1),
        ("partition", s.partition),
        ("time", s.time),
        ("account", s.account),
    ]
    return [
        "#!/bin/bash",
        *_directives(common + options),
        f"# The {role} of cwtx cluster {s.cluster!r}, written by cwtx {cwtx.__version__}"
        " (cw slurm); see docs/slurm.md.",
    ]


def _log_variables(s: ScriptSettings) -> list[str]:
    """How much log each process keeps (``cwtx.logfile``): whole numbers."""
    return [
        f"{logfile.SIZE_VARIABLE}={int(s.log_size)}",
        f"{logfile.FILES_VARIABLE}={int(s.log_files)}",
    ]


def _environment(s: ScriptSettings) -> list[str]:
    logs = ["export " + " ".join(_log_variables(s))]
    if not s.pythonpath:
        return logs
    # The master and workers run the cwtx of the program that started them.
    path = f'export PYTHONPATH={shlex.quote(s.pythonpath)}"${{PYTHONPATH:+:$PYTHONPATH}}"'
    return [path, *logs]


def _secret(s: ScriptSettings) -> list[str]:
    return ["--secret-file", shlex.quote(s.secret_file)] if s.secret_file else []


def master_script(s: ScriptSettings, port: int = 0, master_options: Sequence[str] = ()) -> str:
    """The master's job: it listens on every interface and, once it does,
    writes ``NODE:PORT`` to the cluster's address file."""
    d = shlex.quote(s.state_dir)
    command = [
        "exec",
        shlex.quote(s.python),
        "-m",
        "cwtx.master",
        "--logfile",
        f"{d}/master.log",
        "--listen",
        f"tcp:{port}",
        "--address-file",
        f"{d}/master.address",
        "--advertise",
        '"${SLURMD_NODENAME:-$(hostname)}"',
        *_secret(s),
        *map(shlex.quote, master_options),
    ]
    lines = [
        *_header(s, "master", [("cpus-per-task", 1), ("output", f"{s.state_dir}/master.out")]),
        *_environment(s),
        " ".join(command),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Docker:
    """Run each worker in this image: its entrypoint must be its Python."""

    image: str
    args: str = ""


def worker_script(
    s: ScriptSettings,
    slots: int = 1,
    grace: float = 25.0,
    docker: Docker | None = None,
) -> str:
    """One array task per worker, with ``slots`` CPUs; it waits for the
    master's address file, and leaves when SLURM signals its time is near."""
    d = shlex.quote(s.state_dir)
    task = "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
    leave = int(grace) + LEAVE_MARGIN
    worker = [
        "--logfile",
        f'{d}/worker-"{task}".log',
        "--master-file",
        f"{d}/master.address",
        "--slots",
        str(slots),
        "--name",
        f'"slurm-{task}"',
        "--grace",
        f"{grace:g}",
        *_secret(s),
        *map(shlex.quote, s.extra_worker_options),
    ]
    if docker is None:
        runner = ["exec", shlex.quote(s.python), "-m", "cwtx.worker"]
        environment = _environment(s)
    else:
        runner = [
            "exec",
            "docker",
            "run",
            "--rm",
            "--interactive",  # the client stays attached, so it forwards signals
            "--init",  # an init as PID 1 passes them on to the worker
            "--network=host",  # the worker reaches the master, and clients it
            f'--name="cwtx-{s.cluster}-{task}"',
            # As the user who submitted: the secret file must be ours, and
            # logs on the shared filesystem are then the user's own.
            '--user="$(id -u):$(id -g)"',
            f"--cpus={slots}",  # what SLURM gave the job, and no more
            # A secret in the environment goes in by name, never in the script.
            *([] if s.secret_file else ["--env=CWTX_SECRET"]),
            *(f"--env={variable}" for variable in _log_variables(s)),
            # As words, quoted: nothing in them is run by the job's shell.
            *([shlex.join(shlex.split(docker.args))] if docker.args.strip() else []),
            shlex.quote(docker.image),
            "-m",
            "cwtx.worker",
        ]
        environment = []  # the image's Python runs the image's cwtx
    options = [
        ("cpus-per-task", slots),
        ("output", f"{s.state_dir}/worker-%A_%a.out"),
        ("signal", f"B:INT@{leave}"),
    ]
    lines = [*_header(s, "workers", options), *environment, " ".join(runner + worker)]
    return "\n".join(lines) + "\n"
