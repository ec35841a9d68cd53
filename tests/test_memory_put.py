"""
Reused data (``client.put``) through the real client, master, worker and
slots, in memory: what crosses each connection, where the data is kept,
when it is freed, and the errors.
"""

from __future__ import annotations

import gc
import pickle
import sys
import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

import cwtx
import cwtx.worker.data
from cwtx.client.errors import JobCancelled
from cwtx.testing import MemoryCluster
from cwtx.wire import commands
from cwtx.wire.names import data_hash


def record_commands(proto: Any, sink: list[tuple[Any, dict[str, Any]]]) -> None:
    original = proto.callRemote

    def spy(command: Any, **kw: Any) -> Any:
        sink.append((command, kw))
        return original(command, **kw)

    proto.callRemote = spy


def streamed_bytes(sent: list[tuple[Any, dict[str, Any]]]) -> int:
    return sum(len(p) for c, kw in sent if c is commands.BlobChunk for p in kw["data"])


def puts(sent: list[tuple[Any, dict[str, Any]]]) -> list[bytes]:
    return [kw["ref"] for c, kw in sent if c is commands.PutData]


def frees(sent: list[tuple[Any, dict[str, Any]]]) -> list[bytes]:
    return [kw["refs"] for c, kw in sent if c is commands.FreeData]


def count_unpickling(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each unpickling of put data in a (fake, in-process) child."""
    counted: list[int] = []
    real = pickle.loads

    def loads(data: Any) -> Any:
        counted.append(1)
        return real(data)

    monkeypatch.setattr(cwtx.worker.data, "pickle", SimpleNamespace(loads=loads))
    return counted


def identity(obj: Any) -> Any:
    return obj


@dataclass
class Holder:
    inner: Any


def held_data(cluster: MemoryCluster) -> dict[str, Any]:
    """Every place put data may be held, and how much each holds."""
    return {
        "master sessions": sum(len(c.data) for c in cluster.master.clients),
        "master's worker records": sum(len(w.data) for w in cluster.master.workers),
        "worker supervisors": sum(len(w.data) for w in cluster.workers),
        "slots": sum(len(s._data) for w in cluster.workers for s in w.slots),
        "children": sum(
            len(c._child.data) for w in cluster.workers for c in w.reactor.children if not c.ended
        ),
    }


NONE_HELD = dict.fromkeys(
    ["master sessions", "master's worker records", "worker supervisors", "slots", "children"], 0
)


def test_put_data_crosses_each_connection_once_and_is_unpickled_once_per_child(monkeypatch):
    unpickled = count_unpickling(monkeypatch)
    cluster = MemoryCluster(workers=2)
    client = cluster.client()
    to_master: list[Any] = []
    record_commands(client._protocol, to_master)
    to_workers = [[], []]
    for worker, sink in zip(cluster.workers, to_workers, strict=True):
        record_commands(cluster.master_end(worker), sink)
    data = bytes(range(256)) * 4096 * 3  # 3 MiB: streamed
    ref = client.put(data)
    cluster.flush()
    assert not to_master  # nothing goes until a job names it
    ds = [client.submit(len, ref) for _ in range(20)]
    cluster.flush()
    assert [cluster.result(d) for d in ds] == [len(data)] * 20
    assert puts(to_master) == [ref.hash]
    assert len(data) < streamed_bytes(to_master) < len(data) + 4096
    for sink in to_workers:
        assert puts(sink) == [ref.hash]
        assert len(data) < streamed_bytes(sink) < len(data) + 4096
    assert len(unpickled) == 2  # once in each worker's one child
    records = [r for c, kw in to_master if c is commands.SubmitJobs for r in kw["jobs"]]
    assert [r["refs"] for r in records] == [ref.hash] * 20
    assert all(len(r["args"]) < 200 for r in records)


def test_refs_anywhere_in_the_arguments_arrive_as_the_object():
    cluster = MemoryCluster()
    client = cluster.client()
    a, b = client.put([1, 2, 3]), client.put({"x": 1})

    def job(first, nested, *, key, holder):
        return (
            first,
            nested[0]["deep"],
            key,
            holder.inner,
            first is nested[1],  # one object per child, however often named
        )

    d = client.submit(job, a, [{"deep": b}, a], key=(a,), holder=Holder(b))
    cluster.flush()
    assert cluster.result(d) == ([1, 2, 3], {"x": 1}, ([1, 2, 3],), {"x": 1}, True)


def test_a_ref_used_again_gets_the_object_the_child_already_has():
    cluster = MemoryCluster()
    client = cluster.client()
    ref = client.put([])

    def append(items, n):
        items.append(n)  # (mutating it is seen by later jobs in that child)
        return list(items)

    d1 = client.submit(append, ref, 1)
    cluster.flush()
    d2 = client.submit(append, ref, 2)
    cluster.flush()
    assert (cluster.result(d1), cluster.result(d2)) == ([1], [1, 2])


def test_a_ref_no_job_named_is_never_sent_nor_freed():
    cluster = MemoryCluster()
    client = cluster.client()
    sent: list[Any] = []
    record_commands(client._protocol, sent)
    ref = client.put("unused")
    del ref
    gc.collect()
    cluster.flush()
    assert not sent and len(client.refs) == 0


def test_dropped_refs_are_freed_everywhere_and_nothing_grows():
    cluster = MemoryCluster(workers=2, slots=2)
    client = cluster.client()
    for round in range(10):
        # (each job holds its Ref until it ends)
        ds = [client.submit(identity, client.put((round, i))) for i in range(100)]
        cluster.flush()
        assert [cluster.result(d) for d in ds] == [(round, i) for i in range(100)]
        del ds
    gc.collect()
    cluster.flush()
    assert len(client.refs) == 0 and not client.refs.sent
    assert held_data(cluster) == NONE_HELD
    assert cluster.master.clients[0].data_bytes == 0


def test_data_is_held_while_a_job_that_names_it_has_not_ended():
    cluster = MemoryCluster(workers=0)
    client = cluster.client()
    sent: list[Any] = []
    record_commands(client._protocol, sent)
    ref = client.put("kept")
    d = client.submit(identity, ref)
    del ref
    gc.collect()
    cluster.flush()
    assert not frees(sent)  # the queued job holds its Ref
    assert held_data(cluster)["master sessions"] == 1
    cluster.add_worker()
    assert cluster.result(d) == "kept"
    del d
    gc.collect()
    cluster.flush()
    assert len(frees(sent)) == 1
    assert held_data(cluster) == NONE_HELD


def test_the_master_holds_freed_data_until_the_queued_jobs_that_name_it_end():
    # A client that frees what a queued job names (an honest one never does).
    cluster = MemoryCluster(workers=0)
    client = cluster.client()
    ref = client.put("late")
    d = client.submit(identity, ref)
    cluster.flush()
    client._protocol.callRemote(commands.FreeData, refs=ref.hash)
    cluster.flush()
    (session,) = cluster.master.clients
    assert session.data[ref.hash].freed
    cluster.add_worker()
    assert cluster.result(d) == "late"
    assert held_data(cluster) == NONE_HELD
    # It is gone: a job that names it now ends with an error that names it.
    d = client.submit(identity, ref)
    cluster.flush()
    with pytest.raises(cwtx.RemoteError, match=ref.hash.hex()[:16] + ".*never sent, or freed"):
        cluster.result(d)


def test_a_cancelled_job_lets_its_data_go():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    ref = client.put("cancelled")
    d = client.submit(identity, ref)
    cluster.flush()
    assert held_data(cluster)["children"] == 1
    d.cancel()
    with pytest.raises(JobCancelled):
        cluster.result(d)
    del ref, d
    gc.collect()
    cluster.flush()
    assert held_data(cluster) == NONE_HELD


def test_a_client_that_leaves_frees_all_its_data():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    refs = [client.put(i) for i in range(3)]
    ds = [client.submit(identity, r) for r in refs]
    cluster.flush()
    assert [cluster.result(d) for d in ds] == [0, 1, 2]
    assert held_data(cluster)["worker supervisors"] == 3
    cluster.refuse_clients = True
    cluster.disconnect(client)
    assert held_data(cluster) == NONE_HELD


def test_a_retried_job_gets_the_data_on_its_new_worker():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    ref = client.put("moved")
    d = client.submit(identity, ref)
    cluster.report_starts()
    first = cluster.workers[0]
    assert first.data
    second = cluster.add_worker(name="second")
    to_second: list[Any] = []
    record_commands(cluster.master_end(second), to_second)
    cluster.kill(first)
    assert cluster.result(d) == "moved"
    assert puts(to_second) == [ref.hash]


def test_same_data_from_two_clients_stays_at_workers_until_both_free_it():
    cluster = MemoryCluster(workers=1)
    a, b = cluster.client("a"), cluster.client("b")
    ref_a, ref_b = a.put("same"), b.put("same")
    assert ref_a.hash == ref_b.hash
    da, db = a.submit(identity, ref_a), b.submit(identity, ref_b)
    cluster.flush()
    assert (cluster.result(da), cluster.result(db)) == ("same", "same")
    del ref_a, da
    gc.collect()
    cluster.flush()
    assert held_data(cluster)["worker supervisors"] == 1  # b still holds it
    db = b.submit(identity, ref_b)
    cluster.flush()
    assert cluster.result(db) == "same"
    del ref_b, db
    gc.collect()
    cluster.flush()
    assert held_data(cluster) == NONE_HELD


def test_a_ref_survives_a_reconnection_and_is_sent_again_when_named():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    ref = client.put("again")
    pending = client.submit(identity, ref)
    cluster.flush()
    cluster.disconnect(client)  # the new session has no data: the job is resubmitted with it
    cluster.advance(1)
    assert client.reconnects == 1
    sent: list[Any] = []
    record_commands(client._protocol, sent)
    cluster.finish()
    assert cluster.result(pending) == "again"
    later = client.submit(identity, ref)
    cluster.flush()
    cluster.finish()
    assert cluster.result(later) == "again"
    assert not puts(sent)  # the resubmission sent it, once


def test_a_ref_of_another_client_is_refused_at_submit():
    cluster = MemoryCluster()
    a, b = cluster.client("a"), cluster.client("b")
    ref = a.put("mine")
    with pytest.raises(ValueError, match=r"put by another client"):
        b.submit(identity, [ref])
    with pytest.raises(ValueError, match=r"<cwtx.Ref [0-9a-f]{12}"):
        b.submit(identity, ref)


def test_a_ref_of_a_closed_client_is_refused_and_a_closed_client_puts_nothing():
    cluster = MemoryCluster()
    a, b = cluster.client("a"), cluster.client("b")
    ref = a.put("old")
    a.close()
    cluster.flush()
    with pytest.raises(RuntimeError, match="closed"):
        a.put("new")
    with pytest.raises(ValueError, match="another client"):
        b.submit(identity, ref)


def test_a_ref_cannot_be_pickled_other_than_as_an_argument():
    cluster = MemoryCluster()
    client = cluster.client()
    ref = client.put(1)
    with pytest.raises(TypeError, match="only in a job's arguments"):
        client.put([ref])
    with pytest.raises(TypeError, match="only in a job's arguments"):
        client.submit(lambda: ref)  # in a closure


#: A Ref a job can reach (the fake children run in this process).
GLOBAL_REF: list[Any] = []


def test_a_job_whose_result_holds_a_ref_fails_saying_so():
    cluster = MemoryCluster()
    client = cluster.client()
    GLOBAL_REF[:] = [client.put(1)]
    name = __name__  # (this module's functions are pickled by value: reach it by name)
    try:
        d = client.submit(lambda: sys.modules[name].GLOBAL_REF[0])
        cluster.flush()
        with pytest.raises(cwtx.RemoteError, match="could not be pickled.*only in a job's arg"):
            cluster.result(d)
    finally:
        GLOBAL_REF.clear()


def test_an_object_that_does_not_pickle_fails_at_put():
    cluster = MemoryCluster()
    client = cluster.client()
    with pytest.raises(TypeError, match="lock"):
        client.put(threading.Lock())


def test_put_data_counts_against_the_client_s_limit():
    cluster = MemoryCluster()
    cluster.master.max_client_bytes = 10_000
    client = cluster.client()
    ref = client.put(b"x" * 20_000)
    d = client.submit(len, ref)
    cluster.flush()
    with pytest.raises(cwtx.MasterConnectionLost, match="put data would hold over 10000"):
        cluster.result(d)


def test_data_that_does_not_hash_to_its_name_closes_the_client():
    cluster = MemoryCluster()
    client = cluster.client()
    answer: list[Any] = []
    client._protocol.callRemote(
        commands.PutData, ref=data_hash([b"honest"]), data=b"forged", data_blob=0
    ).addBoth(answer.append)
    cluster.flush()
    assert answer[0].check(cwtx.ProtocolError)
    assert "does not match its hash" in answer[0].getErrorMessage()
    assert not cluster.master.clients  # (closed; the test's client does not reconnect here)


def test_a_busy_child_drops_freed_data_when_its_task_ends():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    a, b = client.put("a"), client.put("b")
    first = client.submit(identity, a)
    cluster.flush()
    cluster.finish()
    assert cluster.result(first) == "a"
    second = client.submit(identity, b)
    cluster.flush()  # running, held
    del a, first
    gc.collect()
    cluster.flush()
    child = cluster.child(cluster.workers[0])._child
    assert len(child.data) == 2  # told once its task ends, not in the middle
    cluster.finish()
    assert cluster.result(second) == "b"
    assert len(child.data) == 1  # with no next task to wait for


def test_data_freed_then_put_again_is_sent_again_everywhere():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    ref = client.put("twice")
    d = client.submit(identity, ref)
    cluster.flush()
    assert cluster.result(d) == "twice"
    del ref, d
    gc.collect()
    cluster.flush()
    assert held_data(cluster) == NONE_HELD
    ref = client.put("twice")
    d = client.submit(identity, ref)
    cluster.flush()
    assert cluster.result(d) == "twice"


def test_a_free_does_not_overtake_data_still_streaming_for_a_cancelled_job():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    ref = client.put(bytes(3 * 1024 * 1024))  # streamed in several chunks
    d = client.submit(len, ref)
    d.addErrback(lambda f: f.trap(JobCancelled))
    cluster.clock.advance(0)  # its turn: the data starts streaming
    d.cancel()
    del ref
    gc.collect()
    cluster.clock.advance(0)  # the client notices the Ref is gone
    cluster.flush()
    assert held_data(cluster) == NONE_HELD


def test_a_fresh_child_is_sent_the_data_again():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    ref = client.put("again")
    first = client.submit(identity, ref)
    cluster.flush()
    first.cancel()  # running: its child is killed, and a fresh one started
    cluster.flush()
    second = client.submit(identity, ref)
    cluster.flush()
    cluster.finish()
    assert cluster.result(second) == "again"


def test_a_free_does_not_overtake_data_still_streaming_to_a_worker():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    worker = cluster.workers[0]
    ref = client.put(bytes(3 * 1024 * 1024))  # streamed in several chunks
    d = client.submit(len, ref)
    d.addErrback(lambda f: f.trap(JobCancelled))
    for _ in range(50):  # only the client's connection moves
        cluster.pump(client)
        cluster.clock.advance(0)
    (job,) = cluster.master.clients[0].jobs.values()
    assert (
        job.task is not None and job.task.sent
    )  # its data is on its way to the worker, not there yet
    assert not worker.data
    d.cancel()
    del ref
    gc.collect()
    for _ in range(5):
        cluster.pump(client)
        cluster.clock.advance(0)
    assert not cluster.master.clients[0].data  # freed at the master
    cluster.flush()
    assert held_data(cluster) == NONE_HELD


def test_data_sent_again_after_a_free_is_kept():
    cluster = MemoryCluster(workers=0)
    client = cluster.client()
    ref = client.put("back")
    d = client.submit(identity, ref)
    cluster.flush()
    proto = client._protocol
    proto.callRemote(commands.FreeData, refs=ref.hash)  # held back by the queued job
    proto.callRemote(commands.PutData, ref=ref.hash, data=ref._data, data_blob=0)
    cluster.flush()
    cluster.add_worker()
    assert cluster.result(d) == "back"
    assert held_data(cluster)["master sessions"] == 1
