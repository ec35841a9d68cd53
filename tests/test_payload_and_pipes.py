"""Payload pieces, blob reassembly, pipe framing and the child's job runner."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import sys

import pytest

from cwtx.client.serialize import pickle_arguments, pickle_function
from cwtx.wire.batch import BATCH_BYTES
from cwtx.wire.blobs import BlobReceiver
from cwtx.wire.commands import JOB_RECORD
from cwtx.wire.payload import CHUNK_SIZE, Payload
from cwtx.wire.records import RecordError, Records
from cwtx.worker.child import Child
from cwtx.worker.pipe import (
    MAX_PARTS,
    FramingError,
    MessageDecoder,
    encode_message,
    read_message,
    write_message,
)


def test_payload_chunks_are_bounded_and_complete():
    data = os.urandom(3 * CHUNK_SIZE + 17)
    p = Payload([data[:10], data[10:]])
    chunks = list(p.chunks())
    assert all(len(c) <= CHUNK_SIZE for c in chunks)
    assert b"".join(chunks) == data and p.size == len(data)


def test_blob_receiver_reassembles_and_rejects_unknown_ids():
    r = BlobReceiver()
    r.chunk(1, [b"ab"])
    r.chunk(1, [b"c", b"d"])
    assert r.take(b"", 1).tobytes() == b"abcd"
    assert r.take(b"inline", 0).tobytes() == b"inline"
    with pytest.raises(ValueError, match="never streamed"):
        r.take(b"", 1)
    with pytest.raises(ValueError):
        r.chunk(0, [b"x"])


def test_decoder_handles_any_split():
    rng = random.Random(1)
    messages = [[b'{"a":1}', os.urandom(rng.randrange(0, 200_000)), b""] for _ in range(4)]
    data = b"".join(piece for m in messages for piece in encode_message(m))
    for _ in range(50):
        decoder, out, i = MessageDecoder(), [], 0
        while i < len(data):
            n = rng.choice([1, 5, 8192, 65536, 1 << 20])
            out += decoder.feed(data[i : i + n])
            i += n
        assert [[p.tobytes() for p in m] for m in out] == messages


def test_decoder_rejects_garbage():
    with pytest.raises(FramingError):
        MessageDecoder().feed(b"\xff\xff\xff\xff")
    with pytest.raises(FramingError):
        MessageDecoder().feed((MAX_PARTS + 1).to_bytes(4, "big"))
    with pytest.raises(FramingError, match="header"):
        MessageDecoder(max_header=10).feed(b"\0\0\0\1" + (11).to_bytes(8, "big"))


def test_blocking_read_and_write_round_trip():
    buf = io.BytesIO()
    write_message(buf, [b"head", b"x" * 100_000])
    buf.seek(0)
    assert read_message(buf) == [bytearray(b"head"), bytearray(b"x" * 100_000)]
    assert read_message(buf) is None
    truncated = io.BytesIO(buf.getvalue()[:-5])
    with pytest.raises(FramingError):
        read_message(truncated)


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


def run_in_child(fn, *args, **kwargs):
    fd = pickle_function(fn)
    header = {"task": 1, "fn": fd.hash.hex(), "env": fd.env}
    reply, value = Child().run(
        header, [bytearray(pickle_arguments(args, kwargs)), bytearray(fd.code)]
    )
    return json.loads(reply), value


def test_child_runs_and_restores_cwd_and_path(tmp_path):
    cwd, path = os.getcwd(), list(sys.path)
    fd = pickle_function(
        os.getcwd, env=json.dumps({"cwd": str(tmp_path), "path": ["/nonexistent-entry"]})
    )
    header = {"task": 7, "fn": fd.hash.hex(), "env": fd.env}
    reply, value = Child().run(header, [bytearray(pickle_arguments((), {})), bytearray(fd.code)])
    assert json.loads(reply) == {"status": "ok", "task": 7}
    assert pickle.loads(value) == str(tmp_path)
    assert os.getcwd() == cwd and sys.path == path


def test_child_reports_exceptions_and_unpicklable_results():
    info, value = run_in_child(lambda: 1 / 0)
    assert info["status"] == "error" and info["error"]["type"] == "ZeroDivisionError"
    assert isinstance(pickle.loads(value), ZeroDivisionError)
    info, value = run_in_child(lambda: (x for x in ()))
    assert info["status"] == "error" and value == b""
    assert "could not be pickled" in info["error"]["message"]


def test_child_survives_system_exit_in_a_job():
    info, _ = run_in_child(sys.exit, 3)
    assert info["status"] == "error" and info["error"]["type"] == "SystemExit"


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000), st.integers(min_value=1, max_value=64))
def test_pipe_decoder_takes_any_bytes(data, step):
    """Hostile bytes on a worker's result pipe: messages or FramingError,
    never another exception, and never a large allocation up front."""
    decoder = MessageDecoder(max_header=1024)
    try:
        for i in range(0, len(data), step):
            decoder.feed(data[i : i + step])
    except FramingError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_records_take_any_bytes(data):
    try:
        Records(JOB_RECORD).fromString(data)
    except RecordError:
        pass
