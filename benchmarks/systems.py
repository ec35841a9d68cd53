"""
The systems compared, behind one small interface: each starts 2 worker
processes (``--workers``) and hands out a ``concurrent.futures.Executor``.

* ``cwtx``: ``cwtx.allocate(n)`` (a twistd master and n single-slot
  workers) and a ``ClusterExecutor``;
* ``pool``: ``concurrent.futures.ProcessPoolExecutor(n)``;
* ``dask``: ``distributed.LocalCluster`` with n worker processes of one
  thread each, and its client's executor;
* ``ray`` (optional): ``ray.init(num_cpus=n)`` behind a small executor.

For the memory workload (W5) a system also runs *served*: its master and
workers in processes of their own, and a client in another process
connects to them (``connect``), so that each peak is its own.
"""

from __future__ import annotations

import collections
import concurrent.futures
import importlib.util
import json
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import procs

#: ``put(obj)``: a handle that jobs take as an argument in place of ``obj``.
Put = Callable[[Any], Any]


@dataclass
class Running:
    """A started system: its executor, and its processes where it has them."""

    executor: concurrent.futures.Executor | None = None
    #: The process that routes jobs, when it is not the client's own.
    master_pid: int | None = None
    #: The roots of the worker process trees (a worker and its children).
    worker_pids: list[int] = field(default_factory=list)
    #: What a client in another process needs to connect (JSON-able).
    address: Any = None
    #: How the system takes data once for many jobs (``put``), if it can.
    put: Put | None = None


class System(ABC):
    name: str  # for --systems
    label: str  # the table's column
    #: How ``map_buffered`` bounds the jobs in flight, for the report.
    buffered_map: str = "a loop that keeps at most buffersize jobs in flight"
    #: How the reused data is handed over once (``Running.put``), for the report.
    put_how: str = "no way: the data goes with every job"

    @abstractmethod
    def start(self, workers: int) -> Iterator[Running]:
        """A context manager: the system with ``workers`` workers, and a client."""

    def serve(self, workers: int) -> Iterator[Running]:
        """A context manager: master and workers only, for ``connect`` in
        another process (default: nothing; the client starts everything)."""
        return _nothing()

    def connect(self, address: Any, workers: int) -> Iterator[Running]:
        """A context manager, in the client process: a client of what
        ``serve`` started (default: ``start``)."""
        return self.start(workers)

    def client_side_workers(self, running: Running) -> list[int]:
        """Worker processes the client itself started (a process pool's)."""
        return []

    def map_buffered(
        self,
        ex: concurrent.futures.Executor,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        buffersize: int,
    ) -> Iterator[Any]:
        """``map`` with at most ``buffersize`` jobs in flight."""
        return bounded_map(ex, fn, items, buffersize)


def bounded_map(
    ex: concurrent.futures.Executor, fn: Callable[[Any], Any], items: Iterable[Any], limit: int
) -> Iterator[Any]:
    """Results in order, with at most ``limit`` jobs submitted and not yet
    collected (what Python 3.14's ``Executor.map(buffersize=)`` does)."""
    pending: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
    for item in items:
        if len(pending) >= limit:
            yield pending.popleft().result()
        pending.append(ex.submit(fn, item))
    while pending:
        yield pending.popleft().result()


@contextmanager
def _nothing() -> Iterator[Running]:
    yield Running()


class Cwtx(System):
    name = "cwtx"
    label = "cwtx"
    buffered_map = "ClusterExecutor.map(buffersize=)"
    put_how = "ClusterExecutor.put"

    @contextmanager
    def serve(self, workers: int) -> Iterator[Running]:  # type: ignore[override]
        import cwtx

        with cwtx.allocate(workers) as cluster:
            yield cluster_processes(cluster)

    @contextmanager
    def start(self, workers: int) -> Iterator[Running]:  # type: ignore[override]
        with self.serve(workers) as served, self.connect(served.address, workers) as client:
            served.executor, served.put = client.executor, client.put
            yield served

    @contextmanager
    def connect(self, address: Any, workers: int) -> Iterator[Running]:  # type: ignore[override]
        import cwtx

        host, port = address
        with cwtx.ClusterExecutor(host, port) as ex:
            yield Running(ex, put=ex.put)

    def map_buffered(self, ex: Any, fn: Any, items: Iterable[Any], buffersize: int) -> Any:
        return ex.map(fn, items, buffersize=buffersize)


def cluster_processes(cluster: Any) -> Running:
    """A cwtx local cluster's master and workers, by their pid files."""
    run = Path(cluster.run_dir)
    workers = [int(p.read_text()) for p in sorted(run.glob("worker-*.pid"))]
    master = int((run / "master.pid").read_text())
    return Running(None, master, workers, [cluster.host, cluster.port])


class Pool(System):
    name = "pool"
    label = "ProcessPool"

    @contextmanager
    def start(self, workers: int) -> Iterator[Running]:  # type: ignore[override]
        with concurrent.futures.ProcessPoolExecutor(workers) as ex:
            running = Running(ex)
            yield running

    def client_side_workers(self, running: Running) -> list[int]:
        processes = getattr(running.executor, "_processes", None) or {}
        return list(processes)


class Dask(System):
    name = "dask"
    label = "dask"
    put_how = "Client.scatter"

    @contextmanager
    def start(self, workers: int) -> Iterator[Running]:  # type: ignore[override]
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield Running(executor(client), put=client.scatter)

    @contextmanager
    def serve(self, workers: int) -> Iterator[Running]:  # type: ignore[override]
        """A LocalCluster in a helper process (benchmarks/dask_cluster.py):
        the scheduler is that process, the workers its children."""
        helper = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.dask_cluster", str(workers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert helper.stdout is not None
            address = json.loads(helper.stdout.readline())
            kids = [p for p in procs.tree(helper.pid) if p != helper.pid]
            yield Running(None, helper.pid, kids, address)
        finally:
            assert helper.stdin is not None
            helper.stdin.close()  # it stops when its stdin closes
            helper.wait(60)

    @contextmanager
    def connect(self, address: Any, workers: int) -> Iterator[Running]:  # type: ignore[override]
        from distributed import Client

        with Client(address) as client:
            yield Running(executor(client), put=client.scatter)


def executor(client: Any) -> concurrent.futures.Executor:
    """Dask's executor, each submit a task of its own: by default
    (``pure=True``) Dask runs equal calls (W3's, W4's, the reused data's)
    once and shares the result."""
    return client.get_executor(pure=False)


class Ray(System):
    name = "ray"
    label = "ray"
    put_how = "ray.put"
    # Not exercised where ray is not installed (it is optional).

    @contextmanager
    def start(self, workers: int) -> Iterator[Running]:  # type: ignore[override]
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            yield Running(RayExecutor(), put=ray.put)
        finally:
            ray.shutdown()


class RayExecutor(concurrent.futures.Executor):
    """Ray tasks as concurrent futures (``ObjectRef.future()``)."""

    def __init__(self) -> None:
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        import ray

        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = ray.remote(fn)
        return remote.remote(*args, **kwargs).future()


ALL: list[System] = [Cwtx(), Pool(), Dask(), Ray()]
#: The module each optional system needs, and how to install it.
NEEDS = {"dask": ("distributed", "pip install '.[bench]'"), "ray": ("ray", "pip install ray")}


def available(names: list[str] | None) -> list[System]:
    """The systems asked for (default: all), less those not installed (said so)."""
    chosen = []
    for system in ALL:
        if names is not None and system.name not in names:
            continue
        module, install = NEEDS.get(system.name, ("", ""))
        if module and importlib.util.find_spec(module) is None:
            print(f"({system.name}: skipped, {module} is not installed: {install})")
            continue
        chosen.append(system)
    return chosen


def by_name(name: str) -> System:
    return next(s for s in ALL if s.name == name)
