"""Frames, and sessions sealed with keys only holders of the secret derive."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cwtx.wire.session import (
    HEADER,
    PLAIN,
    SEALED,
    Framer,
    SessionError,
    session_keys,
    transcript,
)

SECRET = b"a secret of at least thirty-two bytes, with variety 123"
MINE, THEIRS = b"c" * 32, b"m" * 32
SAID = b"t" * 32  # a handshake's transcript


def sealed_pair() -> tuple[Framer, Framer]:
    """(the connecting side, the master), sealed with the same keys."""
    ours, the_masters = session_keys(SECRET, MINE, THEIRS, "client", SAID)
    connecting, master = Framer(), Framer()
    connecting.seal_sending(ours)
    connecting.seal_receiving(the_masters)
    master.seal_sending(the_masters)
    master.seal_receiving(ours)
    return connecting, master


def test_keys_are_exactly_what_docs_protocol_md_says():
    keys = HKDF(
        algorithm=SHA256(), length=64, salt=MINE + THEIRS, info=b"cwtx session 4 worker\0" + SAID
    ).derive(SECRET)
    assert session_keys(SECRET, MINE, THEIRS, "worker", SAID) == (keys[:32], keys[32:])
    assert session_keys(SECRET, MINE, THEIRS, "client", SAID) != session_keys(
        SECRET, MINE, THEIRS, "worker", SAID
    )
    assert session_keys(SECRET, MINE, b"x" * 32, "client", SAID) != session_keys(
        SECRET, MINE, THEIRS, "client", SAID
    )
    # Bound to what the handshake said: another transcript, other keys.
    assert session_keys(SECRET, MINE, THEIRS, "client", b"u" * 32) != session_keys(
        SECRET, MINE, THEIRS, "client", SAID
    )


def test_the_transcript_is_exactly_what_docs_protocol_md_says():
    hello = {"role": "client", "name": "me", "protocol": 6, "python": "3.11.7"}
    hello.update(cloudpickle="3.1.1", host="n1", pid=7, user="ann")
    answer = {"protocol": 6, "master": "0123456789ab", "nonce": b"n", "proof": b"p"}
    said = '["client", "me", 6, "3.11.7", "3.1.1", "n1", 7, "ann", 6, "0123456789ab"]'
    assert transcript(hello, answer) == hashlib.sha256(said.encode()).digest()
    changed = [("name", "someone else"), ("python", "2.7.18"), ("cloudpickle", "?")]
    changed += [("host", "n2"), ("pid", 8), ("user", "bob")]
    for key, value in changed:
        assert transcript({**hello, key: value}, answer) != transcript(hello, answer)
    assert transcript(hello, {**answer, "master": "another"}) != transcript(hello, answer)


def test_sealed_frames_are_exactly_what_docs_protocol_md_says():
    """AES-256-GCM, the nonce 4 zero bytes and the direction's frame count
    from 0, the 5-byte header as associated data, the tag appended."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    ours, _ = session_keys(SECRET, MINE, THEIRS, "client", SAID)
    connecting, _ = sealed_pair()
    for count, data in enumerate([b"first", b"second", b"third"]):
        frame = connecting.frame(data)
        header, body = frame[: HEADER.size], frame[HEADER.size :]
        assert header == HEADER.pack(len(data) + 16, SEALED)
        nonce = bytes(4) + count.to_bytes(8, "big")
        assert body == AESGCM(ours).encrypt(nonce, data, header)


def test_plain_frames_before_sealing_in_any_split():
    sender, receiver = Framer(), Framer()
    data = sender.frame(b"one") + sender.frame(b"") + sender.frame(b"three" * 1000)
    assert data[: HEADER.size] == HEADER.pack(3, PLAIN)
    got = []
    for i in range(0, len(data), 7):
        got += list(receiver.feed(data[i : i + 7]))
    assert got == [b"one", b"", b"three" * 1000]


def test_sealed_frames_hide_and_carry_their_bytes_both_ways():
    connecting, master = sealed_pair()
    frame = connecting.frame(b"RunTasks secret payload")
    assert HEADER.unpack_from(frame) == (len(b"RunTasks secret payload") + 16, SEALED)
    assert b"secret payload" not in frame
    assert list(master.feed(frame)) == [b"RunTasks secret payload"]
    assert list(connecting.feed(master.frame(b"answer"))) == [b"answer"]


@pytest.mark.parametrize("attack", ["altered", "replayed", "reordered", "header altered"])
def test_a_frame_that_was_tampered_with_does_not_open(attack):
    connecting, master = sealed_pair()
    first, second = connecting.frame(b"first"), connecting.frame(b"second")
    if attack == "altered":
        bad = first[:-1] + bytes([first[-1] ^ 1])
        frames = [bad]
    elif attack == "replayed":
        frames = [first, first]
    elif attack == "reordered":
        frames = [second, first]
    else:  # a sealed frame relabelled as plain
        frames = [HEADER.pack(len(first) - HEADER.size, PLAIN) + first[HEADER.size :]]
    with pytest.raises(SessionError):
        for frame in frames:
            list(master.feed(frame))


def test_a_bad_frame_after_a_good_one_in_the_same_read_is_a_session_error():
    connecting, master = sealed_pair()
    good = connecting.frame(b"good")
    bad = bytearray(connecting.frame(b"bad"))
    bad[-1] ^= 1
    opened = []
    with pytest.raises(SessionError) as info:
        for payload in master.feed(good + bytes(bad)):
            opened.append(payload)
    assert opened == [b"good"]
    assert str(info.value) == (
        "a frame failed authentication (altered, replayed, out of order, "
        "or not from a holder of the shared secret)"
    )


def test_a_sealed_frame_without_keys_and_a_plain_frame_after_sealing_are_refused():
    connecting, master = sealed_pair()
    with pytest.raises(SessionError, match="kind 1 on a session not yet sealed"):
        list(Framer().feed(connecting.frame(b"x")))
    with pytest.raises(SessionError, match="kind 0 on a session sealed"):
        list(master.feed(Framer().frame(b"x")))
    with pytest.raises(SessionError, match="kind 7"):
        list(Framer().feed(HEADER.pack(1, 7) + b"x"))


def test_a_frame_longer_than_allowed_is_refused_before_it_is_buffered():
    assert list(Framer(max_frame=1000).feed(HEADER.pack(1000, PLAIN) + b"x" * 1000)) == [
        b"x" * 1000
    ]  # the limit itself is allowed
    framer = Framer(max_frame=1000)
    with pytest.raises(SessionError, match="a frame of 1001 bytes"):
        list(framer.feed(HEADER.pack(1001, PLAIN)))  # no body sent at all


def test_a_relay_without_the_secret_cannot_forge_frames():
    connecting, master = sealed_pair()
    ours, _ = session_keys(os.urandom(40), MINE, THEIRS, "client", SAID)  # a guessed secret
    forger = Framer()
    forger.seal_sending(ours)
    with pytest.raises(SessionError, match="failed authentication"):
        list(master.feed(forger.frame(b"RunTasks ...")))
