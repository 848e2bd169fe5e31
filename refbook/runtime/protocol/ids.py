"""Identifiers.

A process tag is 8 random bytes.  A task id is the submitting process's tag plus a
counter (16 bytes); an object id is a task id plus a return index (20 bytes), so an
object's id names the task that made it (its lineage).  ``put`` objects use the same
scheme with a counter value that no task uses.
"""

from __future__ import annotations

import itertools
import os
import struct

TASK_ID_LEN = 16
OBJECT_ID_LEN = 20
_IDX = struct.Struct(">I")


def new_tag() -> bytes:
    return os.urandom(8)


class IdGenerator:
    """Makes task and object ids for one process.  Thread-safe: ``next`` on an
    ``itertools.count`` is atomic under the GIL."""

    def __init__(self, tag: bytes):
        self._tag = tag
        self._counter = itertools.count(1)

    def task_id(self) -> bytes:
        return self._tag + next(self._counter).to_bytes(8, "big")

    def put_id(self) -> bytes:
        return self.task_id() + b"\xff\xff\xff\xff"


def object_id(task_id: bytes, index: int) -> bytes:
    return task_id + _IDX.pack(index)


def task_of(oid: bytes) -> bytes:
    return oid[:TASK_ID_LEN]


def is_put(oid: bytes) -> bool:
    return oid[TASK_ID_LEN:] == b"\xff\xff\xff\xff"
