"""What the kernel says about a process (Linux /proc): memory peaks, CPU
time, children.  No psutil, so the quick mode runs with the test extra."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def _status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status, in KiB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def peak_rss_mib(pid: int | str = "self") -> float:
    """The process's peak resident set (VmHWM), MiB.  Not ru_maxrss: Linux
    carries that over from the parent across fork."""
    return _status_kib(pid, "VmHWM") / 1024  # type: ignore[arg-type]


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS") / 1024


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time the process has used, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS  # utime, stime


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used."""
    return sum(cpu_times(pid))


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    parents = _parents()
    found, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        todo += kids
    return found


def trees_peak_mib(pids: list[int]) -> float:
    """The sum of the peak RSS of every process in these processes' trees
    (each process's own peak: an upper bound of their peak together)."""
    return sum(peak_rss_mib(p) for root in pids for p in tree(root))
