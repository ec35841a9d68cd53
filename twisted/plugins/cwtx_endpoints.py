"""The ``mtls:`` server endpoint string (TLS that requires client certificates)."""

from cwtx._endpoints import parser as mtls_parser

__all__ = ["mtls_parser"]
