"""
The wire contract: every AMP command that master, workers and clients exchange.

This module holds no logic.  Payloads (functions, arguments, results) are
opaque bytes to the master.  A payload up to ``INLINE_MAX`` bytes travels
inline in its record (``<name>`` holds it, ``<name>_blob`` is 0); a larger one
is streamed first with :class:`BlobChunk` and the record names it by blob id
(``<name>`` empty, ``<name>_blob`` > 0).  See docs/protocol.md.
"""

from twisted.protocols.amp import Boolean, Command, Integer, ListOf, Unicode
from twisted.protocols.amp import String as Bytes

from ._errors import AuthenticationError, ProtocolError, ProtocolMismatch
from ._records import Chunks, Records

PROTOCOL_VERSION = 1

#: Bad input from a peer: the error goes back, then the connection closes.
PROTOCOL_ERRORS = {ProtocolError: b"PROTOCOL_ERROR"}

#: What one job record carries, client to master (SubmitJobs) and master to
#: worker (RunJobs).  ``job`` is the sender's id for the job.  ``fn`` is the
#: sha256 of the function's environment and pickle; ``fn_env`` and
#: ``fn_code`` are sent only the first time that hash goes to that peer.
JOB_RECORD = [
    ("job", "int"),
    ("fn", "bytes"),
    ("fn_env", "text"),
    ("fn_code", "bytes"),
    ("fn_code_blob", "int"),
    ("args", "bytes"),
    ("args_blob", "int"),
    ("timeout", "float"),
    ("max_retries", "int"),
    ("priority", "int"),
    ("resources", "text"),
]

#: What one result record carries, worker to master and master to client.
#: ``status`` is one of ok, error, lost, timeout, cancelled.  ``value`` is the
#: pickled result (ok) or pickled exception (error, may be empty); ``error``
#: is JSON with type, message and traceback (empty for ok).
RESULT_RECORD = [
    ("job", "int"),
    ("status", "text"),
    ("value", "bytes"),
    ("value_blob", "int"),
    ("error", "text"),
]


class Hello(Command):
    """First command on every connection: who I am, what I run, a nonce."""

    arguments = [
        (b"role", Unicode()),  # "client", "worker" or "status"
        (b"name", Unicode()),  # client id or worker name, for logs and status
        (b"protocol", Integer()),
        (b"python", Unicode()),
        (b"cloudpickle", Unicode()),
        (b"nonce", Bytes()),  # 32 random bytes
    ]
    response = [
        (b"protocol", Integer()),
        (b"master", Unicode()),  # the master's instance id
        (b"nonce", Bytes()),  # the master's 32 random bytes
        (b"proof", Bytes()),  # HMAC proving the master knows the secret
    ]
    errors = {ProtocolMismatch: b"REFUSED"}
    fatalErrors = {ProtocolMismatch: b"REFUSED"}


class Authenticate(Command):
    """Second command: the peer proves it knows the shared secret."""

    arguments = [(b"proof", Bytes())]
    response = []
    errors = {AuthenticationError: b"AUTHENTICATION_FAILED"}
    fatalErrors = {AuthenticationError: b"AUTHENTICATION_FAILED"}


class RegisterWorker(Command):
    """A worker offers its slots (and resources) to the master."""

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


class SubmitJobs(Command):
    """Client to master: a batch of new jobs."""

    arguments = [(b"jobs", Records(JOB_RECORD))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class RunJobs(Command):
    """Master to worker: a batch of jobs to run now (``job`` is a task id)."""

    arguments = [(b"jobs", Records(JOB_RECORD))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class JobResults(Command):
    """Worker to master, and master to client: a batch of ended jobs."""

    arguments = [(b"results", Records(RESULT_RECORD))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class CancelJobs(Command):
    """Client to master (job ids), or master to worker (task ids)."""

    arguments = [(b"jobs", ListOf(Integer()))]
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class LeaveWorker(Command):
    """A worker is shutting down: send it no more jobs.  It then reports
    what it hands back with status ``requeue``, and disconnects."""

    arguments = []
    response = []
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


class Heartbeat(Command):
    """Either side asks; the answer proves the peer's event loop is alive."""

    arguments = []
    response = []


class Status(Command):
    """Ask the master for a snapshot of its state (JSON)."""

    arguments = [(b"detail", Boolean())]
    response = [(b"status", Unicode())]
    errors = PROTOCOL_ERRORS
    fatalErrors = PROTOCOL_ERRORS


__all__ = [
    "PROTOCOL_VERSION",
    "JOB_RECORD",
    "RESULT_RECORD",
    "Hello",
    "Authenticate",
    "RegisterWorker",
    "BlobChunk",
    "SubmitJobs",
    "RunJobs",
    "JobResults",
    "CancelJobs",
    "Heartbeat",
    "LeaveWorker",
    "Status",
]
