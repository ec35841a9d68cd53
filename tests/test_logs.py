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


def test_printable_cuts_only_what_is_longer_than_its_limit():
    assert printable("x" * 120) == "x" * 120  # the default limit, inclusive
    assert printable("x" * 121) == "x" * 120 + "..."
    assert printable("\U0001f600") == "\\U0001f600"  # astral characters too


def test_the_defaults_are_three_lines_a_minute_for_ten_thousand_peers():
    now = [0.0]
    limit = RateLimit(clock=lambda: now[0])
    assert [limit.allow("peer") for _ in range(4)] == [(True, 0)] * 3 + [(False, 0)]
    now[0] = 59.9
    assert limit.allow("peer") == (False, 0)
    now[0] = 60.0  # a period is 60 s, to the tick
    assert limit.allow("peer") == (True, 2)
    for i in range(10_000):
        limit.allow(i)
    assert len(limit._windows) == 10_000


def test_the_peer_forgotten_first_is_the_one_seen_longest_ago():
    now = [0.0]
    limit = RateLimit(keys=2, burst=1, clock=lambda: now[0])
    limit.allow("old")
    limit.allow("new")
    limit.allow("newest")  # forgets "old", keeps "new" (still held back)
    assert limit.allow("new") == (False, 0)
    assert limit.allow("old") == (True, 0)  # a fresh window: it was forgotten
