"""
A cluster that runs for weeks (issue 15), on real processes: what cwtx
itself writes stays bounded; a job that eats memory is killed, and
children that leak are replaced.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import cwtx
from cwtx.launch.procs import terminate
from tests.conftest import ROOT, gated, runs, wait_until

pytestmark = pytest.mark.e2e


def test_cw_local_logs_rotate_with_so_many_files_kept(tmp_path):
    """Debug logs of a thousand jobs (about a megabyte) in 64 KiB files,
    two rotated ones kept: the master's and each worker's."""
    with cwtx.local.allocate(
        1,
        port=0,
        run_dir=tmp_path,
        master_args=["--log-level", "debug"],
        worker_args=["--log-level", "debug"],
        log_size="64K",
        log_files=2,
    ) as cluster:
        with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
            assert list(ex.map(abs, range(-1000, 0), chunksize=1)) == list(range(1000, 0, -1))
        names = {p.name for p in tmp_path.iterdir() if ".log" in p.name}
    for process in ("master", "worker-0"):
        assert {f"{process}.log", f"{process}.log.1", f"{process}.log.2"} <= names
        assert f"{process}.log.3" not in names
    for name in names:
        assert (tmp_path / name).stat().st_size <= 64 * 1024 + 4096, name


def test_twistd_logs_through_the_bounded_observer(tmp_path):
    """``twistd --logger cwtx.logfile.observer``, as docs/operations.md says."""
    import subprocess

    from cwtx.launch.procs import twistd_argv

    log = tmp_path / "logs" / "master.log"
    env = {**os.environ, "CWTX_LOG_FILE": str(log), "CWTX_LOG_SIZE": "64K", "CWTX_LOG_FILES": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    port_file = tmp_path / "port"
    master = subprocess.Popen(
        [*twistd_argv(), "-n", "--pidfile=", "--logger", "cwtx.logfile.observer", "cw-master",
         "--listen", "tcp:0:interface=127.0.0.1", "--port-file", str(port_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), what="listening")
        wait_until(lambda: log.exists() and "listening" in log.read_text(), what="its log")
    finally:
        terminate(master.pid)
        out = master.communicate(timeout=30)[0]
    assert b"listening" not in out  # the file, not standard output


def test_a_bad_log_setting_is_one_line(tmp_path):
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "cwtx._cli", "local", "start", "--log-size", "lots",
         "--run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "argument --log-size: log size: 'lots' is not an amount" in done.stderr
    assert not list(Path(tmp_path).glob("*.pid"))


MiB = 1 << 20


def hog(pid_file):
    """Allocate (and touch) 10 MiB at a time, for ever."""
    import os

    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    held = []
    while True:
        held.append(bytearray(b"\1") * (10 << 20))


def ask_for(size):
    """One allocation of ``size`` bytes (zeroed: touched), refused at once past
    the backstop; without it, the poll would kill the job as it zeroes them."""
    return len(bytearray(size))


def test_a_job_over_the_memory_limit_is_killed_and_the_other_slot_goes_on(tmp_path):
    gate, ran, pid_file = tmp_path / "gate", tmp_path / "ran", tmp_path / "hog.pid"
    with cwtx.local.allocate(
        1,
        run_dir=tmp_path,
        slots=2,
        worker_args=["--memory-limit", "200M"],
    ) as cluster:
        with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
            other = ex.submit(gated, str(gate), "other", runs=str(ran))
            wait_until(lambda: runs(ran), what="the other slot's job to start")
            eater = ex.submit(hog, str(pid_file))
            with pytest.raises(cwtx.JobMemoryError) as e:
                eater.result(timeout=60)
            assert isinstance(e.value, MemoryError)
            assert e.value.limit == 200 * MiB
            assert 200 * MiB < e.value.peak < 2048 * MiB
            assert "over the memory limit of 200 MiB per slot" in str(e.value)
            assert "(peak " in str(e.value) and "it was killed" in str(e.value)
            # The other slot is busy: the next job runs in the first, afresh.
            pid = ex.submit(os.getpid).result(timeout=60)
            assert pid not in (int(pid_file.read_text()), runs(ran)[0])
            # One allocation past the backstop fails in the job: memory too.
            with pytest.raises(cwtx.JobMemoryError, match="an allocation failed") as e:
                ex.submit(ask_for, 1536 * MiB).result(timeout=60)
            assert "ask_for" in e.value.remote_traceback
            gate.touch()
            assert other.result(timeout=60) == "other"
            assert len(runs(ran)) == 1  # it ran once, never killed
            assert ex.submit(abs, -1).result(timeout=60) == 1
    assert "memory limit 200 MiB per slot" in (tmp_path / "worker-0.log").read_text()


def pid_of(_):
    import os

    return os.getpid()


def test_max_jobs_per_child_replaces_the_child_after_so_many_jobs(tmp_path):
    with cwtx.local.allocate(
        1, run_dir=tmp_path, worker_args=["--max-jobs-per-child", "3"]
    ) as cluster:
        with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
            # All at once: the worker writes tasks ahead to its child.
            pids = list(ex.map(pid_of, range(7), chunksize=1, timeout=60))
    assert len(set(pids)) == 3, pids
    assert pids[:3] == [pids[0]] * 3 and pids[3:6] == [pids[3]] * 3 and pids[6] != pids[3]
    log = (tmp_path / "worker-0.log").read_text()
    assert "it ran 3 jobs (--max-jobs-per-child 3)" in log


_LEAKED: list = []


def leak():
    """Keep 40 MiB more at each call, as a leaky library would."""
    import os

    _LEAKED.append(bytearray(b"\1") * (40 << 20))
    return os.getpid(), len(_LEAKED)


def test_max_child_memory_replaces_a_leaking_child_between_jobs(tmp_path):
    with cwtx.local.allocate(
        1, run_dir=tmp_path, worker_args=["--max-child-memory", "100M"]
    ) as cluster:
        with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
            ends = [ex.submit(leak).result(timeout=60) for _ in range(6)]
    pids = [pid for pid, _ in ends]
    assert len(set(pids)) >= 2, ends
    for pid in set(pids):  # each child counts its leaks from 1, up to 3 at most
        counts = [n for p, n in ends if p == pid]
        assert counts == list(range(1, len(counts) + 1)) and len(counts) <= 3, ends
    log = (tmp_path / "worker-0.log").read_text()
    assert "(--max-child-memory 100 MiB)" in log


@pytest.mark.timeout(240)
def test_distinct_closures_leave_every_process_within_bounds(tmp_path):
    """Issue 15's soak at a reduced size (the full one: docs/performance.md):
    6,000 jobs, each a distinct closure over its own 16 KB, through caches
    of 4 MiB (some 250 such functions).  After warm-up no process grows by
    more than 15 MiB; with caches that never dropped a function, the master
    grew about 17 MiB and each worker's processes about 8 MiB per 1,000."""
    from benchmarks import procs
    from benchmarks.profile import processes
    from benchmarks.soak import buffered, closure
    from benchmarks.systems import cluster_processes

    caches = ["--function-cache", "4M"]
    with cwtx.local.allocate(
        2, port=0, run_dir=tmp_path, master_args=caches, worker_args=caches
    ) as cluster:
        with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
            jobs = iter(map(closure, range(6000)))
            for _ in buffered(ex, (next(jobs) for _ in range(1000)), 200):
                pass
            running = processes(cluster_processes(cluster))
            before = {role: procs.rss_mib(pid) for role, pid in running.items()}
            assert sum(buffered(ex, jobs, 200)) == 5000 * (16 * 1024) + sum(range(1000, 6000))
            after = {role: procs.rss_mib(pid) for role, pid in running.items()}
    growth = {role: round(after[role] - before[role], 1) for role in before}
    assert len(growth) == 6, growth  # client, master, 2 supervisors, 2 children
    assert max(growth.values()) <= 15, growth
