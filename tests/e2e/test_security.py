"""
Only the owner runs code, on real processes: mutual HMAC authentication,
limits before and after authentication, hostile bytes, TLS.
"""

from __future__ import annotations

import itertools
import os
import pickle
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from twisted.protocols.amp import AmpBox

import cwtx
from cwtx._secret import load_secret
from cwtx.client import reactor_thread as _reactor_thread
from cwtx.client.status import authenticated, query_status
from cwtx.launch.procs import read_pid, terminate
from cwtx.wire import handshake as _auth
from cwtx.wire.blocking_amp import BlockingAMP
from cwtx.wire.commands import Authenticate, Hello
from cwtx.wire.names import PROTOCOL_VERSION, Role
from cwtx.wire.versions import hello_arguments

from ..conftest import ROOT, SyncClient, spawn_twistd, wait_until

pytestmark = pytest.mark.e2e


#: A valid secret, but not the master's.
WRONG = "wrong-0123456789-abcdefghijklmnopqrstuvwxyz"


def write_secret(path: Path, text: str = WRONG, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_stop_signals_only_cwtx_processes(tmp_path):
    """A stale pid file naming some other process leaves it alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "master.pid").write_text(str(other.pid))
        cwtx.local.stop(tmp_path)
        assert other.poll() is None
        assert not (tmp_path / "master.pid").exists()
    finally:
        other.kill()
        other.wait()


# -- authentication and limits, on a real master --------------------------------------------------


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    """A master with the default settings (a 10 s authentication timeout)."""
    run = tmp_path_factory.mktemp("secure")
    with cwtx.local.allocate(1, run_dir=run) as c:
        yield c


#: The authentication timeout of ``quick_auth_master``, in seconds.
QUICK_AUTH = 2.0


@pytest.fixture
def quick_auth_master(tmp_path):
    with cwtx.local.allocate(
        0, run_dir=tmp_path, master_args=["--auth-timeout", str(QUICK_AUTH)]
    ) as c:
        yield c


#: Each raw connection comes from its own loopback address: the master
#: rate-limits its log lines per peer address, and the tests share a master.
_SOURCES = (f"127.0.{n // 250}.{n % 250 + 2}" for n in itertools.count())


def raw(master, timeout=5.0) -> socket.socket:
    source = (next(_SOURCES), 0)
    return socket.create_connection((master.host, master.port), timeout, source)


def closed_by_peer(sock: socket.socket, timeout: float = 30.0) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def authenticate_raw(master, secret: bytes | None = None) -> BlockingAMP:
    """A connection that has done the handshake (with our secret by default):
    ``send_raw`` seals any bytes into a frame, ``sock`` is the socket."""
    secret = load_secret() if secret is None else secret
    return authenticated(raw(master), secret, Role.CLIENT, "raw", "the test master")


def master_log(master) -> str:
    return (master.run_dir / "master.log").read_text()


def test_client_with_wrong_secret_gets_a_clear_error_and_the_master_logs_it(master, tmp_path):
    wrong = write_secret(tmp_path / "wrong")
    with pytest.raises(cwtx.AuthenticationError) as info:
        _reactor_thread.blocking(cwtx.connect, master.host, master.port, secret_file=str(wrong))
    assert "secret" in str(info.value) and str(wrong) in str(info.value)
    # The master refused our proof after proving itself? No: our check of its
    # proof fails first, since the secrets differ. Drive the master's side too:
    sock = raw(master)
    amp = BlockingAMP(sock)
    mine = _auth.nonce()
    hello = amp.call(Hello, nonce=mine, **hello_arguments("client", "liar"))
    with pytest.raises(cwtx.AuthenticationError, match="different shared secret"):
        amp.call(Authenticate, proof=_auth.proof(b"w" * 40, "client", hello["nonce"], mine))
    assert closed_by_peer(sock)
    wait_until(
        lambda: (
            "client liar (" in master_log(master)
            and "refused and closed: authentication failed" in master_log(master)
        )
    )


def test_worker_with_wrong_secret_never_registers(master, tmp_path):
    wrong = write_secret(tmp_path / "wrong")
    log = tmp_path / "w.log"
    worker = spawn_twistd(
        "cw-worker",
        "--master",
        f"{master.host}:{master.port}",
        "--secret-file",
        str(wrong),
        log=log,
    )
    try:
        wait_until(
            lambda: (
                log.exists()
                and "could not prove it knows our shared secret" in log.read_text(errors="replace")
            ),
            what="the worker's log",
        )

        assert [w["name"] for w in query_status(master.host, master.port)["workers"]] == ["local-0"]
    finally:
        terminate(worker.pid)
        worker.wait(10)


def test_only_the_handshake_before_authentication(master):
    sock = raw(master)
    BlockingAMP(sock).send_raw(AmpBox({b"_command": b"Status", b"_ask": b"1"}).serialize())
    assert closed_by_peer(sock)
    wait_until(lambda: "sent b'Status' before authenticating" in master_log(master))


def test_a_peer_of_an_older_protocol_is_told_why_it_is_refused(master):
    """Protocols 1 and 2 spoke plain AMP; their Hello gets an error they understand."""
    sock = raw(master)
    args = {**hello_arguments("client", "old"), "protocol": 2, "nonce": _auth.nonce()}
    box = Hello.makeArguments(args, None)
    box[b"_command"], box[b"_ask"] = b"Hello", b"1"
    sock.sendall(box.serialize())
    data = b""
    while not data.endswith(b"\0\0"):
        data += sock.recv(65536)
    assert b"REFUSED" in data
    assert f"speaks cwtx protocol {PROTOCOL_VERSION} (sealed frames)".encode() in data
    assert closed_by_peer(sock)


def test_bytes_before_authentication_are_bounded(master):
    sock = raw(master)
    sent = 0
    try:
        for _ in range(100):  # an endless box: keys and values, never finished
            sock.sendall(
                struct.pack("!H", 8) + b"somekey_" + struct.pack("!H", 60_000) + b"v" * 60_000
            )
            sent += 60_012
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert sent < 6_000_000
    assert closed_by_peer(sock)


def test_connections_that_never_authenticate_are_closed(quick_auth_master):
    master = quick_auth_master
    started = time.monotonic()
    socks = [raw(master) for _ in range(50)]
    slow = raw(master)  # one that sends a byte at a time, never finishing
    for byte in (struct.pack("!H", 8) + b"_command" + struct.pack("!H", 5) + b"Hel")[:12]:
        slow.send(bytes([byte]))
    assert all(closed_by_peer(s) for s in [*socks, slow])
    # At the timeout: not before it, and not long after (the wait above
    # allows 30 s, so that a loaded machine does not fail it).
    elapsed = time.monotonic() - started
    assert QUICK_AUTH * 0.9 < elapsed < QUICK_AUTH + 20
    assert query_status(master.host, master.port)["master"]


def test_protocol_version_mismatch_is_named(master):
    sock = raw(master)
    args = hello_arguments("client", "future")
    args["protocol"] = 999
    with pytest.raises(cwtx.ProtocolMismatch, match=f"protocol {PROTOCOL_VERSION}.*protocol 999"):
        BlockingAMP(sock).call(Hello, nonce=_auth.nonce(), **args)
    assert closed_by_peer(sock)


def test_the_master_never_unpickles_user_data(master, tmp_path):
    """A malicious pickle as the job's "function": only a worker runs it."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            code = f"import os, sys; open({str(marker)!r}, 'a').write(' '.join(sys.argv) + '\\n')"
            return (exec, (code,))

    evil = pickle.dumps(Payload())
    client = SyncClient(master)
    try:
        from cwtx.client.client import JobOptions
        from cwtx.client.serialize import FunctionDef, current_env, pickle_arguments
        from cwtx.wire.names import function_hash

        env = current_env()
        fn = FunctionDef(function_hash(env, [evil]), env, evil)
        future = _reactor_thread.call(
            lambda: client.client.submit_pickled(JobOptions(), fn, pickle_arguments((), {}))
        )
        with pytest.raises(TypeError, match="not callable"):  # exec returned None
            future.result(60)
        ran = marker.read_text()
        # Run by a worker's slot child only (its argv), never by the master.
        assert ran.strip().endswith("cwtx/worker/child.py") and "cw-master" not in ran
        assert client.run(abs, -5) == 5  # the master is unaffected
    finally:
        client.close()


def test_bad_input_after_authentication_closes_only_that_connection(master):
    amp = authenticate_raw(master)
    bad = AmpBox({b"_command": b"SubmitJobs", b"_ask": b"9", b"jobs": b"\x00\x01garbage"})
    amp.send_raw(bad.serialize())
    assert closed_by_peer(amp.sock)
    unsealed = authenticate_raw(master)
    unsealed.sock.sendall(b"\x00\x00\x00\x05\x00hello")  # a plain frame on a sealed session
    assert closed_by_peer(unsealed.sock)
    wait_until(lambda: "a frame of kind 0 on a session sealed" in master_log(master))
    client = SyncClient(master)
    try:
        assert client.run(abs, -6) == 6
    finally:
        client.close()


# -- hostile bytes: fuzzing the master's port ---------------------------------------------------


def master_rss(master) -> int:
    pid = read_pid(master.run_dir / "master.pid")
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def test_fuzz_the_masters_port_while_a_real_client_works(master):
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client = SyncClient(master)
    done = []

    def real_work():
        for i in range(40):
            done.append(client.run(abs, -i))

    import threading

    worker = threading.Thread(target=real_work)
    worker.start()
    before = master_rss(master)

    def frame(key: bytes, value: bytes) -> bytes:
        return struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value

    commands = st.sampled_from(
        [
            b"Hello",
            b"Authenticate",
            b"SubmitJobs",
            b"BlobChunk",
            b"JobResults",
            b"Status",
            b"Nope",
            b"",
            b"\xff" * 300,
        ]
    )
    values = st.binary(max_size=2000)
    boxes = st.builds(
        lambda cmd, pairs, truncate, authed: (cmd, pairs, truncate, authed),
        commands,
        st.lists(st.tuples(st.binary(min_size=0, max_size=300), values), max_size=6),
        st.integers(min_value=0, max_value=50),
        st.sampled_from(["raw", "plain frame", "sealed frame"]),
    )

    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(boxes)
    def throw(example):
        cmd, pairs, truncate, how = example
        data = frame(b"_command", cmd) + frame(b"_ask", b"7")
        for key, value in pairs:
            data += struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value
        data += b"\x00\x00"
        if truncate:
            data = data[: max(1, len(data) - truncate)]
        if how == "sealed frame":
            amp = authenticate_raw(master)
            sock, data = amp.sock, amp.framer.frame(data)
        else:
            sock = raw(master)
            if how == "plain frame":
                data = BlockingAMP(sock).framer.frame(data)
        try:
            sock.sendall(data)
        except OSError:
            pass
        sock.close()

    throw()

    # Wrong types, oversized keys, slow senders, a flood.
    for payload in [
        frame(b"_command", b"SubmitJobs") + frame(b"_ask", b"x") + frame(b"jobs", b"1") + b"\0\0",
        struct.pack("!H", 60_000) + b"k" * 60_000,
        frame(b"_command", b"BlobChunk")
        + frame(b"_ask", b"1")
        + frame(b"blob", b"1")
        + frame(b"data", b"many")
        + b"\0\0",
    ]:
        amp = authenticate_raw(master)
        try:
            amp.send_raw(payload)
        except OSError:
            pass
        assert closed_by_peer(amp.sock)
    flood = [raw(master) for _ in range(200)]
    for s in flood:
        s.close()

    worker.join(120)
    assert done == list(range(40))
    assert client.run(abs, -41) == 41
    client.close()
    assert query_status(master.host, master.port)["workers"]
    assert master_rss(master) - before < 50, "the master's memory grew"


def test_worker_survives_garbage_on_its_result_pipe(master):
    """A job that writes garbage to the supervisor's pipe is killed and lost;
    the worker keeps serving."""
    client = SyncClient(master)
    try:

        def scribble():
            os.write(4, b"\xff\xff\xff\xff garbage on the result pipe")
            import time as _t

            _t.sleep(5)

        future = _reactor_thread.call(lambda: client.client.options(max_retries=0).submit(scribble))
        with pytest.raises(cwtx.JobLost, match="corrupt data on the result pipe"):
            future.result(60)
        assert client.run(abs, -7) == 7
    finally:
        client.close()


# -- TLS ------------------------------------------------------------------------------------------


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for localhost, a client certificate."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def cert(subject, key, issuer, issuer_key, ca=False, sans=(), expired=False):
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
        if expired:
            start, end = now - datetime.timedelta(days=3), now - datetime.timedelta(days=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(path: Path, *objects) -> Path:
        data = b""
        for o in objects:
            if isinstance(o, x509.Certificate):
                data += o.public_bytes(serialization.Encoding.PEM)
            else:
                data += o.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
        path.write_bytes(data)
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("cwtx test CA", ca_key, "cwtx test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = cert(
        "localhost",
        server_key,
        "cwtx test CA",
        ca_key,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    expired_server = cert(
        "localhost",
        server_key,
        "cwtx test CA",
        ca_key,
        sans=[x509.DNSName("localhost")],
        expired=True,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = cert("cwtx client", client_key, "cwtx test CA", ca_key)
    expired_client = cert("cwtx client", client_key, "cwtx test CA", ca_key, expired=True)
    cas = directory / "cas"
    cas.mkdir()
    write(cas / "ca.pem", ca)
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    other = directory / "other-cas"
    other.mkdir()
    write(other / "other.pem", cert("other CA", other_ca_key, "other CA", other_ca_key, ca=True))
    return {
        "cas": cas,
        "other_cas": other,
        "server": write(directory / "server.pem", server, server_key),
        "client": write(directory / "client.pem", client, client_key),
        "expired_server": write(directory / "expired-server.pem", expired_server, server_key),
        "expired_client": write(directory / "expired-client.pem", expired_client, client_key),
    }


def start_tls_master(tmp_path: Path, listen: str) -> tuple[subprocess.Popen, int]:
    port_file = tmp_path / "port"
    proc = spawn_twistd(
        "cw-master",
        "--listen",
        listen,
        "--port-file",
        str(port_file),
        log=tmp_path / "master.log",
    )
    try:
        wait_until(lambda: port_file.exists() or proc.poll() is not None, what="the TLS master")
        assert proc.poll() is None, (tmp_path / "master.log").read_text()
        return proc, int(port_file.read_text())
    except BaseException:
        terminate(proc.pid)
        proc.wait(10)
        raise


def start_worker(tmp_path: Path, connect: str) -> subprocess.Popen:
    return spawn_twistd("cw-worker", "--connect", connect, log=tmp_path / "worker.log")


def tls_client(endpoint: str):
    return _reactor_thread.blocking(cwtx.connect, endpoint=endpoint, connect_timeout=10)


def run_job(client, fn, *args):
    return _reactor_thread.call(lambda: client.submit(fn, *args)).result(60)


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_tls_master_workers_and_clients(tmp_path, mutual):
    pytest.importorskip("OpenSSL")
    certs = make_certificates(tmp_path)
    scheme = "mtls" if mutual else "ssl"
    listen = f"{scheme}:0:interface=127.0.0.1:privateKey={certs['server']}"
    client_end = f"tls:localhost:{{port}}:trustRoots={certs['cas']}"
    if mutual:
        listen += f":caCertsDir={certs['cas']}"
        client_end += f":certificate={certs['client']}:privateKey={certs['client']}"

    master, port = start_tls_master(tmp_path, listen)
    worker = start_worker(tmp_path, client_end.format(port=port))
    try:
        client = tls_client(client_end.format(port=port))
        try:
            wait_until(
                lambda: _reactor_thread.blocking(client.status)["workers"],
                what="the worker to register over TLS",
            )
            assert run_job(client, pow, 2, 20) == 2**20
        finally:
            _reactor_thread.blocking(client.close)
        # A client that does not trust the master's CA refuses to talk to it.
        untrusting = f"tls:localhost:{port}:trustRoots={certs['other_cas']}"
        if mutual:
            untrusting += f":certificate={certs['client']}:privateKey={certs['client']}"
        with pytest.raises(ConnectionError, match="TLS failed: the master's certificate is not"):
            tls_client(untrusting)
        if mutual:
            # Without a client certificate the master refuses the connection.
            with pytest.raises(ConnectionError, match="TLS failed"):
                tls_client(f"tls:localhost:{port}:trustRoots={certs['cas']}")
        # A certificate for another host name.
        not_for = "TLS failed: the master's certificate is not for"
        with pytest.raises(ConnectionError, match=not_for):
            # Connect to the master, but expect the certificate of "elsewhere".
            wrong_host = (
                f"tls:elsewhere:{port}:trustRoots={certs['cas']}:endpoint=tcp\\:127.0.0.1\\:{port}"
            )
            if mutual:
                wrong_host += f":certificate={certs['client']}:privateKey={certs['client']}"
            tls_client(wrong_host)
    finally:
        for proc in (worker, master):
            terminate(proc.pid)
            proc.wait(10)


def test_tls_failures_say_that_tls_failed_and_why(tmp_path):
    """OpenSSL calls every rejected certificate "certificate verify failed";
    clients and workers say which way it failed."""
    pytest.importorskip("OpenSSL")
    certs = make_certificates(tmp_path)
    expired = f"ssl:0:interface=127.0.0.1:privateKey={certs['expired_server']}"
    mutual = f"mtls:0:interface=127.0.0.1:privateKey={certs['server']}:caCertsDir={certs['cas']}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    masters = [start_tls_master(tmp_path / "a", expired)]
    masters.append(start_tls_master(tmp_path / "b", mutual))
    (_, expired_port), (_, mutual_port) = masters
    worker = start_worker(tmp_path, f"tls:localhost:{mutual_port}:trustRoots={certs['other_cas']}")
    worker_log = tmp_path / "worker.log"
    try:
        with pytest.raises(
            ConnectionError, match="TLS failed: the master's certificate has expired"
        ):
            tls_client(f"tls:localhost:{expired_port}:trustRoots={certs['cas']}")
        ours = f"trustRoots={certs['cas']}:certificate={certs['expired_client']}"
        with pytest.raises(ConnectionError, match="TLS failed: the master refused our certificate"):
            tls_client(f"tls:localhost:{mutual_port}:{ours}:privateKey={certs['expired_client']}")
        not_trusted = "TLS failed: the master's certificate is not signed by an authority we trust"
        wait_until(
            lambda: worker_log.exists() and not_trusted in worker_log.read_text(errors="replace"),
            what="the worker to say why TLS failed",
        )
    finally:
        for proc, _ in masters:
            terminate(proc.pid)
            proc.wait(10)
        terminate(worker.pid)
        worker.wait(10)


def test_default_secret_needs_no_flags(tmp_path):
    """No secret configured: master, workers and clients all create or find
    ~/.config/cwtx/secret (here under a throwaway XDG_CONFIG_HOME)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CWTX_SECRET_FILE", "CWTX_SECRET")}
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        CWTX_RUN_DIR=str(tmp_path / "run"),
        PYTHONPATH=str(ROOT),
    )
    script = (
        "import cwtx\n"
        "with cwtx.allocate(1) as c, cwtx.ClusterExecutor() as ex:\n"
        "    print(ex.submit(pow, 2, 5).result(60))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "32"
    secret = tmp_path / "config" / "cwtx" / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
