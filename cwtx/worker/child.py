"""
A slot child: the process where user code runs (``python -m cwtx.worker.child``).

It reads tasks and writes results on its own pipes (``pipe``), running the
tasks in the order they came; the supervisor writes the next before the
last ends, and each result names the task started after it (:class:`Tasks`).
Each job runs in the client's working directory with the client's sys.path
in front; both are restored afterwards.  The supervisor kills and restarts
this process to enforce timeouts and cancellation, or when a job crashes it.

It loads the standard library and cloudpickle only (a test checks): a child
starts after every crash, timeout or cancelled running job, and its start
is paid by the next job.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import select
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import cloudpickle

from cwtx.wire.names import PICKLE_PROTOCOL, JobStatus, OutputStream
from cwtx.worker.data import DataCache
from cwtx.worker.pipe import (
    HAND_BACK_AFTER,
    RESULT_FD,
    TASK_FD,
    Header,
    MessageReader,
    write_message,
)


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


#: What the child sends the supervisor: one message's parts.
Send = Callable[[list[bytes]], None]

#: Bytes read from an output pipe at a time (one output message at most).
OUTPUT_READ = 65536
#: Seconds an output thread waits for more before it sends what it read.
OUTPUT_GATHER = 0.002
#: Once a job has returned, its output pipes are drained; but a process
#: the job started and left running may hold them open: then the child
#: stops waiting after they have been idle this many seconds ...
OUTPUT_DRAIN = 1.0
#: ... or after this many in all.
OUTPUT_DRAIN_MOST = 10.0


class _Capture:
    """
    While a job runs with ``forward_output``: file descriptors 1 and 2 (so
    whatever the job prints, and whatever processes it starts print) lead
    to pipes, which threads read and send to the supervisor as output
    messages on the result pipe, before the result itself.  ``sys.stdout``
    and ``sys.stderr`` are line-buffered meanwhile, so lines go as they are
    printed.  The supervisor bounds what it forwards (``worker.output``).
    """

    def __init__(self, task: int, send: Send) -> None:
        self._task = task
        self._send = send
        self._saved_fds: list[tuple[int, int]] = []
        self._threads: list[threading.Thread] = []
        self._streams: tuple[Any, Any] = (sys.stdout, sys.stderr)
        self._read_at = time.monotonic()  # when an output thread last read

    def __enter__(self) -> None:
        _flush(sys.stdout, sys.stderr)
        for fd, stream in ((1, OutputStream.STDOUT), (2, OutputStream.STDERR)):
            try:
                saved = os.dup(fd)
            except OSError:
                continue  # (closed: nothing to capture)
            read, write = os.pipe()
            os.dup2(write, fd)
            os.close(write)
            self._saved_fds.append((fd, saved))
            header = json.dumps({Header.TASK: self._task, Header.STREAM: stream}).encode()
            thread = threading.Thread(target=self._pump, args=(read, header), daemon=True)
            thread.start()
            self._threads.append(thread)
        sys.stdout, sys.stderr = _line_buffered(1), _line_buffered(2)

    def __exit__(self, *exc: object) -> None:
        _flush(sys.stdout, sys.stderr)
        self._read_at = time.monotonic()
        sys.stdout, sys.stderr = self._streams
        for fd, saved in self._saved_fds:  # closes the pipes' write ends
            os.dup2(saved, fd)
            os.close(saved)
        # Until the pipes are drained (their write ends closed), unless a
        # process the job left running holds them: then until they have
        # been idle for OUTPUT_DRAIN seconds, and OUTPUT_DRAIN_MOST at most.
        deadline = time.monotonic() + OUTPUT_DRAIN_MOST
        for thread in self._threads:
            while thread.is_alive() and time.monotonic() < deadline:
                thread.join(0.05)
                if time.monotonic() - self._read_at > OUTPUT_DRAIN:
                    break

    def _pump(self, fd: int, header: bytes) -> None:
        try:
            while data := os.read(fd, OUTPUT_READ):
                self._read_at = time.monotonic()
                # A job printing fast writes many short lines: gather what
                # follows within OUTPUT_GATHER seconds into one message.
                while len(data) < OUTPUT_READ and select.select([fd], [], [], OUTPUT_GATHER)[0]:
                    more = os.read(fd, OUTPUT_READ - len(data))
                    if not more:
                        break
                    data += more
                self._send([header, data])
        except OSError:
            pass
        finally:
            os.close(fd)


def _line_buffered(fd: int) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", line_buffering=True)


def _flush(*streams: Any) -> None:
    for stream in streams:
        try:
            stream.flush()
        except Exception:
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
    def __init__(self, send: Send | None = None) -> None:
        """``send(parts)`` sends a message to the supervisor (output, from
        the capture's threads); the result is returned by :meth:`run`."""
        self._send = send or (lambda parts: None)
        self._functions: dict[str, Any] = {}  # hash -> unpickled callable
        self._codes: dict[str, bytes] = {}  # hash -> pickle, until it loads
        self.data = DataCache()  # put data (cwtx.Ref) that arguments name

    def keep(self, header: dict[str, Any], parts: list[bytearray]) -> bool:
        """Handle a message about put data (keep it, or forget some) or
        functions (drop some, or keep the code a task not started brought),
        if that is what it is; it has no answer.  False for a task."""
        if Header.DATA in header:
            self.data.keep(header[Header.DATA], parts[0])
        elif Header.FORGET in header:
            self.data.forget(header[Header.FORGET])
        elif Header.DROP in header:
            for fn_hash in header[Header.DROP]:
                self._functions.pop(fn_hash, None)
                self._codes.pop(fn_hash, None)
        elif Header.LEARN in header:
            self._learn(header[Header.LEARN], parts[0])
        else:
            return False
        return True

    def run(self, header: dict[str, Any], parts: list[bytearray]) -> tuple[dict[str, Any], bytes]:
        """Run one task: its header and [arguments(, function)]; the result's
        header and value."""
        fn_hash = header[Header.FUNCTION]
        args_bytes = parts[0]
        if len(parts) > 1:
            self._learn(fn_hash, parts[1])
        env = json.loads(header[Header.ENV])
        capture: AbstractContextManager[None] = nullcontext()
        if header.get(Header.OUTPUT):
            capture = _Capture(header[Header.TASK], self._send)
        with _Env(env, header.get(Header.VARS) or {}), capture:
            reply, value = self._call(fn_hash, args_bytes)
        reply[Header.TASK] = header[Header.TASK]
        return reply, value

    def _learn(self, fn_hash: str, code: bytearray) -> None:
        """A function's code came (with a task): it is unpickled when first run."""
        self._functions.pop(fn_hash, None)
        self._codes[fn_hash] = bytes(code)

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
            with self.data.loading():
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


#: A message read from the supervisor: its header and its other parts.
Message = tuple[dict[str, Any], list[bytearray]]
#: Applies a message about put data (``Child.keep``): False for a task.
Keep = Callable[[dict[str, Any], list[bytearray]], bool]


class Tasks:
    """
    The tasks the child has read and not started, in order, and the result
    it has not sent yet.  That result goes when the child knows what it
    starts next, and names it (``next``), so the supervisor learns of the
    start with no message of its own.  Skipped tasks are dropped, and said
    to be, except the first task read while idle: the supervisor counts it
    as started (it had a result without ``next``, or wrote it to an idle
    child), so a skip read with it comes too late.  Put data to keep or
    forget, and functions to drop, wait among the tasks, and are applied
    in order, as the tasks before them start; a task dropped unstarted
    leaves its function code in its place.
    """

    def __init__(self, send: Send, keep: Keep = lambda header, parts: False) -> None:
        self._send = send
        self._keep = keep
        self._waiting: deque[Message] = deque()
        self._result: tuple[dict[str, Any], bytes] | None = None
        self._idle = True  # nothing waits, nothing runs: the next task read starts
        self._committed: int | None = None  # that task, until it starts

    def take(self, message: list[bytearray]) -> None:
        """A message from the supervisor: a task, put data, or a skip."""
        header = json.loads(message[0])
        if Header.SKIP not in header:
            self._waiting.append((header, message[1:]))
            if self._idle and Header.TASK in header:
                self._idle, self._committed = False, header[Header.TASK]
            return
        task = header[Header.SKIP]
        if task == self._committed:
            return  # too late: the supervisor counts it as started
        for i, waiting in enumerate(self._waiting):
            if waiting[0].get(Header.TASK) == task:
                left = self._unstarted(waiting)
                if left is None:
                    del self._waiting[i]
                else:
                    self._waiting[i] = left
                self._skipped(task)
                return
        # (started already, or ended: the supervisor sees that it started)

    def hand_back(self) -> None:
        """Drop every task waiting, and say so: the one running is long.
        (Put data stays, for the loop to apply: a task may be unpickling
        its arguments yet.)"""
        handed = [h[Header.TASK] for h, _ in self._waiting if Header.TASK in h]
        kept = (self._unstarted(m) if Header.TASK in m[0] else m for m in self._waiting)
        self._waiting = deque(m for m in kept if m is not None)
        for task in handed:
            self._skipped(task)

    @staticmethod
    def _unstarted(message: Message) -> Message | None:
        """What stays of a task dropped unstarted: the function code it
        brought, if any, kept in its place (the supervisor counts on the
        child having it, and on drops coming after it)."""
        header, parts = message
        if len(parts) > 1:
            return {Header.LEARN: header[Header.FUNCTION]}, [parts[1]]
        return None

    def _skipped(self, task: int) -> None:
        self._send([json.dumps({Header.SKIPPED: task}).encode()])

    def finished(self, reply: dict[str, Any], value: bytes) -> None:
        """The running task ended: its result waits for :meth:`next`."""
        self._result = (reply, value)

    def next(self) -> tuple[dict[str, Any], list[bytearray]] | None:
        """The task to start now, if any; sends the last result first."""
        task = None
        while self._waiting:
            header, parts = self._waiting.popleft()
            if Header.TASK in header:
                task = (header, parts)
                break
            self._keep(header, parts)
        self._idle, self._committed = task is None, None
        if self._result is not None:
            reply, value = self._result
            self._result = None
            if task is not None:
                reply[Header.NEXT] = task[0][Header.TASK]
            self._send([json.dumps(reply).encode("utf-8"), value])
        return task


class Runner:
    """
    The child's loop: run the tasks in order until the supervisor closes
    the pipe; before starting each, take whatever has arrived (skips
    included), without blocking.  Meanwhile :meth:`watch` (a thread) hands
    back the tasks written ahead of one that runs long.
    """

    def __init__(self, child: Child, reader: MessageReader, tasks: Tasks) -> None:
        self._child = child
        self._reader = reader
        self._tasks = tasks
        # The reader and the tasks are the loop's, except while a task runs.
        self._lock = threading.Lock()
        self._since: float | None = None  # when the running task started

    def serve(self) -> None:
        reader, tasks = self._reader, self._tasks
        self._lock.acquire()
        while True:
            task = tasks.next()
            if task is None:
                messages = reader.wait()
                if messages is None:
                    return
                for message in messages:
                    tasks.take(message)
                continue
            self._since = time.monotonic()
            self._lock.release()
            try:
                reply, value = self._child.run(*task)
            finally:
                self._lock.acquire()
                self._since = None
            del task
            tasks.finished(reply, value)
            for message in reader.poll():
                tasks.take(message)

    def watch(self, period: float = HAND_BACK_AFTER / 2) -> None:
        """Look every ``period`` seconds (a daemon thread's loop)."""
        while True:
            time.sleep(period)
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        """If the running task has run HAND_BACK_AFTER seconds, hand back
        every task written ahead of it (those that have arrived too)."""
        since = self._since
        if since is None or now - since < HAND_BACK_AFTER:
            return
        if not self._lock.acquire(blocking=False):
            return  # (it has just ended)
        try:
            if self._since == since:  # (not another task, just started)
                for message in self._reader.poll():
                    self._tasks.take(message)
                self._tasks.hand_back()
        finally:
            self._lock.release()


def main() -> None:
    _die_with_supervisor()
    _deaf_to_interrupts()
    results = os.fdopen(RESULT_FD, "wb")
    lock = threading.Lock()  # output threads, the watch and the loop share the pipe

    def send(parts: list[bytes]) -> None:
        with lock:
            write_message(results, parts)

    child = Child(send)
    runner = Runner(child, MessageReader.of_fd(TASK_FD), Tasks(send, child.keep))
    threading.Thread(target=runner.watch, name="cwtx-watch", daemon=True).start()
    runner.serve()


if __name__ == "__main__":
    main()
