"""
The master's functions (``master.functions``): kept while a live job names
one, then idle in a cache bounded in bytes across clients, then dropped,
the client told and the code kept until its answer.  On sessions, with the
client's answers played by hand.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from cwtx.master.master import Master
from cwtx.master.sessions import FUNCTION_OVERHEAD, ClientSession
from cwtx.wire.names import function_hash
from cwtx.wire.payload import Payload

CODE = b"x" * 1000
SIZE = len("{}") + len(CODE) + FUNCTION_OVERHEAD


def fn(i: int) -> tuple[bytes, Payload]:
    code = CODE[:-4] + b"%04d" % i
    return function_hash("{}", [code]), Payload.of(code)


class Client:
    """A session whose DropFunctions are kept, to answer by hand."""

    def __init__(self, master: Master, name: str = "c") -> None:
        self.results: list = []
        self.session = ClientSession(name, self.results.append)
        self.told: list[tuple[bytes, Deferred[None]]] = []
        self.session.deliver_drop = self._told
        master.add_client(self.session)
        self.master = master
        self._jobs = 0

    def _told(self, fn: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.told.append((fn, d))
        return d

    def answer(self) -> None:
        told, self.told = self.told, []
        for _, d in told:
            d.callback(None)

    def run(self, i: int, send_code: bool = True) -> int:
        """Submit a job of function ``i`` (with its code) and end it."""
        job = self.submit(i, send_code)
        self.end(job)
        return job

    def submit(self, i: int, send_code: bool = True) -> int:
        h, code = fn(i)
        if send_code:
            self.master.define(self.session, h, "{}", code)
        self._jobs += 1
        self.master.submit(self.session, self._jobs, h, b"args")
        return self._jobs

    def end(self, job: int) -> None:
        self.master.cancel(self.session, [job])


def test_an_idle_function_stays_within_the_cache_and_the_oldest_goes_beyond():
    m = Master(function_cache=2 * SIZE)
    c = Client(m)
    for i in range(3):
        c.run(i)
    assert [h for h, _ in c.told] == [fn(0)[0]]  # the client is told of the oldest
    assert m.idle_functions.bytes == 2 * SIZE and len(c.session.functions) == 3
    assert c.session.dropping_bytes == SIZE
    c.answer()
    assert set(c.session.functions) == {fn(1)[0], fn(2)[0]} and c.session.dropping_bytes == 0


def test_a_function_a_live_job_names_is_never_dropped():
    m = Master(function_cache=0)
    c = Client(m)
    held = c.submit(0)
    for i in range(1, 4):
        c.run(i)
    assert fn(0)[0] not in [h for h, _ in c.told]
    c.answer()
    assert fn(0)[0] in c.session.functions and c.session.function_bytes == SIZE
    c.end(held)
    assert c.session.function_bytes == 0


def test_a_job_that_names_a_dropping_function_without_code_keeps_it():
    """A record the client queued before it read the drop: it still runs."""
    m = Master(function_cache=0)
    c = Client(m)
    c.run(0)
    c.run(1)  # 0 is dropped: the client is told
    assert [h for h, _ in c.told] == [fn(0)[0]]
    job = c.submit(0, send_code=False)
    assert c.results == [] and m.clients[0].jobs[job].fn.hash == fn(0)[0]
    c.answer()  # the answer of that drop no longer drops it
    assert fn(0)[0] in c.session.functions and c.session.dropping_bytes == 0


def test_code_sent_again_before_the_answer_keeps_the_function():
    """The client sends the code again once it has read the drop; its
    answer comes after, and must not take away what it counts on."""
    m = Master(function_cache=2 * SIZE)
    c = Client(m)
    for i in range(3):
        c.run(i)
    h0, code0 = fn(0)
    m.define(c.session, h0, "{}", code0)  # sent again, before the answer
    c.answer()
    assert h0 in c.session.functions
    c.submit(0, send_code=False)
    assert c.results == []


def test_a_function_dropped_again_goes_only_at_the_answer_of_its_last_drop():
    m = Master(function_cache=0)
    c = Client(m)
    c.run(0)
    c.run(1)  # drop 1 of function 0
    first = c.told.pop()
    c.run(0, send_code=False)  # crossed the drop: used, idle again
    c.run(2)  # 1 is dropped; then, at 2's end... (0 is idle again: dropped again)
    c.run(3)
    assert fn(0)[0] in [h for h, _ in c.told]  # drop 2 of function 0
    first[1].callback(None)  # the first drop's answer
    assert fn(0)[0] in c.session.functions  # the second is still unanswered
    c.answer()
    assert fn(0)[0] not in c.session.functions


def test_after_the_answer_a_job_without_code_is_refused_as_never_sent():
    m = Master(function_cache=0)
    c = Client(m)
    c.run(0)
    c.run(1)
    c.answer()
    c.submit(0, send_code=False)
    assert "never sent" in c.results[-1][3]


def test_a_client_that_leaves_takes_its_functions_without_evicting_others():
    m = Master(function_cache=2 * SIZE)
    stays, leaves = Client(m, "stays"), Client(m, "leaves")
    stays.run(0)
    for i in range(10, 14):
        leaves.submit(i)  # live: not in the cache
    m.remove_client(leaves.session)
    assert stays.told == [] and len(m.idle_functions) == 1  # stays' function, still cached


def test_a_refused_job_leaves_its_function_idle_in_the_cache_not_held_for_ever():
    m = Master(function_cache=0)
    c = Client(m)
    h, code = fn(0)
    m.define(c.session, h, "{}", code)
    m.submit(c.session, 1, h, b"args", timeout=-1.0)  # refused
    assert c.results and c.session.function_bytes == 0
    c.run(1)
    c.run(2)
    assert h in [told for told, _ in c.told]
