"""
Every error cwtx raises derives from :class:`CwtxError`; the ones that match
a standard exception keep it as a mixin (ConnectionError, ValueError, ...).
Also: how errors cross the wire as JSON.

This module needs only the standard library, so the slot child can import
it.  :class:`~cwtx.client.errors.JobCancelled` is the one error that lives
elsewhere: it is a Twisted CancelledError too.
"""

from __future__ import annotations

import json
from typing import Any


class CwtxError(Exception):
    """Base class of the errors cwtx itself raises."""


class RemoteError(CwtxError):
    """
    A job raised an exception that could not be rebuilt on the client (its
    type does not unpickle here), or failed in a way that has no exception
    object (a result that cannot be pickled, say).
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = traceback

    def __str__(self) -> str:
        text = f"{self.type_name}: {self.message}"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback
        return text


class RemoteTraceback(CwtxError):
    """Set as ``__cause__`` of a job's own exception: the worker's traceback."""

    def __init__(self, traceback: str) -> None:
        super().__init__(traceback)
        self.traceback = traceback

    def __str__(self) -> str:
        return "\n\nRemote traceback:\n" + self.traceback


class JobLost(CwtxError):
    """The job's worker died under it more than ``max_retries`` times."""

    def __init__(self, message: str, attempts: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.attempts = attempts


class JobTimeout(CwtxError):
    """The job ran longer than its ``timeout`` and was killed."""


class JobMemoryError(CwtxError, MemoryError):
    """The job went over its worker's memory limit per slot (``twistd
    cw-worker --memory-limit``) and was killed, or an allocation past the
    limit failed.  ``limit`` and ``peak``: bytes (None if the worker did not
    say); the message names both.  Not retried: it would fail again."""

    def __init__(self, message: str, limit: int | None = None, peak: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.peak = peak

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.args[0], self.limit, self.peak)


class DependencyFailed(CwtxError):
    """A job's argument was another job (a Future or Deferred) that failed
    or was cancelled, so this job was never sent.  ``error`` (also the
    ``__cause__``) is what that dependency ended with."""

    def __init__(self, message: str, error: BaseException) -> None:
        super().__init__(message)
        self.error = error
        self.__cause__ = error

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.args[0], self.error)


class MasterConnectionLost(CwtxError, ConnectionError):
    """The client lost its master (or was closed) while the job had not
    ended, and found no master again within ``reconnect_timeout``."""


class ProtocolMismatch(CwtxError, ConnectionError):
    """The peer speaks another protocol version, or refused the handshake."""


class AuthenticationError(CwtxError, ConnectionError):
    """One side could not prove it knows the shared secret."""


class ProtocolError(CwtxError, ValueError):
    """A peer sent something the protocol does not allow; the connection closes."""


class FramingError(ProtocolError):
    """The bytes on a slot child's pipe are not a sequence of messages."""


class SecretError(CwtxError, RuntimeError):
    """The shared secret could not be read or created; the message says why and where."""


class LaunchError(CwtxError, RuntimeError):
    """A cluster did not come up; the message says what and where."""


def error_json(type_name: str, message: str, traceback: str = "", **extra: Any) -> str:
    """The ``error`` field of a result record."""
    return json.dumps({"type": type_name, "message": message, "traceback": traceback, **extra})


def parse_error(text: str) -> dict[str, Any]:
    """Read an ``error`` field; never raise on a malformed one."""
    try:
        info = json.loads(text) if text else {}
    except (ValueError, RecursionError):  # not JSON, or nested too deep to read
        info = {"type": "RemoteError", "message": text}
    if not isinstance(info, dict):
        info = {"type": "RemoteError", "message": text}
    for field, default in (("type", "RemoteError"), ("message", ""), ("traceback", "")):
        if not isinstance(info.get(field, default), str):
            info[field] = json.dumps(info[field])[:10_000]  # a peer's odd value, shown
        info.setdefault(field, default)
    if not isinstance(info.get("attempts", []), list):
        del info["attempts"]
    return info
