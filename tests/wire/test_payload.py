"""Payload pieces and blob reassembly."""

from __future__ import annotations

import os

import pytest

from cwtx.wire.blobs import BlobReceiver
from cwtx.wire.payload import CHUNK_SIZE, Payload


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


def test_a_payload_says_what_it_holds():
    assert repr(Payload([b"ab", b"c"])) == "<Payload 3 bytes in 2 pieces>"
