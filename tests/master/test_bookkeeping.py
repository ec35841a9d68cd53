"""The master's bookkeeping, with no I/O at all: sessions deliver into lists."""

from __future__ import annotations

import json

import pytest

import cwtx
from cwtx._errors import ProtocolError
from cwtx.master.master import Master
from cwtx.master.sessions import RESULT_OVERHEAD, ClientSession, WorkerSession
from cwtx.wire.names import PROTOCOL_VERSION, function_hash
from cwtx.wire.payload import EMPTY, Payload

#: A function the test clients define: its hash is its content's.
FN = function_hash("{}", [b"code"])


class FakeWorker(WorkerSession):
    def __init__(self, name: str, slots: int = 1, prefetch: int = 0) -> None:
        self.runs: list = []
        self.cancels: list[int] = []
        super().__init__(name, slots, self._run, self.cancels.append, prefetch=prefetch)

    def _run(self, task) -> None:
        task.sent = True  # as the protocol's encoder does when it sends the record
        self.runs.append(task.job)

    def start(self, master: Master, *jobs) -> None:
        """Report these jobs (default: all sent and not ended) started, as
        the worker does when a slot takes one."""
        for job in jobs or [j for j in self.runs if j.worker is self]:
            master.task_started(self, job.task.id)


def make_client(master: Master, name: str = "c") -> tuple[ClientSession, list]:
    results: list = []
    session = ClientSession(name, results.append)
    master.add_client(session)
    master.define(session, FN, "{}", Payload.of(b"code"))
    return session, results


def submit(master, session, job_id, **kw):
    master.submit(session, job_id, FN, Payload.of(b"args%d" % job_id), **kw)


def test_fifo_within_a_client_and_queue_without_workers():
    m = Master()
    c, _ = make_client(m)
    for i in range(1, 4):
        submit(m, c, i)
    m.dispatch()
    assert m.status()["queued"] == 3
    w = FakeWorker("w", slots=3)
    m.add_worker(w)
    assert [j.job_id for j in w.runs] == [1, 2, 3]
    assert (m.status()["queued"], m.status()["prefetched"], m.status()["running"]) == (0, 3, 0)
    w.start(m)
    assert (m.status()["queued"], m.status()["prefetched"], m.status()["running"]) == (0, 0, 3)


def test_clients_are_served_in_turn():
    m = Master()
    a, _ = make_client(m, "a")
    b, _ = make_client(m, "b")
    for i in range(1, 5):
        submit(m, a, i)
    for i in range(1, 3):
        submit(m, b, i)
    w = FakeWorker("w", slots=4)
    m.add_worker(w)
    assert [(j.client.name, j.job_id) for j in w.runs] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_priority_runs_first_then_fifo():
    m = Master()
    c, _ = make_client(m)
    submit(m, c, 1)
    submit(m, c, 2, priority=5)
    submit(m, c, 3)
    submit(m, c, 4, priority=5)
    w = FakeWorker("w", slots=4)
    m.add_worker(w)
    assert [j.job_id for j in w.runs] == [2, 4, 1, 3]


def test_result_goes_to_its_client_and_frees_the_slot():
    m = Master()
    c, results = make_client(m)
    submit(m, c, 1)
    submit(m, c, 2)
    w = FakeWorker("w", slots=1)
    m.add_worker(w)
    assert [j.job_id for j in w.runs] == [1]
    m.task_result(w, w.runs[0].task.id, "ok", Payload.of(b"r1"), "")
    m.dispatch()
    assert results[0][:2] == (1, "ok") and results[0][2].tobytes() == b"r1"
    assert [j.job_id for j in w.runs] == [1, 2]


def test_unknown_function_ends_the_job_with_a_clear_error():
    m = Master()
    c, results = make_client(m)
    m.submit(c, 9, b"X" * 32, Payload.of(b""))
    (job_id, status, _, error) = results[0]
    assert (job_id, status) == (9, "error")
    info = json.loads(error)
    assert info["type"] == "ProtocolError"
    assert info["message"] == f"job 9 names function {(b'X' * 32).hex()}, never sent"


def test_duplicate_job_id_is_ignored():
    m = Master()
    c, _ = make_client(m)
    submit(m, c, 1)
    submit(m, c, 1)
    assert m.status()["queued"] == 1


def test_cancel_queued_job_never_dispatches():
    m = Master()
    c, results = make_client(m)
    submit(m, c, 1)
    submit(m, c, 2)
    m.cancel(c, [1])
    w = FakeWorker("w", slots=2)
    m.add_worker(w)
    assert [j.job_id for j in w.runs] == [2]
    assert results == []


def test_cancel_running_job_asks_the_worker_and_keeps_the_slot_until_it_answers():
    m = Master()
    c, results = make_client(m)
    submit(m, c, 1)
    submit(m, c, 2)
    w = FakeWorker("w", slots=1)
    m.add_worker(w)
    m.cancel(c, [1])
    assert w.cancels == [w.runs[0].task.id]
    assert len(w.runs) == 1  # slot still busy until the worker answers
    m.task_result(w, w.runs[0].task.id, "cancelled", Payload.of(b""), "")
    m.dispatch()
    assert [j.job_id for j in w.runs] == [1, 2]
    assert results == []  # the client already ended job 1 itself


def test_client_gone_drops_queued_and_cancels_running():
    m = Master()
    a, _ = make_client(m, "a")
    b, b_results = make_client(m, "b")
    for i in range(1, 4):
        submit(m, a, i)
    w = FakeWorker("w", slots=1)
    m.add_worker(w)
    m.remove_client(a)
    assert w.cancels == [w.runs[0].task.id]
    submit(m, b, 1)
    m.task_result(w, w.runs[0].task.id, "cancelled", Payload.of(b""), "")
    m.dispatch()
    assert [(j.client.name, j.job_id) for j in w.runs] == [("a", 1), ("b", 1)]
    assert m.status()["queued"] == 0


def test_worker_lost_retries_on_another_worker_then_job_lost():
    m = Master(max_retries=1)
    c, results = make_client(m)
    submit(m, c, 1)
    w1 = FakeWorker("w1")
    m.add_worker(w1)
    w2 = FakeWorker("w2")
    m.add_worker(w2)
    assert [j.job_id for j in w1.runs] == [1]
    w1.start(m)
    m.remove_worker(w1, "connection lost")
    assert [j.job_id for j in w2.runs] == [1]  # retried elsewhere
    w2.start(m)
    m.remove_worker(w2, "heartbeat timeout")
    (job_id, status, _, error) = results[0]
    info = json.loads(error)
    assert (job_id, status, info["type"]) == (1, "lost", "JobLost")
    assert [a["worker"] for a in info["attempts"]] == ["w1", "w2"]
    assert info["message"] == (
        "job 1 was lost 2 times (max_retries=1): w1: connection lost; w2: heartbeat timeout"
    )
    assert "connection lost" in info["message"] and "heartbeat timeout" in info["message"]


def test_retry_prefers_a_worker_that_has_not_failed_it():
    m = Master()
    c, _ = make_client(m)
    w1 = FakeWorker("w1", slots=2)
    w2 = FakeWorker("w2", slots=1)
    m.add_worker(w1)
    m.add_worker(w2)
    submit(m, c, 1)
    m.dispatch()
    assert w1.runs and w1.runs[0].job_id == 1
    m.task_result(
        w1,
        w1.runs[0].task.id,
        "lost",
        Payload.of(b""),
        json.dumps({"message": "child died (signal 11)"}),
    )
    m.dispatch()
    assert [j.job_id for j in w2.runs] == [1]


def test_only_a_job_that_was_running_counts_an_attempt():
    m = Master(max_retries=0)
    c, results = make_client(m)
    submit(m, c, 1)
    w = WorkerSession("w", 1, lambda job: None, lambda t: None, prefetch=0)  # never sends
    m.add_worker(w)
    m.remove_worker(w, "gone before the job was sent")
    assert results == []
    assert m.status()["queued"] == 1


def test_per_job_max_retries_overrides_the_master_default():
    m = Master(max_retries=3)
    c, results = make_client(m)
    submit(m, c, 1, max_retries=0)
    w = FakeWorker("w")
    m.add_worker(w)
    w.start(m)
    m.remove_worker(w, "killed")
    assert results[0][1] == "lost"


def test_late_result_from_a_removed_worker_is_ignored():
    m = Master()
    c, results = make_client(m)
    submit(m, c, 1)
    w1 = FakeWorker("w1")
    m.add_worker(w1)
    task = w1.runs[0].task.id
    m.remove_worker(w1, "dead")
    m.task_result(w1, task, "ok", Payload.of(b"late"), "")
    assert results == []


def test_bad_options_rejected():
    with pytest.raises(ValueError, match="max_retries must be 0 or more, not -1"):
        Master(max_retries=-1)
    with pytest.raises(ValueError, match="prefetch must be 0 or more, not -2"):
        Master(prefetch=-2)
    m = Master()
    c, results = make_client(m)
    submit(m, c, 1, timeout=-1.0)
    submit(m, c, 2, timeout=float("nan"))
    for (job_id, status, _, error), expected in zip(results, (1, 2), strict=True):
        info = json.loads(error)
        assert (job_id, status, info["type"]) == (expected, "error", "ValueError")
        assert info["message"] == f"job {expected}: timeout must be 0 or more"
    assert m.status()["queued"] == 0


def test_prefetch_sends_more_than_slots_but_counts_only_started_jobs():
    m = Master(max_retries=0)
    c, results = make_client(m)
    for i in range(1, 6):
        submit(m, c, i)
    w = FakeWorker("w", slots=2, prefetch=2)
    m.add_worker(w)
    assert [j.job_id for j in w.runs] == [1, 2, 3, 4]
    # The worker reports what it started (here not the first two sent: it
    # orders its queue as the master's fair share says).
    w.start(m, w.runs[1], w.runs[3])
    (shown,) = m.status()["workers"]
    assert (shown["running"], shown["prefetched"]) == (2, 2)
    m.remove_worker(w, "killed")
    # Jobs 2 and 4 were running; 1 and 3 waited in its queue and go back to
    # the master's queue unharmed.
    assert sorted(r[0] for r in results if r[1] == "lost") == [2, 4]
    assert m.status()["queued"] == 3


def test_a_retried_job_goes_back_to_the_front_of_its_queue():
    m = Master()
    c, _ = make_client(m)
    for i in range(1, 5):
        submit(m, c, i)
    w1 = FakeWorker("w1")
    m.add_worker(w1)
    assert [j.job_id for j in w1.runs] == [1]
    m.remove_worker(w1, "killed")
    w2 = FakeWorker("w2")
    m.add_worker(w2)
    assert [j.job_id for j in w2.runs] == [1]  # before 2, 3 and 4


def test_a_retried_job_goes_first_of_its_priority_however_many_share_it():
    m = Master()
    c, _ = make_client(m)
    submit(m, c, 1, priority=2)
    w1 = FakeWorker("w1")
    m.add_worker(w1)
    submit(m, c, 2, priority=2)  # alone at its priority in the queue, then not
    submit(m, c, 3)
    submit(m, c, 4, priority=-(10**9))
    submit(m, c, 5, priority=10**9)
    m.remove_worker(w1, "killed")
    w2 = FakeWorker("w2", slots=5)
    m.add_worker(w2)
    assert [j.job_id for j in w2.runs] == [5, 1, 2, 3, 4]


def test_a_requeued_job_keeps_its_place_and_counts_no_attempt():
    m = Master(max_retries=0)
    c, results = make_client(m)
    submit(m, c, 1)
    submit(m, c, 2)
    w1 = FakeWorker("w1")
    m.add_worker(w1)
    m.worker_leaving(w1)  # a worker says it leaves before it hands tasks back
    m.task_result(w1, w1.runs[0].task.id, "requeue", Payload.of(b""), "")
    w2 = FakeWorker("w2")
    m.add_worker(w2)
    assert [j.job_id for j in w2.runs] == [1]
    assert results == []
    assert (w1.done, w1.lost) == (0, 0)


def test_a_task_handed_back_by_a_worker_that_is_not_leaving_counts_an_attempt():
    """Otherwise a worker could bounce every job it is sent, for ever."""
    m = Master(max_retries=1)
    c, results = make_client(m)
    submit(m, c, 1)
    w1 = FakeWorker("w1")
    m.add_worker(w1)
    m.task_result(w1, w1.runs[0].task.id, "requeue", Payload.of(b""), "")
    m.dispatch()
    assert [j.job_id for j in w1.runs] == [1, 1]  # retried (nowhere else to go)
    m.task_result(w1, w1.runs[1].task.id, "requeue", Payload.of(b""), "")
    assert [r[1] for r in results] == ["lost"]
    assert "worker w1 handed it back without leaving" in results[0][3]
    assert (w1.done, w1.lost) == (0, 2)


@pytest.mark.parametrize(
    ("client", "worker", "ok"),
    [
        (("3.11.7", "2.1.0"), ("3.11.2", "2.1.0"), True),  # patch releases differ: fine
        (("3.11.7", "2.1.0"), ("3.12.0", "2.1.0"), False),
        (("3.11.7", "2.1.0"), ("3.1.17", "2.1.0"), False),
        (("3.11.7", "2.1.0"), ("3.11.7", "3.0.0"), False),
        (("?", "?"), ("3.12.0", "1.0"), True),  # unknown (tests) matches anything
        (("3.11.7", "2.1.0"), ("?", "?"), True),
    ],
)
def test_compatible_versions(client, worker, ok):
    from cwtx.master.policy import compatible

    assert compatible(client, worker) is ok


def test_jobs_go_only_to_workers_with_the_clients_versions():
    m = Master()
    results: list = []
    c = ClientSession("c", results.append, versions=("3.11.7", "2.1.0"))
    m.add_client(c)
    m.define(c, FN, "{}", Payload.of(b"code"))
    odd = FakeWorker("odd", slots=8)
    odd.versions = ("3.12.1", "2.1.0")
    same = FakeWorker("same", slots=1)
    same.versions = ("3.11.2", "2.1.0")
    m.add_worker(odd)
    m.add_worker(same)
    for i in range(1, 4):
        submit(m, c, i)
    m.dispatch()
    assert odd.runs == [] and [j.job_id for j in same.runs] == [1]
    assert m.status()["queued"] == 2 and results == []


def test_with_no_matching_worker_a_job_ends_naming_both_versions():
    m = Master()
    results: list = []
    c = ClientSession("c", results.append, versions=("3.11.7", "2.1.0"))
    m.add_client(c)
    m.define(c, FN, "{}", Payload.of(b"code"))
    odd = FakeWorker("odd")
    odd.versions = ("3.12.1", "2.2.0")
    m.add_worker(odd)
    for i in (1, 2, 3):
        submit(m, c, i)
    m.dispatch()
    assert odd.runs == []
    assert [(r[0], r[1]) for r in results] == [(1, "error"), (2, "error"), (3, "error")]
    (job_id, status, _, error) = results[0]
    assert (job_id, status) == (1, "error")
    message = json.loads(error)["message"]
    assert "3.11.7" in message and "3.12.1" in message and "2.2.0" in message


def test_the_byte_limit_holds_back_the_submit_answer():
    m = Master()
    c, _ = make_client(m)
    c.max_bytes = c.functions[FN].size + 100  # its function counts too, once a job names it
    m.submit(c, 1, FN, Payload.of(b"x" * 60))
    assert c.when_below_limit().called
    m.submit(c, 2, FN, Payload.of(b"x" * 60))
    held = c.when_below_limit()
    assert not held.called and c.held_bytes == 2 * (60 + len("{}"))  # resources count too
    m.cancel(c, [1])
    assert held.called and c.held_bytes == 62


def test_the_job_limit_holds_back_the_submit_answer():
    m = Master()
    c, _ = make_client(m)
    c.max_jobs = 2
    for i in range(1, 4):
        submit(m, c, i)
    held = c.when_below_limit()
    assert not held.called
    m.cancel(c, [3])
    assert held.called


def test_a_job_keeps_the_options_it_was_submitted_with():
    m = Master()
    c, _ = make_client(m)
    submit(m, c, 1)
    submit(m, c, 2, timeout=2.5, priority=7, max_retries=1, resources='{"gpu": 1}')
    first, second = c.jobs[1].options, c.jobs[2].options
    assert (first.timeout, first.priority, first.max_retries, first.resources) == (
        0.0,
        0,
        3,
        "{}",
    )
    assert (second.timeout, second.priority, second.max_retries, second.resources) == (
        2.5,
        7,
        1,
        '{"gpu":1}',
    )


def test_jobs_that_ask_for_the_same_share_their_options_up_to_a_bound(monkeypatch):
    from cwtx.master import master as master_module

    monkeypatch.setattr(master_module, "MAX_SHARED_OPTIONS", 4)
    m = Master()
    c, _ = make_client(m)
    submit(m, c, 1, priority=2)
    submit(m, c, 2, priority=2)
    submit(m, c, 3, priority=3)
    assert c.jobs[1].options is c.jobs[2].options is not c.jobs[3].options
    for job_id in range(4, 10):  # a client asking for ever other options
        submit(m, c, job_id, timeout=float(job_id))
    assert len(c.options) == 4  # kept to share: no more
    assert [c.jobs[j].options.timeout for j in range(4, 10)] == [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    submit(m, c, 10, timeout=-1.0)  # checked all the same
    assert 10 not in c.jobs


def test_a_worker_reports_why_a_job_was_lost():
    m = Master(max_retries=1)
    c, results = make_client(m)
    submit(m, c, 1)
    w = FakeWorker("w")
    m.add_worker(w)
    m.task_result(w, w.runs[0].task.id, "lost", Payload.of(b""), json.dumps({"message": "segv"}))
    m.dispatch()
    m.task_result(w, w.runs[1].task.id, "lost", Payload.of(b""), "")  # no reason given
    attempts = json.loads(results[0][3])["attempts"]
    assert attempts == [{"worker": "w", "cause": "segv"}, {"worker": "w", "cause": "lost"}]


def test_an_attempt_that_was_never_sent_does_not_count_when_retried():
    """A job lost once, then given to a worker that went away before the
    job's record was sent: that second loss is no attempt."""
    m = Master(max_retries=1)
    c, results = make_client(m)
    submit(m, c, 1)
    w1 = FakeWorker("w1")
    m.add_worker(w1)
    m.remove_worker(w1, "killed")  # an attempt: it was running
    unsent = WorkerSession("w2", 1, lambda job: None, lambda task: None, prefetch=0)
    m.add_worker(unsent)
    m.remove_worker(unsent, "gone before sending")
    assert results == [] and m.status()["queued"] == 1


def test_a_refused_client_does_not_stop_the_others():
    m = Master()
    old, old_results = make_client(m, "old")
    old.versions = ("2.7.18", "0.5")
    new, _ = make_client(m, "new")
    w = FakeWorker("w", slots=2)
    w.versions = ("3.11.7", "2.1.0")
    m.add_worker(w)
    new.versions = w.versions
    submit(m, old, 1)
    submit(m, new, 1)
    m.dispatch()
    assert old_results[0][1] == "error" and [j.client.name for j in w.runs] == ["new"]


def test_three_clients_are_served_in_turn():
    m = Master()
    clients = [make_client(m, name)[0] for name in "abc"]
    for session in clients:
        for i in range(1, 3):
            submit(m, session, i)
    w = FakeWorker("w", slots=6)
    m.add_worker(w)
    assert [j.client.name for j in w.runs] == ["a", "b", "c", "a", "b", "c"]


def test_a_client_with_nothing_queued_does_not_hold_up_the_next():
    m = Master()
    make_client(m, "idle")
    busy, _ = make_client(m, "busy")
    submit(m, busy, 1)
    w = FakeWorker("w")
    m.add_worker(w)
    assert [j.client.name for j in w.runs] == ["busy"]


def test_a_client_whose_workers_are_busy_does_not_hold_up_the_next():
    m = Master()
    odd, _ = make_client(m, "odd")
    odd.versions = ("3.12.0", "2.1.0")
    usual, _ = make_client(m, "usual")
    usual.versions = ("3.11.7", "2.1.0")
    busy_odd = FakeWorker("odd-worker")
    busy_odd.versions = odd.versions
    free = FakeWorker("usual-worker")
    free.versions = usual.versions
    m.add_worker(busy_odd)
    submit(m, odd, 1)  # takes odd-worker's only slot
    m.add_worker(free)
    submit(m, odd, 2)  # waits: its only worker is busy
    submit(m, usual, 1)
    m.policy._next_client = 0  # odd's turn comes first
    m.dispatch()
    assert [(j.client.name, j.job_id) for j in free.runs] == [("usual", 1)]
    assert m.status()["queued"] == 1


def test_the_mismatch_message_names_at_most_five_workers():
    from cwtx.master.policy import mismatch_message

    client = ClientSession("c", lambda item: None, versions=("3.11.7", "2.1.0"))
    workers = [FakeWorker(f"w{i}") for i in range(7)]
    for w in workers:
        w.versions = ("3.12.0", "2.1.0")
    message = mismatch_message(client, workers)
    assert "w4: Python 3.12.0, cloudpickle 2.1.0; " not in message
    assert "w3: Python 3.12.0, cloudpickle 2.1.0; w4: Python 3.12.0" in message
    assert "w5" not in message


def test_the_flow_control_limit_is_inclusive_and_waiters_wait_until_below_it():
    m = Master()
    c, _ = make_client(m)
    c.max_bytes = c.functions[FN].size + 124  # its function counts while a job names it
    for i in (1, 2, 3):
        m.submit(c, i, FN, Payload.of(b"x" * 60))  # 62 bytes each, with resources "{}"
    held = c.when_below_limit()  # 186 bytes held
    assert not held.called
    m.cancel(c, [3])  # 124: at the limit, not over it
    assert held.called and not c.over_limit()
    m.submit(c, 4, FN, Payload.of(b"x" * 60))
    waiting = c.when_below_limit()
    m.cancel(c, [4, 1])
    assert waiting.called


def test_a_waiter_is_not_woken_while_still_over_the_limit():
    m = Master()
    c, _ = make_client(m)
    c.max_bytes = c.functions[FN].size + 100  # its function counts too, once a job names it
    for i in (1, 2, 3):
        m.submit(c, i, FN, Payload.of(b"x" * 60))
    held = c.when_below_limit()
    m.cancel(c, [3])  # 120 bytes: still over
    assert not held.called
    m.cancel(c, [2])
    assert held.called


def test_a_workers_status_shows_its_resources_and_whether_it_is_leaving():
    m = Master()
    w = FakeWorker("w")
    m.add_worker(w)
    (shown,) = m.status()["workers"]
    assert {k: shown[k] for k in ("name", "slots", "running", "prefetched")} == {
        "name": "w",
        "slots": 1,
        "running": 0,
        "prefetched": 0,
    }
    assert (shown["resources"], shown["leaving"]) == ({}, False)
    m.worker_leaving(w)
    assert m.status()["workers"][0]["leaving"] is True


def test_status_says_where_each_peer_runs_how_long_and_how_its_jobs_ended():
    clock = [100.0]
    m = Master(now=lambda: clock[0])
    m.address = "node1:5494"
    c, _ = make_client(m)
    c.origin = {"host": "laptop", "pid": 42, "user": "ann"}
    w = FakeWorker("w", slots=3)
    w.origin = {"host": "node2", "pid": 7, "user": "ann"}
    heard = [100.0]
    w.heard_at = lambda: heard[0]
    m.add_worker(w)
    for i in (1, 2, 3):
        submit(m, c, i)
    m.dispatch()
    m.task_result(w, w.runs[0].task.id, "ok", Payload.of(b"r"), "")
    m.task_result(w, w.runs[1].task.id, "error", Payload.of(b""), '{"type": "ValueError"}')
    clock[0], heard[0] = 160.0, 157.5
    status = m.status()
    assert (status["address"], status["uptime"]) == ("node1:5494", 60.0)
    assert status["protocol"] == PROTOCOL_VERSION
    assert status["version"] == cwtx.__version__
    (shown,) = status["workers"]
    assert {k: shown[k] for k in ("host", "pid", "user", "done", "failed", "lost")} == {
        "host": "node2",
        "pid": 7,
        "user": "ann",
        "done": 1,
        "failed": 1,
        "lost": 0,
    }
    assert (shown["uptime"], shown["heard"]) == (60.0, 2.5)
    (client,) = status["clients"]
    assert {k: client[k] for k in ("host", "pid", "user", "done", "failed", "prefetched")} == {
        "host": "laptop",
        "pid": 42,
        "user": "ann",
        "done": 1,
        "failed": 1,
        "prefetched": 1,
    }


def test_the_turn_passes_over_idle_clients_in_order():
    m = Master()
    make_client(m, "idle")
    b, _ = make_client(m, "b")
    c, _ = make_client(m, "c")
    for session in (b, c):
        submit(m, session, 1)
        submit(m, session, 2)
    w = FakeWorker("w", slots=4)
    m.add_worker(w)
    assert [j.client.name for j in w.runs] == ["b", "c", "b", "c"]


def test_removing_what_is_not_there_changes_nothing():
    m = Master()
    c, _ = make_client(m)
    m.remove_client(c)
    m.remove_client(c)
    w = FakeWorker("w")
    m.remove_worker(w, "never added")
    assert m.clients == [] and m.workers == []


def test_a_job_cancelled_before_its_record_was_sent_frees_its_place():
    m = Master()
    c, _ = make_client(m)
    unsent = WorkerSession("w", 1, lambda job: None, lambda task: None, prefetch=0)
    m.add_worker(unsent)
    submit(m, c, 1)
    m.dispatch()
    assert len(unsent.running) == 1
    m.cancel(c, [1])
    assert unsent.running == {} and m.policy._workers[unsent].free == 1


# -- hostile or broken peers ------------------------------------------------------------


def test_a_function_must_hash_to_its_name():
    m = Master()
    c = ClientSession("c", lambda item: None)
    m.add_client(c)
    with pytest.raises(ProtocolError, match="does not match its code"):
        m.define(c, FN, "{}", Payload.of(b"other code"))
    with pytest.raises(ProtocolError, match="does not match its code"):
        m.define(c, function_hash("{}", [b"x"]), '{"cwd": "/"}', Payload.of(b"x"))


def test_no_client_can_pass_its_code_off_as_anothers():
    """Each client's functions are its own, and named by their content."""
    m = Master()
    honest, results = make_client(m, "honest")
    attacker = ClientSession("attacker", lambda item: None)
    m.add_client(attacker)
    with pytest.raises(ProtocolError):
        m.define(attacker, FN, "{}", Payload.of(b"print('pwned')"))
    submit(m, honest, 1)
    w = FakeWorker("w")
    m.add_worker(w)
    assert w.runs[0].fn.code.tobytes() == b"code"


def test_a_malformed_lost_result_still_retries_the_job():
    m = Master(max_retries=1)
    c, results = make_client(m)
    submit(m, c, 1)
    w1, w2 = FakeWorker("w1"), FakeWorker("w2")
    m.add_worker(w1)
    m.task_result(w1, w1.runs[0].task.id, "lost", Payload.of(b""), "not json {")
    m.add_worker(w2)
    assert [j.job_id for j in w2.runs] == [1]  # retried, not orphaned
    assert c.jobs[1].attempts == [{"worker": "w1", "cause": "not json {"}]


def test_a_lost_result_nested_too_deep_to_read_still_retries_the_job():
    m = Master(max_retries=1)
    c, results = make_client(m)
    submit(m, c, 1)
    w1, w2 = FakeWorker("w1"), FakeWorker("w2")
    m.add_worker(w1)
    m.task_result(w1, w1.runs[0].task.id, "lost", Payload.of(b""), "[" * 5000 + "]" * 5000)
    m.add_worker(w2)
    assert [j.job_id for j in w2.runs] == [1]  # retried, not orphaned
    assert c.jobs[1].attempts[0]["cause"].startswith("[[[")


def test_a_result_with_an_unknown_status_ends_the_job_clearly():
    m = Master()
    c, results = make_client(m)
    submit(m, c, 1)
    w = FakeWorker("w")
    m.add_worker(w)
    m.task_result(w, w.runs[0].task.id, "exploded", Payload.of(b"x"), "")
    (job_id, status, _, error) = results[0]
    assert (job_id, status) == (1, "error")
    assert "sent a malformed result (status exploded)" in json.loads(error)["message"]
    assert w.running == {}


def test_a_result_for_a_task_the_worker_was_not_given_is_ignored_and_logged():
    from twisted.logger import globalLogPublisher

    m = Master()
    c, results = make_client(m)
    submit(m, c, 1)
    w = FakeWorker("w")
    m.add_worker(w)
    lines: list = []
    globalLogPublisher.addObserver(lines.append)
    try:
        for _ in range(10):
            m.task_result(w, 12345, "ok", Payload.of(b"forged"), "")
    finally:
        globalLogPublisher.removeObserver(lines.append)
    said = [e for e in lines if "which worker" in e.get("log_format", "")]
    assert 1 <= len(said) <= 3  # rate-limited
    assert results == [] and 1 in c.jobs  # the real job is untouched


def test_a_function_counts_against_the_clients_bytes_exactly_while_a_live_job_names_it():
    """Idle ones are bounded by the master's cache instead: counting them
    could hold a client's answers back until it answers a DropFunctions,
    which it does only once its queued records are out."""
    from cwtx.master.sessions import FUNCTION_OVERHEAD, MAX_CLIENT_BYTES, MAX_CLIENT_JOBS

    m = Master()
    c = ClientSession("c", lambda item: None)
    m.add_client(c)
    assert (c.max_bytes, c.max_jobs, c.function_bytes) == (MAX_CLIENT_BYTES, MAX_CLIENT_JOBS, 0)
    m.define(c, FN, "{}", Payload.of(b"code"))
    size = len("{}") + len(b"code") + FUNCTION_OVERHEAD
    assert c.functions[FN].size == size and c.function_bytes == 0  # idle: no job names it
    submit(m, c, 1)
    submit(m, c, 2)
    assert c.function_bytes == size  # once, whatever the number of jobs
    c.max_bytes = c.held_bytes + size
    assert not c.over_limit()  # at the limit is allowed
    c.max_bytes -= 1
    assert c.over_limit()  # function bytes count towards the flow-control limit
    m.cancel(c, [1, 2])
    assert c.function_bytes == 0 and FN in c.functions  # idle, in the master's cache
    c.max_bytes = size  # a second function while one is live: over it
    submit(m, c, 3)
    with pytest.raises(ProtocolError, match=f"functions would hold over {size} bytes"):
        m.define(c, function_hash("{}", [b"more"]), "{}", Payload.of(b"more"))


def test_a_client_that_ignores_flow_control_is_refused_after_the_documented_number():
    from cwtx.master.sessions import MAX_UNANSWERED_SUBMITS

    m = Master()
    c, _ = make_client(m)
    c.max_jobs = 0
    submit(m, c, 1)  # over the limit: answers wait
    waiting = [c.when_below_limit() for _ in range(MAX_UNANSWERED_SUBMITS)]
    assert not any(d.called for d in waiting)
    with pytest.raises(ProtocolError) as info:
        c.when_below_limit()
    assert str(info.value) == (
        f"this client ignores flow control: {MAX_UNANSWERED_SUBMITS} SubmitJobs "
        "are waiting for their answer and it sends more"
    )


def test_a_malformed_result_ends_the_job_as_a_protocol_error_with_no_value():
    m = Master()
    c, results = make_client(m)
    submit(m, c, 1)
    w = FakeWorker("w")
    m.add_worker(w)
    m.task_result(w, w.runs[0].task.id, "\x1b[31m" + "s" * 100, Payload.of(b"x"), "")
    (_, status, value, error) = results[0]
    assert status == "error" and value == b""
    error = json.loads(error)
    assert error["type"] == "ProtocolError"
    shown = "\\x1b[31m" + "s" * 32 + "..."  # escaped, cut to 40 characters
    assert error["message"] == f"worker w sent a malformed result (status {shown})"


def test_a_lost_tasks_cause_is_escaped_and_cut_short():
    m = Master(max_retries=5)
    c, results = make_client(m)
    submit(m, c, 1)
    w = FakeWorker("w")
    m.add_worker(w)
    cause = "\r" + "c" * 1000
    m.task_result(w, w.runs[0].task.id, "lost", Payload.of(b""), json.dumps({"message": cause}))
    (attempt,) = c.jobs[1].attempts
    assert attempt["cause"] == "\\r" + "c" * 498 + "..."


def test_unknown_task_lines_are_limited_per_worker():
    from twisted.logger import globalLogPublisher

    m = Master()
    workers = [FakeWorker("w1"), FakeWorker("w2")]
    for w in workers:
        m.add_worker(w)
    lines: list = []
    globalLogPublisher.addObserver(lines.append)
    try:
        for w in workers:
            for _ in range(10):
                m.task_result(w, 12345, "ok", Payload.of(b"forged"), "")
    finally:
        globalLogPublisher.removeObserver(lines.append)
    said = [e["w"] for e in lines if "which worker" in e.get("log_format", "")]
    assert said == ["w1"] * m.log_limit.burst + ["w2"] * m.log_limit.burst


def test_a_function_that_does_not_match_names_its_hash():
    m = Master()
    c = ClientSession("c", lambda item: None)
    m.add_client(c)
    with pytest.raises(ProtocolError) as info:
        m.define(c, FN, "{}", Payload.of(b"other code"))
    assert str(info.value) == f"function {FN.hex()[:16]}... does not match its code"


def test_client_sessions_are_numbered_from_one_as_docs_protocol_md_says():
    m = Master()
    sessions = [ClientSession(name, lambda item: None) for name in "abc"]
    assert [s.number for s in sessions] == [0, 0, 0]  # not yet a master's
    for session in sessions:
        m.add_client(session)
    assert [s.number for s in sessions] == [1, 2, 3]


def test_a_function_sent_twice_is_kept_and_counted_once():
    m = Master()
    c, _ = make_client(m)
    kept, counted = c.functions[FN], c.function_bytes
    # Even with other code under its name: the first, checked one stays.
    m.define(c, FN, "{}", Payload.of(b"other code"))
    assert c.functions[FN] is kept and c.function_bytes == counted


def test_results_not_yet_sent_count_against_the_clients_limits():
    m = Master()
    c, results = make_client(m)
    c.max_jobs = 2
    for job_id in (1, 2, 3):  # naming a function it never sent: refused, an error result each
        m.submit(c, job_id, b"?" * 32, Payload.of(b"x"))
    assert len(results) == 3 and c.jobs == {}
    assert c.unsent == 3 and c.over_limit()
    size = len(results[0][2]) + len(results[0][3]) + RESULT_OVERHEAD
    assert c.unsent_bytes == 3 * size
    held = c.when_below_limit()
    assert not held.called  # SubmitJobs answered only once results have gone
    c.sent(results[0])
    assert held.called and c.unsent == 2 and c.unsent_bytes == 2 * size
    c.max_jobs, c.max_bytes = 100, c.function_bytes + 2 * size
    assert not c.over_limit()
    c.max_bytes -= 1
    assert c.over_limit()


def test_a_jobs_resources_text_counts_against_its_clients_bytes():
    m = Master()
    c, _ = make_client(m)
    m.submit(c, 1, FN, Payload.of(b"x" * 10), resources='{"gpu": 1}')
    assert c.held_bytes == 10 + len('{"gpu":1}')  # its canonical text
    m.cancel(c, [1])
    assert c.held_bytes == 0


def test_cancelled_queued_jobs_let_go_of_their_arguments_and_leave_the_queue():
    """With no worker, queued jobs are cancelled as fast as they come: the
    master must not keep them (or their arguments) in its queue."""
    m = Master()
    c, _ = make_client(m)
    for job_id in range(1, 1001):
        m.submit(c, job_id, FN, Payload.of(b"a" * 1000))
        m.cancel(c, [job_id])
    assert c.jobs == {} and c.held_bytes == 0
    held = m.policy._clients[c].queues["{}"].jobs()
    assert len(held) <= 2 * 65
    assert all(job.args == b"" for job in held)
    m.submit(c, 5000, FN, Payload.of(b"still queued"))  # the queue still works
    w = FakeWorker("w")
    m.add_worker(w)
    assert [j.job_id for j in w.runs] == [5000]


def test_the_queued_count_is_kept_right_through_every_transition():
    """``queued`` is counted as jobs move (status asks for it often, and a
    count through every job was slow): it must agree with the jobs."""
    m = Master(max_retries=1)
    c, results = make_client(m)

    def agrees() -> None:
        assert c.queued == sum(1 for job in c.jobs.values() if job.queued)
        assert c.assigned == sum(1 for job in c.jobs.values() if job.worker is not None)

    for job_id in range(1, 9):
        submit(m, c, job_id)
    agrees()
    w1, w2 = FakeWorker("w1", slots=2), FakeWorker("w2", slots=2)
    m.add_worker(w1)
    agrees()
    assert c.queued == 6
    m.task_result(w1, w1.runs[0].task.id, "ok", Payload.of(b"r"), "")  # ends
    agrees()
    m.task_result(w1, w1.runs[1].task.id, "lost", EMPTY, "")  # retried: back in the queue
    agrees()
    m.dispatch()  # as the worker's connection does after results
    agrees()
    assert c.queued == 5 and c.assigned == 2
    running = next(job for job in c.jobs.values() if job.worker is not None)
    m.cancel(c, [running.job_id, 8])  # one running, one queued
    agrees()
    m.remove_worker(w1, "gone")  # its jobs: retried or, out of retries, lost
    agrees()
    m.add_worker(w2)
    agrees()
    m.remove_client(c)
    assert c.queued == 0 and c.assigned == 0


def test_a_job_with_too_long_resources_is_refused_clearly():
    m = Master()
    c, results = make_client(m)
    long = json.dumps({f"r{i:04d}": 1 for i in range(200)})
    m.submit(c, 1, FN, Payload.of(b"a"), resources=long)
    (job_id, status, _, error) = results[0]
    assert (job_id, status, c.jobs) == (1, "error", {})
    assert json.loads(error)["type"] == "ValueError"
    assert json.loads(error)["message"] == "job 1: resources of 2400 characters (at most 1024)"
    fine = json.dumps({f"r{i:03d}": 1 for i in range(93)}) + " "
    assert len(fine) == 1024
    m.submit(c, 2, FN, Payload.of(b"a"), resources=fine)
    assert 2 in c.jobs


def test_a_clients_timeouts_cannot_fill_the_log():
    from twisted.logger import LogLevel, capturedLogs

    m = Master()
    c, results = make_client(m)
    w = FakeWorker("w", slots=100)
    m.add_worker(w)
    for i in range(100):
        submit(m, c, i)
    m.dispatch()
    with capturedLogs() as logs:
        for job in list(w.runs):
            m.task_result(w, job.task.id, "timeout", Payload.of(b""), '{"type": "JobTimeout"}')
    noted = [e for e in logs if e["log_level"] is LogLevel.info and "timed out" in e["log_format"]]
    assert 1 <= len(noted) <= 10
    assert len(results) == 100
