"""Local clusters: a master and workers as processes on this machine
(``cw local start``); see cwtx.launch.local."""

from cwtx.launch.local import (
    START_TIMEOUT,
    LaunchError,
    LocalCluster,
    allocate,
    default_run_dir,
    start,
    stop,
)

__all__ = [
    "START_TIMEOUT",
    "LaunchError",
    "LocalCluster",
    "allocate",
    "default_run_dir",
    "start",
    "stop",
]
