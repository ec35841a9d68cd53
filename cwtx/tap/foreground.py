"""
``python -m cwtx.worker`` and ``python -m cwtx.master``: a worker or master
in the foreground, as ``twistd -n --pidfile= cw-worker`` runs it.

The seed started its workers as ``python -m cw.worker HOST``; these are its
commands for cwtx, and what a Docker image whose entrypoint is its Python
runs (``cw slurm start --docker-image``).  A leading ``--logfile PATH``
logs to that file, bounded (``cwtx.logfile``: it rotates at
``CWTX_LOG_SIZE`` and keeps ``CWTX_LOG_FILES`` rotated files); without it
the log goes to standard output.
"""

from __future__ import annotations

import os
import sys

from cwtx.logfile import FILE_VARIABLE


def twistd_arguments(argv: list[str], plugin: str) -> tuple[list[str], str]:
    """twistd's argv for ``plugin`` in the foreground, with no pid file,
    logging through ``cwtx.logfile``; and the log file: a leading
    ``--logfile PATH`` (or ``--logfile=PATH``), else ``-`` (stdout)."""
    path = "-"
    if argv and argv[0].startswith("--logfile="):
        path = argv[0].split("=", 1)[1] or "-"
        argv = argv[1:]
    elif argv[:1] == ["--logfile"] and len(argv) > 1:
        path = argv[1]
        argv = argv[2:]
    twistd = ["twistd", "-n", "--pidfile=", "--logger", "cwtx.logfile.observer"]
    return [*twistd, plugin, *argv], path


def run(plugin: str) -> None:
    """Run ``plugin`` with this process's arguments, as twistd would."""
    from twisted.scripts.twistd import run

    sys.argv, os.environ[FILE_VARIABLE] = twistd_arguments(sys.argv[1:], plugin)
    run()
