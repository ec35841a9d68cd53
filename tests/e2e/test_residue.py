"""
No residue after clients leave (issue 15), on a real master: clients come
and go, each with its own thousand functions, the last one dying half way
through its jobs, and the master's memory goes back to where it started.
(The full figure, 100 clients of 10,000 jobs, is ``python
benchmarks/soak.py residue``: docs/performance.md.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import cwtx
from cwtx.master.trim import MIN_INTERVAL
from tests.conftest import rss_mib, wait_until

pytestmark = pytest.mark.e2e

CLIENTS = 8
JOBS = 1000
CAPTURED = 16 * 1024
#: MiB the master may stay above where it started.  The issue allows 20 at
#: full size; here it measured +2, and it was +76 without the collection
#: and trim after each client left, +20 when the last client's session
#: stayed held (by the exception TCP shares between closed connections).
RESIDUE_MIB = 12


def closure(i: int):
    """A distinct function each time, with its own 16 KB."""
    data = os.urandom(CAPTURED)
    return lambda: len(data) + i


#: A client program that dies half way through 2,000 jobs: results still on
#: their way to it, the rest queued or running.
DIES = f"""
import os, sys
import cwtx
def closure(i):
    data = os.urandom({CAPTURED})
    return lambda: len(data) + i
ex = cwtx.ClusterExecutor(sys.argv[1], int(sys.argv[2]))
futures = [ex.submit(closure(i)) for i in range(2 * {JOBS})]
for f in futures[:{JOBS}]:
    f.result(timeout=60)
os._exit(0)
"""


@pytest.mark.timeout(120)
def test_the_master_gives_back_what_departed_clients_held(cluster):
    started = rss_mib(cluster)
    for _ in range(CLIENTS - 1):
        with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
            futures = [ex.submit(closure(i)) for i in range(JOBS)]
            assert [f.result(timeout=60) for f in futures] == [CAPTURED + i for i in range(JOBS)]
    argv = [sys.executable, "-c", DIES, cluster.host, str(cluster.port)]
    subprocess.run(argv, check=True, timeout=60)
    # It trims at most every MIN_INTERVAL seconds.
    left, now = time.monotonic(), [started]

    def back() -> bool:
        now[0] = rss_mib(cluster)
        return now[0] - started < RESIDUE_MIB

    try:
        wait_until(back, timeout=MIN_INTERVAL + 10)
    except AssertionError:
        raise AssertionError(
            f"the master went from {started:.0f} to {now[0]:.0f} MiB over {CLIENTS} "
            f"clients of {JOBS} jobs and stayed there (at most +{RESIDUE_MIB})"
        ) from None
    print(f"master: {started:.0f} MiB, {now[0]:.0f} after {CLIENTS} clients, "
          f"{time.monotonic() - left:.1f} s after the last left")  # fmt: skip
