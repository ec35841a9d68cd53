"""twistd module for ``cw-master`` (ServiceMaker wants Options and makeService)."""

from ._tap import MasterOptions as Options
from ._tap import make_master_service as makeService

__all__ = ["Options", "makeService"]
