"""
Processes we started, tracked by pid files: never found by grepping ps.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, or None if it is missing or not a pid."""
    try:
        with open(path, "rb") as f:
            text = f.read(32).decode("ascii", errors="replace").strip()
    except OSError:
        return None

    if not text.isdigit() or len(text) > 10:
        return None
    pid = int(text)
    return pid if pid > 1 else None


def is_running(pid: int) -> bool:
    """True if pid is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rsplit(b")", 1)[-1].split()[0:1]
    return state not in ([b"Z"], [b"X"])


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def terminate(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; True once it is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not is_running(pid):
                return True
            time.sleep(0.02)
    return not is_running(pid)


def _reap(pid: int) -> None:
    """Reap pid if it is our child; harmless if it is not."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def log_tail(path: Path, lines: int = 15, missing: str = "(no log)") -> str:
    """The last ``lines`` of a log, indented, for an error message."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return missing
    return "\n".join("    " + line for line in text)


def logged_error(path: Path) -> str | None:
    """The last error line a cwtx service logged (its reason for exiting),
    without the timestamp and logger, or None."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if "#error] " in line:
            return line.split("#error] ", 1)[1]
    return None


def twistd_argv() -> list[str]:
    """How to run twistd with this interpreter (and so this cwtx)."""
    beside = Path(sys.executable).with_name("twistd")
    if beside.exists():
        return [sys.executable, str(beside)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
