"""
Bounded function caches through the real client, master, worker and slots,
in memory (issue 15): identical functions still go once over each link;
distinct ones go through caches far too small for them and every job
still runs; and what each process keeps stays bounded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cwtx.testing import MemoryCluster
from cwtx.wire import commands
from cwtx.worker.pipe import HAND_BACK_AFTER
from tests.test_memory_put import record_commands


def codes_sent(sent: list[tuple[Any, dict[str, Any]]], command: Any, argument: str) -> int:
    """Records of ``command`` that carried a function's code."""
    return sum(
        1
        for c, kw in sent
        if c is command
        for r in kw[argument]
        if r["fn_code"] or r["fn_code_blob"]
    )


def codes_to_child(cluster: MemoryCluster, worker: Any, slot: int = 0) -> int:
    """Task messages written to a slot's child with the function's code."""
    messages = cluster.child(worker, slot).messages
    return sum(1 for m in messages if "task" in json.loads(m[0]) and len(m) == 3)


def closure(i: int) -> Callable[[], int]:
    return lambda: i * 10


def held(cluster: MemoryCluster, client: Any) -> dict[str, int]:
    """What each place keeps of functions."""
    worker = cluster.workers[0]
    children = [c for c in worker.reactor.children if not c.ended]
    return {
        "client's sent set": len(client._sent_functions),
        "master sessions": sum(len(c.functions) for c in cluster.master.clients),
        "master idle cache": len(cluster.master.idle_functions),
        "master's worker records": sum(len(w.functions) for w in cluster.master.workers),
        "worker": len(worker.functions),
        "slots": sum(len(s._known) for s in worker.slots),
        "children": sum(len(c._child._functions) + len(c._child._codes) for c in children),
    }


def test_identical_functions_go_once_over_each_link():
    cluster = MemoryCluster()
    client = cluster.client()
    to_master: list = []
    to_worker: list = []
    record_commands(cluster._protocol(client), to_master)
    record_commands(cluster.master_end(cluster.workers[0]), to_worker)
    for i in range(50):  # one at a time: the function is idle between jobs
        d = client.submit(abs, -i)
        cluster.flush()
        assert cluster.result(d) == i
    assert codes_sent(to_master, commands.SubmitJobs, "jobs") == 1
    assert codes_sent(to_worker, commands.RunTasks, "tasks") == 1
    assert codes_to_child(cluster, cluster.workers[0]) == 1
    assert not any(c is commands.DropFunctions for c, _ in to_master + to_worker)


def test_distinct_functions_run_through_caches_too_small_for_two_and_stay_bounded():
    cluster = MemoryCluster(prefetch=4, function_cache=0)
    cluster.workers[0].stopService()
    cluster.workers.clear()
    cluster.add_worker(slots=2, function_cache=0)
    client = cluster.client()
    ds = [client.submit(closure(i)) for i in range(200)]
    cluster.flush()
    assert [cluster.result(d) for d in ds] == [i * 10 for i in range(200)]
    again = [client.submit(closure(i)) for i in (5, 5, 7, 5)]  # sent again, after drops
    cluster.flush()
    assert [cluster.result(d) for d in again] == [50, 50, 70, 50]
    counts = held(cluster, client)
    assert counts["master idle cache"] == 1 and counts["master sessions"] <= 2, counts
    assert counts["client's sent set"] <= 2 and counts["master's worker records"] <= 2, counts
    assert counts["worker"] == 1 and counts["slots"] == 2 and counts["children"] <= 2, counts
    d = client.status()
    cluster.flush()
    (status,) = cluster.result(d)["clients"]
    session = cluster.master.clients[0]
    assert status["functions"] == len(session.functions) <= 2  # cw status shows them go
    assert status["function_bytes"] == sum(f.size for f in session.functions.values())


def test_functions_cycled_beyond_every_cache_are_sent_again_each_time():
    cluster = MemoryCluster(function_cache=0)
    cluster.workers[0].stopService()
    cluster.workers.clear()
    worker = cluster.add_worker(function_cache=0)
    client = cluster.client()
    to_master: list = []
    record_commands(cluster._protocol(client), to_master)
    first, second = closure(1), closure(2)
    for n in range(6):
        d = client.submit(first if n % 2 == 0 else second)
        cluster.flush()
        assert cluster.result(d) == (10 if n % 2 == 0 else 20)
    # The master keeps one idle function: the other is dropped each time.
    assert codes_sent(to_master, commands.SubmitJobs, "jobs") == 6
    assert codes_to_child(cluster, worker) == 6


def test_a_task_handed_back_leaves_its_functions_code_in_the_child():
    """It was written ahead with its function's code, then handed back
    behind a long job; the slot counts on that child having the code, so a
    later task of the same function there goes without it, and must run."""
    cluster = MemoryCluster(workers=0, prefetch=1)
    worker = cluster.add_worker(slots=2, hold=True)
    client = cluster.client()
    d = client.submit(abs, -100)
    cluster.flush()
    cluster.finish(worker, slot=0)
    assert cluster.result(d) == 100
    late = closure(3)
    ds = [client.submit(abs, -1), client.submit(abs, -2), client.submit(late)]
    cluster.flush()
    slots = worker.slots
    ahead = slots[0].queued[0]
    cluster.finish(worker, slot=1)
    cluster.advance(HAND_BACK_AFTER)  # slot 0's job runs long: its child hands `late` back
    assert slots[1].current is ahead  # it runs in slot 1
    cluster.finish(worker, slot=1)
    cluster.finish(worker, slot=0)
    assert [cluster.result(d) for d in ds] == [1, 2, 30]
    d = client.submit(late)  # to slot 0 (the first free), whose child read its code
    cluster.flush()
    assert slots[0].current is not None and codes_to_child(cluster, worker, 0) == 2
    cluster.finish(worker, slot=0)
    assert cluster.result(d) == 30


def test_the_masters_answer_to_a_workers_drop_follows_the_tasks_queued_for_it():
    """Tasks queued before the drop may name the function without code:
    the worker keeps the code until this answer, which must come after them."""
    cluster = MemoryCluster(prefetch=4)
    worker = cluster.workers[0]
    client = cluster.client()
    late = closure(4)
    d = client.submit(late)
    cluster.pump(client)  # the master has queued the task, not yet sent it
    fn = next(iter(cluster.master.clients[0].functions))
    answer = cluster.master_end(worker).responders.drop_functions(fns=fn)
    assert not answer.called and fn not in cluster.master.workers[0].functions
    cluster.flush()
    assert answer.called and cluster.result(d) == 40


def test_the_clients_answer_to_a_drop_follows_the_jobs_it_had_queued():
    cluster = MemoryCluster()
    client = cluster.client()
    first = client.submit(closure(5))
    cluster.flush()
    assert cluster.result(first) == 50
    fn = next(iter(client._sent_functions))
    d = client.submit(closure(5))  # queued, not yet sent: without code
    answer = cluster._protocol(client)._drop_functions(fns=fn)
    assert not answer.called and fn not in client._sent_functions
    cluster.flush()
    assert answer.called and cluster.result(d) == 50


def test_a_client_that_never_answers_drops_is_closed_past_its_byte_limit():
    """The master keeps a dropped function until its client answers: one
    that never does could make it keep them all, so past --max-client-bytes
    of them it is closed (as protocol.md's limits say)."""
    from twisted.internet.defer import Deferred

    cluster = MemoryCluster(function_cache=0)
    cluster.master.max_client_bytes = 4000
    client = cluster.client()
    first = cluster.master.clients[0]
    client._functions_dropped = lambda proto, hashes: Deferred()  # never answers
    for i in range(40):
        d = client.submit(closure(i))
        cluster.flush()
        if first not in cluster.master.clients:
            break
        assert cluster.result(d) == i * 10
    assert first not in cluster.master.clients and first.dropping_bytes > 4000
