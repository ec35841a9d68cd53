"""
The Handoff: calls from other threads run in the reactor thread in order,
many of them per wake-up.  The reactor is a Clock whose callFromThread
only records the wake-up; the test runs it.
"""

from __future__ import annotations

import threading

import pytest
from twisted.internet.task import Clock

from cwtx.client.handoff import Handoff


class Reactor(Clock):
    """A Clock with callFromThread: each call is a wake-up, run by run()."""

    def __init__(self) -> None:
        super().__init__()
        self.woken: list = []

    def callFromThread(self, f, *args) -> None:
        self.woken.append((f, args))

    def run(self) -> None:
        """Serve the wake-ups, then the loop's next turns, until idle."""
        while self.woken or self.getDelayedCalls():
            while self.woken:
                f, args = self.woken.pop(0)
                f(*args)
            self.advance(0)


def test_many_calls_cost_one_wake_up_and_run_in_order():
    reactor = Reactor()
    handoff = Handoff(reactor)
    ran: list = []
    for i in range(100):
        handoff(ran.append, i)
    assert len(reactor.woken) == 1 and handoff.wakeups == 1 and len(handoff) == 100
    reactor.run()
    assert ran == list(range(100)) and len(handoff) == 0


def test_a_call_after_the_run_wakes_the_reactor_again():
    reactor = Reactor()
    handoff = Handoff(reactor)
    ran: list = []
    handoff(ran.append, 1)
    reactor.run()
    handoff(ran.append, 2)
    assert len(reactor.woken) == 1
    reactor.run()
    assert ran == [1, 2] and handoff.wakeups == 2


def test_a_bounded_number_per_turn_and_no_wake_up_while_a_run_is_due():
    reactor = Reactor()
    handoff = Handoff(reactor, per_turn=3)
    ran: list = []
    for i in range(7):
        handoff(ran.append, i)
    f, args = reactor.woken.pop()
    f(*args)
    assert ran == [0, 1, 2]  # the rest on the next turn of the loop
    (next_turn,) = reactor.getDelayedCalls()
    handoff(ran.append, 7)  # a run is due already: no wake-up
    assert reactor.woken == []
    reactor.calls.remove(next_turn)
    next_turn.func()
    assert ran == [0, 1, 2, 3, 4, 5]
    reactor.advance(0)  # (a Clock runs the turns scheduled meanwhile too)
    assert ran == list(range(8)) and handoff.wakeups == 1
    assert reactor.getDelayedCalls() == []


def test_a_call_made_by_a_call_runs_after_the_ones_queued_before_it():
    reactor = Reactor()
    handoff = Handoff(reactor)
    ran: list = []
    handoff(lambda: handoff(ran.append, "later"))
    handoff(ran.append, "queued first")
    reactor.run()
    assert ran == ["queued first", "later"]


def test_a_failing_call_does_not_lose_the_others(capture_logs):
    reactor = Reactor()
    handoff = Handoff(reactor)
    ran: list = []

    def fail() -> None:
        raise ValueError("broken")

    handoff(ran.append, 1)
    handoff(fail)
    handoff(ran.append, 2)
    reactor.run()
    assert ran == [1, 2]
    assert any("ValueError" in str(e.get("log_failure")) for e in capture_logs)


def test_calls_from_many_threads_each_run_once_in_each_threads_order():
    reactor = Reactor()
    handoff = Handoff(reactor, per_turn=50)
    ran: list = []

    def submit(thread: int) -> None:
        for i in range(500):
            handoff(ran.append, (thread, i))

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) or reactor.woken or reactor.getDelayedCalls():
        reactor.run()
    for t in threads:
        t.join(10)
    reactor.run()
    assert sorted(ran) == [(t, i) for t in range(4) for i in range(500)]
    for t in range(4):
        assert [i for thread, i in ran if thread == t] == list(range(500))
    assert handoff.wakeups < 2000


@pytest.fixture
def capture_logs():
    from twisted.logger import globalLogPublisher

    events: list = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
