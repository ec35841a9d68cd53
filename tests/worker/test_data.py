"""
Put data (``cwtx.Ref``) on a worker: the supervisor's check of its hash,
the slot's data and forget messages, and the child's cache.
"""

from __future__ import annotations

import json
import pickle

import cloudpickle
import pytest
from twisted.internet.task import Clock

from cwtx.client.refs import RefTable, pickle_arguments
from cwtx.client.serialize import pickle_function
from cwtx.testing import FakeProcessReactor, MemoryCluster
from cwtx.wire.names import data_hash
from cwtx.wire.payload import Payload
from cwtx.worker.child import Child, Tasks
from cwtx.worker.data import DataCache, load
from cwtx.worker.pipe import RESULT_FD, TASK_FD, Header, MessageDecoder, encode_message
from cwtx.worker.slot import Slot, Task
from tests.worker.task_pipe import Transport

TABLE = RefTable(lambda f: None)


def data_message(data: bytes) -> tuple[dict, list[bytearray]]:
    return {Header.DATA: data_hash([data]).hex()}, [bytearray(data)]


def task_message(task: int, fn, *args) -> tuple[dict, list[bytearray], tuple]:
    f = pickle_function(fn)
    arguments = pickle_arguments(args, {})
    header = {Header.TASK: task, Header.FUNCTION: f.hash.hex(), Header.ENV: f.env}
    return header, [bytearray(arguments.data), bytearray(f.code)], arguments.refs


def test_the_child_keeps_data_and_gives_jobs_the_object():
    child = Child()
    ref = TABLE.put({"big": [1, 2]})
    assert child.keep(*data_message(ref._data))
    header, parts, refs = task_message(1, lambda d, again: (d, d is again[0]), ref, [ref])
    assert refs == (ref,)
    assert not child.keep(header, parts)  # a task: run it
    reply, value = child.run(header, parts)
    assert reply["status"] == "ok"
    assert pickle.loads(value) == ({"big": [1, 2]}, True)  # one object, however often named


def test_the_child_forgets_and_says_which_data_it_lacks():
    child = Child()
    ref = TABLE.put("gone")
    child.keep(*data_message(ref._data))
    assert child.keep({Header.FORGET: [ref.hash.hex()]}, [])
    assert len(child.data) == 0
    header, parts, _ = task_message(2, lambda d: d, ref)
    info = child.run(header, parts)[0]
    assert info["status"] == "error"
    assert (
        f"put data {ref.hash.hex()[:16]}... (a cwtx.Ref) never reached" in info["error"]["message"]
    )


def test_data_that_does_not_unpickle_names_its_ref():
    cache = DataCache()
    cache.keep("ab" * 32, b"not a pickle")
    with (
        cache.loading(),
        pytest.raises(RuntimeError, match="put data abab.*could not be unpickled"),
    ):
        load("ab" * 32)


def test_a_ref_unpickled_anywhere_but_in_a_job_s_arguments_says_so():
    data = pickle_arguments((TABLE.put(1),), {}).data
    with pytest.raises(RuntimeError, match="only as a job's argument"):
        pickle.loads(data)


class SlotHarness:
    def __init__(self) -> None:
        self.clock = Clock()
        self.reactor = FakeProcessReactor(self.clock)
        self.slot = Slot(0, self.reactor, lambda *a: None, lambda: None)
        self.slot.start()

    @property
    def headers(self) -> list[dict]:
        return [json.loads(m[0]) for m in self.slot.transport.messages]

    def task(self, task_id: int, *data: bytes) -> Task:
        f = pickle_function(len)
        return Task(
            task_id,
            f.hash,
            f.env,
            Payload.of(f.code),
            Payload.of(cloudpickle.dumps(((b"",), {}))),
            data=[(data_hash([d]), Payload.of(d)) for d in data],
        )


def test_the_slot_sends_data_once_per_child_just_before_the_task():
    h = SlotHarness()
    h.slot.run(h.task(1, b"a", b"b"))
    h.clock.advance(0)
    h.slot.run(h.task(2, b"a", b"c"))
    h.clock.advance(0)
    assert [next(iter(header)) for header in h.headers] == ["data", "data", "task", "data", "task"]
    assert [m[1] for m in h.slot.transport.messages if len(m) == 2 and b"data" in m[0]] == [
        b"a",
        b"b",
        b"c",
    ]


def test_the_slot_tells_an_idle_child_to_forget_at_once():
    h = SlotHarness()
    h.slot.run(h.task(1, b"a"))
    h.clock.advance(0)
    h.slot.forget([data_hash([b"a"]), data_hash([b"never sent"])])
    assert h.headers[-1] == {"forget": [data_hash([b"a"]).hex()]}
    h.slot.forget([data_hash([b"a"])])  # (it has nothing left to forget)
    assert len(h.headers) == 3
    h.slot.run(h.task(2, b"a"))  # sent again, after the forget
    assert [next(iter(header)) for header in h.headers[3:]] == ["data", "task"]


def test_a_worker_keeps_no_data_that_does_not_hash_to_its_name():
    cluster = MemoryCluster(workers=1)
    worker = cluster.workers[0]
    name = data_hash([b"real"])
    worker.put_data(name, Payload.of(b"forged"))
    assert name not in worker.data
    worker.put_data(name, Payload.of(b"real"))
    assert worker.data[name].tobytes() == b"real"


# -- put data and tasks written ahead (slot.PIPELINE_DEPTH) -------------------


def test_the_child_forgets_data_only_once_the_tasks_written_before_have_started():
    """A forget written behind a task that names the data (written ahead,
    not started) must not take it away from that task."""
    child, sent = Child(), []
    tasks = Tasks(sent.append, child.keep)
    ref = TABLE.put("needed")
    header, parts, _ = task_message(1, lambda d: d, ref)
    for message in (data_message(ref._data), (header, parts)):
        tasks.take([json.dumps(message[0]).encode(), *message[1]])
    tasks.take([json.dumps({Header.FORGET: [ref.hash.hex()]}).encode()])
    started = tasks.next()
    assert started is not None and len(child.data) == 1
    reply, value = child.run(*started)
    assert reply["status"] == "ok" and pickle.loads(value) == "needed"
    tasks.finished(reply, value)
    assert tasks.next() is None and len(child.data) == 0  # forgotten now


def test_a_task_written_ahead_keeps_its_data_for_the_next_child_if_this_one_dies():
    clock = Clock()
    reactor = FakeProcessReactor(clock, hold=True)
    unstarted = []
    slot = Slot(
        0, reactor, lambda *a: None, lambda: None, on_unstarted=lambda t, r: unstarted.append(t)
    )
    slot.start()
    h = SlotHarness.__new__(SlotHarness)
    h.slot = slot
    slot.run(h.task(1))
    slot.transport.finish()  # a short task: the slot writes ahead from now on
    slot.run(h.task(2))
    ahead = h.task(3, b"a")
    slot.run(ahead)
    assert [next(iter(header)) for header in h.headers[-2:]] == ["data", "task"]
    slot.transport.exit(code=None, signal=9)
    clock.advance(0)
    assert unstarted == [ahead]
    slot.run(ahead)  # into the fresh child: its data goes again
    assert [next(iter(header)) for header in h.headers] == ["data", "task"]


def test_a_forget_goes_behind_a_large_task_still_being_written():
    from cwtx.worker.slot import SMALL_MESSAGE, _PiecesProducer

    class Reactor:
        def __init__(self):
            self.clock = Clock()
            self.seconds, self.callLater = self.clock.seconds, self.clock.callLater

        def spawnProcess(self, proto, *args, **kwargs):
            proto.makeConnection(Transport())

    slot = Slot(0, Reactor(), lambda *a: None, lambda: None)
    slot.start()
    h = SlotHarness.__new__(SlotHarness)
    slot.run(h.task(1, b"a"))
    writer = slot.transport.pipes[TASK_FD]
    big = h.task(2)
    big.args = Payload.of(b"x" * (SMALL_MESSAGE + 1))
    slot._last_run = 0.0  # (a short task before: it writes ahead)
    slot.run(big)
    assert isinstance(writer.producer, _PiecesProducer)
    writer.producer.resumeProducing()
    slot.forget([data_hash([b"a"])])
    slot.childDataReceived(  # the first ends: now the child is told to forget
        RESULT_FD,
        b"".join(encode_message([json.dumps({"task": 1, "status": "ok", "next": 2}).encode()])),
    )
    while writer.producer is not None:
        writer.producer.resumeProducing()
    decoded = MessageDecoder().feed(b"".join(writer.written))
    headers = [json.loads(m[0].tobytes()) for m in decoded]
    assert [next(iter(header)) for header in headers] == ["data", "task", "task", "forget"]


def test_a_hand_back_leaves_put_data_for_the_loop_to_apply():
    """The watch thread hands back tasks while a job runs, maybe still
    unpickling its arguments: it must not touch the data cache then."""
    child, sent = Child(), []
    tasks = Tasks(sent.append, child.keep)
    ref = TABLE.put("kept")
    child.keep(*data_message(ref._data))
    header, parts, _ = task_message(5, lambda d: d, ref)
    tasks.take([json.dumps(header).encode(), *parts])
    tasks.take([json.dumps({Header.FORGET: [ref.hash.hex()]}).encode()])
    tasks.hand_back()
    assert [json.loads(m[0]) for m in sent] == [{"skipped": 5}]
    assert len(child.data) == 1  # not yet: the loop forgets it, in order
    assert tasks.next() is None and len(child.data) == 0
