"""twistd module for ``cw-worker`` (ServiceMaker wants Options and makeService)."""

from ._tap import WorkerOptions as Options
from ._tap import make_worker_service as makeService

__all__ = ["Options", "makeService"]
