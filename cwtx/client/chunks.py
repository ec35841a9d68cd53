"""
What ``ClusterExecutor.map(..., chunksize=N)`` sends to run: it travels by
reference, so a slot child imports this module, which needs only the
standard library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ChunkRunner:
    """Runs a function over a chunk of argument tuples (map's chunksize)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, chunk: tuple[tuple[Any, ...], ...]) -> list[Any]:
        return [self.fn(*args) for args in chunk]
