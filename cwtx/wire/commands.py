"""
The wire contract: every AMP command that master, workers and clients
exchange.  This module holds no logic; docs/protocol.md documents it, and
``names`` holds the other names that cross a process boundary.

Payloads (functions, arguments, results) are opaque bytes to the master.  A
payload up to ``blobs.INLINE_MAX`` bytes travels inline in its record
(``<name>`` holds it, ``<name>_blob`` is 0); a larger one is streamed first
with :class:`BlobChunk` and the record names it by blob id (``<name>``
empty, ``<name>_blob`` > 0).

A *job* is what a client submitted, named by the client's job id; a *task*
is one attempt at running a job on a worker, named by the master's task id.
Clients only ever see job ids, workers only task ids.
"""

from twisted.protocols.amp import Command, Float, Integer, ListOf, Unicode
from twisted.protocols.amp import String as Bytes

from cwtx._errors import AuthenticationError, ProtocolError, ProtocolMismatch
from cwtx.wire.records import Chunks, Records

#: Bad input from a peer: the error goes back, then the connection closes.
PROTOCOL_ERRORS = {ProtocolError: b"PROTOCOL_ERROR"}

#: A job, client to master.  ``fn`` is the sha256 of the function's
#: environment and pickle; ``fn_env`` and ``fn_code`` are sent only the first
#: time that hash goes over the connection.  ``max_retries`` -1: the master's
#: default.  ``resources``: a JSON object.  ``forward_output`` 1: send the
#: job's stdout and stderr lines back to the client (``JobOutput``).
#: ``refs``: the put data (``PutData``) its arguments name, by hash, 32
#: bytes each, joined.
JOB_RECORD = [
    ("job", "int"),
    ("fn", "bytes"),
    ("fn_env", "text"),
    ("fn_code", "bytes"),
    ("fn_code_blob", "int"),
    ("args", "bytes"),
    ("args_blob", "int"),
    ("refs", "bytes"),
    ("timeout", "float"),
    ("max_retries", "int"),
    ("priority", "int"),
    ("resources", "text"),
    ("forward_output", "int"),
]

#: A task, master to worker: what the worker needs to run one attempt.
#: ``session`` is the master's number for the client session the job came
#: from (opaque; a worker with --isolate-clients keeps sessions apart).
#: ``resources``: the job's needs, a JSON object of amounts (the worker
#: picks the device ids).  ``order``: the worker starts the tasks it holds
#: lowest order first (the master's fair-share order, so a task sent later
#: may overtake tasks that wait in the worker's queue).  ``forward_output``
#: 1: capture the task's stdout and stderr and send them (``TaskOutput``).
#: ``refs``: as in JOB_RECORD; the master sends each worker their data
#: (``PutData``) before the first task there that names them.
TASK_RECORD = [
    ("task", "int"),
    ("session", "int"),
    ("fn", "bytes"),
    ("fn_env", "text"),
    ("fn_code", "bytes"),
    ("fn_code_blob", "int"),
    ("args", "bytes"),
    ("args_blob", "int"),
    ("refs", "bytes"),
    ("timeout", "float"),
    ("resources", "text"),
    ("order", "float"),
    ("forward_output", "int"),
]

#: A task started, worker to master: in which slot, and when (the worker's
#: clock, seconds since the epoch).
STARTED_RECORD = [
    ("task", "int"),
    ("slot", "int"),
    ("at", "float"),
]

#: A job started, master to client (once, at its first start).
JOB_STARTED_RECORD = [
    ("job", "int"),
]

#: Lines a task printed, worker to master: ``stream`` is a
#: names.OutputStream, ``text`` one or more whole lines, each ending in
#: a newline, already bounded by the worker (docs/clients.md).
TASK_OUTPUT_RECORD = [
    ("task", "int"),
    ("stream", "text"),
    ("text", "text"),
]

#: Lines a job printed, master to client, with the worker that ran it.
JOB_OUTPUT_RECORD = [
    ("job", "int"),
    ("worker", "text"),
    ("stream", "text"),
    ("text", "text"),
]

#: How a job ended, master to client.  ``status`` is a names.JobStatus;
#: ``value`` the pickled result (ok) or pickled exception (error, may be
#: empty); ``error`` JSON with type, message and traceback (empty for ok).
RESULT_RECORD = [
    ("job", "int"),
    ("status", "text"),
    ("value", "bytes"),
    ("value_blob", "int"),
    ("error", "text"),
]

#: How a task ended, worker to master: as RESULT_RECORD, by task id, and
#: how long it ran in its slot (seconds; 0 if it never started), which the
#: master's fair share charges its client.
TASK_RESULT_RECORD = [
    ("task", "int"),
    ("status", "text"),
    ("value", "bytes"),
    ("value_blob", "int"),
    ("error", "text"),
    ("seconds", "float"),
]


class Hello(Command):
    """First command on every connection: who I am, what I run, a nonce."""

    arguments = [
        (b"role", Unicode()),  # a names.Role
        (b"name", Unicode()),  # client id or worker name, for logs and status
        (b"protocol", Integer()),
        (b"python", Unicode()),
        (b"cloudpickle", Unicode()),
        (b"nonce", Bytes()),  # 32 random bytes
        # Where it runs, for status (optional: an older peer's hello still
        # parses, and is refused for its protocol version, by name).
        (b"host", Unicode(optional=True)),
        (b"pid", Integer(optional=True)),
        (b"user", Unicode(optional=True)),
    ]
    response = [
        (b"protocol", Integer()),
        (b"master", Unicode()),  # the master's instance id
        (b"nonce", Bytes()),  # the master's 32 random bytes
        (b"proof", Bytes()),  # HMAC proving the master knows the secret
    ]
    errors = {ProtocolMismatch: b"REFUSED", **PROTOCOL_ERRORS}
    fatalErrors = {ProtocolMismatch: b"REFUSED", **PROTOCOL_ERRORS}


class Authenticate(Command):
    """Second command: the peer proves it knows the shared secret."""

    arguments = [(b"proof", Bytes())]
    response = []
    errors = {AuthenticationError: b"AUTHENTICATION_FAILED", **PROTOCOL_ERRORS}
    fatalErrors = {AuthenticationError: b"AUTHENTICATION_FAILED", **PROTOCOL_ERRORS}


class RegisterWorker(Command):
    """Worker to master: it offers its slots (and resources)."""

    arguments = [
        (b"slots", Integer()),
        (b"resources", Unicode()),  # JSON object
    ]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class BlobChunk(Command):
    """Some pieces (each at most 65,000 bytes) of a payload being streamed."""

    arguments = [
        (b"blob", Integer()),
        (b"data", Chunks()),
    ]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class PutData(Command):
    """Client to master, and master to worker: keep this data (a pickled
    object that jobs' arguments name, ``cwtx.Ref``) under ``ref``, the
    SHA-256 of its bytes.  Sent once per connection, before the first job
    (or task) record that names it."""

    arguments = [
        (b"ref", Bytes()),
        (b"data", Bytes()),
        (b"data_blob", Integer()),
    ]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class FreeData(Command):
    """Client to master: it dropped the Refs to this data (hashes, 32 bytes
    each, joined); master to worker: no job needs it any more, drop it."""

    arguments = [(b"refs", Bytes())]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class DropFunctions(Command):
    """Master to client, and worker to master: the sender dropped these
    functions (hashes, 32 bytes each, joined) from its cache; send their
    code again with the next record that names one.  The sender keeps them
    until the answer, which comes after every record the receiver had
    queued for it (those may still name them without code)."""

    arguments = [(b"fns", Bytes())]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class SubmitJobs(Command):
    """Client to master: a batch of new jobs."""

    arguments = [(b"jobs", Records(JOB_RECORD))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class CancelJobs(Command):
    """Client to master: it gave up on these jobs (job ids); no answer follows."""

    arguments = [(b"jobs", ListOf(Integer()))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class JobResults(Command):
    """Master to client: a batch of ended jobs."""

    arguments = [(b"results", Records(RESULT_RECORD))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class RunTasks(Command):
    """Master to worker: a batch of tasks to run, in order."""

    arguments = [(b"tasks", Records(TASK_RECORD))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class CancelTasks(Command):
    """Master to worker: end these tasks (task ids) as cancelled."""

    arguments = [(b"tasks", ListOf(Integer()))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class TaskResults(Command):
    """Worker to master: a batch of ended tasks."""

    arguments = [(b"results", Records(TASK_RESULT_RECORD))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class TasksStarted(Command):
    """Worker to master: a batch of tasks that have started in a slot."""

    arguments = [(b"started", Records(STARTED_RECORD))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class TaskOutput(Command):
    """Worker to master: a batch of lines that tasks run with
    ``forward_output`` printed."""

    arguments = [(b"output", Records(TASK_OUTPUT_RECORD))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class TakeBackTasks(Command):
    """Master to worker: hand back these tasks (task ids) if they have not
    started; the answer lists those handed back, which the worker forgets
    (no result follows for them).  The others run, or ended, as usual."""

    arguments = [(b"tasks", ListOf(Integer()))]
    response = [(b"returned", ListOf(Integer()))]
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class JobsStarted(Command):
    """Master to client: a batch of jobs that have started on a worker."""

    arguments = [(b"jobs", Records(JOB_STARTED_RECORD))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class JobOutput(Command):
    """Master to client: a batch of lines that its jobs printed."""

    arguments = [(b"output", Records(JOB_OUTPUT_RECORD))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class SetShare(Command):
    """Client to master: this client's weight in the fair share of slots
    (default 1; a client with share 2 gets twice the slots of one with 1)."""

    arguments = [(b"share", Float())]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class LeaveWorker(Command):
    """Worker to master: it is shutting down, send it no more tasks.  It
    then reports what it hands back with status ``requeue``, and disconnects."""

    arguments = []
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class Heartbeat(Command):
    """Either side asks; the answer proves the peer's event loop is alive."""

    arguments = []
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class Status(Command):
    """Client or status connection to master: one page of its state, as
    JSON in pieces (see ``wire.status``)."""

    arguments = [(b"page", Integer())]
    response = [(b"status", Chunks())]
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


__all__ = [
    "JOB_RECORD",
    "TASK_RECORD",
    "RESULT_RECORD",
    "TASK_RESULT_RECORD",
    "STARTED_RECORD",
    "JOB_STARTED_RECORD",
    "TASK_OUTPUT_RECORD",
    "JOB_OUTPUT_RECORD",
    "Hello",
    "Authenticate",
    "RegisterWorker",
    "BlobChunk",
    "PutData",
    "FreeData",
    "SubmitJobs",
    "CancelJobs",
    "JobResults",
    "RunTasks",
    "CancelTasks",
    "TaskResults",
    "TasksStarted",
    "TaskOutput",
    "TakeBackTasks",
    "JobsStarted",
    "JobOutput",
    "SetShare",
    "LeaveWorker",
    "Heartbeat",
    "Status",
]
