"""
What a new user meets in their first hour, on real processes: a master
that cannot listen says so and fails; a worker that cannot join says where
and why; clusters started from Python run beside ``cw local``; ``cw
status`` shows where everything runs, redraws with ``--watch``, and turns
every expected error into one line.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cwtx
from cwtx.launch.procs import terminate
from cwtx.wire.names import PROTOCOL_VERSION
from tests.conftest import ROOT, spawn_twistd, wait_until

pytestmark = pytest.mark.e2e

CW = [sys.executable, "-m", "cwtx._cli"]


def cw(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CW, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )


@pytest.fixture
def busy_port():
    """A loopback port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_master_that_cannot_listen_exits_1_with_one_line(tmp_path, busy_port):
    log = tmp_path / "master.log"
    master = spawn_twistd("cw-master", "--listen", f"tcp:{busy_port}:interface=127.0.0.1", log=log)
    try:
        assert master.wait(60) == 1
    finally:
        if master.poll() is None:
            terminate(master.pid)
    text = log.read_text()
    assert f"could not listen on tcp:{busy_port}:interface=127.0.0.1: " in text
    assert "Address already in use" in text and "Traceback" not in text
    # cw local start says the same in one line, and fails.
    started = cw("local", "start", "-n", "1", "--port", str(busy_port), "--run-dir", str(tmp_path))
    assert started.returncode == 1
    assert started.stderr.startswith("cw: cwtx master could not listen on "), started.stderr
    assert len(started.stderr.strip().splitlines()) == 1 and "Traceback" not in started.stderr


def test_a_master_whose_dashboard_cannot_listen_exits_1(tmp_path, busy_port):
    log = tmp_path / "master.log"
    master = spawn_twistd(
        "cw-master", "--listen", "tcp:0:interface=127.0.0.1", "--http", str(busy_port), log=log
    )
    try:
        assert master.wait(60) == 1
    finally:
        if master.poll() is None:
            terminate(master.pid)
    text = log.read_text()
    assert f"cwtx dashboard could not listen on tcp:{busy_port}:interface=127.0.0.1: " in text
    assert "Traceback" not in text


def test_a_worker_that_cannot_join_says_where_and_why(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "worker.log"
    worker = spawn_twistd("cw-worker", "--master", f"127.0.0.1:{port}", log=log)
    try:
        wait_until(
            lambda: log.exists() and "Scheduling retry 2 " in log.read_text(),
            60,
            "the worker to retry",
        )
    finally:
        terminate(worker.pid)
        worker.wait(30)
    text = log.read_text()
    assert f"could not connect to 127.0.0.1:{port}: Connection was refused" in text
    assert "Starting factory" not in text and "object at 0x" not in text


def test_a_wrong_secret_is_logged_on_both_sides(tmp_path):
    other = tmp_path / "other-secret"
    other.write_text(secrets.token_hex(32))
    other.chmod(0o600)
    port_file = tmp_path / "port"
    master = spawn_twistd(
        "cw-master",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--port-file",
        str(port_file),
        log=tmp_path / "master.log",
    )
    worker = None
    try:
        wait_until(port_file.exists, 60, "the master to listen")
        port = int(port_file.read_text())
        worker = spawn_twistd(
            "cw-worker",
            "--master",
            f"127.0.0.1:{port}",
            "--secret-file",
            str(other),
            log=tmp_path / "worker.log",
        )
        wait_until(
            lambda: "different shared secret" in (tmp_path / "master.log").read_text(),
            60,
            "the master to log the stranger",
        )
        wait_until(
            lambda: (
                "could not prove it knows our shared secret"
                in (tmp_path / "worker.log").read_text()
            ),
            60,
            "the worker to log the master it does not trust",
        )
    finally:
        for proc in (worker, master):
            if proc is not None:
                terminate(proc.pid)
                proc.wait(30)


SEED_SCRIPT = textwrap.dedent(
    """
    import sys
    import cwtx

    cluster = cwtx.start(1, port=int(sys.argv[1]))
    print(cwtx.ClusterExecutor(cluster.host, cluster.port).submit(abs, -7).result(60))
    print(cluster.run_dir)
    cwtx.stop()
    """
)


def test_a_script_that_starts_a_cluster_runs_beside_cw_local(tmp_path):
    env = dict(os.environ, CWTX_RUN_DIR=str(tmp_path / "run"))
    started = cw("local", "start", "-n", "1", "--port", "0", env=env)
    try:
        assert started.returncode == 0, started.stderr
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        script = tmp_path / "seed.py"
        script.write_text(SEED_SCRIPT)
        ran = subprocess.run(
            [sys.executable, str(script), str(port)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
        value, run_dir = ran.stdout.split()
        assert value == "7" and run_dir == str(tmp_path / "run" / f"port-{port}")
        # cwtx.stop() stopped the script's cluster, not cw local's.
        assert cw("status", "--json", env=env).returncode == 0
    finally:
        assert cw("local", "stop", env=env).stdout.startswith("stopped ")


def test_blocking_clients_take_secret_file(cluster, tmp_path, monkeypatch):
    ours = os.environ["CWTX_SECRET_FILE"]
    wrong = tmp_path / "wrong"
    wrong.write_text(secrets.token_hex(32))
    wrong.chmod(0o600)
    monkeypatch.setenv("CWTX_SECRET_FILE", str(wrong))
    with cwtx.ClusterExecutor(cluster.host, cluster.port, secret_file=ours) as ex:
        assert ex.submit(abs, -2).result(60) == 2
    results = []
    thread = cwtx.ClientThread(
        lambda job, value: results.append(value), cluster.host, cluster.port, secret_file=ours
    )
    thread.start()
    thread.submit("j", abs, -3)
    thread.wait()
    thread.stop()
    assert results == [3]
    with pytest.raises(ConnectionError, match="shared secret"):
        cwtx.ClusterExecutor(cluster.host, cluster.port, connect_timeout=5)


@pytest.fixture(scope="module")
def four_workers(tmp_path_factory):
    with cwtx.local.allocate(4, slots=2, run_dir=tmp_path_factory.mktemp("four")) as c:
        yield c


def test_cw_status_shows_where_everything_runs(four_workers, tmp_path):
    c = four_workers
    address = f"{c.host}:{c.port}"
    gate = tmp_path / "gate"

    def hold(gate: str) -> int:
        import os
        import time

        while not os.path.exists(gate):
            time.sleep(0.01)
        return os.getpid()

    with (
        cwtx.ClusterExecutor(c.host, c.port, name="analysis") as a,
        cwtx.ClusterExecutor(c.host, c.port, name="sweep", share=2) as b,
    ):
        held = [a.submit(hold, str(gate)) for _ in range(3)]
        held += [b.submit(hold, str(gate)) for _ in range(3)]
        assert a.submit(int, "x").exception(60) is not None
        ref = a.put(bytes(3 * 2**20))  # the master holds it once a job names it
        assert a.submit(len, ref).result(60) == 3 * 2**20
        wait_until(lambda: sum(f.running() for f in held) == 6, 60, "six jobs to start")
        shown = cw("status", "--master", address)
        data = json.loads(cw("status", "--master", address, "--json").stdout)
        gate.touch()
        assert [f.result(60) > 0 for f in held] == [True] * 6
    assert shown.returncode == 0, shown.stderr
    print(shown.stdout)  # for the record (pytest -s)
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"master {data['master']}, at ")
    assert f"cwtx {cwtx.__version__}, protocol {PROTOCOL_VERSION}, up " in lines[0]
    assert lines[1].startswith("4 workers, 8 slots: 6 running, 0 prefetched, 0 queued")
    assert "workers (4):" in lines and "clients (2):" in lines
    header = next(line for line in lines if line.strip().startswith("NAME  "))
    for column in ("HOST", "PID", "SLOTS", "RUNNING", "PREFETCHED", "DONE", "FAILED", "LOST"):
        assert column in header
    clients_header = lines[lines.index("clients (2):") + 1]
    assert clients_header.split()[-3:] == ["SHARE", "REFS", "FUNCTIONS"]
    host = socket.gethostname()
    worker_rows = [line for line in lines if line.startswith("  local-")]
    assert len(worker_rows) == 4 and all(host in row for row in worker_rows)
    analysis = next(line for line in lines if line.startswith("  analysis "))
    assert str(os.getpid()) in analysis and " 1 (3 MiB)  " in analysis
    # JSON: the documented schema (docs/operations.md).
    for key in ("master", "address", "version", "protocol", "uptime", "slots", "queued"):
        assert key in data
    assert data["protocol"] == PROTOCOL_VERSION and data["running"] == 6
    for w in data["workers"]:
        assert {"name", "host", "pid", "slots", "running", "prefetched", "heard", "uptime"} <= set(
            w
        )
        assert w["host"] == host and w["pid"] > 0 and 0 <= w["heard"] < 30
    clients = {x["name"]: x for x in data["clients"]}
    assert clients["analysis"]["pid"] == os.getpid() and clients["analysis"]["failed"] == 1
    assert clients["sweep"]["share"] == 2 and clients["sweep"]["running"] == 3
    assert clients["analysis"]["put_data"] == 1 and clients["sweep"]["put_data"] == 0
    assert clients["analysis"]["put_bytes"] > 3 * 2**20 and clients["sweep"]["put_bytes"] == 0
    assert clients["analysis"]["function_bytes"] > clients["sweep"]["function_bytes"] > 0


def test_cw_status_watch_redraws_until_ctrl_c(four_workers):
    c = four_workers
    watch = subprocess.Popen(
        [*CW, "status", "--master", f"{c.host}:{c.port}", "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = ""
        while seen.count("\x1b[H\x1b[2J") < 3:  # three screens, each cleared first
            chunk = watch.stdout.readline()
            assert chunk, watch.stderr.read()
            seen += chunk
        watch.send_signal(signal.SIGINT)
        assert watch.wait(30) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert seen.count("workers (4):") >= 2


def test_cw_status_errors_are_one_line(four_workers, tmp_path):
    c = four_workers
    address = f"{c.host}:{c.port}"
    loose = tmp_path / "secret"
    loose.write_text(secrets.token_hex(32))
    loose.chmod(0o644)
    for args, start in [
        (["--secret-file", str(loose)], f"cw: the cwtx secret file {loose} is readable by others"),
        (["--master", "127.0.0.1:1"], "cw: no cwtx master answers at 127.0.0.1:1"),
        (["--master", "nowhere:port"], "cw: "),
    ]:
        shown = cw("status", "--master", address, *args, timeout=60)
        assert shown.returncode == 1, (args, shown.stdout)
        assert shown.stderr.startswith(start), (args, shown.stderr)
        assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr
    own = tmp_path / "own"
    own.write_text(Path(os.environ["CWTX_SECRET_FILE"]).read_text())
    own.chmod(0o600)
    env = dict(os.environ, CWTX_SECRET_FILE=str(tmp_path / "missing"))
    assert cw("status", "--master", address, "--secret-file", str(own), env=env).returncode == 0
