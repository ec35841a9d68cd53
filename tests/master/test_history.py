"""The master's recent past, sampled on a Clock."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from cwtx.master.history import History
from cwtx.master.master import Master
from cwtx.master.sessions import WorkerSession


def a_master(clock: Clock, slots: int = 4) -> Master:
    master = Master(now=clock.seconds)
    master.workers.append(WorkerSession("w", slots, lambda job: None, lambda task: None))
    return master


def test_samples_every_interval_and_keeps_ten_minutes():
    clock = Clock()
    clock.advance(1_700_000_000)
    master = a_master(clock)
    history = History(master, clock, interval=5)
    history.start()
    assert len(history.samples) == 1 and history.samples[0].at == 1_700_000_000
    for _ in range(1000):
        master.completed += 10
        clock.advance(5)
    assert len(history.samples) == 121  # 600 s, both ends
    assert history.samples[-1].at - history.samples[0].at == 600
    assert history.samples[-1].throughput == 2.0 and history.samples[-1].slots == 4
    history.stop()
    clock.advance(60)
    assert len(history.samples) == 121 and not clock.getDelayedCalls()


def test_per_minute_and_throughput_before_and_after_a_full_minute():
    clock = Clock()
    master = a_master(clock)
    history = History(master, clock, interval=5)
    assert history.per_minute() == 0 and history.throughput() == 0.0  # no sample yet
    history.start()
    assert history.per_minute() == 0 and history.throughput() == 0.0  # one sample
    master.completed = 30
    clock.advance(5)
    master.completed = 60
    clock.advance(5)
    assert history.per_minute() == 60 and history.throughput() == 6.0  # what it has: 10 s
    for _ in range(30):
        master.completed += 5
        clock.advance(5)
    assert history.per_minute() == 60 and history.throughput() == 1.0  # the last minute only


def test_a_sample_counts_queued_running_and_prefetched_as_status_does():
    from cwtx.master.status import page

    clock = Clock()
    master = a_master(clock)
    history = History(master, clock)
    s = history.sample()
    first = page(master, 0)
    assert (s.queued, s.running, s.prefetched, s.slots) == (
        first["queued"],
        first["running"],
        first["prefetched"],
        first["slots"],
    )


def test_status_page_zero_has_throughput_and_history_but_no_token():
    from cwtx.master.status import page

    clock = Clock()
    master = a_master(clock)
    assert page(master, 0)["history"] == [] and page(master, 0)["throughput"] == 0.0
    assert "http" not in page(master, 0)
    master.history = History(master, clock, interval=5)
    master.history.start()
    master.completed = 50
    clock.advance(5)
    clock.advance(5)
    master.http = "http://127.0.0.1:8080/"
    status = page(master, 0)
    assert status["throughput"] == 5.0 and status["http"] == "http://127.0.0.1:8080/"
    assert [h["at"] for h in status["history"]] == [0, 5, 10]
    assert set(status["history"][0]) >= {"at", "throughput", "queued", "running", "slots"}
    assert "history" not in page(master, 1) and "throughput" not in page(master, 1)


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        History(a_master(Clock()), Clock(), interval=0)
