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
        "refs": b"",
        "timeout": 1.5,
        "max_retries": -1,
        "priority": -3,
        "resources": "{}",
        "forward_output": 0,
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
                "refs": b"",
                "timeout": 0.0,
                "max_retries": -1,
                "priority": 0,
                "resources": "{}",
                "forward_output": 0,
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


EMPTY_JOB = {
    "job": 1,
    "fn": b"",
    "fn_env": "",
    "fn_code": b"",
    "fn_code_blob": 0,
    "args": b"",
    "args_blob": 0,
    "refs": b"",
    "timeout": 0.0,
    "max_retries": 0,
    "priority": 0,
    "resources": "",
    "forward_output": 0,
}


def test_a_last_record_with_every_variable_field_empty_decodes():
    records = Records(JOB_RECORD)
    assert records.fromString(records.toString([EMPTY_JOB, EMPTY_JOB])) == [EMPTY_JOB] * 2


def test_record_size_is_exact_for_bytes_and_a_bound_for_text():
    records = Records(JOB_RECORD)
    binary = {**EMPTY_JOB, "fn": b"f" * 32, "args": b"a" * 1000}
    assert records.record_size(binary) == len(records.toString([binary]))
    wide = {**EMPTY_JOB, "fn_env": "\U0001f600" * 100, "resources": "é" * 50}
    assert records.record_size(wide) >= len(records.toString([wide]))


@pytest.mark.parametrize(
    ("cut", "complaint"),
    [(lambda w: w[:10], "truncated record at byte 0"), (lambda w: w[:-1], "runs past the end")],
)
def test_malformed_values_say_what_is_wrong(cut, complaint):
    records = Records(JOB_RECORD)
    wire = records.toString([{**EMPTY_JOB, "args": b"abc"}])
    with pytest.raises(RecordError, match=complaint):
        records.fromString(cut(wire))


def test_text_that_is_not_utf8_is_refused():
    records = Records([("t", "text")])
    bad = records.toString([{"t": "ok"}])[:-2] + b"\xff\xfe"
    with pytest.raises(RecordError, match="field 't' is not UTF-8"):
        records.fromString(bad)


def test_an_unknown_kind_in_a_schema_is_refused():
    with pytest.raises(ValueError, match="field 'x' has unknown kind 'complex'"):
        Records([("x", "complex")])


def test_chunks_carry_up_to_the_limit_and_no_more():
    from cwtx.wire.records import MAX_CHUNK_VALUES, Chunks

    chunks = Chunks()
    pieces = [bytes([i % 256]) * 10 for i in range(MAX_CHUNK_VALUES)]
    strings: dict = {}
    chunks.toBox(b"data", strings, {"data": pieces}, None)
    objects: dict = {}
    chunks.fromBox(b"data", dict(strings), objects, None)
    assert objects["data"] == pieces
    with pytest.raises(RecordError, match=f"{MAX_CHUNK_VALUES + 1} pieces is more than"):
        chunks.toBox(b"data", {}, {"data": pieces + [b"x"]}, None)
    strings[b"data"] = str(MAX_CHUNK_VALUES + 1).encode()
    with pytest.raises(RecordError, match="bad piece count b'65'"):
        chunks.fromBox(b"data", strings, {}, None)
    with pytest.raises(RecordError, match="bad piece count b'many'"):
        chunks.fromBox(b"data", {b"data": b"many"}, {}, None)
    with pytest.raises(RecordError, match="piece b'data.1' is missing"):
        chunks.fromBox(b"data", {b"data": b"2", b"data.0": b"x"}, {}, None)
