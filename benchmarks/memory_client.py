"""
W5's client, in a process of its own so that its peak RSS is its own:
no-op jobs submitted at once (``once``), or through a map with at most
``buffersize`` in flight (``map``).  Prints one JSON line: the seconds the
jobs took, the client's peak RSS, and (for a process pool, whose workers
are the client's children) the workers' peak RSS.

    python -m benchmarks.memory_client SYSTEM once|map N BUFFERSIZE WORKERS ADDRESS_JSON
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import Executor

from benchmarks import jobs, procs
from benchmarks.systems import System, by_name


def at_once(ex: Executor, n: int) -> int:
    """Every job submitted before any result is read (the futures kept)."""
    futures = [ex.submit(jobs.noop, i) for i in range(n)]
    return sum(f.result() for f in futures)


def buffered(system: System, ex: Executor, n: int, buffersize: int) -> int:
    return sum(system.map_buffered(ex, jobs.noop, range(n), buffersize))


def main() -> None:
    name, mode, n, buffersize, workers, address = sys.argv[1:7]
    system = by_name(name)
    total_jobs = int(n)
    with system.connect(json.loads(address), int(workers)) as running:
        ex = running.executor
        assert ex is not None
        start = time.perf_counter()
        if mode == "once":
            total = at_once(ex, total_jobs)
        else:
            total = buffered(system, ex, total_jobs, int(buffersize))
        seconds = time.perf_counter() - start
        assert total == total_jobs * (total_jobs + 1) // 2, total
        own_workers = system.client_side_workers(running)
        workers_mib = procs.trees_peak_mib(own_workers) if own_workers else None
    print(
        json.dumps(
            {"seconds": seconds, "client_mib": procs.peak_rss_mib(), "workers_mib": workers_mib}
        )
    )


if __name__ == "__main__":
    main()
