"""
ClusterExecutor's Futures against the concurrent.futures contract, as
CPython's Lib/test/test_concurrent_futures states it (running(), cancel(),
map's order, timeout and references, wait/as_completed, shutdown, the
interpreter's exit), and where cwtx deliberately differs: kill(),
dependencies, a with-block left through an exception or Ctrl-C.  On real
master and worker processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import operator
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

import cwtx
from cwtx.client.status import query_status
from cwtx.launch.procs import is_running

from ..conftest import ROOT, gated, runs, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two workers with one slot each, no prefetching: a job the master has
    not started is in its queue, where a cancel always reaches it."""
    run_dir = tmp_path_factory.mktemp("futures")
    with cwtx.local.allocate(2, run_dir=run_dir, master_args=["--prefetch", "0"]) as c:
        yield c


def status(cluster) -> dict:
    return query_status(cluster.host, cluster.port)


def idle(cluster) -> bool:
    s = status(cluster)
    return (s["queued"], s["running"], s["prefetched"]) == (0, 0, 0)


def slow_identity(x, seconds):
    time.sleep(seconds)
    return x


def fill_the_slots(executor, gate, started, n=2):
    """``n`` gated jobs, each running (their futures say so) on a slot."""
    futures = [executor.submit(gated, str(gate), f"held{i}", str(started)) for i in range(n)]
    wait_until(lambda: all(f.running() for f in futures), what="the held jobs to run")
    return futures


# -- running() and cancel() -------------------------------------------------------------------


def test_a_future_is_pending_then_running_then_finished(executor, tmp_path):
    gate, started = tmp_path / "gate", tmp_path / "runs"
    held = fill_the_slots(executor, gate, started)
    queued = executor.submit(abs, -1)
    assert not queued.running() and not queued.done()
    for future in held:
        assert future.running() and not future.done() and not future.cancelled()
        assert "state=running" in repr(future)
    gate.touch()
    assert [f.result(60) for f in held] == ["held0", "held1"]
    assert queued.result(60) == 1
    assert not any(f.running() for f in [*held, queued])


def test_cancel_returns_false_for_a_running_job_which_then_finishes(executor, tmp_path):
    gate, started = tmp_path / "gate", tmp_path / "runs"
    held = fill_the_slots(executor, gate, started)
    assert held[0].cancel() is False
    assert held[0].running() and not held[0].cancelled()
    gate.touch()
    assert [f.result(60) for f in held] == ["held0", "held1"]
    assert held[0].cancel() is False  # finished: still not cancellable
    # Each ran once, and was never killed.  (Counted once both ended: a job
    # is reported started as its slot gets it, before its first line runs.)
    assert len(runs(started)) == 2


def test_cancel_a_queued_job_wakes_wait_and_as_completed(cluster, executor, tmp_path):
    """concurrent.futures.wait and as_completed see a cancelled Future only
    once set_running_or_notify_cancel() was called on it."""
    gate, started, marker = tmp_path / "gate", tmp_path / "runs", tmp_path / "ran"
    fill_the_slots(executor, gate, started)
    queued = executor.submit(lambda: marker.write_text("ran"))
    wait_until(lambda: status(cluster)["queued"] == 1, what="the job to reach the queue")
    waited = {}

    def wait_for_it():
        waited["wait"] = cf.wait([queued], timeout=30)
        waited["as_completed"] = list(cf.as_completed([queued], timeout=30))

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    assert queued.cancel() and queued.cancelled()
    waiter.join(20)
    assert not waiter.is_alive(), "wait() never saw the cancelled future"
    assert waited["wait"].done == {queued} and waited["as_completed"] == [queued]
    with pytest.raises(cf.CancelledError):
        queued.result(0)
    wait_until(lambda: status(cluster)["queued"] == 0, what="the master to drop it")
    gate.touch()
    wait_until(lambda: idle(cluster), what="the held jobs to end")
    assert not marker.exists()


def test_kill_a_running_job(cluster, executor, tmp_path):
    started = tmp_path / "runs"
    future = executor.submit(gated, str(tmp_path / "never"), None, str(started))
    wait_until(future.running, what="the job to run")
    wait_until(lambda: runs(started), what="the job's process to start")
    (pid,) = runs(started)
    assert future.cancel() is False
    assert future.kill() is True
    with pytest.raises(cwtx.JobCancelled):
        future.result(0)
    assert not future.cancelled() and isinstance(future.exception(0), cwtx.JobCancelled)
    wait_until(lambda: not is_running(pid), what="the job's process to be killed")
    wait_until(lambda: idle(cluster), what="the slot to free")
    assert executor.submit(abs, -2).result(60) == 2
    assert runs(started) == [pid]  # and it never ran again
    assert future.kill() is False  # it has ended


def test_kill_a_queued_job_cancels_it(cluster, executor, tmp_path):
    gate, started, marker = tmp_path / "gate", tmp_path / "runs", tmp_path / "ran"
    fill_the_slots(executor, gate, started)
    queued = executor.submit(lambda: marker.write_text("ran"))
    wait_until(lambda: status(cluster)["queued"] == 1, what="the job to reach the queue")
    assert queued.kill() is True and queued.cancelled()
    wait_until(lambda: status(cluster)["queued"] == 0, what="the master to drop it")
    gate.touch()
    wait_until(lambda: idle(cluster), what="the held jobs to end")
    assert not marker.exists()


def test_shutdown_cancel_futures_cancels_only_what_has_not_started(cluster, tmp_path):
    gate, started = tmp_path / "gate", tmp_path / "runs"
    ex = cwtx.ClusterExecutor(cluster.host, cluster.port)
    try:
        futures = [ex.submit(gated, str(gate), i, str(started)) for i in range(30)]
        wait_until(lambda: sum(f.running() for f in futures) == 2, what="both slots to run")
        running = [f for f in futures if f.running()]
        ex.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in futures if f not in running)
        assert not any(f.cancelled() for f in running)
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(abs, 1)
        wait_until(lambda: status(cluster)["queued"] == 0, what="the master to drop the queue")
        gate.touch()
        ex.shutdown(wait=True)
        assert sorted(f.result(0) for f in running) == sorted(futures.index(f) for f in running)
        assert len(runs(started)) == 2  # no cancelled job ever ran
    finally:
        ex.shutdown(wait=True, kill_running=True)


def test_shutdown_wait_returns_once_the_done_callbacks_ran(cluster):
    """As the stdlib's, whose worker threads run the callbacks it joins."""
    ex = cwtx.ClusterExecutor(cluster.host, cluster.port)
    called = []

    def slow_callback(future):
        time.sleep(0.5)
        called.append(future.result())

    ex.submit(abs, -1).add_done_callback(slow_callback)
    ex.shutdown(wait=True)
    assert called == [1]


def test_shutdown_after_a_quick_cancel_does_not_hang(executor):
    """CPython's gh-94440: a future cancelled just after submit."""
    assert executor.submit(int).result(60) == 0
    executor.submit(int).cancel()
    started = time.monotonic()
    executor.shutdown(wait=True)
    assert time.monotonic() - started < 10


# -- map --------------------------------------------------------------------------------------


def test_map_timeout_yields_what_ended_in_time(executor):
    """CPython's test_map_timeout (its 6 s job here takes 30)."""
    results = []
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        for value in executor.map(slow_identity, ["a", "b", "c"], [0, 0, 30], timeout=5):
            results.append(value)
    assert results == ["a", "b"]
    assert time.monotonic() - started < 15


class Dummy:
    def method(self):
        return None


def make_dummy(_):
    return Dummy()


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_keeps_no_reference_to_a_yielded_result(executor, chunksize):
    """CPython's test_free_reference (issue #14406)."""
    for obj in executor.map(make_dummy, range(10), chunksize=chunksize, timeout=60):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None


def test_map_with_a_progress_bar_keeps_no_reference_either(executor):
    pytest.importorskip("tqdm")
    for obj in executor.map(make_dummy, range(5), timeout=60, progress=True):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None


def test_a_finished_future_is_all_that_holds_its_result(executor):
    future = executor.submit(make_dummy, 0)
    ref = weakref.ref(future.result(60))
    gc.collect()
    assert ref() is not None
    del future
    gc.collect()
    assert ref() is None


def test_no_stale_references_to_what_was_submitted(executor):
    """CPython's test_no_stale_references (issue #16284)."""
    obj = Dummy()
    collected = threading.Event()
    ref = weakref.ref(obj, lambda _: collected.set())
    future = executor.submit(obj.method)
    del obj
    gc.collect()
    assert collected.wait(10) and ref() is None
    assert future.result(60) is None


def test_progress_without_tqdm_fails_before_any_job_is_sent(cluster, executor, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    consumed = []

    def numbers():
        for i in range(5):
            consumed.append(i)
            yield i

    with pytest.raises(ImportError, match=r"pip install 'cwtx\[progress\]'"):
        executor.map(abs, numbers(), progress=True)
    assert consumed == [] and not executor._pending
    assert status(cluster)["queued"] == 0


# -- wait and as_completed across executors ---------------------------------------------------


def test_wait_and_as_completed_mix_cwtx_and_thread_pool_futures(executor, tmp_path):
    gate = tmp_path / "gate"
    release = threading.Event()
    with cf.ThreadPoolExecutor(1) as pool:
        local = pool.submit(lambda: release.wait(60) and "local")
        remote = executor.submit(slow_identity, "remote", 0)
        held = executor.submit(gated, str(gate), "held")
        done, not_done = cf.wait([local, remote, held], timeout=60, return_when=cf.FIRST_COMPLETED)
        assert done == {remote} and not_done == {local, held}
        order = cf.as_completed([local, held, remote], timeout=60)
        assert next(order) is remote
        release.set()
        assert next(order) is local
        gate.touch()
        assert next(order) is held
        done, not_done = cf.wait([local, remote, held], timeout=60)
        assert not not_done
        assert [f.result() for f in (local, remote, held)] == ["local", "remote", "held"]


# -- a with-block left through an exception ---------------------------------------------------


def test_an_exception_cancels_the_queue_and_waits_for_running_jobs(cluster, tmp_path):
    gate, started = tmp_path / "gate", tmp_path / "runs"
    queued = []

    def open_the_gate_once_the_queue_is_cancelled():
        try:
            wait_until(lambda: queued and all(f.cancelled() for f in queued), what="cancels")
            wait_until(lambda: status(cluster)["queued"] == 0, what="the master to drop them")
        finally:
            gate.touch()  # whatever happened: the block ends, the asserts below tell

    opener = threading.Thread(target=open_the_gate_once_the_queue_is_cancelled)
    with pytest.raises(ValueError, match="in the block"):
        with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
            held = fill_the_slots(ex, gate, started)
            queued.extend(ex.submit(gated, str(gate), i, str(started)) for i in range(20))
            opener.start()
            raise ValueError("in the block")
    opener.join(60)
    assert [f.result(0) for f in held] == ["held0", "held1"]  # waited for, not killed
    assert all(f.cancelled() for f in queued)
    assert len(runs(started)) == 2
    wait_until(lambda: idle(cluster), what="the master to be idle")


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import cwtx

    def held(runs, i):
        import os, time
        with open(runs, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(600)

    host, port, runs, where = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if where == "at exit":  # no with-block: the interpreter's exit waits
        ex = cwtx.ClusterExecutor(host, port)
        futures = [ex.submit(held, runs, i) for i in range(40)]
        print("submitted", flush=True)
    else:
        with cwtx.ClusterExecutor(host, port) as ex:
            futures = [ex.submit(held, runs, i) for i in range(40)]
            print("submitted", flush=True)
            if where == "in the block":
                for f in futures:
                    f.result()
            # else: Ctrl-C comes while leaving the block waits for the jobs
    """
)


@pytest.mark.parametrize("where", ["in the block", "leaving the block", "at exit"])
def test_ctrl_c_kills_the_jobs_and_exits_promptly(cluster, tmp_path, where):
    script, started = tmp_path / "ctrl_c.py", tmp_path / "runs"
    script.write_text(CTRL_C_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), cluster.host, str(cluster.port), str(started), where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert proc.stdout.readline().strip() == "submitted"
        wait_until(lambda: len(runs(started)) == 2, what="both slots to run a job")
        wait_until(lambda: status(cluster)["queued"] == 38, what="the rest to be queued")
        interrupted = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - interrupted < 10, "the script did not exit promptly"
        assert "KeyboardInterrupt" in err
        if where != "at exit":
            assert proc.returncode != 0  # the KeyboardInterrupt went on up
        pids = runs(started)
        wait_until(lambda: not any(is_running(p) for p in pids), what="the jobs to be killed")
        wait_until(lambda: idle(cluster), what="the master to drop the queue")
        assert len(runs(started)) == 2  # no queued job ever ran
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- the interpreter exits --------------------------------------------------------------------


EXIT_SCRIPT = textwrap.dedent(
    """
    import atexit, sys, time
    import cwtx

    host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def write(name, text):
        with open(f"{out}.{name}", "w") as f:
            f.write(text)

    @atexit.register
    def submit_too_late():  # runs after cwtx's exit hook, as in CPython's test
        try:
            ex.submit(id, None)
        except RuntimeError as e:
            write("late", str(e))

    def slow(x):
        import time
        time.sleep(1.5)
        return x

    ex = cwtx.ClusterExecutor(host, port)
    ex.submit(slow, "apple").add_done_callback(lambda f: write("future", f.result()))
    first = ex.submit(slow, 3)
    ex.submit(pow, first, 2).add_done_callback(lambda f: write("dependent", str(f.result())))

    other = cwtx.ClusterExecutor(host, port)
    other.submit(slow, "pear").add_done_callback(lambda f: write("no_wait", f.result()))
    other.shutdown(wait=False)  # CPython's gh-83386

    thread = cwtx.ClientThread(lambda jobid, result: write(jobid, result), host, port)
    thread.start()
    thread.submit("client_thread", slow, "plum")
    print("end of script", flush=True)
    # No wait, no shutdown, no stop: every job still ends, its callback runs.
    """
)


def test_jobs_end_and_callbacks_run_before_the_interpreter_exits(cluster, tmp_path):
    script, out = tmp_path / "exits.py", tmp_path / "out"
    script.write_text(EXIT_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), cluster.host, str(cluster.port), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 0 and result.stdout == "end of script\n", result.stderr
    assert not result.stderr
    written = {p.suffix[1:]: p.read_text() for p in tmp_path.glob("out.*")}
    assert written == {
        "future": "apple",
        "dependent": "9",
        "no_wait": "pear",
        "client_thread": "plum",
        "late": "cannot schedule new futures after interpreter shutdown",
    }


def test_a_client_thread_error_at_exit_is_printed_not_lost(cluster, tmp_path):
    script = tmp_path / "fails.py"
    script.write_text(
        "import sys, cwtx\n"
        "thread = cwtx.ClientThread(print, sys.argv[1], int(sys.argv[2]))\n"
        "thread.start()\n"
        "thread.submit('bad', int, 'x')\n"
    )
    result = subprocess.run(
        [sys.executable, str(script), cluster.host, str(cluster.port)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert "cwtx: a ClientThread job or callback failed at exit" in result.stderr
    assert "ValueError: invalid literal" in result.stderr


FORK_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import cwtx

    def slow(x):
        import time
        time.sleep(1)
        return x

    ex = cwtx.ClusterExecutor(sys.argv[1], int(sys.argv[2]))
    future = ex.submit(slow, "parent's")
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # the child ends normally: its exit must not wait for that job
    deadline = time.monotonic() + 20
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            print("the child hung at exit")
            break
        time.sleep(0.02)
    print(future.result(60))
    """
)


def test_a_forked_child_does_not_wait_for_its_parents_jobs(cluster, tmp_path):
    script = tmp_path / "fork.py"
    script.write_text(FORK_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), cluster.host, str(cluster.port)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "parent's\n"


# -- dependencies -----------------------------------------------------------------------------


def record(path, value):
    """A job that leaves a mark that it ran."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


def test_a_future_argument_is_replaced_by_its_result(executor):
    a = executor.submit(pow, 2, 10)
    b = executor.submit(operator.add, a, 1)  # positional
    c = executor.submit(dict, key=b)  # keyword
    d = executor.submit(sum, [a, b, 5])  # in a list
    e = executor.submit(tuple, (a, b))  # in a tuple
    f = executor.submit(dict, {"x": a, "y": 2})  # in a dict
    assert b.result(60) == 1025
    assert c.result(60) == {"key": 1025}
    assert d.result(60) == 2054
    assert e.result(60) == (1024, 1025)
    assert f.result(60) == {"x": 1024, "y": 2}


def test_a_future_two_levels_deep_is_a_clear_type_error(executor):
    a = executor.submit(pow, 2, 10)
    with pytest.raises(TypeError, match="replaced by its result"):
        executor.submit(dict, {"y": [a]})
    with pytest.raises(TypeError, match="replaced by its result"):
        executor.submit(len, [[a]])
    assert not any(f is not a for f in executor._pending)


def test_map_over_futures_and_a_chain(executor):
    firsts = [executor.submit(pow, 2, i) for i in range(5)]
    assert list(executor.map(operator.neg, firsts, timeout=60)) == [-(2**i) for i in range(5)]
    future = executor.submit(abs, -1)
    for _ in range(5):
        future = executor.submit(operator.mul, future, 2)
    assert future.result(60) == 32


def test_a_dependent_job_waits_at_the_client_until_its_dependency_ends(cluster, executor, tmp_path):
    gate, marker = tmp_path / "gate", tmp_path / "dependent"
    first = executor.submit(gated, str(gate), "first")
    second = executor.submit(record, str(marker), first)
    wait_until(first.running, what="the first job to run")
    assert status(cluster)["queued"] == 0 and not second.running()  # not sent yet
    gate.touch()
    assert second.result(60) == "first"
    assert marker.read_text() == "first\n"


def test_a_failed_dependency_fails_the_job_unsent(cluster, executor, tmp_path):
    marker = tmp_path / "dependent"
    bad = executor.submit(int, "x")
    dependent = executor.submit(record, str(marker), bad)
    with pytest.raises(cwtx.DependencyFailed, match="invalid literal") as info:
        dependent.result(60)
    assert isinstance(info.value.error, ValueError) and info.value.__cause__ is info.value.error
    assert isinstance(info.value, cwtx.CwtxError)
    # A dependency of a dependency: the chain says what failed first.
    further = executor.submit(record, str(marker), dependent)
    assert isinstance(further.exception(60).error, cwtx.DependencyFailed)
    assert not marker.exists()


def test_a_cancelled_or_killed_dependency_fails_the_job(cluster, executor, tmp_path):
    gate, started, marker = tmp_path / "gate", tmp_path / "runs", tmp_path / "dependent"
    held = fill_the_slots(executor, gate, started)
    queued = executor.submit(abs, -1)
    on_queued = executor.submit(record, str(marker), queued)
    on_held = executor.submit(record, str(marker), held[0])
    assert queued.cancel()
    assert isinstance(on_queued.exception(60).error, cf.CancelledError)
    assert held[0].kill()
    assert isinstance(on_held.exception(60).error, cwtx.JobCancelled)
    gate.touch()
    assert not marker.exists()


def test_cancelling_a_waiting_dependent_job_means_it_is_never_sent(executor, tmp_path):
    gate, marker = tmp_path / "gate", tmp_path / "dependent"
    first = executor.submit(gated, str(gate), "first")
    dependent = executor.submit(record, str(marker), first)
    assert dependent.cancel() and dependent.cancelled()
    gate.touch()
    assert first.result(60) == "first"
    assert executor.submit(abs, -3).result(60) == 3  # sent after: the queue has moved on
    assert not marker.exists()


def test_futures_of_another_executor_and_of_a_thread_pool_are_dependencies(cluster, executor):
    with (
        cwtx.ClusterExecutor(cluster.host, cluster.port) as other,
        cf.ThreadPoolExecutor(1) as pool,
    ):
        theirs = other.submit(pow, 3, 2)
        local = pool.submit(lambda: 7)
        assert executor.submit(operator.add, theirs, local).result(60) == 16


def test_a_dependency_result_that_cannot_be_pickled_fails_the_job(executor):
    with cf.ThreadPoolExecutor(1) as pool:
        lock = pool.submit(threading.Lock)
        with pytest.raises(TypeError, match="lock"):
            executor.submit(id, lock).result(60)


def test_unpicklable_arguments_beside_a_dependency_fail_at_submit(executor):
    a = executor.submit(abs, -1)
    with pytest.raises(TypeError, match="lock"):
        executor.submit(operator.add, a, threading.Lock())


# -- name and share ---------------------------------------------------------------------------


def test_name_and_share_reach_the_master(cluster):
    thread = cwtx.ClientThread(lambda j, r: None, cluster.host, cluster.port, name="bob", share=3)
    thread.start()
    try:
        with cwtx.ClusterExecutor(cluster.host, cluster.port, name="alice", share=2.5) as ex:
            assert ex.submit(abs, -1).result(60) == 1
            clients = {c["name"]: c for c in status(cluster)["clients"]}
            assert clients["alice"]["share"] == 2.5
            assert clients["bob"]["share"] == 3
            with pytest.raises(TypeError, match="share is per client"):
                ex.options(share=2)
            with pytest.raises(TypeError, match="name is per client"):
                ex.options(timeout=5).options(name="x")
    finally:
        thread.stop()
    with pytest.raises(ValueError, match="share"):
        cwtx.ClusterExecutor(cluster.host, cluster.port, share=0)
