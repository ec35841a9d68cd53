"""The SLURM launcher's pure parts: its batch scripts, exactly; squeue's
lines; names; where clusters are found.  No SLURM needed (tests/e2e/
test_slurm.py runs the real thing)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cwtx
from cwtx.client import address
from cwtx.launch import auto, slurm, slurm_commands
from cwtx.launch.sbatch_options import extra_options
from cwtx.launch.slurm_scripts import (
    Docker,
    ScriptSettings,
    check_name,
    job_name,
    master_script,
    worker_script,
)
from cwtx.tap.foreground import twistd_arguments

SETTINGS = ScriptSettings(
    cluster="big",
    state_dir="/shared/state/big",
    python="/opt/py/bin/python",
    pythonpath="/opt/src",
    secret_file="/home/u/.config/cwtx/secret",
    partition="gpu",
    time="1:00:00",
    account="proj",
)

HEADER = """#!/bin/bash
#SBATCH --job-name=cwtx-big-{role}
#SBATCH --chdir=/shared/state/big
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --partition=gpu
#SBATCH --time=1:00:00
#SBATCH --account=proj
"""
COMMENT = (
    f"# The {{role}} of cwtx cluster 'big', written by cwtx {cwtx.__version__} (cw slurm); "
    "see docs/slurm.md.\n"
)
PYTHONPATH = 'export PYTHONPATH=/opt/src"${PYTHONPATH:+:$PYTHONPATH}"\n'
# How much log each process keeps (cwtx.logfile), the defaults.
LOGS = "export CWTX_LOG_SIZE=10485760 CWTX_LOG_FILES=5\n"
DOCKER_LOGS = "--env=CWTX_LOG_SIZE=10485760 --env=CWTX_LOG_FILES=5"
TASK = "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
WORKER_OPTIONS = (
    f'-m cwtx.worker --logfile /shared/state/big/worker-"{TASK}".log '
    "--master-file /shared/state/big/master.address --slots 4 "
    f'--name "slurm-{TASK}" --grace 25 --secret-file /home/u/.config/cwtx/secret\n'
)
WORKER_DIRECTIVES = """#SBATCH --cpus-per-task=4
#SBATCH --output=/shared/state/big/worker-%A_%a.out
#SBATCH --signal=B:INT@40
"""


def test_the_master_script_execs_the_master_which_publishes_its_node_and_port():
    assert master_script(SETTINGS, 0, ["--prefetch", "2"]) == (
        HEADER.format(role="master")
        + "#SBATCH --cpus-per-task=1\n"
        + "#SBATCH --output=/shared/state/big/master.out\n"
        + COMMENT.format(role="master")
        + PYTHONPATH
        + LOGS
        + "exec /opt/py/bin/python -m cwtx.master --logfile /shared/state/big/master.log "
        "--listen tcp:0 --address-file /shared/state/big/master.address "
        '--advertise "${SLURMD_NODENAME:-$(hostname)}" '
        "--secret-file /home/u/.config/cwtx/secret --prefetch 2\n"
    )


def test_the_worker_script_execs_the_worker_so_slurms_signals_reach_it():
    assert worker_script(SETTINGS, 4, 25.0) == (
        HEADER.format(role="workers")
        + WORKER_DIRECTIVES
        + COMMENT.format(role="workers")
        + PYTHONPATH
        + LOGS
        + "exec /opt/py/bin/python "
        + WORKER_OPTIONS
    )


def test_a_docker_worker_runs_the_images_python_with_init_host_network_and_our_user():
    script = worker_script(SETTINGS, 4, 25.0, Docker("me/cwtx:1", "-v /shared:/shared"))
    assert script == (
        HEADER.format(role="workers")
        + WORKER_DIRECTIVES
        + COMMENT.format(role="workers")
        + "exec docker run --rm --interactive --init --network=host "
        f'--name="cwtx-big-{TASK}" --user="$(id -u):$(id -g)" --cpus=4 {DOCKER_LOGS} '
        "-v /shared:/shared me/cwtx:1 " + WORKER_OPTIONS
    )


def test_a_docker_worker_gets_a_secret_from_the_environment_by_name_only():
    from dataclasses import replace

    script = worker_script(replace(SETTINGS, secret_file=None), 1, 25.0, Docker("img"))
    assert f" --env=CWTX_SECRET {DOCKER_LOGS} img -m cwtx.worker " in script
    assert "--secret-file" not in script


@pytest.mark.parametrize("option", ["partition", "time", "account"])
def test_a_value_that_would_break_its_sbatch_line_is_refused(option):
    from dataclasses import replace

    with pytest.raises(ValueError) as refused:
        replace(SETTINGS, **{option: "p\necho pwned"})
    assert str(refused.value) == (
        f"--{option} 'p\\necho pwned': give one word, with no spaces or newlines"
    )


@pytest.mark.parametrize(
    "args",
    ["-J other", "--job-name=x", "--array=0-3", "-o /tmp/x", "--chdir /", "--wrap true",
     "-Mother", "--export=NONE", "--jo=hidden", "--arr=0-5", "-QW", "-HJx", "--exp=NONE",
     "--wai", "--j=x", "--export=ALLOW_X=1", "--export NONE"],
)  # fmt: skip
def test_sbatch_options_that_cwtx_sets_itself_are_refused(args):
    with pytest.raises(ValueError, match="worker_args: .* (is set by cwtx itself|would keep)"):
        extra_options(args, "worker_args")


def test_other_sbatch_options_pass_as_given():
    assert extra_options("--qos=high --mem 4G --export=ALL,X=1") == [
        "--qos=high", "--mem", "4G", "--export=ALL,X=1",
    ]  # fmt: skip
    # A value that holds a refused letter is a value: -p's, -t's, -n's.
    assert extra_options("-pmain -t1:00 -n -1 --comment=-J -BW") == [
        "-pmain", "-t1:00", "-n", "-1", "--comment=-J", "-BW",
    ]  # fmt: skip
    for keeps in ("--export=all", "--export=FOO=1,ALL", "--export ALL", "--exp=ALL"):
        assert extra_options(keeps) == keeps.split()
    assert extra_options(["--exclusive"]) == ["--exclusive"]


def test_the_time_limit_signal_leaves_room_for_the_grace():
    assert "#SBATCH --signal=B:INT@75\n" in worker_script(SETTINGS, 1, 60.0)


def test_options_left_out_are_not_written_and_odd_words_are_quoted():
    plain = ScriptSettings("c", "/s/c", "/py", None, None)
    script = master_script(plain, 5000, ["--name", "it's"])
    assert "--partition" not in script and "--time" not in script and "--account" not in script
    assert "PYTHONPATH" not in script and "--secret-file" not in script
    assert script.endswith(
        "--listen tcp:5000 --address-file /s/c/master.address "
        "--advertise \"${SLURMD_NODENAME:-$(hostname)}\" --name 'it'\"'\"'s'\n"
    )


@pytest.mark.e2e
@pytest.mark.parametrize("docker", [None, Docker("img", "-v /a:/a")])
def test_the_scripts_are_valid_bash(docker):
    for script in (master_script(SETTINGS), worker_script(SETTINGS, 2, 25.0, docker)):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_cluster_names_are_checked_and_make_job_names():
    assert check_name("run-2.b_c") == "run-2.b_c"
    assert job_name("big", "workers") == "cwtx-big-workers"
    for bad in ["", "-x", "a b", "a/b", "a;b", "x" * 65, "é"]:
        with pytest.raises(ValueError, match="cluster name"):
            check_name(bad)


def test_squeue_lines_become_jobs_and_array_tasks_know_their_array():
    jobs = slurm_commands.parse_squeue(
        "12|cwtx-big-master|RUNNING|None|node3|ann|/s/big\n"
        "13_0|cwtx-big-workers|PENDING|Resources||ann|/s/a|b\n"
        "garbage\n"
    )
    assert [(j.id, j.base_id, j.pending, j.nodes, j.workdir) for j in jobs] == [
        ("12", "12", False, "node3", "/s/big"),
        ("13_0", "13", True, "", "/s/a|b"),
    ]


@pytest.mark.e2e
def test_a_missing_slurm_command_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(cwtx.LaunchError, match="sbatch is not on the PATH: is SLURM installed"):
        slurm_commands.sbatch("#!/bin/sh\n")
    assert not slurm_commands.available()


def test_the_default_state_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("CWTX_SLURM_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert slurm.default_state_dir() == tmp_path / "cwtx" / "slurm"
    assert slurm.cluster_dir("big") == tmp_path / "cwtx" / "slurm" / "big"
    monkeypatch.setenv("CWTX_SLURM_DIR", str(tmp_path / "shared"))
    assert slurm.cluster_dir() == tmp_path / "shared" / "default"


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"nworkers": -1}, "nworkers must be 0 or more, not -1"),
        ({"slots": 0}, "a worker needs at least one slot, not 0"),
        ({"docker_image": " "}, "docker_image must be an image name"),
        ({"docker_image": "i", "docker_args": "-v a\n-v b"}, "and docker_args one line"),
        ({"name": "a b"}, "cluster name 'a b'"),
        ({"port": 70000}, "the master's port must be 0 .* to 65535, not 70000"),
        ({"timeout": float("nan")}, "the timeout must be a positive number of seconds, not nan"),
        ({"timeout": 0}, "the timeout must be a positive number"),
    ],
)
def test_bad_start_arguments_are_refused_before_anything_is_submitted(arguments, complaint):
    with pytest.raises(ValueError, match=complaint):
        slurm.start(**arguments)


def test_a_state_directory_the_scripts_cannot_quote_is_refused(tmp_path):
    for odd in ("my files", "s#x", "a%b", "x$y", "q'r"):
        with pytest.raises(ValueError, match="has characters that SLURM or the shell would read"):
            slurm.start(1, state_dir=tmp_path / odd)


def test_clients_find_the_default_cluster_then_the_named_then_the_only_one(monkeypatch, tmp_path):
    def no_slurm(**_):  # several clusters are checked with squeue: here it cannot answer
        raise cwtx.LaunchError("squeue is not on the PATH")

    monkeypatch.setattr(slurm_commands, "squeue", no_slurm)
    monkeypatch.setenv("CWTX_SLURM_DIR", str(tmp_path))
    monkeypatch.setenv("CWTX_RUN_DIR", str(tmp_path / "no-local"))
    assert slurm.recorded_master() is None
    (tmp_path / "solo").mkdir()
    address.write_address_file(tmp_path / "solo" / "master.address", "node7", 41000)
    assert slurm.recorded_master() == ("node7", 41000)
    assert address.find_master() == ("node7", 41000)
    assert slurm.which_cluster() == "solo"  # the only one: what master_host() and stop() mean
    (tmp_path / "other").mkdir()
    address.write_address_file(tmp_path / "other" / "master.address", "node8", 41001)
    with pytest.raises(ValueError, match=r"several cwtx SLURM clusters run \(other, solo\)"):
        address.find_master()  # which one is not ours to guess
    monkeypatch.setenv("CWTX_CLUSTER", "other")
    assert slurm.recorded_master() == ("node8", 41001)
    monkeypatch.setenv("CWTX_CLUSTER", "bogus")
    with pytest.raises(ValueError, match="named 'bogus' has a master .* running: other, solo"):
        address.find_master()
    monkeypatch.delenv("CWTX_CLUSTER")
    with pytest.raises(ValueError, match="several cwtx SLURM clusters run"):
        slurm.which_cluster()  # cw slurm stop, status, add with no name say so too
    (tmp_path / "default").mkdir()
    address.write_address_file(tmp_path / "default" / "master.address", "node9", 41002)
    assert slurm.recorded_master() == ("node9", 41002)
    assert slurm.which_cluster() == "default"
    monkeypatch.setenv("CWTX_CLUSTER", "solo")
    assert slurm.which_cluster() == "solo"
    monkeypatch.delenv("CWTX_CLUSTER")
    monkeypatch.setenv("CWTX_MASTER", "elsewhere:1")
    assert address.find_master() == ("elsewhere", 1)


def test_an_address_file_holds_host_and_port_and_nothing_else(tmp_path):
    path = tmp_path / "master.address"
    assert address.read_address_file(path) is None
    address.write_address_file(path, "::1", 5)
    assert path.read_text() == "[::1]:5\n"
    assert address.read_address_file(path) == ("::1", 5)
    path.write_text("")
    with pytest.raises(ValueError, match=f"the master's address file {path}: .*empty"):
        address.read_address_file(path)


def test_the_launcher_is_slurm_where_sbatch_is_and_can_be_forced(monkeypatch, tmp_path):
    from cwtx.launch import local

    monkeypatch.delenv("CWTX_LAUNCHER")
    fake = tmp_path / "sbatch"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert auto.choose() is slurm
    monkeypatch.setenv("PATH", "/nonexistent")
    assert auto.choose() is local
    assert auto.choose("slurm") is slurm
    monkeypatch.setenv("CWTX_LAUNCHER", "slurm")
    assert auto.choose() is slurm
    monkeypatch.setenv("CWTX_LAUNCHER", "pbs")
    with pytest.raises(ValueError, match=r"launcher 'pbs' \(from \$CWTX_LAUNCHER\) is not one"):
        auto.choose()


def test_the_seeds_module_names_exist():
    import cwtx.client
    import cwtx.mp

    assert cwtx.client.ClientThread is cwtx.ClientThread
    assert cwtx.client.ClusterExecutor is cwtx.ClusterExecutor
    assert cwtx.client.RemoteException is cwtx.RemoteError
    assert cwtx.mp.start is cwtx.local.start
    assert cwtx.slurm.master_host is slurm.master_host
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        cwtx.client.Nope  # noqa: B018


def test_python_m_cwtx_worker_is_twistd_in_the_foreground_with_a_bounded_log():
    twistd = ["twistd", "-n", "--pidfile=", "--logger", "cwtx.logfile.observer"]
    assert twistd_arguments(["--master", "h"], "cw-worker") == (
        [*twistd, "cw-worker", "--master", "h"],
        "-",
    )
    assert twistd_arguments(["--logfile", "/l", "-n", "2"], "cw-worker") == (
        [*twistd, "cw-worker", "-n", "2"],
        "/l",
    )
    assert twistd_arguments(["--logfile=/l"], "cw-master") == ([*twistd, "cw-master"], "/l")


@pytest.mark.e2e
def test_python_m_cwtx_worker_and_master_run_their_plugins():
    for role, option in (("worker", "--master-file"), ("master", "--address-file")):
        out = subprocess.run(
            [sys.executable, "-m", f"cwtx.{role}", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert option in out.stdout, out.stderr


def test_cw_takes_option_values_that_are_options_themselves():
    from cwtx import _cli

    argv = ["slurm", "start", "--worker-args", "--mem=4G", "--master-args=--qos=x", "-n", "2"]
    assert _cli._join_option_values(argv) == [
        "slurm", "start", "--worker-args=--mem=4G", "--master-args=--qos=x", "-n", "2",
    ]  # fmt: skip
    args = _cli.parser().parse_args(_cli._join_option_values(argv))
    assert (args.worker_args, args.master_args, args.workers) == ("--mem=4G", "--qos=x", 2)


def test_cw_slurm_list_with_no_clusters_says_where_it_looked(monkeypatch, tmp_path, capsys):
    from cwtx import _cli

    monkeypatch.setenv("CWTX_SLURM_DIR", str(tmp_path))
    assert _cli.main(["slurm", "list"]) == 0
    assert capsys.readouterr().out == f"no cwtx SLURM clusters in {tmp_path}\n"


def test_docker_args_are_words_in_the_script_never_run_by_its_shell():
    script = worker_script(SETTINGS, 1, 25.0, Docker("img", "-e X=$(touch /tmp/p) -v `id`:/a;b"))
    # As the user's shell would have split them, each word quoted.
    words = "-e 'X=$(touch' '/tmp/p)' -v '`id`:/a;b'"
    assert f" --cpus=1 {DOCKER_LOGS} {words} img -m cwtx.worker " in script


@pytest.mark.parametrize(
    ("change", "wrong"),
    [({"grace": "25"}, "grace"), ({"slots": [1]}, "slots"), ({"worker_args": "-x"}, "worker_args")],
)
def test_a_hand_edited_cluster_json_is_an_error_naming_the_field(tmp_path, change, wrong):
    import json

    from cwtx.launch.slurm_state import Setup

    Setup(SETTINGS, 1, 25.0, [], None).save(tmp_path)
    data = json.loads((tmp_path / "cluster.json").read_text())
    (tmp_path / "cluster.json").write_text(json.dumps({**data, **change}))
    with pytest.raises(cwtx.LaunchError, match=f"cannot read how cluster .*: {wrong} of the wrong"):
        Setup.load(tmp_path)
