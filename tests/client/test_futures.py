"""
ClusterExecutor's Future (``_JobFuture``) and its state machine, with the
reactor thread replaced by a list of calls the test runs: no process, no
socket.  tests/e2e/test_futures.py covers the same against real processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest
from twisted.python.failure import Failure

import cwtx
from cwtx.client import reactor_thread
from cwtx.client.executor import _JobFuture


class Calls:
    """A stand-in for the reactor thread: call_soon queues, run() runs."""

    def __init__(self) -> None:
        self.queued: list = []

    def call_soon(self, f, *args):
        self.queued.append((f, args))

    def run(self) -> None:
        while self.queued:
            f, args = self.queued.pop(0)
            f(*args)


@pytest.fixture
def reactor(monkeypatch):
    calls = Calls()
    monkeypatch.setattr(reactor_thread, "call_soon", calls.call_soon)
    monkeypatch.setattr(reactor_thread, "in_reactor_thread", lambda: True)
    return calls


class Owner:
    """The executor as a _JobFuture sees it, with the client's cancel."""

    def __init__(self) -> None:
        self.ended: list = []
        self.cancels = 0
        self.futures: dict = {}

    def _forget(self, future) -> None:
        self.ended.append(future)

    def _cancel_job(self, job: int) -> None:
        # As Client.cancel_job: the job ends with JobCancelled.
        self.cancels += 1
        self.futures.pop(job).job_ended(Failure(cwtx.JobCancelled(f"job {job} was cancelled")))


def submitted() -> tuple[_JobFuture, Owner]:
    """A future whose job the client has taken (job id 1)."""
    owner = Owner()
    future = _JobFuture(owner)
    future._job = 1
    owner.futures[1] = future
    return future, owner


def test_pending_running_finished(reactor):
    future, owner = submitted()
    assert not future.running()
    future.job_started()
    assert future.running() and not future.done()
    future.job_started()  # a second report changes nothing
    assert future.running()
    future.job_ended(42)
    assert future.result(0) == 42 and not future.running()
    assert owner.ended == [future] and future._job is None


def test_cancel_is_refused_once_running_as_in_the_stdlib(reactor):
    future, owner = submitted()
    future.job_started()
    assert future.cancel() is False
    reactor.run()
    assert owner.cancels == 0 and future.running()


def test_cancel_before_start_cancels_the_job_and_wakes_waiters(reactor):
    future, owner = submitted()
    woke = {}
    waiter = threading.Thread(target=lambda: woke.update(r=cf.wait([future], timeout=10)))
    waiter.start()
    assert future.cancel() is True and future.cancelled()
    waiter.join(10)
    assert woke["r"].done == {future}
    reactor.run()
    assert owner.cancels == 1 and owner.ended[0] is future
    assert list(cf.as_completed([future], timeout=0)) == [future]


def test_a_start_reported_after_a_cancel_cancels_the_job(reactor):
    future, owner = submitted()
    assert cf.Future.cancel(future)  # the stdlib's cancel only: as if racing with the report
    future.job_started()
    assert future.cancelled() and owner.cancels == 1
    assert cf.wait([future], timeout=0).done == {future}


def test_kill_a_running_job_ends_it_with_job_cancelled(reactor):
    future, owner = submitted()
    future.job_started()
    assert future.kill() is True
    assert owner.cancels == 1 and not future.cancelled()
    assert isinstance(future.exception(0), cwtx.JobCancelled)
    assert future.kill() is False


def test_kill_a_pending_job_is_a_cancel(reactor):
    future, owner = submitted()
    assert future.kill() is True and future.cancelled()
    reactor.run()
    assert owner.cancels == 1


def test_a_failure_settles_the_future_with_its_exception(reactor):
    future, owner = submitted()
    future.job_ended(Failure(KeyError("k")))
    assert isinstance(future.exception(0), KeyError)


def test_a_result_after_a_cancel_is_dropped(reactor):
    future, owner = submitted()
    future.cancel()
    future.job_ended(1)  # the result crossed the cancel on the wire
    assert future.cancelled() and owner.ended == [future, future]


def test_a_job_the_client_could_not_take_fails_its_future(reactor):
    future, owner = submitted()
    future._job = None  # never taken: the client was closed
    try:
        raise RuntimeError("this cwtx client is closed")
    except RuntimeError:
        future.job_ended(Failure())
    assert isinstance(future.exception(0), RuntimeError) and owner.ended == [future]
    assert future.kill() is False and owner.cancels == 0


def test_a_thread_waiting_on_the_future_wakes_when_the_job_ends(reactor):
    # (the Future's Condition keeps its waiters in a list, not a deque)
    future, owner = submitted()
    assert future._condition._waiters == []
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(future.result(30)))
    waiter.start()
    deadline = time.monotonic() + 30
    while not future._condition._waiters and time.monotonic() < deadline:
        pass  # until the thread waits
    assert len(future._condition._waiters) == 1
    future.job_ended(42)
    waiter.join(30)
    assert got == [42] and future._condition._waiters == []
