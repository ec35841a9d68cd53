"""
cwtx: distribute Python jobs over a cluster, on Twisted.

A client submits closures, a master (``twistd cw-master``) routes them, and
workers (``twistd cw-worker --master HOST``) run them.  The public API is
the names below, and the modules ``cwtx.aio``, ``cwtx.local`` (``cwtx.mp``,
its seed name), ``cwtx.slurm`` and ``cwtx.testing``; docs/architecture.md maps the rest.

Names load on first use (PEP 562): ``import cwtx`` loads no Twisted, since
every slot child imports this package to run its jobs.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Each public name, and the module that defines it.
_EXPORTS = {
    "PORT": "cwtx.client.address",
    "Client": "cwtx.client.client",
    "JobOptions": "cwtx.client.options",
    "connect": "cwtx.client.connect",
    "ClientThread": "cwtx.client.client_thread",
    "randid": "cwtx.client.client_thread",
    "ClusterExecutor": "cwtx.client.executor",
    "Ref": "cwtx.client.refs",
    "progress": "cwtx.client.progress",
    "allocate": "cwtx.launch.auto",
    "start": "cwtx.launch.auto",
    "stop": "cwtx.launch.auto",
    "JobCancelled": "cwtx.client.errors",
    **dict.fromkeys(
        [
            "AuthenticationError",
            "CwtxError",
            "DependencyFailed",
            "JobLost",
            "JobMemoryError",
            "JobTimeout",
            "LaunchError",
            "MasterConnectionLost",
            "ProtocolError",
            "ProtocolMismatch",
            "RemoteError",
            "RemoteTraceback",
            "SecretError",
        ],
        "cwtx._errors",
    ),
}

#: Public modules, imported on first use as attributes too.
_MODULES = ("aio", "local", "mp", "slurm", "testing")

__all__ = [
    "AuthenticationError",
    "Client",
    "ClientThread",
    "ClusterExecutor",
    "CwtxError",
    "DependencyFailed",
    "JobCancelled",
    "JobLost",
    "JobMemoryError",
    "JobOptions",
    "JobTimeout",
    "LaunchError",
    "MasterConnectionLost",
    "PORT",
    "ProtocolError",
    "ProtocolMismatch",
    "Ref",
    "RemoteError",
    "RemoteTraceback",
    "SecretError",
    "allocate",
    "connect",
    "progress",
    "randid",
    "start",
    "stop",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if name in _MODULES:
        return importlib.import_module(f"cwtx.{name}")
    if name == "ConnectionLost":
        warnings.warn(
            "cwtx.ConnectionLost is now cwtx.MasterConnectionLost "
            "(the old name shadowed Twisted's ConnectionLost)",
            DeprecationWarning,
            stacklevel=2,
        )
        return __getattr__("MasterConnectionLost")
    raise AttributeError(f"module 'cwtx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_MODULES})


if TYPE_CHECKING:  # what type checkers and IDEs see
    from cwtx._errors import (
        AuthenticationError,
        CwtxError,
        DependencyFailed,
        JobLost,
        JobMemoryError,
        JobTimeout,
        LaunchError,
        MasterConnectionLost,
        ProtocolError,
        ProtocolMismatch,
        RemoteError,
        RemoteTraceback,
        SecretError,
    )
    from cwtx.client.address import PORT
    from cwtx.client.client import Client
    from cwtx.client.client_thread import ClientThread, randid
    from cwtx.client.connect import connect
    from cwtx.client.errors import JobCancelled
    from cwtx.client.executor import ClusterExecutor
    from cwtx.client.options import JobOptions
    from cwtx.client.progress import progress
    from cwtx.client.refs import Ref
    from cwtx.launch.auto import allocate, start, stop
