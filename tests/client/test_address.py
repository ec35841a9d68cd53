"""Where the master is: reading an address, and the lookup chain."""

from __future__ import annotations

import os

import pytest

from cwtx.client import address
from cwtx.client.address import PORT, find_master, parse_master_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node1", ("node1", PORT)),
        ("node1:5495", ("node1", 5495)),
        ("10.0.0.7:1", ("10.0.0.7", 1)),
        ("my-host.example.org:65535", ("my-host.example.org", 65535)),
        ("[::1]:5000", ("::1", 5000)),
        ("[fe80::1%eth0]", ("fe80::1%eth0", PORT)),
        ("::1", ("::1", PORT)),
    ],
)
def test_good_addresses(text, expected):
    assert parse_master_address(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("http://host:5495", "looks like a URL"),
        ("tcp://host", "looks like a URL"),
        ("", "empty"),
        (":5494", "not a host"),
        ("host:", "no port after the colon"),
        ("host:port", "must be a number"),
        ("host:0", "from 1 to 65535"),
        ("host:70000", "from 1 to 65535"),
        ("host:-1", "must be a number"),
        ("ho st", "not a host"),
        ("host/path:1", "not a host"),
        ("[::1", "not \\[IPV6\\]"),
        ("[::1]x", "not \\[IPV6\\]"),
        ("[nothex]:5", "not an IPv6 address"),
        ("a:b:c", "not HOST\\[:PORT\\] nor an IPv6 address"),
    ],
)
def test_bad_addresses_say_what_is_wrong(text, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_master_address(text)


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No master started here, no $CWTX_MASTER, an empty run directory."""
    monkeypatch.setattr(address, "_started", [])
    monkeypatch.delenv("CWTX_MASTER", raising=False)
    monkeypatch.setenv("CWTX_RUN_DIR", str(tmp_path))
    return tmp_path


def record_cw_local(run_dir, text, pid=None):
    (run_dir / "master.pid").write_text(str(pid or os.getpid()))
    (run_dir / "master.address").write_text(text)


def test_the_chain_ends_at_localhost(clean):
    assert find_master() == ("localhost", PORT)
    assert find_master(port=6000) == ("localhost", 6000)


def test_an_explicit_host_wins(clean, monkeypatch):
    monkeypatch.setenv("CWTX_MASTER", "envhost:7000")
    address.started(("started", 1234))
    assert find_master("given") == ("given", PORT)
    assert find_master("given", 99) == ("given", 99)
    assert find_master("given:98") == ("given", 98)
    with pytest.raises(ValueError, match="looks like a URL"):
        find_master("http://given:98")


def test_the_chain_in_order(clean, monkeypatch):
    record_cw_local(clean, "127.0.0.1:6001\n")
    assert find_master() == ("127.0.0.1", 6001)
    monkeypatch.setenv("CWTX_MASTER", "envhost:7000")
    assert find_master() == ("envhost", 7000)
    address.started(("first", 1))
    address.started(("second", 2))
    assert find_master() == ("second", 2)
    assert find_master(port=3) == ("second", 3)
    address.stopped(("second", 2))
    assert find_master() == ("first", 1)
    address.stopped(("first", 1))
    assert find_master() == ("envhost", 7000)


def test_a_cw_local_that_stopped_is_not_found(clean):
    record_cw_local(clean, "127.0.0.1:6001", pid=2**22 + 12345)  # no such process
    assert find_master() == ("localhost", PORT)


def test_a_bad_cwtx_master_is_a_clear_error(clean, monkeypatch):
    monkeypatch.setenv("CWTX_MASTER", "http://somewhere:80")
    with pytest.raises(ValueError, match="CWTX_MASTER.*looks like a URL"):
        find_master()


def test_error_messages_quote_the_whole_address():
    with pytest.raises(
        ValueError, match="the port in 'node:99999' must be a number from 1 to 65535"
    ):
        parse_master_address("node:99999")
    with pytest.raises(ValueError, match="^the master's address is empty; give HOST or HOST:PORT$"):
        parse_master_address("")
    with pytest.raises(ValueError, match="from 1 to 65535"):
        parse_master_address("node:65536")
    assert parse_master_address("node:65535") == ("node", 65535)


def test_an_ipv6_master_gets_an_ipv6_endpoint():
    from twisted.internet.testing import MemoryReactorClock

    from cwtx.client.connect import client_endpoint

    assert repr(client_endpoint(MemoryReactorClock(), "::1", 5)) == "[::1]:5"
    assert repr(client_endpoint(MemoryReactorClock(), "node", 6)) == "node:6"
