"""
What the client pickles and unpickles: functions with their environment,
arguments, and the results and exceptions that come back.

Only clients and worker children call this module; the master never does.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import weakref
from typing import Any

import cloudpickle

from cwtx._errors import (
    JobLost,
    JobMemoryError,
    JobTimeout,
    RemoteError,
    RemoteTraceback,
    parse_error,
)
from cwtx.client.errors import JobCancelled
from cwtx.wire.names import PICKLE_PROTOCOL, function_hash


class FunctionDef:
    """A pickled callable, with the working directory and sys.path it needs."""

    __slots__ = ("hash", "env", "code", "__weakref__")

    def __init__(self, hash: bytes, env: str, code: bytes) -> None:
        self.hash = hash
        self.env = env
        self.code = code


#: The last environment made: ((cwd, sys.path), its JSON).
_last_env: tuple[tuple[str, tuple[str, ...]], str] = (("", ()), "")


def current_env() -> str:
    """The client's environment as JSON: working directory and sys.path.

    The same text object while neither changes (it is in every pending
    job's FunctionDef), and no JSON is written again for each job."""
    global _last_env
    key = (os.getcwd(), tuple(sys.path))
    last_key, env = _last_env
    if key != last_key:
        env = json.dumps({"cwd": key[0], "path": list(key[1])})
        _last_env = (key, env)
    return env


#: Every FunctionDef some job still holds, by (env, code): a function
#: submitted 100,000 times is hashed once and held in memory once.
_functions: weakref.WeakValueDictionary[tuple[str, bytes], FunctionDef] = (
    weakref.WeakValueDictionary()
)


def pickle_function(fn: Any, env: str | None = None) -> FunctionDef:
    """
    Pickle ``fn`` and key it by content (never by identity: a closure whose
    captured values changed must be sent again).
    """
    if not callable(fn):
        raise TypeError(f"cwtx jobs must be callable, not {type(fn).__name__}")
    code = cloudpickle.dumps(fn, protocol=PICKLE_PROTOCOL)
    env = current_env() if env is None else env
    key = (env, code)
    function = _functions.get(key)
    if function is None:
        function = _functions[key] = FunctionDef(function_hash(env, [code]), env, code)
    return function


def pickle_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    return cloudpickle.dumps((args, kwargs), protocol=PICKLE_PROTOCOL)


def decode_result(status: str, value: bytes, error: str) -> tuple[bool, Any]:
    """
    Turn a result record into (True, result) or (False, exception).

    A job's exception comes back as its original type when it unpickles
    here, with the worker's traceback as ``__cause__`` (a RemoteTraceback)
    and as the attribute ``remote_traceback``; otherwise as RemoteError.
    It never raises: a result that cannot be read still ends its job.
    """
    try:
        return _decode_result(status, value, error)
    except Exception as e:
        return False, RemoteError(
            "ProtocolError", f"the job's result could not be read: {type(e).__name__}: {e}"
        )


def _memory_error(info: dict[str, Any]) -> JobMemoryError:
    """The job went over its worker's memory limit: the error names the
    limit and the peak (bytes, also as attributes), and carries the job's
    traceback when an allocation failed in it."""
    sizes = [info.get(k) for k in ("limit", "peak")]
    limit, peak = (n if isinstance(n, int) and not isinstance(n, bool) else None for n in sizes)
    exc = JobMemoryError(info["message"], limit, peak)
    if info["traceback"]:
        exc.remote_traceback = info["traceback"]  # type: ignore[attr-defined]
        exc.__cause__ = RemoteTraceback(info["traceback"])
    return exc


def _decode_result(status: str, value: bytes, error: str) -> tuple[bool, Any]:
    if status == "ok":
        try:
            return True, pickle.loads(value)
        except Exception as e:
            return False, RemoteError(
                type(e).__name__, f"the job's result could not be unpickled here: {e}"
            )
    info = parse_error(error)
    if status == "lost":
        return False, JobLost(info["message"], info.get("attempts", []))
    if status == "timeout":
        return False, JobTimeout(info["message"])
    if status == "cancelled":
        return False, JobCancelled(info["message"])
    if status == "memory":
        return False, _memory_error(info)
    exc: BaseException | None = None
    if value:
        try:
            exc = pickle.loads(value)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        return False, RemoteError(info["type"], info["message"], info["traceback"])
    tb = info["traceback"]
    try:
        exc.remote_traceback = tb  # type: ignore[attr-defined]
        exc.__cause__ = RemoteTraceback(tb)
    except (AttributeError, TypeError):
        pass
    return False, exc
