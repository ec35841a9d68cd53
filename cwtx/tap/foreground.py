"""
``python -m cwtx.worker`` and ``python -m cwtx.master``: a worker or master
in the foreground, as ``twistd -n --pidfile= cw-worker`` runs it.

The seed started its workers as ``python -m cw.worker HOST``; these are its
commands for cwtx, and what a Docker image whose entrypoint is its Python
runs (``cw slurm start --docker-image``).  A leading ``--logfile PATH`` goes
to twistd; without it the log goes to standard output.
"""

from __future__ import annotations

import sys


def twistd_arguments(argv: list[str], plugin: str) -> list[str]:
    """twistd's argv for ``plugin`` in the foreground, with no pid file;
    a leading ``--logfile PATH`` (or ``--logfile=PATH``) goes to twistd."""
    twistd = ["twistd", "-n", "--pidfile="]
    if argv and argv[0].startswith("--logfile="):
        twistd.append(argv[0])
        argv = argv[1:]
    elif argv[:1] == ["--logfile"] and len(argv) > 1:
        twistd += ["--logfile", argv[1]]
        argv = argv[2:]
    else:
        twistd += ["--logfile", "-"]
    return [*twistd, plugin, *argv]


def run(plugin: str) -> None:
    """Run ``plugin`` with this process's arguments, as twistd would."""
    from twisted.scripts.twistd import run

    sys.argv = twistd_arguments(sys.argv[1:], plugin)
    run()
