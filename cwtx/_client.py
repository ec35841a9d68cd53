"""
The Deferred client: submit closures, get Deferreds that fire with results.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import Any

import txaio
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.error import ConnectionLost as ConnectionLostError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from . import _auth as auth
from ._batch import BatchSender
from ._commands import CancelJobs, JobResults, Status, SubmitJobs
from ._errors import AuthenticationError, ConnectionLost, JobCancelled, ProtocolMismatch
from ._payload import EMPTY, Payload
from ._peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, HeartbeatMonitor, Peer
from ._secret import load_secret, secret_source
from ._serialize import FunctionDef, decode_result, pickle_arguments, pickle_function

txaio.use_twisted()
log = txaio.make_logger()

PORT = 5494
#: Seconds to wait for the master to accept a connection and answer hello.
CONNECT_TIMEOUT = 30.0
#: Seconds a client keeps trying to reach a lost master before failing its jobs.
RECONNECT_TIMEOUT = 120.0


@dataclass(frozen=True)
class JobOptions:
    """Per-job settings; ``max_retries=None`` means the master's default."""

    timeout: float | None = None
    priority: int = 0
    max_retries: int | None = None
    resources: str = "{}"

    def replace(self, **changes: Any) -> JobOptions:
        fields = dict(self.__dict__)
        for key, value in changes.items():
            if key not in fields:
                raise TypeError(f"unknown job option {key!r}")
            if key == "resources" and not isinstance(value, str):
                value = json.dumps(value or {})
            fields[key] = value
        result = JobOptions(**fields)
        result.validate()
        return result

    def validate(self) -> None:
        if self.timeout is not None and not (
            isinstance(self.timeout, (int, float))
            and self.timeout > 0
            and math.isfinite(self.timeout)
        ):
            raise ValueError(f"timeout must be a positive number of seconds, not {self.timeout!r}")
        if self.max_retries is not None and (
            not isinstance(self.max_retries, int) or self.max_retries < 0
        ):
            raise ValueError(f"max_retries must be an int >= 0, not {self.max_retries!r}")
        if not isinstance(self.priority, int):
            raise ValueError(f"priority must be an int, not {self.priority!r}")


class _Pending:
    __slots__ = ("job_id", "fn", "args", "options", "deferred", "sent")

    def __init__(
        self,
        job_id: int,
        fn: FunctionDef,
        args: bytes,
        options: JobOptions,
        deferred: Deferred[Any],
    ) -> None:
        self.job_id = job_id
        self.fn = fn
        self.args = args
        self.options = options
        self.deferred = deferred
        self.sent = False


class ClientProtocol(Peer):
    """The client's end of its connection to the master."""

    client: Client | None = None

    def describe(self) -> str:
        return "master"

    @JobResults.responder
    def _results(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        for r in results:
            value = self.blobs_in.take(r["value"], r["value_blob"])
            if self.client is not None:
                self.client._job_ended(r["job"], r["status"], value, r["error"])
        return {}

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if self.client is not None:
            self.client._connection_lost(self, reason)


class Client:
    """
    A client's connection to a master, through which jobs are submitted.

    If the connection is lost (the master restarted, or stopped answering
    heartbeats), the client reconnects with backoff and resubmits every job
    that has not ended, under the same ids; a result that arrives twice is
    delivered once.  After ``reconnect_timeout`` seconds without a master,
    the jobs that have not ended fail with ConnectionLost.
    """

    def __init__(
        self,
        reactor: Any,
        name: str,
        connector: Callable[[], Deferred[ClientProtocol]],
        *,
        where: str = "the master",
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        options: JobOptions | None = None,
    ) -> None:
        self._reactor = reactor
        self.name = name
        self._connector = connector
        self._where = where
        self._reconnect_timeout = reconnect_timeout
        self._protocol: ClientProtocol | None = None
        self._sender: BatchSender[_Pending] | None = None
        self._ids = count(1)
        self._pending: dict[int, _Pending] = {}
        self._sent_functions: set[bytes] = set()
        self._closed = False
        self._on_closed: list[Deferred[None]] = []
        self._default = options or JobOptions()
        self._monitor = HeartbeatMonitor(reactor, heartbeat_interval, heartbeat_timeout)
        self._monitor.start()
        self.reconnects = 0
        #: Results that arrived for jobs already ended here (cancelled, or
        #: delivered before): ignored, and counted so tests can see them.
        self.ignored_results = 0

    def _attach(self, proto: ClientProtocol) -> None:
        """Use this (greeted) connection; send it every job not yet ended."""
        self._protocol = proto
        proto.client = self
        self._sent_functions = set()
        self._sender = BatchSender(
            proto,
            SubmitJobs,
            "jobs",
            self._encode,
            self._reactor,
            proto.blobs_out,
            on_error=self._refused,
        )
        self._monitor.watch(proto)
        for job_id in sorted(self._pending):
            pending = self._pending[job_id]
            pending.sent = False
            self._sender.add(pending)

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    @property
    def pending(self) -> int:
        """How many submitted jobs have not ended yet."""
        return len(self._pending)

    def options(self, **options: Any) -> _OptionsView:
        """A view of this client whose submit applies ``options``.

        timeout (seconds), priority (higher runs first), max_retries,
        resources (a dict).
        """
        return _OptionsView(self, self._default.replace(**options))

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Run ``fn(*args, **kwargs)`` on a worker; a Deferred of its result."""
        return self._submit(self._default, fn, args, kwargs)

    def _submit(
        self, options: JobOptions, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Deferred[Any]:
        if self._closed:
            raise RuntimeError("this cwtx client is closed")
        return self.submit_pickled(options, pickle_function(fn), pickle_arguments(args, kwargs))

    def submit_pickled(
        self, options: JobOptions, function: FunctionDef, arguments: bytes
    ) -> Deferred[Any]:
        """Submit a job whose function and arguments are already pickled.

        The blocking APIs pickle in the caller's thread (so a bad argument
        raises there) and hand the bytes to the reactor thread; ``map``
        pickles its function once for all its jobs.
        """
        if self._closed:
            raise RuntimeError("this cwtx client is closed")
        job_id = next(self._ids)
        deferred: Deferred[Any] = Deferred(lambda d: self._cancel(job_id))
        pending = _Pending(job_id, function, arguments, options, deferred)
        self._pending[job_id] = pending
        if self._sender is not None:
            self._sender.add(pending)
        return deferred

    def _encode(self, p: _Pending) -> tuple[dict[str, Any], dict[str, Payload]] | None:
        if self._pending.get(p.job_id) is not p or p.sent:
            return None  # cancelled (or ended) before it was sent
        p.sent = True
        o = p.options
        fields: dict[str, Any] = {
            "job": p.job_id,
            "fn": p.fn.hash,
            "fn_env": "",
            "timeout": float(o.timeout or 0.0),
            "max_retries": -1 if o.max_retries is None else o.max_retries,
            "priority": o.priority,
            "resources": o.resources,
        }
        code = EMPTY
        if p.fn.hash not in self._sent_functions:
            self._sent_functions.add(p.fn.hash)
            fields["fn_env"], code = p.fn.env, Payload.of(p.fn.code)
        # The pickled arguments stay here until the job ends: a new master
        # after a restart needs them again.
        return fields, {"fn_code": code, "args": Payload.of(p.args)}

    def _cancel(self, job_id: int) -> None:
        pending = self._pending.pop(job_id, None)
        if pending is None:
            return
        proto = self._protocol
        if pending.sent and proto is not None and not proto.dead:
            proto.callRemote(CancelJobs, jobs=[job_id]).addErrback(lambda _: None)
        pending.deferred.errback(JobCancelled(f"job {job_id} was cancelled"))

    def _job_ended(self, job_id: int, status: str, value: Payload, error: str) -> None:
        pending = self._pending.pop(job_id, None)
        if pending is None:
            self.ignored_results += 1  # cancelled here already, or a duplicate
            return
        ok, result = decode_result(status, value.tobytes(), error)
        if ok:
            pending.deferred.callback(result)
        else:
            pending.deferred.errback(Failure(result))

    def _connection_lost(self, proto: ClientProtocol, reason: Failure) -> None:
        self._monitor.unwatch(proto)
        if proto is not self._protocol:
            return
        self._protocol = None
        if self._sender is not None:
            self._sender.stop()
            self._sender = None
        if self._closed:
            why = "the client was closed"
            if not reason.check(ConnectionDone):
                why = f"the connection to the master was lost: {reason.getErrorMessage()}"
            self._fail_all(why)
            return
        log.warn(
            "cwtx client {name} lost {where} ({why}); reconnecting",
            name=self.name,
            where=self._where,
            why=reason.getErrorMessage(),
        )
        Deferred.fromCoroutine(self._reconnect()).addErrback(
            lambda f: log.failure("cwtx client reconnection failed", failure=f)
        )

    async def _reconnect(self) -> None:
        deadline = self._reactor.seconds() + self._reconnect_timeout
        delay = 0.1
        last = "no attempt yet"
        while not self._closed:
            try:
                proto = await self._connector()
            except Exception as e:
                last = str(e)
            else:
                if self._closed:
                    proto.transport.loseConnection()
                    return
                self.reconnects += 1
                log.info(
                    "cwtx client {name} reconnected; resubmitting {n} jobs",
                    name=self.name,
                    n=len(self._pending),
                )
                self._attach(proto)
                return
            if self._reactor.seconds() >= deadline:
                self._closed = True
                self._monitor.stop()
                self._fail_all(
                    f"no master at {self._where} for {self._reconnect_timeout:g} s ({last})"
                )
                return
            await deferLater(self._reactor, min(delay, deadline - self._reactor.seconds()))
            delay = min(delay * 2, 5.0)

    def _refused(self, failure: Failure) -> None:
        """The master refused our jobs (not a lost connection): resubmitting
        them after a reconnection would be refused again, so they fail."""
        if failure.check(ConnectionDone, ConnectionLostError):
            return  # connection machinery handles it
        self._closed = True
        self._monitor.stop()
        self._fail_all(f"the master refused this client's jobs: {failure.getErrorMessage()}")
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abortConnection()

    def _fail_all(self, why: str) -> None:

        closed, self._on_closed = self._on_closed, []
        for d in closed:
            d.callback(None)
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.deferred.errback(ConnectionLost(f"job {p.job_id} did not end: {why}"))

    def status(self) -> Deferred[dict[str, Any]]:
        """The master's state: workers, slots, queued and running jobs."""
        if self._protocol is None:
            return fail(ConnectionLost(f"not connected to {self._where} right now"))
        d = self._protocol.callRemote(Status, detail=False)
        return d.addCallback(lambda reply: json.loads(reply["status"]))

    def close(self) -> Deferred[None]:
        """Disconnect; jobs that have not ended fail with ConnectionLost.

        The Deferred fires once the connection is closed and every pending
        job's Deferred has failed.
        """
        self._closed = True
        self._monitor.stop()
        proto = self._protocol
        if proto is None or proto.dead or proto.transport is None:
            self._fail_all("the client was closed")
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._on_closed.append(d)
        proto.transport.loseConnection()
        return d


class _OptionsView:
    """``client.options(...)``: submit with these options."""

    def __init__(self, client: Client, options: JobOptions) -> None:
        self._client = client
        self._options = options

    def options(self, **options: Any) -> _OptionsView:
        return _OptionsView(self._client, self._options.replace(**options))

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return self._client._submit(self._options, fn, args, kwargs)


def client_endpoint(
    reactor: Any,
    host: str | None = None,
    port: int = PORT,
    endpoint: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> IStreamClientEndpoint:
    """The endpoint for ``endpoint`` (a Twisted client string) or host:port."""
    if endpoint is not None:
        return clientFromString(reactor, endpoint)
    return TCP4ClientEndpoint(reactor, host or "localhost", port, timeout=timeout)


async def _connect(
    reactor: Any,
    endpoint: IStreamClientEndpoint,
    role: str,
    name: str,
    timeout: float,
    secret: bytes,
) -> ClientProtocol:
    """Connect and authenticate, within ``timeout`` seconds."""
    proto = ClientProtocol(reactor)
    connecting = connectProtocol(endpoint, proto)
    connecting.addTimeout(timeout, reactor)
    await connecting
    handshake = Deferred.fromCoroutine(auth.handshake(proto, role, name, secret))
    handshake.addTimeout(timeout, reactor)
    try:
        await handshake
    except defer.TimeoutError as e:
        proto.transport.abortConnection()
        raise ConnectionError(f"no answer to the handshake within {timeout:g} s") from e
    except (AuthenticationError, ProtocolMismatch):
        proto.transport.loseConnection()
        raise
    except Exception as e:
        proto.transport.loseConnection()
        raise ProtocolMismatch(f"the master refused the handshake: {e}") from e
    return proto


def connect(
    host: str | None = None,
    port: int = PORT,
    *,
    endpoint: str | None = None,
    reactor: Any = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    reconnect_timeout: float = RECONNECT_TIMEOUT,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
    name: str | None = None,
    secret_file: str | None = None,
    **job_options: Any,
) -> Deferred[Client]:
    """
    Connect to a master; a Deferred that fires with a :class:`Client`.

    ``host`` defaults to localhost; ``endpoint`` is a Twisted client endpoint
    string (``tcp:host:port``, ``tls:...``) used instead of host and port.
    The first connection fails with a clear error after ``connect_timeout``
    seconds; later losses are retried for ``reconnect_timeout`` seconds.
    ``job_options`` (timeout, priority, max_retries, resources) are the
    defaults for every job this client submits.  The shared secret comes
    from ``secret_file``, else as docs/security.md says.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    options = JobOptions().replace(**job_options)
    secret = load_secret(secret_file)
    name = name or uuid.uuid4().hex[:12]
    ep = client_endpoint(reactor, host, port, endpoint, connect_timeout)
    where = endpoint or f"{host or 'localhost'}:{port}"

    def connector() -> Deferred[ClientProtocol]:
        return Deferred.fromCoroutine(
            _connect(reactor, ep, "client", name, connect_timeout, secret)
        )

    async def run() -> Client:
        try:
            proto = await connector()
        except AuthenticationError as e:
            raise AuthenticationError(
                f"{e} (the master at {where}; our secret is from {secret_source(secret_file)})"
            ) from None
        except ProtocolMismatch:
            raise
        except Exception as e:
            raise ConnectionError(f"could not connect to the cwtx master at {where}: {e}") from e
        client = Client(
            reactor,
            name,
            connector,
            where=where,
            reconnect_timeout=reconnect_timeout,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            options=options,
        )
        client._attach(proto)
        return client

    return Deferred.fromCoroutine(run())
