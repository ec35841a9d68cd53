"""
Clients: the Deferred client (``client``, ``connect``), the blocking
ClientThread and ClusterExecutor (``client_thread``, ``executor``) on one
reactor thread per process (``reactor_thread``), asyncio (``aio``), progress
bars, pickling (``serialize``), and where the master is (``address``).
"""

from typing import Any

#: The seed's names under ``cw.client``, so its programs run with only
#: ``cw`` changed to ``cwtx``; loaded on first use, like cwtx's own.
_SEED_NAMES = {
    "ClientThread": ("cwtx.client.client_thread", "ClientThread"),
    "ClusterExecutor": ("cwtx.client.executor", "ClusterExecutor"),
    "RemoteException": ("cwtx._errors", "RemoteError"),
}


def __getattr__(name: str) -> Any:
    if name in _SEED_NAMES:
        import importlib

        module, attribute = _SEED_NAMES[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'cwtx.client' has no attribute {name!r}")
