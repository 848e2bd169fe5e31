import os
import random

import pytest

from refbook.runtime.wire.frames import RejectedMessage, Signer, Verifier, encode, tag_for

KEY = os.urandom(32)
ME = "ipc:///tmp/x/me"


def pair():
    return Signer(KEY, os.urandom(8)), Verifier(KEY, tag_for(ME))


def test_round_trip():
    s, v = pair()
    assert v.verify(s.sign(tag_for(ME), encode((1, "a", b"b")))) == (1, "a", b"b")


def test_tampered_wrong_key_misaddressed_and_replayed_are_rejected():
    s, v = pair()
    frames = s.sign(tag_for(ME), encode((1, "x")))
    bad = [frames[0], frames[1][:-1] + b"!"]
    with pytest.raises(RejectedMessage, match="signature"):
        v.verify(bad)
    other = Signer(os.urandom(32), os.urandom(8))
    with pytest.raises(RejectedMessage, match="signature"):
        v.verify(other.sign(tag_for(ME), encode((1,))))
    with pytest.raises(RejectedMessage, match="another process"):
        v.verify(s.sign(tag_for("ipc:///tmp/x/other"), encode((1,))))
    v.verify(frames)
    with pytest.raises(RejectedMessage, match="replayed"):
        v.verify(frames)


def test_random_frames_only_ever_raise_rejected_message():
    _, v = pair()
    rng = random.Random(0)
    for _ in range(2000):
        frames = [rng.randbytes(rng.randint(0, 100)) for _ in range(rng.randint(0, 4))]
        with pytest.raises(RejectedMessage):
            v.verify(frames)


def test_a_data_frame_is_covered_by_the_mac():
    s, v = pair()
    data = os.urandom(1 << 20)
    frames = s.sign(tag_for(ME), encode((68, "x")), data)
    assert v.verify(frames) == (68, "x", data)
    s2, v2 = pair()
    frames = s2.sign(tag_for(ME), encode((68, "x")), data)
    tampered = frames[:2] + [data[:-1] + b"!"]
    with pytest.raises(RejectedMessage, match="signature"):
        v2.verify(tampered)
    with pytest.raises(RejectedMessage, match="signature"):
        v2.verify(frames[:2] + [b""])              # data dropped: the MAC no longer fits


def test_data_frames_use_a_key_per_message():
    s, v = pair()
    data = os.urandom(4096)
    a = s.sign(tag_for(ME), encode((68, "x")), data)
    b = s.sign(tag_for(ME), encode((68, "x")), data)
    assert a[0][32:48] == b[0][32:48]              # one salt per signer...
    assert a[0][48:] != b[0][48:]                  # ...but never the same data key
    other, _ = pair()
    c = other.sign(tag_for(ME), encode((68, "x")), data)
    assert c[0][32:48] != a[0][32:48]              # a new signer draws a new salt
    with pytest.raises(RejectedMessage, match="signature"):   # salt changed in transit
        v.verify([a[0][:32] + bytes(16) + a[0][48:], a[1], a[2]])
    with pytest.raises(RejectedMessage, match="signature"):   # data of another message
        v.verify([b[0], b[1], os.urandom(4096)])
    with pytest.raises(RejectedMessage, match="truncated"):   # data frame dropped
        v.verify(a[:2])
    assert v.verify(a) == (68, "x", data)


def test_a_data_frame_cannot_be_stripped():
    s, v = pair()
    a = s.sign(tag_for(ME), encode((68, "x")), os.urandom(100))
    with pytest.raises(RejectedMessage):           # the envelope alone, with a short MAC
        v.verify([a[0][:32], a[1]])
    with pytest.raises(RejectedMessage):
        v.verify([a[0], a[1]])
    assert v.verify(a)[:2] == (68, "x")


def test_a_large_envelope_travels_in_parts_no_larger_than_part():
    from refbook.runtime.wire.frames import MAC_LEN, MAX_PARTS, PART
    s, v = pair()
    big = os.urandom(2 * PART + 123)
    frames = s.sign(tag_for(ME), encode((21, big)))
    assert len(frames) == 4 and len(frames[0]) == MAC_LEN
    assert all(len(f) <= PART for f in frames[1:])
    assert v.verify([bytes(f) for f in frames]) == (21, big)
    # parts dropped, swapped or altered, or passed off as a plain message: refused
    s2, v2 = pair()
    frames = [bytes(f) for f in s2.sign(tag_for(ME), encode((21, big)))]
    for bad in (frames[:3], [frames[0], frames[2], frames[1], frames[3]],
                frames[:3] + [frames[3][:-1] + b"!"],
                [frames[0], b"".join(frames[1:])]):
        with pytest.raises(RejectedMessage):
            v2.verify(bad)
    assert v2.verify(frames) == (21, big)
    with pytest.raises(ValueError, match="larger than"):
        s.sign(tag_for(ME), b"x" * (PART * MAX_PARTS + 1))
    with pytest.raises(RejectedMessage, match="unexpected frames"):
        v.verify([frames[0]] + [b"x"] * (MAX_PARTS + 1))


def test_no_legitimate_frame_exceeds_what_an_inbox_takes():
    from refbook.runtime.data.storeserver import CHUNK
    from refbook.runtime.wire.frames import PART
    from refbook.runtime.wire.transport import MAX_FRAME
    assert CHUNK <= MAX_FRAME and PART <= MAX_FRAME
    s, _ = pair()
    frames = s.sign(tag_for(ME), encode((21, b"x" * (5 * PART))))
    assert max(len(f) for f in frames) <= MAX_FRAME
