"""The refbook exception hierarchy (API.md section 1).

Every error a user can see derives from :class:`RefbookError`.  Messages name the
object, task and node involved and say what the user can do about it.
"""

from __future__ import annotations


class RefbookError(Exception):
    """Base class of every refbook error."""


class TaskError(RefbookError):
    """A task raised.  ``get`` re-raises it as an instance of both ``TaskError``
    and the original exception class (see :meth:`as_instanceof_cause`)."""

    def __init__(self, function_name: str = "", traceback_str: str = "",
                 cause_repr: str = "", cause_cls: type | None = None,
                 cause: BaseException | None = None):
        # Not super(): in a class derived from the user's exception that would run
        # the user's __init__ with our arguments.
        BaseException.__init__(self, function_name, traceback_str)
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause_repr = cause_repr
        self.cause_cls = cause_cls
        self.cause = cause

    def __str__(self) -> str:
        return (f"task {self.function_name} failed: {self.cause_repr}\n\n"
                f"Remote traceback:\n{self.traceback_str.rstrip()}")

    def __reduce__(self):
        return (_rebuild_task_error, (self.function_name, self.traceback_str,
                                      self.cause_repr, self.cause_cls, self.cause))

    def as_instanceof_cause(self) -> TaskError:
        """Return an exception that is a TaskError *and* an instance of the
        original exception's class, so ``except ValueError`` still catches it."""
        cls = self.cause_cls
        if cls is None or not isinstance(cls, type) or not issubclass(cls, BaseException):
            return self
        if issubclass(cls, TaskError):
            return self
        try:
            derived = _derived_class(cls)
            err = derived.__new__(derived)
            TaskError.__init__(err, self.function_name, self.traceback_str,
                               self.cause_repr, cls, self.cause)
            if self.cause is not None:
                try:
                    err.__dict__.update({k: v for k, v in vars(self.cause).items()
                                         if k not in err.__dict__})
                except TypeError:
                    pass
            return err
        except TypeError:  # class cannot be subclassed (final, layout conflict)
            return self


_derived_cache: dict[type, type] = {}


def _derived_class(cls: type) -> type:
    derived = _derived_cache.get(cls)
    if derived is None:
        derived = type(f"TaskError({cls.__name__})", (TaskError, cls),
                       {"__str__": TaskError.__str__, "__reduce__": TaskError.__reduce__,
                        "__init__": TaskError.__init__, "__module__": __name__})
        _derived_cache[cls] = derived
    return derived


def _rebuild_task_error(fn, tb, cause_repr, cause_cls, cause):
    return TaskError(fn, tb, cause_repr, cause_cls, cause).as_instanceof_cause()


class WorkerCrashedError(RefbookError):
    """The worker running a task died and the task has no retries left."""


class ActorError(RefbookError):
    """An actor died, or its constructor raised."""


class ObjectLostError(RefbookError):
    """Every copy of an object is gone and it cannot be rebuilt."""


class OwnerDiedError(ObjectLostError):
    """The process that owned a ref died; its objects went with it (fate sharing)."""


class ClusterShutdownError(OwnerDiedError):
    """A ref made before ``refbook.shutdown()``: its owner, and the value with it, are gone."""


class ObjectReconstructionFailedError(ObjectLostError):
    """Rebuilding a lost object from its lineage failed."""


class GetTimeoutError(RefbookError, TimeoutError):
    """``get(..., timeout=)`` ran out of time before the value was ready."""


class ObjectStoreFullError(RefbookError):
    """An object cannot fit in the node's object store."""


class OutOfMemoryError(RefbookError):
    """The memory monitor killed a task's worker and the task cannot be retried."""


class TaskCancelledError(RefbookError):
    """The task was cancelled with ``refbook.cancel``."""


class DeadlockError(RefbookError):
    """A ``get`` that could never return, refused at once: a task waiting for its own
    result, or an actor (``max_concurrency=1``) waiting for a call to itself."""


__all__ = [
    "RefbookError", "TaskError", "WorkerCrashedError", "ActorError", "ObjectLostError",
    "OwnerDiedError", "ObjectReconstructionFailedError", "GetTimeoutError",
    "ObjectStoreFullError", "OutOfMemoryError", "TaskCancelledError", "DeadlockError",
]
