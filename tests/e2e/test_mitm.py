"""
A man in the middle, on real processes: a fake master that does not know
the secret relays a victim's handshake to the real master (which proves the
secret for it), then injects its own messages.  The victim worker runs none
of its code, and the victim client unpickles none of its pickles.
"""

from __future__ import annotations

import pickle
import socket
import struct
import threading
from pathlib import Path

import pytest
from twisted.protocols.amp import AmpBox

import cwtx
from cwtx.client.serialize import pickle_arguments, pickle_function
from cwtx.launch.procs import terminate
from cwtx.wire.commands import JobResults, RunTasks
from cwtx.wire.session import Framer

from ..conftest import spawn_twistd, wait_until

pytestmark = pytest.mark.e2e

FRAME = struct.Struct("!IB")


class FakeMaster:
    """Relays bytes between victims and the real master.  Once the real
    master's second frame (the answer to Authenticate) has reached a victim,
    it sends that victim ``inject``, bytes of its own making."""

    def __init__(self, master: tuple[str, int], inject: bytes) -> None:
        self.master = master
        self.inject = inject
        self.injected = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                victim, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.master)
            self._sockets += [victim, upstream]
            threading.Thread(target=self._pump, args=(victim, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, victim, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_master: bool) -> None:
        buffer, frames = b"", 0
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if not from_master or self.injected.is_set():
                    continue
                buffer += data
                while len(buffer) >= FRAME.size:
                    length = FRAME.unpack_from(buffer)[0]
                    if len(buffer) < FRAME.size + length:
                        break
                    buffer, frames = buffer[FRAME.size + length :], frames + 1
                    if frames == 2:  # Hello's answer, then Authenticate's
                        self.injected.set()
                        sink.sendall(self.inject)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        for s in self._sockets:
            s.close()


def plain_frame(command: type, **arguments) -> bytes:
    box = command.makeArguments(arguments, None)
    box[b"_command"], box[b"_ask"] = command.commandName, b"666"
    return Framer().frame(AmpBox(box).serialize())


def touch(path: str) -> None:
    Path(path).write_text("the attacker's code ran")


@pytest.fixture
def master(tmp_path):
    with cwtx.local.allocate(1, run_dir=tmp_path / "run") as c:
        yield c


def test_a_worker_behind_a_fake_master_runs_nothing_it_sends(master, tmp_path):
    marker = tmp_path / "pwned"
    fn = pickle_function(touch)
    evil = plain_frame(
        RunTasks,
        tasks=[
            {
                "task": 1,
                "session": 1,
                "fn": fn.hash,
                "fn_env": fn.env,
                "fn_code": fn.code,
                "fn_code_blob": 0,
                "args": pickle_arguments((str(marker),), {}),
                "args_blob": 0,
                "refs": b"",
                "timeout": 0.0,
                "resources": "{}",
                "order": 0.0,
                "forward_output": 0,
            }
        ],
    )
    fake = FakeMaster((master.host, master.port), evil)
    log = tmp_path / "victim.log"
    victim = spawn_twistd(
        "cw-worker", "--master", f"127.0.0.1:{fake.port}", "--name", "victim", log=log
    )
    try:
        assert fake.injected.wait(30), "the handshake never went through the fake master"
        wait_until(
            lambda: "a frame of kind 0 on a session sealed" in log.read_text(errors="replace"),
            what="the victim to drop the fake master",
        )
        # The honest work the real master sends through the relay still runs.
        with cwtx.ClusterExecutor(master.host, master.port) as ex:
            assert sorted(ex.map(abs, range(-6, 0), timeout=60)) == [1, 2, 3, 4, 5, 6]
        assert not marker.exists()
    finally:
        terminate(victim.pid)
        victim.wait(10)
        fake.close()


class Exploit:
    """Unpickling this would write the marker."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (touch, (self.path,))


def test_a_client_behind_a_fake_master_unpickles_nothing_it_sends(master, tmp_path):
    marker = tmp_path / "pwned"
    forged = {
        "job": 1,
        "status": "ok",
        "value": pickle.dumps(Exploit(str(marker))),
        "value_blob": 0,
        "error": "",
    }
    fake = FakeMaster((master.host, master.port), plain_frame(JobResults, results=[forged]))
    try:
        with cwtx.ClusterExecutor("127.0.0.1", fake.port) as ex:
            assert fake.injected.wait(30)
            # The forged result was refused and the connection dropped; the
            # client reconnects (through the relay, which relays honestly now)
            # and its job runs on the real cluster.
            assert ex.submit(abs, -9).result(60) == 9
            assert ex._client.reconnects >= 1
        assert not marker.exists()
    finally:
        fake.close()


def test_the_relay_did_go_through(master, tmp_path):
    """Without a relay to inject, the fake master passes everything along
    (so the tests above attack a working path)."""
    fake = FakeMaster((master.host, master.port), b"")
    try:
        with cwtx.ClusterExecutor("127.0.0.1", fake.port) as ex:
            assert ex.submit(pow, 2, 10).result(60) == 1024
            assert ex._client.reconnects == 0
    finally:
        fake.close()
