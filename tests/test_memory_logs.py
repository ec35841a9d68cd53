"""
Job lifecycle events in the master's and the worker's logs: debug for
submitted, dispatched, started, retried and ended; info for kills (timeout,
cancel of a running job, a child's crash).  Job ids, client and worker
names are fields of the event, not text in its format.
"""

from __future__ import annotations

import pytest
import txaio
from twisted.logger import LogLevel, capturedLogs

from cwtx.testing import MemoryCluster


@pytest.fixture
def debug():
    txaio.set_global_log_level("debug")
    try:
        yield
    finally:
        txaio.set_global_log_level("info")


def events(logs, word, level=None):
    return [
        e
        for e in logs
        if word in (e.get("log_format") or "") and (level is None or e["log_level"] is level)
    ]


def test_a_jobs_life_is_logged_at_debug_with_its_ids_as_fields(debug):
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client(name="alice")
    with capturedLogs() as logs:
        d = client.submit(abs, -5)
        cluster.report_starts()
        cluster.finish()
    assert cluster.result(d) == 5
    [submitted] = events(logs, "submitted", LogLevel.debug)
    assert (submitted["job"], submitted["client"]) == (1, "alice")
    [dispatched] = events(logs, "dispatched", LogLevel.debug)
    assert (dispatched["job"], dispatched["client"], dispatched["worker"]) == (
        1,
        "alice",
        "memory-0",
    )
    task = dispatched["task"]
    assert "alice" not in dispatched["log_format"] and "memory-0" not in dispatched["log_format"]
    [started] = events(logs, "of client {client} started", LogLevel.debug)
    assert (started["job"], started["worker"]) == (1, "memory-0")
    [ended] = events(logs, "of client {client} ended", LogLevel.debug)
    assert (ended["job"], ended["client"], ended["status"]) == (1, "alice", "ok")
    # The worker's side, by task id.
    [began] = events(logs, "started in worker", LogLevel.debug)
    assert (began["task"], began["worker"], began["slot"]) == (task, "memory-0", 0)
    [finished] = events(logs, "ended in worker", LogLevel.debug)
    assert (finished["task"], finished["status"]) == (task, "ok")


def test_a_retry_says_why_and_a_crash_is_logged_at_info(debug):
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client(name="bob")
    d = client.submit(abs, -2)
    cluster.report_starts()
    with capturedLogs() as logs:
        cluster.child(cluster.workers[0]).exit(None, 9)
        cluster.flush()
    [retried] = events(logs, "retried", LogLevel.debug)
    assert (retried["job"], retried["client"], retried["worker"]) == (1, "bob", "memory-0")
    assert retried["attempt"] == 1 and "signal 9" in retried["cause"]
    [lost] = events(logs, "lost on worker", LogLevel.info)
    assert (lost["job"], lost["client"], lost["worker"]) == (1, "bob", "memory-0")
    [crash] = events(logs, "slot {slot}: task {task} lost", LogLevel.info)
    assert crash["slot"] == 0 and "signal 9" in crash["cause"]
    cluster.report_starts()
    cluster.finish()
    assert cluster.result(d) == 2


def test_a_timeout_kill_is_logged_at_info_even_without_debug():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client(name="carol")
    d = client.options(timeout=3).submit(abs, -2)
    cluster.report_starts()
    with capturedLogs() as logs:
        cluster.advance(3)
    [kill] = events(logs, "killing task", LogLevel.info)
    assert (kill["reason"], kill["timeout"], kill["slot"]) == ("timeout", 3.0, 0)
    [timed_out] = events(logs, "timed out", LogLevel.info)
    assert (timed_out["job"], timed_out["client"], timed_out["worker"]) == (1, "carol", "memory-0")
    assert timed_out["task"] == kill["task"]
    assert not [e for e in logs if e["log_level"] is LogLevel.debug]  # not at info
    with pytest.raises(Exception, match="timeout"):
        cluster.result(d)


def test_cancelling_a_running_job_is_logged_at_info():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client(name="dave")
    d = client.submit(abs, -2)
    cluster.report_starts()
    with capturedLogs() as logs:
        d.cancel()
        cluster.flush()
    [cancel] = events(logs, "cancelled on worker", LogLevel.info)
    assert (cancel["job"], cancel["client"], cancel["worker"]) == (1, "dave", "memory-0")
    [kill] = events(logs, "killing task", LogLevel.info)
    assert (kill["task"], kill["reason"]) == (cancel["task"], "cancelled")
    d.addErrback(lambda _: None)


def test_a_cancelled_job_ends_in_the_log_too_queued_or_running(debug):
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client(name="erin")
    running = client.submit(abs, -1)
    queued = client.submit(abs, -2)  # waits: one slot, no prefetch
    cluster.report_starts()
    with capturedLogs() as logs:
        queued.cancel()
        running.cancel()
        cluster.flush()
    ended = events(logs, "of client {client} ended", LogLevel.debug)
    assert sorted((e["job"], e["status"]) for e in ended) == [(1, "cancelled"), (2, "cancelled")]
    for d in (running, queued):
        d.addErrback(lambda _: None)


def test_a_job_taken_back_for_an_idle_worker_says_so(debug):
    cluster = MemoryCluster(workers=1, hold=True, prefetch=2)
    client = cluster.client(name="fay")
    jobs = [client.submit(abs, -i) for i in range(3)]
    cluster.report_starts()
    with capturedLogs() as logs:
        cluster.add_worker(name="idle", hold=True)
        cluster.flush()
    [taken] = events(logs, "taken back", LogLevel.debug)
    assert (taken["client"], taken["worker"], taken["taker"]) == ("fay", "memory-0", "idle")
    for d in jobs:
        d.addErrback(lambda _: None)
