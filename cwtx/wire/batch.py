"""
Batching: many records per AMP command, so a million tiny jobs are not a
million round trips, and a bounded number of batches in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import txaio
from twisted.internet.defer import Deferred, succeed
from twisted.protocols.amp import AMP, Command

from cwtx.wire.blobs import INLINE_MAX
from cwtx.wire.payload import Data, Payload

if TYPE_CHECKING:
    from cwtx.wire.peer import Peer

txaio.use_twisted()
log = txaio.make_logger()

T = TypeVar("T")

#: A batch's encoded size stays under this (AMP's value limit is 65,535).
BATCH_BYTES = 60_000
#: Batches sent but not yet acknowledged.
BATCH_WINDOW = 4

#: What must reach the peer ahead of a record (put data it names): awaited
#: before the record joins a batch.
Before = Callable[[], Awaitable[Any]]
#: An encoder turns a queued item into (fields, payloads), or None to skip
#: it; or into (fields, payloads, before).  A payload may be given as bytes.
Fields = dict[str, Any]
Encoded = tuple[Fields, dict[str, Data]] | tuple[Fields, dict[str, Data], Before]
Encoder = Callable[[T], "Encoded | None"]


def _abort(amp: AMP) -> None:
    if amp.transport is not None:
        amp.transport.abortConnection()


class BatchSender(Generic[T]):
    """
    Sends queued items in order, as batches of one list-valued command.

    Items are encoded only when their turn comes (so an item cancelled while
    queued can be skipped), large payloads are streamed just before the batch
    that names them, and at most BATCH_WINDOW batches await their answer.
    An encoder may also return what must reach the peer before its record
    (``before``, a coroutine function: the put data a job names), which
    runs when the record's turn comes.
    """

    def __init__(
        self,
        peer: Peer,
        command: type[Command],
        argument: str,
        encode: Encoder[T],
        on_error: Callable[[Any], None] | None = None,
    ) -> None:
        """Batches go over ``peer``, its big payloads through its own
        BlobSender (blob ids are per connection and direction), and on its
        clock.  ``on_error(failure)`` is called if the other side refuses a
        batch; by default the connection is aborted, so the usual machinery
        for a lost connection (retries, reconnection) takes over and nothing
        waits on records that will never be answered."""
        self._on_error = on_error or (lambda failure: _abort(peer))
        self._amp = peer
        self._command = command
        self._argument = argument
        self._record_size = dict(command.arguments)[argument.encode()].record_size
        self._encode = encode
        self._clock = peer.clock
        self._blobs = peer.blobs_out
        self._queue: deque[T] = deque()
        self._running = False
        self._stopped = False
        self._drained: list[Deferred[None]] = []
        # Items are numbered as they are added; those up to _handed are in
        # batches handed to the connection (or skipped).
        self._added = 0
        self._popped = 0
        self._handed = 0
        self._flushed: deque[tuple[int, Deferred[None]]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item: T) -> None:
        if self._stopped:
            return
        self._queue.append(item)
        self._added += 1
        if not self._running:
            self._running = True
            # Coalesce everything added in this turn of the event loop.
            self._clock.callLater(0, self._start)

    def stop(self) -> None:
        """Drop what is queued and send nothing more (connection gone)."""
        self._stopped = True
        self._queue.clear()
        self._fire_drained()
        self._hand_up_to(self._added)

    def drained(self) -> Deferred[None]:
        """Fires once everything queued has been sent and acknowledged
        (or the sender stopped)."""
        if self._stopped or (not self._running and not self._queue):
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d

    def flushed(self) -> Deferred[None]:
        """Fires once everything queued so far is in batches handed to the
        connection (not yet acknowledged), so that what is sent next on the
        same connection, by any sender, arrives after it.  Unlike
        :meth:`drained`, later additions do not hold it back."""
        if self._stopped or self._handed >= self._added:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._flushed.append((self._added, d))
        return d

    def _hand_up_to(self, number: int) -> None:
        self._handed = max(self._handed, number)
        while self._flushed and self._flushed[0][0] <= self._handed:
            self._flushed.popleft()[1].callback(None)

    def _fire_drained(self) -> None:
        waiting, self._drained = self._drained, []
        for d in waiting:
            d.callback(None)

    def _start(self) -> None:
        d = Deferred.fromCoroutine(self._pump())
        d.addErrback(self._failed)

    def _failed(self, failure: Any) -> None:
        self._running = False
        stopped = self._stopped
        self.stop()
        if not stopped:
            log.warn(
                "sending {command} failed: {failure}",
                command=self._command.__name__,
                failure=failure.getErrorMessage(),
            )
            self._on_error(failure)

    async def _pump(self) -> None:
        inflight: deque[Deferred[Any]] = deque()
        batch: list[dict[str, Any]] = []
        size = 0
        try:
            while not self._stopped:
                if not self._queue:
                    if batch:
                        inflight.append(self._send(batch))
                        batch, size = [], 0
                    self._hand_up_to(self._popped)  # (skipped ones too)
                    if not inflight:
                        self._running = False
                        self._fire_drained()
                        return
                    await inflight.popleft()
                    continue
                encoded = self._encode(self._queue.popleft())
                self._popped += 1
                if encoded is None:
                    if not batch:
                        self._hand_up_to(self._popped)
                    continue
                fields, payloads = encoded[0], encoded[1]
                if len(encoded) > 2:  # what must go ahead of this record
                    if batch:  # (what it sends may be long: do not hold these back)
                        inflight.append(self._send(batch))
                        self._hand_up_to(self._popped - 1)
                        batch, size = [], 0
                    await encoded[2]()  # type: ignore[misc]
                for name, payload in payloads.items():
                    if type(payload) is bytes:
                        if len(payload) <= INLINE_MAX:
                            fields[name], fields[name + "_blob"] = payload, 0
                            continue
                        payload = Payload.of(payload)
                    if payload.size > INLINE_MAX and batch:
                        # Do not hold small records back behind a long stream.
                        inflight.append(self._send(batch))
                        self._hand_up_to(self._popped - 1)
                        batch, size = [], 0
                    inline, blob = await self._blobs.encode(payload)
                    fields[name], fields[name + "_blob"] = inline, blob
                record_size = self._record_size(fields)

                if batch and size + record_size > BATCH_BYTES:
                    inflight.append(self._send(batch))
                    self._hand_up_to(self._popped - 1)
                    batch, size = [], 0
                batch.append(fields)
                size += record_size
                while len(inflight) >= BATCH_WINDOW:
                    await inflight.popleft()
        finally:
            self._running = False
            for d in inflight:
                d.addErrback(lambda _: None)  # the first failure is reported

    def _send(self, batch: list[dict[str, Any]]) -> Deferred[Any]:
        return self._amp.callRemote(self._command, **{self._argument: batch})
