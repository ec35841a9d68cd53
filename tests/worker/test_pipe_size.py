"""
The slot's pipes to its child are widened, and its result pipe read in big
pieces: megabyte payloads must not cost a wake-up per 64 KiB or a reactor
turn per 8 KiB (Twisted's own read size).
"""

from __future__ import annotations

import fcntl
import os

import pytest
from twisted.internet.main import CONNECTION_DONE

from cwtx.worker.slot import PIPE_SIZE, READ_SIZE, RESULT_FD, TASK_FD, _widen_pipes

pytestmark = pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="Linux only")


class _End:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.received: list[bytes] = []

    def fileno(self) -> int:
        return self.fd

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)


class _Transport:
    def __init__(self, task: _End, result: _End) -> None:
        self.pipes = {TASK_FD: task, RESULT_FD: result}


@pytest.fixture
def pipes():
    task_r, task_w = os.pipe()
    result_r, result_w = os.pipe()
    os.set_blocking(result_r, False)
    yield task_w, result_r, result_w
    for fd in (task_r, task_w, result_r, result_w):
        try:
            os.close(fd)
        except OSError:
            pass  # (closed by the test)


def test_both_pipes_are_widened(pipes):
    task_w, result_r, _ = pipes
    _widen_pipes(_Transport(_End(task_w), _End(result_r)))
    assert fcntl.fcntl(task_w, fcntl.F_GETPIPE_SZ) == PIPE_SIZE
    assert fcntl.fcntl(result_r, fcntl.F_GETPIPE_SZ) == PIPE_SIZE


def test_the_result_pipe_is_read_in_big_pieces(pipes):
    task_w, result_r, result_w = pipes
    reader = _End(result_r)
    _widen_pipes(_Transport(_End(task_w), reader))
    payload = os.urandom(PIPE_SIZE // 2)
    assert os.write(result_w, payload) == len(payload)
    assert reader.doRead() is None
    assert reader.received == [payload]  # one read, not 64 of 8 KiB
    assert READ_SIZE >= len(payload)
    assert reader.doRead() is None  # nothing more: no data, no end
    assert reader.received == [payload]
    os.close(result_w)  # the child's end closes
    assert reader.doRead() is CONNECTION_DONE
