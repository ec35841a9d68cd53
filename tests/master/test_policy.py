"""
The scheduling policy (``master/policy.py``) through the master's
bookkeeping, with no I/O and no reactor: workers are lists, time is a
number the test moves.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import Deferred

from cwtx.master import policy as policy_module
from cwtx.master.master import Master
from cwtx.master.sessions import ClientSession, WorkerSession
from cwtx.wire.names import function_hash
from cwtx.wire.payload import Payload

FN = function_hash("{}", [b"code"])


class Now:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Worker(WorkerSession):
    """A worker that records what it is sent, starts what the test says,
    and answers take-backs when the test says."""

    def __init__(self, name, slots=1, prefetch=0, resources=None, versions=("?", "?")) -> None:
        self.runs: list = []
        self.cancels: list[int] = []
        self.asked: list[tuple[list[int], Deferred]] = []
        super().__init__(
            name,
            slots,
            self._run,
            self.cancels.append,
            resources=resources,
            prefetch=prefetch,
            versions=versions,
            deliver_take_back=self._take_back,
        )

    def _run(self, task) -> None:
        task.sent = True
        self.runs.append(task.job)

    def _take_back(self, tasks):
        d: Deferred = Deferred()
        self.asked.append((tasks, d))
        return d

    def live(self):
        return [j for j in self.runs if j.worker is self and not j.ended]

    def start(self, m: Master, *jobs) -> None:
        for job in jobs or self.live():
            m.task_started(self, job.task.id)

    def finish(self, m: Master, job) -> None:
        m.task_result(self, job.task.id, "ok", Payload.of(b"r"), "")
        m.dispatch()


def client(m: Master, name: str, versions=("?", "?")) -> ClientSession:
    session = ClientSession(name, lambda item: None, versions)
    m.add_client(session)
    m.define(session, FN, "{}", Payload.of(b"code"))
    return session


def submit(m: Master, session: ClientSession, job_id: int, **kw) -> None:
    m.submit(session, job_id, FN, Payload.of(b"a"), **kw)
    m.dispatch()


# -- fair share -------------------------------------------------------------------


def test_a_new_client_gets_the_next_free_slots_until_it_has_its_share():
    now = Now()
    m = Master(now=now)
    a, b = client(m, "a"), client(m, "b")
    w = Worker("w", slots=4)
    m.add_worker(w)
    for i in range(1, 101):
        submit(m, a, i)
    w.start(m)
    assert [j.client.name for j in w.live()] == ["a"] * 4
    for i in range(1, 11):
        submit(m, b, i)
    # Each slot that frees goes to b until b holds its half of them.
    for _ in range(4):
        now.t += 1
        w.finish(m, next(j for j in w.live() if j.client is a))
        w.start(m)
    names = sorted(j.client.name for j in w.live())
    assert names == ["a", "a", "b", "b"]
    # From then on they alternate: b never gets more than its share.
    for _ in range(6):
        now.t += 1
        w.finish(m, w.live()[0])
        w.start(m)
        assert sorted(j.client.name for j in w.live()) == ["a", "a", "b", "b"]


def test_shares_weigh_the_slots_each_client_gets():
    now = Now()
    m = Master(now=now)
    a, b = client(m, "a"), client(m, "b")
    m.set_share(a, 3)
    w = Worker("w", slots=4)
    m.add_worker(w)
    for i in range(1, 401):
        submit(m, a, i)
        submit(m, b, i)
    for _ in range(200):
        w.start(m)
        now.t += 1
        w.finish(m, w.live()[0])
    w.start(m)
    assert sorted(j.client.name for j in w.live()) == ["a", "a", "a", "b"]
    assert m.status()["clients"][0]["share"] == 3


def test_slot_time_not_job_count_is_shared():
    """A client whose jobs are ten times longer gets the same slot time,
    so a tenth of the job starts."""
    now = Now()
    m = Master(now=now)
    short, long_ = client(m, "short"), client(m, "long")
    w = Worker("w", slots=2)
    m.add_worker(w)
    for i in range(1, 2001):
        submit(m, short, i)
        submit(m, long_, i)
    started = {"short": 0, "long": 0}
    ends: list[tuple[float, object]] = []
    for _ in range(1500):  # both clients have jobs left throughout
        for job in w.live():
            if not job.task.started:
                m.task_started(w, job.task.id)
                started[job.client.name] += 1
                ends.append((now.t + (10.0 if job.client is long_ else 1.0), job))
        ends.sort(key=lambda e: e[0])
        t, job = ends.pop(0)
        now.t = t
        w.finish(m, job)
    ratio = started["short"] / started["long"]
    assert 7 < ratio < 13, started


def test_an_idle_client_banks_no_credit():
    now = Now()
    m = Master(now=now)
    a, b = client(m, "a"), client(m, "b")
    w = Worker("w", slots=1)
    m.add_worker(w)
    submit(m, b, 1)  # b runs one job and goes quiet
    w.start(m)
    now.t += 1
    w.finish(m, w.live()[0])
    for i in range(1, 101):  # a alone for a long time
        submit(m, a, i)
    for _ in range(50):
        w.start(m)
        now.t += 1
        w.finish(m, w.live()[0])
    for i in range(2, 12):
        submit(m, b, i)
    got = []
    for _ in range(10):
        w.start(m)
        got.append(w.live()[0].client.name)
        now.t += 1
        w.finish(m, w.live()[0])
    # b alternates with a: it does not get 50 turns in a row for a's 50.
    assert 4 <= got.count("b") <= 6, got


def test_a_later_job_for_a_client_below_its_share_overtakes_prefetched_ones():
    """The order a task carries puts a new client's job before tasks that
    another client's backlog parked in the worker's queue."""
    now = Now()
    m = Master(now=now)
    a, b = client(m, "a"), client(m, "b")
    w = Worker("w", slots=2, prefetch=4)
    m.add_worker(w)
    for i in range(1, 101):
        submit(m, a, i)
    first = w.live()
    w.start(m, *first[:2])
    submit(m, b, 1)
    now.t += 1
    w.finish(m, first[0])  # the worker starts first[2] itself; b's job is sent
    (b_job,) = [j for j in w.live() if j.client is b]
    waiting_a = [j for j in w.live() if j.client is a and not j.task.started and j is not first[2]]
    assert waiting_a and all(b_job.task.order < j.task.order for j in waiting_a)


def test_priority_clients_go_before_all_others():
    m = Master(priority_clients=["urgent-*"])
    normal, urgent = client(m, "normal"), client(m, "urgent-1")
    for i in range(1, 6):
        submit(m, normal, i)
        submit(m, urgent, i)
    w = Worker("w", slots=5)
    m.add_worker(w)
    assert [j.client.name for j in w.runs] == ["urgent-1"] * 5
    assert all(j.task.order < -1e11 for j in w.runs)  # and first at the worker too
    statuses = {c["name"]: c["priority"] for c in m.status()["clients"]}
    assert statuses == {"normal": False, "urgent-1": True}


def test_priority_orders_a_clients_own_jobs():
    m = Master()
    c = client(m, "c")
    for i, p in enumerate([0, 5, 0, 9], start=1):
        m.submit(c, i, FN, Payload.of(b"a"), priority=p)
    w = Worker("w", slots=4)
    m.add_worker(w)
    assert [j.job_id for j in w.runs] == [4, 2, 1, 3]


def test_a_bad_share_is_refused():
    m = Master()
    c = client(m, "c")
    from cwtx._errors import ProtocolError

    for bad in (0.0, -1.0, float("nan"), 1e7, 5e-324, 1e-300, 2000.0):
        with pytest.raises(ProtocolError, match="share must be from 0.001 to 1000"):
            m.set_share(c, bad)


# -- resources ----------------------------------------------------------------------


def test_resources_are_never_oversubscribed_and_only_fitting_workers_get_the_job():
    m = Master()
    c = client(m, "c")
    cpu = Worker("cpu", slots=4, prefetch=4)
    gpu = Worker("gpu", slots=4, prefetch=4, resources={"gpu": 1.0})
    m.add_worker(cpu)
    m.add_worker(gpu)
    for i in range(1, 11):
        submit(m, c, i, resources='{"gpu": 1}')
    for i in range(11, 15):
        submit(m, c, i)  # plain jobs behind them are not held up
    assert not [j for j in cpu.runs if j.options.needs]
    assert len([j for j in gpu.live() if j.options.needs]) == 1
    assert sorted(j.job_id for j in cpu.runs + gpu.runs if not j.options.needs) == [11, 12, 13, 14]
    done = 0
    while done < 10:
        (job,) = [j for j in gpu.live() if j.options.needs]
        gpu.start(m, job)
        gpu.finish(m, job)
        done += 1
    assert len([j for j in gpu.runs if j.options.needs]) == 10
    assert m.status()["queued"] == 0


def test_amounts_add_up_to_what_the_worker_has():
    m = Master()
    c = client(m, "c")
    w = Worker("w", slots=8, resources={"mem": 64 * 2**30})
    m.add_worker(w)
    for i in range(1, 6):
        submit(m, c, i, resources=json.dumps({"mem": 20 * 2**30}))
    assert len(w.live()) == 3  # 60 GiB of 64
    assert m.status()["queued"] == 2


def test_a_job_no_worker_could_ever_fit_waits_unschedulable_until_one_joins():
    m = Master()
    c = client(m, "c")
    m.add_worker(Worker("small", slots=2, resources={"gpu": 1.0}))
    submit(m, c, 1, resources='{"gpu": 2}')
    submit(m, c, 2, resources='{"tpu": 1}')
    submit(m, c, 3)
    status = m.status()
    assert status["unschedulable"] == 2 and status["queued"] == 2
    whys = sorted(u["why"] for u in status["clients"][0]["unschedulable"])
    assert whys == [
        "needs gpu=2; no connected worker has that much (the most any has: gpu=1)",
        "needs tpu=1; no connected worker has tpu",
    ]
    big = Worker("big", slots=1, resources={"gpu": 2.0})
    m.add_worker(big)
    assert [j.job_id for j in big.runs] == [1]
    assert m.status()["unschedulable"] == 1


def test_bad_resources_end_the_job_clearly():
    m = Master()
    results: list = []
    c = ClientSession("c", results.append)
    m.add_client(c)
    m.define(c, FN, "{}", Payload.of(b"code"))
    m.submit(c, 1, FN, Payload.of(b"a"), resources='{"gpu": -1}')
    m.submit(c, 2, FN, Payload.of(b"a"), resources="[1]")
    m.submit(c, 3, FN, Payload.of(b"a"), resources='{"gpu": "many"}')
    messages = [json.loads(r[3])["message"] for r in results]
    assert messages == [
        "job 1: resources: gpu: -1 must be a finite amount, 0 or more",
        "job 2: resources must be a mapping of names to amounts, not [1]",
        "job 3: resources: gpu: 'many' is not an amount (a number, or a size like 64G)",
    ]
    assert c.jobs == {}


# -- work stealing --------------------------------------------------------------------


def test_an_idle_worker_takes_back_tasks_waiting_behind_a_busy_slot():
    m = Master()
    c = client(m, "c")
    w1 = Worker("w1", slots=1, prefetch=4)
    m.add_worker(w1)
    for i in range(1, 6):
        submit(m, c, i)
    long_job = w1.live()[0]
    w1.start(m, long_job)
    w2 = Worker("w2", slots=1, prefetch=4)
    m.add_worker(w2)
    (tasks, answer), *_ = w1.asked
    assert tasks == [w1.runs[4].task.id]  # the newest waiting task, for w2's one slot
    answer.callback(tasks)
    assert [j.job_id for j in w2.live()] == [5]
    # w2 runs it and is idle again: it takes the next one.
    w2.start(m)
    w2.finish(m, w2.live()[0])
    tasks, answer = w1.asked[1]
    answer.callback(tasks)
    assert [j.job_id for j in w2.live()] == [4]
    assert long_job.worker is w1 and not long_job.attempts


def test_a_task_that_started_before_the_take_back_stays():
    m = Master()
    c = client(m, "c")
    w1 = Worker("w1", slots=1, prefetch=2)
    m.add_worker(w1)
    for i in range(1, 4):
        submit(m, c, i)
    w1.start(m, w1.runs[0])
    w2 = Worker("w2", slots=1, prefetch=0)
    m.add_worker(w2)
    # It had started both meanwhile (their reports are on their way): each
    # is asked for policy.ASKS times in all, then not again.
    answered = 0
    while answered < len(w1.asked):
        w1.asked[answered][1].callback([])
        answered += 1
    assert len(w1.asked) == 2 * policy_module.ASKS
    assert w2.live() == [] and len(w1.live()) == 3
    assert not any(j.task.reclaiming for j in w1.runs if j.task)
    assert m.policy._workers[w1].reclaiming == 0


def test_no_stealing_while_the_queue_feeds_every_slot():
    m = Master()
    c = client(m, "c")
    w1, w2 = Worker("w1", slots=1, prefetch=2), Worker("w2", slots=1, prefetch=2)
    m.add_worker(w1)
    m.add_worker(w2)
    for i in range(1, 20):
        submit(m, c, i)
    w1.start(m)
    w2.start(m)
    assert w1.asked == [] and w2.asked == []


def test_a_taken_back_job_that_was_cancelled_meanwhile_is_not_requeued():
    m = Master()
    c = client(m, "c")
    w1 = Worker("w1", slots=1, prefetch=1)
    m.add_worker(w1)
    submit(m, c, 1)
    submit(m, c, 2)
    w1.start(m, w1.runs[0])
    w2 = Worker("w2", slots=1)
    m.add_worker(w2)
    tasks, answer = w1.asked[0]
    m.cancel(c, [2])
    answer.callback(tasks)
    assert w2.runs == [] and m.status()["queued"] == 0


# -- attempts and cost -------------------------------------------------------------------


def test_attempts_count_only_tasks_the_worker_reported_started():
    results: list = []
    m = Master(max_retries=0)
    c = ClientSession("c", results.append)
    m.add_client(c)
    m.define(c, FN, "{}", Payload.of(b"code"))
    w = Worker("w", slots=2, prefetch=2)
    m.add_worker(w)
    for i in range(1, 5):
        m.submit(c, i, FN, Payload.of(b"a"))
    m.dispatch()
    w.start(m, w.runs[2])
    m.remove_worker(w, "gone")
    assert [r[0] for r in results] == [3]
    assert m.status()["queued"] == 3


def test_dispatch_does_not_scan_workers_or_clients(monkeypatch):
    """O(log n) per job: with a thousand workers and a hundred clients, each
    dispatch looks at a bounded number of workers."""
    calls = counting_compatible(monkeypatch)
    m = Master()
    clients = [client(m, f"c{i}") for i in range(100)]
    for i in range(1000):
        m.add_worker(Worker(f"w{i}", slots=2, prefetch=0))
    calls["n"] = 0
    for n, session in enumerate(clients * 20):
        m.submit(session, n, FN, Payload.of(b"a"))
    m.dispatch()
    assert m.status()["queued"] == 0
    assert calls["n"] <= 2 * 2000


def test_started_and_prefetched_are_counted_per_client_and_worker():
    m = Master()
    c = client(m, "c")
    w = Worker("w", slots=1, prefetch=2)
    m.add_worker(w)
    for i in range(1, 5):
        submit(m, c, i)
    w.start(m, w.runs[0])
    status = m.status()
    assert (status["running"], status["prefetched"], status["queued"]) == (1, 2, 1)
    shown = status["clients"][0]
    assert (shown["running"], shown["prefetched"], shown["queued"]) == (1, 2, 1)
    m.task_started(w, w.runs[0].task.id)  # said twice: counted once
    assert m.status()["running"] == 1


def test_a_client_may_wait_on_a_bounded_number_of_distinct_resource_requests():
    results: list = []
    m = Master()
    c = ClientSession("c", results.append)
    m.add_client(c)
    m.define(c, FN, "{}", Payload.of(b"code"))
    for i in range(policy_module.MAX_SHAPES + 1):
        m.submit(c, i, FN, Payload.of(b"a"), resources=json.dumps({f"r{i}": 1}))
    (refused,) = results
    assert refused[0] == policy_module.MAX_SHAPES
    assert "already waits on 256 different resource requests" in json.loads(refused[3])["message"]
    m.submit(c, 9999, FN, Payload.of(b"a"), resources='{"r0": 1}')  # a known one: fine
    assert len(results) == 1


def test_a_cancelled_running_job_leaves_the_clients_counts_at_once():
    m = Master()
    c = client(m, "c")
    w = Worker("w", slots=1)
    m.add_worker(w)
    submit(m, c, 1)
    w.start(m)
    m.cancel(c, [1])
    (shown,) = m.status()["clients"]
    assert (shown["running"], shown["prefetched"], shown["queued"]) == (0, 0, 0)
    assert m.status()["running"] == 1  # the worker's slot is busy until it answers
    m.task_result(w, w.runs[0].task.id, "cancelled", Payload.of(b""), "")
    (shown,) = m.status()["clients"]
    assert (shown["running"], shown["prefetched"]) == (0, 0)
    assert m.status()["running"] == 0


def test_slot_time_is_shared_with_prefetch_as_workers_order_their_queue():
    """With prefetch, each client holds the same number of tasks on the
    worker; what decides who runs is the order the worker starts its
    waiting tasks in, so that order must charge slot time, not count jobs."""
    now = Now()
    m = Master(now=now)
    long_, short = client(m, "long"), client(m, "short")
    w = Worker("w", slots=1, prefetch=4)
    m.add_worker(w)
    for i in range(1, 1001):
        submit(m, long_, i)
        submit(m, short, i)
    busy = {"long": 0.0, "short": 0.0}
    while now.t < 400:
        waiting = [j for j in w.live() if not j.task.started]
        job = min(waiting, key=lambda j: j.task.order)  # as the worker picks
        m.task_started(w, job.task.id)
        seconds = 10.0 if job.client is long_ else 1.0
        now.t += seconds
        busy[job.client.name] += seconds
        m.task_result(w, job.task.id, "ok", Payload.of(b"r"), "", seconds)
        m.dispatch()
    share = busy["short"] / (busy["short"] + busy["long"])
    assert 0.4 < share < 0.6, busy


def test_an_unschedulable_reason_writes_sizes_as_people_do():
    m = Master()
    c = client(m, "c")
    m.add_worker(Worker("w", slots=1, resources={"mem": 4 * 2**30}))
    submit(m, c, 1, resources=json.dumps({"mem": 16 * 2**30}))
    (entry,) = m.status()["clients"][0]["unschedulable"]
    assert entry["why"] == (
        "needs mem=16G; no connected worker has that much (the most any has: mem=4G)"
    )


def test_a_job_that_kills_its_workers_before_reporting_a_start_is_bounded():
    """Its starts never reach the master, so no attempt counts: past twice
    (max_retries + 1) lost workers it is lost anyway."""
    results: list = []
    m = Master(max_retries=0)
    c = ClientSession("c", results.append)
    m.add_client(c)
    m.define(c, FN, "{}", Payload.of(b"code"))
    m.submit(c, 1, FN, Payload.of(b"a"))
    for i in range(3):
        w = Worker(f"w{i}")
        m.add_worker(w)
        assert results == [] and len(w.runs) == 1
        m.remove_worker(w, "killed")
    ((job_id, status, _, error),) = results
    assert (job_id, status) == (1, "lost")


def test_a_compatible_worker_is_found_behind_many_others():
    m = Master(prefetch=0)
    others = [Worker(f"py312-{i}", slots=1) for i in range(100)]
    for w in others:
        w.versions = ("3.12.1", "3.0.0")
        m.add_worker(w)
    good = Worker("py311", slots=1)
    good.versions = ("3.11.7", "3.0.0")
    m.add_worker(good)
    c = ClientSession("c", lambda item: None, versions=("3.11.7", "3.0.0"))
    m.add_client(c)
    m.define(c, FN, "{}", Payload.of(b"code"))
    m.submit(c, 1, FN, Payload.of(b"a"))
    m.dispatch()
    assert len(good.runs) == 1


def test_amounts_that_came_back_in_another_order_still_add_up():
    m = Master()
    c = client(m, "c")
    w = Worker("w", slots=3, resources={"x": 1.0})
    m.add_worker(w)
    submit(m, c, 1, resources='{"x": 0.3}')
    submit(m, c, 2, resources='{"x": 0.1}')
    first, second = w.live()
    w.finish(m, first)
    w.finish(m, second)
    submit(m, c, 3, resources='{"x": 1}')
    assert [j.job_id for j in w.live()] == [3]


def test_a_worker_takes_back_only_jobs_it_has_the_resources_free_for():
    m = Master()
    c = client(m, "c")
    busy = Worker("busy", slots=1, prefetch=2, resources={"gpu": 2.0})
    m.add_worker(busy)
    for i in range(1, 4):
        submit(m, c, i, resources='{"gpu": 1}')
    busy.start(m, busy.runs[0])
    taker = Worker("taker", slots=2, resources={"gpu": 1.0})
    m.add_worker(taker)
    # The queued third job takes the taker's one gpu: an idle slot is left,
    # but no gpu to run job 2 with, so job 2 is not asked back.
    assert [j.job_id for j in taker.live()] == [3]
    assert busy.asked == []
    other = Worker("other", slots=1, resources={"gpu": 1.0})
    m.add_worker(other)
    (tasks, _answer), *_ = busy.asked  # this one has its gpu free
    assert tasks == [busy.runs[1].task.id]


def test_a_workers_run_time_is_capped_by_what_the_master_saw():
    now = Now()
    m = Master(now=now)
    c = client(m, "c")
    w = Worker("w", slots=1)
    m.add_worker(w)
    submit(m, c, 1)
    before = m.policy._clients[c].vpass
    now.t += 2.0
    m.task_result(w, w.runs[0].task.id, "ok", Payload.of(b"r"), "", 999_999_999.0)
    assert m.policy._clients[c].vpass - before <= 2.0 + 1e-3


def test_one_long_job_is_charged_once_not_for_the_jobs_after_it():
    """After client A's one hour-long job, B (1 s jobs) gets about that hour
    back before A's next job sent after it starts: A is charged the long job
    once, not again for each of its later jobs."""
    now = Now()
    m = Master(now=now)
    a, b = client(m, "A"), client(m, "B")
    w = Worker("w", slots=1, prefetch=1)
    m.add_worker(w)
    submit(m, a, 0)
    for i in range(1, 200):
        submit(m, a, i)
    for i in range(20_000):
        submit(m, b, i)
    b_before_a = 0.0
    seen_long = False
    while now.t < 20_000:
        waiting = [j for j in w.live() if not j.task.started]
        job = min(waiting, key=lambda j: j.task.order)
        m.task_started(w, job.task.id)
        seconds = 3600.0 if (job.client is a and job.job_id == 0) else 1.0
        if job.client is a:
            if job.task.order > 1000:
                break  # A's first job sent after the long one was charged
            seen_long = seen_long or job.job_id == 0
        elif seen_long:
            b_before_a += seconds
        now.t += seconds
        m.task_result(w, job.task.id, "ok", Payload.of(b"r"), "", seconds)
        m.dispatch()
    assert 3000 < b_before_a < 4300, b_before_a


def test_a_late_answer_to_an_old_take_back_does_not_settle_a_newer_one():
    """From an adversarial review: the job was asked back from V, handed
    back by V as it left, placed on W2 and asked back from W2; V's late
    answer must not clear W2's request, or W2's hand-back is ignored and
    the job, forgotten by W2, never ends."""
    results: list = []
    m = Master(prefetch=1)
    c = ClientSession("c", results.append)
    m.add_client(c)
    m.define(c, FN, "{}", Payload.of(b"code"))

    def put(job_id):
        m.submit(c, job_id, FN, Payload.of(b"a"))
        m.dispatch()

    v = Worker("V", slots=1, prefetch=1)
    m.add_worker(v)
    put(1)
    v.start(m)
    put(2)
    (j,) = [x for x in v.live() if x.job_id == 2]
    t = Worker("T", slots=3, prefetch=1)
    m.add_worker(t)
    ((_, answer1),) = v.asked  # V does not answer yet
    for i in (3, 4, 5, 7):
        put(i)
    t.start(m, *[x for x in t.live() if x.job_id != 7])
    w2 = Worker("W2", slots=1, prefetch=1)
    m.add_worker(w2)
    put(6)
    w2.start(m)
    m.worker_leaving(v)
    m.task_result(v, j.task.id, "requeue", Payload.of(b""), "")
    m.dispatch()
    assert j.worker is w2
    for x in [x for x in t.live() if x.job_id in (3, 4, 5)]:
        t.finish(m, x)
    t.start(m)
    ((tasks2, answer2),) = w2.asked
    answer1.callback([])  # V's late answer to the first take-back
    answer2.callback(tasks2)  # W2 hands the job back, and forgets it
    assert j.worker is not w2  # so the master must have taken it back
    for w in (v, t, w2):
        for x in w.live():
            w.start(m, x)
            w.finish(m, x)
    assert sorted(r[0] for r in results) == [1, 2, 3, 4, 5, 6, 7]


def counting_compatible(monkeypatch) -> dict[str, int]:
    """Count the policy's worker-compatibility checks (its unit of work)."""
    calls = {"n": 0}
    real = policy_module.compatible

    def counting(a, b):
        calls["n"] += 1
        return real(a, b)

    monkeypatch.setattr(policy_module, "compatible", counting)
    return calls


def test_a_freed_place_retries_no_more_waiting_queues_than_it_has_places(monkeypatch):
    """Clients waiting on many resource shapes cost each freed place a
    bounded amount of work (they cost every other client's jobs the square
    of their number), and every one of them still runs in the end."""
    m = Master()
    mems = [Worker(f"mem{i}", slots=1, resources={"mem": 64.0}) for i in range(2)]
    for w in mems:
        m.add_worker(w)
    m.add_worker(Worker("plain", slots=8))
    clients = [client(m, f"c{i}") for i in range(8)]
    n = 0
    for session in clients:
        for shape in range(32):
            n += 1
            m.submit(session, n, FN, Payload.of(b"a"), resources=json.dumps({"mem": shape + 1}))
    m.dispatch()
    calls = counting_compatible(monkeypatch)
    most = ended = 0
    while live := [(w, j) for w in mems for j in w.live()]:
        for w, job in live:
            calls["n"] = 0
            w.start(m, job)
            w.finish(m, job)
            most = max(most, calls["n"])
            ended += 1
    assert ended == n and m.status()["queued"] == 0
    assert most <= 12


def test_tasks_a_worker_kept_cost_no_work_at_each_dispatch():
    """Once a busy worker has kept its waiting tasks (asked ASKS times), an
    idle worker does not look at them again on every dispatch."""
    m = Master()
    c = client(m, "c")
    busy = [Worker(f"busy{i}", slots=1, prefetch=2) for i in range(20)]
    for w in busy:
        m.add_worker(w)
    for i in range(60):
        submit(m, c, i)
    for w in busy:
        w.start(m, w.runs[0])
    m.add_worker(Worker("idle", slots=4))
    while asked := [d for w in busy for _t, d in w.asked if not d.called]:
        for d in asked:
            d.callback([])  # each time: it had started meanwhile
    # They no longer count as tasks to take back: no worker is a victim.
    assert not m.policy._victims
    before = sum(len(w.asked) for w in busy)
    m.dispatch()
    assert sum(len(w.asked) for w in busy) == before


def test_stealing_looks_only_at_workers_that_changed(monkeypatch):
    """A job that ends on a busy worker costs the look for tasks to take
    back across the idle workers, not across every pair of idle and busy."""
    m = Master()
    c = client(m, "c")
    busy = [Worker(f"busy{i}", slots=1, prefetch=2, resources={"mem": 10.0}) for i in range(20)]
    for w in busy:
        m.add_worker(w)
    for i in range(60):
        submit(m, c, i, resources='{"mem": 1}')
    for w in busy:
        w.start(m, w.runs[0])
    idle = [Worker(f"idle{i}", slots=1) for i in range(20)]  # no mem: they can't take any
    for w in idle:
        m.add_worker(w)
    assert not any(w.asked for w in busy)
    calls = counting_compatible(monkeypatch)
    w = busy[0]
    w.finish(m, w.runs[0])
    assert calls["n"] <= 2 * len(idle) + 10


def test_a_victim_that_never_answers_does_not_keep_the_taker_from_taking_more():
    """The taker counts a take-back's tasks as on their way to it only while
    they wait on the victim: they started there (and ended), so it is idle
    again, and takes tasks back from another busy worker."""
    m = Master()
    c = client(m, "c")
    hostile = Worker("hostile", slots=1, prefetch=2)
    m.add_worker(hostile)
    for i in range(3):
        submit(m, c, i)
    hostile.start(m, hostile.runs[0])
    taker = Worker("taker", slots=2)
    m.add_worker(taker)
    assert hostile.asked  # and never answered
    for job in hostile.live():
        hostile.start(m, job)
        hostile.finish(m, job)
    m.worker_leaving(hostile)
    busy = Worker("busy", slots=1, prefetch=4)
    m.add_worker(busy)
    for i in range(10, 13):
        submit(m, c, i)
    assert taker.live() == [] and len(busy.live()) == 3
    # Two wait behind busy's one slot: both asked back, for the taker's two slots.
    assert sum(len(tasks) for tasks, _answer in busy.asked) == 2


def test_a_retry_spent_on_a_queue_of_cancelled_jobs_does_not_strand_a_fitting_job():
    """A freed place retries a few waiting queues; one that turns out to
    hold only cancelled jobs must not use up the retry while a job that
    fits the idle worker waits."""
    py = ("3.11.7", "3.0.0")
    m = Master(prefetch=0)
    w = Worker("w", slots=1, resources={"gpu": 1.0}, versions=py)
    other = Worker("other", slots=1, versions=("3.12.1", "3.0.0"))  # free, not for c
    m.add_worker(w)
    m.add_worker(other)
    c = client(m, "c", versions=py)
    submit(m, c, 1)  # runs on w
    submit(m, c, 2)  # waits for a place (no needs)
    submit(m, c, 3, resources='{"gpu": 1}')  # waits for the gpu
    m.cancel(c, [2])
    w.start(m)
    w.finish(m, w.live()[0])
    assert c.jobs[3].worker is w


def test_what_a_retried_queue_leaves_of_a_resource_goes_to_another_waiting_queue():
    """The first queue retried for a freed worker takes part of its gpu; the
    second no longer fits: a third that fits what is left runs."""
    m = Master(prefetch=1)
    w = Worker("w", slots=1, prefetch=1, resources={"gpu": 1.0})
    m.add_worker(w)
    x, y = client(m, "x"), client(m, "y")
    submit(m, x, 1, resources='{"gpu": 1}')
    submit(m, x, 2, resources='{"gpu": 0.5}')
    submit(m, x, 3, resources='{"gpu": 1}')
    submit(m, y, 1, resources='{"gpu": 0.5}')
    w.start(m)
    w.finish(m, w.live()[0])
    assert y.jobs[1].worker is w
