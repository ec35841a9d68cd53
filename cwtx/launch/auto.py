"""
``cwtx.start``, ``cwtx.stop`` and ``cwtx.allocate``: a cluster on SLURM when
``sbatch`` is on the PATH, else local processes, as the seed chose.

``launcher="local"`` or ``"slurm"``, or ``$CWTX_LAUNCHER``, forces one.
Other arguments go to ``cwtx.local.start`` or ``cwtx.slurm.start``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from cwtx.launch import slurm_commands

LAUNCHERS = ("local", "slurm")


def choose(launcher: str | None = None) -> ModuleType:
    """The launcher module to use: ``launcher``, else $CWTX_LAUNCHER, else
    SLURM if ``sbatch`` is on the PATH, else local."""
    which = launcher or os.environ.get("CWTX_LAUNCHER") or ""
    if not which:
        which = "slurm" if slurm_commands.available() else "local"
    if which not in LAUNCHERS:
        raise ValueError(
            f"launcher {which!r} (from {'launcher=' if launcher else '$CWTX_LAUNCHER'}) "
            f"is not one of {', '.join(LAUNCHERS)}"
        )
    return importlib.import_module(f"cwtx.launch.{which}")


#: Clusters cwtx.start started in this process and cwtx.stop has not stopped.
_started: list[Any] = []


def start(nworkers: int = 2, *args: Any, launcher: str | None = None, **kwargs: Any) -> Any:
    """Start a master and ``nworkers`` workers; the cluster, once all have
    registered (a LocalCluster or a SlurmCluster)."""
    cluster = choose(launcher).start(nworkers, *args, **kwargs)
    _started.append(cluster)
    return cluster


def stop(*args: Any, launcher: str | None = None, **kwargs: Any) -> list[str]:
    """Stop the cluster this process started last; with arguments (or none
    started), what the chosen launcher's ``stop`` finds with them."""
    if not args and not kwargs and launcher is None and _started:
        return _started.pop().stop()
    return choose(launcher).stop(*args, **kwargs)


@contextmanager
def allocate(nworkers: int = 2, *, launcher: str | None = None, **kwargs: Any) -> Iterator[Any]:
    """``with cwtx.allocate(4) as cluster:`` a cluster for the block."""
    with choose(launcher).allocate(nworkers, **kwargs) as cluster:
        yield cluster
