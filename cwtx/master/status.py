"""The master's state as a JSON-able snapshot (the Status command, ``cw status``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cwtx.master.master import Master


def snapshot(master: Master) -> dict[str, Any]:
    return {
        "master": master.id,
        "workers": [
            {
                "name": w.name,
                "slots": w.slots,
                "running": len(w.running),
                "resources": w.resources,
                "leaving": w.leaving,
            }
            for w in master.workers
        ],
        "clients": [
            {"name": c.name, "queued": c.queued, "jobs": len(c.jobs)} for c in master.clients
        ],
        "slots": sum(w.slots for w in master.workers),
        "queued": sum(c.queued for c in master.clients),
        # "running" counts tasks sent to workers, prefetched ones included.
        "running": sum(len(w.running) for w in master.workers),
        "completed": master.completed,
    }
