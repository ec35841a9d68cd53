"""
The Deferred client: submit closures, get Deferreds that fire with results.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from itertools import count
from typing import Any

import txaio
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure

from ._batch import BatchSender
from ._commands import CancelJobs, Hello, JobResults, Status, SubmitJobs
from ._errors import ConnectionLost, JobCancelled, ProtocolMismatch
from ._payload import EMPTY, Payload
from ._peer import Peer
from ._serialize import FunctionDef, decode_result, pickle_arguments, pickle_function
from ._versions import hello_arguments

txaio.use_twisted()
log = txaio.make_logger()

PORT = 5494
#: Seconds to wait for the master to accept a connection and answer hello.
CONNECT_TIMEOUT = 30.0


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
            self.client._connection_lost(reason)


class Client:
    """A connection to a master, through which jobs are submitted."""

    def __init__(self, protocol: ClientProtocol, reactor: Any, name: str) -> None:
        self._protocol = protocol
        self._reactor = reactor
        self.name = name
        self._ids = count(1)
        self._pending: dict[int, _Pending] = {}
        self._sent_functions: set[bytes] = set()
        self._closed = False
        self._on_closed: list[Deferred[None]] = []
        self._default = JobOptions()
        self._sender: BatchSender[_Pending] = BatchSender(
            protocol, SubmitJobs, "jobs", self._encode, reactor, protocol.blobs_out
        )
        protocol.client = self

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
        self._sender.add(pending)
        return deferred

    def _encode(self, p: _Pending) -> tuple[dict[str, Any], dict[str, Payload]] | None:
        if self._pending.get(p.job_id) is not p:
            return None  # cancelled before it was sent
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
        args = Payload.of(p.args)
        p.args = b""  # the sender holds it now; don't keep a second reference
        return fields, {"fn_code": code, "args": args}

    def _cancel(self, job_id: int) -> None:
        pending = self._pending.pop(job_id, None)
        if pending is None:
            return
        if pending.sent and not self._protocol.dead:
            self._protocol.callRemote(CancelJobs, jobs=[job_id]).addErrback(lambda _: None)
        pending.deferred.errback(JobCancelled(f"job {job_id} was cancelled"))

    def _job_ended(self, job_id: int, status: str, value: Payload, error: str) -> None:
        pending = self._pending.pop(job_id, None)
        if pending is None:
            return  # cancelled here already, or a duplicate
        ok, result = decode_result(status, value.tobytes(), error)
        if ok:
            pending.deferred.callback(result)
        else:
            pending.deferred.errback(Failure(result))

    def _connection_lost(self, reason: Failure) -> None:
        self._sender.stop()
        self._closed = True
        closed, self._on_closed = self._on_closed, []
        for d in closed:
            d.callback(None)
        pending, self._pending = self._pending, {}
        if pending:
            why = (
                "the client was closed"
                if reason.check(ConnectionDone)
                else (f"the connection to the master was lost: {reason.getErrorMessage()}")
            )
            for p in pending.values():
                p.deferred.errback(ConnectionLost(f"job {p.job_id} did not end: {why}"))

    def status(self) -> Deferred[dict[str, Any]]:
        """The master's state: workers, slots, queued and running jobs."""
        d = self._protocol.callRemote(Status, detail=False)
        return d.addCallback(lambda reply: json.loads(reply["status"]))

    def close(self) -> Deferred[None]:
        """Disconnect; jobs that have not ended fail with ConnectionLost.

        The Deferred fires once the connection is closed and every pending
        job's Deferred has failed.
        """
        self._closed = True
        if self._protocol.dead or self._protocol.transport is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._on_closed.append(d)
        self._protocol.transport.loseConnection()
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
    reactor: Any, endpoint: IStreamClientEndpoint, role: str, name: str, timeout: float
) -> ClientProtocol:
    from twisted.internet.endpoints import connectProtocol

    proto = ClientProtocol(reactor)
    connecting = connectProtocol(endpoint, proto)
    connecting.addTimeout(timeout, reactor)
    await connecting
    hello = proto.callRemote(Hello, **hello_arguments(role, name))
    hello.addTimeout(timeout, reactor)
    try:
        await hello
    except defer.TimeoutError as e:
        proto.transport.abortConnection()
        raise ConnectionError(f"no answer to the handshake within {timeout:g} s") from e
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
    timeout: float = CONNECT_TIMEOUT,
    name: str | None = None,
) -> Deferred[Client]:
    """
    Connect to a master; a Deferred that fires with a :class:`Client`.

    ``host`` defaults to localhost; ``endpoint`` is a Twisted client endpoint
    string (``tcp:host:port``, ``tls:...``) used instead of host and port.
    Fails with a clear error after ``timeout`` seconds.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    name = name or uuid.uuid4().hex[:12]
    ep = client_endpoint(reactor, host, port, endpoint, timeout)

    async def run() -> Client:
        where = endpoint or f"{host or 'localhost'}:{port}"
        try:
            proto = await _connect(reactor, ep, "client", name, timeout)
        except ProtocolMismatch:
            raise
        except Exception as e:
            raise ConnectionError(f"could not connect to the cwtx master at {where}: {e}") from e
        return Client(proto, reactor, name)

    return Deferred.fromCoroutine(run())
