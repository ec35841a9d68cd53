"""
Where the master is when a client is not told: the cluster this process
started, else ``$CWTX_MASTER``, else localhost.  (Under SLURM,
``cwtx.slurm.master_host()`` joins this chain with the SLURM launcher.)
"""

from __future__ import annotations

import os
import threading

from ._client import PORT

_lock = threading.Lock()
#: Masters that launchers in this process started and have not stopped, oldest first.
_started: list[tuple[str, int]] = []


def started(address: tuple[str, int]) -> None:
    """A launcher in this process started a master at ``address``."""
    with _lock:
        _started.append(address)


def stopped(address: tuple[str, int]) -> None:
    """That master was stopped: the one started before it is current again."""
    with _lock:
        if address in _started:
            _started.remove(address)


def current() -> tuple[str, int] | None:
    """The master this process started last and has not stopped, if any."""
    with _lock:
        return _started[-1] if _started else None


def master_address(host: str | None = None, port: int | None = None) -> tuple[str, int]:
    """The (host, port) a client should use when given ``host``/``port`` or not."""
    if host is not None:
        return host, PORT if port is None else port
    started = current()
    if started is not None and port in (None, PORT):
        return started
    env = os.environ.get("CWTX_MASTER")
    if env:
        from ._tap import parse_master_address

        try:
            env_host, env_port = parse_master_address(env)
        except ValueError as e:
            raise ValueError(f"$CWTX_MASTER={env!r} is not HOST[:PORT]: {e}") from None
        return env_host, env_port if port in (None, PORT) else port
    return "localhost", PORT if port is None else port
