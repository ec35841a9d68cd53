"""SLURM clusters: a master and workers as SLURM jobs (``cw slurm start``);
see cwtx.launch.slurm and docs/slurm.md."""

from cwtx.launch.slurm import (
    DEFAULT_NAME,
    START_TIMEOUT,
    LaunchError,
    SlurmCluster,
    add,
    allocate,
    cluster_dir,
    clusters,
    default_state_dir,
    master_host,
    start,
    status,
    stop,
    which_cluster,
)

__all__ = [
    "DEFAULT_NAME",
    "START_TIMEOUT",
    "LaunchError",
    "SlurmCluster",
    "add",
    "allocate",
    "cluster_dir",
    "clusters",
    "default_state_dir",
    "master_host",
    "start",
    "status",
    "stop",
    "which_cluster",
]
