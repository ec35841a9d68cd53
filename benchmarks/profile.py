"""
Where a cwtx job's time goes: each process's CPU per job (issue 13's
"profile first").

    python benchmarks/profile.py                    # W1: 20,000 no-op jobs
    python benchmarks/profile.py --workload W3      # 20 jobs echoing 8 MiB
    python benchmarks/profile.py --py-spy profiles  # and a py-spy profile of each process

It starts a local cluster (a twistd master and 2 single-slot workers, as the
benchmark does), runs one workload from a ClusterExecutor in this process,
and prints, for the client, the master, each worker's supervisor and its
slot child: CPU time (user and system, from /proc) and context switches,
per job (per MiB moved for W3).  CPU time is what a process costs the
machine whatever else runs on it; the sum over every process, over the
cores, is the fastest the machine could run the workload.

With ``--py-spy DIR`` (``pip install py-spy``), each process is sampled
while the workload runs; DIR gets one raw (collapsed-stack) file per
process, and the functions where each spends most of its samples are
printed.  py-spy counts a sample wherever a thread is not idle, so a
process the kernel has not yet scheduled counts too: read its shares
beside the CPU times, not instead of them.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import jobs, procs  # noqa: E402
from benchmarks.run import throwaway_environment  # noqa: E402
from benchmarks.systems import Cwtx, Running  # noqa: E402

MIB = 1024 * 1024


@dataclass
class Usage:
    """What the kernel counts for one process, at one moment."""

    user: float
    system: float
    switches: int

    @classmethod
    def of(cls, pid: int) -> Usage:
        switches = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(line.split()[1])
        return cls(*procs.cpu_times(pid), switches)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.user - other.user, self.system - other.system, self.switches - other.switches
        )


def processes(running: Running) -> dict[str, int]:
    """The cluster's processes by role, now: client (this process),
    master, supervisors, slot children (replaced after a crash)."""
    assert running.master_pid is not None
    found = {"client": os.getpid(), "master": running.master_pid}
    for i, root in enumerate(running.worker_pids):
        found[f"worker {i}"] = root
        for j, child in enumerate(p for p in procs.tree(root) if p != root):
            found[f"worker {i} child {j}"] = child
    return found


def run_workload(executor: object, workload: str, n: int) -> tuple[float, float]:
    """Run it; (units of work, seconds): jobs, or MiB moved for W3."""
    submit = executor.submit  # type: ignore[attr-defined]
    start = time.perf_counter()
    if workload == "W1":
        for f in [submit(jobs.noop, i) for i in range(n)]:
            f.result()
        units = n
    elif workload == "W2":
        for i in range(n):
            submit(jobs.noop, i).result()
        units = n
    elif workload == "W3":
        data = os.urandom(8 * MIB)
        for f in [submit(jobs.echo, data) for _ in range(n)]:
            f.result()
        units = 2 * n * 8
    else:
        raise SystemExit(f"unknown workload {workload}")
    return units, time.perf_counter() - start


def start_py_spy(pids: dict[str, int], directory: Path) -> dict[str, subprocess.Popen[bytes]]:
    if shutil.which("py-spy") is None:
        raise SystemExit("--py-spy needs py-spy: pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    return {
        role: subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(directory / f"{role.replace(' ', '-')}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for role, pid in pids.items()
    }


def top_functions(path: Path, count: int) -> list[tuple[float, str]]:
    """The functions with the most samples of their own, as shares."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        total += int(samples)
        own[stack.split(";")[-1]] += int(samples)
    return [(n / total, name) for name, n in own.most_common(count)] if total else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--workload", default="W1", choices=["W1", "W2", "W3"])
    parser.add_argument("--jobs", type=int, help="default: W1 20,000, W2 2,000, W3 20")
    parser.add_argument("--py-spy", type=Path, metavar="DIR", help="also sample each process")
    parser.add_argument("--top", type=int, default=12, help="functions shown per process")
    args = parser.parse_args(argv)
    n = args.jobs or {"W1": 20_000, "W2": 2_000, "W3": 20}[args.workload]
    unit = "MiB" if args.workload == "W3" else "job"
    home = throwaway_environment()
    try:
        with Cwtx().start(2) as running:
            executor = running.executor
            list(executor.map(jobs.noop, range(200)))  # every process up and warm
            pids = processes(running)
            spies = start_py_spy(pids, args.py_spy) if args.py_spy else {}
            before = {role: Usage.of(pid) for role, pid in pids.items()}
            units, seconds = run_workload(executor, args.workload, n)
            used = {role: Usage.of(pid) - before[role] for role, pid in pids.items()}
            for spy in spies.values():
                spy.send_signal(signal.SIGINT)
            for spy in spies.values():
                spy.wait(timeout=60)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    rate = "MiB/s moved" if unit == "MiB" else "jobs/s"
    print(f"{args.workload}: {n:,} jobs, {units / seconds:,.0f} {rate} ({seconds:.2f} s)")
    scale = 1000 if unit == "MiB" else 1e6
    label = "ms" if unit == "MiB" else "µs"
    user, system = f"user {label}", f"system {label}"
    print(f"{'process':<18} {user:>10} {system:>10} {'switches':>9}  (per {unit})")
    total = Usage(0, 0, 0)
    for role, u in used.items():
        total = Usage(total.user + u.user, total.system + u.system, total.switches + u.switches)
        print(f"{role:<18} {scale * u.user / units:>10.1f} {scale * u.system / units:>10.1f} "
              f"{u.switches / units:>9.2f}")  # fmt: skip
    print(f"{'all':<18} {scale * total.user / units:>10.1f} {scale * total.system / units:>10.1f} "
          f"{total.switches / units:>9.2f}")  # fmt: skip
    cores = os.cpu_count() or 1
    floor = (total.user + total.system) / units
    if floor:
        print(f"CPU-bound ceiling on {cores} cores: {cores / floor:,.0f} {rate}")
    else:  # under one clock tick of CPU in all (/proc counts in ticks)
        print(f"CPU-bound ceiling on {cores} cores: too few jobs to tell (use more --jobs)")
    if args.py_spy:
        for role in pids:
            path = args.py_spy / f"{role.replace(' ', '-')}.txt"
            if path.exists():
                print(f"\n{role}: most samples (py-spy, {path})")
                for share, name in top_functions(path, args.top):
                    print(f"  {100 * share:5.1f}%  {name}")


if __name__ == "__main__":
    main()
