"""
End to end: real ``twistd -n cw-master`` and ``twistd -n cw-worker``
processes on loopback, ephemeral ports, the Deferred client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cwtx
from cwtx.client.status import query_status
from cwtx.launch.procs import is_running, terminate, twistd_argv

from ..conftest import ROOT, SyncClient, blocking, kill_and_restart_master

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def test_closure_with_captured_values(client):
    base = 7

    def f(x):
        return x * base

    assert [client.submit(f, i).result(60) for i in range(5)] == [0, 7, 14, 21, 28]


def test_lambda_args_and_kwargs(client):
    assert client.run(lambda a, b=0, *, c: (a, b, c), 1, b=2, c=3) == (1, 2, 3)


def test_changed_closure_is_resent(client):
    """The function cache is keyed by content, never by identity."""
    values = []
    for n in (1, 2, 3):
        values.append(client.run(lambda: n))  # noqa: B023 (late binding is the point)
    assert values == [1, 2, 3]


def test_exception_keeps_its_type_and_remote_traceback(client):
    def boom():
        raise KeyError("missing-thing")

    with pytest.raises(KeyError) as info:
        client.run(boom)
    assert isinstance(info.value.__cause__, cwtx.RemoteTraceback)
    assert "missing-thing" in info.value.remote_traceback
    assert "in boom" in info.value.remote_traceback


def test_exception_that_does_not_unpickle_is_remote_error(client):
    def boom():
        class Local(Exception):
            def __reduce__(self):
                raise TypeError("no pickling me")

        raise Local("odd")

    with pytest.raises(cwtx.RemoteError) as info:
        client.run(boom)
    assert info.value.type_name.endswith("Local")
    assert "odd" in info.value.message
    assert "in boom" in info.value.remote_traceback


def test_unpicklable_result_ends_only_that_job(client):
    import threading

    with pytest.raises(cwtx.RemoteError) as info:
        client.run(threading.Lock)
    assert info.value.type_name == "TypeError"
    assert "the result (lock) could not be pickled" in info.value.message
    assert client.run(lambda: "still serving") == "still serving"


def test_function_that_cannot_be_unpickled_on_the_worker(client, tmp_path):
    """A module only the client can import: that one job fails clearly."""
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    private.mkdir()
    (shared / "cwtx_shared_mod.py").write_text("def f():\n    return 42\n")
    (private / "cwtx_private_mod.py").write_text("def f():\n    return 43\n")
    sys.path[:0] = [str(shared), str(private)]
    try:
        import cwtx_private_mod
        import cwtx_shared_mod
    finally:
        sys.path.remove(str(private))
    try:
        # On the client's sys.path, so the worker imports it: works.
        assert client.run(cwtx_shared_mod.f) == 42
        # No longer on the client's sys.path: the worker cannot import it.
        with pytest.raises(cwtx.RemoteError) as info:
            client.run(cwtx_private_mod.f)
        assert info.value.type_name == "ModuleNotFoundError"
        assert "function could not be unpickled on the worker" in info.value.message
        assert "cwtx_private_mod" in info.value.message
        assert client.run(lambda: "alive") == "alive"
    finally:
        sys.path.remove(str(shared))
        sys.modules.pop("cwtx_shared_mod", None)
        sys.modules.pop("cwtx_private_mod", None)


def test_job_runs_in_client_cwd_and_restores_it(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert client.run(os.getcwd) == str(tmp_path)
    (tmp_path / "data.txt").write_text("hello")
    assert client.run(lambda: open("data.txt").read()) == "hello"


def test_job_sees_client_sys_path_in_front_and_restored(client, tmp_path, monkeypatch):
    marker = str(tmp_path / "extra-entry")
    monkeypatch.syspath_prepend(marker)
    assert client.run(lambda: sys.path[0]) == marker
    # Restored afterwards: a later job with another sys.path does not see it.
    monkeypatch.undo()
    assert marker not in client.run(lambda: list(sys.path))


def test_100_mib_argument(client):
    data = os.urandom(MiB) * 100
    import hashlib

    expected = hashlib.sha256(data).hexdigest()
    assert client.run(lambda b: hashlib.sha256(b).hexdigest(), data, timeout=120) == expected


def test_100_mib_result(client):
    result = client.run(lambda: b"\x01\x02" * (50 * MiB), timeout=120)
    assert len(result) == 100 * MiB
    assert result[:4] == b"\x01\x02\x01\x02" and result[-2:] == b"\x01\x02"


def test_two_clients_at_once(cluster):
    a, b = SyncClient(cluster), SyncClient(cluster)
    try:
        fa = [a.submit(lambda i: ("a", i), i) for i in range(20)]
        fb = [b.submit(lambda i: ("b", i), i) for i in range(20)]
        assert [f.result(60) for f in fa] == [("a", i) for i in range(20)]
        assert [f.result(60) for f in fb] == [("b", i) for i in range(20)]
    finally:
        a.close()
        b.close()


def test_prints_from_jobs_do_not_corrupt_the_protocol(client):
    def noisy():
        print("x" * 100_000)
        sys.stdout.flush()
        os.write(1, b"\0\0\0\x05raw bytes on fd 1\n")
        return "fine"

    assert client.run(noisy) == "fine"


def test_worker_that_joins_after_jobs_were_queued(tmp_path):
    with cwtx.local.allocate(0, run_dir=tmp_path) as empty:
        c = SyncClient(empty)
        try:
            futures = [c.submit(lambda i: i + 1, i) for i in range(5)]
            deadline = time.monotonic() + 30
            while query_status(empty.host, empty.port)["queued"] < 5:
                assert time.monotonic() < deadline, "jobs never reached the master"
                time.sleep(0.02)
            assert not any(f.done() for f in futures)
            empty.add_workers(1)
            assert [f.result(60) for f in futures] == [1, 2, 3, 4, 5]
        finally:
            c.close()


def test_cancelled_queued_job_never_runs(tmp_path):
    marker = tmp_path / "ran"
    with cwtx.local.allocate(0, run_dir=tmp_path / "run") as empty:
        c = SyncClient(empty)
        try:
            holder = {}

            def submit():
                holder["d"] = c.client.submit(lambda: marker.write_text("ran"))

            blocking(submit)
            deadline = time.monotonic() + 30
            while query_status(empty.host, empty.port)["queued"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            blocking(lambda: holder["d"].cancel())
            failures = []
            blocking(lambda: holder["d"].addErrback(failures.append))
            assert failures and failures[0].check(cwtx.JobCancelled)
            deadline = time.monotonic() + 30
            while query_status(empty.host, empty.port)["queued"] > 0:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            empty.add_workers(1)
            # A job submitted after the cancel runs, proving the worker is up
            # and took what was queued: the cancelled job was not.
            assert c.run(lambda: "after") == "after"
            assert not marker.exists()
        finally:
            c.close()


def test_twistd_plugins_are_listed():
    out = subprocess.run(
        [*twistd_argv(), "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "cw-master" in out and "cw-worker" in out


def test_the_readmes_master_and_worker_from_one_directory(tmp_path):
    """The commands the README gives (``python -m cwtx.master``, then
    workers), run in one directory, with an ephemeral port: no pid file
    clashes, as two plain ``twistd -n`` there would."""
    port_file = tmp_path / "port"
    master = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cwtx.master",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    worker = None
    codes = {}
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert master.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        port = int(port_file.read_text())
        worker = subprocess.Popen(
            [sys.executable, "-m", "cwtx.worker", "--master", f"127.0.0.1:{port}", "--slots", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        while not query_status("127.0.0.1", port)["workers"]:
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert query_status("127.0.0.1", port)["slots"] == 2
        assert not (tmp_path / "twistd.pid").exists()
        cluster = cwtx.local.LocalCluster("127.0.0.1", port, tmp_path, 1)
        c = SyncClient(cluster)
        try:
            assert c.run(pow, 3, 4) == 81
        finally:
            c.close()
        # A clean stop (SIGTERM, as systemd or `cw local stop` send) exits 0.
        for name, proc in (("worker", worker), ("master", master)):
            proc.send_signal(signal.SIGTERM)
            codes[name] = proc.wait(60)
    finally:
        for proc in (worker, master):
            if proc is not None and proc.poll() is None:
                terminate(proc.pid)
                proc.wait(10)
    assert codes == {"worker": 0, "master": 0}


def test_cw_local_start_and_stop(tmp_path):
    env = dict(os.environ, CWTX_RUN_DIR=str(tmp_path))
    cw = [sys.executable, "-m", "cwtx._cli"]
    started = subprocess.run(
        [*cw, "local", "start", "-n", "2", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    try:
        assert started.returncode == 0, started.stderr
        port = int((tmp_path / "master.port").read_text())
        assert len(query_status("127.0.0.1", port)["workers"]) == 2
        pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
        assert len(pids) == 3

        def cw_status(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*cw, "status", *args], capture_output=True, text=True, env=env, timeout=60
            )

        # No host and no port: cw status finds the master cw local recorded.
        shown = cw_status("--json")
        assert shown.returncode == 0, shown.stderr
        assert len(json.loads(shown.stdout)["workers"]) == 2
        human = cw_status()
        assert human.returncode == 0, human.stderr
        assert (
            "\n2 workers, 2 slots: 0 running, 0 prefetched, 0 queued, 0 unschedulable; "
            "0 completed" in human.stdout
        )
        assert human.stdout.count("\n  local-") == 2
        # So do clients, with no host given.
        client = subprocess.run(
            [
                sys.executable,
                "-c",
                "import cwtx; print(cwtx.ClusterExecutor().submit(abs, -3).result(60))",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert client.stdout.strip() == "3", client.stderr
        refused = cw_status("--host", "http://127.0.0.1", "--port", str(port))
        assert refused.returncode == 1 and "looks like a URL" in refused.stderr
        # Secrets: one line that says what is wrong, never a traceback.
        env["CWTX_SECRET"] = "short"
        weak = cw_status()
        assert weak.returncode == 1 and "Traceback" not in weak.stderr
        assert weak.stderr.startswith("cw: the cwtx secret from $CWTX_SECRET is 5 bytes")
        env["CWTX_SECRET"] = "another secret, long enough: 0123456789abcdef"
        other = cw_status()
        assert other.returncode == 1 and "Traceback" not in other.stderr
        assert other.stderr.startswith(f"cw: the cwtx master at 127.0.0.1:{port} would not let us")
        assert "shared secret" in other.stderr
        del env["CWTX_SECRET"]
    finally:
        stopped = subprocess.run(
            [*cw, "local", "stop"], capture_output=True, text=True, env=env, timeout=60
        )
    assert stopped.returncode == 0, stopped.stderr
    assert "master" in stopped.stdout
    assert not list(tmp_path.glob("*.pid"))
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or b") Z" in Path(f"/proc/{pid}/stat").read_bytes()


def test_connect_to_nothing_fails_clearly():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectionError, match="could not connect to the cwtx master"):
        blocking(cwtx.connect, "127.0.0.1", port, connect_timeout=5)


def test_supervisor_answers_heartbeats_while_a_job_holds_the_gil(tmp_path):
    """A job that holds the GIL for longer than the heartbeat timeout does
    not get its worker declared dead: the job runs in a child process."""
    timeout = 2.5  # seconds: ten heartbeats, far more than a loaded machine needs
    with cwtx.local.allocate(
        1,
        run_dir=tmp_path,
        master_args=["--heartbeat-interval", "0.25", "--heartbeat-timeout", str(timeout)],
    ) as c:
        client = SyncClient(c)
        try:

            def hold_gil(seconds):
                import time as t

                end = t.monotonic() + seconds
                while t.monotonic() < end:
                    sum(range(10**6))  # C loop: the GIL is held throughout
                return "done"

            assert client.run(hold_gil, timeout + 1.5) == "done"
            status = query_status(c.host, c.port)
            assert status["completed"] == 1 and len(status["workers"]) == 1
            assert "declared dead" not in (tmp_path / "master.log").read_text()
        finally:
            client.close()


def test_worker_reconnects_to_a_restarted_master(tmp_path):
    cluster = cwtx.local.start(1, 0, run_dir=tmp_path)
    try:
        port = cluster.port
        kill_and_restart_master(cluster)
        deadline = time.monotonic() + 60
        while True:
            try:
                if query_status("127.0.0.1", port)["workers"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the worker never came back"
            time.sleep(0.05)
        client = SyncClient(cluster)
        try:
            assert client.run(lambda: "after restart") == "after restart"
        finally:
            client.close()
    finally:
        cluster.stop()


def test_a_job_runs_in_a_child_that_loads_no_twisted(client):
    """The slot child loads the standard library and cloudpickle only: it
    restarts after every crash, timeout and cancel, and a job pays for it."""

    def heavy_modules():
        import sys as _sys

        return sorted(
            m for m in _sys.modules if m.split(".")[0] in ("twisted", "txaio", "zope", "automat")
        )

    assert client.run(heavy_modules) == []


def test_import_cwtx_loads_no_twisted():
    code = (
        "import sys, cwtx, cwtx.worker.child; "
        "print(sorted(m for m in sys.modules if m.startswith(('twisted', 'txaio'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_second_local_cluster_in_the_same_run_directory_is_refused(tmp_path):
    with cwtx.local.allocate(0, run_dir=tmp_path):
        with pytest.raises(cwtx.LaunchError, match="a master is already running from"):
            cwtx.local.start(0, 0, run_dir=tmp_path)


def test_a_master_that_will_not_start_is_a_launch_error_with_its_log(tmp_path):
    with pytest.raises(cwtx.LaunchError, match="the master exited with code") as info:
        cwtx.local.start(0, 0, run_dir=tmp_path, master_args=["--prefetch", "-1"])
    assert "--prefetch must be 0 or more" in str(info.value)
    assert not list(tmp_path.glob("*.pid"))


def test_workers_that_cannot_register_are_a_launch_error_with_their_logs(tmp_path):
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("wrong-0123456789-abcdefghijklmnopqrstuvwxyz")
    wrong.chmod(0o600)
    with pytest.raises(cwtx.LaunchError, match="1 of 1 workers did not register") as info:
        cwtx.local.start(
            1,
            0,
            run_dir=tmp_path / "run",
            timeout=3,
            worker_args=["--secret-file", str(wrong)],
        )
    assert "could not prove it knows our shared secret" in str(info.value)
    assert not list((tmp_path / "run").glob("*.pid"))


def test_a_local_cluster_is_a_context_manager(tmp_path):
    with cwtx.local.start(0, 0, run_dir=tmp_path) as cluster:
        assert query_status(cluster.host, cluster.port)["workers"] == []
    assert not list(tmp_path.glob("*.pid"))


def test_terminate_kills_what_ignores_sigterm():
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stubborn.stdout.readline().strip() == "ready"
        started = time.monotonic()
        assert terminate(stubborn.pid, timeout=0.5)  # SIGTERM ignored: SIGKILL after 0.5 s
        assert time.monotonic() - started >= 0.5
        assert not is_running(stubborn.pid)
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait(10)


def test_cw_local_start_passes_resources_and_priority_clients(tmp_path):
    env = dict(os.environ, CWTX_RUN_DIR=str(tmp_path))
    cw = [sys.executable, "-m", "cwtx._cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cw, *args], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT
        )

    bad = run("local", "start", "-n", "1", "--port", "0", "--resources", "gpu=-1")
    assert bad.returncode != 0 and "'-1' is not an amount" in bad.stderr
    assert not list(tmp_path.glob("*.pid"))  # nothing was started
    started = run(
        "local", "start", "-n", "1", "--port", "0",
        "--resources", "gpu=1", "--priority-clients", "urgent-*",
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        port = int((tmp_path / "master.port").read_text())
        (worker,) = query_status("127.0.0.1", port)["workers"]
        assert worker["resources"] == {"gpu": 1}
        script = (
            "import os, cwtx\n"
            "from cwtx.client.status import query_status\n"
            "def cuda():\n"
            "    return os.environ.get('CUDA_VISIBLE_DEVICES')\n"
            f"ex = cwtx.ClusterExecutor('127.0.0.1', {port}, name='urgent-1')\n"
            "print(ex.options(resources={'gpu': 1}).submit(cuda).result(60))\n"
            f"print([c['priority'] for c in query_status('127.0.0.1', {port})['clients']])\n"
        )
        client = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
        )
        assert client.stdout.split("\n")[:2] == ["0", "[True]"], client.stderr
    finally:
        stopped = run("local", "stop")
        assert stopped.returncode == 0, stopped.stderr
