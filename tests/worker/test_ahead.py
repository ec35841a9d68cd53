"""
Tasks written ahead to a slot's child (``slot.PIPELINE_DEPTH``), through the
real master, supervisor and slots with fake children (cwtx.testing), on a
Clock: the next task is in the child before the running one ends, and it
still starts, times out, is cancelled, handed back or taken back as a task
waiting in the worker's queue would be.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import Deferred

import cwtx
from cwtx.testing import MemoryCluster
from cwtx.worker.pipe import HAND_BACK_AFTER
from cwtx.worker.supervisor import START_REPORT_DELAY


def warm(cluster, worker, client):
    """One short job first: a slot writes ahead only behind short tasks."""
    d = client.submit(abs, -100)
    cluster.flush()
    cluster.finish(worker)
    assert cluster.result(d) == 100


def written(worker, slot=0):
    """Task ids the slot's child was sent, in order (skips left out)."""
    headers = [json.loads(m[0]) for m in MemoryCluster.child(worker, slot).messages]
    return [h["task"] for h in headers if "skip" not in h]


def test_the_next_task_is_in_the_child_before_the_first_result():
    cluster = MemoryCluster(workers=0, prefetch=4)
    worker = cluster.add_worker(hold=True)
    client = cluster.client()
    warm(cluster, worker, client)
    ds = [client.submit(abs, -i) for i in (1, 2, 3)]
    cluster.flush()
    slot = worker.slots[0]
    assert len(written(worker)) == 3  # the warm-up's, the running one, one ahead
    assert len(slot.queued) == 1 and len(worker.queue) == 1
    assert not any(d.called for d in ds)
    for _ in ds:
        cluster.finish(worker)
    assert [cluster.result(d) for d in ds] == [1, 2, 3]
    assert len(cluster.ran(worker)) == 4


def test_the_master_hears_a_task_started_when_it_starts_not_when_it_is_written():
    cluster = MemoryCluster(workers=0, prefetch=4)
    worker = cluster.add_worker(hold=True)
    client = cluster.client()
    warm(cluster, worker, client)
    for i in (1, 2):
        client.submit(abs, -i)
    cluster.report_starts()
    assert len(worker.slots[0].queued) == 1
    status = cluster.master.status()
    assert (status["running"], status["prefetched"]) == (1, 1)
    cluster.finish(worker)  # the first ends; the one written ahead starts
    cluster.report_starts()
    status = cluster.master.status()
    assert (status["running"], status["prefetched"]) == (1, 0)


def test_a_task_written_ahead_times_out_counting_from_its_own_start():
    cluster = MemoryCluster(workers=0, prefetch=4)
    worker = cluster.add_worker(hold=True)
    client = cluster.client()
    warm(cluster, worker, client)
    first = client.submit(abs, -1)
    second = client.options(timeout=0.3).submit(abs, -2)
    cluster.flush()
    assert len(worker.slots[0].queued) == 1
    cluster.advance(0.4)  # longer than its timeout, while the first runs
    assert not second.called
    cluster.finish(worker)
    assert cluster.result(first) == 1
    cluster.advance(0.25)
    assert not second.called
    cluster.advance(0.1)
    with pytest.raises(cwtx.JobTimeout):
        cluster.result(second)


def test_a_task_cancelled_while_written_ahead_never_runs():
    cluster = MemoryCluster(workers=0, prefetch=4)
    worker = cluster.add_worker(hold=True)
    client = cluster.client()
    warm(cluster, worker, client)
    ds = [client.submit(abs, -i) for i in (1, 2, 3)]
    cluster.flush()
    ahead = worker.slots[0].queued[0].task
    ds[1].cancel()
    cluster.flush()
    cluster.finish(worker)  # the child reads the skip before starting another
    with pytest.raises(cwtx.JobCancelled):
        cluster.result(ds[1])
    cluster.finish(worker)
    assert cluster.result(ds[0]) == 1 and cluster.result(ds[2]) == 3
    assert ahead not in cluster.ran(worker)
    assert len(worker.reactor.children) == 1  # no child was killed for it
    assert worker.tasks == {} and cluster.master.workers[0].running == {}


def test_a_task_written_ahead_to_a_child_that_crashes_runs_in_the_next_one():
    cluster = MemoryCluster(workers=0, prefetch=4, max_retries=0)
    worker = cluster.add_worker(hold=True)
    client = cluster.client()
    warm(cluster, worker, client)
    ds = [client.submit(abs, -i) for i in (1, 2)]
    cluster.flush()
    ahead = worker.slots[0].queued[0].task
    cluster.child(worker).exit(code=None, signal=11)  # the running job crashes it
    cluster.flush()
    with pytest.raises(cwtx.JobLost):
        cluster.result(ds[0])
    assert written(worker) == [ahead]  # sent again, to the fresh child
    cluster.finish(worker)
    assert cluster.result(ds[1]) == 2  # max_retries=0: it was not an attempt


def test_an_idle_worker_takes_back_a_task_written_ahead_of_a_long_job():
    """The long job started after short ones, so the next was written
    ahead of it: the idle worker's take-back waits for the child to drop
    it (it does once its job has run HAND_BACK_AFTER)."""
    cluster = MemoryCluster(workers=0, prefetch=4)
    busy = cluster.add_worker(name="busy", hold=True)
    client = cluster.client()
    warm(cluster, busy, client)
    ds = [client.submit(abs, -i) for i in (1, 2, 3)]
    cluster.flush()
    assert len(busy.slots[0].queued) == 1
    idle = cluster.add_worker(name="idle")
    cluster.flush()
    assert cluster.result(ds[2]) == 3  # it waited in the busy one's queue
    assert not ds[1].called  # written ahead: the answer waits for the child
    cluster.advance(HAND_BACK_AFTER)
    assert cluster.result(ds[1]) == 2
    assert len(cluster.ran(idle)) == 2 and not busy.slots[0].queued
    cluster.finish(busy)
    assert cluster.result(ds[0]) == 1
    assert len(cluster.ran(busy)) == 2  # the warm-up and the long one


def test_a_take_back_of_a_task_written_ahead_of_a_short_job_leaves_it_to_run_there():
    """It was next anyway: the answer waits until it starts (not handed
    back), and nothing is dropped for the idle worker to wait on."""
    cluster = MemoryCluster(workers=0, prefetch=4)
    busy = cluster.add_worker(name="busy", hold=True)
    client = cluster.client()
    warm(cluster, busy, client)
    ds = [client.submit(abs, -i) for i in (1, 2, 3)]
    cluster.flush()
    ahead = busy.slots[0].queued[0].task
    idle = cluster.add_worker(name="idle")
    cluster.flush()
    assert cluster.result(ds[2]) == 3  # it waited in the busy one's queue
    assert [json.loads(m[0]).get("skip") for m in cluster.child(busy).messages][-1] is None
    cluster.finish(busy)  # the short job ends: the one written ahead starts
    assert cluster.ran(busy)[-1] == ahead and len(cluster.ran(idle)) == 1
    cluster.finish(busy)
    assert [cluster.result(d) for d in ds[:2]] == [1, 2]


def test_a_task_handed_back_behind_a_long_job_runs_in_another_slot():
    cluster = MemoryCluster(workers=0, prefetch=1)
    worker = cluster.add_worker(slots=2, hold=True)
    client = cluster.client()
    d = client.submit(abs, -100)
    cluster.flush()
    cluster.finish(worker, slot=0)
    ds = [client.submit(abs, -i) for i in (1, 2, 3)]
    cluster.flush()
    slots = worker.slots
    assert [len(s.queued) for s in slots] == [1, 0] and cluster.result(d) == 100
    cluster.finish(worker, slot=1)  # slot 1 ends its job: nothing left to run
    assert slots[1].free and slots[0].queued
    cluster.advance(HAND_BACK_AFTER)  # slot 0's job runs long: its child hands back
    assert slots[1].current is not None and not slots[0].queued
    cluster.finish(worker, slot=1)
    cluster.finish(worker, slot=0)
    assert [cluster.result(d) for d in ds] == [1, 2, 3]


def test_a_leaving_worker_hands_back_a_task_written_ahead_unrun():
    cluster = MemoryCluster(workers=0, prefetch=4, max_retries=0)
    leaving = cluster.add_worker(hold=True)
    client = cluster.client()
    warm(cluster, leaving, client)
    ds = [client.submit(abs, -i) for i in (1, 2)]
    cluster.flush()
    ahead = leaving.slots[0].queued[0].task
    left = Deferred.fromCoroutine(leaving.leave())
    cluster.flush()
    cluster.finish(leaving)  # the running one finishes; the one ahead is skipped
    assert cluster.result(ds[0]) == 1 and ahead not in cluster.ran(leaving)
    cluster.advance(1)
    assert left.called
    stayer = cluster.add_worker(name="stayer")
    cluster.flush()
    assert cluster.result(ds[1]) == 2 and len(cluster.ran(stayer)) == 1


def test_the_start_of_a_task_written_ahead_is_reported_once_it_starts():
    cluster = MemoryCluster(workers=0, prefetch=4)
    worker = cluster.add_worker(hold=True)
    client = cluster.client()
    warm(cluster, worker, client)
    sent = []
    original = worker.connection.started.add
    worker.connection.started.add = lambda item: (sent.append(item[0]), original(item))
    for i in (1, 2):
        client.submit(abs, -i)
    cluster.flush()
    cluster.advance(START_REPORT_DELAY)
    assert len(sent) == 1 and len(worker.slots[0].queued) == 1
    ahead = worker.slots[0].queued[0].task
    cluster.finish(worker)
    cluster.advance(START_REPORT_DELAY)
    assert sent[1:] == [ahead]
