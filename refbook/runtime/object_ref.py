"""ObjectRef: a first-class reference into the distributed object store."""

from __future__ import annotations

import asyncio

from .serialization import record_ref


class ObjectRef:
    """A reference to an immutable value that may not exist yet.

    Hashable, picklable (passing it to a task or storing it in another object makes the
    receiver a borrower), and awaitable.  Dropping the last reference anywhere frees
    the value.
    """

    __slots__ = ("_id", "_owner", "_core", "__weakref__")

    def __init__(self, oid: bytes, owner: str, core):
        self._id = oid
        self._owner = owner
        self._core = core

    def hex(self) -> str:
        return self._id.hex()

    @property
    def owner_address(self) -> str:
        return self._owner

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __reduce__(self):
        record_ref(self._id, self._owner)
        return (_rebuild_ref, (self._id, self._owner))

    def __del__(self):
        core = self._core
        if core is not None:
            core.release_soon(self._id)

    def future(self) -> asyncio.Future:
        """An asyncio future, in the running loop, that resolves to the value."""
        loop = asyncio.get_event_loop()
        fut = loop.create_future()
        core = self._core

        def ready():
            def settle():
                if fut.done():
                    return
                try:
                    fut.set_result(core.get([self], None)[0])
                except BaseException as e:  # noqa: BLE001 - handed to the awaiter
                    fut.set_exception(e)
            loop.call_soon_threadsafe(settle)

        core.on_ready(self, ready)
        return fut

    def __await__(self):
        return self.future().__await__()


def _rebuild_ref(oid: bytes, owner: str) -> ObjectRef:
    from . import core as core_mod
    core = core_mod.current()
    if core is None:
        return ObjectRef(oid, owner, None)
    return core.deserialized_ref(oid, owner)
