"""
:func:`connect`: find the master, build the endpoint, load the secret, and
connect a :class:`~cwtx.client.client.Client`.
"""

from __future__ import annotations

import uuid
from typing import Any

import txaio
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, clientFromString
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

from cwtx._errors import AuthenticationError, ProtocolMismatch
from cwtx._secret import load_secret, secret_source
from cwtx.client.address import PORT, find_master, read_address_file
from cwtx.client.client import (
    CONNECT_TIMEOUT,
    RECONNECT_TIMEOUT,
    Client,
    ForwardOutput,
    check_forward_output,
)
from cwtx.client.options import JobOptions, check_share
from cwtx.wire.peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT
from cwtx.wire.reconnect import DescribedEndpoint

txaio.use_twisted()
log = txaio.make_logger()

__all__ = [
    "CONNECT_TIMEOUT",
    "RECONNECT_TIMEOUT",
    "AddressFileEndpoint",
    "client_endpoint",
    "connect",
    "connect_to",
]


def client_endpoint(
    reactor: Any,
    host: str | None = None,
    port: int = PORT,
    endpoint: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> DescribedEndpoint:
    """The endpoint for ``endpoint`` (a Twisted client string) or host:port."""
    if endpoint is not None:
        return DescribedEndpoint(clientFromString(reactor, endpoint), endpoint)
    host = host or "localhost"
    if ":" in host:  # an IPv6 address
        tcp6 = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
        return DescribedEndpoint(tcp6, f"[{host}]:{port}")
    return DescribedEndpoint(
        TCP4ClientEndpoint(reactor, host, port, timeout=timeout), f"{host}:{port}"
    )


@implementer(IStreamClientEndpoint)
class AddressFileEndpoint:
    """Connects to the address a master wrote to ``path`` (``--address-file``),
    read afresh on every attempt: a worker started before its master waits
    (its service retries with backoff), and one whose master moved to
    another node follows it there."""

    def __init__(self, reactor: Any, path: str, timeout: float = CONNECT_TIMEOUT) -> None:
        self.reactor = reactor
        self.path = path
        self.timeout = timeout
        self._waiting = False

    def connect(self, factory: Any) -> Deferred[Any]:
        try:
            address = read_address_file(self.path)
        except ValueError as e:
            return fail(ConnectError(string=str(e)))
        if address is None:
            if not self._waiting:  # once, not at every retry
                log.info("waiting for a master to write its address to {path}", path=self.path)
            self._waiting = True
            return fail(ConnectError(string=f"no master has written {self.path} yet"))
        self._waiting = False
        return client_endpoint(self.reactor, *address, timeout=self.timeout).connect(factory)


def connect(
    host: str | None = None,
    port: int | None = None,
    *,
    endpoint: str | None = None,
    reactor: Any = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    reconnect_timeout: float = RECONNECT_TIMEOUT,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
    name: str | None = None,
    secret_file: str | None = None,
    share: float = 1.0,
    forward_output: ForwardOutput = False,
    **job_options: Any,
) -> Deferred[Client]:
    """
    Connect to a master; a Deferred that fires with a :class:`Client`.

    Without ``host`` the master is found as cwtx.client.address says (the
    cluster this process started, $CWTX_MASTER, a running ``cw local``,
    localhost); ``endpoint`` is a Twisted client endpoint string
    (``tcp:host:port``, ``tls:...``) used instead of host and port.  The
    first connection fails with a clear error after ``connect_timeout``
    seconds; later losses are retried for ``reconnect_timeout`` seconds.
    ``job_options`` (timeout, priority, max_retries, resources) are the
    defaults for every job this client submits.  The shared secret comes
    from ``secret_file``, else as docs/security.md says.  ``name`` names
    the client in status and to ``--priority-clients``; ``share`` is its
    weight in the fair share of slots (docs/clients.md).  ``forward_output``
    True sends every job's stdout and stderr lines back here, written to
    sys.stdout and sys.stderr with the worker and job id in front; a
    callable ``f(job_id, worker, stream, line)`` gets them instead (in the
    reactor thread); a job's own ``forward_output`` option overrides it.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    options = JobOptions().replace(**job_options)
    check_share(share)
    check_forward_output(forward_output)
    secret = load_secret(secret_file)
    if endpoint is None:
        host, port = find_master(host, port)
    ep = client_endpoint(reactor, host, port or PORT, endpoint, connect_timeout)

    async def run() -> Client:
        try:
            return await connect_to(
                ep,
                reactor=reactor,
                secret=secret,
                name=name,
                connect_timeout=connect_timeout,
                reconnect_timeout=reconnect_timeout,
                heartbeat_interval=heartbeat_interval,
                heartbeat_timeout=heartbeat_timeout,
                options=options,
                share=share,
                forward_output=forward_output,
            )
        except AuthenticationError as e:
            raise AuthenticationError(
                f"{e} (the master at {ep}; our secret is from {secret_source(secret_file)})"
            ) from None
        except ProtocolMismatch:
            raise
        except Exception as e:
            raise ConnectionError(f"could not connect to the cwtx master at {ep}: {e}") from e

    return Deferred.fromCoroutine(run())


async def connect_to(
    endpoint: DescribedEndpoint,
    *,
    reactor: Any,
    secret: bytes,
    name: str | None = None,
    options: JobOptions | None = None,
    **settings: Any,
) -> Client:
    """Connect a Client through ``endpoint`` with ``secret`` (the bytes);
    ``settings`` are connect's timeouts and heartbeats.  cwtx.testing
    connects its in-memory clients through here."""
    client = Client(
        reactor, name or uuid.uuid4().hex[:12], endpoint, secret, options=options, **settings
    )
    await client.start()
    return client
