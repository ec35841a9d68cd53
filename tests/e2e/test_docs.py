"""
Docs that cannot rot: every Python and shell block in README.md and
docs/*.md runs here, or says in the Markdown why it does not.

The marker vocabulary (an HTML comment on the line before a block, blank
lines between allowed; docs/testing.md#the-docs-blocks):

* no marker: the block runs on its own, in a fresh environment;
* ``<!-- run against a local cluster -->``: the block runs with
  ``$CWTX_MASTER`` naming a local cluster (one, shared by the module);
* ``<!-- run with the previous block -->``: the previous block of the same
  file and language and this one run as one program, as the previous one
  runs;
* ``<!-- run with pytest -->``: a Python block of tests, run by pytest;
* ``<!-- not run: REASON -->``: never run; the reason is required.

Python blocks run as a script of their own; shell blocks with ``bash -euo
pipefail`` (a ``console`` block's ``$ `` lines only), in a copy of this
checkout.  Each runs with a fresh ``HOME`` and run directory; on its own, it
has no secret (a new user's is created on first use); against the local
cluster, it has the cluster's.  The literal default port 5494 in a block
that runs is replaced by a free port, so a block can start a master on it
beside anything else on this machine.  A block must leave no process
behind: what it left is killed by pid and the test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import cwtx
from cwtx.launch.procs import cmdline, is_running, read_pid, terminate

from ..conftest import ROOT

# Every block here starts real processes.
pytestmark = pytest.mark.e2e

#: The Markdown files whose blocks must run.
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Fence languages that are code to run, and how.
LANGUAGES = {
    "python": "python",
    "py": "python",
    "sh": "shell",
    "shell": "shell",
    "bash": "shell",
    "console": "shell",
}
ON_ITS_OWN = "run on its own"
CLUSTER = "run against a local cluster"
PREVIOUS = "run with the previous block"
PYTEST = "run with pytest"
NOT_RUN = "not run:"
#: Seconds one block may run.
BLOCK_TIMEOUT = 90.0
#: The port the docs' examples use, replaced by a free one.
DEFAULT_PORT = "5494"

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
_COMMENT = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, from 1
    language: str  # the fence's info word, "" if none
    code: str
    marker: str | None  # the comment just before it, if any
    previous: Block | None = None  # for PREVIOUS: the block it continues

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str | None:
        return LANGUAGES.get(self.language.lower())

    @property
    def mode(self) -> str:
        """How the block runs: one of the markers, NOT_RUN, or ON_ITS_OWN."""
        if self.marker is None:
            return ON_ITS_OWN
        if self.marker.startswith(NOT_RUN):
            return NOT_RUN
        return self.marker

    @property
    def reason(self) -> str:
        return self.marker[len(NOT_RUN) :].strip() if self.marker else ""

    def program(self) -> str:
        """The code to run: the blocks it continues first."""
        code = self.code
        if self.kind == "shell" and self.language.lower() == "console":
            code = "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ "))
        if self.mode == PREVIOUS and self.previous is not None:
            return self.previous.program() + "\n" + code
        return code

    def runs_as(self) -> str:
        """The mode of the block a chain of continuations starts with."""
        block = self
        while block.mode == PREVIOUS and block.previous is not None:
            block = block.previous
        return block.mode


def parse(path: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the marker before it."""
    lines = (path.read_text() if text is None else text).splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        end = i + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence[0] * len(fence))
            and set(lines[end].strip()) == {fence[0]}
        ):
            end += 1
        body = [line[indent:] if line[:indent].isspace() else line for line in lines[i + 1 : end]]
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        comment = _COMMENT.match(lines[before]) if before >= 0 else None
        block = Block(
            path,
            i + 1,
            m["info"],
            textwrap.dedent("\n".join(body)) + "\n",
            comment["text"] if comment else None,
        )
        if block.mode == PREVIOUS:
            block.previous = next(
                (b for b in reversed(blocks) if b.language == block.language), None
            )
        blocks.append(block)
        i = end + 1
    return blocks


def problems(block: Block) -> list[str]:
    """What is wrong with a block's language or marker, if anything."""
    if not block.language:
        return [
            f"{block.name}: a fenced block with no language: tag it (python, sh, text, ...) "
            "so that code in it runs"
        ]
    if block.kind is None:
        return []
    if block.mode == NOT_RUN and not block.reason:
        return [f"{block.name}: <!-- not run: --> needs its reason"]
    if block.mode not in (ON_ITS_OWN, NOT_RUN, CLUSTER, PREVIOUS, PYTEST):
        return [f"{block.name}: unknown marker <!-- {block.marker} --> (docs/testing.md)"]
    if block.mode == PREVIOUS and block.previous is None:
        return [f"{block.name}: no previous {block.language} block to run with"]
    if block.mode == PYTEST and block.kind != "python":
        return [f"{block.name}: only a Python block runs with pytest"]
    return []


BLOCKS = [block for path in DOCS for block in parse(path)]
CODE = [block for block in BLOCKS if block.kind is not None]


# -- the Markdown itself -------------------------------------------------------------------


def test_every_block_is_tagged_and_marked_as_documented():
    assert CODE, "no code blocks found: is DOCS right?"
    assert [p for block in BLOCKS for p in problems(block)] == []


def test_the_parser_and_the_markers():
    text = """\
intro

<!-- not run: it needs a SLURM cluster -->

```sh
cw slurm start
```

```python
x = 1
```
<!-- run with the previous block -->
  ```python
  print(x)
  ```
<!-- not run:   -->
```bash
true
```
<!-- run me maybe -->
```console
$ echo hi
hi
```
```
untagged
```
"""
    blocks = parse(ROOT / "README.md", text)
    assert [(b.line, b.language, b.mode) for b in blocks] == [
        (5, "sh", NOT_RUN),
        (9, "python", ON_ITS_OWN),
        (13, "python", PREVIOUS),
        (17, "bash", NOT_RUN),
        (21, "console", "run me maybe"),
        (25, "", ON_ITS_OWN),
    ]
    assert blocks[0].reason == "it needs a SLURM cluster"
    assert blocks[2].previous is blocks[1]
    assert blocks[2].program() == "x = 1\n\nprint(x)\n"
    assert blocks[4].program() == "echo hi"
    assert [len(problems(b)) for b in blocks] == [0, 0, 0, 1, 1, 1]


# -- running the blocks --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _commands(bin_dir: Path) -> None:
    """What a user has on PATH after ``pip install .``: python and pip of a
    fresh virtualenv over this interpreter's packages (so a block's
    ``pip install`` goes there, never into this environment), and cw and
    twistd, running this checkout (PYTHONPATH)."""
    python = bin_dir / "python"
    scripts = {  # Python scripts, as pip writes them (cwtx runs twistd as one)
        "pip": "import sys\nfrom pip._internal.cli.main import main\nsys.exit(main())",
        "cw": "import sys\nfrom cwtx._cli import main\nsys.exit(main())",
        "twistd": "from twisted.scripts.twistd import run\nrun()",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!{python}\n{body}\n")
        (bin_dir / name).chmod(0o755)
    # A block must never reach a real SLURM (a machine with a test SLURM
    # would otherwise queue the docs' 32-worker clusters).
    for name in ("sbatch", "squeue", "scancel", "srun", "salloc", "sinfo", "scontrol"):
        (bin_dir / name).write_text(
            f"#!/bin/sh\necho '{name}: no SLURM for the docs blocks: mark this one not run' >&2\n"
            "exit 1\n"
        )
        (bin_dir / name).chmod(0o755)


def _copy_of_this_checkout(into: Path) -> None:
    """This checkout's files (tracked, and new ones not ignored), as they
    are now: what a shell block's relative paths (examples/, .) mean."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)


def _leftovers(where: Path) -> list[int]:
    """Processes still running from pid files under ``where`` (twistd's
    default twistd.pid, cw local's run directory), and stop them."""
    left = []
    for pidfile in where.rglob("*.pid"):
        pid = read_pid(pidfile)
        if pid is not None and is_running(pid) and "cw" in cmdline(pid):
            left.append(pid)
    # A block that removed its pid files (or ran a daemon in a session of
    # its own) is still found: whatever it started runs this block's own
    # virtualenv, whose path is in no other process's command line.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in left:
            pid = int(entry.name)
            if pid != os.getpid() and str(where) in cmdline(pid) and is_running(pid):
                left.append(pid)
    for pid in left:
        terminate(pid)
    return left


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _end_group(pgid: int) -> bool:
    """SIGTERM the process group we started, then SIGKILL; True if any was left."""
    if not _group_alive(pgid):
        return False
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _group_alive(pgid):
            break
    return True


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """The local cluster that blocks marked CLUSTER run against."""
    with cwtx.local.allocate(2, run_dir=tmp_path_factory.mktemp("docs-cluster")) as c:
        yield c


def run_block(block: Block, tmp: Path, cluster=None) -> tuple[int, str]:
    """Run ``block`` in a fresh environment under ``tmp``; its exit code and output."""
    home, run, work, temp = tmp / "home", tmp / "run", tmp / "work", tmp / "tmp"
    for d in (home, run, work, temp):
        d.mkdir()
    env = dict(os.environ)
    for name in ("CWTX_MASTER", "CWTX_SECRET", "CWTX_SECRET_FILE", "CWTX_CLUSTER"):
        env.pop(name, None)
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "PYTHONSTARTUP"):
        env.pop(name, None)
    env.update(
        HOME=str(home),
        CWTX_RUN_DIR=str(run),
        TMPDIR=str(temp),  # so the pid files of what it starts in temporary directories are found
        CWTX_SLURM_DIR=str(tmp / "slurm"),
        CWTX_LAUNCHER="local",  # cwtx.start/allocate would pick SLURM where sbatch is
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if cluster is not None:
        env["CWTX_MASTER"] = f"{cluster.host}:{cluster.port}"
        env["CWTX_SECRET_FILE"] = os.environ["CWTX_SECRET_FILE"]
    code = re.sub(rf"\b{DEFAULT_PORT}\b", str(free_port()), block.program())
    venv = tmp / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
        timeout=60,
    )
    _commands(venv / "bin")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    if block.kind == "python":
        script = work / ("test_block.py" if block.runs_as() == PYTEST else "block.py")
        script.write_text(code)
        if block.runs_as() == PYTEST:
            argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p"]
            argv += ["no:randomly", "--no-cov", str(script)]
        else:
            argv = [sys.executable, str(script)]
    else:
        _copy_of_this_checkout(work)
        env["PYTHONPATH"] = os.pathsep.join([str(work), env.get("PYTHONPATH", "")])
        env["VIRTUAL_ENV"] = str(venv)
        script = tmp / "block.sh"
        script.write_text(code)
        argv = ["bash", "-euo", "pipefail", str(script)]
    output = tmp / "output"
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended below by its id
        )
    try:
        code = proc.wait(BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        left = _end_group(proc.pid)
        proc.wait(10)
        left_elsewhere = _leftovers(tmp)
    text = output.read_text(errors="replace")
    assert code is not None, f"{block.name} ran over {BLOCK_TIMEOUT:g} s:\n{text}"
    assert not left, f"{block.name} left processes running (killed now):\n{text}"
    assert not left_elsewhere, f"{block.name} left {left_elsewhere} running (stopped):\n{text}"
    return code, text


@pytest.mark.timeout(2 * BLOCK_TIMEOUT)
@pytest.mark.parametrize("block", CODE, ids=[block.name for block in CODE])
def test_block(block: Block, tmp_path, request):
    if problems(block):
        pytest.fail("; ".join(problems(block)))
    if block.mode == NOT_RUN:
        pytest.skip(f"not run: {block.reason}")
    cluster = request.getfixturevalue("shared_cluster") if block.runs_as() == CLUSTER else None
    code, output = run_block(block, tmp_path, cluster)
    assert code == 0, f"{block.name} exited with {code}:\n{block.program()}\n---\n{output}"
