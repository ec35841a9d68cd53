"""
A slot child: the process where user code runs (``python -m cwtx.worker.child``).

It reads tasks and writes results on its own pipes (``pipe``).  Each job
runs in the client's working directory with the client's sys.path in front;
both are restored afterwards.  The supervisor kills and restarts this
process to enforce timeouts and cancellation, or when a job crashes it.

It loads the standard library and cloudpickle only (a test checks): a child
starts after every crash, timeout or cancelled running job, and its start
is paid by the next job.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from typing import Any

import cloudpickle

from cwtx.wire.names import PICKLE_PROTOCOL, JobStatus
from cwtx.worker.pipe import RESULT_FD, TASK_FD, Header, read_message, write_message


class _Env:
    """Enter the client's cwd and sys.path, and the job's environment
    variables (the resources it holds); restore all on exit."""

    def __init__(self, env: dict[str, Any], variables: dict[str, str]) -> None:
        self._env = env
        self._vars = {str(k): str(v) for k, v in variables.items()}

    def __enter__(self) -> None:
        self._cwd = os.getcwd()
        self._path = list(sys.path)
        self._saved = {k: os.environ.get(k) for k in self._vars}
        if self._vars:
            os.environ.update(self._vars)
        path = self._env.get("path", [])
        sys.path[:0] = [p for p in path if isinstance(p, str)]
        cwd = self._env.get("cwd")
        if cwd:
            os.chdir(cwd)

    def __exit__(self, *exc: object) -> None:
        for key, value in self._saved.items():  # (none for most jobs)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.path[:] = self._path
        try:
            os.chdir(self._cwd)
        except OSError:
            pass


def _failure(stage: str, exc: BaseException) -> tuple[dict[str, Any], bytes]:
    """
    An error header and, for an exception the job itself raised (stage
    "run"), the pickled exception.  A failure around the job (unpickling its
    function or arguments, pickling its result) sends no exception object, so
    the client raises RemoteError with the stage in its message.
    """
    tb = "".join(traceback.format_exception(exc))
    value = b""
    message = str(exc)
    if stage == "run":
        try:
            value = cloudpickle.dumps(exc, protocol=PICKLE_PROTOCOL)
            pickle.loads(value)  # an exception that pickles but won't unpickle
        except BaseException:
            value = b""
    else:
        message = f"{stage}: {message}"
    error = {"type": type(exc).__qualname__, "message": message, "traceback": tb}
    return {Header.STATUS: JobStatus.ERROR, Header.ERROR: error}, value


class Child:
    def __init__(self) -> None:
        self._functions: dict[str, Any] = {}  # hash -> unpickled callable
        self._codes: dict[str, bytes] = {}  # hash -> pickle, until it loads

    def run(self, header: dict[str, Any], parts: list[bytearray]) -> list[bytes]:
        """Run one task: its header and [arguments(, function)]; the result message."""
        fn_hash = header[Header.FUNCTION]
        args_bytes = parts[0]
        if len(parts) > 1:
            self._codes[fn_hash] = bytes(parts[1])
        env = json.loads(header[Header.ENV])
        with _Env(env, header.get(Header.VARS) or {}):
            reply, value = self._call(fn_hash, args_bytes)
        reply[Header.TASK] = header[Header.TASK]
        return [json.dumps(reply).encode("utf-8"), value]

    def _call(self, fn_hash: str, args_bytes: bytearray) -> tuple[dict[str, Any], bytes]:
        fn = self._functions.get(fn_hash)
        if fn is None:
            code = self._codes.get(fn_hash)
            if code is None:
                return _failure("the worker has no such function", KeyError(fn_hash))
            try:
                fn = pickle.loads(code)
            except BaseException as e:
                return _failure("the function could not be unpickled on the worker", e)
            self._functions[fn_hash] = fn
            del self._codes[fn_hash]
        try:
            args, kwargs = pickle.loads(args_bytes)
        except BaseException as e:
            return _failure("the arguments could not be unpickled on the worker", e)
        del args_bytes
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            return _failure("run", e)
        del args, kwargs
        try:
            value = cloudpickle.dumps(result, protocol=PICKLE_PROTOCOL)
        except BaseException as e:
            return _failure(f"the result ({type(result).__qualname__}) could not be pickled", e)
        return {Header.STATUS: JobStatus.OK}, value


def _die_with_supervisor() -> None:
    """Linux: get SIGKILL when the supervisor dies (kill -9 included), so no
    orphaned job keeps running; a lost worker's jobs run again elsewhere."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the supervisor died before prctl
        os._exit(1)


def _deaf_to_interrupts() -> None:
    """A Ctrl-C in the worker's terminal, or a SIGINT that SLURM sends to
    every process of a batch step, is for the supervisor, which lets running
    jobs finish (its grace) before it ends them; it must not kill a job at
    once with a KeyboardInterrupt.  So the child leaves the supervisor's
    process group, and takes SIGINT with a handler that does nothing (a
    handler, not SIG_IGN: processes a job starts get the default again)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    import signal

    signal.signal(signal.SIGINT, lambda signum, frame: None)


def main() -> None:
    _die_with_supervisor()
    _deaf_to_interrupts()
    tasks = os.fdopen(TASK_FD, "rb", buffering=0)
    results = os.fdopen(RESULT_FD, "wb")
    child = Child()
    while True:
        message = read_message(tasks)
        if message is None:
            return
        header = json.loads(message[0])
        write_message(results, child.run(header, message[1:]))


if __name__ == "__main__":
    main()
