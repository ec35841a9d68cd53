"""The slot child's job runner, in this process."""

from __future__ import annotations

import json
import os
import pickle
import sys

from cwtx.client.serialize import pickle_arguments, pickle_function
from cwtx.worker.child import Child, Runner, Tasks
from cwtx.worker.pipe import HAND_BACK_AFTER


def run_in_child(fn, *args, **kwargs):
    fd = pickle_function(fn)
    header = {"task": 1, "fn": fd.hash.hex(), "env": fd.env}
    reply, value = Child().run(
        header, [bytearray(pickle_arguments(args, kwargs)), bytearray(fd.code)]
    )
    return reply, value


def test_child_runs_and_restores_cwd_and_path(tmp_path):
    cwd, path = os.getcwd(), list(sys.path)
    fd = pickle_function(
        os.getcwd, env=json.dumps({"cwd": str(tmp_path), "path": ["/nonexistent-entry"]})
    )
    header = {"task": 7, "fn": fd.hash.hex(), "env": fd.env}
    reply, value = Child().run(header, [bytearray(pickle_arguments((), {})), bytearray(fd.code)])
    assert reply == {"status": "ok", "task": 7}
    assert pickle.loads(value) == str(tmp_path)
    assert os.getcwd() == cwd and sys.path == path


def test_child_reports_exceptions_and_unpicklable_results():
    info, value = run_in_child(lambda: 1 / 0)
    assert info["status"] == "error" and info["error"]["type"] == "ZeroDivisionError"
    assert isinstance(pickle.loads(value), ZeroDivisionError)
    info, value = run_in_child(lambda: (x for x in ()))
    assert info["status"] == "error" and value == b""
    assert "could not be pickled" in info["error"]["message"]


def test_child_survives_system_exit_in_a_job():
    info, _ = run_in_child(sys.exit, 3)
    assert info["status"] == "error" and info["error"]["type"] == "SystemExit"


def test_a_function_the_child_never_received_is_a_clear_error():
    header = {"task": 3, "fn": "ab" * 32, "env": "{}"}
    reply, value = Child().run(header, [bytearray(pickle_arguments((), {}))])
    info = reply
    assert (
        info["status"] == "error" and "the worker has no such function" in info["error"]["message"]
    )


def test_arguments_that_do_not_unpickle_are_a_clear_error():
    fd = pickle_function(abs)
    header = {"task": 4, "fn": fd.hash.hex(), "env": fd.env}
    reply, _ = Child().run(header, [bytearray(b"not a pickle"), bytearray(fd.code)])
    info = reply
    assert "the arguments could not be unpickled on the worker" in info["error"]["message"]


def test_a_job_that_removes_the_childs_own_directory_does_not_break_it(tmp_path):
    home = tmp_path / "child-home"
    home.mkdir()
    before = os.getcwd()
    os.chdir(home)
    try:
        fd = pickle_function(lambda: os.rmdir(str(home)) or "gone")
        header = {"task": 5, "fn": fd.hash.hex(), "env": json.dumps({"cwd": str(tmp_path)})}
        reply, value = Child().run(
            header, [bytearray(pickle_arguments((), {})), bytearray(fd.code)]
        )
        assert reply["status"] == "ok" and pickle.loads(value) == "gone"
    finally:
        os.chdir(before)


# -- the child's loop: tasks in order, results naming the next, skips -----------


def task_message(task_id, fn=abs, *args):
    """A task as the supervisor writes it (its function included)."""
    fd = pickle_function(fn)
    header = {"task": task_id, "fn": fd.hash.hex(), "env": fd.env}
    return [json.dumps(header).encode(), bytearray(pickle_arguments(args, {})), bytearray(fd.code)]


def skip_message(task_id):
    return [json.dumps({"skip": task_id}).encode()]


class ScriptedReader:
    """A MessageReader's two calls, answered from a script: what arrives
    by the time of each call (None: the supervisor closed the pipe)."""

    def __init__(self, waits, polls):
        self.waits, self.polls = list(waits), list(polls)

    def wait(self):
        return self.waits.pop(0)

    def poll(self):
        return self.polls.pop(0) if self.polls else []


def headers(sent):
    return [json.loads(parts[0]) for parts in sent]


def test_each_result_names_the_task_started_after_it():
    sent = []
    reader = ScriptedReader(
        waits=[[task_message(1, abs, -1), task_message(2, abs, -2)], None],
        polls=[[task_message(3, abs, -3)], [], []],
    )
    Runner(Child(sent.append), reader, Tasks(sent.append)).serve()
    assert headers(sent) == [
        {"status": "ok", "task": 1, "next": 2},
        {"status": "ok", "task": 2, "next": 3},
        {"status": "ok", "task": 3},  # nothing more had come: no next
    ]
    assert [pickle.loads(parts[1]) for parts in sent] == [1, 2, 3]


def test_a_skipped_task_is_dropped_and_said_to_be_before_the_next_starts():
    sent = []
    reader = ScriptedReader(
        waits=[
            [task_message(1, abs, -1), task_message(2, abs, -2), task_message(3, abs, -3)],
            None,
        ],
        polls=[[skip_message(2), skip_message(1)]],  # 1 has started: ignored
    )
    Runner(Child(sent.append), reader, Tasks(sent.append)).serve()
    assert headers(sent) == [
        {"skipped": 2},
        {"status": "ok", "task": 1, "next": 3},
        {"status": "ok", "task": 3},
    ]


def test_the_watch_hands_back_what_waits_behind_a_long_task_only():
    sent = []
    tasks = Tasks(sent.append)
    runner = Runner(Child(sent.append), ScriptedReader([], [[task_message(5)]]), tasks)
    tasks.take(task_message(4))
    runner.check(1e9)  # no task runs: nothing to do
    assert sent == []
    runner._since = 100.0  # (as serve() marks a running task, its lock free)
    runner.check(100.0 + HAND_BACK_AFTER / 2)  # not long yet
    assert sent == []
    runner.check(100.0 + HAND_BACK_AFTER)  # long: every task waiting goes back
    assert headers(sent) == [{"skipped": 4}, {"skipped": 5}]
    assert tasks.next() is None


def test_the_watch_leaves_alone_a_task_that_started_as_it_looked():
    """It saw a long task; that one ended and the next started before the
    watch took the lock: what waits behind the new one stays."""
    sent = []
    tasks = Tasks(sent.append)
    runner = Runner(Child(sent.append), ScriptedReader([], []), tasks)
    tasks.take(task_message(4))
    runner._since = 100.0
    real_acquire = runner._lock.acquire

    def acquire(blocking=True):
        runner._since = 100.0 + HAND_BACK_AFTER  # the next task starts meanwhile
        return real_acquire(blocking)

    runner._lock = type(
        "Lock", (), {"acquire": staticmethod(acquire), "release": runner._lock.release}
    )()
    runner.check(100.0 + HAND_BACK_AFTER)
    assert sent == [] and tasks.next() is not None


def test_the_watch_leaves_the_loop_alone_while_it_holds_the_lock():
    sent = []
    runner = Runner(Child(sent.append), ScriptedReader([], []), Tasks(sent.append))
    runner._since = 0.0
    runner._lock.acquire()  # the task just ended: the loop has the reader
    runner.check(1e9)
    assert sent == []
