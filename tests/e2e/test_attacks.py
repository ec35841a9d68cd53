"""
Hostile peers that know the secret, against a real master: each attack is
refused or throttled at a bound, the master's memory stays bounded, and an
honest client is served throughout.
"""

from __future__ import annotations

import os
import socket
import threading
from itertools import count

import pytest
from twisted.protocols.amp import AmpBox

import cwtx
from cwtx._secret import load_secret
from cwtx.client.status import authenticated
from cwtx.wire.blocking_amp import BlockingAMP
from cwtx.wire.commands import BlobChunk, Status, SubmitJobs
from cwtx.wire.names import Role, function_hash
from tests.conftest import rss_mib

from ..conftest import SyncClient, wait_until

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
LIMITS = [
    "--max-client-bytes",
    str(32 * MiB),
    "--max-client-jobs",
    "1000",
    "--heartbeat-interval",
    "0.5",
    "--heartbeat-timeout",
    "5",
]


@pytest.fixture
def master(tmp_path):
    with cwtx.local.allocate(1, run_dir=tmp_path, master_args=LIMITS) as c:
        yield c


def hostile(cluster) -> BlockingAMP:
    sock = socket.create_connection((cluster.host, cluster.port), timeout=10)
    return authenticated(sock, load_secret(), Role.CLIENT, "hostile", "the master")


_tags = count(1000)


def ask(amp: BlockingAMP, command, **arguments) -> None:
    """Send a command and do not wait for its answer."""
    box = command.makeArguments(arguments, None)
    box[b"_command"], box[b"_ask"] = command.commandName, str(next(_tags)).encode()
    amp.send_raw(box.serialize())


def closed(amp: BlockingAMP, timeout: float = 30.0) -> bool:
    amp.sock.settimeout(timeout)
    try:
        while amp.sock.recv(1 << 20):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def honest_client_works(cluster) -> None:
    client = SyncClient(cluster)
    try:
        assert client.run(abs, -3) == 3
    finally:
        client.close()


def held_and_said(cluster, grown_from: float, at_most_mib: float, logged: str) -> None:
    """After an attack: the master grew by less than ``at_most_mib``, said
    why it refused (``logged`` in its log), and still serves an honest client."""
    assert rss_mib(cluster) - grown_from < at_most_mib
    wait_until(lambda: logged in master_log(cluster), what=repr(logged))
    honest_client_works(cluster)


def job(
    job_id: int,
    fn: bytes,
    env: str = "",
    code: bytes = b"",
    code_blob: int = 0,
    resources: str = "{}",
) -> dict:
    return {
        "job": job_id,
        "fn": fn,
        "fn_env": env,
        "fn_code": code,
        "fn_code_blob": code_blob,
        "args": b"",
        "args_blob": 0,
        "refs": b"",
        "timeout": 0.0,
        "max_retries": -1,
        "priority": 0,
        "resources": resources,
        "forward_output": 0,
    }


def test_blobs_with_fresh_ids_are_counted_and_capped(master):
    before = rss_mib(master)
    amp = hostile(master)
    try:
        for blob in range(1, 200_001):
            ask(amp, BlobChunk, blob=blob, data=[])
    except OSError:
        pass  # the master closed the connection while we were still sending
    assert closed(amp)
    held_and_said(master, before, 30, "blobs streamed and not yet claimed")


def test_function_code_counts_against_the_clients_bytes(master):
    before = rss_mib(master)
    amp = hostile(master)
    try:
        for n in range(4):  # 4 functions of 12 MiB against a limit of 32 MiB
            code = os.urandom(12 * MiB)
            blob = n + 1
            for start in range(0, len(code), 16 * 65_000):
                pieces = [
                    code[i : i + 65_000]
                    for i in range(start, min(len(code), start + 16 * 65_000), 65_000)
                ]
                ask(amp, BlobChunk, blob=blob, data=pieces)
            fn = function_hash("{}", [code])
            # Jobs no worker here can run stay live, and their functions count
            # (one that ran and ended would leave its function to the cache).
            ask(amp, SubmitJobs, jobs=[job(n + 1, fn, "{}", b"", blob, '{"gpu": 1}')])
    except OSError:
        pass
    assert closed(amp)
    held_and_said(master, before, 120, "functions would hold over")


def test_a_client_that_ignores_flow_control_is_closed_at_its_limit(master):
    before = rss_mib(master)
    amp = hostile(master)
    code = b"not really a function"
    fn = function_hash("{}", [code])
    ids = count(1)
    try:
        ask(amp, SubmitJobs, jobs=[job(next(ids), fn, "{}", code)])
        for _ in range(100):  # 100 batches of 500 jobs, never waiting for an answer
            ask(amp, SubmitJobs, jobs=[job(next(ids), fn) for _ in range(500)])
    except OSError:
        pass
    assert closed(amp)
    held_and_said(master, before, 30, "ignores flow control")


def test_a_peer_that_never_reads_its_replies_is_throttled_then_dropped(master):
    before = rss_mib(master)
    amp = hostile(master)
    amp.sock.settimeout(5)
    sent = 0
    try:
        for _ in range(500_000):  # status requests, never reading one reply
            ask(amp, Status, page=0)
            sent += 1
    except OSError:
        pass  # the master stopped reading us: our socket buffers filled
    assert sent < 500_000, "the master kept reading"
    assert rss_mib(master) - before < 30
    honest_client_works(master)  # while the hostile peer is stuck
    assert closed(amp), "a peer that reads nothing is dropped (it answers no heartbeat)"


class Deaf:
    """A hostile client that reads everything the master sends and answers
    its heartbeats (so it stays connected), but never answers JobResults."""

    def __init__(self, amp: BlockingAMP) -> None:
        self.amp = amp
        self.lock = threading.Lock()  # one sender at a time: frames are counted
        self.gone = threading.Event()
        amp.sock.settimeout(None)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                box = self.amp._read_box()
                if box.get(b"_command") == b"Heartbeat":
                    with self.lock:
                        self.amp.send_raw(AmpBox({b"_answer": box[b"_ask"]}).serialize())
        except Exception:
            self.gone.set()

    def ask(self, command, **arguments) -> None:
        with self.lock:
            ask(self.amp, command, **arguments)


def test_a_client_that_never_takes_its_results_is_held_back_then_closed(master):
    """Jobs naming a function never sent are refused at once, each with an
    error result; results the client does not take count against its
    limits like the jobs it has in flight, so the master does not hold
    them without end."""
    before = rss_mib(master)
    deaf = Deaf(hostile(master))
    fn = function_hash("{}", [b"never sent"])
    ids = count(1)
    try:
        for _ in range(400):  # up to 200,000 jobs, never waiting for an answer
            deaf.ask(SubmitJobs, jobs=[job(next(ids), fn) for _ in range(500)])
            if deaf.gone.is_set():
                break
    except OSError:
        pass
    assert deaf.gone.wait(60), "the master kept taking jobs from a client that takes no results"
    held_and_said(master, before, 30, "ignores flow control")


def master_log(cluster) -> str:
    return (cluster.run_dir / "master.log").read_text()
