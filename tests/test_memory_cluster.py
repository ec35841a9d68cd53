"""
The real master, worker supervisor and client over in-memory connections
(iosim) on a Clock: the protocol, batching and streaming, deterministically.
"""

from __future__ import annotations

import cloudpickle
import pytest
from twisted.internet.defer import Deferred
from twisted.protocols.amp import MAX_VALUE_LENGTH

import cwtx
from cwtx.testing import MemoryCluster
from cwtx.wire import commands as _commands
from cwtx.wire.names import function_hash
from cwtx.wire.payload import CHUNK_SIZE


def record_commands(proto, sink):
    original = proto.callRemote

    def spy(command, **kw):
        sink.append((command, kw))
        return original(command, **kw)

    proto.callRemote = spy


def test_results_come_back():
    cluster = MemoryCluster(workers=2)
    client = cluster.client()
    ds = [client.submit(lambda x: x * x, i) for i in range(10)]
    cluster.flush()
    assert [cluster.result(d) for d in ds] == [i * i for i in range(10)]


def test_many_jobs_travel_in_few_batches():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    sent = []
    record_commands(client._protocol, sent)
    ds = [client.submit(abs, -i) for i in range(1000)]
    cluster.flush()
    assert [cluster.result(d) for d in ds] == list(range(1000))
    batches = [kw["jobs"] for c, kw in sent if c is _commands.SubmitJobs]
    assert sum(len(b) for b in batches) == 1000
    assert len(batches) <= 10


def test_function_is_sent_once_per_content():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    sent = []
    record_commands(client._protocol, sent)
    for i in range(3):
        client.submit(abs, i)
    k = 5
    client.submit(lambda: k)
    k = 6
    d = client.submit(lambda: k)
    cluster.flush()
    assert cluster.result(d) == 6
    records = [r for c, kw in sent if c is _commands.SubmitJobs for r in kw["jobs"]]
    with_code = [r["job"] for r in records if r["fn_code"] or r["fn_code_blob"]]
    assert with_code == [1, 4, 5]


def test_big_payloads_are_streamed_in_chunks_under_the_amp_limit():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    sent = []
    record_commands(client._protocol, sent)
    data = bytes(range(256)) * 4096 * 3  # 3 MiB
    d = client.submit(lambda b: b[::-1], data)
    cluster.flush()
    assert cluster.result(d) == data[::-1]
    chunks = [piece for c, kw in sent if c is _commands.BlobChunk for piece in kw["data"]]

    assert b"".join(chunks) and all(len(c) <= CHUNK_SIZE < MAX_VALUE_LENGTH for c in chunks)
    assert sum(len(c) for c in chunks) >= len(data)


def test_job_exception_and_remote_traceback():
    cluster = MemoryCluster()
    client = cluster.client()
    d = client.submit(int, "not a number")
    cluster.flush()
    with pytest.raises(ValueError) as info:
        cluster.result(d)
    assert "invalid literal" in info.value.remote_traceback


def test_cancel_before_send_sends_nothing():
    cluster = MemoryCluster(workers=0)
    client = cluster.client()
    sent = []
    record_commands(client._protocol, sent)
    d = client.submit(abs, 1)
    d.cancel()
    cluster.flush()
    with pytest.raises(cwtx.JobCancelled):
        cluster.result(d)
    assert not [c for c, _ in sent if c in (_commands.SubmitJobs, _commands.CancelJobs)]


def test_cancel_queued_job_at_master_then_it_never_runs():
    cluster = MemoryCluster(workers=0)
    client = cluster.client()
    d1 = client.submit(abs, -1)
    d2 = client.submit(abs, -2)
    cluster.flush()
    assert cluster.master.status()["queued"] == 2
    d1.cancel()
    cluster.flush()
    assert cluster.master.status()["queued"] == 1
    worker = cluster.add_worker()
    cluster.flush()
    assert cluster.result(d2) == 2
    assert len(cluster.ran(worker)) == 1


def test_cancel_running_job_kills_it_and_frees_the_slot():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    d1 = client.submit(abs, -1)
    cluster.flush()
    slot = cluster.workers[0].slots[0]
    assert slot.current is not None
    d1.cancel()
    cluster.flush()
    assert slot.current is None
    d2 = client.submit(abs, -2)
    cluster.flush()
    cluster.finish()
    assert cluster.result(d2) == 2


def test_options_timeout_reaches_the_worker():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    d = client.options(timeout=5).submit(abs, -1)
    cluster.flush()
    cluster.advance(5.1)
    with pytest.raises(cwtx.JobTimeout):
        cluster.result(d)


def test_options_are_validated():
    cluster = MemoryCluster()
    client = cluster.client()
    with pytest.raises(ValueError):
        client.options(timeout=-1)
    with pytest.raises(ValueError):
        client.options(max_retries=-2)
    with pytest.raises(TypeError):
        client.options(colour="red")
    with pytest.raises(TypeError):
        client.submit(42)


def test_worker_loss_retries_then_job_lost():
    cluster = MemoryCluster(workers=1, hold=True, max_retries=1)
    client = cluster.client()
    d = client.submit(abs, -1)
    cluster.report_starts()  # a lost attempt counts once its start is reported
    cluster.kill(cluster.workers[0])
    cluster.add_worker(hold=True, name="second")
    cluster.report_starts()
    cluster.kill(cluster.workers[1])
    with pytest.raises(cwtx.JobLost) as info:
        cluster.result(d)
    assert [a["worker"] for a in info.value.attempts] == ["memory-0", "second"]


def test_a_worker_lost_before_it_reported_a_start_costs_no_attempt():
    cluster = MemoryCluster(workers=1, hold=True, max_retries=0)
    client = cluster.client()
    d = client.submit(abs, -1)
    cluster.flush()  # sent, and started in a slot, but not reported yet
    cluster.kill(cluster.workers[0])
    assert not d.called
    cluster.add_worker(name="second")
    assert cluster.result(d) == 1


def test_client_gone_cancels_its_running_job_on_the_worker():
    cluster = MemoryCluster(workers=1, hold=True)
    a, b = cluster.client("a"), cluster.client("b")
    a.submit(abs, -1)
    cluster.flush()
    slot = cluster.workers[0].slots[0]
    assert slot.current is not None
    cluster.refuse_clients = True  # the client process is gone for good
    cluster.disconnect(a)
    assert slot.current is None
    d = b.submit(abs, -2)
    cluster.flush()
    cluster.finish()
    assert cluster.result(d) == 2


def test_client_gives_up_after_reconnect_timeout():
    cluster = MemoryCluster(workers=0)
    client = cluster.client(reconnect_timeout=10)
    d = client.submit(abs, 1)
    cluster.flush()
    cluster.refuse_clients = True
    cluster.disconnect(client)
    for _ in range(9):
        cluster.advance(1)
        assert not d.called
    cluster.advance(2)
    with pytest.raises(cwtx.MasterConnectionLost, match="for 10 s"):
        cluster.result(d)
    with pytest.raises(RuntimeError):
        client.submit(abs, 1)


def test_client_reconnects_and_resubmits_exactly_once():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    done = client.submit(abs, -1)
    running = client.submit(abs, -2)
    queued = client.submit(abs, -3)
    worker = cluster.workers[0]
    slot = worker.slots[0]
    cluster.flush()
    cluster.finish()  # job 1 ends before the connection drops
    assert cluster.result(done) == 1
    cluster.refuse_clients = True
    cluster.disconnect(client)  # the master drops 3 and kills 2
    assert slot.current is None and not running.called
    cluster.refuse_clients = False
    cluster.advance(1)
    assert client.reconnects == 1
    ran = cluster.ran(worker)
    cluster.finish()
    cluster.finish()
    assert (cluster.result(running), cluster.result(queued)) == (2, 3)
    assert len(cluster.ran(worker)) == len(ran) + 1  # 2 ran again once, 3 once
    assert cluster.master.status()["completed"] == 3


def test_closed_client_fails_its_jobs():
    cluster = MemoryCluster(workers=0)
    client = cluster.client()
    d = client.submit(abs, 1)
    cluster.flush()
    closed = client.close()
    cluster.flush()
    assert closed.called
    with pytest.raises(cwtx.MasterConnectionLost, match="closed"):
        cluster.result(d)
    with pytest.raises(RuntimeError):
        client.submit(abs, 1)


def test_client_declares_a_silent_master_dead_and_reconnects():
    cluster = MemoryCluster(workers=1)
    client = cluster.client(heartbeat_interval=1, heartbeat_timeout=3)
    proto = client._protocol
    # The master's end stops reading: a frozen master.
    cluster._links[proto][0].ampBoxReceived = lambda box: None
    for _ in range(6):
        cluster.advance(1)
    assert proto.dead and client.reconnects == 1
    d = client.submit(abs, -4)
    cluster.flush()
    assert cluster.result(d) == 4


def test_silent_peer_is_declared_dead_and_its_jobs_retried():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    d = client.submit(abs, -3)
    cluster.flush()
    frozen = cluster.workers[0]
    # Freeze the worker: it stops reading and stops sending.
    frozen.connection.ampBoxReceived = lambda box: None
    frozen.monitor.stop()
    cluster.add_worker(name="healthy")
    cluster.refuse_workers = True  # frozen, it cannot reconnect either
    for _ in range(8):
        cluster.advance(5)
    assert [w["name"] for w in cluster.master.status()["workers"]] == ["healthy"]
    assert cluster.result(d) == 3


def test_status_counts():
    cluster = MemoryCluster(workers=2, slots=2, hold=True)
    client = cluster.client()
    for i in range(6):
        client.submit(abs, i)
    cluster.flush()
    status = cluster.master.status()
    assert (status["slots"], status["prefetched"], status["queued"]) == (4, 4, 2)
    cluster.report_starts()
    status = cluster.master.status()
    assert (status["running"], status["prefetched"]) == (4, 0)
    d = client.status()
    cluster.flush()
    assert cluster.result(d)["queued"] == 2


def test_leaving_worker_hands_back_queued_and_overdue_jobs_without_an_attempt():
    cluster = MemoryCluster(workers=0, max_retries=0, prefetch=2)
    leaving = cluster.add_worker(hold=True)
    leaving.grace = 5
    client = cluster.client()
    ds = [client.submit(abs, -i) for i in range(1, 4)]
    cluster.flush()
    slot = leaving.slots[0]
    assert slot.current is not None and len(leaving.queue) == 2
    left = Deferred.fromCoroutine(leaving.leave())
    cluster.flush()
    # The two queued jobs went back to the master at once; none may go to
    # the leaving worker any more.
    status = cluster.master.status()
    assert status["queued"] == 2 and status["workers"][0]["leaving"]
    cluster.advance(5.1)  # the grace period ends: the running job is handed back
    assert slot.current is None
    assert cluster.master.status()["queued"] == 3
    assert left.called

    cluster.add_worker(name="stayer")
    cluster.flush()
    # max_retries=0, yet nothing failed: handing back is not an attempt.
    assert [cluster.result(d) for d in ds] == [1, 2, 3]


def test_leaving_worker_lets_a_running_job_finish():
    cluster = MemoryCluster(workers=0)
    worker = cluster.add_worker(hold=True)
    client = cluster.client()
    d = client.submit(abs, -7)
    cluster.flush()
    left = Deferred.fromCoroutine(worker.leave())
    cluster.flush()
    assert not d.called
    cluster.finish(worker)
    assert cluster.result(d) == 7
    cluster.advance(1)
    assert left.called


def test_a_client_holding_too_much_is_slowed_down_not_failed():
    cluster = MemoryCluster(workers=0)
    client = cluster.client()
    session = cluster.master.clients[0]
    session.max_jobs = 10
    ds = [client.submit(abs, -i) for i in range(3000)]
    cluster.flush()
    held = len(session.jobs)
    assert 10 < held < 3000  # the master stopped answering: the client waits
    assert len(client._sender) > 0  # ...with the rest still on its side
    cluster.add_worker(slots=4)
    cluster.flush()
    assert [cluster.result(d) for d in ds] == list(range(3000))
    assert session.held_bytes == 0 and not session.jobs


def test_jobs_the_master_refuses_fail_instead_of_waiting(monkeypatch):
    cluster = MemoryCluster(workers=1)
    client = cluster.client()

    def refuse(*args, **kwargs):
        raise cwtx.ProtocolError("refused for this test")

    monkeypatch.setattr(cluster.master, "submit", refuse)
    d = client.submit(abs, -1)
    cluster.flush()
    with pytest.raises(cwtx.MasterConnectionLost, match="refused for this test"):
        cluster.result(d)
    assert client.reconnects == 0  # resubmitting would only be refused again


def test_a_job_cancelled_in_the_workers_prefetch_queue_never_runs():
    cluster = MemoryCluster(workers=1, hold=True, prefetch=2)
    worker = cluster.workers[0]
    client = cluster.client()
    ds = [client.submit(abs, -i) for i in (1, 2, 3)]
    cluster.flush()
    assert len(cluster.ran(worker)) == 1 and len(worker.queue) == 2  # 2 and 3 wait there
    ds[1].cancel()
    cluster.flush()
    assert len(worker.queue) == 1
    cluster.finish()
    cluster.finish()
    assert cluster.result(ds[0]) == 1 and cluster.result(ds[2]) == 3
    with pytest.raises(cwtx.JobCancelled):
        cluster.result(ds[1])
    assert len(cluster.ran(worker)) == 2  # job 2 never started
    assert worker.tasks == {} and cluster.master.workers[0].running == {}


def test_a_cancel_that_overtakes_its_job_on_the_wire_stops_it_running():
    cluster = MemoryCluster(workers=1)
    worker = cluster.workers[0]
    worker.cancel([7])  # the master's cancel for task 7 arrived before its RunTasks
    record = {
        "task": 7,
        "session": 0,
        "fn": b"F" * 32,
        "fn_env": "{}",
        "fn_code": b"x",
        "fn_code_blob": 0,
        "args": b"",
        "args_blob": 0,
        "refs": b"",
        "timeout": 0.0,
        "resources": "{}",
        "order": 0.0,
        "forward_output": 0,
    }
    reported = []
    worker._report = lambda task, status, value, error: reported.append((task, status))
    worker.accept(worker.connection, record)
    worker.dispatch()
    cluster.flush()
    assert reported == [(7, "cancelled")] and cluster.ran(worker) == []
    assert 7 not in worker.cancelled_early


def test_a_result_that_crosses_a_cancel_is_ignored_once():
    """The worker finishes a job while the client cancels it: the result
    reaches the client after the cancel.  It is ignored (and counted), the
    connection stays up and the job ran once."""
    cluster = MemoryCluster(workers=1, hold=True)
    worker = cluster.workers[0]
    client = cluster.client()
    d = client.submit(abs, -1)
    cluster.flush()
    cluster.child(worker).finish()  # the result is written...
    cluster.clock.advance(0)
    cluster.pump(worker)  # ...and reaches the master, which passes it on
    d.cancel()  # meanwhile the client cancels
    cluster.flush()
    with pytest.raises(cwtx.JobCancelled):
        cluster.result(d)
    assert client.ignored_results == 1
    assert client.reconnects == 0 and client.connected
    assert len(cluster.ran(worker)) == 1
    d2 = client.submit(abs, -2)
    cluster.flush()
    cluster.finish()
    assert cluster.result(d2) == 2


def test_a_duplicate_result_is_delivered_once():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    d = client.submit(abs, -4)
    cluster.flush()
    assert cluster.result(d) == 4
    session = cluster.master.clients[0]
    from cwtx.client.serialize import pickle_arguments
    from cwtx.wire.payload import Payload

    session.deliver((1, "ok", Payload.of(pickle_arguments((), {})), ""))  # job 1 again
    cluster.flush()
    assert client.ignored_results == 1 and client.reconnects == 0


def test_max_retries_zero_from_the_client_is_not_the_masters_default():
    cluster = MemoryCluster(workers=1, hold=True, max_retries=3)
    client = cluster.client()
    d = client.options(max_retries=0).submit(abs, -1)
    cluster.report_starts()
    cluster.kill(cluster.workers[0])
    with pytest.raises(cwtx.JobLost) as info:
        cluster.result(d)
    assert len(info.value.attempts) == 1 and "max_retries=0" in str(info.value)


def test_no_max_retries_from_the_client_means_the_masters_default():
    cluster = MemoryCluster(workers=1, hold=True, max_retries=1)
    client = cluster.client()
    d = client.submit(abs, -1)
    cluster.report_starts()
    cluster.kill(cluster.workers[0])
    assert not d.called  # one retry is allowed
    cluster.add_worker(hold=True, name="second")
    cluster.report_starts()
    cluster.kill(cluster.workers[1])
    with pytest.raises(cwtx.JobLost) as info:
        cluster.result(d)
    assert len(info.value.attempts) == 2


def test_a_client_holding_too_many_bytes_is_slowed_down_not_failed():
    cluster = MemoryCluster(workers=0)
    client = cluster.client()
    session = cluster.master.clients[0]
    session.max_bytes = 200_000
    ds = [client.submit(len, b"x" * 50_000) for _ in range(40)]
    cluster.flush()
    assert session.held_bytes < 200_000 + 5 * 60_000  # a few batches past the limit
    assert len(client._sender) > 0
    cluster.add_worker(slots=2)
    cluster.flush()
    assert [cluster.result(d) for d in ds] == [50_000] * 40
    assert session.held_bytes == 0


def test_a_worker_whose_connection_drops_reconnects_and_registers_again():
    cluster = MemoryCluster(workers=1, hold=True)
    worker = cluster.workers[0]
    client = cluster.client()
    d = client.submit(abs, -5)
    cluster.flush()
    first = worker.connection
    cluster.disconnect(worker)  # a network failure: its running job is lost
    assert worker.connection is None and cluster.master.workers == []
    assert worker.slots[0].current is None  # the abandoned job was killed
    cluster.advance(11)  # within the worker's longest backoff
    assert worker.connection is not None and worker.connection is not first
    assert [w.name for w in cluster.master.workers] == ["memory-0"]
    cluster.finish()  # the job was retried on the same, reconnected worker
    assert cluster.result(d) == 5


def test_a_worker_that_cannot_connect_says_why():
    cluster = MemoryCluster(workers=0)
    cluster.refuse_workers = True
    with pytest.raises(AssertionError, match="did not register: the MemoryCluster refuses"):
        cluster.add_worker()


# -- the worker's side of odd input ---------------------------------------------------------


def task_record(task: int, fn: bytes = b"F" * 32, code: bytes = b"", **fields) -> dict:
    return {
        "task": task,
        "session": 0,
        "fn": fn,
        "fn_env": "{}",
        "fn_code": code,
        "fn_code_blob": 0,
        "args": b"",
        "args_blob": 0,
        "refs": b"",
        "timeout": 0.0,
        "resources": "{}",
        "order": 0.0,
        "forward_output": 0,
        **fields,
    }


def reports(worker) -> list:
    seen: list = []
    worker._report = lambda task, status, value, error: seen.append((task, status, error))
    return seen


def test_a_worker_ends_tasks_it_cannot_run_and_says_why():
    cluster = MemoryCluster(workers=1)
    worker = cluster.workers[0]
    seen = reports(worker)
    worker.accept(worker.connection, task_record(1))  # a function never sent
    worker.accept(worker.connection, task_record(2, args_blob=99))  # a blob never streamed
    assert [(t, s) for t, s, _ in seen] == [(1, "error"), (2, "error")]
    assert "function" in seen[0][2] and "was never sent" in seen[0][2]
    assert "blob 99, which was never streamed" in seen[1][2]
    assert cluster.ran(worker) == []


def test_a_worker_runs_and_caches_no_code_that_does_not_hash_to_its_name():
    """Workers cache functions by hash across clients: code sent under
    another function's hash must neither run nor replace the real one."""
    cluster = MemoryCluster(workers=1)
    worker = cluster.workers[0]
    seen = reports(worker)
    real = cloudpickle.dumps(divmod)
    fn = function_hash("{}", [real])
    worker.accept(worker.connection, task_record(1, fn, code=cloudpickle.dumps(pow)))
    worker.accept(worker.connection, task_record(2, fn))  # nothing was cached under fn
    assert [(t, s) for t, s, _ in seen] == [(1, "error"), (2, "error")]
    assert "does not match its code" in seen[0][2] and "was never sent" in seen[1][2]
    worker.accept(worker.connection, task_record(3, fn, code=real))
    worker.accept(worker.connection, task_record(4, fn, code=cloudpickle.dumps(pow)))
    assert worker.functions.get(fn)[1].pieces == [real]  # the real one stays
    assert [(t, s) for t, s, _ in seen[2:]] == [(4, "error")]
    worker.dispatch()
    assert cluster.ran(worker) == [3]


def test_a_leaving_worker_hands_back_what_arrives():
    cluster = MemoryCluster(workers=1)
    worker = cluster.workers[0]
    seen = reports(worker)
    worker.leaving = True
    worker.accept(worker.connection, task_record(5))
    assert [(t, s) for t, s, _ in seen] == [(5, "requeue")]
    assert "left before starting the job" in seen[0][2]


def test_the_early_cancel_memory_is_bounded():
    cluster = MemoryCluster(workers=1)
    worker = cluster.workers[0]
    worker.cancel(list(range(10_000, 110_000)))
    assert len(worker.cancelled_early) == 100_000
    worker.cancel([1])  # one more clears what crossed with results long ago
    assert worker.cancelled_early == {1}


def test_a_worker_whose_master_does_not_take_its_leave_still_leaves():
    cluster = MemoryCluster(workers=1)
    worker = cluster.workers[0]
    cluster.master_end(worker).locator = type(
        "Deaf", (), {"locateResponder": lambda self, name: None}
    )()
    left = Deferred.fromCoroutine(worker.leave())
    cluster.advance(6)
    assert left.called and worker.connection is None


def test_a_worker_needs_a_slot():
    with pytest.raises(ValueError, match="at least one slot, not 0"):
        MemoryCluster(workers=1, slots=0)


def test_the_cluster_says_what_is_not_connected():
    cluster = MemoryCluster(workers=1)
    worker = cluster.workers[0]
    cluster.kill(worker)
    with pytest.raises(ValueError, match="is not connected"):
        cluster.disconnect(worker)
    with pytest.raises(AssertionError, match="has not fired"):
        cluster.result(Deferred())


# -- the client, odd uses ---------------------------------------------------------------------


def test_a_closed_client_refuses_new_jobs_and_status():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    assert client.pending == 0 and client.connected
    closed = client.close()
    cluster.flush()
    cluster.result(closed)
    with pytest.raises(RuntimeError, match="closed"):
        client.submit_pickled(client._default, *_pickled(abs, -1))
    with pytest.raises(cwtx.MasterConnectionLost, match="not connected"):
        cluster.result(client.status())


def _pickled(fn, *args):
    from cwtx.client.serialize import pickle_arguments, pickle_function

    return pickle_function(fn), pickle_arguments(args, {})


def test_option_views_chain():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    view = client.options(priority=2).options(timeout=5)
    d = view.submit(abs, -3)
    cluster.flush()
    job = next(iter(cluster.master.clients[0].jobs.values()))
    assert (job.options.priority, job.options.timeout) == (2, 5.0)
    cluster.finish()
    assert cluster.result(d) == 3


def test_closing_a_client_that_is_reconnecting_stops_it_for_good():
    cluster = MemoryCluster(workers=0)
    client = cluster.client(reconnect_timeout=30)
    d = client.submit(abs, -1)
    cluster.flush()
    cluster.refuse_clients = True
    cluster.disconnect(client)
    assert client.pending == 1 and not client.connected
    closed = client.close()
    cluster.flush()
    assert closed.called
    with pytest.raises(cwtx.MasterConnectionLost, match="closed"):
        cluster.result(d)
    cluster.refuse_clients = False
    cluster.advance(60)  # no reconnection, no late failure
    assert not client.connected and client.reconnects == 0


def test_a_task_cancelled_before_its_record_leaves_the_master_is_never_sent():
    cluster = MemoryCluster(workers=1, hold=True)
    worker = cluster.workers[0]
    client = cluster.client()
    first, second = client.submit(abs, -1), client.submit(abs, -2)
    cluster.flush()
    cluster.child(worker).finish()
    cluster.clock.advance(0)  # the worker sends the first result...
    cluster.pump(worker)  # ...the master takes it and queues the second task for the worker
    session = cluster.master.clients[0]
    cluster.master.cancel(session, [2])  # and drops it before that record goes out
    cluster.flush()
    assert cluster.result(first) == 1 and len(cluster.ran(worker)) == 1
    assert cluster.master.workers[0].running == {} and not second.called


def test_a_worker_calls_its_peer_the_master():
    cluster = MemoryCluster(workers=1)
    assert cluster.workers[0].connection.describe() == "master"


# -- isolating clients ------------------------------------------------------------------------


def test_by_default_a_slot_child_serves_every_client():
    cluster = MemoryCluster(workers=1)
    a, b = cluster.client("a"), cluster.client("b")
    for client in (a, b, a):
        d = client.submit(abs, -1)
        cluster.flush()
        assert cluster.result(d) == 1
    assert len(cluster.workers[0].reactor.children) == 1


def test_isolate_clients_gives_each_session_a_fresh_child():
    cluster = MemoryCluster(workers=0)
    worker = cluster.add_worker(isolate_clients=True)
    a, b = cluster.client("a"), cluster.client("b")
    for client in (a, a, b, b, a):
        d = client.submit(abs, -1)
        cluster.flush()
        assert cluster.result(d) == 1
    children = worker.reactor.children
    assert len(children) == 3  # the first, then a fresh one at each switch (to b, to a)
    assert all(child.ended for child in children[:-1]) and not children[-1].ended
    assert len(cluster.ran(worker)) == 5


def test_a_master_that_fails_the_handshake_otherwise_is_named(monkeypatch):
    # Not the secret, not TLS, not the protocol version: say the master broke.
    import types

    from cwtx.master import connection
    from cwtx.wire import handshake

    def broken_nonce() -> bytes:
        raise RuntimeError("the master is out of sorts")

    broken = types.SimpleNamespace(**{**vars(handshake), "nonce": broken_nonce})
    monkeypatch.setattr(connection, "auth", broken)
    cluster = MemoryCluster(workers=0)
    with pytest.raises(cwtx.ProtocolMismatch, match="the master refused the handshake"):
        cluster.client()
