"""The jobs every system runs.  Importable by reference in every worker
process: the harness puts this checkout on PYTHONPATH."""

from __future__ import annotations

import time


def noop(x: int) -> int:
    return x + 1


def echo(data: bytes) -> bytes:
    return data


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def size(data: bytes) -> int:
    return len(data)
