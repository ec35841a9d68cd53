"""How errors read, and how they cross the wire as JSON."""

from __future__ import annotations

import json

import pytest

import cwtx
from cwtx._errors import error_json, parse_error


def test_a_remote_error_shows_the_remote_traceback():
    error = cwtx.RemoteError("KeyError", "'x'", "Traceback ...\nKeyError: 'x'")
    assert str(error) == "KeyError: 'x'\n\nRemote traceback:\nTraceback ...\nKeyError: 'x'"
    assert str(cwtx.RemoteError("OSError", "gone")) == "OSError: gone"
    assert str(cwtx.RemoteTraceback("tb")) == "\n\nRemote traceback:\ntb"


def test_error_json_round_trips_with_extras():
    text = error_json("JobLost", "lost twice", "", attempts=[{"worker": "w", "cause": "c"}])
    info = parse_error(text)
    assert info == {
        "type": "JobLost",
        "message": "lost twice",
        "traceback": "",
        "attempts": [{"worker": "w", "cause": "c"}],
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {"type": "RemoteError", "message": "", "traceback": ""}),
        ("not json", {"type": "RemoteError", "message": "not json", "traceback": ""}),
        ("[1, 2]", {"type": "RemoteError", "message": "[1, 2]", "traceback": ""}),
        ('{"message": "m"}', {"type": "RemoteError", "message": "m", "traceback": ""}),
        ("[" * 5000 + "]" * 5000, {"type": "RemoteError", "message": "[" * 5000 + "]" * 5000}),
        (
            '{"type": 3, "message": {"a": [1]}, "traceback": null, "attempts": "x"}',
            {"type": "3", "message": '{"a": [1]}', "traceback": "null"},
        ),
    ],
    ids=["empty", "not json", "a list", "fields missing", "nested too deep", "not strings"],
)
def test_a_malformed_error_field_never_raises(text, expected):
    assert parse_error(text) == {"traceback": "", **expected}


def test_job_lost_keeps_its_attempts():
    attempts = [{"worker": "w1", "cause": "segv"}]
    error = cwtx.JobLost("lost", attempts)
    assert error.attempts == attempts and json.dumps(error.attempts)
