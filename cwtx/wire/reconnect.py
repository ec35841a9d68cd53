"""
Staying connected to the master: one mechanism for workers and clients.

Twisted's ClientService reconnects with backoff; on each new connection it
runs the handshake (``prepare``) before anyone may use it.  A failed
handshake counts as a failed attempt and is retried later.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import txaio
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from cwtx.wire.peer import Peer

log = txaio.make_logger()


@implementer(IStreamClientEndpoint)
class DescribedEndpoint:
    """An endpoint that says where it goes (in ClientService's "Scheduling
    retry N to connect ..." log lines) and why its last attempt failed."""

    def __init__(self, endpoint: IStreamClientEndpoint, description: str) -> None:
        self._endpoint = endpoint
        self.description = description
        self.last_failure: str = "no attempt yet"

    def connect(self, factory: Any) -> Deferred[Any]:
        d = self._endpoint.connect(factory)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Failure) -> Failure:
        self.last_failure = failure.getErrorMessage() or type(failure.value).__name__
        # ClientService's own line names the endpoint, not why it failed.
        log.warn(
            "could not connect to {where}: {why}", where=self.description, why=self.last_failure
        )
        return failure

    def __repr__(self) -> str:
        return self.description


def retry_policy(initial: float, most: float) -> Callable[[int], float]:
    """Exponential backoff from ``initial`` to ``most`` seconds, with up to
    10% jitter so that many peers of a restarted master spread out."""
    return backoffPolicy(
        initialDelay=initial, maxDelay=most, factor=2.0, jitter=lambda: random.random() * most / 10
    )


def reconnecting(
    endpoint: DescribedEndpoint,
    build: Callable[[], Peer],
    prepare: Callable[[Peer], Awaitable[None]],
    clock: Any,
    policy: Callable[[int], float],
) -> ClientService:
    """A ClientService that connects ``endpoint`` with protocols from
    ``build`` and runs ``prepare`` on each new one (the handshake).  If
    ``prepare`` fails, the connection is closed and the failure recorded in
    ``endpoint.last_failure``; the service tries again after backoff."""

    async def prepare_connection(proxy: Any) -> None:
        # ClientService hands us a proxy that forwards to our protocol.
        proto: Peer = proxy.unwrapped
        try:
            await prepare(proto)
        except BaseException as e:
            endpoint.last_failure = str(e) or type(e).__name__
            # ClientService counts this as a failed attempt and waits to
            # retry; if it then also heard of the disconnect, its state
            # machine would raise NoTransition (Waiting has no transition
            # for it).  So detach that notification before closing.
            if hasattr(proxy, "_lostNotification"):
                proxy._lostNotification = lambda reason: None
            if proto.transport is not None:
                proto.transport.abortConnection()
            raise

    factory = Factory.forProtocol(build)
    factory.noisy = False  # no "Starting factory" line for every attempt
    return ClientService(
        endpoint,
        factory,
        retryPolicy=policy,
        clock=clock,
        prepareConnection=prepare_connection,
    )
