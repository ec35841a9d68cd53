"""
Fault injection on real processes: every job ends exactly once, with its
result, its exception, JobLost, JobTimeout or cancelled.  Nothing hangs.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import cwtx
from cwtx.client.status import query_status
from cwtx.launch.procs import is_running

from ..conftest import ROOT, gated, kill_and_restart_master, runs, wait_until

pytestmark = pytest.mark.e2e

#: Quick enough to notice a frozen worker within seconds; ten missed beats
#: before a peer counts as dead, so a loaded 2-core machine never trips it.
FAST_HEARTBEATS = ["--heartbeat-interval", "0.5", "--heartbeat-timeout", "5"]


@pytest.fixture
def cluster(tmp_path):
    """Two single-slot workers, no prefetch, quick heartbeats."""
    with cwtx.local.allocate(
        2, run_dir=tmp_path / "run", master_args=[*FAST_HEARTBEATS, "--prefetch", "0"]
    ) as c:
        yield c


def marked_job(marker: str, seconds: float, value):
    """Write our pid and our supervisor's to ``marker``, sleep, return value."""
    import os as _os
    import time as _time

    Path(marker + ".tmp").write_text(f"{_os.getpid()} {_os.getppid()}")
    _os.replace(marker + ".tmp", marker)
    _time.sleep(seconds)
    return value


def started(marker: Path) -> tuple[int, int]:
    wait_until(marker.exists, what=f"{marker.name} to start")
    child, supervisor = map(int, marker.read_text().split())
    return child, supervisor


def worker_names(cluster) -> list[str]:
    return sorted(w["name"] for w in query_status(cluster.host, cluster.port)["workers"])


# -- a worker lost while running a job -----------------------------------------------------


def test_supervisor_killed_job_retried_elsewhere_and_child_dies_too(cluster, executor, tmp_path):
    marker = tmp_path / "m"
    future = executor.submit(marked_job, str(marker), 2.0, "survived")
    child, supervisor = started(marker)
    os.kill(supervisor, signal.SIGKILL)
    assert future.result(60) == "survived"
    wait_until(lambda: not is_running(child), timeout=10, what="the orphaned child to die")
    assert len(worker_names(cluster)) == 1


def test_frozen_supervisor_declared_dead_and_job_retried(cluster, executor, tmp_path):
    marker = tmp_path / "m"
    future = executor.submit(marked_job, str(marker), 1.0, "thawed")
    _, supervisor = started(marker)
    os.kill(supervisor, signal.SIGSTOP)
    try:
        assert future.result(60) == "thawed"
        assert len(worker_names(cluster)) == 1
        assert "declared dead" in (cluster.run_dir / "master.log").read_text()
    finally:
        os.kill(supervisor, signal.SIGCONT)
    # Thawed, it notices it was dropped, reconnects, and serves again; what it
    # said on the dead connection was ignored (the job ended once).
    wait_until(lambda: len(worker_names(cluster)) == 2, what="the thawed worker to come back")
    assert executor.submit(abs, -3).result(60) == 3


def test_killed_child_job_retried_and_worker_keeps_serving(cluster, executor, tmp_path):
    marker = tmp_path / "m"
    future = executor.submit(marked_job, str(marker), 2.0, "again")
    child, _ = started(marker)
    marker.unlink()
    os.kill(child, signal.SIGKILL)
    assert future.result(60) == "again"
    assert len(worker_names(cluster)) == 2
    assert sorted(executor.map(abs, range(-4, 0), timeout=60)) == [1, 2, 3, 4]


def always_exits():
    os._exit(3)


def always_segfaults():
    import ctypes

    ctypes.string_at(0)


@pytest.mark.parametrize(
    ("job", "cause"), [(always_exits, "exit code 3"), (always_segfaults, "signal 11")]
)
def test_crashing_job_ends_as_job_lost_naming_attempts(cluster, executor, job, cause):
    future = executor.options(max_retries=2).submit(job)
    with pytest.raises(cwtx.JobLost) as info:
        future.result(60)
    attempts = info.value.attempts
    assert len(attempts) == 3
    assert {a["worker"] for a in attempts} == {"local-0", "local-1"}
    assert all(cause in a["cause"] for a in attempts)
    assert "max_retries=2" in str(info.value)
    # The workers restarted their children and carry on.
    assert sorted(executor.map(abs, range(-4, 0), timeout=60)) == [1, 2, 3, 4]
    assert len(worker_names(cluster)) == 2


def test_master_default_max_retries(tmp_path):
    with cwtx.local.allocate(1, run_dir=tmp_path, master_args=["--max-retries", "0"]) as c:
        with cwtx.ClusterExecutor(c.host, c.port) as ex:
            with pytest.raises(cwtx.JobLost) as info:
                ex.submit(always_exits).result(60)
            assert len(info.value.attempts) == 1


# -- timeouts and cancellation -------------------------------------------------------------


def test_timeout_kills_the_job_and_the_worker_carries_on(cluster, executor):
    started_at = time.monotonic()
    with pytest.raises(cwtx.JobTimeout, match="timeout of 0.5 s"):
        executor.options(timeout=0.5).submit(time.sleep, 30).result(60)
    assert time.monotonic() - started_at < 10
    assert executor.submit(abs, -9).result(60) == 9
    assert len(worker_names(cluster)) == 2


def test_client_level_default_timeout(cluster):
    with cwtx.ClusterExecutor(cluster.host, cluster.port, timeout=0.5) as ex:
        with pytest.raises(cwtx.JobTimeout):
            ex.submit(time.sleep, 30).result(60)
        assert ex.options(timeout=None).submit(abs, -1).result(60) == 1


def test_cancel_running_deferred_kills_the_job(cluster, tmp_path):
    from cwtx.client import reactor_thread as _reactor_thread

    client = _reactor_thread.blocking(cwtx.connect, cluster.host, cluster.port)
    marker = tmp_path / "m"
    try:
        failures = []

        def submit() -> None:  # returns None: blocking() must not wait for the job
            holder["d"] = client.submit(marked_job, str(marker), 30, None)
            holder["d"].addErrback(failures.append)

        holder = {}
        _reactor_thread.blocking(submit)
        child, _ = started(marker)
        _reactor_thread.blocking(lambda: holder["d"].cancel())
        assert failures[0].check(cwtx.JobCancelled)

        wait_until(lambda: not is_running(child), timeout=10, what="the child to be killed")
        wait_until(lambda: query_status(cluster.host, cluster.port)["running"] == 0, timeout=10)
    finally:
        _reactor_thread.blocking(client.close)


# -- the master restarts ---------------------------------------------------------------------


def executions(path: Path) -> collections.Counter:
    """How many times each job ran: the jobs append their item to ``path``."""
    return collections.Counter(int(line) for line in path.read_text().split())


def counted_job(path: str, i: int, seconds: float):
    """Append ``i`` to ``path`` (one line per execution), sleep, return i*i."""
    import time as _t

    with open(path, "a") as f:
        f.write(f"{i}\n")
    _t.sleep(seconds)
    return i * i


def test_master_killed_and_restarted_during_a_map(tmp_path):
    run = tmp_path / "run"
    ran = tmp_path / "ran"
    cluster = cwtx.local.start(2, 0, run_dir=run, slots=2, master_args=FAST_HEARTBEATS)
    port = cluster.port
    try:
        ex = cwtx.ClusterExecutor(cluster.host, port, reconnect_timeout=60)
        results = ex.map(
            counted_job, [str(ran)] * 300, range(300), [0.02] * 300, buffersize=40, timeout=120
        )
        got = [next(results) for _ in range(50)]
        kill_and_restart_master(cluster, *FAST_HEARTBEATS)
        got += list(results)
        assert got == [i * i for i in range(300)]  # every result, once, in order
        client = ex._client
        assert client.reconnects == 1 and client.ignored_results == 0
        # Each job ran at least once; only jobs the client had not yet seen end
        # when the master died (at most buffersize=40) may have run twice.
        runs = executions(ran)
        assert set(runs) == set(range(300))
        twice = [i for i, n in runs.items() if n > 1]
        assert max(runs.values()) <= 2 and len(twice) <= 40, twice
        wait_until(
            lambda: len(query_status("127.0.0.1", port)["workers"]) == 2,
            what="the workers to rejoin",
        )
        ex.shutdown()
    finally:
        cluster.stop()


# -- a client goes away --------------------------------------------------------------------


DOOMED_CLIENT = textwrap.dedent(
    """
    import sys, time
    import cwtx
    host, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ex = cwtx.ClusterExecutor(host, port)
    def job(i):
        import os, time
        open(marker + str(i), "w").write(str(os.getpid()))
        time.sleep(30)
    futures = [ex.submit(job, i) for i in range(6)]
    print("submitted", flush=True)
    time.sleep(600)
    """
)


def test_killed_client_has_its_jobs_dropped_and_others_are_undisturbed(cluster, tmp_path):
    script = tmp_path / "doomed.py"
    script.write_text(DOOMED_CLIENT)
    marker = str(tmp_path / "job")
    doomed = subprocess.Popen(
        [sys.executable, str(script), cluster.host, str(cluster.port), marker],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert doomed.stdout.readline().strip() == "submitted"
        wait_until(lambda: len(list(tmp_path.glob("job*"))) == 2, what="two jobs to run")

        # "submitted" is printed once the client has the jobs: on a loaded
        # machine the last may reach the master a little later.
        def at_the_master() -> tuple[int, int]:
            status = query_status(cluster.host, cluster.port)
            return status["running"], status["queued"]

        wait_until(lambda: at_the_master() == (2, 4), what="2 jobs running, 4 queued")
        children = [int(p.read_text()) for p in tmp_path.glob("job*")]
        with cwtx.ClusterExecutor(cluster.host, cluster.port) as other:
            doomed.kill()
            doomed.wait(10)
            # Queued jobs dropped, running ones killed: the slots free up
            # long before the 30 s jobs would have ended.
            assert other.submit(abs, -8).result(20) == 8
            wait_until(lambda: not any(is_running(c) for c in children), timeout=10)
            status = query_status(cluster.host, cluster.port)
            assert status["queued"] == 0 and status["running"] == 0
            assert len(list(tmp_path.glob("job*"))) == 2  # the queued four never ran
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)


# -- graceful leave ----------------------------------------------------------------------------


def test_sigterm_worker_finishes_its_job_and_exits_0(cluster, executor, tmp_path):
    marker = tmp_path / "m"
    future = executor.submit(marked_job, str(marker), 1.0, "finished")
    _, supervisor = started(marker)
    proc = next(p for p in cluster._procs if p.pid == supervisor)
    proc.send_signal(signal.SIGTERM)
    assert future.result(60) == "finished"
    assert proc.wait(30) == 0
    wait_until(lambda: len(worker_names(cluster)) == 1, what="the worker to deregister")
    log = (cluster.run_dir / f"worker-{cluster._procs.index(proc) - 1}.log").read_text()
    assert "left" in log


def test_sigint_worker_hands_back_an_overdue_job(tmp_path):
    with (
        cwtx.local.allocate(
            2,
            run_dir=tmp_path / "run",
            master_args=["--prefetch", "0", "--max-retries", "0"],
            worker_args=["--grace", "0.5"],
        ) as cluster,
        cwtx.ClusterExecutor(cluster.host, cluster.port) as ex,
    ):
        marker = tmp_path / "m"
        future = ex.submit(marked_job, str(marker), 3.0, "elsewhere")
        _, supervisor = started(marker)
        proc = next(p for p in cluster._procs if p.pid == supervisor)
        marker.unlink()
        proc.send_signal(signal.SIGINT)  # what `scancel -s INT` sends
        assert proc.wait(30) == 0
        # Handed back, not lost: it ran again on the other worker, even with
        # max_retries=0.
        assert future.result(60) == "elsewhere"
        _, other = started(marker)
        assert other != supervisor


def test_ctrl_c_in_a_workers_terminal_lets_its_running_job_finish(tmp_path):
    """A terminal's Ctrl-C sends SIGINT to a whole process group, and SLURM
    may send it to every process of a batch step.  Slot children have a
    group of their own and shrug SIGINT off, so only the supervisor acts on
    it, and the running job finishes in its grace instead of dying of a
    KeyboardInterrupt."""
    with (
        cwtx.local.allocate(1, run_dir=tmp_path / "run", worker_args=["--grace", "60"]) as cluster,
        cwtx.ClusterExecutor(cluster.host, cluster.port) as ex,
    ):
        gate, ran = tmp_path / "gate", tmp_path / "ran"
        future = ex.submit(gated, str(gate), "finished", str(ran))
        try:
            wait_until(lambda: runs(ran), what="the job to start")
            os.killpg(cluster.worker_pid("local-0"), signal.SIGINT)  # the twistd is a group leader
            os.kill(runs(ran)[0], signal.SIGINT)  # and to the child itself, as SLURM might
            log = cluster.run_dir / "worker-0.log"
            wait_until(lambda: "leaving: finishing 1 running" in log.read_text(), what="leaving")
        finally:
            gate.touch()
        assert future.result(60) == "finished"
        assert runs(ran) and len(runs(ran)) == 1


# -- the soak ------------------------------------------------------------------------------------


def test_soak_2000_jobs_while_workers_are_killed_and_restarted(tmp_path):
    rng = random.Random(20261127)
    with (
        cwtx.local.allocate(
            3,
            run_dir=tmp_path / "run",
            slots=2,
            master_args=[*FAST_HEARTBEATS, "--max-retries", "50"],
        ) as cluster,
        cwtx.ClusterExecutor(cluster.host, cluster.port) as ex,
    ):
        stop = threading.Event()
        kills = []

        def chaos():
            live = ["local-0", "local-1", "local-2"]
            while not stop.wait(rng.uniform(0.3, 0.8)):
                victim = live.pop(rng.randrange(len(live)))
                pid = cluster.worker_pid(victim)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(victim)
                live += cluster.add_workers(1)

        ran = tmp_path / "ran"
        killer = threading.Thread(target=chaos, daemon=True)
        started_at = time.monotonic()
        killer.start()
        try:
            n = 2000
            results = list(
                ex.map(
                    counted_job, [str(ran)] * n, range(n), [0.03] * n, buffersize=200, timeout=240
                )
            )
        finally:
            stop.set()
            killer.join(30)
        assert results == [i * i for i in range(n)]  # each delivered once, in order
        assert ex._client.ignored_results == 0
        assert len(kills) >= 3, kills
        # Only jobs a killed worker held (2 slots + 4 prefetched each) ran again.
        runs = executions(ran)
        assert set(runs) == set(range(n))
        assert sum(runs.values()) - n <= 6 * len(kills)
        status = query_status(cluster.host, cluster.port)
        assert status["queued"] == 0 and status["running"] == 0
        print(
            f"soak: 2000 jobs, {len(kills)} workers killed, {time.monotonic() - started_at:.1f} s"
        )
