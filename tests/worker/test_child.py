"""The slot child's job runner, in this process."""

from __future__ import annotations

import json
import os
import pickle
import sys

from cwtx.client.serialize import pickle_arguments, pickle_function
from cwtx.worker.child import Child


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
