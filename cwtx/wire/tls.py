"""
TLS failures in words.  OpenSSL reports every rejected certificate as
"certificate verify failed", whatever the reason; the reason itself (not
trusted, expired, not yet valid) is kept on the failed connection.
"""

from __future__ import annotations

from typing import Any

#: OpenSSL's X509_V_ERR codes that mean: no authority we trust signed it.
_UNTRUSTED = {2, 18, 19, 20, 21}
_EXPIRED = 10
_NOT_YET_VALID = 9


def tls_failure(error: BaseException, transport: Any = None) -> str | None:
    """What went wrong, if ``error`` is TLS failing; None otherwise.

    ``transport`` is the failed connection's transport, where OpenSSL kept
    its reason for rejecting the master's certificate.
    """
    module = type(error).__module__
    if not module.startswith(("OpenSSL", "service_identity")):
        return None
    text = str(error)
    if module.startswith("service_identity"):
        why = f"the master's certificate is not for the host we asked for ({text})"
    elif "certificate verify failed" in text:
        why = _rejected(transport)
    elif "expired" in text:
        why = "the master refused our certificate: it has expired"
    elif "certificate required" in text or "alert handshake failure" in text:
        why = "the master wants a client certificate (certificate= and privateKey=)"
    else:
        why = text
    return f"TLS failed: {why}"


def _rejected(transport: Any) -> str:
    code, reason = _verify_result(transport)
    if code == _EXPIRED:
        return "the master's certificate has expired"
    if code == _NOT_YET_VALID:
        return "the master's certificate is not valid yet (or this host's clock is wrong)"
    if code in _UNTRUSTED or code is None:
        return "the master's certificate is not signed by an authority we trust (trustRoots=)"
    return f"the master's certificate was rejected: {reason}"


def _verify_result(transport: Any) -> tuple[int | None, str]:
    """OpenSSL's verify result on the failed connection: (code, reason), or
    (None, "") where it cannot be read.  pyOpenSSL has no public call for
    it, so this reads its bindings, and gives up quietly if they change."""
    try:
        from OpenSSL._util import ffi, lib

        connection = transport._tlsConnection
        code = int(lib.SSL_get_verify_result(connection._ssl))
        reason = ffi.string(lib.X509_verify_cert_error_string(code)).decode()
    except Exception:
        return None, ""
    return (code, reason) if code else (None, "")
