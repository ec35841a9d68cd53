"""
twistd plugins' options and services: ``twistd cw-master`` and
``twistd cw-worker``.  The plugin file in twisted/plugins only points here.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import txaio
from twisted.application.service import IService, MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.python import usage

from ._client import PORT, client_endpoint
from ._master import DEFAULT_MAX_RETRIES, DEFAULT_PREFETCH, Master
from ._master_protocol import AUTH_TIMEOUT, MasterFactory
from ._peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, HeartbeatMonitor
from ._secret import SecretError, load_secret
from ._worker import GRACE, Worker

txaio.use_twisted()
log = txaio.make_logger()


SECRET_HELP = (
    "File holding the shared secret (default: $CWTX_SECRET, $CWTX_SECRET_FILE, "
    "else ~/.config/cwtx/secret, created on first use)."
)


def _secret_option(path: str | None) -> bytes:
    try:
        return load_secret(path)
    except SecretError as e:
        raise usage.UsageError(str(e))


def _positive(kind: type) -> Any:
    def coerce(value: str) -> Any:
        number = kind(value)
        if number <= 0:
            raise ValueError(f"must be positive, not {value}")
        return number

    coerce.coerceDoc = "Must be positive."  # type: ignore[attr-defined]
    return coerce


class MasterOptions(usage.Options):
    synopsis = "[options]"
    longdesc = "Run a cwtx master: it routes jobs from clients to workers."
    optParameters = [
        ["listen", "l", f"tcp:{PORT}", "Server endpoint string to listen on."],
        [
            "heartbeat-interval",
            None,
            HEARTBEAT_INTERVAL,
            "Seconds between heartbeats to each peer.",
            _positive(float),
        ],
        [
            "heartbeat-timeout",
            None,
            HEARTBEAT_TIMEOUT,
            "Seconds of silence after which a peer is dead.",
            _positive(float),
        ],
        [
            "max-retries",
            None,
            DEFAULT_MAX_RETRIES,
            "Times a job is retried after its worker dies under it.",
            int,
        ],
        [
            "prefetch",
            None,
            DEFAULT_PREFETCH,
            "Jobs sent to each worker beyond its slots, to hide round trips.",
            int,
        ],
        ["secret-file", None, None, SECRET_HELP],
        [
            "auth-timeout",
            None,
            AUTH_TIMEOUT,
            "Seconds a new connection has to authenticate before it is closed.",
            _positive(float),
        ],
        [
            "port-file",
            None,
            None,
            "Write the TCP port actually bound to this file (for --listen tcp:0).",
        ],
    ]

    def postOptions(self) -> None:
        self["secret"] = _secret_option(self["secret-file"])
        if self["max-retries"] < 0:
            raise usage.UsageError("--max-retries must be 0 or more")
        if self["prefetch"] < 0:
            raise usage.UsageError("--prefetch must be 0 or more")


class MasterService(Service):
    """Listens, and runs the heartbeat monitor, for one :class:`Master`."""

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
        from twisted.internet.defer import Deferred

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


def make_master_service(options: MasterOptions, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    master = Master(max_retries=options["max-retries"], prefetch=options["prefetch"])
    monitor = HeartbeatMonitor(reactor, options["heartbeat-interval"], options["heartbeat-timeout"])
    service = MultiService()
    MasterService(
        reactor,
        options["listen"],
        master,
        monitor,
        options["secret"],
        options["port-file"],
        options["auth-timeout"],
    ).setServiceParent(service)
    StopOnSignal(reactor).setServiceParent(service)
    return service


def parse_master_address(value: str) -> tuple[str, int]:
    """``HOST`` or ``HOST:PORT`` (``[v6]:PORT`` too) to (host, port)."""
    host, port = value, PORT
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        port = int(port_text)
    if not host:
        raise ValueError(f"no host in {value!r}")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return host, port


class WorkerOptions(usage.Options):
    synopsis = "--master HOST[:PORT] | --connect ENDPOINT [options]"
    longdesc = "Run a cwtx worker: it runs jobs from a master in child processes."
    optParameters = [
        ["master", "m", None, f"The master's HOST[:PORT] (port {PORT} by default)."],
        ["connect", "c", None, "Client endpoint string for the master (instead of --master)."],
        ["slots", "n", 1, "Jobs to run at once, each in its own child process.", _positive(int)],
        ["name", None, None, "Name of this worker in logs and status (default host:pid)."],
        ["resources", None, "{}", "Resources this worker offers, as a JSON object."],
        [
            "heartbeat-interval",
            None,
            HEARTBEAT_INTERVAL,
            "Seconds between heartbeats to the master.",
            _positive(float),
        ],
        [
            "heartbeat-timeout",
            None,
            HEARTBEAT_TIMEOUT,
            "Seconds of silence after which the master is taken for dead.",
            _positive(float),
        ],
        ["secret-file", None, None, SECRET_HELP],
        [
            "grace",
            None,
            GRACE,
            "On SIGINT/SIGTERM, seconds to let running jobs finish before handing them back.",
            float,
        ],
    ]

    def postOptions(self) -> None:
        self["secret"] = _secret_option(self["secret-file"])
        if self["master"] and self["connect"]:
            raise usage.UsageError("give --master or --connect, not both")
        if not self["connect"]:
            try:
                self["address"] = parse_master_address(self["master"] or "localhost")
            except ValueError as e:
                raise usage.UsageError(f"--master: {e}")
        try:
            resources = json.loads(self["resources"])
        except ValueError as e:
            raise usage.UsageError(f"--resources is not JSON: {e}")
        if not isinstance(resources, dict):
            raise usage.UsageError("--resources must be a JSON object")
        self["resources"] = resources


class StopOnSignal(Service):
    """SIGINT and SIGTERM stop the reactor normally: services stop in order
    (a worker leaves gracefully, see Worker.stopService), atexit handlers
    run, and twistd exits 0, as a service manager expects of a clean stop.

    twistd's own handlers would make it exit by re-raising the signal.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        # After the reactor's own handlers are installed (at startup).
        self.reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._received)

    def _received(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._leave, signal.Signals(signum).name)

    def _leave(self, name: str) -> None:
        log.info("{signal} received: stopping", signal=name)
        if self.reactor.running:
            self.reactor.stop()


def make_worker_service(options: WorkerOptions, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    if options["connect"]:
        endpoint = client_endpoint(reactor, endpoint=options["connect"])
    else:
        host, port = options["address"]
        endpoint = client_endpoint(reactor, host, port)
    service = MultiService()
    Worker(
        endpoint,
        reactor,
        slots=options["slots"],
        name=options["name"],
        resources=options["resources"],
        heartbeat_interval=options["heartbeat-interval"],
        heartbeat_timeout=options["heartbeat-timeout"],
        grace=options["grace"],
        secret=options["secret"],
    ).setServiceParent(service)
    StopOnSignal(reactor).setServiceParent(service)
    return service
