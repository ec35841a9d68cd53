"""
Scale: the cwtx master holding many simulated workers (``simulated_workers``,
in a process of their own) plus the real ones.  Figures: no-op throughput
beside the same master with the real workers only; the master's CPU while
idle (what heartbeats cost it), as % of one core; the master's RSS.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks import jobs, procs
from benchmarks.systems import cluster_processes
from benchmarks.workloads import Sizes, w1_throughput, warm_up

#: Seconds to wait for the simulated workers to register and be filled.
SETTLE_TIMEOUT = 300.0


def idle_cpu_percent(pid: int, seconds: float) -> float:
    """The process's CPU over ``seconds`` of wall time, % of one core."""
    before = procs.cpu_seconds(pid)
    time.sleep(seconds)
    return (procs.cpu_seconds(pid) - before) / seconds * 100


@contextmanager
def simulated_workers(host: str, port: int, n: int) -> Iterator[subprocess.Popen[str]]:
    helper = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.simulated_workers", host, str(port), str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert helper.stdout is not None
        line = helper.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"the simulated workers did not start (exit {helper.wait()})")
        yield helper
    finally:
        helper.terminate()
        helper.wait(30)


def wait_until_held(cluster: Any, jobs_held: int) -> None:
    """Until the master has every filler job running on a simulated worker."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        status = cluster.status()
        if status["running"] >= jobs_held and status["queued"] == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the simulated workers hold {status['running']} of {jobs_held}")
        time.sleep(0.2)


def baseline(sizes: Sizes, workers: int) -> dict[str, float]:
    """The same master with the real workers only."""
    import cwtx

    with cwtx.allocate(workers) as cluster, cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
        master = cluster_processes(cluster).master_pid
        assert master is not None
        warm_up(ex)
        idle = idle_cpu_percent(master, sizes.scale_idle)
        return {"jobs_per_s": w1_throughput(ex, sizes.scale_jobs), "idle_cpu": idle}


def with_simulated(sizes: Sizes, workers: int) -> dict[str, float]:
    """The master with ``sizes.scale_peers`` simulated workers, each kept
    full by a filler client, then ``workers`` real ones."""
    import cwtx
    from cwtx.master.sessions import DEFAULT_PREFETCH

    with cwtx.allocate(0) as cluster:
        master = cluster_processes(cluster).master_pid
        assert master is not None
        with simulated_workers(cluster.host, cluster.port, sizes.scale_peers):
            filler = cwtx.ClusterExecutor(cluster.host, cluster.port)
            held = sizes.scale_peers * (1 + DEFAULT_PREFETCH)  # each: its slot and prefetch
            for i in range(held):
                filler.submit(jobs.noop, i)
            wait_until_held(cluster, held)
            cluster.add_workers(workers)
            with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
                warm_up(ex)
                idle = idle_cpu_percent(master, sizes.scale_idle)
                rss = procs.rss_mib(master)
                throughput = w1_throughput(ex, sizes.scale_jobs)
            filler.shutdown(wait=True, cancel_futures=True, kill_running=True)
            return {
                "jobs_per_s": throughput,
                "idle_cpu": idle,
                "master_rss": rss,
                "master_peak": procs.peak_rss_mib(master),
            }


def scale(sizes: Sizes, workers: int) -> dict[str, float]:
    base = baseline(sizes, workers)
    sim = with_simulated(sizes, workers)
    return {
        "base_jobs_per_s": base["jobs_per_s"],
        "base_idle_cpu": base["idle_cpu"],
        **sim,
        "throughput_ratio": sim["jobs_per_s"] / base["jobs_per_s"],
    }
