"""
The scheduler on real processes: no job waits behind another while a slot
elsewhere is free, clients share the slots fairly, and resources are never
oversubscribed (twistd masters and workers over loopback).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import cwtx
from tests.conftest import gated, wait_until

pytestmark = pytest.mark.e2e


def touch_then_return(path: str, value):
    Path(path).touch()
    return value


def short_or_gated(item, tmp: str):
    """A map item: "long" waits for the gate file; others leave a file and return."""
    if item == "long":
        return gated(os.path.join(tmp, "gate"), item)
    return touch_then_return(os.path.join(tmp, f"done-{item}"), item)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """Two single-slot workers, with the default prefetch of 4."""
    with cwtx.local.allocate(2, run_dir=tmp_path_factory.mktemp("hol")) as c:
        yield c


def test_short_jobs_do_not_wait_behind_a_long_one(two_workers, tmp_path):
    cluster = two_workers
    with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
        long_job = ex.submit(gated, str(tmp_path / "gate"), "long")
        shorts = [ex.submit(touch_then_return, str(tmp_path / f"short-{i}"), i) for i in range(20)]
        try:
            # Every short job ends while the long one still runs, whichever
            # worker it landed on and whatever was prefetched behind it.
            assert [f.result(30) for f in shorts] == list(range(20))
            assert not long_job.done()
            status = cluster.status()
            assert (status["running"], status["prefetched"], status["queued"]) == (1, 0, 0)
        finally:
            (tmp_path / "gate").touch()
        assert long_job.result(30) == "long"


def test_a_map_with_a_long_item_finishes_its_short_items_meanwhile(two_workers, tmp_path):
    """The issue's case: one item that would take a minute, five of 10 ms."""
    cluster = two_workers
    items = ["long", 1, 2, 3, 4, 5]
    with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
        results = ex.map(short_or_gated, items, [str(tmp_path)] * len(items))
        try:
            wait_until(
                lambda: all((tmp_path / f"done-{i}").exists() for i in range(1, 6)),
                timeout=30,
                what="the five short items to finish while the long one runs",
            )
            assert not (tmp_path / "gate").exists()
        finally:
            (tmp_path / "gate").touch()
        assert list(results) == items


# -- fair share -------------------------------------------------------------------------


def sleep_for(seconds: float) -> None:
    import time as _time

    _time.sleep(seconds)


def started_at(_: int) -> float:
    import time as _time

    return _time.time()


JOB_LENGTH = 0.05


@pytest.fixture(scope="module")
def ten_slots(tmp_path_factory):
    with cwtx.local.allocate(2, slots=5, run_dir=tmp_path_factory.mktemp("fair")) as c:
        yield c


def test_a_second_client_gets_its_share_while_another_has_ten_thousand_queued(ten_slots):
    cluster = ten_slots
    hog = cwtx.ClusterExecutor(cluster.host, cluster.port)
    try:
        hogs = [hog.submit(sleep_for, JOB_LENGTH) for _ in range(10_000)]
        wait_until(
            lambda: (s := cluster.status())["running"] == 10 and s["queued"] > 5_000,
            what="the hog's jobs to fill every slot",
        )
        with cwtx.ClusterExecutor(cluster.host, cluster.port) as newcomer:
            submitted = time.time()
            starts = list(newcomer.map(started_at, range(10), timeout=30))
        waits = sorted(start - submitted for start in starts)
        # Each of the ten started within two job-lengths of being submitted
        # (it has half the slots: five at once as the hog's jobs end, then
        # five more as its own end).
        assert waits[-1] <= 2 * JOB_LENGTH + 0.05, waits
        assert sum(f.done() for f in hogs) < 9_000  # the hog was still queued throughout
    finally:
        hog.shutdown(wait=True, cancel_futures=True, kill_running=True)


# -- resources --------------------------------------------------------------------------


def where_and_when(seconds: float) -> dict:
    import os as _os
    import time as _time

    start = _time.monotonic()
    _time.sleep(seconds)
    return {
        "start": start,
        "end": _time.monotonic(),
        "supervisor": _os.getppid(),
        "cuda": _os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu": _os.environ.get("CWTX_RESOURCE_GPU"),
    }


def test_gpu_jobs_never_overlap_and_run_only_where_the_gpu_is(tmp_path):
    with cwtx.local.allocate(1, slots=2, run_dir=tmp_path) as cluster:
        (gpu_worker,) = cluster.add_workers(1, slots=2, worker_args=["--resources", "gpu=1"])
        gpu_pid = cluster.worker_pid(gpu_worker)
        with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
            gpu_jobs = ex.options(resources={"gpu": 1})
            runs = [
                f.result(60) for f in [gpu_jobs.submit(where_and_when, 0.05) for _ in range(10)]
            ]
            assert {r["supervisor"] for r in runs} == {gpu_pid}
            assert {(r["cuda"], r["gpu"]) for r in runs} == {("0", "0")}
            spans = sorted((r["start"], r["end"]) for r in runs)
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans

            two = ex.options(resources={"gpu": 2}).submit(where_and_when, 0)
            wait_until(lambda: cluster.status()["unschedulable"] == 1, what="the gpu=2 job to wait")
            (client,) = [c for c in cluster.status()["clients"] if c["unschedulable"]]
            assert client["unschedulable"] == [
                {
                    "jobs": 1,
                    "why": "needs gpu=2; no connected worker has that much "
                    "(the most any has: gpu=1)",
                }
            ]
            assert not two.done()
            (big,) = cluster.add_workers(1, worker_args=["--resources", "gpu=2"])
            result = two.result(60)
            assert result["supervisor"] == cluster.worker_pid(big)
            assert result["cuda"] == "0,1"
            assert cluster.status()["unschedulable"] == 0
