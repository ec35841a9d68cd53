"""
Giving back what departed clients held (``cwtx.master.trim``): when the
master collects and trims, and how often at most, on a Clock.
"""

from __future__ import annotations

import platform

import pytest
from twisted.internet.task import Clock

from cwtx.master import trim
from cwtx.master.trim import MAX_SHARE, MIN_INTERVAL, Trimmer, malloc_trim


class Calls:
    def __init__(self, clock: Clock, cost: float = 0.001) -> None:
        self.clock = clock
        self.cost = cost
        self.seen: list[tuple[str, float]] = []
        self.now = 0.0  # the fake timer trims are measured with

    def collect(self) -> int:
        self.seen.append(("collect", self.clock.seconds()))
        self.now += self.cost
        return 0

    def release(self) -> int:
        self.seen.append(("release", self.clock.seconds()))
        return 1

    def timer(self) -> float:
        return self.now

    def trimmer(self) -> Trimmer:
        return Trimmer(self.clock, release=self.release, collect=self.collect, timer=self.timer)


def test_it_collects_then_trims_on_the_next_turn():
    clock = Clock()
    calls = Calls(clock)
    trimmer = calls.trimmer()
    trimmer.soon()
    assert calls.seen == []  # not while the client's connection is being torn down
    clock.advance(0)
    assert calls.seen == [("collect", 0.0), ("release", 0.0)]
    assert trimmer.runs == 1
    assert trimmer.last_cost == pytest.approx(0.001)


def test_clients_leaving_together_make_one_trim_per_interval():
    clock = Clock()
    calls = Calls(clock)
    trimmer = calls.trimmer()
    trimmer.soon()
    clock.advance(0)
    clock.advance(1)
    for _ in range(50):
        trimmer.soon()
        clock.advance(0.05)
    assert trimmer.runs == 1
    clock.advance(MIN_INTERVAL - clock.seconds() - 0.01)
    assert trimmer.runs == 1
    clock.advance(0.01)
    assert trimmer.runs == 2
    assert [when for what, when in calls.seen if what == "release"] == [0.0, MIN_INTERVAL]
    clock.advance(100)
    assert trimmer.runs == 2  # nobody left since


def test_a_costly_trim_waits_longer_before_the_next():
    clock = Clock()
    calls = Calls(clock, cost=0.2)  # a full collection of a big heap
    trimmer = calls.trimmer()
    trimmer.soon()
    clock.advance(0)
    trimmer.soon()
    clock.advance(MIN_INTERVAL)
    assert trimmer.runs == 1
    clock.advance(0.2 / MAX_SHARE - MIN_INTERVAL)
    assert trimmer.runs == 2


def test_stop_cancels_a_pending_trim():
    clock = Clock()
    calls = Calls(clock)
    trimmer = calls.trimmer()
    trimmer.soon()
    trimmer.stop()
    clock.advance(MIN_INTERVAL)
    assert calls.seen == []
    assert clock.getDelayedCalls() == []


def test_without_malloc_trim_it_still_collects(monkeypatch):
    monkeypatch.setattr(trim, "malloc_trim", lambda: None)  # as on musl or macOS
    clock = Clock()
    calls = Calls(clock)
    trimmer = Trimmer(clock, collect=calls.collect, timer=calls.timer)
    trimmer.soon()
    clock.advance(0)
    assert calls.seen == [("collect", 0.0)]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_malloc_trim_is_glibcs():
    trim = malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was released


@pytest.mark.skipif(platform.libc_ver()[0] == "glibc", reason="not glibc")
def test_no_malloc_trim_elsewhere():
    assert malloc_trim() is None
