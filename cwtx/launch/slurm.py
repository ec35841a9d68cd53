"""
Run a master and workers as SLURM jobs (``cw slurm start``).

SLURM only starts the processes; it stays out of the job path.  The master
is one batch job; the workers are one job array, whatever their number.  The
master publishes ``NODE:PORT`` in an address file in the cluster's state
directory (on the shared filesystem), where workers and clients read it.
Each cluster has a name, so one user can run several side by side; each
finds, and stops, only the jobs with its own names.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cwtx import logfile
from cwtx._errors import LaunchError
from cwtx._secret import load_secret, secret_source
from cwtx.client import address
from cwtx.client.address import format_address, read_address_file, read_address_file_quietly
from cwtx.client.status import query_status
from cwtx.launch import slurm_commands as slurm
from cwtx.launch.sbatch_options import extra_options
from cwtx.launch.slurm_commands import Job
from cwtx.launch.slurm_scripts import (
    Docker,
    ScriptSettings,
    check_name,
    job_name,
    master_script,
    worker_script,
)
from cwtx.launch.slurm_state import (
    DEFAULT_NAME,
    Setup,
    check_directory,
    cluster_dir,
    default_state_dir,
    fresh_directory,
    locked,
    our_jobs,
    published,
    record_job,
    state_base,
)
from cwtx.launch.slurm_waiting import (
    Report,
    advice,
    clock,
    wait_for_master,
    wait_for_workers,
    wait_gone,
    why,
)

#: Seconds ``start`` and ``add`` wait for the master and the workers; a
#: busy cluster may queue them for a while.
START_TIMEOUT = 300.0
#: Seconds workers have to leave on ``stop`` beyond their grace.
LEAVE_TIMEOUT = 30.0
#: A worker's grace for its running jobs when it is asked to leave.
GRACE = 25.0


def _quiet(message: str) -> None:
    pass


@dataclass
class SlurmCluster:
    """A master and workers running as SLURM jobs; ``stop()`` ends them."""

    name: str
    directory: Path
    host: str = ""
    port: int = 0
    #: Names of the workers started and registered, ``slurm-ARRAY_TASK``.
    workers: list[str] = field(default_factory=list)
    #: The secret file its jobs were given (None: the default, or $CWTX_SECRET).
    secret_file: str | None = None

    @property
    def nworkers(self) -> int:
        return len(self.workers)

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        """The master's own status (``cw status``)."""
        return query_status(self.host, self.port, timeout, load_secret(self.secret_file))

    def jobs(self) -> list[Job]:
        """This cluster's SLURM jobs, one line per array task."""
        return our_jobs(self.name, self.directory)

    def add_workers(
        self,
        n: int,
        *,
        slots: int | None = None,
        timeout: float = START_TIMEOUT,
        worker_args: Sequence[str] = (),
    ) -> list[str]:
        """Submit ``n`` more workers as one array; their names, once
        registered.  ``worker_args``: more cw-worker options for these
        (``--resources gpu=1``), as LocalCluster.add_workers takes."""
        names = _submit_workers(self, n, slots, timeout, _quiet, tuple(worker_args))
        self.workers += names
        return names

    def stop(self) -> list[str]:
        return stop(self.name, self.directory.parent)

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- what a cluster's directory holds -----------------------------------------


# -- start, add, stop -----------------------------------------------------------


def _pythonpath() -> str:
    """The directory this cwtx was imported from: the jobs run the same one."""
    import cwtx

    return str(Path(cwtx.__file__).resolve().parent.parent)


def start(
    nworkers: int = 2,
    port: int = 0,
    *,
    name: str = DEFAULT_NAME,
    slots: int = 1,
    partition: str | None = None,
    time: str | None = None,
    account: str | None = None,
    master_args: str | Sequence[str] = (),
    worker_args: str | Sequence[str] = (),
    master_options: str | Sequence[str] = (),
    worker_options: str | Sequence[str] = (),
    master_service_args: Sequence[str] = (),
    worker_service_args: Sequence[str] = (),
    docker_image: str | None = None,
    docker_args: str = "",
    timeout: float = START_TIMEOUT,
    state_dir: str | os.PathLike[str] | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    grace: float = GRACE,
    report: Report = _quiet,
    log_size: int | str = logfile.DEFAULT_SIZE,
    log_files: int = logfile.DEFAULT_FILES,
) -> SlurmCluster:
    """
    Submit a master and ``nworkers`` workers (one job array) as SLURM jobs.

    Returns once the master listens and every worker has registered; a job
    SLURM cannot or does not start within ``timeout`` seconds is a
    LaunchError that gives SLURM's reason, after everything submitted has
    been cancelled.  ``master_args``/``worker_args`` are extra sbatch
    options (``master_options``/``worker_options``: the seed's names for
    them); ``*_service_args`` are extra ``cw-master``/``cw-worker`` options.
    ``port=0`` lets the master take any free port.  ``report`` hears what it
    is waiting for.  Each process's log rotates at ``log_size`` (bytes, or
    ``10M``), with ``log_files`` rotated files kept (``cwtx.logfile``).
    """
    if nworkers < 0:
        raise ValueError(f"nworkers must be 0 or more, not {nworkers}")
    if slots < 1:
        raise ValueError(f"a worker needs at least one slot, not {slots}")
    if "\n" in docker_args or (docker_image is not None and not docker_image.strip()):
        raise ValueError("docker_image must be an image name, and docker_args one line")
    if not 0 <= port <= 65535:
        raise ValueError(f"the master's port must be 0 (any free one) to 65535, not {port}")
    _check_timeout(timeout)
    if docker_image:
        shlex.split(docker_args)  # an unbalanced quote, said before anything is submitted
    directory = cluster_dir(name, state_dir)
    check_directory(directory)
    return _start(
        directory, name, nworkers, port, slots, partition, time, account,
        extra_options(master_args, "master_args")
        + extra_options(master_options, "master_options"),
        extra_options(worker_args, "worker_args")
        + extra_options(worker_options, "worker_options"),
        master_service_args, worker_service_args, docker_image, docker_args,
        timeout, secret_file, grace, report,
        (logfile.log_size(log_size), logfile.log_files(log_files)),
    )  # fmt: skip


def _check_timeout(timeout: float) -> None:
    if not timeout > 0:  # NaN too: no deadline would ever pass
        raise ValueError(f"the timeout must be a positive number of seconds, not {timeout}")


def _start(
    directory: Path,
    name: str,
    nworkers: int,
    port: int,
    slots: int,
    partition: str | None,
    time: str | None,
    account: str | None,
    extra_master: list[str],
    extra_worker: list[str],
    master_service_args: Sequence[str],
    worker_service_args: Sequence[str],
    docker_image: str | None,
    docker_args: str,
    timeout: float,
    secret_file: str | os.PathLike[str] | None,
    grace: float,
    report: Report,
    logs: tuple[int, int],
) -> SlurmCluster:
    """Submit under the cluster's lock (so that two starts of one name, or
    a stop meanwhile, see each other's jobs), then wait without it (so that
    a stop from elsewhere need not wait for a start stuck in the queue)."""
    cluster = SlurmCluster(name, directory)
    with locked(directory, report, create=True):
        setup = _prepare(
            cluster, nworkers, slots, partition, time, account, extra_worker,
            worker_service_args, docker_image, docker_args, secret_file, grace, logs,
        )  # fmt: skip
        deadline = clock() + timeout
        submitted: list[str] = []
        try:
            script = _submitted(
                master_script(setup.settings, port, master_service_args), extra_master
            )
            (directory / "master.sh").write_text(script)
            master_id = _sbatch(script, extra_master, submitted, directory, "master")
            report(f"submitted the master as SLURM job {master_id}")
            # The workers go in at once: they wait for the master's address file.
            array = _submit_array(cluster, setup, nworkers, report, submitted) if nworkers else None
        except BaseException:
            # The lock is held and the directory fresh: every job with this
            # cluster's names there is this start's, an id sbatch had no
            # time to print included.
            _cancel_submitted(submitted, report, sweep=(name, directory))
            raise
    try:
        cluster.host, cluster.port = wait_for_master(cluster, master_id, deadline, report)
        report(f"the master listens on {cluster.host}:{cluster.port}")
        if array is not None:
            cluster.workers = wait_for_workers(cluster, *array, deadline, report, master_id)
    except BaseException:
        _cancel_submitted(submitted, report)
        raise
    address.started((cluster.host, cluster.port))
    _started[directory] = cluster
    return cluster


def _prepare(
    cluster: SlurmCluster,
    nworkers: int,
    slots: int,
    partition: str | None,
    time: str | None,
    account: str | None,
    extra_worker: list[str],
    worker_service_args: Sequence[str],
    docker_image: str | None,
    docker_args: str,
    secret_file: str | os.PathLike[str] | None,
    grace: float,
    logs: tuple[int, int],
) -> Setup:
    """Refuse a name already running; make its directory afresh, with how
    its workers are started."""
    name, directory = cluster.name, cluster.directory
    running = our_jobs(name, directory)
    if running:
        raise LaunchError(
            f"cluster {name!r} is already running (SLURM jobs "
            f"{', '.join(sorted({j.base_id for j in running}))}); stop it first "
            f"(cw slurm stop --name {name}) or choose another name (--name)"
        )
    fresh_directory(directory)
    settings = ScriptSettings(
        cluster=name,
        state_dir=str(directory),
        python=sys.executable,
        pythonpath=_pythonpath(),
        secret_file=_secret_path(secret_file),
        partition=partition,
        time=time,
        account=account,
        extra_worker_options=tuple(worker_service_args),
        log_size=logs[0],
        log_files=logs[1],
    )
    docker = Docker(docker_image, docker_args) if docker_image else None
    setup = Setup(settings, slots, grace, extra_worker, docker)
    setup.save(directory)
    cluster.secret_file = settings.secret_file
    return setup


def _secret_path(secret_file: str | os.PathLike[str] | None) -> str | None:
    """The secret file every job reads, made now (before any job races to).
    A secret given in $CWTX_SECRET reaches the jobs in their environment."""
    load_secret(secret_file)
    if secret_file is None and os.environ.get("CWTX_SECRET"):
        return None
    return str(Path(secret_source(secret_file)).absolute())


def _cancel_submitted(
    ids: list[str], report: Report, sweep: tuple[str, Path] | None = None
) -> None:
    """What a failed (or interrupted) start or add submitted, and only that,
    is cancelled; a second Ctrl-C or a SIGTERM meanwhile is ignored.  With
    ``sweep`` (name, directory), also the cluster's jobs there that sbatch
    submitted but was interrupted before it said so: only under the
    cluster's lock, in a directory made afresh."""
    with _signals_ignored(), suppress(LaunchError):  # the error that brought us here says more
        if sweep is not None:
            ids = sorted({*ids, *(j.base_id for j in our_jobs(*sweep))}, key=int)
        if ids:
            report(f"cancelling what was submitted (SLURM jobs {', '.join(ids)})")
            _stop_jobs(ids)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM do nothing for the block (in the main thread, where
    Python runs its handlers; other threads never get KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.signal(s, lambda signum, frame: None) for s in held}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _sbatch(
    script: str, options: list[str], submitted: list[str], directory: Path, role: str
) -> str:
    """sbatch, and the id written down at once, for stop and for cleanup."""
    job_id = slurm.sbatch(script, options)
    submitted.append(job_id)
    record_job(directory, role, job_id)
    return job_id


def _submitted(script: str, options: Sequence[str]) -> str:
    """The script, saying how it was submitted: options on sbatch's command
    line override its ``#SBATCH`` lines, and the saved copy shows them."""
    return script + f"# submitted with: sbatch --parsable {shlex.join(options)}\n".replace(
        " \n", "\n"
    )


def _submit_array(
    cluster: SlurmCluster,
    setup: Setup,
    n: int,
    report: Report,
    submitted: list[str],
    slots: int | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[str, int]:
    """Submit ``n`` workers as one job array: (its id, n); ``extra``: more
    cw-worker options for these."""
    settings = setup.settings
    if extra:
        settings = replace(settings, extra_worker_options=(*settings.extra_worker_options, *extra))
    script = worker_script(settings, slots or setup.slots, setup.grace, setup.docker)
    options = [f"--array=0-{n - 1}", *setup.worker_args]
    script = _submitted(script, options)
    array_id = _sbatch(script, options, submitted, cluster.directory, "workers")
    (cluster.directory / f"workers-{array_id}.sh").write_text(script)
    report(f"submitted {n} workers as SLURM job array {array_id}")
    return array_id, n


def _submit_workers(
    cluster: SlurmCluster,
    n: int,
    slots: int | None,
    timeout: float,
    report: Report,
    extra: tuple[str, ...] = (),
) -> list[str]:
    if n < 1:
        raise ValueError(f"add at least one worker, not {n}")
    _check_timeout(timeout)
    submitted: list[str] = []
    with locked(cluster.directory, report):
        master = _check_master(cluster)
        setup = Setup.load(cluster.directory)
        cluster.secret_file = setup.settings.secret_file
        deadline = clock() + timeout
        before = {j.base_id for j in cluster.jobs()}
        try:
            array_id, _ = _submit_array(cluster, setup, n, report, submitted, slots, extra)
        except BaseException:
            late = [j.base_id for j in cluster.jobs() if j.base_id not in before]
            _cancel_submitted([*submitted, *late], report)
            raise
    try:
        return wait_for_workers(cluster, array_id, n, deadline, report, master.id)
    except BaseException:
        _cancel_submitted(submitted, report)
        raise


def _check_master(cluster: SlurmCluster) -> Job:
    """The cluster's running master job (its address into ``cluster``), or
    a LaunchError saying there is none."""
    found = read_address_file(cluster.directory / "master.address")
    master = _master_job(cluster.name, cluster.directory)
    if found is None or master is None or master.state != "RUNNING":
        # An address file outlives a master killed outright: trust SLURM.
        raise LaunchError(
            f"cluster {cluster.name!r} has no master running"
            + (f" (its job {master.id} is {why(master)})" if master else "")
            + f"; start one with: cw slurm start --name {cluster.name}"
        )
    cluster.host, cluster.port = found
    return master


def _master_job(name: str, directory: Path) -> Job | None:
    """Cluster ``name``'s master job, if SLURM still lists it."""
    for job in our_jobs(name, directory):
        if job.name == job_name(name, "master") and job.state not in slurm.ENDED:
            return job
    return None


def add(
    n: int,
    name: str | None = None,
    *,
    slots: int | None = None,
    timeout: float = START_TIMEOUT,
    state_dir: str | os.PathLike[str] | None = None,
    report: Report = _quiet,
    worker_service_args: Sequence[str] = (),
) -> list[str]:
    """Add ``n`` workers to the running cluster ``name`` (by default the one
    :func:`which_cluster` finds); their names.  ``worker_service_args`` go
    to these workers' ``cw-worker`` after the cluster's own (``--resources
    gpu=2`` for GPU nodes)."""
    name = _named(name, state_dir)
    directory = cluster_dir(name, state_dir)
    cluster = _started.get(directory) or SlurmCluster(name, directory)
    names = _submit_workers(cluster, n, slots, timeout, report, tuple(worker_service_args))
    cluster.workers += names
    return names


def stop(
    name: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    *,
    grace: float | None = None,
    report: Report = _quiet,
) -> list[str]:
    """Stop cluster ``name``: the workers leave gracefully (SIGINT), then
    the master; any job that will not go is cancelled.  Only jobs with this
    cluster's names, of this user, are touched.  Returns the job ids.  By
    default the cluster :func:`which_cluster` finds."""
    name = _named(name, state_dir)
    directory = cluster_dir(name, state_dir)
    with locked(directory, report):
        return _stop_locked(name, directory, grace, report)


def _stop_locked(name: str, directory: Path, grace: float | None, report: Report) -> list[str]:
    cluster = _started.pop(directory, None)
    if cluster is not None:
        address.stopped((cluster.host, cluster.port))
    if grace is None:
        with suppress(LaunchError):
            grace = Setup.load(directory).grace
    stopped = _cancel(name, directory, GRACE if grace is None else grace, report)
    for leftover in ("master.address", "jobs", "cluster.json"):
        (directory / leftover).unlink(missing_ok=True)
    return stopped


def _cancel(
    name: str, directory: Path, grace: float | None = None, report: Report = _quiet
) -> list[str]:
    """Workers first, then the master: each is asked to leave (SIGINT to the
    batch shell, which is the worker), and cancelled if it has not left in
    time.  Pending jobs are simply cancelled.  With ``grace`` None, all are
    cancelled at once (a start that failed).  Whatever goes wrong on the way
    (squeue busy, a job ending as we signal it), every job is cancelled."""
    jobs = our_jobs(name, directory)
    ids = sorted({j.base_id for j in jobs}, key=int)
    try:
        if grace is not None:
            _leave_gracefully(jobs, job_name(name, "workers"), grace + LEAVE_TIMEOUT, report)
            _leave_gracefully(jobs, job_name(name, "master"), 15.0, report)
    finally:
        _stop_jobs(ids)
    return ids


def _leave_gracefully(jobs: list[Job], name: str, wait: float, report: Report) -> None:
    group = [j for j in jobs if j.name == name]
    if not group:
        return
    report(f"stopping {len(group)} {name} job(s)")
    pending = [j.id for j in group if j.state != "RUNNING"]
    running = [j.id for j in group if j.state == "RUNNING"]
    with suppress(LaunchError):  # one may have just ended
        slurm.scancel(pending)
    with suppress(LaunchError):
        slurm.scancel(running, signal="INT", batch=True)
    wait_gone([j.id for j in group], wait)


def _stop_jobs(ids: Sequence[str], wait: float = 30.0) -> None:
    """Cancel these jobs outright, and wait until squeue no longer lists them."""
    if not ids:
        return
    with suppress(LaunchError):
        slurm.scancel(list(ids))
    if not wait_gone(ids, wait):
        raise LaunchError(f"SLURM jobs {', '.join(ids)} are still listed {wait:g} s after scancel")


# -- waiting ---------------------------------------------------------------------


# -- finding a cluster -------------------------------------------------------------


#: Clusters this process started, by directory, so stop() can forget them.
_started: dict[Path, SlurmCluster] = {}


def master_host(name: str | None = None, state_dir: str | os.PathLike[str] | None = None) -> str:
    """Where cluster ``name``'s master is (the seed's ``master_host()``), as
    ``NODE:PORT`` from its address file, which every cwtx client takes as
    its host: the seed's ``ClientThread(callback, master_host())`` works
    although the master's port is not 5494.  Only the node (``squeue``'s)
    while a running master has not yet written its file.  A master still
    pending is a LaunchError giving SLURM's reason, never an empty host; so
    is a cluster that does not run."""
    name = _named(name, state_dir)
    directory = cluster_dir(name, state_dir)
    found = read_address_file(directory / "master.address")
    job = _master_job(name, directory)
    if job is not None and job.state == "RUNNING":
        if found is not None:
            return format_address(*found)
        if job.nodes and job.nodes not in ("(null)", "n/a"):
            return job.nodes  # it runs, but has not written its address yet
    if job is not None:
        raise LaunchError(
            f"the master of cwtx cluster {name!r} (SLURM job {job.id}) is {why(job)}, "
            f"so it has no host yet{advice(job)}"
        )
    stale = f" (its address file {directory / 'master.address'} is stale)" if found else ""
    raise LaunchError(
        f"no cwtx cluster named {name!r} runs for user {slurm.user()}{stale}; "
        f"start one with: cw slurm start -n N --name {name}"
    )


def which_cluster(state_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The cluster meant when none is named, as clients choose it:
    ``$CWTX_CLUSTER``, else ``default`` if it runs, else the only one that
    runs; None if none runs.  Several running and none of them ``default``
    is a ValueError naming them: which one is not ours to guess."""
    wanted = os.environ.get("CWTX_CLUSTER")
    if wanted:
        return check_name(wanted)
    base = state_base(state_dir)
    written = published(base)
    if DEFAULT_NAME in written or len(written) == 1:
        return DEFAULT_NAME if DEFAULT_NAME in written else written[0]
    if not written:
        return None
    # Several: only now ask SLURM which still run (a master killed outright
    # leaves its address file behind).
    running = _running_masters(base, written)
    if len(running) == 1:
        return running[0]
    stale = sorted(set(written) - set(running))
    raise ValueError(
        f"several cwtx SLURM clusters run ({', '.join(running)}) and none is "
        f"{DEFAULT_NAME!r}: set $CWTX_CLUSTER to one of them, or name it"
        if running
        else f"no cwtx SLURM cluster runs; stale address files of: {', '.join(stale)}"
    )


def _running_masters(base: Path, names: list[str]) -> list[str]:
    """Which of these clusters' masters SLURM lists as running (all of them
    if SLURM cannot be asked)."""
    try:
        jobs = slurm.squeue(names=[job_name(n, "master") for n in names])
    except LaunchError:
        return names
    return [
        n
        for n in names
        if any(
            j.name == job_name(n, "master")
            and j.state == "RUNNING"
            and Path(j.workdir) == (base / n).absolute()
            for j in jobs
        )
    ]


def _named(name: str | None, state_dir: str | os.PathLike[str] | None) -> str:
    return name or which_cluster(state_dir) or DEFAULT_NAME


def recorded_master(state_dir: str | os.PathLike[str] | None = None) -> tuple[str, int] | None:
    """For clients given no host: where the master of :func:`which_cluster`
    listens, from its address file; None if no cluster runs.  A ValueError
    if ``$CWTX_CLUSTER`` names a cluster with no master listening."""
    name = which_cluster(state_dir)
    if name is None:
        return None
    base = state_base(state_dir)
    found = read_address_file_quietly(cluster_dir(name, base) / "master.address")
    if found is None:
        raise ValueError(
            f"$CWTX_CLUSTER: no cwtx SLURM cluster named {name!r} has a master "
            f"listening (in {base}); running: {', '.join(published(base)) or 'none'}"
        )
    return found


def clusters(state_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, int]]:
    """This user's clusters (their directories), each with how many of its
    SLURM jobs are in each state (``cw slurm list``)."""
    base = state_base(state_dir)
    found = {}
    for directory in sorted(p for p in base.glob("*") if (p / "master.sh").exists()):
        states: dict[str, int] = {}
        for job in our_jobs(directory.name, directory.absolute()):
            states[job.state] = states.get(job.state, 0) + 1
        found[directory.name] = states
    return found


def status(name: str | None = None, state_dir: str | os.PathLike[str] | None = None) -> dict:
    """Cluster ``name``'s SLURM jobs, and its master's own status (or why
    there is none); by default the cluster :func:`which_cluster` finds."""
    name = _named(name, state_dir)
    directory = cluster_dir(name, state_dir)
    jobs = our_jobs(name, directory)
    result: dict[str, Any] = {
        "name": name,
        "directory": str(directory),
        "jobs": [j.__dict__ | {"role": j.name.rsplit("-", 1)[-1]} for j in jobs],
        "master": None,
    }
    try:
        found = read_address_file(directory / "master.address")
    except ValueError as e:
        result["error"] = str(e)
        return result
    if found is None:
        result["error"] = "the master has not written its address (is it running?)"
        return result
    result["address"] = f"{found[0]}:{found[1]}"
    try:
        secret_file = Setup.load(directory).settings.secret_file
        result["master"] = query_status(*found, secret=load_secret(secret_file))
    except (OSError, LaunchError) as e:
        result["error"] = f"the master at {found[0]}:{found[1]} does not answer: {e}"
    return result


@contextmanager
def allocate(nworkers: int = 2, **kwargs: Any) -> Iterator[SlurmCluster]:
    """``with allocate(4) as cluster:`` a SLURM cluster for the block.

    Unless given a ``name`` it uses a fresh one, so that it never collides
    with ``cw slurm start`` or another program's allocation."""
    fresh = "name" not in kwargs
    kwargs.setdefault("name", f"alloc-{uuid.uuid4().hex[:8]}")
    cluster = start(nworkers, **kwargs)  # a failure keeps the logs it quotes
    try:
        yield cluster
    except BaseException:
        fresh = False  # keep the logs of a block that failed
        raise
    finally:
        cluster.stop()
        if fresh:  # its own directory goes with it; give a name to keep it
            shutil.rmtree(cluster.directory, ignore_errors=True)


__all__ = [
    "DEFAULT_NAME",
    "START_TIMEOUT",
    "SlurmCluster",
    "add",
    "allocate",
    "cluster_dir",
    "clusters",
    "default_state_dir",
    "master_host",
    "recorded_master",
    "start",
    "status",
    "stop",
    "which_cluster",
]
