"""The master as a Twisted service: listen, run the heartbeat monitor, and
give back the memory of clients that left (``trim``)."""

from __future__ import annotations

import atexit
import os
import socket
import sys
from typing import Any

import txaio
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort

from cwtx.client.address import format_address, read_address_file, write_address_file
from cwtx.master.connection import AUTH_TIMEOUT, MasterFactory
from cwtx.master.master import Master
from cwtx.master.trim import Trimmer
from cwtx.wire.peer import HeartbeatMonitor

txaio.use_twisted()
log = txaio.make_logger()


def write_port_file(path: str, address: Any) -> None:
    """The TCP port of ``address`` (a listening port's host) to ``path``, whole."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{getattr(address, 'port', '')}\n")
    os.replace(tmp, path)


class MasterService(Service):
    """Listens, and runs the heartbeat monitor, for one :class:`Master`.

    ``listen`` is a Twisted server endpoint string; ``port_file``, if given,
    receives the TCP port actually bound (for ``tcp:0``); ``address_file``
    receives ``HOST:PORT`` with ``advertise`` (default: this host's name) as
    the host, for workers and clients that find the master by it
    (``cw slurm``), and is removed when the master stops.
    """

    def __init__(
        self,
        reactor: Any,
        listen: str,
        master: Master,
        monitor: HeartbeatMonitor,
        secret: bytes,
        port_file: str | None = None,
        auth_timeout: float = AUTH_TIMEOUT,
        address_file: str | None = None,
        advertise: str | None = None,
    ) -> None:
        self.auth_timeout = auth_timeout
        self.reactor = reactor
        self.listen = listen
        self.master = master
        self.monitor = monitor
        self.secret = secret
        self.port_file = port_file
        self.address_file = address_file
        self.advertise = advertise or socket.gethostname()
        self._published: tuple[str, int] | None = None
        self.port: IListeningPort | None = None
        self.trimmer = Trimmer(reactor)

    async def _start(self) -> None:
        endpoint = serverFromString(self.reactor, self.listen)
        factory = MasterFactory(
            self.master,
            self.monitor,
            self.reactor,
            self.secret,
            self.auth_timeout,
            client_left=self.trimmer.soon,
        )
        self.port = await endpoint.listen(factory)
        address = self.port.getHost()
        log.info("cwtx master {id} listening on {address}", id=self.master.id, address=address)
        if self.port_file:
            write_port_file(self.port_file, address)
        port = getattr(address, "port", None)
        # Status shows where clients can reach it: the interface it listens
        # on, or the name it advertises when it listens on all of them.
        host = getattr(address, "host", "")
        reach = self.advertise if host in ("", "0.0.0.0", "::") else host
        self.master.address = format_address(reach, port) if port is not None else str(address)
        if self.address_file and port is not None:
            self._published = (self.advertise, port)
            write_address_file(self.address_file, *self._published)
            log.info(
                "cwtx master address {address} written to {path}",
                address=format_address(*self._published),
                path=self.address_file,
            )

    def address(self) -> str:
        """Where it listens, as ``HOST:PORT`` ("" before it does)."""
        if self.port is None:
            return ""
        bound = self.port.getHost()
        host, port = getattr(bound, "host", None), getattr(bound, "port", None)
        return format_address(host, port) if host and port is not None else str(bound)

    def startService(self) -> None:
        super().startService()
        self.monitor.start()
        d = Deferred.fromCoroutine(self._start())

        def failed(failure: Any) -> None:
            log.error(
                "cwtx master could not listen on {listen}: {reason}",
                listen=self.listen,
                reason=failure.getErrorMessage(),
            )
            exit_nonzero_at_the_end()
            self.reactor.callWhenRunning(self.reactor.stop)

        d.addErrback(failed)

    def stopService(self) -> Any:
        super().stopService()
        self.monitor.stop()
        self.trimmer.stop()
        self._unpublish()
        if self.port is not None:
            return self.port.stopListening()
        return None

    def _unpublish(self) -> None:
        """Remove our address file, unless a newer master has replaced it."""
        if self.address_file is None or self._published is None:
            return
        try:
            if read_address_file(self.address_file) == self._published:
                os.unlink(self.address_file)
        except (OSError, ValueError):
            pass


def exit_nonzero_at_the_end(code: int = 1) -> None:
    """twistd exits 0 once its reactor stops, whatever stopped it: a master
    that could not listen must not look like a clean stop to systemd,
    SLURM or ``cw local``.  Last registered, this runs first at exit."""

    def leave() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)

    atexit.register(leave)
