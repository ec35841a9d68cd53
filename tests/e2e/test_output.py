"""
Output forwarding and job lifecycle logs on real twistd processes: what a
job prints comes back to the client prefixed with its worker and job id,
a flood arrives bounded with a drop notice, and the master (run with
``--log-level debug``) logs each job's life.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

import cwtx
from cwtx.worker.output import OUTPUT_BURST, OUTPUT_RATE
from tests.conftest import rss_mib

from ..conftest import ROOT, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with cwtx.local.allocate(
        1,
        run_dir=tmp_path_factory.mktemp("output"),
        master_args=["--log-level", "debug"],
        worker_args=["--log-level", "debug"],
    ) as c:
        yield c


def flood(megabytes):
    line = "z" * 99
    for _ in range(megabytes * 10_000):
        print(line)
    return "done"


PROGRAM = textwrap.dedent(
    """
    import sys
    import cwtx

    def chatty(n):
        import subprocess

        print("hello", n)
        print("oops", n, file=sys.stderr)
        subprocess.run(["echo", "from a subprocess"], check=True)
        return n

    with cwtx.ClusterExecutor(sys.argv[1], int(sys.argv[2]), forward_output=True) as ex:
        print("result", ex.submit(chatty, 7).result(60))
    """
)


def test_a_programs_jobs_print_to_its_stdout_and_stderr_prefixed(cluster):
    """A whole client program, as a user runs one: the lines are in its own
    stdout and stderr, before the result it prints."""
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, cluster.host, str(cluster.port)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out == [
        "(worker local-0, job 1) hello 7",
        "(worker local-0, job 1) from a subprocess",
        "result 7",
    ]
    assert "(worker local-0, job 1) oops 7" in done.stderr.splitlines()


def test_a_flood_arrives_bounded_with_a_drop_notice(cluster):
    lines = []
    client = cwtx.ClusterExecutor(
        cluster.host, cluster.port, forward_output=lambda *a: lines.append(a)
    )
    try:
        before = rss_mib(cluster)
        megabytes = 20
        assert client.submit(flood, megabytes).result(120) == "done"
        assert rss_mib(cluster) - before < 16  # 20 MB printed; the master held little
        assert client.submit(abs, -1).result(60) == 1
    finally:
        client.shutdown()
    texts = [line for _, _, _, line in lines]
    forwarded = [t for t in texts if t == "z" * 99]
    notices = [t for t in texts if t.startswith("[cwtx:")]
    total = megabytes * 10_000
    assert notices, texts[-5:]
    dropped = sum(int(re.match(r"\[cwtx: (\d+) lines dropped\]", n).group(1)) for n in notices)
    assert len(forwarded) + dropped == total  # every line forwarded or counted
    # Bounded: the burst, and the rate for however long it printed (generously).
    assert len(forwarded) * 100 < OUTPUT_BURST + 60 * OUTPUT_RATE
    assert len(forwarded) < total / 2
    assert {(j, w) for j, w, _, _ in lines} == {(1, "local-0")}


def test_the_master_logs_each_jobs_life_at_debug(cluster):
    with cwtx.ClusterExecutor(cluster.host, cluster.port, name="logged") as ex:
        assert ex.submit(abs, -3).result(60) == 3
    log = cluster.run_dir / "master.log"

    def logged():
        text = log.read_text()
        return all(
            re.search(rf"job \d+ of client logged {what}", text)
            for what in ("submitted", "dispatched to worker local-0", "ended: ok")
        )

    wait_until(logged, what="the master's log shows the job's life")
