"""The dashboard's HTML: what ``cw status`` shows, plus charts of the last
ten minutes.

Rendered with twisted.web.template, which escapes every string: worker and
client names come from peers and may be anything.  Columns follow the keys
of status's worker and client dicts, the known ones first, so a field added
to status shows up here without a change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.web.template import Tag, flattenString, tags

from cwtx._status_text import duration
from cwtx.master.charts import Series, chart
from cwtx.wire.resources import size_text

#: Seconds between refreshes (dashboard.js; a <meta> refresh without JavaScript).
REFRESH = 3
#: Rows of a table; the rest is counted in one line.
MAX_ROWS = 200
#: What the charts span, in seconds.
SPAN = 600.0

WORKER_COLUMNS = (
    "name",
    "host",
    "pid",
    "slots",
    "running",
    "prefetched",
    "done",
    "failed",
    "lost",
    "heard",
    "uptime",
    "resources",
    "leaving",
)
CLIENT_COLUMNS = (
    "name",
    "host",
    "pid",
    "user",
    "queued",
    "running",
    "prefetched",
    "done",
    "failed",
    "jobs",
    "share",
    "priority",
    "put_data",
    "put_bytes",
    "functions",
    "function_bytes",
    "unschedulable",
)
TOTALS = ("slots", "running", "prefetched", "queued", "unschedulable", "completed", "throughput")
#: Page-0 keys shown elsewhere than in the totals.
NOT_TOTALS = {"master", "pages", "http", "history", "workers", "clients"}
NOT_TOTALS |= {"address", "version", "protocol", "uptime"}  # in the header


def render(status: dict[str, Any], about: Sequence[tuple[str, str]], now: float) -> bytes:
    """The whole page for ``status`` (as ``cw status --json`` has it);
    ``about`` is the master's own lines (address, version, uptime)."""
    result: list[bytes] = []
    flattenString(None, page(status, about, now)).addCallback(result.append)
    (html,) = result  # nothing here waits: the Deferred has fired
    return b"<!DOCTYPE html>\n" + html


def page(status: dict[str, Any], about: Sequence[tuple[str, str]], now: float) -> Tag:
    title = f"cwtx master {status.get('master', '')}"
    head = tags.head(
        tags.meta(charset="utf-8"),
        tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
        tags.title(title),
        tags.link(rel="stylesheet", href="dashboard.css"),
        tags.noscript(tags.meta(**{"http-equiv": "refresh", "content": str(REFRESH)})),
        tags.script(src="dashboard.js", defer="defer"),
    )
    body = tags.body(**{"data-refresh": str(REFRESH)})(content(status, about, now))
    return tags.html(lang="en")(head, body)


def content(status: dict[str, Any], about: Sequence[tuple[str, str]], now: float) -> Tag:
    """What each refresh replaces: ``<main id="content">``."""
    workers = status.get("workers", [])
    clients = status.get("clients", [])
    return Tag("main", attributes={"id": "content"})(  # not in tags' list
        tags.header(
            tags.h1("cwtx master ", tags.code(str(status.get("master", "")))),
            tags.dl(class_="about")([(tags.dt(k), tags.dd(v)) for k, v in about]),
        ),
        tags.section(tags.h2("Totals"), totals(status, len(workers), len(clients))),
        tags.section(class_="charts")(tags.h2("Last ten minutes"), charts(status, now)),
        tags.section(
            tags.h2(f"Workers ({len(workers)})"),
            table(
                "workers",
                sorted(workers, key=lambda w: -_number(w.get("running"))),
                WORKER_COLUMNS,
                "workers",
            ),
        ),
        tags.section(
            tags.h2(f"Clients ({len(clients)})"),
            table(
                "clients",
                sorted(
                    clients,
                    key=lambda c: (-_number(c.get("running")), -_number(c.get("queued"))),
                ),
                CLIENT_COLUMNS,
                "clients",
            ),
        ),
    )


def totals(status: dict[str, Any], workers: int, clients: int) -> Tag:
    keys = [k for k in TOTALS if k in status]
    keys += [k for k in status if k not in NOT_TOTALS and k not in keys]
    rows = [("workers", str(workers)), ("clients", str(clients))]
    rows += [(_label(k), cell(k, status[k])) for k in keys]
    return tags.table(class_="totals", id="totals")(
        tags.tr(tags.th(k), tags.td(**{"data-key": k})(v)) for k, v in rows
    )


def charts(status: dict[str, Any], now: float) -> list[Tag]:
    history = status.get("history", [])

    def points(key: str) -> list[tuple[float, float]]:
        return [(h["at"], float(h[key])) for h in history if key in h]

    return [
        tags.figure(
            chart(
                "throughput",
                "jobs completed per second",
                [Series("jobs/s", points("throughput"))],
                now,
                SPAN,
            ),
            tags.figcaption("throughput (jobs/s)"),
        ),
        tags.figure(
            chart("queued", "jobs queued", [Series("queued", points("queued"))], now, SPAN),
            tags.figcaption("queue length"),
        ),
        tags.figure(
            chart(
                "busy",
                "busy slots, of all slots",
                [
                    Series("all slots", points("slots"), "total"),
                    Series("busy slots", points("running")),
                ],
                now,
                SPAN,
            ),
            tags.figcaption("busy slots (dashed: all slots)"),
        ),
    ]


def table(name: str, rows: Sequence[dict[str, Any]], known: Iterable[str], what: str) -> Tag:
    """The first MAX_ROWS ``rows``, known columns first, then any others."""
    shown = rows[:MAX_ROWS]
    columns = [k for k in known if any(k in r for r in shown)] if shown else list(known)
    for r in shown:
        columns += [k for k in r if k not in columns]
    out = tags.table(class_="rows", id=name)(
        tags.thead(tags.tr(tags.th(_label(k)) for k in columns)),
        tags.tbody(
            tags.tr(tags.td(**{"data-key": k})(cell(k, r.get(k))) for k in columns) for r in shown
        ),
    )
    more = len(rows) - MAX_ROWS
    if more > 0:
        return tags.div(out, tags.p(class_="more")(f"and {more} more {what}"))
    return out


def cell(key: str, value: Any) -> str:
    """A status value as text (escaped when flattened)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if key == "uptime" and isinstance(value, int | float):
        return duration(value)
    if key == "heard" and isinstance(value, int | float):
        return f"{value:.1f} s ago"
    if key.endswith("_bytes") and isinstance(value, int | float):
        return size_text(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        if set(value) == {"jobs", "why"}:  # an unschedulable shape
            return f"{cell('jobs', value['jobs'])}: {cell('why', value['why'])}"
        return ", ".join(f"{k}={cell(k, v)}" for k, v in value.items())
    if isinstance(value, list):
        sep = "; " if any(isinstance(v, dict | list) for v in value) else ","
        return sep.join(cell(key, v) for v in value)
    return str(value)


def _label(key: str) -> str:
    return key.replace("_", " ")


def _number(value: Any) -> float:
    return value if isinstance(value, int | float) else 0
