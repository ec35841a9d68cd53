"""
Run a master and workers as local processes (``cw local start``).

Real ``twistd -n`` processes, each with a pid file in a run directory;
``stop`` reads those pid files, it never searches the process table.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cwtx import logfile
from cwtx._errors import LaunchError
from cwtx.client import address
from cwtx.client.address import PORT, read_address_file_quietly, write_address_file
from cwtx.client.status import query_status
from cwtx.launch.procs import (
    cmdline,
    is_running,
    log_tail,
    logged_error,
    read_pid,
    terminate,
    twistd_argv,
)

#: Seconds ``start`` waits for the master to listen and the workers to register.
START_TIMEOUT = 60.0


def default_run_dir() -> Path:
    """Where pid files and logs go: $CWTX_RUN_DIR, else ~/.local/state/cwtx/local."""
    env = os.environ.get("CWTX_RUN_DIR")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "cwtx" / "local"


def own_run_dir(port: int) -> Path:
    """The run directory of a cluster started from Python: ``port-N`` in
    the default one (a fresh ``any-port-*`` for port 0), so that a script
    runs beside ``cw local start`` and beside a script on another port."""
    root = default_run_dir()
    if port:
        return root / f"port-{port}"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="any-port-", dir=root))


def twistd_command(plugin: str, name: str, run_dir: Path, *args: str) -> list[str]:
    """twistd in the foreground, its pid in the run directory; it logs
    where :func:`_spawn`'s environment says (``cwtx.logfile``: bounded)."""
    return [
        *twistd_argv(),
        "-n",
        "--pidfile",
        str(run_dir / f"{name}.pid"),
        "--logger",
        "cwtx.logfile.observer",
        plugin,
        *args,
    ]


@dataclass
class LocalCluster:
    """A master and workers on this machine; ``stop()`` ends them all."""

    host: str
    port: int
    run_dir: Path
    nworkers: int
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    slots: int = 1
    worker_args: Sequence[str] = ()
    #: Each process's log rotates at this size, with this many rotated files kept.
    log_size: int = logfile.DEFAULT_SIZE
    log_files: int = logfile.DEFAULT_FILES

    def status(self) -> dict[str, object]:
        return query_status(self.host, self.port)

    def add_workers(
        self,
        n: int,
        slots: int | None = None,
        timeout: float = START_TIMEOUT,
        worker_args: Sequence[str] = (),
    ) -> list[str]:
        """Start n more workers, wait until they have registered; their
        names.  ``worker_args`` go to these workers, after the cluster's
        own (``--resources gpu=1``)."""
        names = [self._spawn_worker(slots, worker_args) for _ in range(n)]
        _wait_for_workers(self, names, timeout)
        return names

    def _spawn_worker(self, slots: int | None = None, extra: Sequence[str] = ()) -> str:
        i = self.nworkers
        self.nworkers += 1
        name = f"local-{i}"
        self._procs.append(
            _spawn(
                self.run_dir,
                f"worker-{i}",
                (self.log_size, self.log_files),
                twistd_command(
                    "cw-worker",
                    f"worker-{i}",
                    self.run_dir,
                    "--master",
                    f"{self.host}:{self.port}",
                    "--slots",
                    str(slots or self.slots),
                    "--name",
                    name,
                    *self.worker_args,
                    *extra,
                ),
            )
        )
        return name

    def worker_pid(self, name: str) -> int | None:
        """The pid of worker ``local-N`` (from its pid file), if it runs."""
        pid = read_pid(self.run_dir / f"worker-{name.rsplit('-', 1)[-1]}.pid")
        return pid if pid is not None and is_running(pid) else None

    def stop(self) -> list[str]:
        """Stop the master and workers; returns the names it stopped."""
        address.stopped((self.host, self.port))
        if _started.get(self.run_dir.resolve()) is self:
            del _started[self.run_dir.resolve()]
        stopped = _stop_pidfiles(self.run_dir)
        for proc in self._procs:
            if proc.poll() is None:  # it never wrote its pid file
                terminate(proc.pid)
            proc.wait()
        self._procs.clear()
        return stopped

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _child_environment() -> dict[str, str]:
    """This process's environment, with this cwtx first on PYTHONPATH: the
    master and workers must run the same cwtx as the process launching them
    (and twistd then finds this checkout's plugins too)."""
    import cwtx

    here = str(Path(cwtx.__file__).resolve().parent.parent)  # where the package lies
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([here, *paths])}


def _spawn(
    run_dir: Path, name: str, log_bounds: tuple[int, int], command: Sequence[str]
) -> subprocess.Popen[bytes]:
    """Start ``command`` as ``name``: its output to ``NAME.out``, its log
    to ``NAME.log`` in the run directory, rotated at ``log_bounds``' size
    with so many rotated files kept (cwtx.logfile)."""
    log = logfile.LogSettings(str(run_dir / f"{name}.log"), *log_bounds)
    out = open(run_dir / f"{name}.out", "ab")
    try:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={**_child_environment(), **log.environment()},
        )

    finally:
        out.close()


def _wait_for_port(
    master: subprocess.Popen[bytes], port_file: Path, rundir: Path, timeout: float
) -> int:
    """The port the master listens on, once it has written it."""
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if master.poll() is not None:
            reason = logged_error(rundir / "master.log")
            if reason:
                raise LaunchError(f"{reason} (the master's log: {rundir / 'master.log'})")
            raise LaunchError(
                f"the master exited with code {master.returncode}; its log "
                f"({rundir / 'master.log'}):\n{log_tail(rundir / 'master.log')}"
                f"\n{log_tail(rundir / 'master.out')}"
            )
        if time.monotonic() > deadline:
            raise LaunchError(f"the master did not listen within {timeout:g} s")
        time.sleep(0.02)
    return int(port_file.read_text().strip())


def _wait_for_workers(cluster: LocalCluster, names: list[str], timeout: float) -> None:
    """Poll the master's status until every named worker has registered."""
    deadline = time.monotonic() + timeout
    missing = set(names)
    while True:
        try:
            missing = set(names) - {w["name"] for w in cluster.status()["workers"]}  # type: ignore[index,union-attr]
        except OSError:
            pass
        if not missing:
            return
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"  {p.name}:\n{log_tail(p)}" for p in sorted(cluster.run_dir.glob("worker-*.log"))
            )
            raise LaunchError(
                f"{len(missing)} of {len(names)} workers did not register with the master at "
                f"{cluster.host}:{cluster.port} within {timeout:g} s; worker logs "
                f"in {cluster.run_dir}:\n{logs}"
            )
        time.sleep(0.05)


def start(
    nworkers: int = 2,
    port: int = PORT,
    *,
    slots: int = 1,
    run_dir: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    timeout: float = START_TIMEOUT,
    master_args: Sequence[str] = (),
    worker_args: Sequence[str] = (),
    log_size: int | str = logfile.DEFAULT_SIZE,
    log_files: int = logfile.DEFAULT_FILES,
) -> LocalCluster:
    """
    Start a master and ``nworkers`` workers on this machine.

    Returns once the master listens and every worker has registered; raises
    LaunchError (and stops what it started) after ``timeout`` seconds.  Use
    ``port=0`` for any free port (read it from the result's ``port``).
    Without ``run_dir`` it gets a directory of its own, by port (see
    :func:`own_run_dir`), beside ``cw local start``'s.  Each process logs
    to ``NAME.log`` there, rotated at ``log_size`` (bytes, or ``10M``) with
    ``log_files`` rotated files kept (``cwtx.logfile``).
    """
    if nworkers < 0:
        raise ValueError(f"nworkers must be 0 or more, not {nworkers}")
    rundir = Path(run_dir) if run_dir is not None else own_run_dir(port)
    rundir.mkdir(parents=True, exist_ok=True)
    master_pid = read_pid(rundir / "master.pid")
    if master_pid is not None and is_running(master_pid):
        raise LaunchError(
            f"a master is already running from {rundir} (pid {master_pid}); "
            "stop it first (cw local stop)"
        )
    port_file = rundir / "master.port"
    port_file.unlink(missing_ok=True)
    listen = ["--listen", f"tcp:{port}:interface={host}", "--port-file", str(port_file)]
    size, files = logfile.log_size(log_size), logfile.log_files(log_files)
    command = twistd_command("cw-master", "master", rundir, *listen, *master_args)
    master = _spawn(rundir, "master", (size, files), command)
    cluster = LocalCluster(host, port, rundir, 0, [master], slots, tuple(worker_args), size, files)
    try:
        deadline = time.monotonic() + timeout
        cluster.port = _wait_for_port(master, port_file, rundir, timeout)
        # For clients that are not told where the master is (cwtx.client.address).
        write_address_file(rundir / "master.address", host, cluster.port)
        names = [cluster._spawn_worker() for _ in range(nworkers)]
        _wait_for_workers(cluster, names, max(1.0, deadline - time.monotonic()))
    except BaseException:
        cluster.stop()
        raise
    address.started((cluster.host, cluster.port))
    _started[rundir.resolve()] = cluster
    return cluster


#: Clusters this process started, by run directory, so stop() can reap them.
_started: dict[Path, LocalCluster] = {}


def stop(run_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Stop the master and workers whose pid files are in ``run_dir``
    (default: every cluster this process started, and nothing else: a
    ``cwtx.stop()`` in a script's clean-up must not stop ``cw local
    start``'s cluster, ``cw local stop`` does that).

    Workers go first, then the master.  Returns the names it stopped.
    """
    if run_dir is None:
        return [name for rundir in list(_started) for name in stop(rundir)]
    rundir = Path(run_dir)
    ours = _started.pop(rundir.resolve(), None)
    if ours is not None:
        return ours.stop()
    return _stop_pidfiles(rundir)


def _stop_pidfiles(rundir: Path) -> list[str]:
    stopped = []
    pidfiles = sorted(rundir.glob("worker-*.pid")) + [rundir / "master.pid"]
    for pidfile in pidfiles:
        pid = read_pid(pidfile)
        if pid is None:
            continue
        # A pid file can outlive its process and the pid be reused: only
        # signal a process that is still a cwtx twistd.
        if is_running(pid) and "cw-" in cmdline(pid):
            terminate(pid)
            stopped.append(pidfile.stem)
        pidfile.unlink(missing_ok=True)
    (rundir / "master.port").unlink(missing_ok=True)
    (rundir / "master.address").unlink(missing_ok=True)
    return stopped


def recorded_master(run_dir: str | os.PathLike[str] | None = None) -> tuple[str, int] | None:
    """The address of the master a running ``cw local start`` recorded in
    ``run_dir`` (by default the default run directory), if it still runs."""
    rundir = Path(run_dir) if run_dir is not None else default_run_dir()
    pid = read_pid(rundir / "master.pid")
    if pid is None or not is_running(pid):
        return None
    return read_address_file_quietly(rundir / "master.address")


@contextmanager
def allocate(nworkers: int = 2, port: int = 0, **kwargs: object) -> Iterator[LocalCluster]:
    """
    ``with allocate(4) as cluster:`` a local cluster for the block.

    Unless ``run_dir`` is given it uses a fresh temporary directory (so it
    never collides with ``cw local start``), removed afterwards.
    """
    temporary = None
    if kwargs.get("run_dir") is None:
        # Under $CWTX_RUN_DIR when set, so leftovers can be found and stopped.
        parent = os.environ.get("CWTX_RUN_DIR")
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        temporary = tempfile.mkdtemp(prefix="cwtx-local-", dir=parent or None)

        kwargs["run_dir"] = temporary
    try:
        cluster = start(nworkers, port, **kwargs)  # type: ignore[arg-type]
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
