"""The master's state as pages of JSON (the Status command, ``cw status``;
the format is in ``wire.status``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cwtx.wire.status import PER_PAGE, merge

if TYPE_CHECKING:
    from cwtx.master.master import Master


def page(master: Master, number: int, per_page: int = PER_PAGE) -> dict[str, Any]:
    """Page ``number``: its workers and clients; page 0 has the totals too."""
    start, end = number * per_page, (number + 1) * per_page
    count = max(len(master.workers), len(master.clients))
    out: dict[str, Any] = {
        "page": number,
        "pages": max(1, -(-count // per_page)),
        "workers": [
            {
                "name": w.name,
                "slots": w.slots,
                "running": len(w.running),
                "resources": w.resources,
                "leaving": w.leaving,
            }
            for w in master.workers[start:end]
        ],
        "clients": [
            {"name": c.name, "queued": c.queued, "jobs": len(c.jobs)}
            for c in master.clients[start:end]
        ],
    }
    if number == 0:
        out.update(
            master=master.id,
            slots=sum(w.slots for w in master.workers),
            queued=sum(c.queued for c in master.clients),
            # "running" counts tasks sent to workers, prefetched ones included.
            running=sum(len(w.running) for w in master.workers),
            completed=master.completed,
        )
    return out


def snapshot(master: Master) -> dict[str, Any]:
    """The whole status at once (for code in the master's own process)."""
    first = page(master, 0)
    return merge([first, *(page(master, n) for n in range(1, first["pages"]))])
