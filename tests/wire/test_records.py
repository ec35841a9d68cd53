"""The Records argument: round trips, size bounds, and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwtx.wire.batch import BATCH_BYTES
from cwtx.wire.commands import JOB_RECORD
from cwtx.wire.records import RecordError, Records


def test_records_round_trip_and_size_bound():
    records = Records(JOB_RECORD)
    record = {
        "job": 2**62,
        "fn": b"x" * 32,
        "fn_env": "é" * 100,
        "fn_code": b"c" * 10,
        "fn_code_blob": 0,
        "args": b"",
        "args_blob": 7,
        "timeout": 1.5,
        "max_retries": -1,
        "priority": -3,
        "resources": "{}",
    }
    wire = records.toString([record, record])
    assert records.fromString(wire) == [record, record]
    assert 2 * records.record_size(record) >= len(wire)
    assert BATCH_BYTES < 65_535


def test_records_reject_malformed_values():
    records = Records(JOB_RECORD)
    wire = records.toString(
        [
            {
                "job": 1,
                "fn": b"f",
                "fn_env": "",
                "fn_code": b"",
                "fn_code_blob": 0,
                "args": b"abc",
                "args_blob": 0,
                "timeout": 0.0,
                "max_retries": -1,
                "priority": 0,
                "resources": "{}",
            }
        ]
    )
    for bad in (wire[:-1], wire[:10], wire + b"\0"):
        with pytest.raises(RecordError):
            records.fromString(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_records_take_any_bytes(data):
    try:
        Records(JOB_RECORD).fromString(data)
    except RecordError:
        pass
