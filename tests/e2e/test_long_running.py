"""
A cluster that runs for weeks (issue 15), on real processes: what cwtx
itself writes stays bounded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import cwtx
from cwtx.launch.procs import terminate
from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.e2e


def test_cw_local_logs_rotate_with_so_many_files_kept(tmp_path):
    """Debug logs of a thousand jobs (about a megabyte) in 64 KiB files,
    two rotated ones kept: the master's and each worker's."""
    with cwtx.local.allocate(
        1,
        port=0,
        run_dir=tmp_path,
        master_args=["--log-level", "debug"],
        worker_args=["--log-level", "debug"],
        log_size="64K",
        log_files=2,
    ) as cluster:
        with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
            assert list(ex.map(abs, range(-1000, 0), chunksize=1)) == list(range(1000, 0, -1))
        names = {p.name for p in tmp_path.iterdir() if ".log" in p.name}
    for process in ("master", "worker-0"):
        assert {f"{process}.log", f"{process}.log.1", f"{process}.log.2"} <= names
        assert f"{process}.log.3" not in names
    for name in names:
        assert (tmp_path / name).stat().st_size <= 64 * 1024 + 4096, name


def test_twistd_logs_through_the_bounded_observer(tmp_path):
    """``twistd --logger cwtx.logfile.observer``, as docs/operations.md says."""
    import subprocess

    from cwtx.launch.procs import twistd_argv

    log = tmp_path / "logs" / "master.log"
    env = {**os.environ, "CWTX_LOG_FILE": str(log), "CWTX_LOG_SIZE": "64K", "CWTX_LOG_FILES": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    port_file = tmp_path / "port"
    master = subprocess.Popen(
        [*twistd_argv(), "-n", "--pidfile=", "--logger", "cwtx.logfile.observer", "cw-master",
         "--listen", "tcp:0:interface=127.0.0.1", "--port-file", str(port_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), what="listening")
        wait_until(lambda: log.exists() and "listening" in log.read_text(), what="its log")
    finally:
        terminate(master.pid)
        out = master.communicate(timeout=30)[0]
    assert b"listening" not in out  # the file, not standard output


def test_a_bad_log_setting_is_one_line(tmp_path):
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "cwtx._cli", "local", "start", "--log-size", "lots",
         "--run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "argument --log-size: log size: 'lots' is not an amount" in done.stderr
    assert not list(Path(tmp_path).glob("*.pid"))
