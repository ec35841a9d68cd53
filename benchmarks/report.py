"""One table: each figure per system, cwtx's ratio to each peer, and the
issue's target for it, met or not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Figures = dict[str, dict[str, float | None]]  # figure key -> system -> value


@dataclass
class Row:
    key: str
    label: str
    fmt: str = ",.2f"
    #: The target in words, and whether the figures meet it (None: cannot tell).
    target: str = ""
    check: Callable[[], bool | None] | None = None
    values: dict[str, float | None] = field(default_factory=dict)


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _ratio(mine: float | None, theirs: float | None) -> str:
    if mine is None or theirs is None or theirs == 0:
        return "—"
    return f"{mine / theirs:.2f}×"


def verdict(row: Row) -> str:
    if row.check is None:
        return ""
    try:
        met = row.check()
    except TypeError:  # a figure it needs is missing
        met = None
    return {True: "met", False: "NOT met", None: "n/a"}[met]


def table(rows: list[Row], columns: list[tuple[str, str]]) -> str:
    """A Markdown table; ``columns``: (system name, label), cwtx first."""
    peers = [(n, label) for n, label in columns if n != "cwtx"]
    head = ["figure", *(label for _, label in columns)]
    head += [f"cwtx÷{label}" for _, label in peers] + ["target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.label]
        cells += [_cell(row.values.get(n), row.fmt) for n, _ in columns]
        cells += [_ratio(row.values.get("cwtx"), row.values.get(n)) for n, _ in peers]
        cells += [row.target, verdict(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
