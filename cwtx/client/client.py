"""
The Deferred client: submit closures, get Deferreds that fire with results.

It stays connected through a ClientService (``wire.reconnect``): when the
connection is lost, it reconnects with backoff and resubmits every job that
has not ended, under the same ids.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from itertools import count
from typing import Any, Protocol

import txaio
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.error import ConnectionLost as ConnectionLostError
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from cwtx._errors import AuthenticationError, MasterConnectionLost, ProtocolError, ProtocolMismatch
from cwtx.client import dependencies
from cwtx.client.errors import JobCancelled
from cwtx.client.options import JobOptions, check_share
from cwtx.client.refs import Arguments, Ref, RefTable, scheduler
from cwtx.client.serialize import FunctionDef, decode_result, pickle_function
from cwtx.wire import handshake as auth
from cwtx.wire.batch import BatchSender
from cwtx.wire.batch import Encoded as BatchEncoded
from cwtx.wire.commands import (
    CancelJobs,
    DropFunctions,
    FreeData,
    JobOutput,
    JobResults,
    JobsStarted,
    PutData,
    SetShare,
    Status,
    SubmitJobs,
)
from cwtx.wire.names import OutputStream, Role, per_command, split_hashes
from cwtx.wire.payload import EMPTY, Payload
from cwtx.wire.peer import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, HeartbeatMonitor, Peer
from cwtx.wire.reconnect import DescribedEndpoint, reconnecting, retry_policy
from cwtx.wire.status import merge as status_merge
from cwtx.wire.status import read as status_read
from cwtx.wire.tls import tls_failure

txaio.use_twisted()
log = txaio.make_logger()

#: Seconds to wait for the master to accept a connection and answer hello.
CONNECT_TIMEOUT = 30.0
#: Seconds a client keeps trying to reach a lost master before failing its jobs.
RECONNECT_TIMEOUT = 120.0

__all__ = [
    "CONNECT_TIMEOUT",
    "RECONNECT_TIMEOUT",
    "Client",
    "ClientProtocol",
    "JobOptions",
    "JobSink",
    "OutputCallback",
]

#: ``forward_output=callback``: ``callback(job_id, worker, stream, line)``
#: for each line a job printed (``stream`` "stdout" or "stderr", ``line``
#: without its newline), in the reactor thread.
OutputCallback = Callable[[int, str, str, str], Any]
#: A client's forward_output setting: False, True, or a callback.
ForwardOutput = bool | OutputCallback


#: Control characters other than tab, escaped in lines written to a
#: terminal: a job must not move the cursor, retitle the window or overwrite
#: the prefix that says where a line came from.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def write_output(job: int, worker: str, stream: str, line: str) -> None:
    """Where forwarded lines go by default: this process's sys.stdout or
    sys.stderr, each line prefixed with the worker and the job id, with
    control characters escaped (a callback gets lines as they were)."""
    out = sys.stderr if stream == OutputStream.STDERR else sys.stdout
    line = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", line)
    out.write(f"(worker {worker}, job {job}) {line}\n")


class JobSink(Protocol):
    """Where a submitted job reports (reactor thread).  The blocking
    clients' own objects are sinks, so a job costs no Deferred there."""

    def job_started(self) -> None:
        """The master first reported the job started (perhaps never, for a
        job that ends very fast)."""

    def job_ended(self, result: Any) -> None:
        """The job ended, once: its result, or a Failure."""


class _DeferredJob:
    """The sink of a job submitted through the Deferred API."""

    __slots__ = ("deferred", "on_start")

    def __init__(self, deferred: Deferred[Any], on_start: Callable[[], None] | None) -> None:
        self.deferred = deferred
        self.on_start = on_start

    def job_started(self) -> None:
        if self.on_start is not None:
            on_start, self.on_start = self.on_start, None
            on_start()

    def job_ended(self, result: Any) -> None:
        if isinstance(result, Failure):
            self.deferred.errback(result)
        else:
            self.deferred.callback(result)


class _Pending:
    """A submitted job that has not ended: all it takes to send it again.

    The pickled arguments stay until the job ends, not only until they are
    sent: after a reconnection a new master needs them again.
    """

    __slots__ = ("job_id", "fn", "args", "refs", "options", "sink", "sent")

    def __init__(
        self,
        job_id: int,
        fn: FunctionDef,
        args: bytes,
        options: JobOptions,
        sink: JobSink,
        refs: tuple[Ref, ...] = (),
    ) -> None:
        self.job_id = job_id
        self.fn = fn
        self.args = args
        #: The Refs its arguments name: held (alive) until it ends.
        self.refs = refs
        self.options = options
        self.sink = sink
        self.sent = False


class ClientProtocol(Peer):
    """The client's end of its connection to the master."""

    def __init__(self, clock: Any, client: Client) -> None:
        super().__init__(clock)
        self.client = client

    def describe(self) -> str:
        return "master"

    @JobsStarted.responder
    def _started(self, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        for r in jobs:
            self.client._job_started(r["job"])
        return {}

    @JobOutput.responder
    def _output(self, output: list[dict[str, Any]]) -> dict[str, Any]:
        for r in output:
            self.client._job_output(r["job"], r["worker"], r["stream"], r["text"])
        return {}

    @DropFunctions.responder
    def _drop_functions(self, fns: bytes) -> Deferred[dict[str, Any]]:
        try:
            hashes = split_hashes(fns)
        except ValueError as e:
            raise ProtocolError(str(e)) from None
        return self.client._functions_dropped(self, hashes).addCallback(lambda _: {})

    @JobResults.responder
    def _results(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        for r in results:
            value = self.blobs_in.take(r["value"], r["value_blob"])
            self.client._job_ended(r["job"], r["status"], value, r["error"])
        return {}

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.client._connection_lost(self, reason)


class Client:
    """
    A client's connection to a master, through which jobs are submitted.

    If the connection is lost (the master restarted, or stopped answering
    heartbeats), the client reconnects with backoff and resubmits every job
    that has not ended, under the same ids; a result that arrives twice is
    delivered once.  After ``reconnect_timeout`` seconds without a master,
    the jobs that have not ended fail with MasterConnectionLost.  Make one
    with :func:`cwtx.connect`.
    """

    def __init__(
        self,
        reactor: Any,
        name: str,
        endpoint: DescribedEndpoint,
        secret: bytes,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        options: JobOptions | None = None,
        share: float = 1.0,
        forward_output: ForwardOutput = False,
    ) -> None:
        """``endpoint`` leads to the master (its repr names it in messages);
        ``secret`` is the shared secret itself; ``share`` this client's
        weight in the fair share of slots; ``forward_output`` True (or a
        callback) forwards every job's output by default.  See
        :func:`cwtx.connect`."""
        self.share = check_share(share)
        self._output_to = check_forward_output(forward_output)
        self._reactor = reactor
        self.name = name
        self.endpoint = endpoint
        self._secret = secret
        self._connect_timeout = connect_timeout
        self._reconnect_timeout = reconnect_timeout
        self._protocol: ClientProtocol | None = None
        self._sender: BatchSender[_Pending] | None = None
        self._ids = count(1)
        self._pending: dict[int, _Pending] = {}
        self._sent_functions: set[bytes] = set()
        #: What put() made, and which of it the current connection has.
        self.refs = RefTable(scheduler(reactor))
        self.refs.on_freed = self._free_data
        self._closed = False
        self._give_up_timer: Any = None
        self._default = options or JobOptions()
        if forward_output:
            self._default = self._default.replace(forward_output=True)
        self._monitor = HeartbeatMonitor(reactor, heartbeat_interval, heartbeat_timeout)
        self._service = reconnecting(
            endpoint,
            lambda: ClientProtocol(reactor, self),
            self._handshake,
            reactor,
            retry_policy(initial=0.1, most=5.0),
        )
        #: Connections made after the first.
        self.reconnects = 0
        #: Results that arrived for jobs already ended here (cancelled, or
        #: delivered before): ignored, and counted so tests can see them.
        self.ignored_results = 0

    # -- the connection -------------------------------------------------------

    async def start(self) -> None:
        """Connect for the first time; raise what went wrong if that fails."""
        self._monitor.start()
        self._service.startService()
        first = self._service.whenConnected(failAfterFailures=1)
        first.addTimeout(2 * self._connect_timeout, self._reactor)
        try:
            await first
        except BaseException:
            self._closed = True
            self._monitor.stop()
            # Not from within the service's own callback (it is not reentrant).
            await deferLater(self._reactor, 0, self._service.stopService)
            raise

    async def _handshake(self, proto: ClientProtocol) -> None:
        """Authenticate a new connection, then send it every job not yet ended."""
        d = Deferred.fromCoroutine(auth.handshake(proto, Role.CLIENT, self.name, self._secret))
        d.addTimeout(self._connect_timeout, self._reactor)
        try:
            await d
        except defer.TimeoutError as e:
            raise ConnectionError(
                f"no answer to the handshake within {self._connect_timeout:g} s"
            ) from e
        except (AuthenticationError, ProtocolMismatch):
            raise
        except Exception as e:
            tls = tls_failure(e, proto.transport)
            if tls is not None:
                raise ConnectionError(tls) from e
            raise ProtocolMismatch(f"the master refused the handshake: {e}") from e
        if self._closed:
            raise ConnectionError("the client was closed")
        self._attach(proto)

    def _attach(self, proto: ClientProtocol) -> None:
        if self._give_up_timer is not None:
            self._give_up_timer.cancel()
            self._give_up_timer = None
            self.reconnects += 1
            log.info(
                "cwtx client {name} reconnected to {where}; resubmitting {n} jobs",
                name=self.name,
                where=self.endpoint,
                n=len(self._pending),
            )
        self._protocol = proto
        self._sent_functions = set()
        self.refs.sent = set()
        if self.share != 1.0:  # sent before the jobs below, in order
            proto.callRemote(SetShare, share=self.share).addErrback(lambda _: None)
        self._sender = BatchSender(proto, SubmitJobs, "jobs", self._encode, on_error=self._refused)
        self._monitor.watch(proto)
        for job_id in sorted(self._pending):
            pending = self._pending[job_id]
            pending.sent = False
            self._sender.add(pending)

    def _connection_lost(self, proto: ClientProtocol, reason: Failure) -> None:
        self._monitor.unwatch(proto)
        if proto is not self._protocol:
            return  # lost during its handshake: the service retries
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
            where=self.endpoint,
            why=reason.getErrorMessage(),
        )
        self._give_up_timer = self._reactor.callLater(self._reconnect_timeout, self._give_up)

    def _give_up(self) -> None:
        self._give_up_timer = None
        self._shut(
            f"no master at {self.endpoint} for {self._reconnect_timeout:g} s "
            f"({self.endpoint.last_failure})"
        )

    def _refused(self, failure: Failure) -> None:
        """The master refused our jobs (not a lost connection): resubmitting
        them after a reconnection would be refused again, so they fail."""
        if failure.check(ConnectionDone, ConnectionLostError):
            return  # the connection machinery handles it
        self._shut(f"the master refused this client's jobs: {failure.getErrorMessage()}")

    def _shut(self, why: str) -> None:
        """Stop for good: fail every job that has not ended, saying ``why``."""
        self._closed = True
        self._monitor.stop()
        self._fail_all(why)
        self._service.stopService()

    def _fail_all(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.sink.job_ended(Failure(MasterConnectionLost(f"job {p.job_id} did not end: {why}")))

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def close(self) -> Deferred[None]:
        """Disconnect; jobs that have not ended fail with MasterConnectionLost.

        The Deferred fires once the connection is closed and every pending
        job's Deferred has failed.
        """
        self._closed = True
        self._monitor.stop()
        if self._give_up_timer is not None:
            self._give_up_timer.cancel()
            self._give_up_timer = None
        d = self._service.stopService()
        return d.addCallback(lambda _: self._fail_all("the client was closed"))

    # -- jobs -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many submitted jobs have not ended yet."""
        return len(self._pending)

    def options(self, **options: Any) -> _OptionsView:
        """A view of this client whose submit applies ``options``.

        timeout (seconds), priority (higher runs first), max_retries,
        resources (a dict).
        """
        return _OptionsView(self, job_options(self._default, options))

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Run ``fn(*args, **kwargs)`` on a worker; a Deferred of its result.

        A Deferred among the arguments (or directly in a list, tuple or dict
        argument) is a dependency: the job is sent once it has fired, with
        its result in its place (cwtx.client.dependencies).  A Ref (from
        :meth:`put`) anywhere among them arrives as its object.
        """
        return self._submit(self._default, fn, args, kwargs)

    def put(self, obj: Any) -> Ref:
        """Pickle ``obj`` once, for any number of jobs: a Ref to pass them.

        Returns at once (an object that does not pickle raises here); the
        data crosses the connection with the first job that names the Ref,
        and reaches each worker once.  It is freed when the Ref is
        dropped, and the jobs that name it have ended (docs/clients.md).
        May be called from any thread.
        """
        if self._closed:
            raise RuntimeError("this cwtx client is closed")
        return self.refs.put(obj)

    def _submit(
        self, options: JobOptions, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Deferred[Any]:
        if self._closed:
            raise RuntimeError("this cwtx client is closed")
        function = pickle_function(fn)
        waits_for = dependencies.find(args, kwargs, Deferred)
        if not waits_for:
            return self.submit_pickled(options, function, dependencies.pickle_job(args, kwargs))
        held = dependencies.HeldDeferredJob(
            lambda arguments: self.submit_pickled(options, function, arguments),
            args,
            kwargs,
            waits_for,
            self._reactor,
        )
        return held.deferred

    def submit_pickled(
        self,
        options: JobOptions,
        function: FunctionDef,
        arguments: Arguments | bytes,
        on_start: Callable[[], None] | None = None,
    ) -> Deferred[Any]:
        """Submit a job whose function and arguments are already pickled
        (bytes, or :class:`~cwtx.client.refs.Arguments` with the Refs they name).

        ``map`` pickles its function once for all its jobs.  ``on_start()``
        is called (reactor thread) when a worker first reports the job
        started; it may not be called at all for a job that ends very fast.
        """
        sink = _DeferredJob(Deferred(lambda d: self.cancel_job(job_id)), on_start)
        job_id = self.submit_to(sink, options, function, arguments)
        return sink.deferred

    def submit_to(
        self,
        sink: JobSink,
        options: JobOptions,
        function: FunctionDef,
        arguments: Arguments | bytes,
    ) -> int:
        """Submit a pickled job that reports to ``sink``; its job id, for
        :meth:`cancel_job`.  The blocking clients pickle in the caller's
        thread (so a bad argument raises there) and submit here, in the
        reactor thread, with no Deferred per job."""
        if self._closed:
            raise RuntimeError("this cwtx client is closed")
        data, refs = arguments if isinstance(arguments, Arguments) else (arguments, ())
        self.refs.check(refs)
        job_id = next(self._ids)
        pending = _Pending(job_id, function, data, options, sink, refs)
        self._pending[job_id] = pending
        if self._sender is not None:
            self._sender.add(pending)
        return job_id

    def _encode(self, p: _Pending) -> BatchEncoded | None:
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
            "forward_output": int(o.forward_output),
            "refs": b"",
        }
        code = EMPTY
        if p.fn.hash not in self._sent_functions:
            self._sent_functions.add(p.fn.hash)
            fields["fn_env"], code = p.fn.env, Payload.of(p.fn.code)
        # The pickled arguments stay here until the job ends: a new master
        # after a restart needs them again.
        payloads = {"fn_code": code, "args": Payload.of(p.args)}
        if not p.refs:
            return fields, payloads
        refs = {ref.hash: ref for ref in p.refs}
        fields["refs"] = b"".join(refs)
        new = [ref for hash, ref in refs.items() if hash not in self.refs.sent]
        if not new:
            return fields, payloads
        self.refs.sent.update(ref.hash for ref in new)
        proto = self._protocol
        assert proto is not None  # (a sender runs only while connected)
        return fields, payloads, lambda: self._put_data(proto, new)

    async def _put_data(self, proto: ClientProtocol, refs: list[Ref]) -> None:
        """Send put data ahead of the first job record that names it; one
        the master refuses stops the client, as refused jobs do."""
        for ref in refs:
            sent = await proto.blobs_out.call(
                PutData, {"data": Payload.of(ref._data)}, ref=ref.hash
            )
            sent.addErrback(self._refused)

    def _functions_dropped(self, proto: ClientProtocol, hashes: list[bytes]) -> Deferred[None]:
        """The master dropped these functions: the next job that names one
        sends its code again.  The answer waits until the job records
        already queued (which may name them without code) are on their way,
        so that they reach the master before it lets go of the code."""
        if proto is not self._protocol or self._sender is None:
            return succeed(None)  # (an old connection: the new one starts with none)
        self._sent_functions.difference_update(hashes)
        return self._sender.flushed()

    def _free_data(self, hashes: list[bytes]) -> None:
        """(reactor thread) The last Refs to this data, sent over this
        connection, are gone: the master may free it.  (No PutData for it
        can follow: the jobs, and the sending, that need it hold a Ref.)"""
        proto = self._protocol
        if proto is None:
            return  # the next connection starts with none
        for chunk in per_command(hashes):
            proto.callRemote(FreeData, refs=b"".join(chunk)).addErrback(lambda _: None)

    def cancel_job(self, job_id: int) -> bool:
        """Cancel a job that has not ended: it ends with JobCancelled, and
        the master drops it (or kills it, if it runs).  False if it had ended."""
        pending = self._pending.pop(job_id, None)
        if pending is None:
            return False
        proto = self._protocol
        if pending.sent and proto is not None and not proto.dead:
            proto.callRemote(CancelJobs, jobs=[job_id]).addErrback(lambda _: None)
        pending.sink.job_ended(Failure(JobCancelled(f"job {job_id} was cancelled")))
        return True

    def _job_started(self, job_id: int) -> None:
        pending = self._pending.get(job_id)
        if pending is not None:
            pending.sink.job_started()

    def _job_output(self, job_id: int, worker: str, stream: str, text: str) -> None:
        if job_id not in self._pending:
            return  # cancelled here
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        for line in lines:
            try:
                self._output_to(job_id, worker, stream, line)
            except Exception as e:
                log.error("cwtx: the forward_output callback failed: {e!r}", e=e)

    def _job_ended(self, job_id: int, status: str, value: Payload, error: str) -> None:
        pending = self._pending.pop(job_id, None)
        if pending is None:
            self.ignored_results += 1  # cancelled here already, or a duplicate
            return
        ok, result = decode_result(status, value.tobytes(), error)
        pending.sink.job_ended(result if ok else Failure(result))

    def status(self) -> Deferred[dict[str, Any]]:
        """The master's state: workers, slots, queued and running jobs."""
        proto = self._protocol
        if proto is None:
            return fail(MasterConnectionLost(f"not connected to {self.endpoint} right now"))

        async def pages() -> dict[str, Any]:
            first = status_read((await proto.callRemote(Status, page=0))["status"])
            rest = [
                status_read((await proto.callRemote(Status, page=n))["status"])
                for n in range(1, first["pages"])
            ]
            return status_merge([first, *rest])

        return Deferred.fromCoroutine(pages())


class _OptionsView:
    """``client.options(...)``: submit with these options."""

    def __init__(self, client: Client, options: JobOptions) -> None:
        self._client = client
        self._options = options

    def options(self, **options: Any) -> _OptionsView:
        return _OptionsView(self._client, job_options(self._options, options))

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return self._client._submit(self._options, fn, args, kwargs)


def check_forward_output(setting: Any) -> OutputCallback:
    """Where a client's forwarded lines go: a callback, else write_output."""
    if callable(setting):
        return setting
    if not isinstance(setting, bool):
        raise ValueError(f"forward_output must be True, False or a callable, not {setting!r}")
    return write_output


#: Settings that belong to a client's connection, not to its jobs.
PER_CLIENT = ("share", "name")


def job_options(base: JobOptions, changes: dict[str, Any]) -> JobOptions:
    """``base`` with ``changes``; a per-client setting is a clear TypeError
    (the master weighs and names clients, not jobs)."""
    for key in PER_CLIENT:
        if key in changes:
            raise TypeError(
                f"{key} is per client, not per job: pass {key}= when connecting "
                "(cwtx.connect, ClusterExecutor, ClientThread, cwtx.aio.connect)"
            )
    return base.replace(**changes)
