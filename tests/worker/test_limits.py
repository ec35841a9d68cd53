"""
Memory limits per slot and recycled children (worker.limits), on a Clock:
the real slots and supervisor, fake children whose memory the test sets
(``cwtx.testing.FakeMemory``), and in :class:`MemoryCluster` the real
master and client too.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

import cwtx
from cwtx.client.serialize import decode_result, pickle_arguments, pickle_function
from cwtx.tap import worker as worker_tap
from cwtx.testing import FakeMemory, FakeProcessReactor, MemoryCluster
from cwtx.wire.payload import Payload
from cwtx.worker.limits import (
    BACKSTOP_MARGIN,
    POLL_INTERVAL,
    ChildLimits,
    Limits,
    backstop,
    cgroup_limits,
    node_memory,
    parse_size,
    size_text,
)
from cwtx.worker.slot import Slot, Task

MiB = 1 << 20


class Harness:
    """One slot with limits, its children held until the test finishes them."""

    def __init__(self, limits: Limits, hold: bool = True) -> None:
        self.clock = Clock()
        self.reactor = FakeProcessReactor(self.clock, hold=hold)
        self.results: list[tuple[int, str, bytes, dict]] = []
        self.slot = Slot(0, self.reactor, self._result, lambda: None)
        self.memory = FakeMemory()
        self.limits = ChildLimits(self.clock, limits, "w1", self.memory)
        self.limits.attach([self.slot])
        self.slot.start()
        self.limits.start()

    def _result(self, task, status, value, error):
        self.results.append((task.task, status, value.tobytes(), json.loads(error or "{}")))

    @property
    def child(self):
        return self.slot.transport

    def use(self, rss: int, peak: int = 0) -> None:
        """The current child's memory, from now on."""
        self.memory.resident[self.child.pid] = rss
        if peak:
            self.memory.peaks[self.child.pid] = peak

    def task(self, task_id: int, fn=abs, *args) -> Task:
        f = pickle_function(fn)
        return Task(
            task_id, f.hash, f.env, Payload.of(f.code), Payload.of(pickle_arguments(args, {}))
        )


# -- the poll ------------------------------------------------------------------


def test_a_job_over_the_limit_is_killed_with_the_limit_and_its_peak():
    h = Harness(Limits(memory=200 * MiB))
    h.slot.run(h.task(1, abs, 0))
    first = h.child
    h.use(250 * MiB, peak=262 * MiB)
    first.signalProcess = lambda signal: kills.append(signal)
    kills: list[str] = []
    for _ in range(3):  # (a child slow to die is killed once)
        h.clock.advance(POLL_INTERVAL)
    assert kills == ["KILL"] and h.limits.killed == 1
    first.exit(code=None, signal=9)
    assert first.ended
    ((task, status, value, error),) = h.results
    assert (task, status, value) == (1, "memory", b"")
    assert error["type"] == "JobMemoryError"
    assert (error["limit"], error["peak"]) == (200 * MiB, 262 * MiB)
    assert error["message"] == (
        "the job used 250 MiB, over the memory limit of 200 MiB per slot of worker w1 "
        "(peak 262 MiB); it was killed"
    )
    h.clock.advance(0)
    assert h.child is not first and h.slot.free  # a fresh child, at once
    assert h.limits.killed == 1


def test_a_job_under_the_limit_runs_on():
    h = Harness(Limits(memory=200 * MiB))
    h.slot.run(h.task(1, abs, -3))
    h.use(200 * MiB)  # at the limit is not over it
    h.clock.advance(POLL_INTERVAL * 50)
    assert not h.child.ended and h.results == []
    h.child.finish()
    assert [(r[1], pickle.loads(r[2])) for r in h.results] == [("ok", 3)]


def test_an_idle_child_is_not_read():
    """The poll reads only children that run a job (no job to blame, and
    an idle worker costs nothing)."""
    h = Harness(Limits(memory=200 * MiB))
    reads = []
    h.memory.rss = lambda pid: reads.append(pid) or 300 * MiB
    h.clock.advance(POLL_INTERVAL * 5)
    assert not h.child.ended and h.results == [] and reads == []
    h.slot.run(h.task(1, abs, 0))
    h.clock.advance(POLL_INTERVAL)
    assert reads == [h.reactor.children[0].pid]


def test_without_a_memory_limit_nothing_polls():
    h = Harness(Limits(jobs_per_child=5))
    assert not h.clock.getDelayedCalls()


def test_every_child_gets_the_backstop_restarted_ones_too():
    h = Harness(Limits(memory=200 * MiB))
    first = h.child
    assert h.memory.caps == {first.pid: 200 * MiB + BACKSTOP_MARGIN}
    h.slot.run(h.task(1, abs, 0))
    first.exit(code=None, signal=9)
    h.clock.advance(0)
    assert h.memory.caps[h.child.pid] == 200 * MiB + BACKSTOP_MARGIN
    assert backstop(4 << 30) == 8 << 30  # at least double the limit


def oom():
    raise MemoryError("Unable to allocate 80.0 GiB for an array")


def test_a_memory_error_under_a_limit_is_a_memory_result_and_the_child_goes():
    """An allocation the backstop refused: the job's MemoryError, reported as
    memory (with its traceback), and the slot's child replaced."""
    h = Harness(Limits(memory=200 * MiB))
    h.slot.run(h.task(1, oom))
    first = h.child
    h.use(40 * MiB, peak=180 * MiB)
    h.child.finish()
    ((task, status, value, error),) = h.results
    assert (task, status, value) == (1, "memory", b"")
    assert error["type"] == "JobMemoryError"
    assert (error["limit"], error["peak"]) == (200 * MiB, 180 * MiB)
    assert "memory limit of 200 MiB per slot of worker w1 (peak 180 MiB)" in error["message"]
    assert "MemoryError: Unable to allocate 80.0 GiB" in error["message"]
    assert "in oom" in error["traceback"]
    h.clock.advance(0)
    assert first.ended and h.child is not first


def test_without_a_memory_limit_a_memory_error_is_the_job_s_own():
    h = Harness(Limits(jobs_per_child=5))
    h.slot.run(h.task(1, oom))
    h.child.finish()
    ((_, status, value, error),) = h.results
    assert status == "error" and error["type"] == "MemoryError"
    assert isinstance(pickle.loads(value), MemoryError)


# -- recycling -------------------------------------------------------------------


def test_a_child_is_replaced_after_max_jobs_per_child_between_jobs():
    h = Harness(Limits(jobs_per_child=3))
    pids = []
    for task in range(1, 8):
        assert h.slot.free
        h.slot.run(h.task(task, abs, -task))
        pids.append(h.child.pid)
        assert not h.child.ended  # never while a job runs
        h.child.finish()
        h.clock.advance(0)
    assert [r[1] for r in h.results] == ["ok"] * 7
    assert pids[:3] == [pids[0]] * 3 and pids[3:6] == [pids[3]] * 3
    assert len(set(pids)) == 3
    assert h.limits.recycled == 2


def test_nothing_is_written_ahead_behind_a_child_s_last_job():
    h = Harness(Limits(jobs_per_child=2))
    h.slot.run(h.task(1, abs, 0))
    h.child.finish()
    h.slot.run(h.task(2, abs, 0))  # its last
    assert h.slot.room == 0
    first = h.child
    h.child.finish()
    h.clock.advance(0)
    assert first.ended and h.slot.free and h.child is not first


def test_a_child_over_max_child_memory_after_a_job_is_replaced_then():
    h = Harness(Limits(child_memory=100 * MiB))
    h.slot.run(h.task(1, abs, 0))
    first = h.child
    h.use(90 * MiB)
    h.child.finish()
    h.clock.advance(0)
    assert not first.ended  # under it
    h.slot.run(h.task(2, abs, -2))
    h.use(150 * MiB)
    h.clock.advance(10)
    assert not first.ended  # over it, but running a job: it finishes first
    h.child.finish()
    assert [(r[1], pickle.loads(r[2])) for r in h.results] == [("ok", 0), ("ok", 2)]
    h.clock.advance(0)
    assert first.ended and h.child is not first and h.slot.free
    assert h.limits.recycled == 1


def test_a_child_that_started_the_next_job_runs_it_before_it_is_replaced():
    """A job written ahead that the child started when the last ended (its
    result names it) runs to its end in that child."""
    h = Harness(Limits(child_memory=100 * MiB))
    h.slot.run(h.task(1, abs, 0))
    h.child.finish()  # (a short job: the next are written ahead)
    first = h.child
    h.slot.run(h.task(2, abs, -2))
    assert h.slot.room == 1
    h.slot.run(h.task(3, abs, -3))
    h.use(150 * MiB)
    h.child.finish()  # 2 ends over the size, and the child starts 3
    h.clock.advance(0)
    assert not first.ended and h.slot.current.task == 3 and h.slot.room == 0
    h.child.finish()
    h.clock.advance(0)
    assert [(r[0], r[1]) for r in h.results] == [(1, "ok"), (2, "ok"), (3, "ok")]
    assert first.ended and h.child is not first


# -- through the master, to the client -------------------------------------------


def test_a_job_over_the_limit_fails_with_job_memory_error_and_is_not_retried():
    """Two slots: one's job goes over the limit, the other's finishes; the
    first slot's next job runs in a fresh child."""
    cluster = MemoryCluster(workers=0, hold=True)
    worker = cluster.add_worker(slots=2, limits=Limits(memory=200 * MiB), hold=True)
    client = cluster.client()
    big, small = client.submit(abs, -1), client.submit(abs, -2)
    cluster.flush()
    hog = cluster.child(worker, 0)
    worker.limits.proc.resident[hog.pid] = 300 * MiB
    cluster.advance(POLL_INTERVAL)
    with pytest.raises(cwtx.JobMemoryError, match="over the memory limit of 200 MiB") as e:
        cluster.result(big)
    assert isinstance(e.value, MemoryError)
    assert (e.value.limit, e.value.peak) == (200 * MiB, 300 * MiB)
    assert not cluster.child(worker, 1).ended
    cluster.finish(worker, 1)
    assert cluster.result(small) == 2
    after = client.submit(abs, -3)
    cluster.flush()
    assert cluster.child(worker, 0) is not hog
    cluster.finish(worker, 0)
    assert cluster.result(after) == 3
    assert len(cluster.ran(worker)) == 3  # the hog ran once: not retried
    (status,) = cluster.master.status()["workers"]
    assert (status["done"], status["failed"], status["lost"]) == (2, 1, 0)


def test_job_memory_error_decodes_and_pickles():
    error = json.dumps(
        {"type": "JobMemoryError", "message": "m", "traceback": "tb", "limit": 5, "peak": 7}
    )
    ok, exc = decode_result("memory", b"", error)
    assert not ok and isinstance(exc, cwtx.JobMemoryError)
    assert (str(exc), exc.limit, exc.peak, exc.remote_traceback) == ("m", 5, 7, "tb")
    again = pickle.loads(pickle.dumps(exc))
    assert (again.limit, again.peak) == (5, 7)
    odd = json.dumps({"type": "JobMemoryError", "message": "m", "limit": "x", "peak": True})
    _, exc = decode_result("memory", b"", odd)
    assert (exc.limit, exc.peak) == (None, None)


# -- options ---------------------------------------------------------------------


def fake_node(tmp_path: Path, cgroup: str, files: dict[str, str]) -> str:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/meminfo").write_text("MemTotal:       16777216 kB\nMemFree: 1 kB\n")
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


def test_a_fraction_is_of_the_node_s_memory(tmp_path):
    root = fake_node(tmp_path, "0::/user.slice/job\n", {"user.slice/job/memory.max": "max\n"})
    assert node_memory(root) == 16 << 30
    assert parse_size("0.25", "--memory-limit", root) == 4 << 30


def test_a_fraction_is_of_a_cgroup_limit_above_this_one_if_less(tmp_path):
    root = fake_node(
        tmp_path,
        "0::/slurm/job_7/step_0\n",
        {"slurm/job_7/memory.max": f"{8 << 30}\n", "slurm/job_7/step_0/memory.max": "max\n"},
    )
    assert cgroup_limits(root) == [8 << 30]
    assert parse_size("0.5", "--memory-limit", root) == 4 << 30


def test_a_cgroup_v1_limit_counts_and_unlimited_does_not(tmp_path):
    root = fake_node(
        tmp_path,
        "4:memory:/docker/abc\n1:cpu:/\n",
        {
            "memory/docker/abc/memory.limit_in_bytes": f"{2 << 30}\n",
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
        },
    )
    assert node_memory(root) == 2 << 30


def test_the_worker_options_give_its_limits():
    options = worker_tap.Options()
    options.parseOptions(
        ["--master", "h", "--memory-limit", "4G", "--max-jobs-per-child", "100",
         "--max-child-memory", "512MiB"]
    )  # fmt: skip
    assert options["limits"] == Limits(4 << 30, 100, 512 * MiB)
    defaults = worker_tap.Options()
    defaults.parseOptions(["--master", "h"])
    assert defaults["limits"] == Limits() and not defaults["limits"]


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--memory-limit", "lots"], "--memory-limit: 'lots' is not an amount"),
        (["--memory-limit", "4096"], "--memory-limit: '4096' needs a unit"),
        (["--memory-limit", "-1G"], "--memory-limit: '-1G' is not an amount"),
        (["--memory-limit", "1M"], "less than a slot's child needs"),
        (["--max-child-memory", "2"], "--max-child-memory: '2' needs a unit"),
        (["--max-jobs-per-child", "-1"], "must be 0 .no limit. or more"),
        (["--max-jobs-per-child", "x"], "invalid literal"),
    ],
)
def test_bad_limits_are_one_line_usage_errors(argv, complaint):
    options = worker_tap.Options()
    with pytest.raises(usage.UsageError, match=complaint) as e:
        options.parseOptions(["--master", "h", *argv])
    assert "\n" not in str(e.value)


def test_sizes_read_as_people_write_them():
    assert [size_text(n) for n in (4 << 30, 4.3 * (1 << 30), 200 * MiB, 1000 * MiB, 512)] == [
        "4 GiB", "4.3 GiB", "200 MiB", "1000 MiB", "512 B",
    ]  # fmt: skip


def test_the_real_proc_reads_this_process_and_caps_it():
    """/proc and prlimit, on this very process (its cap put back after)."""
    import os
    import resource

    from cwtx.worker.limits import Proc

    proc, pid = Proc(), os.getpid()
    rss, peak = proc.rss(pid), proc.peak(pid)
    assert rss is not None and peak is not None and 1 * MiB < rss <= peak
    assert proc.rss(2**22 + 1) is None and proc.peak(2**22 + 1) is None  # (above pid_max)
    before = resource.getrlimit(resource.RLIMIT_DATA)
    try:
        proc.cap_data(pid, 1 << 50)
        hard = before[1]
        expected = 1 << 50 if hard == resource.RLIM_INFINITY else min(1 << 50, hard)
        assert resource.getrlimit(resource.RLIMIT_DATA) == (expected, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, before)


def test_stopping_the_poll_ends_it():
    h = Harness(Limits(memory=200 * MiB))
    assert h.clock.getDelayedCalls()
    h.limits.stop()
    assert not h.clock.getDelayedCalls()
