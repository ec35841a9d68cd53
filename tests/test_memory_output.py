"""
Output forwarding (``forward_output``) through the real master, worker
supervisor, slot and child code, in memory: what a job prints comes back to
its client, prefixed, before its result, and bounded on the way.
"""

from __future__ import annotations

import os
import sys

import pytest

from cwtx.master.roles import MAX_UNSENT_OUTPUT
from cwtx.testing import MemoryCluster
from cwtx.wire import commands
from cwtx.worker.output import MAX_LINE, OUTPUT_BURST, RECORD_TEXT
from cwtx.worker.supervisor import MAX_UNSENT_OUTPUT as WORKER_MAX_UNSENT


def chatty(n):
    print("hello", n)
    print("oops", n, file=sys.stderr)
    os.write(1, b"raw bytes on fd 1\n")  # not through sys.stdout
    print("no newline at the end", end="")
    return n


def flood(lines, width=10):
    line = "x" * width
    for _ in range(lines):
        print(line)
    return "done"


def long_line(n):
    print("y" * n)
    print("after")


class Collect:
    """A forward_output callback that also notes whether each job had
    ended when its lines came."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str, str, str]] = []
        self.ended: set[int] = set()
        self.late: list[int] = []

    def __call__(self, job, worker, stream, line):
        if job in self.ended:
            self.late.append(job)
        self.lines.append((job, worker, stream, line))

    def track(self, d, job):
        d.addBoth(lambda r: (self.ended.add(job), r)[1])
        return d

    def of(self, job, stream=None):
        return [line for j, _, s, line in self.lines if j == job and stream in (None, s)]


def test_a_jobs_lines_come_back_by_stream_with_its_worker_before_its_result():
    cluster = MemoryCluster(workers=1)
    got = Collect()
    client = cluster.client(forward_output=got)
    ds = [got.track(client.submit(chatty, i), i + 1) for i in range(3)]
    cluster.flush()
    assert [cluster.result(d) for d in ds] == [0, 1, 2]
    for i in range(3):
        job = i + 1
        assert got.of(job, "stdout") == [
            f"hello {i}",
            "raw bytes on fd 1",
            "no newline at the end",
        ]
        assert got.of(job, "stderr") == [f"oops {i}"]
    assert {w for _, w, _, _ in got.lines} == {"memory-0"}
    assert got.late == []  # every line came before its job's result


def test_by_default_lines_go_to_sys_stdout_and_stderr_prefixed(capsys):
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    d = client.options(forward_output=True).submit(chatty, 7)
    cluster.flush()
    assert cluster.result(d) == 7
    out, err = capsys.readouterr()
    assert "(worker memory-0, job 1) hello 7\n" in out
    assert "(worker memory-0, job 1) raw bytes on fd 1\n" in out
    assert "(worker memory-0, job 1) oops 7\n" in err
    assert "oops" not in out and "hello" not in err


def test_without_forward_output_nothing_is_forwarded_or_captured(capfd):
    cluster = MemoryCluster(workers=1)
    got = Collect()
    client = cluster.client()
    sent = []
    original = cluster.workers[0].connection.callRemote

    def spy(command, **kw):
        sent.append(command)
        return original(command, **kw)

    cluster.workers[0].connection.callRemote = spy
    d = client.submit(chatty, 1)
    cluster.flush()
    assert cluster.result(d) == 1
    assert got.lines == [] and commands.TaskOutput not in sent
    out, err = capfd.readouterr()  # it went where the worker's output goes
    assert "hello 1" in out and "oops 1" in err


def test_a_job_can_opt_out_of_the_clients_forwarding():
    cluster = MemoryCluster(workers=1)
    got = Collect()
    client = cluster.client(forward_output=got)
    d1 = client.options(forward_output=False).submit(chatty, 1)
    d2 = client.submit(chatty, 2)
    cluster.flush()
    assert (cluster.result(d1), cluster.result(d2)) == (1, 2)
    assert got.of(1) == [] and "hello 2" in got.of(2)


def test_forward_output_must_be_a_bool_or_a_callable():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    with pytest.raises(ValueError, match="forward_output must be True or False"):
        client.options(forward_output="yes")
    with pytest.raises(ValueError, match="forward_output must be True, False or a callable"):
        cluster.client(forward_output="yes")


def test_a_long_line_is_cut_with_a_marker():
    cluster = MemoryCluster(workers=1)
    got = Collect()
    client = cluster.client(forward_output=got)
    d = client.submit(long_line, 100_000)
    cluster.flush()
    cluster.result(d)
    first, after = got.of(1)
    assert first == "y" * MAX_LINE + f" [cwtx: line cut at {MAX_LINE} bytes]"
    assert after == "after"


def test_a_flood_is_bounded_and_says_how_many_lines_were_dropped():
    cluster = MemoryCluster(workers=1)
    got = Collect()
    client = cluster.client(forward_output=got)
    received = []
    original = client._protocol._output

    def spy(output):
        received.append(sum(len(r["text"]) for r in output))
        return original(output)

    client._protocol._output = spy
    lines = 200_000  # 2.2 MB, printed at once (no time passes on the Clock)
    d = client.submit(flood, lines)
    cluster.flush()
    assert cluster.result(d) == "done"
    forwarded = [line for line in got.of(1) if line == "x" * 10]
    notices = [line for line in got.of(1) if line.startswith("[cwtx:")]
    assert 0 < len(forwarded) * 11 <= OUTPUT_BURST
    assert notices == [f"[cwtx: {lines - len(forwarded)} lines dropped]"]
    assert sum(received) <= OUTPUT_BURST + 100
    assert got.late == []


def test_the_budget_refills_with_time():
    from cwtx.worker.output import OutputLimiter

    limiter = OutputLimiter(now=0.0, burst=100, rate=10)
    line = b"z" * 9 + b"\n"
    assert len("".join(limiter.feed("stdout", line * 20, now=0.0)).splitlines()) == 10
    assert limiter.feed("stdout", line, now=0.5) == []  # 5 bytes: not a line's worth
    texts = limiter.feed("stdout", line, now=2.0)
    assert texts == ["[cwtx: 11 lines dropped]\n" + "z" * 9 + "\n"]
    assert limiter.close() == []


def test_limiter_texts_are_whole_lines_in_bounded_records():
    from cwtx.worker.output import OutputLimiter

    limiter = OutputLimiter(now=0.0)
    data = b"".join(b"%d\n" % i for i in range(20_000)) + b"tail"
    texts = limiter.feed("stderr", data, now=0.0)
    assert all(t.endswith("\n") and len(t) <= RECORD_TEXT for t in texts)
    assert "".join(texts) == data.decode()[: -len("tail")]
    assert limiter.close() == [("stderr", "tail\n")]
    bad = limiter.feed("stdout", b"\xff\xfeok\n", now=0.0)
    assert bad == ["\ufffd\ufffdok\n"]


def test_the_master_bounds_what_waits_for_a_slow_client():
    cluster = MemoryCluster(workers=1, hold=True)
    got = Collect()
    client = cluster.client(forward_output=got)
    d = got.track(client.submit(abs, -3), 1)
    cluster.flush()
    worker = cluster.workers[0]
    [task] = list(worker.tasks)
    responders = cluster.master_end(client).responders
    # A worker sends far more than the client takes (nothing is pumped
    # to the client meanwhile): the master keeps at most MAX_UNSENT_OUTPUT.
    job = cluster.master.clients[0].jobs[1]
    text = "m" * 99 + "\n"
    for _ in range(3 * MAX_UNSENT_OUTPUT // len(text)):
        cluster.master.task_output(job.worker, task, "stdout", text)
        assert responders.output_chars <= MAX_UNSENT_OUTPUT
    dropped = responders.output_dropped[1][1]
    assert dropped >= MAX_UNSENT_OUTPUT // len(text)
    cluster.finish()
    assert cluster.result(d) == 3
    kept = [line for line in got.of(1) if line.startswith("m")]
    assert len(kept) + dropped == 3 * MAX_UNSENT_OUTPUT // len(text)
    assert got.of(1, "stderr") == [f"[cwtx: {dropped} lines dropped]"]
    assert got.late == []


def test_the_master_ignores_output_for_jobs_that_did_not_ask():
    cluster = MemoryCluster(workers=1, hold=True)
    got = Collect()
    client = cluster.client()
    client._output_to = got
    d = client.submit(abs, -3)
    cluster.flush()
    [task] = list(cluster.workers[0].tasks)
    job = cluster.master.clients[0].jobs[1]
    cluster.master.task_output(job.worker, task, "stdout", "sneaky\n")
    cluster.finish()
    assert cluster.result(d) == 3 and got.lines == []


def test_the_worker_bounds_what_waits_for_the_master():
    cluster = MemoryCluster(workers=1, hold=True)
    got = Collect()
    client = cluster.client(forward_output=got)
    d = client.submit(abs, -3)
    cluster.flush()
    worker = cluster.workers[0]
    task = worker.tasks[next(iter(worker.tasks))]
    for _ in range(WORKER_MAX_UNSENT + 10):  # not pumped meanwhile
        worker._slot_output(task, "stdout", "w\n")
    assert len(worker.connection.output) == WORKER_MAX_UNSENT
    assert task.output_dropped == 10
    cluster.finish()
    assert cluster.result(d) == 3
    assert got.of(1).count("w") == WORKER_MAX_UNSENT
    assert got.of(1)[-1] == "[cwtx: 10 lines dropped]"


def test_control_characters_reach_the_terminal_escaped(capsys):
    from cwtx.client.client import write_output

    write_output(3, "w1", "stdout", "a\x1b]0;title\x07\r(worker w9, job 1) b\tc\x9b")
    out, _ = capsys.readouterr()
    assert out == "(worker w1, job 3) a\\x1b]0;title\\x07\\x0d(worker w9, job 1) b\tc\\x9b\n"
