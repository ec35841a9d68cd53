"""
cwtx in asyncio programs: ``await`` jobs, through Twisted's asyncio reactor.

    import asyncio, cwtx.aio

    async def main():
        client = await cwtx.aio.connect()
        print(await client.submit(pow, 2, 10))
        await client.close()

    asyncio.run(main())

The first ``connect`` installs ``twisted.internet.asyncioreactor`` on the
running loop, so Twisted and asyncio share one event loop in one thread.
That must happen before anything else imports Twisted's default reactor:
if another reactor is installed, connect raises a clear error.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IResolutionReceiver,
)
from zope.interface import implementer

from cwtx.client import dependencies
from cwtx.client.address import find_master
from cwtx.client.client import CONNECT_TIMEOUT, Client, ForwardOutput
from cwtx.client.connect import connect as _connect
from cwtx.client.refs import Ref

__all__ = ["AsyncClient", "connect"]


def _asyncio_reactor(loop: asyncio.AbstractEventLoop) -> Any:
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install(loop)
    from twisted.internet import reactor

    loop_of = getattr(reactor, "_asyncioEventloop", None)
    if loop_of is None:
        raise RuntimeError(
            f"Twisted's {type(reactor).__name__} is already installed in this process; "
            "cwtx.aio needs the asyncio reactor: call cwtx.aio.connect() before "
            "anything imports twisted.internet.reactor"
        )
    if loop_of is not loop:
        raise RuntimeError("Twisted's asyncio reactor runs on another event loop")
    if not isinstance(reactor.nameResolver, _LoopResolver):
        # asyncio runs the loop, so reactor.run() never starts the thread
        # pool that Twisted resolves host names in: the loop resolves them.
        reactor.installNameResolver(_LoopResolver(loop))
    return reactor


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        raise NotImplementedError("cannot cancel a host name resolution")


@implementer(IHostnameResolver)
class _LoopResolver:
    """Host names resolved by the asyncio loop's ``getaddrinfo`` (in its
    executor, which ``asyncio.run`` shuts down at the end)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        types = set(addressTypes or (IPv4Address, IPv6Address))
        family = socket.AF_UNSPEC
        if types == {IPv4Address}:
            family = socket.AF_INET
        elif types == {IPv6Address}:
            family = socket.AF_INET6
        kind = socket.SOCK_DGRAM if transportSemantics == "UDP" else socket.SOCK_STREAM
        resolution = _Resolution(hostName)

        async def resolve() -> None:
            resolutionReceiver.resolutionBegan(resolution)
            try:
                found = await self._loop.getaddrinfo(hostName, portNumber, family=family, type=kind)
            except socket.gaierror:
                found = []
            for af, _kind, _proto, _name, address in found:
                if af == socket.AF_INET and IPv4Address in types:
                    resolutionReceiver.addressResolved(IPv4Address(transportSemantics, *address))
                elif af == socket.AF_INET6 and IPv6Address in types:
                    resolutionReceiver.addressResolved(IPv6Address(transportSemantics, *address))
            resolutionReceiver.resolutionComplete()

        self._loop.create_task(resolve())
        return resolution


class AsyncClient:
    """A :class:`cwtx.Client` whose jobs are asyncio Futures."""

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop, target: Any = None) -> None:
        self.client = client
        self._loop = loop
        self._target = target if target is not None else client  # Client or options view

    def options(self, **options: Any) -> AsyncClient:
        return AsyncClient(self.client, self._loop, self._target.options(**options))

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a worker; an awaitable Future.

        Cancelling the Future cancels the job at the master.  An asyncio
        Future among the arguments (or directly in a list, tuple or dict
        argument) is a dependency, as a Deferred is for cwtx.connect.
        """
        waits_for = dependencies.find(args, kwargs, asyncio.Future)
        if not waits_for:
            return self._target.submit(fn, *args, **kwargs).asFuture(self._loop)
        as_deferreds = {id(f): Deferred.fromFuture(f) for f in waits_for}
        args, kwargs = dependencies.substitute(args, kwargs, asyncio.Future, as_deferreds)
        job = self._target.submit(fn, *args, **kwargs)
        for d in as_deferreds.values():
            d.addErrback(lambda _: None)  # ours: its failure went to the job already
        return job.asFuture(self._loop)

    def put(self, obj: Any) -> Ref:
        """Pickle ``obj`` once, for any number of jobs: a :class:`cwtx.Ref`
        to pass them (no await: nothing is sent until a job names it)."""
        return self.client.put(obj)

    async def status(self) -> dict[str, Any]:
        return await self.client.status().asFuture(self._loop)

    async def close(self) -> None:
        await self.client.close().asFuture(self._loop)


async def connect(
    host: str | None = None,
    port: int | None = None,
    *,
    endpoint: str | None = None,
    name: str | None = None,
    share: float = 1.0,
    forward_output: ForwardOutput = False,
    connect_timeout: float = CONNECT_TIMEOUT,
    **settings: Any,
) -> AsyncClient:
    """Connect to a master from a running asyncio loop.

    ``name`` names this client at the master, ``share`` is its weight in
    the fair share of slots; ``forward_output`` True (or a callback,
    called in the loop's thread) forwards what every job prints;
    ``settings`` are cwtx.connect's:
    reconnect_timeout, heartbeat_interval, heartbeat_timeout, and default
    job options (timeout, priority, ...).
    """
    loop = asyncio.get_running_loop()
    reactor = _asyncio_reactor(loop)
    if endpoint is None:
        host, port = find_master(host, port)
    d = _connect(
        host,
        port,
        endpoint=endpoint,
        reactor=reactor,
        name=name,
        share=share,
        forward_output=forward_output,
        connect_timeout=connect_timeout,
        **settings,
    )
    return AsyncClient(await d.asFuture(loop), loop)
