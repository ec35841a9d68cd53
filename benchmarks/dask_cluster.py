"""A dask LocalCluster in a process of its own, for the memory workload:
prints its scheduler's address (JSON) and runs until its stdin closes.

    python -m benchmarks.dask_cluster WORKERS
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from distributed import LocalCluster

    workers = int(sys.argv[1])
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        print(json.dumps(cluster.scheduler_address), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
