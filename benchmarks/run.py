"""
cwtx beside its peers, in one run on this machine.

    python benchmarks/run.py            # full sizes (a few minutes)
    python benchmarks/run.py --quick    # small sizes (a smoke test)

Peers: concurrent.futures.ProcessPoolExecutor (always), and Dask
distributed's LocalCluster when ``dask[distributed]`` is installed
(``pip install '.[bench]'``).  Every system gets the same number of worker
processes (--workers, default 2) on this machine.  Figures:

* throughput: tiny jobs per second through ``map``;
* latency: one job's round trip, submitted and awaited one at a time;
* payload: seconds to send a big argument and get a big result back;
* client memory: the peak RSS of a client process that maps a tiny
  function over many inputs with at most ``buffersize`` jobs in flight
  (cwtx), against one that submits them all at once.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def tiny(x: int) -> int:
    return x + 1


def echo_size(data: bytes) -> bytes:
    return data


# -- the systems ------------------------------------------------------------------


@contextmanager
def cwtx_executor(workers: int) -> Iterator[concurrent.futures.Executor]:
    import cwtx

    with cwtx.allocate(workers) as cluster, cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
        yield ex


@contextmanager
def process_pool(workers: int) -> Iterator[concurrent.futures.Executor]:
    with concurrent.futures.ProcessPoolExecutor(workers) as ex:
        yield ex


@contextmanager
def dask_executor(workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client.get_executor()


def systems() -> dict[str, Callable[[int], Any]]:
    found: dict[str, Callable[[int], Any]] = {
        "cwtx": cwtx_executor,
        "ProcessPoolExecutor": process_pool,
    }
    try:
        import distributed  # noqa: F401

        found["dask.distributed"] = dask_executor
    except ImportError:
        print("(dask.distributed is not installed: pip install '.[bench]' to compare with it)")
    return found


# -- the measurements ---------------------------------------------------------------


def throughput(ex: concurrent.futures.Executor, n: int) -> float:
    list(ex.map(tiny, range(100)))  # warm up: functions cached, workers awake
    start = time.perf_counter()
    results = list(ex.map(tiny, range(n)))
    elapsed = time.perf_counter() - start
    assert results[-1] == n
    return n / elapsed


def latency(ex: concurrent.futures.Executor, n: int) -> float:
    ex.submit(tiny, 0).result()
    start = time.perf_counter()
    for i in range(n):
        assert ex.submit(tiny, i).result() == i + 1
    return (time.perf_counter() - start) / n * 1000


def payload(ex: concurrent.futures.Executor, mib: int) -> float:
    data = os.urandom(1 << 20) * mib
    start = time.perf_counter()
    back = ex.submit(echo_size, data).result()
    elapsed = time.perf_counter() - start
    assert len(back) == len(data)
    return elapsed


CLIENT_MEMORY = """
import sys

sys.path.insert(0, {root!r})
import cwtx
n, buffersize = {n}, {buffersize}
def tiny(x):
    return x + 1
with cwtx.ClusterExecutor({host!r}, {port}) as ex:
    total = 0
    if buffersize:
        for r in ex.map(tiny, range(n), buffersize=buffersize):
            total += r
    else:
        for r in ex.map(tiny, range(n)):
            total += r
assert total == n * (n + 1) // 2
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent at fork.
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(int(hwm.split()[1]) // 1024)
"""


def client_memory(workers: int, n: int, buffersize: int | None) -> int:
    """Peak RSS (MiB) of a fresh client process mapping over n inputs."""
    import cwtx

    with cwtx.allocate(workers) as cluster:
        code = CLIENT_MEMORY.format(
            root=str(ROOT), n=n, buffersize=buffersize or 0, host=cluster.host, port=cluster.port
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    return int(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    jobs = 2_000 if args.quick else 20_000
    rounds = 50 if args.quick else 300
    mib = 8 if args.quick else 100
    map_n = 20_000 if args.quick else 1_000_000
    buffersize = 1_000 if args.quick else 10_000

    figures: dict[str, dict[str, float]] = {}
    for name, make in systems().items():
        with make(args.workers) as ex:
            row = figures[name] = {}
            row["throughput (jobs/s)"] = throughput(ex, jobs)
            row["latency (ms/job)"] = latency(ex, rounds)
            row[f"payload {mib} MiB round trip (s)"] = payload(ex, mib)
        print(f"{name}: " + ", ".join(f"{k} {v:,.2f}" for k, v in row.items()), flush=True)

    bounded = client_memory(args.workers, map_n, buffersize)
    unbounded = client_memory(args.workers, map_n // 10, None)
    print(
        f"cwtx client peak RSS: {bounded} MiB for map over {map_n:,} inputs with "
        f"buffersize={buffersize:,}; {unbounded} MiB for {map_n // 10:,} inputs "
        "submitted all at once"
    )
    figures["cwtx client memory"] = {
        f"map {map_n} buffersize {buffersize} (MiB)": bounded,
        f"map {map_n // 10} unbounded (MiB)": unbounded,
    }
    print(
        f"(this machine: {os.cpu_count()} cores; this process: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB peak)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
