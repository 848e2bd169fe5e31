"""How a process writes values (part of :class:`~refbook.runtime.processes.core.CoreWorker`):
``put``, storing a serialized value in the node's arena, and serializing a call's
arguments (top-level refs left out, a large blob stored), with an error that names the
argument that cannot be pickled."""

from __future__ import annotations

from ... import exceptions as exc
from ..data.arena import layout_size
from ..data.serialization import Serialized, serialize
from ..protocol import messages as P
from ..protocol.entries import INLINE, STORED
from ..protocol.refcount import Effects
from .callsite import here
from .object_ref import ObjectRef

INLINE_MAX = 100 * 1024


class _TopArg:
    """Placeholder for a top-level ref argument, resolved to its value before the
    task runs (API.md: top-level refs arrive as values, nested refs as refs)."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i

    def __reduce__(self):
        return (_TopArg, (self.i,))


class ObjectWriting:
    """Mixed into CoreWorker; uses its ``lock``, ``owner``, ``pins``, ``ids`` and
    ``transport``."""

    def put(self, value) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError("put() of an ObjectRef is not allowed; pass the ref itself "
                            "or put() a container that holds it")
        site = here("put")
        s = serialize(value)
        oid = self.ids.put_id()
        if s.size <= INLINE_MAX:
            entry = (INLINE, s.meta, [bytes(b) for b in s.buffers])
        else:
            entry = self.store(oid, s, self.me, pin=True)
        with self.lock:
            fx = Effects()
            self._drain_releases(fx)
            self.rt.own(oid, s.refs).site = site
            if s.refs:
                self.note_containers(oid, s.refs)
            ref = self.new_ref(oid)
            self.owner.put_value(oid, entry)
            self._apply(fx)
        return ref

    def store(self, oid: bytes, s: Serialized, owner: str, pin: bool = False) -> tuple:
        """Write a serialized value into this node's arena; one copy.  Not callable
        from the I/O thread (it waits for the node manager's reply)."""
        size = layout_size(s)
        self._check_usable()
        if self._releases:
            # free what was dropped first, so the node can reuse that (warm) memory
            with self.lock:
                fx = Effects()
                self._drain_releases(fx)
                self._apply(fx)
        try:
            _, status, detail = self.transport.request(
                self.node_address,
                lambda reply_to: (P.ALLOC, self.me, reply_to, oid, size, owner), 180)
        except TimeoutError:
            self._check_usable()
            raise exc.RefbookError("the node manager did not answer an allocation request "
                                   "within 180 s") from None
        if status == "full":
            raise exc.ObjectStoreFullError(detail)
        if status == "ok":
            self.arena.write(detail, s)
            if pin:     # we wrote it and may read it: keep it pinned for us
                with self.lock:
                    self.pins[oid] = [detail, size, 0]
            self.transport.send(self.node_address,
                                (P.SEAL, oid, detail, size, owner, self.me if pin else None))
        return (STORED, self.node_id, detail, size)

    def prepare_args(self, name: str, args, kwargs, signature=None):
        """Serialize a call's arguments (outside the lock).  Top-level refs are left out
        and resolved to values before the call runs; a large blob goes to the store.
        Returns ``(args_entry, top_refs, nested_refs, blob_oid)``."""
        top: list = []

        def mark(a):
            if isinstance(a, ObjectRef):
                a.check_live()
                top.append(a)
                return _TopArg(len(top) - 1)
            return a

        args2 = [mark(a) for a in args]
        kwargs2 = {k: mark(v) for k, v in kwargs.items()}
        try:
            s = serialize((args2, kwargs2))
        except exc.ClusterShutdownError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the argument named
            raise _argument_error(name, args, kwargs, signature, e) from None
        self._check_usable()
        blob_oid = None
        if s.size > INLINE_MAX:
            blob_oid = self.ids.put_id()
            args_entry = self.store(blob_oid, s, self.me, pin=True)
        else:
            args_entry = (INLINE, s.meta, [bytes(b) for b in s.buffers])
        return args_entry, [(r._id, r._owner) for r in top], s.refs, blob_oid


def first_unpicklable(named_values) -> tuple | None:
    """``(name, error)`` of the first value of ``(name, value)`` pairs that cannot be
    pickled (refs always can), or None."""
    import cloudpickle
    for name, value in named_values:
        if isinstance(value, ObjectRef):
            continue
        try:
            cloudpickle.dumps(value, protocol=5)
        except Exception as e:  # noqa: BLE001
            return name, e
    return None


def _argument_error(name: str, args, kwargs, signature, err: BaseException) -> TypeError:
    """Find which argument cannot be pickled, and say so."""
    names = []
    if signature is not None:
        try:
            bound = signature.bind_partial(*args, **kwargs)
            names = list(bound.arguments.items())
        except TypeError:
            names = []
    if not names:
        names = [(f"argument {i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    bad = first_unpicklable(names)
    if bad is not None:
        arg_name, e = bad
        return TypeError(
            f"cannot pass argument {arg_name!r} of {name}(): it cannot be pickled "
            f"({type(e).__name__}: {e}). Values sent to a task must be picklable; "
            f"create the object inside the task instead, or pass what is needed to "
            f"rebuild it.")
    return TypeError(f"cannot pickle the arguments of {name}(): {type(err).__name__}: {err}")
