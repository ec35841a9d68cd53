"""
``cw slurm`` against a real one-node SLURM (scripts/slurm-test-cluster
starts it; .ci/run does so in CI).  Without one these tests are skipped,
unless $CWTX_REQUIRE_SLURM is set (as CI sets it): then they fail.

Every cluster here has its own name, and every test stops what it started,
checking that squeue then lists none of its jobs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cwtx
from cwtx.client import address
from cwtx.launch import slurm, slurm_commands, slurm_scripts, slurm_state
from tests.conftest import ROOT, gated, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.timeout(300)]


def _slurm_answers() -> bool:
    if not slurm_commands.available():
        return False
    try:
        done = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


@pytest.fixture(scope="module", autouse=True)
def _real_slurm() -> None:
    if _slurm_answers():
        return
    why = "no SLURM answers here (scripts/slurm-test-cluster install && ... start)"
    if os.environ.get("CWTX_REQUIRE_SLURM"):
        pytest.fail(f"$CWTX_REQUIRE_SLURM is set but {why}")
    pytest.skip(why)


def our_jobs(name: str) -> list[slurm_commands.Job]:
    return slurm_commands.squeue(names=[f"cwtx-{name}-master", f"cwtx-{name}-workers"])


@pytest.fixture
def name() -> Iterator[str]:
    """A fresh cluster name; whatever the test left running is stopped."""
    name = f"t{uuid.uuid4().hex[:6]}"
    yield name
    if our_jobs(name):
        slurm.stop(name, grace=1)
    leftover = our_jobs(name)  # under another state directory, say
    slurm._stop_jobs(sorted({j.base_id for j in leftover}))
    assert leftover == []
    assert address.current() is None, "a cluster this test started was not stopped"


def in_a_job():
    """A job: which SLURM worker task ran it."""
    import os

    return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"


CLIENT = """
import sys
import cwtx

def where(i):
    import os
    return i, os.environ["SLURM_ARRAY_JOB_ID"] + "_" + os.environ["SLURM_ARRAY_TASK_ID"]

got = []
with cwtx.ClientThread(lambda jobid, result: got.append(result)) as client:
    for i in range(20):
        client.submit(i, where, i)
with cwtx.ClusterExecutor() as executor:
    got += list(executor.map(where, range(20, 40)))
print(sorted(i for i, _ in got) == list(range(40)), len({w for _, w in got}))
"""


def test_a_cluster_of_four_serves_clients_that_are_given_no_host_and_stops_clean(name):
    began = time.monotonic()
    with slurm.start(4, name=name, timeout=120) as cluster:
        run_four(cluster, name, began)
    assert our_jobs(name) == []
    assert not (cluster.directory / "master.address").exists()


def run_four(cluster: slurm.SlurmCluster, name: str, began: float) -> None:
    assert cluster.nworkers == 4
    assert len(cluster.status()["workers"]) == 4
    roles = sorted(j.name for j in cluster.jobs())
    assert roles == [f"cwtx-{name}-master"] + [f"cwtx-{name}-workers"] * 4  # one array
    assert len({j.base_id for j in cluster.jobs() if j.name.endswith("workers")}) == 1
    started = time.monotonic() - began
    # Another program of this user, told nothing but the cluster's name.
    env = {**os.environ, "CWTX_CLUSTER": name}
    out = subprocess.run(
        [sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    ok, workers_used = out.stdout.split()
    assert ok == "True" and int(workers_used) >= 1
    print(f"start took {started:.1f} s")
    added = cluster.add_workers(1)
    assert added == [f"slurm-{added[0].split('-')[1]}"] and cluster.nworkers == 5
    assert len(cluster.status()["workers"]) == 5


def test_two_named_clusters_side_by_side_each_run_their_own_jobs(name):
    other = name + "b"
    try:
        a = slurm.start(1, name=name, timeout=120)
        b = slurm.start(1, name=other, timeout=120)
        assert (a.host, a.port) != (b.host, b.port)
        with cwtx.ClusterExecutor(a.host, a.port) as ca:
            ran_a = ca.submit(in_a_job).result(60)
        with cwtx.ClusterExecutor(b.host, b.port) as cb:
            ran_b = cb.submit(in_a_job).result(60)
        assert ran_a.startswith(a.workers[0].removeprefix("slurm-").split("_")[0] + "_")
        assert ran_b.startswith(b.workers[0].removeprefix("slurm-").split("_")[0] + "_")
        slurm.stop(name)
        assert our_jobs(name) == [] and len(our_jobs(other)) == 2  # b untouched
        with cwtx.ClusterExecutor(b.host, b.port) as cb:
            assert cb.submit(in_a_job).result(60) == ran_b
    finally:
        slurm.stop(other, grace=1)
    assert our_jobs(other) == []


def running_where(gate: str, runs_file: str):
    """A job that records which SLURM task runs it, then waits for ``gate``."""
    import os

    with open(runs_file, "a") as f:
        f.write(f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}\n")
    return gated(gate, "done")


def test_the_same_name_under_another_state_directory_is_another_cluster(name, tmp_path):
    a = slurm.start(1, name=name, timeout=120, state_dir=tmp_path / "a")
    try:
        b = slurm.start(1, name=name, timeout=120, state_dir=tmp_path / "b")
        assert len(a.jobs()) == len(b.jobs()) == 2
        ids = sorted({j.base_id for j in b.jobs()}, key=int)
        assert slurm.stop(name, tmp_path / "b") == ids
        assert b.jobs() == [] and len(a.jobs()) == 2
    finally:
        slurm.stop(name, tmp_path / "a")
    assert a.jobs() == []


def test_a_worker_killed_by_scancel_mid_job_is_lost_and_its_job_runs_elsewhere(name, tmp_path):
    cluster = slurm.start(2, name=name, timeout=120)
    gate, runs_file = tmp_path / "gate", tmp_path / "runs"
    with cwtx.ClusterExecutor(cluster.host, cluster.port) as client:
        try:
            future = client.submit(running_where, str(gate), str(runs_file))
            wait_until(lambda: runs_file.exists() and runs_file.read_text(), what="the job")
            first = runs_file.read_text().split()[0]
            # A plain --signal goes to the job's steps, and ours has none: --full
            # sends it to the batch shell, which is the worker, and its children.
            subprocess.run(["scancel", "--full", "--signal=KILL", first], check=True, timeout=30)
            wait_until(lambda: len(runs_file.read_text().split()) == 2, 60, "the job to rerun")
        finally:
            gate.touch()  # whatever happened, the job may end
        assert future.result(60) == "done"
    second = runs_file.read_text().split()[1]
    assert second != first
    assert f"slurm-{first}" not in {w["name"] for w in cluster.status()["workers"]}


def test_a_master_that_cannot_start_fails_start_with_its_log(name):
    with pytest.raises(cwtx.LaunchError) as failed:
        slurm.start(1, name=name, timeout=60, master_service_args=["--prefetch", "-1"])
    assert "the master's SLURM job" in str(failed.value)
    assert "before it listened; its log" in str(failed.value)
    assert "--prefetch must be 0 or more" in str(failed.value)
    assert our_jobs(name) == []


def test_a_worker_that_cannot_start_fails_start_with_its_log(name):
    with pytest.raises(cwtx.LaunchError) as failed:
        slurm.start(1, name=name, timeout=60, worker_service_args=["--resources", "[]"])
    assert "ended before it registered with the master; its log" in str(failed.value)
    assert "--resources must be a JSON object" in str(failed.value)
    assert our_jobs(name) == []


@pytest.mark.parametrize(
    ("whose", "options"),
    [("workers'", {"slots": 999}), ("master's", {"master_args": "--cpus-per-task=999"})],
)
def test_a_job_slurm_cannot_start_fails_start_with_slurms_reason_and_leaves_nothing(
    name, whose, options
):
    began = time.monotonic()
    with pytest.raises(cwtx.LaunchError, match=f"the {whose} SLURM job .* with reason Partition"):
        slurm.start(1, name=name, timeout=60, **options)
    assert time.monotonic() - began < 60
    assert our_jobs(name) == []


def test_a_job_pending_for_a_curable_reason_is_reported_at_the_timeout(name):
    began = time.monotonic()
    with pytest.raises(cwtx.LaunchError, match=r"pending \(BeginTime\)"):
        slurm.start(1, name=name, master_args="--begin=now+1hour", timeout=8)
    assert time.monotonic() - began < 30
    assert our_jobs(name) == []


def test_workers_pending_at_the_timeout_are_reported_with_their_reason(name):
    with pytest.raises(cwtx.LaunchError) as failed:
        slurm.start(2, name=name, worker_args="--begin=now+1hour", timeout=5)
    assert str(failed.value).startswith("2 of 2 workers did not register with the master at ")
    (script,) = slurm.cluster_dir(name).glob("workers-*.sh")  # kept, saying how it went in
    assert script.read_text().endswith(
        "# submitted with: sbatch --parsable --array=0-1 --begin=now+1hour\n"
    )
    assert "within the timeout; SLURM holds some pending (BeginTime). `squeue -j " in str(
        failed.value
    )
    assert our_jobs(name) == []


def test_what_sbatch_refuses_is_said_in_its_words(name):
    with pytest.raises(cwtx.LaunchError, match="sbatch failed: .*[Ii]nvalid partition"):
        slurm.start(1, name=name, partition="nosuch", timeout=30)
    assert our_jobs(name) == []


def cw(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cwtx._cli", *args],
        capture_output=True,
        text=True,
        timeout=200,
        env=env,
    )


@pytest.mark.parametrize(("sig", "code", "said"), [("SIGINT", 130, "interrupted"),
                                                    ("SIGTERM", 143, "terminated")])  # fmt: skip
def test_ctrl_c_or_sigterm_during_cw_slurm_start_cancels_what_it_submitted(name, sig, code, said):
    starting = subprocess.Popen(
        [sys.executable, "-m", "cwtx._cli", "slurm", "start", "-n", "2", "--name", name,
         "--master-args", "--begin=now+1hour"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: len(our_jobs(name)) == 3, 60, "the jobs to be submitted")
        starting.send_signal(getattr(signal, sig))
        try:
            _, err = starting.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # say how its signals stood
            status = Path(f"/proc/{starting.pid}/status").read_text()
            pytest.fail("cw did not end: " + " ".join(re.findall(r"Sig\w+:\s+\w+", status)))
    finally:
        if starting.poll() is None:
            starting.kill()
    assert starting.returncode == code and err.endswith(f"cw: {said}\n"), err
    assert our_jobs(name) == []


def test_two_starts_of_one_name_at_once_leave_one_cluster_running(name):
    """The second waits for the first (a lock in the cluster's directory),
    then finds it running; neither cancels the other's jobs."""
    argv = [sys.executable, "-m", "cwtx._cli", "slurm", "start", "-n", "1", "--name", name]
    both = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    results = [p.communicate(timeout=120) + (p.returncode,) for p in both]
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 1], results
    refused = next(err for _, err, code in results if code == 1)
    assert f"cluster '{name}' is already running" in refused
    assert len(our_jobs(name)) == 2  # the winner's master and worker
    slurm.stop(name)


def test_a_master_that_ends_while_workers_start_fails_start_at_once(name):
    began = time.monotonic()
    listening = threading.Event()

    def report(message: str) -> None:
        if "the master listens" in message:
            listening.set()

    result: dict = {}

    def start() -> None:
        try:
            slurm.start(1, name=name, worker_args="--begin=now+1hour", timeout=60, report=report)
        except cwtx.LaunchError as e:
            result["error"] = e

    starter = threading.Thread(target=start)
    starter.start()
    assert listening.wait(60)
    master = next(j for j in our_jobs(name) if j.name.endswith("-master"))
    subprocess.run(["scancel", master.id], check=True, timeout=30)
    starter.join(60)
    assert "ended while the workers were starting; its log" in str(result.get("error"))
    assert time.monotonic() - began < 30
    assert our_jobs(name) == []


def test_a_stop_from_elsewhere_ends_a_start_stuck_in_the_queue(name):
    """The cluster's lock covers submitting, not waiting: a stop need not
    wait for a start's timeout, and the start then fails at once."""
    result: dict = {}

    def start() -> None:
        try:
            slurm.start(1, name=name, master_args="--begin=now+1hour", timeout=120)
        except cwtx.LaunchError as e:
            result["error"] = e

    starter = threading.Thread(target=start)
    starter.start()
    wait_until(lambda: len(our_jobs(name)) == 2, 60, "the jobs to be submitted")
    began = time.monotonic()
    stopped = cw("slurm", "stop", "--name", name)
    assert stopped.returncode == 0 and "stopped cluster" in stopped.stdout, stopped.stderr
    starter.join(60)
    assert time.monotonic() - began < 30
    assert "the master's SLURM job" in str(result.get("error"))
    assert our_jobs(name) == []


def test_cw_slurm_add_grows_a_running_cluster_and_status_shows_it(name, tmp_path):
    """With a secret of its own, which add and status use too."""
    secret = tmp_path / "private" / "secret"
    secret.parent.mkdir(mode=0o700)
    secret.write_text(secrets.token_hex(32))
    secret.chmod(0o600)
    started = cw(
        "slurm", "start", "-n", "1", "--name", name, "--timeout", "120",
        "--secret-file", str(secret),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert f"cwtx cluster '{name}': master on " in started.stdout
    assert started.stdout.endswith(f", 1 worker; scripts and logs in {slurm.cluster_dir(name)}\n")
    # $CWTX_CLUSTER names the cluster for every cw slurm command.
    added = cw("slurm", "add", "-n", "2", env={**os.environ, "CWTX_CLUSTER": name})
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(f"added 2 workers to cluster '{name}': slurm-")
    status = cw("slurm", "status", "--name", name)
    assert status.returncode == 0, status.stderr
    as_json = json.loads(cw("slurm", "status", "--name", name, "--json").stdout)
    assert len(as_json["jobs"]) == 4 and len(as_json["master"]["workers"]) == 3
    assert f"{name}: 4 RUNNING" in cw("slurm", "list").stdout
    assert status.stdout.count(": RUNNING") == 4  # the master, 1 + 2 workers
    assert "\n3 workers, 3 slots: " in status.stdout
    assert f"--secret-file {secret}" in (slurm.cluster_dir(name) / "master.sh").read_text()
    # A GPU node: its workers offer what --resources says, the others nothing.
    gpu = cw("slurm", "add", "-n", "1", "--name", name, "--resources", "gpu=2,mem=8G")
    assert gpu.returncode == 0, gpu.stderr
    as_json = json.loads(cw("slurm", "status", "--name", name, "--json").stdout)
    offered = sorted(json.dumps(w["resources"]) for w in as_json["master"]["workers"])
    assert offered == ['{"gpu": 2.0, "mem": 8589934592.0}', "{}", "{}", "{}"]
    bad = cw("slurm", "add", "-n", "1", "--name", name, "--resources", "gpu=lots")
    assert bad.returncode != 0 and "gpu: 'lots' is not an amount" in bad.stderr
    again = cw("slurm", "start", "-n", "1", "--name", name)
    assert again.returncode == 1
    assert f"cw: cluster '{name}' is already running (SLURM jobs " in again.stderr
    stopped = cw("slurm", "stop", "--name", name)
    assert stopped.returncode == 0 and "stopped cluster" in stopped.stdout
    assert our_jobs(name) == []
    assert "no SLURM jobs" in cw("slurm", "status", "--name", name).stdout
    again = cw("slurm", "stop", "--name", name)
    assert again.returncode == 0 and f"cluster '{name}' had no SLURM jobs" in again.stdout
    late = cw("slurm", "add", "-n", "1", "--name", name)
    assert late.returncode == 1 and f"cluster '{name}' has no master running" in late.stderr


def test_stop_lets_a_running_job_finish_within_the_grace(name, tmp_path):
    """SIGINT reaches the worker: it leaves gracefully, its job ends first."""
    cluster = slurm.start(1, name=name, timeout=120, grace=30)
    gate, runs_file = tmp_path / "gate", tmp_path / "runs"
    log = cluster.directory / f"worker-{cluster.workers[0].removeprefix('slurm-')}.log"
    with cwtx.ClusterExecutor(cluster.host, cluster.port) as client:
        try:
            future = client.submit(running_where, str(gate), str(runs_file))
            wait_until(lambda: runs_file.exists(), what="the job to start")
            stopping = subprocess.Popen(
                [sys.executable, "-m", "cwtx._cli", "slurm", "stop", "--name", name],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            leaving = "leaving: finishing 1 running"
            wait_until(lambda: leaving in log.read_text(), 60, "a graceful leave")
        finally:
            gate.touch()  # whatever happened, the job may end
        assert future.result(60) == "done"
        assert stopping.wait(120) == 0, stopping.stdout.read()
    assert f"worker {cluster.workers[0]} left" in log.read_text()
    assert our_jobs(name) == []
    assert slurm.stop(name) == []  # another process stopped it: this one forgets it


@pytest.mark.parametrize("example", ["seed_square.py", "seed_with.py"])
def test_the_seeds_examples_run_unchanged_but_for_their_package_name(example, tmp_path):
    """cwtx.start (square.py) and cwtx.allocate (with.py) choose SLURM,
    since sbatch is on the PATH; the client finds the cluster unaided."""
    env = {k: v for k, v in os.environ.items() if k not in ("CWTX_LAUNCHER", "CWTX_CLUSTER")}
    # An sbatch that notes each call, then is the real one.
    calls = tmp_path / "sbatch-calls"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sbatch").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\nexec {shutil.which("sbatch")} "$@"\n'
    )
    (tmp_path / "bin" / "sbatch").chmod(0o755)
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "data" / example)],
        capture_output=True,
        text=True,
        timeout=200,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    squares = sorted(
        int(line.rsplit(" ", 1)[1]) for line in out.stdout.splitlines() if "is" in line
    )
    assert squares == sorted(i * i for i in range(10))
    assert calls.read_text().splitlines() == ["--parsable", "--parsable --array=0-1"]
    assert slurm.SlurmCluster("default", slurm.cluster_dir()).jobs() == []
    assert list(slurm.default_state_dir().glob("alloc-*")) == []


FAKE_DOCKER = """#!/bin/sh
# No Docker engine here: record the command line, then run what the image
# would (its entrypoint is Python) with this Python, in the foreground.
printf '%s\\n' "$@" > "{record}"
while [ "$1" != "-m" ]; do shift; done
exec {python} "$@"
"""


def test_docker_workers_run_the_generated_command_and_leave_on_sigint(name, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "docker-argv"
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(record=record, python=sys.executable))
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cluster = slurm.start(
        1, name=name, timeout=120, docker_image="me/cwtx:1", docker_args="-v /shared:/shared"
    )
    task = cluster.workers[0].removeprefix("slurm-")
    argv = record.read_text().splitlines()
    d = cluster.directory
    assert argv == [
        "run", "--rm", "--interactive", "--init", "--network=host", f"--name=cwtx-{name}-{task}",
        f"--user={os.getuid()}:{os.getgid()}", "--cpus=1",
        "--env=CWTX_LOG_SIZE=10485760", "--env=CWTX_LOG_FILES=5",  # (cwtx.logfile's defaults)
        "-v", "/shared:/shared", "me/cwtx:1",
        "-m", "cwtx.worker", "--logfile", f"{d}/worker-{task}.log",
        "--master-file", f"{d}/master.address", "--slots", "1", "--name", f"slurm-{task}",
        "--grace", "25", "--secret-file", os.environ["CWTX_SECRET_FILE"],
    ]  # fmt: skip
    with cwtx.ClusterExecutor(cluster.host, cluster.port) as client:
        assert client.submit(in_a_job).result(60) == task
    slurm.stop(name)
    assert f"worker slurm-{task} left" in (d / f"worker-{task}.log").read_text()
    assert our_jobs(name) == []


def test_workers_submitted_before_their_master_listens_wait_for_it(name):
    """The master waits on a held job (reason Dependency) while its worker
    starts: the worker waits for the address file, retrying with backoff,
    and joins once the master listens."""

    blocker = slurm_commands.sbatch(
        "#!/bin/sh\ntrue\n", ["--hold", "--job-name=cwtx-blocker", "--output=/dev/null"]
    )
    result: dict = {}

    def start() -> None:
        try:
            result["cluster"] = slurm.start(
                1, name=name, timeout=120, master_args=f"--dependency=afterany:{blocker}"
            )
        except BaseException as e:
            result["error"] = e

    starter = threading.Thread(target=start)
    starter.start()
    try:
        log = slurm.cluster_dir(name) / "worker-missing.log"

        def worker_waiting() -> bool:
            nonlocal log
            log = next(iter(slurm.cluster_dir(name).glob("worker-*.log")), log)
            return log.exists() and "Scheduling retry 2 " in log.read_text()

        wait_until(worker_waiting, 60, "the worker to wait for its master")
        master = next(j for j in our_jobs(name) if j.name.endswith("-master"))
        assert (master.state, master.reason) == ("PENDING", "Dependency")
        # The seed's master_host() returned a pending master's empty node list.
        with pytest.raises(cwtx.LaunchError, match=r"is pending \(Dependency\), so it has no host"):
            slurm.master_host(name)
    finally:
        subprocess.run(["scontrol", "release", blocker], check=True, timeout=30)
        starter.join(150)
    assert "error" not in result, result.get("error")
    assert result["cluster"].nworkers == 1
    # The master counts the worker before the worker has logged its answer.
    wait_until(lambda: "registered with master" in log.read_text(), 30, "the worker's log line")
    cluster = result["cluster"]
    assert slurm.master_host(name) == f"localhost:{cluster.port}"
    # The seed's idiom: ClientThread(callback, master_host()), a host that carries its port.
    done = []
    with cwtx.ClientThread(lambda jobid, r: done.append(r), slurm.master_host(name)) as client:
        client.submit(1, abs, -3)
    assert done == [3]
    slurm.stop(name)
    with pytest.raises(cwtx.LaunchError, match=f"no cwtx cluster named '{name}' runs"):
        slurm.master_host(name)


def test_a_worker_near_its_time_limit_is_signalled_and_leaves_gracefully(name):
    """sbatch --signal=B:INT@40 with a one-minute limit: SLURM (not us)
    sends SIGINT well before the limit, and the worker leaves."""
    cluster = slurm.start(1, name=name, time="1", timeout=60)
    log = cluster.directory / f"worker-{cluster.workers[0].removeprefix('slurm-')}.log"
    wait_until(lambda: "SIGINT received" in log.read_text(), 75, "SLURM's signal")
    wait_until(lambda: f"worker {cluster.workers[0]} left" in log.read_text(), 30, "the leave")
    assert "DUE TO TIME LIMIT" not in (log.with_suffix(".out")).read_text()
    slurm.stop(name)


@pytest.mark.slurm  # no SLURM needed, but it belongs with the Docker test
def test_the_example_dockerfile_copies_all_that_cwtx_needs_to_install(tmp_path):
    """No Docker engine here: do what its COPY lines do, in a directory, and
    build there: the worker and its twistd plugin are in what installs."""
    dockerfile = (ROOT / "examples" / "docker" / "Dockerfile").read_text()
    context = tmp_path / "src" / "cwtx"
    context.mkdir(parents=True)
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, target = line.split()[1:]
            for source in sources:
                dest = context / Path(target).relative_to("/src/cwtx")
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, dest, ignore=shutil.ignore_patterns("*.pyc"))
                else:
                    shutil.copy(ROOT / source, context / Path(source).name)
    assert 'ENTRYPOINT ["python"]' in dockerfile
    # What pip's build does first: lay out the packages as they install.
    built = subprocess.run(
        [sys.executable, "setup.py", "-q", "build", "-b", str(tmp_path / "build")],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    installed = tmp_path / "build" / "lib"
    assert (installed / "cwtx" / "worker" / "__main__.py").exists()
    assert (installed / "twisted" / "plugins" / "cwtx_plugins.py").exists()


def test_a_thousand_workers_are_one_submission(name):
    """Held, so that none runs: one sbatch, one array id, 1,000 tasks."""
    cluster = slurm.SlurmCluster(name, slurm.cluster_dir(name))
    cluster.directory.mkdir(parents=True)
    settings = slurm_scripts.ScriptSettings(name, str(cluster.directory), sys.executable)
    setup = slurm_state.Setup(settings, 1, 25.0, ["--hold"], None)
    array_id, n = slurm._submit_array(cluster, setup, 1000, lambda _: None, [])
    tasks = our_jobs(name)
    assert n == 1000 and len(tasks) == 1000
    assert {t.base_id for t in tasks} == {array_id}
    assert {t.reason for t in tasks} == {"JobHeldUser"}
    assert slurm.stop(name) == [array_id]
