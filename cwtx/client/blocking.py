"""
What the blocking clients (ClientThread, ClusterExecutor) share: connecting
from a thread that is not the reactor's, and handing pickled jobs to the
reactor thread.

Both drive a Deferred :class:`~cwtx.Client` in cwtx's one reactor thread per
process (see ``reactor_thread``).  They pickle in the calling thread, so an
unpicklable function or argument raises right there, and hand only bytes to
the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure

from cwtx.client import reactor_thread
from cwtx.client.address import find_master
from cwtx.client.client import Client, JobOptions
from cwtx.client.connect import connect
from cwtx.client.serialize import FunctionDef


def connect_blocking(
    host: str | None, port: int | None, endpoint: str | None, settings: dict[str, float]
) -> Client:
    """Connect from a blocking caller; ConnectionError after connect_timeout."""
    if endpoint is None:
        host, port = find_master(host, port)
    return reactor_thread.blocking(
        lambda: connect(host, port, endpoint=endpoint, **settings),
        timeout=settings["connect_timeout"] + 5,
    )


def settings(
    connect_timeout: float,
    reconnect_timeout: float,
    heartbeat_interval: float,
    heartbeat_timeout: float,
) -> dict[str, float]:
    return {
        "connect_timeout": connect_timeout,
        "reconnect_timeout": reconnect_timeout,
        "heartbeat_interval": heartbeat_interval,
        "heartbeat_timeout": heartbeat_timeout,
    }


def submit_in_reactor(
    client: Client,
    options: JobOptions,
    fn: FunctionDef,
    args: bytes,
    on_done: Callable[[Any], None],
) -> Any:
    """(reactor thread) submit, and call ``on_done(result or Failure)``."""
    try:
        d = client.submit_pickled(options, fn, args)
    except Exception:
        on_done(Failure())
        return None
    d.addBoth(on_done)
    return d
