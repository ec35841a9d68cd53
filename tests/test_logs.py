"""Peer strings escaped; lines about one peer rate-limited."""

from __future__ import annotations

from cwtx._logs import RateLimit, printable


def test_peer_strings_cannot_forge_lines_or_colours():
    assert printable("evil\r\n2026-11-27 [fake] all is well\x1b[31m") == (
        "evil\\r\\n2026-11-27 [fake] all is well\\x1b[31m"
    )
    assert printable("é") == "\\xe9"
    assert printable("x" * 500, limit=10) == "xxxxxxxxxx..."


def test_lines_are_limited_per_key_and_say_how_many_were_held_back():
    now = [0.0]
    limit = RateLimit(period=60, burst=2, clock=lambda: now[0])
    assert [limit.allow("10.0.0.1")[0] for _ in range(5)] == [True, True, False, False, False]
    assert limit.allow("10.0.0.2") == (True, 0)  # another peer is not held back
    now[0] = 61
    assert limit.allow("10.0.0.1") == (True, 3)  # a new period, and 3 were held back


def test_the_keys_it_remembers_are_bounded():
    limit = RateLimit(keys=100, clock=lambda: 0.0)
    for i in range(1000):
        limit.allow(i)
    assert len(limit._windows) == 100
