"""TLS failures in words: what OpenSSL's error and verify result mean."""

from __future__ import annotations

import pytest

from cwtx.wire import tls


class OpenSSLError(Exception):
    """Stands in for OpenSSL.SSL.Error: only its module and text are read."""

    __module__ = "OpenSSL.SSL"


VERIFY_FAILED = OpenSSLError("[('SSL routines', '', 'certificate verify failed')]")


def test_other_errors_are_not_tls_failures():
    assert tls.tls_failure(ConnectionRefusedError("refused")) is None


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (10, "the master's certificate has expired"),
        (9, "the master's certificate is not valid yet (or this host's clock is wrong)"),
        (19, "the master's certificate is not signed by an authority we trust (trustRoots=)"),
        (None, "the master's certificate is not signed by an authority we trust (trustRoots=)"),
        (50, "the master's certificate was rejected: application verification failure"),
    ],
)
def test_a_rejected_certificate_says_why(monkeypatch, code, said):
    monkeypatch.setattr(
        tls, "_verify_result", lambda transport: (code, "application verification failure")
    )
    assert tls.tls_failure(VERIFY_FAILED) == f"TLS failed: {said}"


def test_the_master_refusing_our_expired_certificate():
    error = OpenSSLError("[('SSL routines', '', 'sslv3 alert certificate expired')]")
    assert (
        tls.tls_failure(error) == "TLS failed: the master refused our certificate: it has expired"
    )


def test_a_transport_without_openssl_state_gives_no_reason():
    assert tls._verify_result(object()) == (None, "")
    assert tls._verify_result(None) == (None, "")


def test_any_other_tls_error_is_quoted():
    error = OpenSSLError("[('SSL routines', '', 'wrong version number')]")
    assert tls.tls_failure(error) == f"TLS failed: {error}"
