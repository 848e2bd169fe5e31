"""Wire format, without any I/O: frames, MACs and the pickled body.

Every message is two frames: ``mac`` and ``envelope``.  ``envelope`` is::

    receiver tag (8) | sender tag (8) | sequence number (8, big endian) | body

and ``mac`` is HMAC-SHA256 over the envelope with the cluster secret.  A receiver
checks, in this order and before anything is unpickled: the frame count, the MAC, that
the message is addressed to it, and that the sequence number is larger than the last
one it accepted from that sender (replays are dropped).  Only then is ``body``
unpickled: it is a tuple ``(MSG_TYPE, *fields)``.

A message may carry a third frame of raw data (a chunk of an object moving between
nodes, a few MiB).  SHA-256 runs at about 2 GB/s, slower than TCP, so the data is
authenticated with GMAC (AES-GCM with no plaintext, 30 GB/s with AES-NI) under a key
used for that one message: ``K = HMAC-SHA256(data key, envelope | salt)``.  The
envelope is unique per sender (its sequence number), the salt is random per signer (a
restarted process does not reuse keys), and the data key is derived from the secret
but is not the secret, so ``K`` is never sent and never reused.  The mac frame is then
``HMAC'(envelope | salt | tag) | salt (16) | GMAC tag (16)``, where ``HMAC'`` is keyed
by yet another key derived from the secret, so the MAC of a three-frame message is
never valid for a two-frame one (a data frame cannot be stripped).  The receiver checks
the envelope's MAC, its address and sequence number before it spends time on the data.
Data frames are never unpickled.

An envelope larger than ``PART`` bytes (a large batch) travels in parts: ``mac |
part 1 | ... | part n`` (2 <= n <= ``MAX_PARTS``), where ``mac`` is a 32-byte HMAC of the
whole envelope under a key of its own.  So no frame is ever larger than ``PART`` or
than a data frame, and a listening socket can refuse larger frames before it knows who
sends them (transport.py).  A data message is told apart by its longer mac frame.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import struct
from functools import cache

_HDR = struct.Struct(">8s8sQ")
HDR_LEN = _HDR.size
MAC_LEN = 32
SALT_LEN = 16
TAG_LEN = 16
_NONCE = bytes(12)        # every data key is used once, so a fixed nonce is safe
PART = 1 << 20            # the largest envelope frame; larger ones go in parts
MAX_PARTS = 256           # so an envelope is at most 256 MiB


def _data_key(secret: bytes) -> bytes:
    return hmac.digest(secret, b"refbook data frames", "sha256")


def _with_data_key(secret: bytes) -> bytes:
    return hmac.digest(secret, b"refbook messages with a data frame", "sha256")


def _parts_key(secret: bytes) -> bytes:
    return hmac.digest(secret, b"refbook messages in parts", "sha256")


@cache
def _aesgcm():
    """AES-GCM, imported on first use: only data frames between nodes need it, and the
    import costs a tenth of a second of every ``import refbook``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM


def _data_tag(data_key: bytes, env: bytes, salt: bytes, data) -> bytes:
    one_time = hmac.digest(data_key, env + salt, "sha256")
    return _aesgcm()(one_time).encrypt(_NONCE, b"", data)


def tag_for(address: str) -> bytes:
    """The 8-byte tag a receiver is addressed by: a digest of its endpoint."""
    return hashlib.blake2b(address.encode(), digest_size=8).digest()


class Signer:
    """Signs outgoing messages for one sending process."""

    __slots__ = ("_key", "_tag", "_seq", "_data_key", "_key3", "_keyp", "_salt")

    def __init__(self, key: bytes, sender_tag: bytes):
        self._key = key
        self._tag = sender_tag
        self._seq = 0
        self._data_key = _data_key(key)
        self._key3 = _with_data_key(key)
        self._keyp = _parts_key(key)
        self._salt = os.urandom(SALT_LEN)

    def sign(self, receiver_tag: bytes, body: bytes, data=None) -> list:
        """Caller holds the send lock, so sequence numbers are strictly increasing
        on every connection this process has.  ``data``: raw bytes sent as a third
        frame (a chunk of an object), covered by the same MAC, never unpickled."""
        self._seq += 1
        env = _HDR.pack(receiver_tag, self._tag, self._seq) + body
        if data is None:
            if len(env) <= PART:
                return [hmac.digest(self._key, env, "sha256"), env]
            if len(env) > PART * MAX_PARTS:
                raise ValueError(f"a message of {len(env)} bytes is larger than the "
                                 f"{PART * MAX_PARTS} bytes the protocol allows")
            view = memoryview(env)
            return [hmac.digest(self._keyp, env, "sha256")] + \
                [view[i:i + PART] for i in range(0, len(env), PART)]
        salt_tag = self._salt + _data_tag(self._data_key, env, self._salt, data)
        return [hmac.digest(self._key3, env + salt_tag, "sha256") + salt_tag, env, data]


class RejectedMessage(Exception):
    """A frame that failed a check; its reason is logged, the frame dropped."""


class Verifier:
    """Checks incoming messages for one receiving process."""

    __slots__ = ("_key", "_tags", "_last", "_data_key", "_key3", "_keyp")

    def __init__(self, key: bytes, receiver_tag: bytes, *aliases: bytes):
        self._key = key
        self._data_key = _data_key(key)
        self._key3 = _with_data_key(key)
        self._keyp = _parts_key(key)
        self._tags = (receiver_tag, *aliases)   # a head also answers to "tcp://host:port"
        self._last: dict[bytes, int] = {}

    def verify(self, frames: list[bytes]) -> tuple:
        """The message tuple; a third frame (raw data) is appended to it."""
        n = len(frames)
        if n == 2:
            mac, env = frames
            key = self._key
        elif n == 3 and len(frames[0]) == MAC_LEN + SALT_LEN + TAG_LEN:
            mac, env = frames[0], frames[1]
            key = None                          # with a data frame
        elif 3 <= n <= MAX_PARTS + 1 and len(frames[0]) == MAC_LEN:
            mac, env = frames[0], b"".join(frames[1:])      # an envelope in parts
            key = self._keyp
            frames = [mac, env]
        else:
            raise RejectedMessage(f"unexpected frames: {n}")
        if len(mac) != (MAC_LEN if key is not None else MAC_LEN + SALT_LEN + TAG_LEN) \
                or len(env) < HDR_LEN + 1:
            raise RejectedMessage("truncated frame")
        if key is not None:
            want = hmac.digest(key, env, "sha256")
        else:
            want = hmac.digest(self._key3, env + mac[MAC_LEN:], "sha256")
        if not hmac.compare_digest(mac[:MAC_LEN], want):
            raise RejectedMessage("bad signature")
        receiver, sender, seq = _HDR.unpack_from(env)
        if receiver not in self._tags:
            raise RejectedMessage("addressed to another process")
        if seq <= self._last.get(sender, 0):
            raise RejectedMessage(f"replayed or reordered sequence number {seq}")
        if len(frames) == 3:
            salt = mac[MAC_LEN:MAC_LEN + SALT_LEN]
            tag = _data_tag(self._data_key, env, salt, frames[2])
            if not hmac.compare_digest(mac[MAC_LEN + SALT_LEN:], tag):
                raise RejectedMessage("bad signature on the data frame")
        self._last[sender] = seq
        try:
            msg = pickle.loads(memoryview(env)[HDR_LEN:])
        except Exception as e:  # signed but malformed: a bug, never an attack
            raise RejectedMessage(f"undecodable body: {e!r}") from None
        if not isinstance(msg, tuple) or not msg:
            raise RejectedMessage("body is not a message tuple")
        if len(frames) == 3:
            return msg + (frames[2],)
        return msg


def encode(msg: tuple) -> bytes:
    """The pickled body of ``msg``, always as a plain tuple: an instance of a message
    class (protocol/messages.py) would pickle as a reference to its class."""
    if type(msg) is not tuple:
        msg = tuple(msg)
    return pickle.dumps(msg, protocol=5)

