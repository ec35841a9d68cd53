"""``twistd cw-master``: its options and service (twistd's ServiceMaker
wants ``Options`` and ``makeService`` in one module)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from cwtx.client.address import PORT
from cwtx.master.connection import AUTH_TIMEOUT
from cwtx.master.functions import DEFAULT_FUNCTION_CACHE
from cwtx.master.history import History
from cwtx.master.master import DEFAULT_MAX_RETRIES, DEFAULT_PREFETCH, Master
from cwtx.master.service import MasterService
from cwtx.master.sessions import MAX_CLIENT_BYTES, MAX_CLIENT_JOBS
from cwtx.master.web import DashboardService, endpoint
from cwtx.tap.common import (
    LOG_LEVEL_OPTION,
    SECRET_HELP,
    StopOnSignal,
    apply_log_level,
    cache_size,
    default_reactor,
    positive,
    secret_option,
)
from cwtx.wire.peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, HeartbeatMonitor


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run a cwtx master: it routes jobs from clients to workers."
    optParameters = [
        ["listen", "l", f"tcp:{PORT}", "Server endpoint string to listen on."],
        [
            "heartbeat-interval",
            None,
            HEARTBEAT_INTERVAL,
            "Seconds between heartbeats to each peer.",
            positive(float),
        ],
        [
            "heartbeat-timeout",
            None,
            HEARTBEAT_TIMEOUT,
            "Seconds of silence after which a peer is dead.",
            positive(float),
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
        [
            "priority-clients",
            None,
            "",
            "Comma-separated client names (shell patterns allowed) whose jobs go before "
            "every other client's (docs/clients.md, fair share).",
        ],
        ["secret-file", None, None, SECRET_HELP],
        LOG_LEVEL_OPTION,
        [
            "auth-timeout",
            None,
            AUTH_TIMEOUT,
            "Seconds a new connection has to authenticate before it is closed.",
            positive(float),
        ],
        [
            "max-client-bytes",
            None,
            MAX_CLIENT_BYTES,
            "Bytes one client's unfinished jobs and functions may hold here before it waits.",
            positive(int),
        ],
        [
            "max-client-jobs",
            None,
            MAX_CLIENT_JOBS,
            "Unfinished jobs one client may have here before it waits.",
            positive(int),
        ],
        [
            "function-cache",
            None,
            DEFAULT_FUNCTION_CACHE,
            "Bytes of functions (code and environment) kept here, across clients, once "
            "no job needs them, so that a client's next job of one need not send it "
            "again; the least recently used beyond are dropped (the client sends one "
            "again when it needs it). A size: 32M, 1G.",
            cache_size,
        ],
        [
            "port-file",
            None,
            None,
            "Write the TCP port actually bound to this file (for --listen tcp:0).",
        ],
        [
            "address-file",
            None,
            None,
            "Once listening, write HOST:PORT to this file (removed on stop), for workers "
            "(--master-file) and clients that find the master by it.",
        ],
        [
            "http",
            None,
            None,
            "Serve a dashboard on this endpoint (a port number: tcp:PORT on 127.0.0.1; a tcp "
            "endpoint without interface= listens on 127.0.0.1 too). Off by default; its URL, "
            "with its token, is in the log's 'cwtx dashboard at' line and in cw status "
            "(docs/operations.md, Dashboard).",
        ],
        [
            "http-port-file",
            None,
            None,
            "Write the TCP port the dashboard actually bound to this file (for --http 0).",
        ],
        [
            "advertise",
            None,
            None,
            "The host name written to --address-file (default: this host's name).",
        ],
    ]

    def postOptions(self) -> None:
        self["secret"] = secret_option(self["secret-file"])
        if self["max-retries"] < 0:
            raise usage.UsageError("--max-retries must be 0 or more")
        if self["prefetch"] < 0:
            raise usage.UsageError("--prefetch must be 0 or more")
        if self["http"] is not None:
            self["http"] = endpoint(self["http"])
        elif self["http-port-file"] is not None:
            raise usage.UsageError("--http-port-file needs --http")
        self["priority-clients"] = [
            p.strip() for p in self["priority-clients"].split(",") if p.strip()
        ]


def makeService(options: Options, reactor: Any = None) -> IService:
    reactor = default_reactor(reactor)
    apply_log_level(options["log-level"])
    master = Master(
        max_retries=options["max-retries"],
        prefetch=options["prefetch"],
        max_client_bytes=options["max-client-bytes"],
        max_client_jobs=options["max-client-jobs"],
        priority_clients=options["priority-clients"],
        now=reactor.seconds,
        function_cache=options["function-cache"],
    )
    monitor = HeartbeatMonitor(reactor, options["heartbeat-interval"], options["heartbeat-timeout"])
    service = MultiService()
    listener = MasterService(
        reactor,
        options["listen"],
        master,
        monitor,
        options["secret"],
        options["port-file"],
        options["auth-timeout"],
        options["address-file"],
        options["advertise"],
    )
    listener.setServiceParent(service)
    master.history = History(master, reactor)
    master.history.setServiceParent(service)
    if options["http"] is not None:
        DashboardService(
            reactor,
            options["http"],
            master,
            options["secret"],
            options["http-port-file"],
            address=listener.address,
        ).setServiceParent(service)
    StopOnSignal(reactor).setServiceParent(service)
    return service
