"""The local launcher's own logic, without starting anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cwtx.launch import local
from cwtx.launch.procs import log_tail


def test_the_default_run_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("CWTX_RUN_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert local.default_run_dir() == tmp_path / "cwtx" / "local"
    monkeypatch.setenv("CWTX_RUN_DIR", str(tmp_path / "elsewhere"))
    assert local.default_run_dir() == tmp_path / "elsewhere"


def test_a_negative_number_of_workers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="nworkers must be 0 or more, not -1"):
        local.start(-1, run_dir=tmp_path)


def test_a_bad_recorded_address_is_no_address(tmp_path):
    (tmp_path / "master.pid").write_text(str(os.getpid()))
    (tmp_path / "master.address").write_text("http://nonsense")
    assert local.recorded_master(tmp_path) is None
    (tmp_path / "master.address").unlink()
    assert local.recorded_master(tmp_path) is None


def test_a_missing_log_is_said_to_be_missing():
    assert log_tail(Path("/nonexistent/cwtx.log")) == "(no log)"


def test_processes_it_starts_import_this_cwtx_and_nothing_inside_it(monkeypatch):
    import cwtx

    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    path = local._child_environment()["PYTHONPATH"].split(os.pathsep)
    assert path == [str(Path(cwtx.__file__).resolve().parent.parent), "/somewhere/else"]
