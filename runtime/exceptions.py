"""Exceptions raised by freight, with Ray's class names and meanings.

A task that raised ``ValueError`` re-raises in its caller as an instance of a class that derives
from both :class:`RayTaskError` and ``ValueError``, carrying the remote traceback.
"""

from __future__ import annotations

from typing import Any


class RayError(Exception):
    """Base class of every freight error."""


FreightError = RayError


class RayTaskError(RayError):
    """A task or actor method raised an exception; holds the remote traceback.

    ``cause`` is the original exception; ``traceback_str`` the formatted remote traceback.
    """

    def __init__(
        self,
        function_name: str = "",
        traceback_str: str = "",
        cause: BaseException | None = None,
        pid: int = 0,
        node: str = "",
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.node = node
        super().__init__(self._message())

    def _message(self) -> str:
        where = f" (pid={self.pid}, node={self.node})" if self.pid else ""
        head = f"{type(self.cause).__name__ if self.cause else 'Error'} in {self.function_name}"
        return f"{head}{where}\n{self.traceback_str}".rstrip()

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> Any:
        return (
            _rebuild_task_error,
            (self.function_name, self.traceback_str, self.cause, self.pid, self.node),
        )

    def as_instanceof_cause(self) -> RayTaskError:
        """Return an error that is an instance of both RayTaskError and the cause's type."""
        cause = self.cause
        if cause is None or isinstance(cause, RayTaskError):
            return self
        cause_cls = type(cause)
        if not isinstance(cause, Exception):
            return self
        try:
            cls = _dual_class(cause_cls)
            err: Any = Exception.__new__(cls)
            # Keep the cause's own attributes (errno, args, custom fields) on the new error.
            err.__dict__.update(getattr(cause, "__dict__", {}))
            err.args = cause.args
            RayTaskError.__init__(
                err, self.function_name, self.traceback_str, cause, self.pid, self.node
            )
            err.args = cause.args
            return err
        except Exception:
            # Some exception classes cannot be combined (slots, custom metaclasses): keep ours.
            return self


_DUAL_CLASSES: dict[type, type] = {}


def _dual_class(cause_cls: type) -> type:
    cls = _DUAL_CLASSES.get(cause_cls)
    if cls is None:

        def __str__(self: Any) -> str:
            return RayTaskError._message(self)

        cls = type(
            f"RayTaskError({cause_cls.__name__})",
            (RayTaskError, cause_cls),
            {"__str__": __str__, "__module__": __name__},
        )
        _DUAL_CLASSES[cause_cls] = cls
    return cls


def _rebuild_task_error(
    function_name: str, traceback_str: str, cause: BaseException | None, pid: int, node: str
) -> RayTaskError:
    return RayTaskError(function_name, traceback_str, cause, pid, node)


class TaskCancelledError(RayError):
    """The task was cancelled before it finished."""

    def __init__(self, task_id: str = "", message: str = "") -> None:
        self.task_id = task_id
        super().__init__(message or f"Task {task_id} was cancelled.")


class GetTimeoutError(RayError, TimeoutError):
    """``get`` timed out before the object was ready."""


class RayActorError(RayError):
    """The actor died (or could not be created) before the call finished."""

    def __init__(self, message: str = "The actor died unexpectedly.", actor_id: str = "") -> None:
        self.actor_id = actor_id
        super().__init__(message)


class ActorDiedError(RayActorError):
    """The actor is dead."""


class ActorUnavailableError(RayActorError):
    """The actor is temporarily unreachable."""


class WorkerCrashedError(RayError):
    """The worker process running the task died."""


class NodeDiedError(RayError):
    """The node running the task died."""


class ObjectLostError(RayError):
    """The object's every copy was lost and it could not be rebuilt."""

    def __init__(self, object_id: str = "", message: str = "") -> None:
        self.object_id = object_id
        super().__init__(message or f"Object {object_id} is lost.")

    def __reduce__(self) -> Any:
        return (type(self), (self.object_id, str(self)))


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching the object from another node timed out."""


class ReferenceCountingAssertionError(ObjectLostError):
    """The object was freed while still referenced (a bug)."""


class OwnerDiedError(ObjectLostError):
    """The process that owned the object died, so its value cannot be reached."""


class ObjectReconstructionFailedError(ObjectLostError):
    """Rebuilding the object from its lineage failed."""


class ObjectStoreFullError(RayError):
    """The shared-memory object store cannot hold the object."""


class OutOfMemoryError(RayError):
    """The task's worker was killed because the node ran out of memory."""


class OutOfDiskError(RayError):
    """The node ran out of disk while spilling objects."""


class RuntimeEnvSetupError(RayError):
    """The runtime environment could not be set up."""


class TaskUnschedulableError(RayError):
    """No node can ever satisfy the task's resource request."""


class ActorUnschedulableError(RayError):
    """No node can ever satisfy the actor's resource request."""


class PendingCallsLimitExceeded(RayError):
    """The actor has too many calls pending."""


class LocalRayError(RayError):
    """freight is not initialized or was shut down."""


class RaySystemError(RayError):
    """An internal failure of the runtime."""


class CrossLanguageError(RayError):
    """Kept for API compatibility; freight is Python-only."""


__all__ = [
    "ActorDiedError",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "CrossLanguageError",
    "FreightError",
    "GetTimeoutError",
    "LocalRayError",
    "NodeDiedError",
    "ObjectFetchTimedOutError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectStoreFullError",
    "OutOfDiskError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PendingCallsLimitExceeded",
    "RayActorError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "ReferenceCountingAssertionError",
    "RuntimeEnvSetupError",
    "TaskCancelledError",
    "TaskUnschedulableError",
    "WorkerCrashedError",
]
