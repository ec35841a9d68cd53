"""
What the blocking clients (ClientThread, ClusterExecutor) share: connecting
from a thread that is not the reactor's, handing pickled jobs to the
reactor thread, and finishing their jobs before the interpreter exits.

Both drive a Deferred :class:`~cwtx.Client` in cwtx's one reactor thread per
process (see ``reactor_thread``).  They pickle in the calling thread, so an
unpicklable function or argument raises right there, and hand only bytes to
the reactor thread (``reactor_thread.call_soon``: many jobs per wake-up of
that thread), where ``Client.submit_to`` takes them with no Deferred per
job: the executor's Future, or a ClientThread's job record, hears the end.

At exit, as the standard library's executors do, the interpreter waits for
every job a live blocking client has not ended (and for its callbacks):
a script that submits and falls off its end still gets its results.  The
hook is registered with ``threading._register_atexit``, which runs before
``atexit`` handlers, so the reactor thread (stopped by one of those) still
runs while we wait.  Ctrl-C stops that wait; the process's connections
then close and the master drops what they had not ended.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
import weakref
from typing import Any, Protocol

from cwtx.client import reactor_thread
from cwtx.client.address import find_master
from cwtx.client.client import Client, ForwardOutput
from cwtx.client.connect import connect


def connect_blocking(
    host: str | None,
    port: int | None,
    endpoint: str | None,
    settings: dict[str, Any],
    name: str | None = None,
    share: float = 1.0,
    forward_output: ForwardOutput = False,
) -> Client:
    """Connect from a blocking caller; ConnectionError after connect_timeout."""
    if endpoint is None:
        host, port = find_master(host, port)
    return reactor_thread.blocking(
        lambda: connect(
            host,
            port,
            endpoint=endpoint,
            name=name,
            share=share,
            forward_output=forward_output,
            **settings,
        ),
        timeout=settings["connect_timeout"] + 5,
    )


def settings(
    connect_timeout: float,
    reconnect_timeout: float,
    heartbeat_interval: float,
    heartbeat_timeout: float,
    secret_file: str | None = None,
) -> dict[str, Any]:
    """cwtx.connect's connection settings, from a blocking client's."""
    return {
        "connect_timeout": connect_timeout,
        "reconnect_timeout": reconnect_timeout,
        "heartbeat_interval": heartbeat_interval,
        "heartbeat_timeout": heartbeat_timeout,
        "secret_file": secret_file,
    }


# -- the interpreter exits -------------------------------------------------------------------


class FinishesAtExit(Protocol):
    """A blocking client whose jobs the interpreter waits for at exit."""

    def finish_at_exit(self) -> None:
        """Block until every job submitted has ended and its callbacks ran."""


#: Live blocking clients, held weakly as the stdlib holds its executors.
_live: weakref.WeakSet[Any] = weakref.WeakSet()
_exiting = False


def finish_at_exit(client: FinishesAtExit) -> None:
    """Have the interpreter wait for ``client``'s jobs before it exits."""
    _live.add(client)


def check_not_exiting() -> None:
    """As the stdlib executors: no new jobs once the interpreter exits."""
    if _exiting:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


def _python_exit() -> None:
    """(main thread, at exit) let every live client's jobs end."""
    global _exiting
    _exiting = True
    try:
        for client in list(_live):
            client.finish_at_exit()
    except KeyboardInterrupt:
        # Stop waiting.  As this process ends its connections close, and the
        # master drops the queued jobs of a client that went away and kills
        # its running ones (docs/failures.md), so nothing is left behind.
        print(
            "cwtx: KeyboardInterrupt at exit: not waiting for the jobs that have "
            "not ended; the master drops them as this process goes",
            file=sys.stderr,
        )
    except BaseException:
        # An exception here would skip the other threading exit hooks.
        traceback.print_exc(file=sys.stderr)


try:
    threading._register_atexit(_python_exit)  # type: ignore[attr-defined]
except RuntimeError:  # imported while the interpreter is exiting already
    pass
# A forked child has no reactor thread: its parent's jobs never end there.
os.register_at_fork(after_in_child=_live.clear)
