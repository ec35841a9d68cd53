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
from cwtx.worker.child import Child
from cwtx.worker.data import DataCache, load
from cwtx.worker.pipe import Header
from cwtx.worker.slot import Slot, Task

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
    assert json.loads(reply)["status"] == "ok"
    assert pickle.loads(value) == ({"big": [1, 2]}, True)  # one object, however often named


def test_the_child_forgets_and_says_which_data_it_lacks():
    child = Child()
    ref = TABLE.put("gone")
    child.keep(*data_message(ref._data))
    assert child.keep({Header.FORGET: [ref.hash.hex()]}, [])
    assert len(child.data) == 0
    header, parts, _ = task_message(2, lambda d: d, ref)
    info = json.loads(child.run(header, parts)[0])
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
