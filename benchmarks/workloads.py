"""
The workloads that run on one executor (W1 to W4, reused data), and the
sizes of every workload, full and quick.  Each returns its figures; none
asserts on time.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from concurrent.futures import Executor
from dataclasses import dataclass

from benchmarks import jobs
from benchmarks.systems import Put, bounded_map

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    w1_jobs: int
    w2_rounds: int
    w3_jobs: int
    w3_mib: int
    w4_jobs: int
    w4_seconds: float
    w5_at_once: int
    w5_map: int
    w5_buffersize: int
    scale_peers: int
    scale_jobs: int
    scale_idle: float  # seconds of idle master to time
    reused_jobs: int
    reused_mib: int
    reused_in_flight: int


FULL = Sizes(
    w1_jobs=20_000,
    w2_rounds=500,
    w3_jobs=20,
    w3_mib=8,
    w4_jobs=200,
    w4_seconds=0.02,
    w5_at_once=200_000,
    w5_map=1_000_000,
    w5_buffersize=10_000,
    scale_peers=1_000,
    scale_jobs=20_000,
    scale_idle=15.0,
    reused_jobs=100,
    reused_mib=64,
    reused_in_flight=8,
)

QUICK = Sizes(
    w1_jobs=1_000,
    w2_rounds=50,
    w3_jobs=4,
    w3_mib=4,
    w4_jobs=20,
    w4_seconds=0.02,
    w5_at_once=2_000,
    w5_map=5_000,
    w5_buffersize=500,
    scale_peers=50,
    scale_jobs=1_000,
    scale_idle=3.0,
    reused_jobs=10,
    reused_mib=8,
    reused_in_flight=8,
)


def warm_up(ex: Executor) -> None:
    """Functions cached, worker processes up, before anything is timed."""
    list(ex.map(jobs.noop, range(20)))


def w1_throughput(ex: Executor, n: int) -> float:
    """W1: ``n`` no-op jobs submitted at once; jobs per second, from the
    first submit to the last result."""
    start = time.perf_counter()
    futures = [ex.submit(jobs.noop, i) for i in range(n)]
    for f in futures:
        f.result()
    return n / (time.perf_counter() - start)


def w2_latency(ex: Executor, rounds: int) -> float:
    """W2: submit one no-op job, wait for it, again; the median round trip, ms."""
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        ex.submit(jobs.noop, i).result()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def w3_bandwidth(ex: Executor, n: int, mib: int) -> float:
    """W3: ``n`` jobs each echoing ``mib`` MiB, submitted at once; MiB per
    second moved, counting the argument and the result."""
    data = os.urandom(mib * MIB)
    start = time.perf_counter()
    futures = [ex.submit(jobs.echo, data) for _ in range(n)]
    for f in futures:
        assert len(f.result()) == len(data)
    return 2 * n * mib / (time.perf_counter() - start)


def w4_efficiency(ex: Executor, n: int, seconds: float, workers: int) -> float:
    """W4: ``n`` jobs sleeping ``seconds``; ideal time (n × seconds /
    workers) over the time taken."""
    start = time.perf_counter()
    for f in [ex.submit(jobs.nap, seconds) for _ in range(n)]:
        f.result()
    return n * seconds / workers / (time.perf_counter() - start)


def reused_data(
    ex: Executor, n: int, mib: int, in_flight: int, put: Put | None = None
) -> dict[str, float]:
    """``n`` jobs that all take the same ``mib`` MiB of bytes (at most
    ``in_flight`` at a time, so a system that copies the data into every
    job does not hold n copies), handed to the system once with ``put``
    (cwtx's put, Dask's scatter, Ray's put; None: the data itself goes with
    every job), timed from the put; beside it, what the target compares it
    to: one round trip of that data, and ``n`` no-op jobs."""
    data = os.urandom(mib * MIB)
    start = time.perf_counter()
    shared = put(data) if put is not None else data
    for length in bounded_map(ex, jobs.size, itertools.repeat(shared, n), in_flight):
        assert length == len(data)
    reused = time.perf_counter() - start
    del shared

    start = time.perf_counter()
    assert len(ex.submit(jobs.echo, data).result()) == len(data)
    round_trip = time.perf_counter() - start

    start = time.perf_counter()
    for f in [ex.submit(jobs.noop, i) for i in range(n)]:
        f.result()
    noops = time.perf_counter() - start
    return {
        "reused": reused,
        "round_trip": round_trip,
        "noops": noops,
        "ratio": reused / (2 * round_trip + noops),
    }
