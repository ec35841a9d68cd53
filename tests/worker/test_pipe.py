"""The framing on a slot child's pipes, under arbitrary splits and hostile bytes."""

from __future__ import annotations

import io
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwtx.worker.pipe import (
    MAX_PARTS,
    FramingError,
    MessageDecoder,
    encode_message,
    read_message,
    write_message,
)


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
