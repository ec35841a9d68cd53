"""The master's state as pages of JSON (the Status command, ``cw status``;
the format is in ``wire.status``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cwtx import __version__
from cwtx.wire.names import PROTOCOL_VERSION
from cwtx.wire.status import PER_PAGE, merge

if TYPE_CHECKING:
    from cwtx.master.master import Master
    from cwtx.master.sessions import ClientSession, WorkerSession


def page(master: Master, number: int, per_page: int = PER_PAGE) -> dict[str, Any]:
    """Page ``number``: its workers and clients; page 0 has the totals too."""
    start, end = number * per_page, (number + 1) * per_page
    count = max(len(master.workers), len(master.clients))
    out: dict[str, Any] = {
        "page": number,
        "pages": max(1, -(-count // per_page)),
        "workers": [_worker(master, w) for w in master.workers[start:end]],
        "clients": [_client(master, c) for c in master.clients[start:end]],
    }
    if number == 0:
        out.update(
            master=master.id,
            address=master.address,
            version=__version__,
            protocol=PROTOCOL_VERSION,
            uptime=round(master.now() - master.started_at, 1),
            **totals(master),
            unschedulable=sum(
                u["jobs"] for c in master.clients for u in master.policy.unschedulable(c)
            ),
        )
        history = master.history
        out["throughput"] = history.throughput() if history is not None else 0.0
        out["history"] = history.public() if history is not None else []
        if master.http is not None:
            out["http"] = master.http  # never with its token
    return out


def totals(master: Master) -> dict[str, int]:
    """The counts over every worker and client: one pass over each."""
    running = sum(master.policy.started_count(w) for w in master.workers)
    return {
        "slots": sum(w.slots for w in master.workers),
        "queued": sum(c.queued for c in master.clients),
        "running": running,  # started in a slot
        "prefetched": sum(len(w.running) for w in master.workers) - running,
        "completed": master.completed,
    }


def _worker(master: Master, w: WorkerSession) -> dict[str, Any]:
    running = master.policy.started_count(w)
    now = master.now()
    return {
        "name": w.name,
        **_origin(w.origin),
        "slots": w.slots,
        "running": running,
        "prefetched": len(w.running) - running,
        "resources": w.resources,
        "done": w.done,
        "failed": w.failed,
        "lost": w.lost,
        "leaving": w.leaving,
        "uptime": round(now - w.joined_at, 1),
        "heard": round(max(0.0, now - w.heard_at()), 1),
    }


def _client(master: Master, c: ClientSession) -> dict[str, Any]:
    return {
        "name": c.name,
        **_origin(c.origin),
        "queued": c.queued,
        "running": c.started,
        "prefetched": c.assigned - c.started,
        "done": c.done,
        "failed": c.failed,
        "jobs": len(c.jobs),
        "share": master.policy.share(c),
        "priority": bool(master.policy.tier(c)),
        "unschedulable": master.policy.unschedulable(c),
        "uptime": round(master.now() - c.joined_at, 1),
        # What it holds here, so a user can see put data freed and
        # functions dropped: put data as counted against --max-client-bytes;
        # functions whether a live job names them or they are idle in the
        # master's cache (only the first count against it).
        "put_data": len(c.data),
        "put_bytes": c.data_bytes,
        "functions": len(c.functions),
        "function_bytes": c.kept_function_bytes,
    }


def _origin(origin: dict[str, Any]) -> dict[str, Any]:
    return {
        "host": origin.get("host", ""),
        "pid": origin.get("pid", 0),
        "user": origin.get("user", ""),
    }


def snapshot(master: Master) -> dict[str, Any]:
    """The whole status at once (for code in the master's own process)."""
    first = page(master, 0)
    return merge([first, *(page(master, n) for n in range(1, first["pages"]))])
