"""What ``twistd cw-master`` and ``twistd cw-worker`` share: the secret
option, number checks, and a clean stop on SIGINT and SIGTERM."""

from __future__ import annotations

import signal
from typing import Any

import txaio
from twisted.application.service import Service
from twisted.python import usage

from cwtx._secret import SecretError, load_secret
from cwtx.wire.resources import amount

txaio.use_twisted()
log = txaio.make_logger()

SECRET_HELP = (
    "File holding the shared secret (default: $CWTX_SECRET, $CWTX_SECRET_FILE, "
    "else ~/.config/cwtx/secret, created on first use)."
)


#: What ``--log-level`` takes: cwtx logs that level and above.
LOG_LEVELS = ("debug", "info", "warn", "error")


def log_level(value: str) -> str:
    """A coercer for ``--log-level``."""
    if value not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, not {value}")
    return value


log_level.coerceDoc = "One of debug, info, warn, error."  # type: ignore[attr-defined]

#: ``--log-level``, shared by cw-master and cw-worker.
LOG_LEVEL_OPTION = [
    "log-level",
    None,
    "info",
    "What cwtx logs: debug (also every job's lifecycle: docs/operations.md), info, warn or error.",
    log_level,
]


def apply_log_level(level: str) -> None:
    """Below ``level`` cwtx's log calls are no-ops (txaio binds them so)."""
    txaio.set_global_log_level(level)


def secret_option(path: str | None) -> bytes:
    """The secret for ``--secret-file``; a bad one is a usage error, not a traceback."""
    try:
        return load_secret(path)
    except SecretError as e:
        raise usage.UsageError(str(e))


def positive(kind: type) -> Any:
    """A coercer for usage.Options that accepts only positive numbers."""

    def coerce(value: str) -> Any:
        number = kind(value)
        if number <= 0:
            raise ValueError(f"must be positive, not {value}")
        return number

    coerce.coerceDoc = "Must be positive."  # type: ignore[attr-defined]
    return coerce


def cache_size(value: str) -> int:
    """A coercer for cache sizes: bytes, or ``32M``, ``1G`` (powers of 1024)."""
    return int(amount(value, "a cache size"))


cache_size.coerceDoc = "Bytes, or a size such as 32M or 1G."  # type: ignore[attr-defined]


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
        self.reactor.callFromThread(self._stop, signal.Signals(signum).name)

    def _stop(self, name: str) -> None:
        log.info("{signal} received: stopping", signal=name)
        if self.reactor.running:
            self.reactor.stop()


def default_reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as installed

        return installed
    return reactor
