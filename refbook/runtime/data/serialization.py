"""Values to bytes and back, with large buffers out of band.

``serialize`` uses pickle protocol 5: numpy arrays, Arrow buffers and ``bytes`` larger
than a threshold become out-of-band buffers that the caller writes straight into shared
memory (one copy), and ``deserialize`` rebuilds values over views of that memory (no
copy).  ObjectRefs met while pickling are recorded, so the owner learns which refs a
value contains.  Plain pickle is tried first for speed on simple values; cloudpickle
handles functions and classes defined in ``__main__`` or a notebook.
"""

from __future__ import annotations

import io
import linecache
import pickle
import threading
import types
from collections import ChainMap
from collections.abc import Callable

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
                meta = _cloudpickle_dumps(value, cb)
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
    return _cloudpickle_dumps(fn, None)


# --- code pickled by value keeps its file name and its source lines ----------------
#
# A function defined in ``__main__`` or a notebook cell travels by value: its code object
# is pickled.  cloudpickle >= 3.1.3 renames every such code object "<dynamic-code>", and
# a worker on another host (or any worker, for a notebook cell) has no file to read the
# source from, so the remote traceback would name no file and show no line.  The code
# therefore travels with its real file name and the source lines it spans, which the
# receiving process puts back and adds to its ``linecache``.

_display_filename: Callable[[str], str | None] | None = None


def set_filename_display(fn: Callable[[str], str | None] | None) -> None:
    """Let an embedding (the notebook extension) name code files for tracebacks, for
    example ``<cell 3>`` for a notebook cell's file; ``fn`` returns None to keep a name."""
    global _display_filename
    _display_filename = fn


def filename_display() -> Callable[[str], str | None] | None:
    """The function set by :func:`set_filename_display`, or None."""
    return _display_filename


def display_filename(filename: str) -> str:
    """``filename`` as tracebacks show it (see :func:`set_filename_display`)."""
    fn = _display_filename
    if fn is not None:
        try:
            return fn(filename) or filename
        except Exception:  # noqa: BLE001 - a broken hook must not break the caller
            return filename
    return filename


def _code_span(code: types.CodeType) -> tuple[int, list]:
    """The first line number and the source lines of ``code``, as this process sees them."""
    lines = linecache.getlines(code.co_filename)
    if not lines:
        return 0, []
    first = code.co_firstlineno
    last = max((line for _, _, line in code.co_lines() if line), default=first)
    return first, lines[first - 1:last]


def _reduce_code(code: types.CodeType):
    rebuild, args = _CLOUDPICKLE_CODE_REDUCE(code)
    filename = code.co_filename
    if _display_filename is not None:
        filename = _display_filename(filename) or filename
    first, lines = _code_span(code)
    return _rebuild_code, (rebuild, args, filename, first, lines)


def _rebuild_code(rebuild, args, filename: str, first: int, lines: list) -> types.CodeType:
    code = rebuild(*args)
    if code.co_filename != filename:
        code = code.replace(co_filename=filename)
    if lines and linecache.getlines(filename)[first - 1:first - 1 + len(lines)] != lines:
        entry = linecache.cache.get(filename)
        known = list(entry[2]) if entry is not None and entry[1] is None else []
        if len(known) < first - 1 + len(lines):
            known.extend([""] * (first - 1 + len(lines) - len(known)))
        known[first - 1:first - 1 + len(lines)] = lines
        # mtime None: linecache.checkcache keeps the entry (there may be no such file here)
        linecache.cache[filename] = (sum(map(len, known)), None, known, filename)
    return code


_CLOUDPICKLE_CODE_REDUCE = cloudpickle.Pickler.dispatch_table[types.CodeType]


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


def _cloudpickle_dumps(value, buffer_callback) -> bytes:
    with io.BytesIO() as f:
        _Pickler(f, protocol=5, buffer_callback=buffer_callback).dump(value)
        return f.getvalue()
