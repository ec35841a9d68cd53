"""
What a worker forwards of a job's output (``forward_output``), and what it
drops.  The slot child sends raw bytes as the job prints them; the
supervisor, which runs no user code, cuts them into lines and bounds them
here, so a job printing megabytes costs the master and the client only a
little (docs/clients.md, "Forwarding output"):

* a line longer than MAX_LINE bytes is cut there, and ends with CUT_MARK;
* each task may forward OUTPUT_BURST bytes at once, then OUTPUT_RATE bytes
  a second (a token bucket over both streams); a line that does not fit is
  dropped, and the next line forwarded on that stream (or the task's end)
  is preceded by one notice: ``[cwtx: N lines dropped]``.

Lines are decoded as UTF-8 (a bad byte becomes U+FFFD) and handed on in
pieces of at most RECORD_TEXT characters of whole lines, each ending in a
newline: one ``TaskOutput`` record each.
"""

from __future__ import annotations

from cwtx.wire.names import OutputStream, dropped_notice

#: Bytes of one line, at most; the rest of a longer line is dropped.
MAX_LINE = 4096
#: What ends a line that was cut.
CUT_MARK = " [cwtx: line cut at {n} bytes]"
#: Bytes a task may forward at once ...
OUTPUT_BURST = 256 * 1024
#: ... and then per second, on average.
OUTPUT_RATE = 64 * 1024
#: Characters of one TaskOutput record's text, at most (whole lines).
RECORD_TEXT = 8192


class OutputLimiter:
    """One task's output: bytes in, bounded whole lines out."""

    def __init__(self, now: float, burst: int = OUTPUT_BURST, rate: int = OUTPUT_RATE) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._last = now
        self._partial = {s: bytearray() for s in OutputStream}
        self._cutting = dict.fromkeys(OutputStream, False)  # dropping the rest of a cut line
        #: Lines dropped on each stream since the last one forwarded there.
        self.dropped = dict.fromkeys(OutputStream, 0)
        #: Lines dropped in all (tests, logs).
        self.total_dropped = 0

    def feed(self, stream: OutputStream, data: bytes, now: float) -> list[str]:
        """Bytes the task printed on ``stream``: the texts to forward."""
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        pending = self._partial[stream]
        pending += data
        out: list[str] = []
        start = 0
        while start < len(pending):
            if self._tokens < 1 and not self._cutting[stream]:
                # Nothing fits: count the whole lines left, at C speed.
                lines = pending.count(b"\n", start)
                self.dropped[stream] += lines
                self.total_dropped += lines
                if lines:
                    start = pending.rindex(b"\n") + 1
                break
            end = pending.find(b"\n", start)
            if end < 0:
                break
            line = pending[start:end]
            start = end + 1
            if self._cutting[stream]:
                self._cutting[stream] = False  # the end of a line cut before
                continue
            self._take(stream, line, out)
        del pending[:start]
        if len(pending) > MAX_LINE:  # a line with no end yet: cut it now
            if not self._cutting[stream]:
                self._take(stream, pending[:MAX_LINE], out, cut=True)
                self._cutting[stream] = True
            pending.clear()
        return _pieces(out)

    def close(self) -> list[tuple[OutputStream, str]]:
        """The task ended: its unfinished last lines, and any drop notice."""
        out: list[tuple[OutputStream, str]] = []
        for stream in OutputStream:
            lines: list[str] = []
            pending = self._partial[stream]
            if pending and not self._cutting[stream]:
                self._take(stream, pending, lines)
            pending.clear()
            if self.dropped[stream]:
                lines.append(dropped_notice(self.dropped[stream]))
                self.dropped[stream] = 0
            out.extend((stream, text) for text in _pieces(lines))
        return out

    def _take(
        self, stream: OutputStream, line: bytes | bytearray, out: list[str], cut: bool = False
    ) -> None:
        cost = len(line) + 1
        if cost > self._tokens:
            self.dropped[stream] += 1
            self.total_dropped += 1
            return
        self._tokens -= cost
        if self.dropped[stream]:
            out.append(dropped_notice(self.dropped[stream]))
            self.dropped[stream] = 0
        if len(line) > MAX_LINE:
            line, cut = line[:MAX_LINE], True
        text = bytes(line).decode("utf-8", "replace")
        out.append(text + (CUT_MARK.format(n=MAX_LINE) if cut else "") + "\n")


def _pieces(lines: list[str]) -> list[str]:
    """Whole lines joined into texts of at most RECORD_TEXT characters."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and size + len(line) > RECORD_TEXT:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        pieces.append("".join(current))
    return pieces
