"""
The master's status on the wire: JSON, in pages, so that its size has no
limit.  Page 0 has the totals and the first PER_PAGE workers and clients;
page n the next ones.  Each page's JSON travels as the pieces of one
``Chunks`` value.  A reader asks for page 0, learns ``pages``, asks for the
rest, and merges them (the pages are read one after another, so workers
may join or leave in between).
"""

from __future__ import annotations

import json
from typing import Any

#: Workers (and clients) per page: about 200 KB of JSON.
PER_PAGE = 1000
#: One piece of a page's JSON: under AMP's 65,535-byte value limit.
PIECE = 60_000


def pieces(page: dict[str, Any]) -> list[bytes]:
    data = json.dumps(page).encode()
    return [data[i : i + PIECE] for i in range(0, len(data), PIECE)]  # never empty: "{...}"


def read(parts: list[bytes]) -> dict[str, Any]:
    return json.loads(b"".join(parts))


def merge(pages: list[dict[str, Any]]) -> dict[str, Any]:
    """One status from its pages (page 0 first)."""
    status = dict(pages[0])
    status["workers"] = [w for page in pages for w in page["workers"]]
    status["clients"] = [c for page in pages for c in page["clients"]]
    del status["page"]
    return status
