"""Values to bytes and back, with large buffers out of band.

``serialize`` uses pickle protocol 5: numpy arrays, Arrow buffers and ``bytes`` larger
than a threshold become out-of-band buffers that the caller writes straight into shared
memory (one copy), and ``deserialize`` rebuilds values over views of that memory (no
copy).  ObjectRefs met while pickling are recorded, so the owner learns which refs a
value contains.  Plain pickle is tried first for speed on simple values; cloudpickle
handles functions and classes defined in ``__main__`` or a notebook.
"""

from __future__ import annotations

import pickle
import threading

import cloudpickle

_tls = threading.local()
_SIMPLE = (bytes, str, int, float, bool, type(None), bytearray)
OOB_MIN = 1024   # buffers smaller than this stay in-band


class Serialized:
    __slots__ = ("meta", "buffers", "refs")

    def __init__(self, meta: bytes, buffers: list, refs: list):
        self.meta = meta
        self.buffers = buffers     # contiguous byte memoryviews
        self.refs = refs           # [(oid, owner)] contained in the value

    @property
    def size(self) -> int:
        return len(self.meta) + sum(b.nbytes for b in self.buffers)

    def inline(self) -> tuple:
        """The value as a message field: ``(meta, [bytes, ...])``."""
        return (self.meta, [bytes(b) for b in self.buffers])


def record_ref(oid: bytes, owner: str) -> None:
    """Called by ``ObjectRef.__reduce__``: note a ref found in the value being pickled."""
    refs = getattr(_tls, "refs", None)
    if refs is not None:
        refs.append((oid, owner))


def serialize(value, oob: bool = True) -> Serialized:
    buffers: list = []
    refs: list = []
    outer = getattr(_tls, "refs", None)
    _tls.refs = refs

    def on_buffer(pb: pickle.PickleBuffer):
        mv = pb.raw()
        if mv.nbytes < OOB_MIN:
            return True       # keep small buffers in-band
        buffers.append(mv)
        return False

    cb = on_buffer if oob else None
    try:
        if type(value) in _SIMPLE:
            meta = pickle.dumps(value, protocol=5, buffer_callback=cb)
        else:
            try:
                meta = _fast_dumps(value, cb)
            except Exception:
                del buffers[:], refs[:]
                meta = cloudpickle.dumps(value, protocol=5, buffer_callback=cb)
    finally:
        _tls.refs = outer
    return Serialized(meta, buffers, refs)


def _fast_dumps(value, cb) -> bytes:
    """Plain pickle, unless the value refers to something in ``__main__`` (a notebook
    function or class) that another process could not import by name."""
    meta = pickle.dumps(value, protocol=5, buffer_callback=cb)
    if b"__main__" in meta:
        raise pickle.PicklingError("refers to __main__")
    return meta


def deserialize(meta, buffers=()):
    return pickle.loads(meta, buffers=buffers)


def dumps_function(fn) -> bytes:
    return cloudpickle.dumps(fn, protocol=5)
