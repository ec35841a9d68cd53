"""
The master's AMP endpoint: turns commands into calls on :class:`Master`, and
the master's deliveries into batched commands.
"""

from __future__ import annotations

import json
from typing import Any

import txaio
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from ._batch import BatchSender
from ._commands import (
    PROTOCOL_VERSION,
    CancelJobs,
    Hello,
    JobResults,
    LeaveWorker,
    RegisterWorker,
    RunJobs,
    Status,
    SubmitJobs,
)
from ._master import ClientSession, Job, Master, ResultItem, WorkerSession
from ._payload import EMPTY, Payload
from ._peer import HeartbeatMonitor, Peer

txaio.use_twisted()
log = txaio.make_logger()


class HandshakeError(Exception):
    """A command came before the hello, or from the wrong kind of peer."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise HandshakeError(message)


class MasterProtocol(Peer):
    """One connection to the master: a client, a worker, or a status query."""

    def __init__(self, master: Master, monitor: HeartbeatMonitor, clock: IReactorTime) -> None:
        super().__init__(clock)
        self.master = master
        self.monitor = monitor
        self.role: str | None = None
        self.name = "?"
        self.client: ClientSession | None = None
        self.worker: WorkerSession | None = None
        self._sender: BatchSender[Any] | None = None

    def describe(self) -> str:
        return f"{self.role or 'peer'} {self.name}"

    def connectionMade(self) -> None:
        super().connectionMade()
        self.monitor.watch(self)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
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
        self, role: str, name: str, protocol: int, python: str, cloudpickle: str
    ) -> dict[str, Any]:
        _check(self.role is None, "hello was already said on this connection")
        _check(role in ("client", "worker", "status"), f"unknown role {role!r}")
        _check(
            protocol == PROTOCOL_VERSION,
            f"protocol version {protocol} is not the master's {PROTOCOL_VERSION}",
        )
        self.role, self.name = role, name[:200]
        if role == "client":
            self._sender = BatchSender(
                self, JobResults, "results", self._encode_result, self.clock, self.blobs_out
            )
            self.client = ClientSession(self.name, self._sender.add)
            self.master.add_client(self.client)
            log.info(
                "client {name} connected (python {py}, cloudpickle {cp})",
                name=self.name,
                py=python,
                cp=cloudpickle,
            )
        return {"protocol": PROTOCOL_VERSION, "master": self.master.id}

    @RegisterWorker.responder
    def _register(self, slots: int, resources: str) -> dict[str, Any]:
        _check(self.role == "worker", "only a worker may register")
        _check(self.worker is None, "this worker is already registered")
        _check(0 < slots <= 100_000, f"slots must be from 1 to 100000, not {slots}")
        res = json.loads(resources) if resources else {}
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
        )
        self.master.add_worker(self.worker)
        return {}

    # -- clients ----------------------------------------------------------------

    @SubmitJobs.responder
    def _submit(self, jobs: list[dict[str, Any]]) -> dict[str, Any]:
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
        return {}

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
        _check(self.role is not None, "say hello first")
        return {"status": json.dumps(self.master.status())}


class MasterFactory(Factory):
    def __init__(self, master: Master, monitor: HeartbeatMonitor, clock: IReactorTime) -> None:
        self.master = master
        self.monitor = monitor
        self.clock = clock

    def buildProtocol(self, addr: Any) -> MasterProtocol:
        proto = MasterProtocol(self.master, self.monitor, self.clock)
        proto.factory = self
        return proto


__all__ = ["MasterProtocol", "MasterFactory"]
