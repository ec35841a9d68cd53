"""
W5, memory: a fresh client process (``memory_client``) against a freshly
served system, so that the client's, the master's and the workers' peak
RSS (VmHWM) are each that run's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from benchmarks import procs
from benchmarks.systems import System


def w5(
    system: System, mode: str, n: int, buffersize: int, workers: int, timeout: float
) -> dict[str, Any]:
    """One W5 run: ``seconds``, ``client_mib``, ``master_mib`` (None where
    the system has no master process of its own), ``workers_mib``."""
    with system.serve(workers) as served:
        command = [
            sys.executable,
            "-m",
            "benchmarks.memory_client",
            system.name,
            mode,
            str(n),
            str(buffersize),
            str(workers),
            json.dumps(served.address),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"the W5 client failed:\n{done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["master_mib"] = procs.peak_rss_mib(served.master_pid) if served.master_pid else None
        if served.worker_pids:
            result["workers_mib"] = procs.trees_peak_mib(served.worker_pids)
    return result
