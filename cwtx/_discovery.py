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
_current: tuple[str, int] | None = None


def set_current(address: tuple[str, int] | None) -> None:
    """Record the master a launcher in this process started (None: forget it)."""
    global _current
    with _lock:
        _current = address


def current() -> tuple[str, int] | None:
    with _lock:
        return _current


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
