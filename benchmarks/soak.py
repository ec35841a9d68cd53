"""
A cluster that runs for weeks (issue 15): does every process's memory stay
bounded?

    python benchmarks/soak.py soak      # 200,000 jobs, each a distinct closure over 16 KB
    python benchmarks/soak.py residue   # 100 client programs, one after another, 10,000 jobs each
    python benchmarks/soak.py soak --jobs 20000 --every 2000     # smaller

``soak``: one client session submits jobs through a map with at most
``--in-flight`` pending, each job a new closure capturing its own 16 KB
(``lambda: f(x, data)`` in a loop, the common way to leak a function cache),
on a local cluster of 2 single-slot workers.  It prints the resident memory
(VmRSS) of the client, the master, each worker's supervisor and slot child
at warm-up (after the first ``--every`` jobs) and then every ``--every``
jobs, and each one's growth since warm-up.  The issue's target: every
process within 100 MiB of its warm-up RSS.

``residue``: ``--clients`` client programs (fresh processes), one after the
other, each runs ``--jobs`` no-op jobs (distinct closures too) and leaves;
the master's RSS before the first, after it and after each fifth, each read
once the master has had time to give back what the client held (it trims
its heap at most every ``cwtx.master.trim.MIN_INTERVAL`` seconds).  The
target: back within 20 MiB of where it started.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import procs  # noqa: E402
from benchmarks.profile import processes  # noqa: E402
from benchmarks.run import throwaway_environment  # noqa: E402
from benchmarks.systems import cluster_processes  # noqa: E402

CAPTURED = 16 * 1024


def closure(i: int) -> Callable[[], int]:
    """A distinct function each time: its own 16 KB captured."""
    data = os.urandom(CAPTURED)
    return lambda: len(data) + i


def report(cluster: Any, done: int, base: dict[str, float], started: float) -> dict[str, float]:
    now = {role: procs.rss_mib(pid) for role, pid in processes(cluster_processes(cluster)).items()}
    if not base:
        base.update(now)
    parts = [f"{role} {mib:.0f} ({mib - base.get(role, mib):+.0f})" for role, mib in now.items()]
    print(f"{done:>9,} jobs, {time.monotonic() - started:6.0f} s: " + "; ".join(parts), flush=True)
    return now


def buffered(executor: Any, items: Iterator[Any], in_flight: int) -> Iterator[Any]:
    """Results in order, at most ``in_flight`` jobs pending; each item is
    the job's function itself (``submit(lambda: ...)``), not an argument."""
    pending: list[Any] = []
    for item in items:
        pending.append(executor.submit(item))
        if len(pending) >= in_flight:
            yield pending.pop(0).result()
    for f in pending:
        yield f.result()


def soak(jobs: int, every: int, in_flight: int) -> None:
    import cwtx

    with cwtx.allocate(2) as cluster, cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
        started = time.monotonic()
        base: dict[str, float] = {}
        last: dict[str, float] = {}
        for done, _ in enumerate(buffered(ex, map(closure, range(jobs)), in_flight), 1):
            if done % every == 0:
                last = report(cluster, done, base, started)
        growth = {role: last[role] - base[role] for role in last if role in base}
        worst = max(growth, key=lambda role: growth[role])
        print(f"most growth since warm-up: {worst}, {growth[worst]:+.0f} MiB (target: ≤ 100)")


CLIENT = f"""
import sys
sys.path.insert(0, sys.argv[3])
import cwtx
from benchmarks.soak import buffered, closure
with cwtx.ClusterExecutor(sys.argv[1], int(sys.argv[2])) as ex:
    n = int(sys.argv[4])
    assert sum(buffered(ex, map(closure, range(n)), 1000)) == n * {CAPTURED} + n * (n - 1) // 2
"""


def settled_rss_mib(pid: int) -> float:
    """The master's RSS once it has trimmed after the client that just left."""
    from cwtx.master.trim import MIN_INTERVAL

    time.sleep(MIN_INTERVAL + 1)
    return procs.rss_mib(pid)


def residue(clients: int, jobs: int) -> None:
    import cwtx

    with cwtx.allocate(2) as cluster:
        master = int((Path(cluster.run_dir) / "master.pid").read_text())
        argv = [sys.executable, "-c", CLIENT, cluster.host, str(cluster.port), str(ROOT), str(jobs)]
        started = time.monotonic()
        before = procs.rss_mib(master)
        print(f"master before any client: {before:.0f} MiB")
        subprocess.run(argv, check=True)
        first = settled_rss_mib(master)
        print(f"master after client 1: {first:.0f} MiB ({first - before:+.0f})", flush=True)
        for i in range(2, clients + 1):
            subprocess.run(argv, check=True)
            if i % max(1, clients // 5) == 0 or i == clients:
                rss = settled_rss_mib(master)
                peak, took = procs.peak_rss_mib(master), time.monotonic() - started
                print(
                    f"master after client {i}: {rss:.0f} MiB ({rss - first:+.0f}); "
                    f"peak {peak:.0f} MiB; {took:.0f} s",
                    flush=True,
                )
        print(
            f"growth after {clients} clients: {rss - first:+.0f} MiB since the first, "
            f"{rss - before:+.0f} MiB since before any (target: ≤ 20)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("what", choices=["soak", "residue"])
    parser.add_argument("--jobs", type=int, help="soak: 200,000 in all; residue: 10,000 each")
    parser.add_argument("--every", type=int, default=20_000, help="soak: report this often")
    parser.add_argument("--in-flight", type=int, default=1_000, help="soak: jobs pending at most")
    parser.add_argument("--clients", type=int, default=100, help="residue: client programs")
    args = parser.parse_args(argv)
    home = throwaway_environment()
    try:
        if args.what == "soak":
            soak(args.jobs or 200_000, args.every, args.in_flight)
        else:
            residue(args.clients, args.jobs or 10_000)
    finally:
        import shutil

        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
