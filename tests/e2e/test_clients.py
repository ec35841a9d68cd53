"""
The blocking client APIs (ClientThread, ClusterExecutor), asyncio, host
discovery and progress, against real master and worker processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import cwtx
from cwtx.client import address as _discovery
from cwtx.client import reactor_thread as _reactor_thread
from cwtx.client.status import query_status
from cwtx.launch.procs import is_running

from ..conftest import ROOT, gated, runs, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two workers with two slots each; clients find it with no host given."""
    with cwtx.local.allocate(2, run_dir=tmp_path_factory.mktemp("clients"), slots=2) as c:
        yield c


def slow_identity(x, seconds):
    time.sleep(seconds)
    return x


# -- ClientThread -----------------------------------------------------------------


def test_client_thread_calls_back_in_its_own_thread(cluster):
    calls, threads = [], set()

    def callback(jobid, result):
        calls.append((jobid, result))
        threads.add(threading.current_thread().name)

    client = cwtx.ClientThread(callback, cluster.host, cluster.port)
    client.start()
    try:
        ids = [client.submit(cwtx.randid(), pow, 2, i) for i in range(10)]
        client.wait(timeout=60)
        assert sorted(calls) == sorted(zip(ids, [2**i for i in range(10)], strict=True))
        assert threads == {"cwtx-client-callbacks"}
    finally:
        client.stop()


def test_wait_raises_first_error_only_after_every_job_ended(cluster):
    done = []
    client = cwtx.ClientThread(lambda j, r: done.append(j), cluster.host, cluster.port)
    client.start()
    try:
        client.submit("slow", slow_identity, "slow", 1.0)
        client.submit("bad", lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            client.wait(timeout=60)
        # The seed zeroed its count on an error and returned early: the slow
        # job's callback must already have run when wait() raised.
        assert done == ["slow"]
        assert client.pending == 0
        client.wait(timeout=5)  # the error was reported once
    finally:
        client.stop()


def test_callback_errors_are_raised_by_wait(cluster):
    def callback(jobid, result):
        raise RuntimeError(f"callback failed for {jobid}")

    with pytest.raises(RuntimeError, match="callback failed for 7"):
        with cwtx.ClientThread(callback, cluster.host, cluster.port) as client:
            client.submit(7, abs, -7)


def test_client_thread_context_manager_waits(cluster):
    results = {}
    with cwtx.ClientThread(results.__setitem__, cluster.host, cluster.port) as client:
        for i in range(20):
            client.submit(i, slow_identity, i, 0.01)
    assert results == {i: i for i in range(20)}


def test_submit_before_start_and_unpicklable_args_fail_in_the_caller(cluster):
    client = cwtx.ClientThread(lambda j, r: None, cluster.host, cluster.port)
    with pytest.raises(RuntimeError, match="start"):
        client.submit(1, abs, 1)
    client.start()
    try:
        with pytest.raises(Exception, match="lock"):
            client.submit(1, abs, threading.Lock())
        assert client.pending == 0
    finally:
        client.stop()


def test_randid():
    ids = {cwtx.randid() for _ in range(1000)}
    assert len(ids) == 1000 and all(isinstance(i, int) and 0 <= i < 2**128 for i in ids)


# -- ClusterExecutor: the concurrent.futures contract ---------------------------------


def test_submit_and_result(executor):
    assert executor.submit(pow, 2, 8).result(60) == 256
    assert executor.submit(lambda *, k: k, k=3).result(60) == 3


def test_map_keeps_order_and_zips_iterables(executor):
    assert list(
        executor.map(slow_identity, range(8), [0.05 * (8 - i) for i in range(8)], timeout=60)
    ) == list(range(8))
    assert list(executor.map(pow, [2, 3, 4], [2, 2], timeout=60)) == [4, 9]
    assert list(executor.map(abs, [], timeout=60)) == []


def heavy_modules(_):
    import sys as _sys

    return sorted(m for m in _sys.modules if m.split(".")[0] in ("twisted", "txaio"))


def test_map_chunks_run_in_a_child_that_loads_no_twisted(executor):
    assert list(executor.map(heavy_modules, range(4), chunksize=2, timeout=60)) == [[]] * 4


def test_map_with_chunksize(executor):
    assert list(executor.map(lambda x: -x, range(10), chunksize=3, timeout=60)) == [
        -x for x in range(10)
    ]
    with pytest.raises(ValueError):
        executor.map(abs, [1], chunksize=0)


def test_map_exception_raised_at_iteration(executor):
    def f(x):
        if x == 3:
            raise ValueError("three")
        return x

    results = executor.map(f, range(6), timeout=60)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="three"):
        next(results)


def test_map_timeout(executor):
    results = executor.map(slow_identity, [1, 2], [5, 5], timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        list(results)
    assert time.monotonic() - started < 4


def test_map_buffersize_reads_input_lazily(executor):
    consumed = []

    def numbers():
        for i in range(50):
            consumed.append(i)
            yield i

    results = executor.map(abs, numbers(), buffersize=5, timeout=60)
    assert len(consumed) == 5  # only the first buffer was submitted
    assert next(results) == 0
    assert len(consumed) == 6
    assert list(results) == list(range(1, 50))
    with pytest.raises(ValueError):
        executor.map(abs, [1], buffersize=0)
    with pytest.raises(TypeError):
        executor.map(abs, [1], buffersize=1.5)


def test_wait_and_as_completed(executor, tmp_path):
    gate = tmp_path / "gate"
    fast = executor.submit(slow_identity, "fast", 0)
    slow = executor.submit(gated, str(gate), "slow")
    done, not_done = cf.wait([fast, slow], timeout=60, return_when=cf.FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}
    completed = cf.as_completed([slow, fast], timeout=60)
    assert next(completed) is fast
    gate.touch()
    assert next(completed) is slow and slow.result() == "slow"


def test_exception_on_future(executor):
    future = executor.submit(int, "x")
    with pytest.raises(ValueError):
        future.result(60)
    assert isinstance(future.exception(60), ValueError)
    assert "invalid literal" in future.exception().remote_traceback


def master_status(cluster) -> dict:
    return query_status(cluster.host, cluster.port)


def test_cancel_queued_future_never_runs(cluster, executor, tmp_path):
    """The job reaches the master's queue first: the cancel must travel to
    the master and drop it there."""
    gate, marker = tmp_path / "gate", tmp_path / "ran"
    # 2 workers x (2 slots + 4 prefetched): twelve jobs fill every place.
    blockers = [executor.submit(gated, str(gate), i) for i in range(12)]
    wait_until(
        lambda: (s := master_status(cluster))["running"] + s["prefetched"] == 12,
        what="the blockers to be placed",
    )
    queued = executor.submit(lambda: marker.write_text("ran"))
    wait_until(lambda: master_status(cluster)["queued"] == 1, what="the job to reach the master")
    assert queued.cancel() and queued.cancelled()
    with pytest.raises(cf.CancelledError):
        queued.result()
    wait_until(lambda: master_status(cluster)["queued"] == 0, what="the master to drop it")
    gate.touch()
    assert [b.result(60) for b in blockers] == list(range(12))
    assert executor.submit(abs, -1).result(60) == 1
    assert not marker.exists()


def test_kill_running_future_kills_the_job(cluster, executor, tmp_path):
    started = tmp_path / "runs"
    future = executor.submit(gated, str(tmp_path / "never"), None, str(started))
    wait_until(lambda: runs(started) and future.running(), what="the job to start")
    (pid,) = runs(started)
    assert not future.cancel()  # as the stdlib's: a running future is not cancelled
    assert future.kill()
    with pytest.raises(cwtx.JobCancelled):
        future.result(0)
    # Killed, not left waiting at its gate: its process goes, the slot frees.
    wait_until(lambda: not is_running(pid), timeout=30, what="the job's process to be killed")
    wait_until(lambda: master_status(cluster)["running"] == 0, what="the slot to free")
    assert executor.submit(abs, -2).result(60) == 2
    assert runs(started) == [pid]  # and it never ran again


def test_submit_after_shutdown_raises(cluster):
    ex = cwtx.ClusterExecutor(cluster.host, cluster.port)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(abs, 1)


def test_shutdown_wait_lets_jobs_finish(cluster):
    ex = cwtx.ClusterExecutor(cluster.host, cluster.port)
    futures = [ex.submit(slow_identity, i, 0.2) for i in range(6)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == list(range(6))


def test_shutdown_without_wait_still_finishes_jobs(cluster):
    ex = cwtx.ClusterExecutor(cluster.host, cluster.port)
    futures = [ex.submit(slow_identity, i, 0.2) for i in range(4)]
    ex.shutdown(wait=False)
    assert [f.result(60) for f in futures] == list(range(4))


def test_shutdown_kill_running(cluster, tmp_path):
    ex = cwtx.ClusterExecutor(cluster.host, cluster.port)
    started = tmp_path / "runs"
    futures = [ex.submit(gated, str(tmp_path / "never"), i, str(started)) for i in range(30)]
    wait_until(lambda: len(runs(started)) == 4, what="all four slots to be busy")
    ex.shutdown(wait=True, cancel_futures=True, kill_running=True)
    assert all(f.cancelled() or isinstance(f.exception(0), cwtx.JobCancelled) for f in futures)
    # At the master, queued jobs were dropped and running ones killed: the
    # gate never opens, so nothing would end otherwise.
    wait_until(
        lambda: (master_status(cluster)["running"], master_status(cluster)["queued"]) == (0, 0),
        what="the master to drop and kill every job",
    )
    pids = runs(started)
    wait_until(lambda: not any(is_running(p) for p in pids), what="the running jobs to die")
    # A job prefetched by a worker may start in the instant its slot is
    # restarted, before its own cancel arrives; no other job ever runs.
    assert 4 <= len(pids) <= 8


def test_context_manager_shuts_down(cluster):
    with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
        future = ex.submit(slow_identity, "x", 0.3)
    assert future.done() and future.result() == "x"


def test_options_view(executor):
    with pytest.raises(cwtx.JobTimeout):
        executor.options(timeout=0.5).submit(time.sleep, 20).result(60)
    with pytest.raises(cwtx.JobTimeout):
        executor.options(priority=1).options(timeout=0.5).submit(time.sleep, 20).result(60)
    assert list(executor.options(priority=3).map(abs, [-1, -2], timeout=60)) == [1, 2]
    with pytest.raises(ValueError):
        executor.options(timeout=0)


def append_line(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


def test_priority_orders_the_queue_at_the_master(tmp_path):
    with (
        cwtx.local.allocate(1, run_dir=tmp_path / "run", master_args=["--prefetch", "0"]) as c,
        cwtx.ClusterExecutor(c.host, c.port) as ex,
    ):
        gate, order = tmp_path / "gate", tmp_path / "order"
        blocker = ex.submit(gated, str(gate), "blocker")
        wait_until(lambda: master_status(c)["running"] == 1, what="the blocker to run")
        low = [ex.submit(append_line, str(order), f"low{i}") for i in range(3)]
        high = ex.options(priority=3).map(append_line, [str(order)], ["high"])
        wait_until(lambda: master_status(c)["queued"] == 4, what="four jobs queued")
        gate.touch()
        assert blocker.result(60) == "blocker" and list(high) == ["high"]
        assert [f.result(60) for f in low] == ["low0", "low1", "low2"]
        assert order.read_text().split() == ["high", "low0", "low1", "low2"]


# -- discovery, many clients, exits, unreachable masters ----------------------------------


def test_no_host_finds_the_cluster_this_process_started(cluster):
    assert _discovery.current() is not None
    with cwtx.ClusterExecutor() as ex:
        assert ex.submit(abs, -5).result(60) == 5


def test_cwtx_master_environment_variable(cluster, monkeypatch):
    monkeypatch.setattr(_discovery, "_started", [])  # as if no cluster was started here
    monkeypatch.setenv("CWTX_MASTER", f"{cluster.host}:{cluster.port}")
    assert _discovery.find_master() == (cluster.host, cluster.port)
    with cwtx.ClusterExecutor() as ex:
        assert ex.submit(abs, -6).result(60) == 6
    monkeypatch.delenv("CWTX_MASTER")
    assert _discovery.find_master() == ("localhost", cwtx.PORT)


def test_stopping_a_later_cluster_makes_the_earlier_one_current_again(cluster, tmp_path):
    assert _discovery.current() == (cluster.host, cluster.port)
    with cwtx.local.allocate(0, run_dir=tmp_path) as later:
        assert _discovery.current() == (later.host, later.port)
    assert _discovery.current() == (cluster.host, cluster.port)


def test_all_kinds_of_clients_in_one_process(cluster):
    results = {}
    ex = cwtx.ClusterExecutor(cluster.host, cluster.port)
    ct = cwtx.ClientThread(results.__setitem__, cluster.host, cluster.port)
    ct.start()
    deferred_client = _reactor_thread.blocking(cwtx.connect, cluster.host, cluster.port)
    try:
        futures = [ex.submit(pow, 2, i) for i in range(10)]
        for i in range(10):
            ct.submit(i, pow, 3, i)
        d_results = [
            _reactor_thread.call(lambda i=i: deferred_client.submit(pow, 5, i)) for i in range(10)
        ]
        ct.wait(timeout=60)
        assert [f.result(60) for f in futures] == [2**i for i in range(10)]
        assert results == {i: 3**i for i in range(10)}
        assert [f.result(60) for f in d_results] == [5**i for i in range(10)]
        assert len(query_status(cluster.host, cluster.port)["clients"]) >= 3
    finally:
        ex.shutdown()
        ct.stop()
        _reactor_thread.blocking(deferred_client.close)


CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys
    import cwtx
    host, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ex = cwtx.ClusterExecutor(host, port)
    got = list(ex.map(lambda i: (tag, i * i), range(50), buffersize=10))
    assert got == [(tag, i * i) for i in range(50)], got
    print("ok", tag)
    # No shutdown and no stop: the interpreter must still exit promptly.
    """
)


def test_several_client_processes_at_once_and_no_hang_at_exit(cluster, tmp_path):
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), cluster.host, str(cluster.port), f"p{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(3)
    ]
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == f"ok p{i}"


def test_unreachable_master_fails_clearly_after_the_timeout():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        cwtx.ClusterExecutor("127.0.0.1", port, connect_timeout=3)
    with pytest.raises(ConnectionError):
        cwtx.ClientThread(lambda j, r: None, "127.0.0.1", port, connect_timeout=3).start()


def test_silent_master_times_out(tmp_path):
    """A port that accepts but never answers the hello: fail, don't hang."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="no answer to the handshake within 2 s"):
            cwtx.ClusterExecutor("127.0.0.1", server.getsockname()[1], connect_timeout=2)

        assert time.monotonic() - started < 10
    finally:
        server.close()


# -- asyncio, progress, examples ---------------------------------------------------------


ASYNCIO_SCRIPT = textwrap.dedent(
    """
    import asyncio, operator, os, sys, time
    import cwtx, cwtx.aio

    def wait_forever(runs):
        with open(runs, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(600)

    async def until(condition, what, timeout=30):
        deadline = time.monotonic() + timeout
        while not await condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def main(host, port, runs):
        client = await cwtx.aio.connect(host, port)
        values = await asyncio.gather(*(client.submit(pow, 2, i) for i in range(10)))
        assert values == [2**i for i in range(10)], values
        assert await client.options(timeout=30).submit(abs, -4) == 4
        try:
            await client.submit(int, "x")
        except ValueError:
            pass
        else:
            raise AssertionError("no ValueError")

        slow = client.submit(wait_forever, runs)

        async def started():
            return os.path.exists(runs)

        await until(started, "the job to start")
        pid = int(open(runs).read())
        slow.cancel()
        try:
            await slow
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the job was not cancelled")

        async def killed():
            status = await client.status()
            return status["running"] == 0 and not os.path.exists(f"/proc/{pid}")

        await until(killed, "the master to kill the cancelled job")
        await client.close()

        # An asyncio Future as an argument is a dependency; name and share.
        # By host name: resolving one needs the reactor's thread pool.
        assert host == "127.0.0.1"
        named = await cwtx.aio.connect("localhost", port, name="aio-client", share=2)
        first = named.submit(pow, 2, 5)
        assert await named.submit(operator.add, first, 1) == 33
        bad = named.submit(int, "x")
        try:
            await named.submit(abs, [bad])
        except cwtx.DependencyFailed as e:
            assert isinstance(e.error, ValueError), e
        else:
            raise AssertionError("no DependencyFailed")
        shares = {c["name"]: c["share"] for c in (await named.status())["clients"]}
        assert shares["aio-client"] == 2.0, shares
        await named.close()
        print("ok")

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
    """
)


def test_asyncio_await(cluster, tmp_path):
    # In a fresh interpreter: the asyncio reactor must be installed before
    # any other, and this test process already runs the default reactor.
    script = tmp_path / "aio.py"
    script.write_text(ASYNCIO_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), cluster.host, str(cluster.port), str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_aio_refuses_another_reactor():
    import cwtx.aio

    async def attempt():
        await cwtx.aio.connect("127.0.0.1", 1, connect_timeout=1)

    _reactor_thread.reactor_thread()  # the default reactor is installed here
    with pytest.raises(RuntimeError, match="asyncio reactor"):
        asyncio.run(attempt())


def test_progress_bar(executor, capsys):
    pytest.importorskip("tqdm")
    futures = [executor.submit(abs, -i) for i in range(20)]
    assert cwtx.progress(futures) == futures
    assert all(f.done() for f in futures)
    assert list(executor.map(abs, range(5), progress=True, timeout=60)) == list(range(5))
    assert "5/5" in capsys.readouterr().err


def test_progress_without_tqdm_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"cwtx\[progress\]"):
        cwtx.progress([])


def squares_by_job(out: str) -> list[int]:
    return sorted(int(line.rsplit(" ", 1)[1]) for line in out.splitlines() if " is " in line)


def expect_square(out: str) -> None:
    submitted = [line for line in out.splitlines() if line.startswith("submitting job")]
    assert len(submitted) == 10
    assert squares_by_job(out) == sorted(i * i for i in range(10))


def expect_executor(out: str) -> None:
    lines = out.splitlines()
    assert lines[0] == "below 2001, 1161 takes the most Collatz steps: 181"
    assert sorted(lines[1:6]) == [f"3**{k} = {3**k}" for k in range(5)]
    assert lines[6] == "27 takes 111 steps (within its 1 s timeout)"


def expect_asyncio(out: str) -> None:
    assert out.splitlines() == [f"{i}^2 + 0.5 = {i * i + 0.5}" for i in range(10)]


def expect_deferred(out: str) -> None:
    lines = out.splitlines()
    assert lines[0].startswith("started a local master on port ")
    assert lines[1:11] == [f"{i}^2 + 1000 = {i * i + 1000}" for i in range(10)]
    assert lines[11] == "a failing job raised ZeroDivisionError('division by zero') on the worker"
    assert lines[12] == "done: the master has 2 workers, 11 jobs completed"


@pytest.mark.parametrize(
    ("example", "expect"),
    [
        ("square.py", expect_square),
        ("with.py", expect_square),
        ("executor.py", expect_executor),
        ("asyncio_square.py", expect_asyncio),
        ("deferred_square.py", expect_deferred),
    ],
)
def test_examples_run(example, expect, tmp_path):
    args = ["--local", "2"] if example == "deferred_square.py" else []
    run = tmp_path / "run"
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / example), *args],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=str(ROOT), CWTX_RUN_DIR=str(run)),
        )
    finally:
        # Whatever happened, stop any cluster it left behind (by pid file).
        leftovers = {p.parent for p in run.rglob("*.pid")} if run.exists() else set()
        for directory in leftovers:
            cwtx.local.stop(directory)
    assert result.returncode == 0, result.stdout + result.stderr
    expect(result.stdout)
    assert not leftovers, "the example did not stop its cluster"


# -- odd uses of the blocking APIs ---------------------------------------------------------


def test_client_thread_start_twice_and_wait_with_a_timeout(cluster, tmp_path):
    client = cwtx.ClientThread(lambda j, r: None, cluster.host, cluster.port)
    client.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            client.start()
        client.submit("held", gated, str(tmp_path / "gate"))
        with pytest.raises(TimeoutError, match="1 cwtx jobs still running"):
            client.wait(timeout=0.2)
        (tmp_path / "gate").touch()
        client.wait(timeout=60)
    finally:
        client.stop()


def test_a_blocking_call_from_the_reactor_thread_is_refused():
    def inside():
        _reactor_thread.blocking(lambda: None)

    with pytest.raises(RuntimeError, match="made from the reactor thread"):
        _reactor_thread.call(inside).result(30)


def test_a_job_the_client_cannot_take_fails_its_future(cluster):
    # The connection closed under the blocking client (as if its master
    # refused its jobs): a job handed to it fails, it is never left waiting.
    ex = cwtx.ClusterExecutor(cluster.host, cluster.port)
    _reactor_thread.blocking(ex._client.close)
    assert isinstance(ex.submit(abs, -1).exception(30), RuntimeError)
    ex.shutdown(wait=True)

    client = cwtx.ClientThread(lambda jobid, result: None, cluster.host, cluster.port)
    client.start()
    _reactor_thread.blocking(client._client.close)
    client.submit(1, abs, -1)
    with pytest.raises(RuntimeError, match="closed"):
        client.wait(30)
    client.stop()


def test_a_master_error_nobody_declared_is_a_connection_error(cluster):
    import socket

    from cwtx._secret import load_secret
    from cwtx.client.status import authenticated
    from cwtx.wire.commands import SubmitJobs
    from cwtx.wire.names import Role

    with socket.create_connection((cluster.host, cluster.port), timeout=10) as sock:
        amp = authenticated(sock, load_secret(), Role.STATUS, "odd", "the master")
        with pytest.raises(ConnectionError, match="the master refused SubmitJobs: Unhandled"):
            amp.call(SubmitJobs, jobs=[])


def test_cw_status_with_no_master_says_so():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    result = subprocess.run(
        [sys.executable, "-m", "cwtx._cli", "status", "--host", "127.0.0.1", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 1
    assert f"cw: no cwtx master answers at 127.0.0.1:{port}" in result.stderr


def test_a_blocking_client_inside_a_running_reactor_is_refused_clearly(tmp_path):
    script = tmp_path / "inside.py"
    script.write_text(
        "from twisted.internet import reactor\n"
        "import cwtx\n"
        "def inside():\n"
        "    try:\n"
        "        cwtx.ClusterExecutor('127.0.0.1', 1, connect_timeout=1)\n"
        "    except RuntimeError as e:\n"
        "        print(e)\n"
        "    reactor.stop()\n"
        "reactor.callWhenRunning(inside)\n"
        "reactor.run()\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert "the Twisted reactor already runs in this process" in result.stdout, result.stderr


def leave_a_mark(mark):
    import builtins

    previous = getattr(builtins, "cwtx_test_mark", None)
    builtins.cwtx_test_mark = mark
    return previous


@pytest.mark.parametrize("isolate", [False, True], ids=["shared", "isolated"])
def test_what_one_clients_job_leaves_in_a_child_and_isolate_clients(tmp_path, isolate):
    """A job can change its slot child for the jobs that run there later: by
    default even another client's.  --isolate-clients gives each client
    session children no other session used."""
    args = ["--isolate-clients"] if isolate else []
    with cwtx.local.allocate(1, run_dir=tmp_path, worker_args=args) as c:
        with cwtx.ClusterExecutor(c.host, c.port) as a, cwtx.ClusterExecutor(c.host, c.port) as b:
            assert a.submit(leave_a_mark, "a").result(60) is None
            assert a.submit(leave_a_mark, "a again").result(60) == "a"  # same client: kept
            seen_by_b = b.submit(leave_a_mark, "b").result(60)
    assert seen_by_b == (None if isolate else "a again")
