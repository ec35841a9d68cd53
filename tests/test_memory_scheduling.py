"""
The scheduler over the wire: start reports, work stealing, fair order at
the worker and resources, through the real master, worker supervisor and
client in memory (cwtx.testing), on a Clock.
"""

from __future__ import annotations

import os

from cwtx.client.options import JobOptions
from cwtx.client.serialize import pickle_arguments, pickle_function
from cwtx.testing import MemoryCluster
from cwtx.worker.supervisor import START_REPORT_DELAY


def environment(*names):
    import os as _os

    return {n: _os.environ.get(n) for n in names}


def test_the_client_hears_when_a_job_starts_and_only_then():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    started: list[int] = []
    ds = [
        client.submit_pickled(
            JobOptions(),
            pickle_function(abs),
            pickle_arguments((-i,), {}),
            on_start=lambda i=i: started.append(i),
        )
        for i in (1, 2)
    ]
    cluster.flush()
    assert started == []  # reported once it has run for START_REPORT_DELAY
    cluster.advance(START_REPORT_DELAY)
    assert started == [1]  # one slot: the second waits in the master's queue
    cluster.finish()
    assert started == [1] and cluster.result(ds[0]) == 1
    cluster.advance(START_REPORT_DELAY)
    assert started == [1, 2]
    cluster.finish()
    assert cluster.result(ds[1]) == 2
    status = cluster.master.status()
    assert (status["running"], status["prefetched"]) == (0, 0)


def test_a_job_that_ends_before_its_start_would_be_reported_sends_no_start():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    sent: list = []
    worker = cluster.workers[0]
    original = worker.connection.started.add
    worker.connection.started.add = lambda item: (sent.append(item), original(item))
    d = client.submit(abs, -5)
    cluster.flush()
    assert cluster.result(d) == 5
    cluster.advance(START_REPORT_DELAY)
    assert sent == []


def test_a_worker_reports_which_slot_started_what():
    cluster = MemoryCluster(workers=0, prefetch=2)
    worker = cluster.add_worker(slots=2, hold=True)
    sent = []
    original = worker.connection.started.add
    worker.connection.started.add = lambda item: (sent.append(item), original(item))
    client = cluster.client()
    for i in range(4):
        client.submit(abs, i)
    cluster.report_starts()
    assert [slot for _, slot, _ in sent] == [0, 1]
    shown = cluster.master.status()["workers"][0]
    assert (shown["running"], shown["prefetched"]) == (2, 2)


def test_an_idle_worker_takes_back_what_waits_behind_a_long_job():
    cluster = MemoryCluster(workers=0, prefetch=4)
    busy = cluster.add_worker(name="busy", hold=True)
    client = cluster.client()
    ds = [client.submit(abs, -i) for i in range(1, 6)]
    cluster.flush()
    assert len(busy.queue) == 4  # one running, four waiting behind it
    idle = cluster.add_worker(name="idle")  # runs what it gets at once
    cluster.flush()
    # Everything that waited behind the long job ran on the idle worker.
    assert [cluster.result(d) for d in ds[1:]] == [2, 3, 4, 5]
    assert busy.queue == [] and not ds[0].called
    assert len(cluster.ran(idle)) == 4
    cluster.finish(busy)
    assert cluster.result(ds[0]) == 1


def test_a_job_for_a_client_below_its_share_overtakes_tasks_prefetched_for_another():
    cluster = MemoryCluster(workers=0, prefetch=3)
    worker = cluster.add_worker(hold=True)
    hog, newcomer = cluster.client("hog"), cluster.client("newcomer")
    hogs = [hog.submit(abs, -i) for i in range(1, 21)]
    cluster.flush()
    late = newcomer.submit(abs, -100)
    cluster.flush()
    # The first hog job ends: the worker starts the next waiting hog task at
    # once, and writes the one after to its slot's child (PIPELINE_DEPTH),
    # committed there; the freed place brings the newcomer's job, which goes
    # to the head of the worker's queue, before the hog's other waiting task.
    cluster.finish(worker)
    cluster.finish(worker)
    cluster.finish(worker)
    order = cluster.ran(worker)
    assert len(order) == 4 and order[3] == max(order), order
    cluster.finish(worker)
    assert cluster.result(late) == 100
    assert [d.called for d in hogs[:4]] == [True, True, True, False]


def test_a_job_gets_the_devices_it_holds_in_its_environment():
    cluster = MemoryCluster(workers=0)
    cluster.add_worker(slots=2, resources="gpu=2,mem=16G")
    client = cluster.client()
    one = client.options(resources={"gpu": 1, "mem": "4G"}).submit(
        environment, "CUDA_VISIBLE_DEVICES", "CWTX_RESOURCE_GPU", "CWTX_RESOURCE_MEM"
    )
    cluster.flush()
    assert cluster.result(one) == {
        "CUDA_VISIBLE_DEVICES": "0",
        "CWTX_RESOURCE_GPU": "0",
        "CWTX_RESOURCE_MEM": str(4 * 2**30),
    }
    both = client.options(resources={"gpu": 2}).submit(environment, "CUDA_VISIBLE_DEVICES")
    cluster.flush()
    assert cluster.result(both) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # restored after each job


def test_a_fraction_of_a_device_is_an_amount_and_hides_no_device():
    cluster = MemoryCluster(workers=0)
    cluster.add_worker(slots=2, resources="gpu=1")
    client = cluster.client()
    half = client.options(resources={"gpu": 0.5}).submit(
        environment, "CUDA_VISIBLE_DEVICES", "CWTX_RESOURCE_GPU"
    )
    cluster.flush()
    assert cluster.result(half) == {"CUDA_VISIBLE_DEVICES": None, "CWTX_RESOURCE_GPU": "0.5"}


def test_two_jobs_hold_different_devices_at_once():
    cluster = MemoryCluster(workers=0)
    worker = cluster.add_worker(slots=2, resources="gpu=2", hold=True)
    client = cluster.client()
    for _ in range(2):
        client.options(resources={"gpu": 1}).submit(abs, 1)
    cluster.flush()
    held = sorted(slot.current.held["gpu"] for slot in worker.slots)
    assert held == [[0], [1]]
    cluster.finish(worker, 0)
    assert worker.devices["gpu"] in ([0], [1])  # the finished one's device is free again


def test_an_unschedulable_job_runs_once_a_fitting_worker_joins():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    d = client.options(resources={"gpu": 2}).submit(abs, -3)
    cluster.flush()
    status = client.status()
    cluster.flush()
    (entry,) = cluster.result(status)["clients"][0]["unschedulable"]
    assert entry == {"jobs": 1, "why": "needs gpu=2; no connected worker has gpu"}
    cluster.add_worker(resources="gpu=2")
    cluster.flush()
    assert cluster.result(d) == 3


def test_a_client_share_reaches_the_master():
    cluster = MemoryCluster(workers=1)
    cluster.client("heavy", share=2.5)
    cluster.flush()
    (shown,) = cluster.master.status()["clients"]
    assert (shown["name"], shown["share"]) == ("heavy", 2.5)


def test_priority_clients_go_first_over_the_wire():
    cluster = MemoryCluster(workers=0, priority_clients=["urgent"])
    normal, urgent = cluster.client("normal"), cluster.client("urgent")
    ns = [normal.submit(abs, -i) for i in range(5)]
    us = [urgent.submit(abs, -i) for i in range(5)]
    cluster.flush()
    worker = cluster.add_worker(hold=True)
    cluster.flush()
    for _ in range(5):
        cluster.finish(worker)
    assert all(d.called for d in us) and not any(d.called for d in ns)


def test_a_take_back_that_overtakes_its_tasks_record_is_asked_again():
    """A retried job goes to a worker it has not failed on, though busy; the
    idle worker it failed on asks for it back in the same dispatch, before
    its RunTasks record has gone out (records wait for the next turn). The
    busy worker, not knowing it yet, hands nothing back; the next ask gets it."""
    cluster = MemoryCluster(workers=0, prefetch=1)
    busy = cluster.add_worker(name="busy", slots=1, hold=True)
    client = cluster.client()
    long_job = client.submit(abs, -1)
    cluster.report_starts()
    other = cluster.add_worker(name="other", slots=1, hold=True)
    retried = client.submit(abs, -2)
    cluster.report_starts()
    assert other.slots[0].current is not None and busy.slots[0].current is not None
    cluster.child(other).exit(None, 9)  # its child dies: a lost attempt on "other"
    for _ in range(5):
        cluster.advance(1)
    # It ran on "other" again (idle), not behind the long job on "busy".
    assert len(cluster.ran(other)) == 2 and busy.queue == []
    cluster.finish(other)
    assert cluster.result(retried) == 2 and not long_job.called


def test_a_client_that_takes_no_start_notices_gets_no_more_past_a_bound(monkeypatch):
    from cwtx.master import roles

    class Stuck(list):
        """A sender whose client never answers: what is added stays."""

        add = list.append

        def stop(self) -> None:
            pass

    monkeypatch.setattr(roles, "MAX_UNSENT_STARTS", 3)
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    responders = cluster.master_end(client).responders
    responders.started = Stuck()
    for job_id in range(10):
        responders._deliver_started(job_id)
    assert responders.started == [0, 1, 2]
