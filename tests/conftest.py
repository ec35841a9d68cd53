"""
Shared fixtures.  Subprocesses (twistd masters and workers, and their slot
children) import this checkout's cwtx, whatever else is installed.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)

# A throwaway shared secret for this test run (subprocesses inherit it), so
# the suite never reads or creates the user's ~/.config/cwtx/secret.
_SECRET_DIR = tempfile.mkdtemp(prefix="cwtx-test-secret-")
atexit.register(shutil.rmtree, _SECRET_DIR, ignore_errors=True)
_SECRET_FILE = os.path.join(_SECRET_DIR, "secret")
with open(os.open(_SECRET_FILE, os.O_WRONLY | os.O_CREAT, 0o600), "w") as _f:
    _f.write(secrets.token_hex(32))
os.environ["CWTX_SECRET_FILE"] = _SECRET_FILE
os.environ.pop("CWTX_SECRET", None)
# Local clusters the tests start keep their pid files here, never in the
# user's own run directory; and no master the user runs is found by accident.
os.environ["CWTX_RUN_DIR"] = os.path.join(_SECRET_DIR, "run")
os.environ.pop("CWTX_MASTER", None)
# cwtx.start would pick SLURM wherever sbatch is installed (as in CI): the
# tests choose their launcher themselves, and SLURM clusters they start keep
# their files here.
os.environ["CWTX_LAUNCHER"] = "local"
os.environ["CWTX_SLURM_DIR"] = os.path.join(_SECRET_DIR, "slurm")
os.environ.pop("CWTX_CLUSTER", None)

import cloudpickle  # noqa: E402

import cwtx  # noqa: E402
import tests  # noqa: E402
from cwtx.client import reactor_thread as _reactor_thread  # noqa: E402
from cwtx.launch.local import LocalCluster  # noqa: E402
from cwtx.launch.procs import read_pid, twistd_argv  # noqa: E402

assert Path(cwtx.__file__).resolve().parent == ROOT / "cwtx", cwtx.__file__

# Jobs defined in test modules travel by value, as a user's script's do: a
# slot child never imports the test suite (nor pytest, nor this conftest).
cloudpickle.register_pickle_by_value(tests)


def gated(gate: str, value=None, runs: str | None = None):
    """A job: append its pid to the file ``runs`` (one line per execution),
    wait until the file ``gate`` exists (at most 120 s), return ``value``."""
    import os as _os
    import time as _time

    if runs:
        with open(runs, "a") as f:
            f.write(f"{_os.getpid()}\n")
    deadline = _time.monotonic() + 120
    while not _os.path.exists(gate):
        if _time.monotonic() > deadline:
            raise TimeoutError(f"the gate {gate} never opened")
        _time.sleep(0.01)
    return value


def runs(path: Path) -> list[int]:
    """The pids that ``gated`` jobs wrote to ``path``, one per execution."""
    try:
        return [int(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process_and_open_no_socket(request, monkeypatch):
    """A test not marked e2e must run in this process, on a Clock: any real
    socket or child process it tries is an error naming the test."""
    if request.node.get_closest_marker("e2e"):
        return

    def refuse(what):
        def refused(*args, **kwargs):
            raise AssertionError(
                f"{request.node.nodeid} {what} but is not marked e2e "
                "(pytest -m 'not e2e' must touch no real process or socket)"
            )

        return refused

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, refuse("opened a socket"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("started a process"))
    for name in ("fork", "posix_spawn", "posix_spawnp", "execv", "execve"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse("started a process"))


def blocking(fn, *args, timeout: float = 60.0, **kwargs):
    """Run fn (may return a Deferred or coroutine) in the reactor thread; wait."""
    return _reactor_thread.blocking(fn, *args, timeout=timeout, **kwargs)


class SyncClient:
    """A Deferred client driven from the test thread, each call with a timeout."""

    def __init__(self, cluster: LocalCluster, **kwargs) -> None:
        self.client = blocking(cwtx.connect, cluster.host, cluster.port, **kwargs)

    def submit(self, fn, *args, **kwargs):
        """A concurrent Future for the job's Deferred."""
        return _reactor_thread.call(self._deferred, fn, args, kwargs)

    def _deferred(self, fn, args, kwargs):
        return self.client.submit(fn, *args, **kwargs)

    def run(self, fn, *args, timeout: float = 60.0, **kwargs):
        return self.submit(fn, *args, **kwargs).result(timeout)

    def close(self) -> None:
        blocking(self.client.close)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    """A master and two single-slot workers: real twistd processes."""
    run_dir = tmp_path_factory.mktemp("cluster")
    with cwtx.local.allocate(2, run_dir=run_dir) as c:
        yield c


@pytest.fixture
def executor(cluster):
    """A ClusterExecutor on the module's ``cluster``; after the test every job it
    still has is cancelled or killed (a running one would hold up exit)."""
    ex = cwtx.ClusterExecutor(cluster.host, cluster.port)
    yield ex
    # Kill what still runs too: at exit the interpreter waits for every job.
    ex.shutdown(wait=True, cancel_futures=True, kill_running=True)


@pytest.fixture
def client(cluster) -> Iterator[SyncClient]:
    c = SyncClient(cluster)
    try:
        yield c
    finally:
        c.close()


def rss_mib(cluster: LocalCluster) -> float:
    """The resident memory of a local cluster's master, in MiB."""
    pid = read_pid(cluster.run_dir / "master.pid")
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def wait_until(condition, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def spawn_twistd(plugin: str, *args: str, log: Path, pidfile: Path | None = None):
    """``twistd -n PLUGIN ARGS``, logging to ``log``; the caller stops it by pid."""
    return subprocess.Popen(
        [
            *twistd_argv(),
            "-n",
            "--pidfile",
            str(pidfile or ""),
            "--logfile",
            str(log),
            plugin,
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_and_restart_master(cluster: LocalCluster, *master_args: str):
    """kill -9 the cluster's master, start a new one on the same port."""
    run = cluster.run_dir
    os.kill(int((run / "master.pid").read_text()), signal.SIGKILL)
    cluster._procs[0].wait(10)
    (run / "master.pid").unlink()
    restarted = spawn_twistd(
        "cw-master",
        "--listen",
        f"tcp:{cluster.port}:interface=127.0.0.1",
        *master_args,
        log=run / "master2.log",
        pidfile=run / "master.pid",
    )
    cluster._procs.append(restarted)  # cluster.stop() stops it too
    return restarted
