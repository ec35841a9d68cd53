"""The master as a Twisted service: listen, and run the heartbeat monitor."""

from __future__ import annotations

import os
from typing import Any

import txaio
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort

from cwtx.master.connection import AUTH_TIMEOUT, MasterFactory
from cwtx.master.master import Master
from cwtx.wire.peer import HeartbeatMonitor

txaio.use_twisted()
log = txaio.make_logger()


class MasterService(Service):
    """Listens, and runs the heartbeat monitor, for one :class:`Master`.

    ``listen`` is a Twisted server endpoint string; ``port_file``, if given,
    receives the TCP port actually bound (for ``tcp:0``).
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
    ) -> None:
        self.auth_timeout = auth_timeout
        self.reactor = reactor
        self.listen = listen
        self.master = master
        self.monitor = monitor
        self.secret = secret
        self.port_file = port_file
        self.port: IListeningPort | None = None

    async def _start(self) -> None:
        endpoint = serverFromString(self.reactor, self.listen)
        factory = MasterFactory(
            self.master, self.monitor, self.reactor, self.secret, self.auth_timeout
        )
        self.port = await endpoint.listen(factory)
        address = self.port.getHost()
        log.info("cwtx master {id} listening on {address}", id=self.master.id, address=address)
        if self.port_file:
            tmp = self.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{getattr(address, 'port', '')}\n")
            os.replace(tmp, self.port_file)

    def startService(self) -> None:
        super().startService()
        self.monitor.start()
        d = Deferred.fromCoroutine(self._start())

        def failed(failure: Any) -> None:
            log.failure(
                "cwtx master could not listen on {listen}", failure=failure, listen=self.listen
            )
            self.reactor.callWhenRunning(self.reactor.stop)

        d.addErrback(failed)

    def stopService(self) -> Any:
        super().stopService()
        self.monitor.stop()
        if self.port is not None:
            return self.port.stopListening()
        return None
