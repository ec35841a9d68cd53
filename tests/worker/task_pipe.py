"""A slot's task pipe without a process: what Twisted's ProcessWriter and
process transport do that the slot's writing relies on (writes, and a pull
producer registered while a large message is fed)."""

from __future__ import annotations

from typing import Any

from cwtx.worker.pipe import TASK_FD


class Writer:
    """The task pipe's writer: keeps what is written, and its producer."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


class Transport:
    """A child process's transport with only its task pipe."""

    def __init__(self) -> None:
        self.pipes = {TASK_FD: Writer()}

    def writeToChild(self, fd: int, data: bytes) -> None:
        self.pipes[fd].write(data)

    def closeStdin(self) -> None:
        pass
