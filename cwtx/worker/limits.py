"""
Memory limits per slot, and recycled children (``twistd cw-worker
--memory-limit SIZE --max-jobs-per-child N --max-child-memory SIZE``).

A job over the memory limit ends with status ``memory``
(``cwtx.JobMemoryError``, naming the limit and the peak): like an error,
not retried, since it would fail again; its slot gets a fresh child and the
other slots go on.  The limit is on the resident memory (RSS) of the slot's
child process, enforced twice:

* The supervisor reads the RSS of each child running a job every
  POLL_INTERVAL seconds (``/proc/PID/statm``: a few microseconds) and kills
  a child over the limit.  The peak it reports is the child's ``VmHWM``.
* A job can outrun a poll (touching gigabytes in 0.1 s, or asking for
  100 GiB at once) and take the node first.  So each child also gets an
  RLIMIT_DATA, set by the supervisor (``prlimit``) as it starts: past it an
  allocation fails and the job raises MemoryError, which its slot reports as
  ``memory`` too (with the job's traceback), and replaces the child.  Since
  Linux 4.7 RLIMIT_DATA counts the *virtual* private writable memory (heap,
  anonymous mappings, thread stacks), which runs ahead of the RSS: numpy
  alone reserves some 60 MiB it does not touch, plus 8 MiB of stack per
  thread.  Hence :func:`backstop`'s margin: at least double the limit.

Not a cgroup per slot (``memory.max``), though it would count what a job's
own subprocesses use: a worker can make one only where it was delegated a
cgroup v2 subtree (systemd ``Delegate=``), and SLURM does not delegate; and
cgroup v2 forbids processes in a cgroup whose children have controllers, so
the supervisor would have to move itself first.

Recycling: a slot whose child has started ``--max-jobs-per-child`` jobs, or
whose child's RSS after a job is over ``--max-child-memory``, replaces the
child once it is idle, never killing a job (as Celery's
``max_tasks_per_child`` and ``max_memory_per_child``): leaks in user
libraries do not build up for weeks.

The slots call this module through :class:`ChildLimits` (``Slot.limits``)
when they start a child, and when a job starts and ends in it.
"""

from __future__ import annotations

import os
import re
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import txaio

from cwtx._errors import error_json, parse_error
from cwtx.wire.names import JobStatus
from cwtx.wire.payload import EMPTY, Payload
from cwtx.wire.resources import amount, size_text

if TYPE_CHECKING:
    from cwtx.worker.slot import Slot, Task

txaio.use_twisted()
log = txaio.make_logger()

#: Seconds between two reads of a running child's memory.  A job that
#: allocates as fast as it can (some GB/s) is caught this much too late at
#: most; the RLIMIT_DATA backstop bounds the rest.
POLL_INTERVAL = 0.1

#: The backstop (RLIMIT_DATA) is the limit plus the larger of the limit
#: and this many bytes: room for the virtual memory that is not resident.
BACKSTOP_MARGIN = 1 << 30

#: The smallest memory limit a slot may have: its child alone uses about
#: 16 MiB before any job runs.
MIN_MEMORY = 32 << 20

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_FRACTION = re.compile(r"\s*[0-9]*\.?[0-9]+\s*\Z")
#: cgroup memory limits at or above this mean "none" (v1 writes 2^63 - 4096).
_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class Limits:
    """A worker's limits on its slot children; 0 is no limit."""

    memory: int = 0  # bytes of RSS per slot: over it, the job is killed
    jobs_per_child: int = 0  # jobs a child starts before it is replaced
    child_memory: int = 0  # bytes of RSS after a job over which the child is replaced

    def __bool__(self) -> bool:
        return bool(self.memory or self.jobs_per_child or self.child_memory)


# -- sizes ----------------------------------------------------------------


def parse_size(text: str, option: str, root: str = "/") -> int:
    """``--memory-limit`` and ``--max-child-memory``: bytes, from a size
    with a unit (``4G``, ``512MiB``: powers of 1024), or a fraction of this
    node's memory (``0.25``), or 0 for none.  A one-line ValueError says
    what is wrong."""
    if _FRACTION.match(text):
        fraction = float(text)
        if fraction == 0:
            return 0
        if fraction > 1:
            raise ValueError(
                f"{option}: {text!r} needs a unit (4G, 512MiB), or is a fraction of "
                "this node's memory, from 0 to 1 (0.25)"
            )
        size = int(fraction * node_memory(root))
    else:
        size = int(amount(text, option))
    if 0 < size < MIN_MEMORY:
        raise ValueError(
            f"{option}: {text!r} is {size_text(size)}, less than a slot's child needs "
            f"({size_text(MIN_MEMORY)} at least); 0 for none"
        )
    return size


def node_memory(root: str = "/") -> int:
    """The memory this worker may use: the node's (MemTotal), or less if
    its cgroup (a SLURM job's, a container's) or one above it has a limit."""
    total = _meminfo_total(Path(root, "proc/meminfo"))
    return min([total, *cgroup_limits(root)])


def _meminfo_total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no MemTotal in {path}")


def cgroup_limits(root: str = "/") -> list[int]:
    """The memory limits of this process's cgroup and those above it, cgroup
    v2 (``memory.max``) or v1 (``memory.limit_in_bytes``); none if none."""
    try:
        lines = Path(root, "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    found: list[int] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2
            base, name = Path(root, "sys/fs/cgroup"), "memory.max"
        elif "memory" in controllers.split(","):
            base, name = Path(root, "sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            continue
        here = base / path.strip().lstrip("/")
        # Its own and each one above, up to the mount's root (in a cgroup
        # namespace that root is the container's own cgroup).
        for directory in [here, *here.parents]:
            if not directory.is_relative_to(base):
                break
            limit = _read_limit(directory / name)
            if limit is not None:
                found.append(limit)
    return found


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) >= _UNLIMITED:
        return None  # "max", or v1's "unlimited"
    return int(text)


def backstop(limit: int) -> int:
    """The RLIMIT_DATA of a child whose slot has ``limit``: see the module."""
    return limit + max(limit, BACKSTOP_MARGIN)


# -- processes --------------------------------------------------------------


class Proc:
    """What the limits read of a child process, and set on it (tests give a fake)."""

    def rss(self, pid: int) -> int | None:
        """Its resident memory in bytes, or None if it is gone."""
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return None

    def peak(self, pid: int) -> int | None:
        """The most resident memory it has had (VmHWM), or None."""
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def cap_data(self, pid: int, size: int) -> None:
        """Its allocations past ``size`` bytes (RLIMIT_DATA) fail."""
        try:
            _, hard = resource.prlimit(pid, resource.RLIMIT_DATA)
            if hard != resource.RLIM_INFINITY:
                size = min(size, hard)
            resource.prlimit(pid, resource.RLIMIT_DATA, (size, hard))
        except (OSError, ValueError, AttributeError) as e:  # gone, or not Linux
            log.warn("could not cap the memory of child {pid}: {e}", pid=pid, e=e)


def _pid(slot: Slot) -> int | None:
    return getattr(slot.transport, "pid", None) if slot.transport is not None else None


def is_memory_error(error: str) -> bool:
    """A job's error that is a MemoryError (or a subclass: numpy's
    ``_ArrayMemoryError``)."""
    return parse_error(error)["type"].endswith("MemoryError")


class ChildLimits:
    """
    A worker's limits, applied to its slots' children: the slots call
    :meth:`spawned`, :meth:`began` and :meth:`ended`; :meth:`start` polls
    the memory of those running a job.
    """

    def __init__(
        self, clock: Any, limits: Limits, worker: str = "", proc: Proc | None = None
    ) -> None:
        self._clock = clock
        self.limits = limits
        self._worker = worker
        #: How it reads and caps a child's memory (cwtx.testing.FakeMemory in tests).
        self.proc = proc or Proc()
        self._slots: Sequence[Slot] = ()
        self._jobs: dict[int, int] = {}  # slot index -> jobs its child started
        self._killing: dict[int, int] = {}  # slot index -> the pid it killed (until it dies)
        self._loop: Any = None
        #: Jobs killed (or whose allocation failed) over the memory limit.
        self.killed = 0
        #: Children replaced between jobs (--max-jobs-per-child, --max-child-memory).
        self.recycled = 0

    def attach(self, slots: Sequence[Slot]) -> None:
        """Apply the limits to these slots (before they start)."""
        self._slots = slots
        if self.limits:
            for slot in slots:
                slot.limits = self

    def start(self) -> None:
        """Poll the memory of running children, if there is a limit."""
        if self.limits:
            log.info("slot children: {limits}", limits=describe(self.limits))
        if self.limits.memory and self._loop is None:
            from twisted.internet.task import LoopingCall

            self._loop = LoopingCall(self.check)
            self._loop.clock = self._clock
            self._loop.start(POLL_INTERVAL, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def check(self) -> None:
        """Kill each child running a job over the memory limit."""
        limit = self.limits.memory
        for slot in self._slots:
            pid = _pid(slot)
            if slot.current is None or pid is None or self._killing.get(slot.index) == pid:
                continue
            used = self.proc.rss(pid)
            if used is None or used <= limit:
                continue
            peak = max(used, self.proc.peak(pid) or 0)
            message = (
                f"the job used {size_text(used)}, over the memory limit of "
                f"{size_text(limit)} per slot of worker {self._worker} "
                f"(peak {size_text(peak)}); it was killed"
            )
            log.info(
                "slot {slot}: task {task} uses {used}, over the memory limit of {limit} "
                "(peak {peak})",
                slot=slot.index,
                task=slot.current.task,
                used=size_text(used),
                limit=size_text(limit),
                peak=size_text(peak),
            )
            self.killed += 1
            self._killing[slot.index] = pid
            slot.kill(JobStatus.MEMORY, self._error(message, peak))

    def _error(self, message: str, peak: int, traceback: str = "") -> str:
        return error_json("JobMemoryError", message, traceback, limit=self.limits.memory, peak=peak)

    # -- the slots' hooks -------------------------------------------------------

    def spawned(self, slot: Slot) -> None:
        """The slot started a child: cap its allocations."""
        self._jobs[slot.index] = 0
        pid = _pid(slot)
        if self.limits.memory and pid is not None:
            self.proc.cap_data(pid, backstop(self.limits.memory))

    def began(self, slot: Slot) -> None:
        """The slot's child started a job: past --max-jobs-per-child it is
        its last (nothing more is written to the child)."""
        jobs = self._jobs[slot.index] = self._jobs.get(slot.index, 0) + 1
        most = self.limits.jobs_per_child
        if most and jobs >= most:
            self._recycle(slot, f"it ran {jobs} jobs (--max-jobs-per-child {most})")

    def ended(
        self, slot: Slot, task: Task, status: JobStatus, value: Payload, error: str
    ) -> tuple[JobStatus, Payload, str]:
        """A job's result from the slot's child, as it goes to the master:
        a MemoryError under a memory limit is ``memory``; a child over
        --max-child-memory is replaced."""
        pid = _pid(slot)
        if self.limits.memory and status == JobStatus.ERROR and is_memory_error(error):
            peak = (self.proc.peak(pid) if pid is not None else None) or 0
            info = parse_error(error)
            raised = f"{info['type']}: {info['message']}" if info["message"] else info["type"]
            message = (
                f"the job ran out of memory under the memory limit of "
                f"{size_text(self.limits.memory)} per slot of worker {self._worker} "
                f"(peak {size_text(peak)}): an allocation failed ({raised}); "
                f"a slot's allocations stop at {size_text(backstop(self.limits.memory))} "
                "of virtual memory"
            )
            self.killed += 1
            slot.retire("a job ran out of memory")
            return JobStatus.MEMORY, EMPTY, self._error(message, peak, info["traceback"])
        most = self.limits.child_memory
        if most and pid is not None:
            used = self.proc.rss(pid)
            if used is not None and used > most:
                why = f"it uses {size_text(used)} (--max-child-memory {size_text(most)})"
                self._recycle(slot, why)
        return status, value, error

    def _recycle(self, slot: Slot, why: str) -> None:
        self.recycled += 1
        slot.retire(why)


def describe(limits: Limits) -> str:
    """The limits for the worker's start-up line (empty if none)."""
    parts = []
    if limits.memory:
        parts.append(f"memory limit {size_text(limits.memory)} per slot")
    if limits.jobs_per_child:
        parts.append(f"a child runs at most {limits.jobs_per_child} jobs")
    if limits.child_memory:
        parts.append(f"a child over {size_text(limits.child_memory)} after a job is replaced")
    return "; ".join(parts)
