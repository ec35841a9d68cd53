"""
The master's AMP endpoint: turns commands into calls on :class:`Master`, and
the master's deliveries into batched commands.
"""

from __future__ import annotations

import json
from typing import Any

import txaio
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from . import _auth as auth
from ._batch import BatchSender
from ._commands import (
    PROTOCOL_VERSION,
    Authenticate,
    CancelJobs,
    Hello,
    JobResults,
    LeaveWorker,
    RegisterWorker,
    RunJobs,
    Status,
    SubmitJobs,
)
from ._errors import AuthenticationError, ProtocolError, ProtocolMismatch
from ._master import ClientSession, Job, Master, ResultItem, WorkerSession
from ._payload import EMPTY, Payload
from ._peer import HeartbeatMonitor, Peer

txaio.use_twisted()
log = txaio.make_logger()


#: Bytes a connection may send before it has authenticated.
PREAUTH_BYTES = 16 * 1024
#: Seconds a connection has to authenticate.
AUTH_TIMEOUT = 10.0
#: Bytes of one AMP box (a BlobChunk box is about 1 MiB).
MAX_BOX_BYTES = 8 * 1024 * 1024
#: Bytes of streamed payloads a connection may have in flight, unclaimed.
MAX_UNCLAIMED_BYTES = 2 * 1024 * 1024 * 1024

ROLES = ("client", "worker", "status")
HANDSHAKE = (b"Hello", b"Authenticate")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ProtocolError(message)


def _short_python(version: str) -> str:
    return ".".join(version.split(".")[:2])


class MasterProtocol(Peer):
    """One connection to the master: a client, a worker, or a status query.

    Until it authenticates it may send only Hello and Authenticate, at most
    PREAUTH_BYTES in all, within AUTH_TIMEOUT seconds; anything else closes
    the connection.
    """

    def __init__(
        self,
        master: Master,
        monitor: HeartbeatMonitor,
        clock: IReactorTime,
        secret: bytes,
        auth_timeout: float = AUTH_TIMEOUT,
    ) -> None:
        super().__init__(clock)
        self.master = master
        self.monitor = monitor
        self._secret = secret
        self._auth_timeout = auth_timeout
        self.role: str | None = None
        self.name = "?"
        self.versions = ("?", "?")
        self.authenticated = False
        self.client: ClientSession | None = None
        self.worker: WorkerSession | None = None
        self._sender: BatchSender[Any] | None = None
        self._nonces: tuple[bytes, bytes] | None = None
        self._received = 0  # bytes before authentication, then bytes since the last box
        self._auth_timer: Any = None
        self.blobs_in.max_bytes = MAX_UNCLAIMED_BYTES

    def describe(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else "?"
        return f"{self.role or 'peer'} {self.name} ({peer})"

    def connectionMade(self) -> None:
        super().connectionMade()
        self._auth_timer = self.clock.callLater(self._auth_timeout, self._auth_expired)

    def _auth_expired(self) -> None:
        self._auth_timer = None
        self.drop(f"did not authenticate within {self._auth_timeout:g} s")

    def dataReceived(self, data: bytes) -> None:
        if self.dead:
            return
        self._received += len(data)
        if not self.authenticated and self._received > PREAUTH_BYTES:
            return self.drop(f"sent over {PREAUTH_BYTES} bytes before authenticating")
        if self.authenticated and self._received > MAX_BOX_BYTES:
            return self.drop(f"sent a message of over {MAX_BOX_BYTES} bytes")
        super().dataReceived(data)

    def ampBoxReceived(self, box: Any) -> None:
        if self.authenticated:
            self._received = 0
        elif box.get(b"_command") not in HANDSHAKE:
            what = box.get(b"_command", b"an answer")[:40]
            return self.drop(f"sent {what!r} before authenticating")
        super().ampBoxReceived(box)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self.monitor.unwatch(self)
        if self._sender is not None:
            self._sender.stop()
        why = reason.getErrorMessage() if reason is not None else "closed"
        if self.client is not None:
            log.info("client {name} left ({why})", name=self.name, why=why)
            self.master.remove_client(self.client)
        if self.worker is not None:
            self.master.remove_worker(self.worker, f"connection lost ({why})")

    # -- handshake ------------------------------------------------------------

    @Hello.responder
    def _hello(
        self, role: str, name: str, protocol: int, python: str, cloudpickle: str, nonce: bytes
    ) -> dict[str, Any]:
        if self.role is not None:
            raise ProtocolMismatch("hello was already said on this connection")
        if protocol != PROTOCOL_VERSION:
            raise ProtocolMismatch(
                f"this master speaks cwtx protocol {PROTOCOL_VERSION}, the {role} protocol "
                f"{protocol}: install the same cwtx version everywhere"
            )
        if role not in ROLES or len(nonce) != auth.NONCE_BYTES:
            raise ProtocolMismatch(f"bad hello (role {role[:20]!r}, nonce of {len(nonce)} bytes)")
        self.role, self.name = role, name[:200]
        self.versions = (python[:40], cloudpickle[:40])
        mine = auth.nonce()
        self._nonces = (nonce, mine)
        return {
            "protocol": PROTOCOL_VERSION,
            "master": self.master.id,
            "nonce": mine,
            "proof": auth.proof(self._secret, "master", nonce, mine),
        }

    @Authenticate.responder
    def _authenticate(self, proof: bytes) -> dict[str, Any]:
        if self._nonces is None or self.authenticated or self.role is None:
            raise AuthenticationError("authenticate once, after hello")
        theirs, mine = self._nonces
        if not auth.verify(self._secret, self.role, mine, theirs, proof):
            log.warn(
                "authentication failed: {peer} does not know the shared secret",
                peer=self.describe(),
            )
            raise AuthenticationError(
                "authentication failed: the master has a different shared secret"
            )
        self.authenticated = True
        self._received = 0
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None
        self.monitor.watch(self)
        if self.role == "client":
            self._sender = BatchSender(
                self, JobResults, "results", self._encode_result, self.clock, self.blobs_out
            )
            self.client = ClientSession(self.name, self._sender.add, self.versions)
            self.master.add_client(self.client)
            log.info(
                "client {name} connected (python {py}, cloudpickle {cp})",
                name=self.name,
                py=self.versions[0],
                cp=self.versions[1],
            )
        return {}

    @RegisterWorker.responder
    def _register(self, slots: int, resources: str) -> dict[str, Any]:
        _check(self.role == "worker", "only a worker may register")
        _check(self.worker is None, "this worker is already registered")
        _check(0 < slots <= 100_000, f"slots must be from 1 to 100000, not {slots}")
        try:
            res = json.loads(resources) if resources else {}
        except ValueError:
            res = None
        _check(isinstance(res, dict), "resources must be a JSON object")
        self._sender = BatchSender(
            self, RunJobs, "jobs", self._encode_run, self.clock, self.blobs_out
        )
        self.worker = WorkerSession(
            self.name,
            slots,
            self._sender.add,
            self._send_cancel,
            res,
            prefetch=self.master.prefetch,
            versions=self.versions,
        )
        self.master.add_worker(self.worker)
        return {}

    # -- clients ----------------------------------------------------------------

    @SubmitJobs.responder
    def _submit(self, jobs: list[dict[str, Any]]) -> Deferred[dict[str, Any]]:
        _check(self.client is not None, "only a client may submit jobs")
        assert self.client is not None
        for r in jobs:
            code = self.blobs_in.take(r["fn_code"], r["fn_code_blob"])
            args = self.blobs_in.take(r["args"], r["args_blob"])
            if code.size:
                self.master.define(self.client, r["fn"], r["fn_env"], code)
            self.master.submit(
                self.client,
                r["job"],
                r["fn"],
                args,
                timeout=r["timeout"],
                max_retries=r["max_retries"],
                priority=r["priority"],
                resources=r["resources"],
            )
        self.master.dispatch()
        # Flow control: a client holding too much waits for this answer, and
        # its sender sends at most a few batches ahead of its answers.
        return self.client.when_below_limit().addCallback(lambda _: {})

    @LeaveWorker.responder
    def _leave(self) -> dict[str, Any]:
        _check(self.worker is not None, "only a registered worker may leave")
        assert self.worker is not None
        self.worker.leaving = True
        log.info("worker {name} is leaving", name=self.name)
        return {}

    @CancelJobs.responder
    def _cancel(self, jobs: list[int]) -> dict[str, Any]:
        _check(self.client is not None, "only a client may cancel jobs")
        assert self.client is not None
        self.master.cancel(self.client, jobs)
        return {}

    @staticmethod
    def _encode_result(item: ResultItem) -> tuple[dict[str, Any], dict[str, Payload]]:
        job_id, status, value, error = item
        return {"job": job_id, "status": status, "error": error}, {"value": value}

    # -- workers ----------------------------------------------------------------

    @JobResults.responder
    def _results(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        _check(self.worker is not None, "only a registered worker may send results")
        assert self.worker is not None
        for r in results:
            value = self.blobs_in.take(r["value"], r["value_blob"])
            self.master.worker_result(self.worker, r["job"], r["status"], value, r["error"])
        self.master.dispatch()
        return {}

    def _encode_run(self, job: Job) -> tuple[dict[str, Any], dict[str, Payload]] | None:
        worker = self.worker
        if worker is None or job.ended or job.worker is not worker:
            return None  # cancelled, or moved on, before its turn came
        job.sent = True
        fields: dict[str, Any] = {
            "job": job.task,
            "fn": job.fn.hash,
            "fn_env": "",
            "timeout": job.timeout,
            "max_retries": job.max_retries,
            "priority": job.priority,
            "resources": job.resources,
        }
        code = EMPTY
        if job.fn.hash not in worker.functions:
            worker.functions.add(job.fn.hash)
            fields["fn_env"], code = job.fn.env, job.fn.code
        return fields, {"fn_code": code, "args": job.args}

    def _send_cancel(self, task: int) -> None:
        # Sent after any RunJobs batch already on the wire; a record still
        # queued in the sender is skipped instead (see Master._abandon).
        self.callRemote(CancelJobs, jobs=[task]).addErrback(lambda _: None)

    # -- anyone -------------------------------------------------------------------

    @Status.responder
    def _status(self, detail: bool) -> dict[str, Any]:
        return {"status": json.dumps(self.master.status())}


class MasterFactory(Factory):
    def __init__(
        self,
        master: Master,
        monitor: HeartbeatMonitor,
        clock: IReactorTime,
        secret: bytes,
        auth_timeout: float = AUTH_TIMEOUT,
    ) -> None:
        self.master = master
        self.monitor = monitor
        self.clock = clock
        self.secret = secret
        self.auth_timeout = auth_timeout

    def buildProtocol(self, addr: Any) -> MasterProtocol:
        proto = MasterProtocol(
            self.master, self.monitor, self.clock, self.secret, self.auth_timeout
        )
        proto.factory = self
        return proto


__all__ = ["MasterProtocol", "MasterFactory"]
