"""``cw status`` as text: what each line says, and the busiest first when
there are many."""

from __future__ import annotations

from cwtx import _status_text


def worker(i: int, running: int) -> dict:
    return {
        "name": f"w{i}",
        "host": "node",
        "pid": 100 + i,
        "user": "ann",
        "slots": 4,
        "running": running,
        "prefetched": 0,
        "resources": {"gpu": 2.0} if i == 0 else {},
        "done": 1,
        "failed": 0,
        "lost": 0,
        "leaving": i == 1,
        "uptime": 4000.0,
        "heard": 1.25,
    }


def status(workers: list[dict]) -> dict:
    return {
        "master": "abc",
        "address": "node:5494",
        "version": "0.1.0",
        "protocol": 6,
        "uptime": 90061.0,
        "slots": 4 * len(workers),
        "running": sum(w["running"] for w in workers),
        "prefetched": 0,
        "queued": 7,
        "unschedulable": 2,
        "completed": 12,
        "throughput": 3.25,
        "workers": workers,
        "clients": [
            {
                "name": "c",
                "host": "laptop",
                "pid": 9,
                "user": "ann",
                "queued": 7,
                "running": 1,
                "prefetched": 0,
                "done": 3,
                "failed": 1,
                "jobs": 8,
                "share": 2.0,
                "priority": True,
                "unschedulable": [
                    {"jobs": 2, "why": "needs gpu=4; no connected worker has that much"}
                ],
                "put_data": 3,
                "put_bytes": 12 * 2**20 + 1536,
                "functions": 2,
                "function_bytes": 40_000,
            }
        ],
    }


def test_the_master_line_totals_and_tables():
    lines = _status_text.render(status([worker(0, 1), worker(1, 0)])).splitlines()
    assert lines[0] == "master abc, at node:5494, cwtx 0.1.0, protocol 6, up 1d01h"
    assert lines[1] == (
        "2 workers, 8 slots: 1 running, 0 prefetched, 7 queued, 2 unschedulable; "
        "12 completed, 3.2 jobs/s over the last minute; 1 clients"
    )
    assert lines[2] == "workers (2):"
    assert lines[3].split() == [
        "NAME", "HOST", "PID", "SLOTS", "RUNNING", "PREFETCHED", "DONE", "FAILED", "LOST",
        "HEARD", "UP", "RESOURCES",
    ]  # fmt: skip
    assert lines[4].split() == ["w0", "node", "100", "4", "1", "0", "1", "0", "0", "1.2s", "ago",
                                "1h06m", "gpu=2"]  # fmt: skip
    assert lines[5].split()[:2] == ["w1", "(leaving)"]
    assert lines[6] == "clients (1):"
    assert lines[8].split()[:5] == ["c", "(priority)", "laptop", "9", "ann"]
    assert lines[-1] == (
        "  2 of c's jobs are unschedulable: needs gpu=4; no connected worker has that much"
    )


def test_each_client_s_put_data_and_functions_held_at_the_master():
    s = status([worker(0, 1)])
    freed = {**s["clients"][0], "name": "d", "put_data": 0, "put_bytes": 0}
    freed.update(functions=0, function_bytes=0)
    old = {k: v for k, v in s["clients"][0].items() if "put" not in k and "function" not in k}
    s["clients"] += [freed, {**old, "name": "e"}]  # e: from a master too old to say
    lines = _status_text.render(s).splitlines()
    head = lines.index("clients (3):") + 1
    assert lines[head].split()[-3:] == ["SHARE", "REFS", "FUNCTIONS"]
    c, d, e = lines[head + 1 : head + 4]
    assert c.endswith("  2      3 (12 MiB)  2 (39.1 KiB)")
    assert d.endswith("  2      0           0")
    assert e.endswith("  2")


def test_ten_thousand_workers_show_the_busiest_first():
    many = [worker(i, running=i % 5) for i in range(10_000)]
    text = _status_text.render(status(many))
    lines = text.splitlines()
    assert lines[2] == "workers (10000, the busiest first):"
    rows = lines[4 : 4 + _status_text.SHOWN]
    assert all(row.split()[4] == "4" for row in rows)
    assert lines[4 + _status_text.SHOWN] == "  ... and 9980 more (--all shows every one)"
    assert len(_status_text.render(status(many), every=True).splitlines()) > 10_000


def test_every_cw_option_has_help():
    import argparse

    from cwtx._cli import parser

    missing = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {action.option_strings or action.dest}")

    walk(parser(), "cw")
    assert missing == []
