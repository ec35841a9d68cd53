"""
cwtx: distribute Python jobs over a cluster, on Twisted.

A client submits closures, a master (``twistd cw-master``) routes them, and
workers (``twistd cw-worker --master HOST``) run them.
"""

from ._blocking import ClientThread, ClusterExecutor, randid
from ._client import PORT, Client, JobOptions, connect
from ._errors import (
    AuthenticationError,
    ConnectionLost,
    CwtxError,
    JobCancelled,
    JobLost,
    JobTimeout,
    ProtocolError,
    ProtocolMismatch,
    RemoteError,
    RemoteTraceback,
)
from ._progress import progress
from .local import allocate, start, stop

__version__ = "0.1.0"

__all__ = [
    "PORT",
    "AuthenticationError",
    "Client",
    "ClientThread",
    "ClusterExecutor",
    "ConnectionLost",
    "CwtxError",
    "JobCancelled",
    "JobLost",
    "JobOptions",
    "JobTimeout",
    "ProtocolError",
    "ProtocolMismatch",
    "RemoteError",
    "RemoteTraceback",
    "allocate",
    "connect",
    "progress",
    "randid",
    "start",
    "stop",
]
