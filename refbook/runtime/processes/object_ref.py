"""ObjectRef: a first-class reference into the distributed object store."""

from __future__ import annotations

import asyncio

from ...exceptions import ClusterShutdownError
from ..data.serialization import record_ref


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

    def check_live(self) -> None:
        """Raise ``ClusterShutdownError`` if this ref's cluster was shut down."""
        core = self._core
        if core is not None and not core.alive:
            raise ClusterShutdownError(
                f"{self!r} was made by a refbook cluster that has been shut down "
                f"(refbook.shutdown() or %unload_ext), and its value went with it. Run the "
                f"code that made it again.")

    def __reduce__(self):
        self.check_live()
        record_ref(self._id, self._owner)
        return (_rebuild_ref, (self._id, self._owner))

    def __del__(self):
        core = self._core
        if core is not None:
            core.release_soon(self._id)

    def future(self) -> asyncio.Future:
        """An asyncio future, in the running loop, that resolves to the value."""
        self.check_live()
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
    from . import context
    core = context.current()
    if core is None:
        return ObjectRef(oid, owner, None)
    return core.deserialized_ref(oid, owner)
