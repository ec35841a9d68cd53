"""
The bugs issue 14 named, planted one at a time: each must make its tests
fail.  Run from the checkout's root (it edits files in place and always
restores them; run it on a clean tree):

    python tests/named_mutants.py            # all of them (a few minutes)
    python tests/named_mutants.py nonce      # those whose name contains "nonce"

Each line prints KILLED or SURVIVED; the exit status is the number of survivors.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name, file, the code, the planted bug, the tests that must catch it
# (the bugs of issue 14, then those an adversarial review of issue 9 found)
MUTANTS = [
    (
        "master nonce made constant",
        "cwtx/master/connection.py",
        "mine = auth.nonce()",
        'mine = b"\\0" * 32',
        ["tests/master/test_connection.py"],
    ),
    (
        "master accepts a proof labelled master",
        "cwtx/master/connection.py",
        "if not auth.verify(self._secret, conn.role, mine, theirs, proof):",
        "if not (auth.verify(self._secret, conn.role, mine, theirs, proof)"
        " or auth.verify(self._secret, 'master', theirs, mine, proof)):",
        ["tests/master/test_connection.py"],
    ),
    (
        "per-client byte limit removed",
        "cwtx/master/sessions.py",
        "return held > self.max_bytes or len(self.jobs) + self.unsent > self.max_jobs",
        "return len(self.jobs) + self.unsent > self.max_jobs",
        ["tests/master/test_bookkeeping.py", "tests/test_memory_cluster.py"],
    ),
    (
        "MAX_BOX_BYTES removed",
        "cwtx/master/connection.py",
        "MAX_BOX_BYTES = 8 * 1024 * 1024",
        "MAX_BOX_BYTES = 1 << 40",
        ["tests/master/test_connection.py"],
    ),
    (
        "unclaimed-blob limit removed",
        "cwtx/master/connection.py",
        "        self.blobs_in.max_bytes = MAX_UNCLAIMED_BYTES\n",
        "",
        ["tests/master/test_connection.py"],
    ),
    (
        "the real Slot never arms its timeout",
        "cwtx/worker/slot.py",
        "self._timer = self._clock.callLater(task.timeout, self.kill, JobStatus.TIMEOUT)",
        "pass",
        ["tests/worker/test_slot.py", "tests/test_memory_cluster.py"],
    ),
    (
        "a job cancelled in the worker's prefetch queue still runs",
        "cwtx/worker/supervisor.py",
        "            if waiting:",
        "            if False:",
        ["tests/test_memory_cluster.py"],
    ),
    (
        "client-to-master cancels disabled",
        "cwtx/client/client.py",
        "if pending.sent and proto is not None and not proto.dead:",
        "if False:",
        ["tests/e2e/test_clients.py::test_cancel_queued_future_never_runs"],
    ),
    (
        "the client's duplicate-result guard removed",
        "cwtx/client/client.py",
        "            self.ignored_results += 1  # cancelled here already, or a duplicate\n"
        "            return\n",
        "            self.ignored_results += 1\n",
        ["tests/test_memory_cluster.py"],
    ),
    (
        "max_retries=0 from a client becomes the master's default",
        "cwtx/client/client.py",
        '"max_retries": -1 if o.max_retries is None else o.max_retries,',
        '"max_retries": o.max_retries or -1,',
        ["tests/test_memory_cluster.py"],
    ),
    (
        "a retried job requeued at the back",
        "cwtx/master/policy.py",
        "            level.appendleft(job)\n",
        "            level.append(job)\n",
        ["tests/master/test_bookkeeping.py"],
    ),
    (
        "a group-readable secret file accepted",
        "cwtx/_secret.py",
        "if info.st_mode & 0o077:",
        "if info.st_mode & 0o007:",
        ["tests/test_secret.py"],
    ),
    (
        "dispatch to a worker with a mismatched Python",
        "cwtx/master/policy.py",
        "if compatible(versions, w.session.versions) and w.session.name not in failed:",
        "if w.session.name not in failed:",
        ["tests/master/test_bookkeeping.py", "tests/test_secret.py"],
    ),
    (
        "priority ignored",
        "cwtx/master/policy.py",
        "priority = job.options.priority",
        "priority = 0",
        [
            "tests/master/test_bookkeeping.py",
            "tests/e2e/test_clients.py::test_priority_orders_the_queue_at_the_master",
        ],
    ),
    (
        "a worker that loses its master keeps its tasks",
        "cwtx/worker/supervisor.py",
        "        if self.connection is not proto:\n"
        "            return\n"
        "        self.connection = None\n",
        "        return\n",
        ["tests/test_memory_cluster.py"],
    ),
    (
        "bytes after the box that seals a session taken as sealed",
        "cwtx/wire/peer.py",
        "            if self._boxes_in_frame > 1:",
        "            if False:",
        ["tests/test_relay.py", "tests/wire/test_peer.py"],
    ),
    (
        "results a client has not taken are not counted",
        "cwtx/master/sessions.py",
        "        self.unsent += 1\n        self.unsent_bytes += _result_size(item)\n",
        "",
        ["tests/master/test_bookkeeping.py"],
    ),
    (
        "a worker's error text nested too deep orphans its job",
        "cwtx/_errors.py",
        "except (ValueError, RecursionError):",
        "except ValueError:",
        ["tests/master/test_bookkeeping.py", "tests/test_errors.py"],
    ),
    # issue 11: the scheduler
    (
        "an attempt counted without a start report",
        "cwtx/master/master.py",
        "counted=started or suspect)",
        "counted=True)",
        ["tests/master/test_policy.py", "tests/test_memory_cluster.py"],
    ),
    (
        "no work stealing",
        "cwtx/master/policy.py",
        "        if not self._hungry or not self._victims:\n            return []",
        "        if True:\n            return []",
        ["tests/master/test_policy.py", "tests/test_memory_scheduling.py"],
    ),
    (
        "fair share ignores what clients hold",
        "cwtx/master/policy.py",
        "return (-self.tier, self.load / self.weight, self.vpass)",
        "return (-self.tier, 0, self.vpass)",
        ["tests/master/test_policy.py"],
    ),
    (
        "fair share charges jobs, not the slot time they take",
        "cwtx/master/policy.py",
        "            client.vpass += seconds / client.weight\n",
        "            pass\n",
        ["tests/master/test_policy.py"],
    ),
    (
        "the worker starts tasks as they came, not in the master's order",
        "cwtx/worker/supervisor.py",
        "bisect.insort(self.queue, (task.order, next(self._arrivals), task))",
        "bisect.insort(self.queue, (0, next(self._arrivals), task))",
        ["tests/test_memory_scheduling.py"],
    ),
    (
        "resources oversubscribed",
        "cwtx/master/policy.py",
        "            and fits(job.options.needs, w.avail)\n",
        "            and fits(job.options.needs, w.session.amounts)\n",
        ["tests/master/test_policy.py"],
    ),
    (
        "a job is not told the devices it holds",
        "cwtx/worker/slot.py",
        "        if task.held:\n",
        "        if False:\n",
        ["tests/test_memory_scheduling.py"],
    ),
    (
        "priority clients not first",
        "cwtx/master/policy.py",
        "tier = int(any(fnmatchcase(session.name, p) for p in self.priority_clients))",
        "tier = 0",
        ["tests/master/test_policy.py", "tests/test_memory_scheduling.py"],
    ),
    (
        "start reports never sent",
        "cwtx/worker/supervisor.py",
        "                    self.connection.started.add(item)",
        "                    pass",
        ["tests/test_memory_scheduling.py", "tests/test_memory_cluster.py"],
    ),
]


def run(name: str, path: str, old: str, new: str, tests: list[str]) -> bool:
    """Plant the bug, run the tests, restore; True if the tests caught it."""
    file = ROOT / path
    source = file.read_text()
    file.write_text(source.replace(old, new))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "--no-cov", *tests],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        file.write_text(source)
    return result.returncode != 0


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTANTS if not argv or any(a in m[0] for a in argv)]
    for name, path, old, _, _ in chosen:  # all stale entries at once, before any run
        found = (ROOT / path).read_text().count(old)
        if found != 1:
            print(f"{name}: the code to mutate occurs {found} times in {path}")
    if any((ROOT / m[1]).read_text().count(m[2]) != 1 for m in chosen):
        return 1
    survivors = 0
    for mutant in chosen:
        caught = run(*mutant)
        survivors += not caught
        print(f"{'KILLED  ' if caught else 'SURVIVED'} {mutant[0]}", flush=True)
    return survivors


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
