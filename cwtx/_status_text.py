"""``cw status`` as text: the master's line, then tables of workers and
clients, the busiest first when there are many."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cwtx.wire.resources import describe, size_text

#: Rows of each table shown without ``--all``.
SHOWN = 20


def render(status: dict[str, Any], every: bool = False) -> str:
    lines = [_master_line(status), _totals_line(status)]
    workers, clients = status["workers"], status["clients"]
    lines += _table(
        "workers",
        workers,
        [
            ("NAME", lambda w: w["name"] + (" (leaving)" if w["leaving"] else "")),
            ("HOST", lambda w: w.get("host", "")),
            ("PID", lambda w: w.get("pid") or ""),
            ("SLOTS", lambda w: w["slots"]),
            ("RUNNING", lambda w: w["running"]),
            ("PREFETCHED", lambda w: w["prefetched"]),
            ("DONE", lambda w: w["done"]),
            ("FAILED", lambda w: w.get("failed", 0)),
            ("LOST", lambda w: w["lost"]),
            ("HEARD", lambda w: _ago(w.get("heard"))),
            ("UP", lambda w: duration(w.get("uptime"))),
            ("RESOURCES", _resources),
        ],
        busy=lambda w: (w["running"], w["prefetched"]),
        every=every,
    )
    lines += _table(
        "clients",
        clients,
        [
            ("NAME", lambda c: c["name"] + (" (priority)" if c["priority"] else "")),
            ("HOST", lambda c: c.get("host", "")),
            ("PID", lambda c: c.get("pid") or ""),
            ("USER", lambda c: c.get("user", "")),
            ("QUEUED", lambda c: c["queued"]),
            ("RUNNING", lambda c: c["running"]),
            ("PREFETCHED", lambda c: c["prefetched"]),
            ("DONE", lambda c: c.get("done", 0)),
            ("FAILED", lambda c: c.get("failed", 0)),
            ("SHARE", lambda c: f"{c['share']:g}"),
            ("REFS", lambda c: _held(c, "put_data", "put_bytes")),
            ("FUNCTIONS", lambda c: _held(c, "functions", "function_bytes")),
        ],
        busy=lambda c: (c["running"] + c["prefetched"], c["queued"]),
        every=every,
    )
    for c in clients:
        for u in c.get("unschedulable", []):
            lines.append(f"  {u['jobs']} of {c['name']}'s jobs are unschedulable: {u['why']}")
    return "\n".join(lines)


def _master_line(status: dict[str, Any]) -> str:
    parts = [f"master {status['master']}"]
    if status.get("address"):
        parts.append(f"at {status['address']}")
    if "version" in status:
        parts.append(f"cwtx {status['version']}, protocol {status['protocol']}")
    if "uptime" in status:
        parts.append(f"up {duration(status['uptime'])}")
    return ", ".join(parts)


def _totals_line(status: dict[str, Any]) -> str:
    line = (
        f"{len(status['workers'])} workers, {status['slots']} slots: "
        f"{status['running']} running, {status['prefetched']} prefetched, "
        f"{status['queued']} queued, {status['unschedulable']} unschedulable; "
        f"{status['completed']} completed"
    )
    if "throughput" in status:
        line += f", {status['throughput']:.1f} jobs/s over the last minute"
    return line + f"; {len(status['clients'])} clients"


def _table(
    title: str,
    rows: Sequence[dict[str, Any]],
    columns: list[tuple[str, Callable[[dict[str, Any]], Any]]],
    busy: Callable[[dict[str, Any]], Any],
    every: bool,
) -> list[str]:
    if not rows:
        return []
    shown = sorted(rows, key=lambda r: r["name"])
    if len(shown) > SHOWN and not every:
        shown = sorted(shown, key=busy, reverse=True)[:SHOWN]
    cells = [[str(get(r)) for _, get in columns] for r in shown]
    heads = [head for head, _ in columns]
    widths = [max(len(x) for x in col) for col in zip(heads, *cells, strict=False)]
    out = [f"{title} ({len(rows)}{', the busiest first' if len(shown) < len(rows) else ''}):"]
    for row in [heads, *cells]:
        out.append("  " + "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    if len(shown) < len(rows):
        out.append(f"  ... and {len(rows) - len(shown)} more (--all shows every one)")
    return out


def _resources(w: dict[str, Any]) -> str:
    return ",".join(f"{k}={describe(v)}" for k, v in sorted(w["resources"].items()))


def _held(c: dict[str, Any], number: str, size: str) -> str:
    """``3 (12 MiB)``: how many of a client's things the master holds, and
    their bytes; blank from a master too old to say."""
    if number not in c:
        return ""
    return f"{c[number]} ({size_text(c[size])})" if c[number] else "0"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _ago(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f}s ago"
