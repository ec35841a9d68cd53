"""The code base stays ruff clean (ruff.toml), checked and formatted."""

import subprocess
import sys

import pytest

from ..conftest import ROOT

# ruff runs as a process.
pytestmark = pytest.mark.e2e

PATHS = ["cwtx", "twisted", "tests", "examples", "benchmarks"]


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    # From the test extra, so it runs wherever the tests run: never skipped.
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ruff_is_installed():
    result = ruff("--version")
    assert result.returncode == 0, "ruff is missing: pip install '.[test]'\n" + result.stderr


def test_ruff_check_clean():
    result = ruff("check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_clean():
    result = ruff("format", "--check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr
