"""The benchmark's quick mode runs to its table, so it cannot rot (issue 13).
No figure is checked: the benchmark prints them, tests assert no timings."""

import subprocess
import sys

import pytest

from ..conftest import ROOT

# It starts masters, workers and process pools.
pytestmark = pytest.mark.e2e


def test_quick_benchmark_prints_its_table():
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--systems", "cwtx,pool"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| figure | cwtx | ProcessPool |" in done.stdout, done.stdout[-3000:]
    assert "failed" not in done.stderr, done.stderr[-3000:]


@pytest.mark.parametrize("workload", ["W1", "W3"])
def test_profile_prints_each_process(workload):
    done = subprocess.run(
        [sys.executable, "benchmarks/profile.py", "--workload", workload, "--jobs", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for role in ("client", "master", "worker 0", "worker 0 child 0", "worker 1", "all"):
        assert f"\n{role} " in done.stdout, done.stdout
    assert "CPU-bound ceiling" in done.stdout
