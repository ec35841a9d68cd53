"""The master's recent past, sampled every few seconds: the dashboard's
charts and the status's ``throughput`` come from here.

A sample costs what status page 0's totals cost (one pass over the workers
and clients); the history holds a fixed number of them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall

from cwtx.master.status import totals

if TYPE_CHECKING:
    from cwtx.master.master import Master

#: Seconds between samples.
INTERVAL = 5.0
#: Seconds of samples kept.
KEEP = 600.0
#: The window of ``per_minute`` and of the status's ``throughput``.
MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The master at one moment; ``throughput`` is jobs completed per
    second since the sample before (0 for the first)."""

    at: float  # the clock's seconds: unix time on a real reactor
    completed: int
    throughput: float
    queued: int
    running: int  # started in a slot: the busy slots
    prefetched: int
    slots: int

    def public(self) -> dict[str, Any]:
        """What status and the dashboard show of it."""
        return asdict(self)


class History(Service):
    """Samples ``master`` every ``interval`` seconds on ``clock`` (a reactor,
    or a ``task.Clock`` in tests) and keeps the last ``keep`` seconds; as a
    service, it samples while it runs."""

    def __init__(
        self, master: Master, clock: Any, interval: float = INTERVAL, keep: float = KEEP
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        self.master = master
        self.clock = clock
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=int(keep // interval) + 1)
        self._loop = LoopingCall(self.sample)
        self._loop.clock = clock

    def start(self) -> None:
        """Sample now, then every ``interval`` seconds."""
        if not self._loop.running:
            self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def startService(self) -> None:
        super().startService()
        self.start()

    def stopService(self) -> None:
        super().stopService()
        self.stop()

    def sample(self) -> Sample:
        """Take one sample (the loop calls this; tests may too)."""
        now = self.clock.seconds()
        t = totals(self.master)
        throughput = 0.0
        if self.samples:
            last = self.samples[-1]
            if now > last.at:
                throughput = max(0, t["completed"] - last.completed) / (now - last.at)
        s = Sample(
            at=now,
            completed=t["completed"],
            throughput=throughput,
            queued=t["queued"],
            running=t["running"],
            prefetched=t["prefetched"],
            slots=t["slots"],
        )
        self.samples.append(s)
        return s

    def _minute_ago(self) -> Sample | None:
        """The newest sample at least a minute older than the last one, or
        the oldest there is (before a full minute has passed)."""
        if not self.samples:
            return None
        since = self.samples[-1].at - MINUTE
        base = self.samples[0]
        # At most MINUTE / interval + 1 steps back from the end.
        for s in reversed(self.samples):
            if s.at <= since:
                return s
            base = s
        return base

    def per_minute(self) -> int:
        """Jobs completed over the last minute of samples (less, before a
        minute of them)."""
        base = self._minute_ago()
        return 0 if base is None else self.samples[-1].completed - base.completed

    def throughput(self) -> float:
        """Jobs completed per second over the last minute of samples."""
        base = self._minute_ago()
        if base is None:
            return 0.0
        span = self.samples[-1].at - base.at
        return (self.samples[-1].completed - base.completed) / span if span > 0 else 0.0

    def public(self) -> list[dict[str, Any]]:
        """The samples as status shows them."""
        return [s.public() for s in self.samples]
