"""
cwtx.logfile: a twistd log that rotates by size and keeps a fixed number of
files, so a long-lived master cannot fill the disk (issue 15).
"""

from __future__ import annotations

import pytest
from twisted.logger import Logger, LogPublisher

from cwtx import logfile


def test_settings_come_from_the_environment():
    environ = {"CWTX_LOG_FILE": "/x/m.log", "CWTX_LOG_SIZE": "1M", "CWTX_LOG_FILES": "3"}
    s = logfile.settings(environ)
    assert s == logfile.LogSettings("/x/m.log", 1024 * 1024, 3)
    assert logfile.settings(s.environment()) == s
    assert logfile.settings({"CWTX_LOG_FILE": "-"}) == logfile.LogSettings(
        "-", logfile.DEFAULT_SIZE, logfile.DEFAULT_FILES
    )


@pytest.mark.parametrize(
    ("environ", "said"),
    [
        ({}, "CWTX_LOG_FILE must name the log file"),
        ({"CWTX_LOG_FILE": "f", "CWTX_LOG_SIZE": "lots"}, "'lots' is not an amount"),
        ({"CWTX_LOG_FILE": "f", "CWTX_LOG_SIZE": "1K"}, "under the least, 64K"),
        ({"CWTX_LOG_FILE": "f", "CWTX_LOG_FILES": "0"}, "must be 1 or more"),
        ({"CWTX_LOG_FILE": "f", "CWTX_LOG_FILES": "two"}, "'two' is not a whole number"),
    ],
)
def test_a_bad_setting_is_an_error_naming_it(environ, said):
    with pytest.raises(ValueError, match=said):
        logfile.settings(environ)


def test_twistd_gets_one_line_not_a_traceback(monkeypatch):
    monkeypatch.delenv("CWTX_LOG_FILE", raising=False)
    with pytest.raises(SystemExit, match="^cwtx.logfile: CWTX_LOG_FILE must name"):
        logfile.observer()


def test_the_log_rotates_by_size_and_keeps_so_many_files(tmp_path, monkeypatch):
    path = tmp_path / "logs" / "master.log"  # (its directory is made)
    env = logfile.LogSettings(str(path), 64 * 1024, 2).environment()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    publisher = LogPublisher()
    observer = logfile.observer()
    publisher.addObserver(observer)
    log = Logger(observer=publisher)
    for i in range(10_000):  # about 1.3 MB of lines: twenty rotations
        log.info("line {i} {padding}", i=i, padding="x" * 100)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "master.log",
        "master.log.1",
        "master.log.2",
    ]
    assert all(p.stat().st_size <= 64 * 1024 + 200 for p in path.parent.iterdir())
    assert "line 9999 " in path.read_text()  # the newest in the file itself
