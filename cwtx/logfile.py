"""
A log file that cannot fill the disk: twistd's ``--logfile`` rotates at
1 MB and keeps every rotated file, so a long-lived master (or a peer that
makes it log a lot) leaves files without end.  This observer rotates by
size and keeps a fixed number of rotated files.

For any twistd (``cw local`` and ``cw slurm`` use it for the master and
workers they start)::

    CWTX_LOG_FILE=/var/log/cwtx/master.log CWTX_LOG_SIZE=10M CWTX_LOG_FILES=5 \\
        twistd -n --logger cwtx.logfile.observer cw-master

twistd's ``--logger`` takes a factory with no arguments, so the settings
come from the environment:

* ``CWTX_LOG_FILE``: the file (required; ``-`` for standard output);
* ``CWTX_LOG_SIZE``: rotate when the file reaches this size (bytes, or
  ``10M``, ``1G``; default 10 MiB);
* ``CWTX_LOG_FILES``: rotated files kept beside it (``FILE.1`` the newest;
  default 5).  About ``(CWTX_LOG_FILES + 1) × CWTX_LOG_SIZE`` on disk (a
  file rotates after the line that takes it past the size).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import FileLogObserver, textFileLogObserver
from twisted.python.logfile import LogFile

from cwtx.wire.resources import amount

FILE_VARIABLE = "CWTX_LOG_FILE"
SIZE_VARIABLE = "CWTX_LOG_SIZE"
FILES_VARIABLE = "CWTX_LOG_FILES"

#: The defaults: about 60 MiB of log per process.
DEFAULT_SIZE = 10 * 1024 * 1024
DEFAULT_FILES = 5
#: Smaller rotations would mostly rotate.
MIN_SIZE = 64 * 1024


@dataclass(frozen=True)
class LogSettings:
    """Where a process logs, and how much it may keep."""

    path: str
    size: int = DEFAULT_SIZE
    files: int = DEFAULT_FILES

    def environment(self) -> dict[str, str]:
        """The variables that give these settings to :func:`observer`."""
        return {
            FILE_VARIABLE: self.path,
            SIZE_VARIABLE: str(self.size),
            FILES_VARIABLE: str(self.files),
        }


def log_size(value: str | int) -> int:
    """A rotation size: bytes, or ``10M``; ValueError naming what is wrong."""
    size = int(amount(value, "log size"))
    if size < MIN_SIZE:
        raise ValueError(f"log size {value!r} is under the least, {MIN_SIZE // 1024}K")
    return size


def log_files(value: str | int) -> int:
    """How many rotated files to keep: a whole number, 1 or more."""
    try:
        files = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"log files: {value!r} is not a whole number") from None
    if files < 1:
        raise ValueError(f"log files: {value!r} must be 1 or more")
    return files


def settings(environ: Mapping[str, str] = os.environ) -> LogSettings:
    """The settings the environment gives; ValueError if one is wrong."""
    path = environ.get(FILE_VARIABLE, "")
    if not path:
        raise ValueError(f"{FILE_VARIABLE} must name the log file (or - for standard output)")
    return LogSettings(
        path,
        log_size(environ.get(SIZE_VARIABLE, DEFAULT_SIZE)),
        log_files(environ.get(FILES_VARIABLE, DEFAULT_FILES)),
    )


def open_log(s: LogSettings) -> LogFile:
    """The file, rotating at ``s.size`` with ``s.files`` rotated files kept."""
    path = Path(s.path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return LogFile(path.name, str(path.parent), rotateLength=s.size, maxRotatedFiles=s.files)


def observer() -> FileLogObserver:
    """``twistd --logger cwtx.logfile.observer``: a text log observer on a
    bounded, rotating file set by ``CWTX_LOG_*`` (see the module's doc)."""
    try:
        s = settings()
    except ValueError as e:
        raise SystemExit(f"cwtx.logfile: {e}") from None
    if s.path == "-":
        return textFileLogObserver(sys.stdout)
    return textFileLogObserver(open_log(s))
