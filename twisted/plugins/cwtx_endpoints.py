"""The ``mtls:`` server endpoint string (TLS that requires client certificates)."""

from cwtx.tap.mtls import parser as mtls_parser

__all__ = ["mtls_parser"]
