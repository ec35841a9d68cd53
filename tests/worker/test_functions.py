"""
A worker's functions (``worker.functions``): bounded in bytes, the master
told of those dropped, each kept until its answer.  On a Clock, with the
master's answers played by hand.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from cwtx.wire.names import FUNCTION_OVERHEAD, split_hashes
from cwtx.wire.payload import Payload
from cwtx.worker.functions import Functions

CODE = Payload.of(b"c" * 744)
SIZE = len("{}") + CODE.size + FUNCTION_OVERHEAD  # 1,002


def h(i: int) -> bytes:
    return bytes([i]) * 32


class Master:
    def __init__(self) -> None:
        self.told: list[tuple[list[bytes], Deferred[None]]] = []

    def tell(self, fns: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.told.append((split_hashes(fns), d))
        return d

    def answer(self) -> None:
        told, self.told = self.told, []
        for _, d in told:
            d.callback(None)


def make(limit: int) -> tuple[Functions, Master, Clock]:
    clock, master = Clock(), Master()
    return Functions(limit, clock, master.tell), master, clock


def test_the_least_recently_used_go_beyond_the_limit_and_the_master_is_told_once_a_turn():
    functions, master, clock = make(2 * SIZE)
    for i in range(4):
        functions.learn(h(i), "{}", CODE)
    assert functions.bytes == 2 * SIZE and master.told == []
    clock.advance(0)
    assert [fns for fns, _ in master.told] == [[h(0), h(1)]]  # one command for the turn


def test_a_dropped_function_stays_usable_until_the_masters_answer():
    """Tasks the master queued before it read the drop name it without code."""
    functions, master, clock = make(0)
    functions.learn(h(0), "{}", CODE)
    functions.learn(h(1), "{}", CODE)
    clock.advance(0)
    assert functions.get(h(0)) == ("{}", CODE)
    master.answer()
    assert functions.get(h(0)) is None and functions.get(h(1)) == ("{}", CODE)


def test_code_that_comes_again_before_the_answer_is_kept():
    functions, master, clock = make(SIZE)
    functions.learn(h(0), "{}", CODE)
    functions.learn(h(1), "{}", CODE)  # 0 dropped
    clock.advance(0)
    functions.learn(h(0), "{}", CODE)  # the master sent it again: 1 dropped
    clock.advance(0)
    told = master.told.pop(0)
    told[1].callback(None)  # the answer to the drop of 0
    assert functions.get(h(0)) == ("{}", CODE)
    master.answer()
    assert functions.get(h(1)) is None


def test_using_a_function_makes_it_recent():
    functions, master, clock = make(2 * SIZE)
    functions.learn(h(0), "{}", CODE)
    functions.learn(h(1), "{}", CODE)
    functions.get(h(0))
    functions.learn(h(2), "{}", CODE)
    clock.advance(0)
    assert [fns for fns, _ in master.told] == [[h(1)]]


def test_a_lost_master_clears_everything_and_a_late_answer_is_harmless():
    functions, master, clock = make(0)
    functions.learn(h(0), "{}", CODE)
    functions.learn(h(1), "{}", CODE)
    clock.advance(0)
    functions.clear()
    assert functions.get(h(0)) is None and functions.get(h(1)) is None and len(functions) == 0
    master.answer()
    functions.learn(h(0), "{}", CODE)
    assert functions.get(h(0)) == ("{}", CODE)
