"""
The blocking clients hand jobs to the reactor thread in batches, against
a MemoryCluster: the reactor thread is its Clock, whose callFromThread
only records a wake-up, and ``settle()`` serves those wake-ups and the
cluster until nothing moves.  No process, no socket, no real thread but
a ClientThread's callback thread.
"""

from __future__ import annotations

import gc
import queue
import threading
import tracemalloc

import pytest

import cwtx
from cwtx.client import client_thread, executor, reactor_thread
from cwtx.client.handoff import Handoff
from cwtx.testing import MemoryCluster


class ReactorThread:
    """The reactor thread, stood in for by the cluster's Clock."""

    def __init__(self, cluster: MemoryCluster) -> None:
        self.cluster = cluster
        self.woken: list = []

    def callFromThread(self, f, *args) -> None:
        self.woken.append((f, args))

    def callLater(self, delay, f, *args):
        return self.cluster.clock.callLater(delay, f, *args)

    def settle(self) -> None:
        for _ in range(1_000):
            while self.woken:
                f, args = self.woken.pop(0)
                f(*args)
            self.cluster.flush()
            if not self.woken:
                return
        raise AssertionError("still busy")


@pytest.fixture
def world(monkeypatch):
    """(cluster, the Deferred client, the reactor thread, its Handoff)."""
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    thread = ReactorThread(cluster)
    handoff = Handoff(thread)
    monkeypatch.setattr(reactor_thread, "call_soon", handoff)
    monkeypatch.setattr(reactor_thread, "reactor_thread", lambda: thread)

    def blocking(fn, *args, timeout=None, **kwargs):
        future = reactor_thread.call(fn, *args, **kwargs)
        thread.settle()
        return future.result(0)

    monkeypatch.setattr(reactor_thread, "blocking", blocking)
    for module in (executor, client_thread):
        monkeypatch.setattr(module, "connect_blocking", lambda *a, **k: client)
        monkeypatch.setattr(module, "finish_at_exit", lambda c: None)
    return cluster, client, thread, handoff


def square(x: int) -> int:
    return x * x


def test_many_submits_one_wake_up_in_order(world):
    cluster, client, thread, handoff = world
    ex = executor.ClusterExecutor()
    fs = [ex.submit(square, i) for i in range(50)]
    assert len(thread.woken) == 1 and handoff.wakeups == 1
    assert not any(f.done() for f in fs) and client.pending == 0
    f, args = thread.woken.pop()
    f(*args)  # one turn of the reactor thread takes them all, in order
    assert [f._job for f in fs] == sorted(f._job for f in fs) and client.pending == 50
    thread.settle()
    assert [f.result(0) for f in fs] == [i * i for i in range(50)]


def test_a_pickling_error_raises_at_submit_and_loses_no_other_job(world):
    cluster, client, thread, handoff = world
    ex = executor.ClusterExecutor()
    before = ex.submit(square, 2)
    with pytest.raises(TypeError):
        ex.submit(square, threading.Lock())
    after = ex.submit(square, 3)
    thread.settle()
    assert (before.result(0), after.result(0)) == (4, 9)


def test_shutdown_with_submissions_still_queued_sends_them_then_closes(world):
    cluster, client, thread, handoff = world
    ex = executor.ClusterExecutor()
    fs = [ex.submit(square, i) for i in range(5)]
    ex.shutdown(wait=False)
    assert len(handoff) == 5 and client.connected
    thread.settle()
    assert [f.result(0) for f in fs] == [0, 1, 4, 9, 16]
    assert not client.connected  # closed once the last job ended


def test_jobs_queued_behind_a_close_fail_clearly(world):
    cluster, client, thread, handoff = world
    ex = executor.ClusterExecutor()
    reactor_thread.call_soon(client.close)
    fs = [ex.submit(square, i) for i in range(3)]
    thread.settle()
    for f in fs:
        with pytest.raises(RuntimeError, match="closed"):
            f.result(0)


def test_cancel_of_a_queued_submission_never_sends_it(world):
    cluster, client, thread, handoff = world
    ex = executor.ClusterExecutor()
    fs = [ex.submit(square, i) for i in range(3)]
    assert fs[1].cancel()
    thread.settle()
    assert fs[1].cancelled() and [fs[0].result(0), fs[2].result(0)] == [0, 4]
    assert len(cluster.ran(cluster.workers[0])) == 2


class CountingQueue:
    """A ClientThread's queue to its callback thread, counting the puts."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.puts = 0

    def put(self, item) -> None:
        self.puts += 1
        self.queue.put(item)

    def get(self):
        return self.queue.get()


def test_client_thread_hands_jobs_and_results_over_in_batches(world):
    cluster, client, thread, handoff = world
    got: list = []
    ct = client_thread.ClientThread(lambda jobid, result: got.append((jobid, result)))
    ct._results = handed = CountingQueue()
    ct.start()
    try:
        for i in range(20):
            ct.submit(f"job {i}", square, i)
        assert handoff.wakeups == 1
        thread.settle()
        ct.wait(10)
        assert got == [(f"job {i}", i * i) for i in range(20)]
        # Jobs that end in one turn of the reactor loop wake the callback
        # thread once.
        puts = handed.puts
        with ct._cond:
            ct._active += 2  # as two submits would
        ct._ended("a", 1)
        ct._ended("b", 2)
        assert handed.puts == puts
        cluster.clock.advance(0)
        assert handed.puts == puts + 1
        ct.wait(10)
        assert got[-2:] == [("a", 1), ("b", 2)]
    finally:
        ct.stop()


def test_client_thread_stop_with_jobs_queued_fails_them_clearly(world):
    cluster, client, thread, handoff = world
    ct = client_thread.ClientThread(lambda jobid, result: None)
    ct.start()
    ct.submit(1, square, 2)
    ct.stop()  # the job reaches the client, which the stop closes
    assert ct.pending == 0
    with pytest.raises(cwtx.MasterConnectionLost, match="closed"):
        ct.wait(0)


def test_bytes_per_pending_job_in_the_client(world):
    """What 2,000 jobs handed to the client, not ended, cost this process
    (tracemalloc): 3,300 bytes each, their Futures included, before they
    were cut to about 1,150 (CPython 3.11)."""
    cluster, client, thread, handoff = world
    ex = executor.ClusterExecutor()
    ex.submit(square, 0)
    thread.settle()
    gc.collect()
    n = 2_000
    handoff._per_turn = n  # all in one turn, before the client sends any
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        fs = [ex.submit(square, i) for i in range(n)]
        f, args = thread.woken.pop()
        f(*args)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert client.pending == n and len(fs) == n
    per_job = sum(s.size_diff for s in after.compare_to(before, "filename")) / n
    assert per_job < 1_500, per_job
    thread.settle()
    assert [f.result(0) for f in fs[:3]] == [0, 1, 4]
