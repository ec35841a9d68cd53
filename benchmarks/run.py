"""
cwtx beside its peers, all in one run on this machine (issue 13).

    python benchmarks/run.py                         # full sizes (about 20 minutes)
    python benchmarks/run.py --quick                 # small sizes (under a minute)
    python benchmarks/run.py --only W1,W3 --systems cwtx,pool --json figures.json

Systems (``--systems``, default all installed): cwtx, pool
(ProcessPoolExecutor), dask (distributed.LocalCluster), ray (optional);
``pip install '.[bench]'`` installs the peers.  Each gets ``--workers``
(default 2) worker processes.  Workloads (``--only``): startup, W1, W2,
W3, W4, reused, W5 (or either half: W5once, W5map), scale;
docs/performance.md explains each figure.
Prints one table: each system's figure, cwtx's ratio to each peer, and
the issue's targets, met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import jobs, procs  # noqa: E402
from benchmarks.memory import w5  # noqa: E402
from benchmarks.report import Figures, Row, table  # noqa: E402
from benchmarks.scale import scale  # noqa: E402
from benchmarks.systems import System, available  # noqa: E402
from benchmarks.workloads import (  # noqa: E402
    FULL,
    QUICK,
    Sizes,
    reused_data,
    w1_throughput,
    w2_latency,
    w3_bandwidth,
    w4_efficiency,
    warm_up,
)

WORKLOADS = ["startup", "W1", "W2", "W3", "W4", "reused", "W5", "scale"]
#: W5's two halves, each on its own (``W5`` runs both).
W5_PARTS = {"W5once": "once", "W5map": "map"}
#: Systems W5 leaves out unless --w5-all: at its ~450 jobs/s, 1,000,000
#: jobs would take Dask over half an hour.
W5_SLOW = {"dask"}


def throwaway_environment() -> str:
    """A shared secret and run directory of this run's own (as the test
    suite's conftest makes): never the user's ~/.config/cwtx.  Every
    process started from here imports this checkout (PYTHONPATH)."""
    home = tempfile.mkdtemp(prefix="cwtx-bench-")
    secret = os.path.join(home, "secret")
    with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(secrets.token_hex(32))
    os.environ["CWTX_SECRET_FILE"] = secret
    os.environ["CWTX_RUN_DIR"] = os.path.join(home, "run")
    os.environ["CWTX_LAUNCHER"] = "local"
    for name in ("CWTX_SECRET", "CWTX_MASTER", "CWTX_CLUSTER"):
        os.environ.pop(name, None)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])
    return home


def attempt(what: str, measure: Callable[..., Any], *args: Any) -> Any:
    """``measure(*args)``; a failure is printed and leaves its figures out."""
    try:
        return measure(*args)
    except Exception:
        print(f"{what} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        return None


def say(figures: Figures, key: str, system: System, value: float | None) -> None:
    figures[key][system.name] = value
    if value is not None:
        print(f"  {system.name} {key}: {value:,.3f}", flush=True)


def executor_workloads(
    system: System, sizes: Sizes, workers: int, only: set[str], figures: Figures
) -> None:
    """Start-up, W1 to W4 and reused data, on one start of the system."""
    start = time.perf_counter()
    with system.start(workers) as running:
        ex = running.executor
        assert ex is not None
        ex.submit(jobs.noop, 0).result()
        if "startup" in only:
            say(figures, "startup", system, time.perf_counter() - start)
        warm_up(ex)
        if "W1" in only:
            master = running.master_pid
            cpu = procs.cpu_seconds(master) if master else 0.0
            say(figures, "W1", system, attempt("W1", lambda: w1_throughput(ex, sizes.w1_jobs)))
            if master:
                per_job = (procs.cpu_seconds(master) - cpu) / sizes.w1_jobs * 1e6
                say(figures, "W1 master cpu", system, per_job)
        if "W2" in only:
            say(figures, "W2", system, attempt("W2", lambda: w2_latency(ex, sizes.w2_rounds)))
        if "W3" in only:
            w3 = attempt("W3", lambda: w3_bandwidth(ex, sizes.w3_jobs, sizes.w3_mib))
            say(figures, "W3", system, w3)
        if "W4" in only:
            w4 = attempt("W4", lambda: w4_efficiency(ex, sizes.w4_jobs, sizes.w4_seconds, workers))
            say(figures, "W4", system, w4)
        if "reused" in only:
            reused = attempt(
                "reused",
                lambda: reused_data(
                    ex, sizes.reused_jobs, sizes.reused_mib, sizes.reused_in_flight, running.put
                ),
            )
            for key, value in (reused or {}).items():
                say(figures, f"reused {key}", system, value)


def memory_workloads(
    system: System,
    sizes: Sizes,
    workers: int,
    figures: Figures,
    timeout: float,
    modes: frozenset[str] = frozenset({"once", "map"}),
) -> None:
    """W5 both ways (or ``modes``), each on a fresh system and a fresh client process."""
    runs = {"once": (sizes.w5_at_once, 0), "map": (sizes.w5_map, sizes.w5_buffersize)}
    for mode, (n, buffersize) in runs.items():
        if mode not in modes:
            continue
        result = attempt(f"W5 {mode}", w5, system, mode, n, buffersize, workers, timeout)
        for key in ("client_mib", "master_mib", "workers_mib", "seconds"):
            say(figures, f"W5 {mode} {key}", system, (result or {}).get(key))


def scale_workload(sizes: Sizes, workers: int, figures: Figures, cwtx: System) -> None:
    result = attempt("scale", scale, sizes, workers)
    for key, value in (result or {}).items():
        say(figures, f"scale {key}", cwtx, value)


def _cwtx(figures: Figures, key: str) -> float | None:
    return figures.get(key, {}).get("cwtx")


def _peer(figures: Figures, key: str, peer: str) -> float | None:
    return figures.get(key, {}).get(peer)


def rows(s: Sizes, f: Figures) -> list[Row]:
    """Every figure's row, with the issue's target where it sets one."""

    def at_most(key: str, times: float, peer: str) -> Callable[[], bool | None]:
        return lambda: _cwtx(f, key) <= times * _peer(f, key, peer)  # type: ignore[operator]

    def at_least(key: str, times: float, peer: str) -> Callable[[], bool | None]:
        return lambda: _cwtx(f, key) >= times * _peer(f, key, peer)  # type: ignore[operator]

    def below(key: str, limit: float) -> Callable[[], bool | None]:
        return lambda: _cwtx(f, key) <= limit  # type: ignore[operator]

    def both(*checks: Callable[[], bool | None]) -> Callable[[], bool | None]:
        return lambda: all(c() for c in checks)

    once, bmap = (
        f"W5 {s.w5_at_once:,} at once",
        f"W5 map {s.w5_map:,}, buffersize {s.w5_buffersize:,}",
    )
    ms = round(s.w4_seconds * 1000)
    out = [
        Row("startup", "start-up: start to first result, s", ".3f",
            "≤ dask's", at_most("startup", 1, "dask")),
        Row("W1", f"W1: {s.w1_jobs:,} no-op jobs at once, jobs/s", ",.0f",
            "≥ 0.7× pool's", at_least("W1", 0.7, "pool")),
        Row("W1 master cpu", "W1: master CPU per job, µs", ",.0f"),
        Row("W2", f"W2: sequential round trip ({s.w2_rounds}), median ms", ".2f",
            "≤ 3× pool's", at_most("W2", 3, "pool")),
        Row("W3", f"W3: {s.w3_jobs} jobs echoing {s.w3_mib} MiB, MiB/s moved", ",.0f",
            "≥ 1.5× dask's, ≥ 0.6× pool's",
            both(at_least("W3", 1.5, "dask"), at_least("W3", 0.6, "pool"))),
        Row("W4", f"W4: {s.w4_jobs} × sleep({ms} ms), ideal/actual", ".3f",
            "≥ 0.97", lambda: _cwtx(f, "W4") >= 0.97),  # type: ignore[operator]
        Row("W5 once client_mib", f"{once}: client peak MiB", ",.0f",
            "≤ pool's", at_most("W5 once client_mib", 1, "pool")),
        Row("W5 once master_mib", f"{once}: master peak MiB", ",.0f",
            "≤ 100", below("W5 once master_mib", 100)),
        Row("W5 once workers_mib", f"{once}: workers peak MiB (sum)", ",.0f"),
        Row("W5 once seconds", f"{once}: wall s", ",.1f"),
        Row("W5 map client_mib", f"{bmap}: client peak MiB", ",.0f",
            "≤ 100", below("W5 map client_mib", 100)),
        Row("W5 map master_mib", f"{bmap}: master peak MiB", ",.0f",
            "≤ 100", below("W5 map master_mib", 100)),
        Row("W5 map workers_mib", f"{bmap}: workers peak MiB (sum)", ",.0f"),
        Row("W5 map seconds", f"{bmap}: wall s", ",.1f"),
        Row("scale base_jobs_per_s", f"scale: {s.scale_jobs:,} no-op jobs/s, 2 workers", ",.0f"),
        Row("scale jobs_per_s", f"scale: the same, {s.scale_peers:,} simulated + 2 workers",
            ",.0f", "≥ 0.8× the 2-worker figure",
            lambda: _cwtx(f, "scale throughput_ratio") >= 0.8),  # type: ignore[operator]
        Row("scale base_idle_cpu", "scale: idle master CPU, 2 workers, % of a core", ".2f"),
        Row("scale idle_cpu", f"scale: idle master CPU, {s.scale_peers:,} simulated, % of a core",
            ".2f", "≤ 5", below("scale idle_cpu", 5)),
        Row("scale master_rss", f"scale: master RSS, {s.scale_peers:,} simulated, MiB", ",.0f"),
        Row("reused reused", f"reused: {s.reused_jobs} jobs on one {s.reused_mib} MiB array, s",
            ",.2f"),
        Row("reused round_trip", f"reused: one {s.reused_mib} MiB round trip, s", ",.2f"),
        Row("reused noops", f"reused: {s.reused_jobs} no-op jobs, s", ",.3f"),
        Row("reused ratio", "reused: jobs ÷ (2 × round trip + no-ops)", ".2f",
            "≤ 1", below("reused ratio", 1)),
    ]  # fmt: skip
    for row in out:
        row.values = f.get(row.key, {})
    return [row for row in out if any(v is not None for v in row.values.values())]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--only", help=f"workloads, comma-separated, of {','.join(WORKLOADS + list(W5_PARTS))}"
    )
    parser.add_argument("--systems", help="systems, comma-separated, of cwtx,pool,dask,ray")
    parser.add_argument("--w5-all", action="store_true", help="run W5 on dask too (slow)")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args(argv)
    args.only = set(args.only.split(",")) if args.only else set(WORKLOADS)
    unknown = args.only - set(WORKLOADS) - set(W5_PARTS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    args.systems = args.systems.split(",") if args.systems else None
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    sizes = QUICK if args.quick else FULL
    home = throwaway_environment()
    began = time.perf_counter()
    figures: Figures = defaultdict(dict)
    chosen = available(args.systems)
    try:
        for system in chosen:
            print(f"{system.label}:", flush=True)
            if args.only & {"startup", "W1", "W2", "W3", "W4", "reused"}:
                attempt(
                    system.name,
                    executor_workloads,
                    *(system, sizes, args.workers, args.only, figures),
                )
            modes = frozenset(mode for name, mode in W5_PARTS.items() if {name, "W5"} & args.only)
            if modes:
                if system.name in W5_SLOW and not args.w5_all:
                    print(f"  (W5 skipped for {system.name}: too slow; --w5-all runs it)")
                else:
                    memory_workloads(system, sizes, args.workers, figures, 3600, modes)
        if "scale" in args.only and any(s.name == "cwtx" for s in chosen):
            print("scale (cwtx):", flush=True)
            scale_workload(
                sizes, args.workers, figures, next(s for s in chosen if s.name == "cwtx")
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print()
    print(table(rows(sizes, figures), [(s.name, s.label) for s in chosen]))
    print()
    notes(chosen, sizes, time.perf_counter() - began)
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": vars(sizes), "figures": figures}, indent=2))


def notes(chosen: list[System], sizes: Sizes, elapsed: float) -> None:
    how = "; ".join(f"{s.name}: {s.buffered_map}" for s in chosen)
    print(f"W5 map with buffersize, how: {how}")
    put = "; ".join(f"{s.name}: {s.put_how}" for s in chosen)
    print(f"reused data, handed over once by: {put}")
    print(
        f"reused data: at most {sizes.reused_in_flight} jobs in flight.  "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
        f"this run took {elapsed:.0f} s."
    )


if __name__ == "__main__":
    main()
