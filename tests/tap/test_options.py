"""``twistd cw-master`` and ``twistd cw-worker`` options: bad input is a
usage error that says what was wrong, and the services they build."""

from __future__ import annotations

import socket

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from cwtx.tap import master, worker


def parse(module, *argv: str):
    options = module.Options()
    options.parseOptions(list(argv))
    return options


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--max-retries", "-1"], "--max-retries must be 0 or more"),
        (["--prefetch", "-1"], "--prefetch must be 0 or more"),
        (["--heartbeat-interval", "0"], "must be positive"),
        (["--auth-timeout", "-2"], "must be positive"),
        (["--secret-file", "/nonexistent/secret"], "cannot read the cwtx secret file"),
        (["--http-port-file", "/tmp/p"], "--http-port-file needs --http"),
    ],
)
def test_bad_master_options(argv, complaint):
    with pytest.raises(usage.UsageError, match=complaint):
        parse(master, *argv)


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--master", "a", "--connect", "tcp:a:1"], "give one of --master, --connect and"),
        (["--master", "a", "--master-file", "/f"], "give one of --master, --connect and"),
        (["--master", "http://node:5494"], "--master: 'http://node:5494' looks like a URL"),
        (["--master", "node:0"], "--master: the port in 'node:0'"),
        (["--resources", "{nope"], "--resources is not JSON"),
        (["--resources", "[1, 2]"], "--resources must be a JSON object or NAME=AMOUNT"),
        (["--resources", "gpu"], "'gpu' is not NAME=AMOUNT"),
        (["--resources", "gpu=two"], "--resources: gpu: 'two' is not an amount"),
        (["--resources", "gpu=-1"], "'-1' is not an amount"),
        (["--resources", "9gpu=1"], "is not a resource name"),
        (["--slots", "0"], "must be positive"),
    ],
)
def test_bad_worker_options(argv, complaint):
    with pytest.raises(usage.UsageError, match=complaint):
        parse(worker, *argv)


def test_a_worker_without_master_finds_it_as_clients_do(monkeypatch):
    monkeypatch.setenv("CWTX_MASTER", "envhost:6001")
    assert parse(worker)["address"] == ("envhost", 6001)
    assert parse(worker, "--master", "given")["address"] == ("given", 5494)
    monkeypatch.setenv("CWTX_MASTER", "ftp://nope")
    with pytest.raises(usage.UsageError, match="CWTX_MASTER"):
        parse(worker)


def test_the_services_are_built_from_the_options():
    reactor = MemoryReactorClock()
    service = master.makeService(parse(master, "--listen", "tcp:0", "--prefetch", "0"), reactor)
    (listener, history, signals) = list(service)
    assert listener.listen == "tcp:0" and listener.master.prefetch == 0
    assert listener.master.history is history and listener.master.http is None
    options = parse(worker, "--master", "node7:6000", "--slots", "3", "--name", "w7")
    (supervisor, _) = list(worker.makeService(options, reactor))
    assert len(supervisor.slots) == 3 and supervisor.name == "w7"
    assert repr(supervisor.endpoint) == "node7:6000"
    connect = parse(worker, "--connect", "tcp:host=node8:port=6001")
    (supervisor, _) = list(worker.makeService(connect, reactor))
    assert repr(supervisor.endpoint) == "tcp:host=node8:port=6001"


@pytest.mark.parametrize(
    ("given", "endpoint"),
    [
        ("8080", "tcp:8080:interface=127.0.0.1"),
        ("0", "tcp:0:interface=127.0.0.1"),
        ("tcp:8080", "tcp:8080:interface=127.0.0.1"),
        ("tcp:8080:interface=0.0.0.0", "tcp:8080:interface=0.0.0.0"),
        ("tcp6:8080", "tcp6:8080:interface=\\:\\:1"),
        ("unix:/run/cwtx-dash.sock", "unix:/run/cwtx-dash.sock"),
    ],
)
def test_the_dashboard_listens_on_loopback_unless_told_otherwise(given, endpoint):
    assert parse(master, "--http", given)["http"] == endpoint
    assert parse(master)["http"] is None  # off by default


def test_a_master_with_http_serves_the_dashboard_and_says_where(tmp_path):
    reactor = MemoryReactorClock()
    port_file = tmp_path / "http.port"
    options = parse(
        master, "--listen", "tcp:5999", "--http", "0", "--http-port-file", str(port_file)
    )
    service = master.makeService(options, reactor)
    (listener, _, dashboard, _) = list(service)
    service.startService()
    port = reactor.tcpServers[-1][0]
    assert reactor.tcpServers[-1][3] == "127.0.0.1"  # interface
    assert port_file.read_text().strip() == str(dashboard.port.getHost().port)
    assert listener.master.http.startswith("http://") and "token" not in listener.master.http
    assert listener.master.status()["http"] == listener.master.http
    service.stopService()
    assert listener.master.http is None and port == 0


def test_mtls_needs_client_certificate_authorities(tmp_path):
    from cwtx.tap.mtls import parser

    with pytest.raises(ValueError, match="mtls: needs caCertsDir="):
        parser.parseStreamServer(MemoryReactorClock(), "0", privateKey=str(tmp_path / "k.pem"))
    from cwtx.tap.mtls import _load_cas

    (tmp_path / "cas").mkdir()
    (tmp_path / "cas" / "notes.txt").write_text("not a certificate")
    with pytest.raises(ValueError, match="mtls: no .pem certificates in caCertsDir="):
        _load_cas(str(tmp_path / "cas"))


def test_a_master_publishes_its_address_once_listening_and_withdraws_it_on_stop(tmp_path):
    reactor = MemoryReactorClock()
    path = tmp_path / "master.address"
    argv = ["--listen", "tcp:5999", "--address-file", str(path), "--advertise", "node9"]
    service = master.makeService(parse(master, *argv), reactor)
    service.startService()
    assert path.read_text() == "node9:5999\n"
    service.stopService()
    assert not path.exists()


def test_a_master_leaves_a_newer_masters_address_file_alone(tmp_path):
    from cwtx.client.address import write_address_file

    reactor = MemoryReactorClock()
    path = tmp_path / "master.address"
    service = master.makeService(parse(master, "--address-file", str(path)), reactor)
    service.startService()
    host = path.read_text().rsplit(":", 1)[0]
    assert host == socket.gethostname()  # the default --advertise
    write_address_file(path, "newer", 7000)
    service.stopService()
    assert path.read_text() == "newer:7000\n"


def test_a_worker_reads_its_masters_address_file_at_each_attempt(tmp_path):
    from twisted.internet.error import ConnectError
    from twisted.internet.protocol import Factory

    reactor = MemoryReactorClock()
    path = tmp_path / "master.address"
    options = parse(worker, "--master-file", str(path))
    (supervisor, _) = list(worker.makeService(options, reactor))
    assert repr(supervisor.endpoint) == f"the master named in {path}"
    endpoint = supervisor.endpoint._endpoint
    failure = []
    endpoint.connect(Factory()).addErrback(failure.append)
    assert failure[0].check(ConnectError)
    assert f"no master has written {path} yet" in failure[0].getErrorMessage()
    path.write_text("node3:6100\n")
    endpoint.connect(Factory())
    assert reactor.tcpClients[-1][:2] == ("node3", 6100)
    path.write_text("http://garbage\n")
    endpoint.connect(Factory()).addErrback(failure.append)
    assert "the master's address file" in failure[1].getErrorMessage()


def test_the_workers_short_slots_flag_is_s_not_twistds_n():
    """``twistd -n`` means "do not daemonize": ``cw-worker -n`` meaning
    slots invited ``twistd cw-worker -n 4`` mistakes."""
    assert parse(worker, "--master", "m", "-s", "4")["slots"] == 4
    with pytest.raises(usage.UsageError):
        parse(worker, "--master", "m", "-n", "4")
