"""Line charts as inline SVG, drawn on the server: the dashboard's charts
work without JavaScript and load nothing from anywhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twisted.web.template import Tag

WIDTH, HEIGHT = 600, 140
#: Room for the labels: left, right, top, bottom.
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 8, 18


@dataclass(frozen=True)
class Series:
    """One line: ``points`` are (time, value); ``kind`` names its CSS class."""

    label: str
    points: Sequence[tuple[float, float]]
    kind: str = "main"


def _number(value: float) -> str:
    """Short enough for the axis: 0.25, 19.2, 1.8k, 12M."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return (
                f"{value / size:.2g}{unit}"
                if abs(value) < 10 * size
                else f"{value / size:.0f}{unit}"
            )
    return f"{value:.3g}"


def chart(name: str, title: str, series: Sequence[Series], now: float, span: float) -> Tag:
    """An ``<svg>`` of ``series`` over the ``span`` seconds up to ``now``."""
    top = max((v for s in series for _, v in s.points), default=0.0)
    top = top if top > 0 else 1.0
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + inner_w * min(1.0, max(0.0, 1 - (now - t) / span))

    def y(v: float) -> float:
        return TOP + inner_h * (1 - v / top)

    svg = Tag(
        "svg",
        attributes={
            "class": "chart",
            "data-chart": name,
            "viewBox": f"0 0 {WIDTH} {HEIGHT}",
            "role": "img",
            "aria-label": title,
            "xmlns": "http://www.w3.org/2000/svg",
        },
    )
    svg(Tag("title")(title))
    svg(Tag("rect", attributes=_box(LEFT, TOP, inner_w, inner_h, "frame")))
    svg(_text(LEFT - 4, TOP + 10, _number(top), "end"))
    svg(_text(LEFT - 4, TOP + inner_h, "0", "end"))
    svg(_text(LEFT, HEIGHT - 4, f"-{span / 60:g} min", "start"))
    svg(_text(WIDTH - RIGHT, HEIGHT - 4, "now", "end"))
    for s in series:
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s.points)
        svg(
            Tag(
                "polyline",
                attributes={
                    "class": f"line {s.kind}",
                    "points": points,
                    "data-points": str(len(s.points)),
                },
            )(Tag("title")(s.label))
        )
        if s.points:  # the latest value, visible even when it is the only one
            t, v = s.points[-1]
            svg(
                Tag(
                    "circle",
                    attributes={
                        "class": f"dot {s.kind}",
                        "cx": f"{x(t):.1f}",
                        "cy": f"{y(v):.1f}",
                        "r": "3",
                    },
                )(Tag("title")(f"{s.label}: {_number(v)}"))
            )
    return svg


def _box(x: float, y: float, w: float, h: float, kind: str) -> dict[str, str]:
    return {"class": kind, "x": str(x), "y": str(y), "width": str(w), "height": str(h)}


def _text(x: float, y: float, text: str, anchor: str) -> Tag:
    return Tag("text", attributes={"x": str(x), "y": str(y), "text-anchor": anchor})(text)
