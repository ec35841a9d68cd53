"""``twistd cw-worker``: its options and service (twistd's ServiceMaker
wants ``Options`` and ``makeService`` in one module)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from cwtx.client.address import PORT, find_master, parse_master_address
from cwtx.client.connect import AddressFileEndpoint, client_endpoint
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
from cwtx.wire.peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT
from cwtx.wire.reconnect import DescribedEndpoint
from cwtx.wire.resources import parse_spec
from cwtx.worker.functions import DEFAULT_FUNCTION_CACHE
from cwtx.worker.limits import Limits, parse_size
from cwtx.worker.supervisor import GRACE, Worker


def _jobs_per_child(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must be 0 (no limit) or more, not {value}")
    return number


class Options(usage.Options):
    synopsis = "--master HOST[:PORT] | --connect ENDPOINT [options]"
    longdesc = "Run a cwtx worker: it runs jobs from a master in child processes."
    optFlags = [
        [
            "isolate-clients",
            None,
            "Give each client session fresh slot children: no job sees what another "
            "client's jobs left in their process (slower: a child starts per switch).",
        ],
    ]
    optParameters = [
        [
            "master",
            "m",
            None,
            f"The master's HOST[:PORT] (port {PORT} by default; without it: "
            "$CWTX_MASTER, a running `cw local`, else localhost).",
        ],
        ["connect", "c", None, "Client endpoint string for the master (instead of --master)."],
        [
            "master-file",
            None,
            None,
            "Read the master's HOST:PORT from this file, which its --address-file wrote "
            "(instead of --master); until it exists, wait and retry with backoff.",
        ],
        ["slots", "s", 1, "Jobs to run at once, each in its own child process.", positive(int)],
        ["name", None, None, "Name of this worker in logs and status (default host:pid)."],
        [
            "resources",
            None,
            "",
            "Resources this worker offers, NAME=AMOUNT,... (gpu=2,mem=64G) or a JSON "
            "object; a whole number is that many devices, numbered from 0.",
        ],
        [
            "heartbeat-interval",
            None,
            HEARTBEAT_INTERVAL,
            "Seconds between heartbeats to the master.",
            positive(float),
        ],
        [
            "heartbeat-timeout",
            None,
            HEARTBEAT_TIMEOUT,
            "Seconds of silence after which the master is taken for dead.",
            positive(float),
        ],
        ["secret-file", None, None, SECRET_HELP],
        LOG_LEVEL_OPTION,
        [
            "grace",
            None,
            GRACE,
            "On SIGINT/SIGTERM, seconds to let running jobs finish before handing them back.",
            float,
        ],
        [
            "memory-limit",
            None,
            "0",
            "Resident memory each slot's job may use: a size (4G, 512MiB) or a fraction "
            "of this node's memory (0.25; of its cgroup's limit if less); a job over it "
            "is killed and ends with cwtx.JobMemoryError. 0: no limit.",
        ],
        [
            "max-jobs-per-child",
            None,
            0,
            "Replace a slot's child after it has run this many jobs (0: never).",
            _jobs_per_child,
        ],
        [
            "function-cache",
            None,
            DEFAULT_FUNCTION_CACHE,
            "Bytes of functions (their pickles) this worker keeps, and each slot's "
            "child too; the least recently used beyond are dropped, and the master "
            "sends one again when a job needs it. A size: 32M, 1G.",
            cache_size,
        ],
        [
            "max-child-memory",
            None,
            "0",
            "Replace a slot's child between jobs once its resident memory after a job "
            "is over this size (4G, 512MiB, or a fraction of the node's; 0: never).",
        ],
    ]

    def postOptions(self) -> None:
        self["secret"] = secret_option(self["secret-file"])
        if sum(bool(self[o]) for o in ("master", "connect", "master-file")) > 1:
            raise usage.UsageError("give one of --master, --connect and --master-file")
        if not self["connect"] and not self["master-file"]:
            try:
                given = self["master"]
                self["address"] = parse_master_address(given) if given else find_master()
            except ValueError as e:
                raise usage.UsageError(f"--master: {e}")
        try:
            self["resources"], self["devices"] = parse_spec(self["resources"])
        except ValueError as e:
            raise usage.UsageError(str(e))
        try:
            self["limits"] = Limits(
                memory=parse_size(self["memory-limit"], "--memory-limit"),
                jobs_per_child=self["max-jobs-per-child"],
                child_memory=parse_size(self["max-child-memory"], "--max-child-memory"),
            )
        except ValueError as e:
            raise usage.UsageError(str(e))


def makeService(options: Options, reactor: Any = None) -> IService:
    reactor = default_reactor(reactor)
    apply_log_level(options["log-level"])
    if options["connect"]:
        endpoint = client_endpoint(reactor, endpoint=options["connect"])
    elif options["master-file"]:
        path = options["master-file"]
        endpoint = DescribedEndpoint(
            AddressFileEndpoint(reactor, path), f"the master named in {path}"
        )
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
        devices=options["devices"],
        heartbeat_interval=options["heartbeat-interval"],
        heartbeat_timeout=options["heartbeat-timeout"],
        grace=options["grace"],
        secret=options["secret"],
        isolate_clients=bool(options["isolate-clients"]),
        limits=options["limits"],
        function_cache=options["function-cache"],
    ).setServiceParent(service)
    StopOnSignal(reactor).setServiceParent(service)
    return service
