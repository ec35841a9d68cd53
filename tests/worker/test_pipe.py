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
    MessageReader,
    encode_message,
    write_message,
)


def read_message(stream):
    """The first message a child's reader takes from ``stream`` (None at its end)."""
    messages = MessageReader(stream).wait()
    return messages[0] if messages else None


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


def test_a_message_of_as_many_parts_as_allowed_decodes():
    parts = [b"{}"] + [bytes([i]) * i for i in range(1, MAX_PARTS)]
    data = b"".join(encode_message(parts))
    (decoded,) = MessageDecoder().feed(data)
    assert [p.tobytes() for p in decoded] == parts
    assert read_message(io.BytesIO(data)) == [bytearray(p) for p in parts]


@pytest.mark.parametrize("nparts", [0, MAX_PARTS + 1])
def test_a_message_of_no_parts_or_too_many_is_refused(nparts):
    data = nparts.to_bytes(4, "big")
    with pytest.raises(FramingError, match=f"message claims {nparts} parts"):
        MessageDecoder().feed(data)
    with pytest.raises(FramingError, match=f"message claims {nparts} parts"):
        read_message(io.BytesIO(data))


def test_a_header_of_the_largest_size_is_accepted():
    data = b"".join(encode_message([b"h" * 10, b"x"]))
    assert MessageDecoder(max_header=10).feed(data)
    with pytest.raises(FramingError, match="header of 11 bytes"):
        MessageDecoder(max_header=10).feed(b"".join(encode_message([b"h" * 11])))


def test_decoded_payloads_come_in_pieces_of_at_most_a_chunk():
    from cwtx.wire.payload import CHUNK_SIZE

    data = b"".join(encode_message([b"{}", os.urandom(3 * CHUNK_SIZE + 5)]))
    decoder, messages = MessageDecoder(), []
    for i in range(0, len(data), 10_000):
        messages += decoder.feed(data[i : i + 10_000])
    (message,) = messages
    assert all(len(piece) <= CHUNK_SIZE for piece in message[1].pieces)
    assert message[1].size == 3 * CHUNK_SIZE + 5


class Trickle(io.RawIOBase):
    """A stream that hands out at most 3 bytes per read, as a pipe may."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._data.read(min(3, len(buffer)))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_blocking_reads_gather_short_reads():
    parts = [b'{"task": 1}', os.urandom(1000)]
    assert read_message(Trickle(b"".join(encode_message(parts)))) == [bytearray(p) for p in parts]


@pytest.mark.parametrize("cut", [2, 6, 13, 25])
def test_a_stream_that_ends_inside_a_message_says_so(cut):
    data = b"".join(encode_message([b"{}", b"payload bytes"]))[: -cut or None]
    with pytest.raises(FramingError, match="stream ended inside a message"):
        read_message(io.BytesIO(data))


def test_a_message_of_one_part_reads_back():
    data = b"".join(encode_message([b'{"only": "a header"}']))
    assert read_message(io.BytesIO(data)) == [bytearray(b'{"only": "a header"}')]


# Cut after the part count, and after part 1's length: a field never started.
@pytest.mark.parametrize("keep", [4, 4 + 8 + 2 + 8])
def test_a_stream_that_ends_between_fields_says_it_ended_inside_a_message(keep):
    data = b"".join(encode_message([b"{}", b"payload"]))
    with pytest.raises(FramingError, match="^stream ended inside a message$"):
        read_message(io.BytesIO(data[:keep]))


class Arrivals(io.RawIOBase):
    """A non-blocking pipe's read end: hands out what has "arrived" so far,
    and None (would block) when nothing has; :meth:`arrive` adds bytes."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self.closed_for_writing = False
        self.reads = 0

    def arrive(self, data: bytes) -> None:
        self._pending += data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        self.reads += 1
        if not self._pending:
            return 0 if self.closed_for_writing else None
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        del self._pending[:n]
        return n


def test_poll_takes_what_has_arrived_and_never_blocks():
    raw = Arrivals()
    reader = MessageReader(raw, ready=lambda: pytest.fail("poll must not wait"))
    assert reader.poll() == []
    one, two = [b'{"task": 1}', b"args"], [b'{"skip": 1}']
    data = b"".join(encode_message(one) + encode_message(two))
    raw.arrive(data[:7])
    assert reader.poll() == []  # part of a message: kept for later
    raw.arrive(data[7:])
    assert reader.poll() == [[bytearray(p) for p in one], [bytearray(p) for p in two]]
    assert reader.poll() == []


def test_one_read_takes_many_small_messages():
    raw = Arrivals()
    messages = [[b'{"task": %d}' % i, b"x" * 100] for i in range(50)]
    raw.arrive(b"".join(piece for m in messages for piece in encode_message(m)))
    reader = MessageReader(raw)
    assert len(reader.poll()) == 50 and raw.reads == 1


def test_wait_blocks_until_a_whole_message_has_come():
    raw = Arrivals()
    message = [b"{}", os.urandom(300_000)]  # larger than a read: read in place
    data = b"".join(encode_message(message))
    chunks = [data[i : i + 50_000] for i in range(0, len(data), 50_000)]
    waited = []

    def ready():
        waited.append(True)
        raw.arrive(chunks.pop(0))

    reader = MessageReader(raw, ready=ready, chunk=65536)
    assert reader.wait() == [[bytearray(p) for p in message]]
    assert len(waited) == len(data) // 50_000 + 1
    raw.closed_for_writing = True
    assert reader.wait() is None


def test_wait_says_so_when_the_pipe_closes_inside_a_message():
    raw = Arrivals()
    raw.arrive(b"".join(encode_message([b"{}", b"payload"]))[:-3])
    raw.closed_for_writing = True
    with pytest.raises(FramingError, match="stream ended inside a message"):
        MessageReader(raw).wait()


def test_a_reader_of_a_real_pipe_polls_without_blocking():
    read_end, write_end = os.pipe()
    try:
        reader = MessageReader.of_fd(read_end)
        assert reader.poll() == []
        os.write(write_end, b"".join(encode_message([b'{"task": 3}', b"a"])))
        assert reader.wait() == [[bytearray(b'{"task": 3}'), bytearray(b"a")]]
        os.close(write_end)
        write_end = -1
        assert reader.wait() is None
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
