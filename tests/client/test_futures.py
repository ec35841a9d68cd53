"""
ClusterExecutor's Future (``_JobFuture``) and its state machine, with the
reactor thread replaced by a list of calls the test runs: no process, no
socket.  tests/e2e/test_futures.py covers the same against real processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

import cwtx
from cwtx.client import reactor_thread
from cwtx.client.executor import _JobFuture


class Calls:
    """A stand-in for the reactor: callFromThread queues, run() runs."""

    def __init__(self) -> None:
        self.queued: list = []

    def callFromThread(self, f, *args):
        self.queued.append((f, args))

    def run(self) -> None:
        while self.queued:
            f, args = self.queued.pop(0)
            f(*args)


@pytest.fixture
def reactor(monkeypatch):
    calls = Calls()
    monkeypatch.setattr(reactor_thread, "reactor_thread", lambda: calls)
    monkeypatch.setattr(reactor_thread, "in_reactor_thread", lambda: True)
    return calls


class Job:
    """A submitted job's Deferred, as the Client makes it."""

    def __init__(self) -> None:
        self.cancels = 0
        self.deferred: Deferred = Deferred(self._cancel)

    def _cancel(self, d: Deferred) -> None:
        self.cancels += 1
        d.errback(cwtx.JobCancelled("job 1 was cancelled"))


def submitted(ended: list | None = None) -> tuple[_JobFuture, Job]:
    future = _JobFuture((ended if ended is not None else []).append)
    job = Job()
    future._deferred = job.deferred
    job.deferred.addBoth(future._settle)
    return future, job


def test_pending_running_finished(reactor):
    ended: list = []
    future, job = submitted(ended)
    assert not future.running()
    future._started()
    assert future.running() and not future.done()
    future._started()  # a second report changes nothing
    assert future.running()
    job.deferred.callback(42)
    assert future.result(0) == 42 and not future.running()
    assert ended == [future] and future._deferred is None


def test_cancel_is_refused_once_running_as_in_the_stdlib(reactor):
    future, job = submitted()
    future._started()
    assert future.cancel() is False
    reactor.run()
    assert job.cancels == 0 and future.running()


def test_cancel_before_start_cancels_the_job_and_wakes_waiters(reactor):
    ended: list = []
    future, job = submitted(ended)
    woke = {}
    waiter = threading.Thread(target=lambda: woke.update(r=cf.wait([future], timeout=10)))
    waiter.start()
    assert future.cancel() is True and future.cancelled()
    waiter.join(10)
    assert woke["r"].done == {future}
    reactor.run()
    assert job.cancels == 1 and ended[0] is future
    assert list(cf.as_completed([future], timeout=0)) == [future]


def test_a_start_reported_after_a_cancel_cancels_the_job(reactor):
    future, job = submitted()
    assert cf.Future.cancel(future)  # the stdlib's cancel only: as if racing with the report
    future._started()
    assert future.cancelled() and job.cancels == 1
    assert cf.wait([future], timeout=0).done == {future}


def test_kill_a_running_job_ends_it_with_job_cancelled(reactor):
    future, job = submitted()
    future._started()
    assert future.kill() is True
    assert job.cancels == 1 and not future.cancelled()
    assert isinstance(future.exception(0), cwtx.JobCancelled)
    assert future.kill() is False


def test_kill_a_pending_job_is_a_cancel(reactor):
    future, job = submitted()
    assert future.kill() is True and future.cancelled()
    reactor.run()
    assert job.cancels == 1


def test_a_failure_settles_the_future_with_its_exception(reactor):
    future, job = submitted()
    job.deferred.errback(Failure(KeyError("k")))
    assert isinstance(future.exception(0), KeyError)


def test_a_result_after_a_cancel_is_dropped(reactor):
    ended: list = []
    future, job = submitted(ended)
    future.cancel()
    future._settle(1)  # the result crossed the cancel on the wire
    assert future.cancelled() and ended == [future, future]


def test_the_deferred_keeps_no_result(reactor):
    future, job = submitted()
    job.deferred.callback(object())
    assert job.deferred.result is None
