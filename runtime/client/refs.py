"""``ObjectRef``: a reference to a value that a task will produce or that ``put`` stored.

Creating a reference counts it in this process's reference table; dropping it queues a decrement
that the core worker applies (``__del__`` may run anywhere, even inside the table's own code, so
it never touches the table directly). Pickling a reference records it as contained in the value
being serialized; unpickling one in another process makes that process a borrower.
"""

from __future__ import annotations

import concurrent.futures
from collections import deque
from typing import Any

from freight.objects import serialization

# The process's core worker; set by freight.client.core_worker when it starts.
_worker: Any = None
# Decrements queued by __del__ and applied by the core worker.
dropped: deque[bytes] = deque()


class ObjectRef:
    """A reference to an object in the cluster. Pass it to tasks, ``get`` it, or ``wait`` on it."""

    __slots__ = ("__weakref__", "_id", "_owner")

    def __init__(self, object_id: bytes, owner: str) -> None:
        self._id = object_id
        self._owner = owner
        w = _worker
        if w is not None:
            w.ref_created(object_id, owner)

    def __del__(self) -> None:
        if _worker is not None:
            dropped.append(self._id)

    def __reduce__(self) -> Any:
        serialization.note_contained_ref(self)
        return _rebuild_ref, (self._id, self._owner)

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def owner_address(self) -> str:
        return self._owner

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def future(self) -> concurrent.futures.Future[Any]:
        """A concurrent.futures.Future resolved with the object's value."""
        if _worker is None:
            raise RuntimeError("freight is not initialized; call freight.init() first")
        return _worker.future_of(self)

    def __await__(self) -> Any:
        import asyncio  # only programs that await references need it

        return asyncio.wrap_future(self.future()).__await__()


# An actor handle holds a reference to an object of this id, owned by the actor's creator, so
# that the creator's reference table says when the last handle anywhere is gone: local handles,
# handles passed to tasks and actors (borrowers), calls still pending (decisions/0031).
_HANDLE_PREFIX = b"actor:"


def actor_handle_id(actor_id: str) -> bytes:
    """The id of the object that an actor's handles refer to."""
    return _HANDLE_PREFIX + actor_id.encode()


def handle_actor(object_id: bytes) -> str:
    """The actor whose handles ``object_id`` stands for, or "" for an ordinary object."""
    if object_id[:6] != _HANDLE_PREFIX:
        return ""
    return object_id[6:].decode(errors="replace")


def _rebuild_ref(object_id: bytes, owner: str) -> ObjectRef:
    w = _worker
    if w is None:
        return ObjectRef(object_id, owner)
    return w.ref_unpickled(object_id, owner)
