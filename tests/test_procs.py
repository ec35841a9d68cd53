"""Pid files and process helpers, on pids that cannot exist (nothing is started)."""

from __future__ import annotations

import sys

from cwtx.launch import procs

#: Above Linux's largest pid_max (2**22): no process ever has this pid.
NO_SUCH_PID = 2**22 + 12_345


def test_a_pid_that_does_not_exist():
    assert not procs.is_running(NO_SUCH_PID)
    assert procs.cmdline(NO_SUCH_PID) == ""
    assert procs.terminate(NO_SUCH_PID, timeout=0.1)  # already gone: nothing to do


def test_this_process_is_running_and_has_a_command_line():
    import os

    assert procs.is_running(os.getpid())
    assert "python" in procs.cmdline(os.getpid())  # run by pytest, or by mutmut


def test_twistd_is_run_by_this_interpreter(monkeypatch, tmp_path):
    argv = procs.twistd_argv()
    assert argv[0] == sys.executable
    monkeypatch.setattr(procs.sys, "executable", str(tmp_path / "python"))  # no twistd beside it
    assert procs.twistd_argv()[1:] == ["-c", "from twisted.scripts.twistd import run; run()"]
