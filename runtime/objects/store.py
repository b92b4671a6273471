"""A node agent's accounting of its shared-memory object store.

The store does no I/O on the data path: writers write segment files themselves
(:func:`freight.objects.shm.write_segment`) into space they reserved here first, then seal them.
The store only tracks sizes, owners and states, enforces the capacity, and unlinks files when
objects are deleted.

Lifecycle of an entry: ``reserve`` (counted against the capacity, not readable yet) -> ``seal``
(readable) -> ``delete``; or ``reserve`` -> ``abort`` when the writer gives up.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import psutil

from ..config import settings
from ..exceptions import ObjectStoreFullError
from .shm import segment_path

__all__ = ["ObjectEntry", "ObjectStore", "StoreStats", "default_capacity", "format_bytes"]

_TOP_HOLDERS = 5


def format_bytes(n: float) -> str:
    """Human-readable size in binary units: ``512 B``, ``1.5 KiB``, ``3.00 GiB``."""
    if n < 1024:
        return f"{int(n)} B"
    for unit, digits in (("KiB", 1), ("MiB", 1), ("GiB", 2), ("TiB", 2)):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.{digits}f} {unit}"
    raise AssertionError("unreachable")


def default_capacity(shm_root: str = "/dev/shm") -> int:
    """The default store capacity: ``object_store_fraction`` of RAM, at most what ``shm_root``
    has free."""
    capacity = int(psutil.virtual_memory().total * settings.object_store_fraction)
    try:
        st = os.statvfs(shm_root)
    except OSError:
        return capacity
    return max(0, min(capacity, st.f_bavail * st.f_frsize))


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    """One object held (or being written) in the store."""

    object_id: bytes
    size: int
    owner: str
    sealed: bool
    create_time: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Store occupancy. ``used_bytes`` counts sealed objects and open reservations."""

    used_bytes: int
    capacity: int
    num_objects: int
    num_sealed: int
    num_reserved: int
    reserved_bytes: int = 0


class ObjectStore:
    """Capacity accounting for the segment files of one node's object store.

    ``directory`` is created (mode 0700) if missing; ``capacity`` is in bytes. Thread-safe.
    """

    def __init__(self, directory: str, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"object store capacity must be > 0 bytes, got {capacity}")
        self.directory = directory
        self.capacity = int(capacity)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self._lock = threading.Lock()
        self._entries: dict[bytes, ObjectEntry] = {}
        self._used = 0  # sealed + reserved
        self._reserved = 0
        self._objects_created = 0
        self._bytes_created = 0
        self._objects_deleted = 0
        self._bytes_deleted = 0
        self._aborted = 0
        self._full_errors = 0

    def path(self, object_id: bytes) -> str:
        """The segment file of ``object_id`` in this store."""
        return segment_path(self.directory, object_id)

    def reserve(self, object_id: bytes, size: int, owner: str) -> str:
        """Reserve ``size`` bytes for ``object_id`` and return the path to write it to.

        Raises :class:`ObjectStoreFullError` when the store cannot fit it, and
        ``ValueError`` when the id is already present.
        """
        if not isinstance(object_id, bytes) or not object_id:
            raise TypeError(f"object_id must be non-empty bytes, got {object_id!r}")
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        with self._lock:
            if object_id in self._entries:
                state = "sealed" if self._entries[object_id].sealed else "reserved"
                raise ValueError(f"object {object_id.hex()} is already in the store ({state})")
            if self._used + size > self.capacity:
                self._full_errors += 1
                raise ObjectStoreFullError(self._full_message(size))
            self._entries[object_id] = ObjectEntry(object_id, size, owner, False, time.time())
            self._used += size
            self._reserved += size
        return self.path(object_id)

    def _full_message(self, size: int) -> str:
        holders: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for entry in self._entries.values():
            held = holders[entry.owner]
            held[0] += entry.size
            held[1] += 1
        top = sorted(holders.items(), key=lambda kv: kv[1][0], reverse=True)[:_TOP_HOLDERS]
        lines = [
            f"Object store is full: cannot store an object of {format_bytes(size)}; "
            f"{format_bytes(self._used)} of {format_bytes(self.capacity)} is in use "
            f"({format_bytes(self._reserved)} of it reserved by writes in progress), "
            f"{format_bytes(max(0, self.capacity - self._used))} free.",
        ]
        if top:
            lines.append(f"Top holders ({len(holders)} in all):")
            for owner, (nbytes, count) in top:
                lines.append(
                    f"  {owner or '<unknown owner>'}: {format_bytes(nbytes)} in {count} object"
                    f"{'' if count == 1 else 's'}"
                )
        lines.append(
            "To fix: drop references to objects you no longer need (del the ObjectRefs, or let "
            "them go out of scope) so they are freed; `freight memory` shows what keeps each "
            "object alive. Or give the node a larger store with "
            "`freight start --object-store-memory BYTES`."
        )
        return "\n".join(lines)

    def seal(self, object_id: bytes) -> None:
        """Mark a reserved object as written and readable."""
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is None:
                raise KeyError(f"object {object_id.hex()} was never reserved in this store")
            if entry.sealed:
                raise ValueError(f"object {object_id.hex()} is already sealed")
            self._entries[object_id] = ObjectEntry(
                object_id, entry.size, entry.owner, True, entry.create_time
            )
            self._reserved -= entry.size
            self._objects_created += 1
            self._bytes_created += entry.size

    def abort(self, object_id: bytes) -> None:
        """Release a reservation that will not be sealed (removes a partly written file)."""
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is None:
                raise KeyError(f"object {object_id.hex()} was never reserved in this store")
            if entry.sealed:
                raise ValueError(f"object {object_id.hex()} is sealed; delete it instead")
            del self._entries[object_id]
            self._used -= entry.size
            self._reserved -= entry.size
            self._aborted += 1
        self._unlink(object_id)

    def delete(self, object_ids: Any) -> int:
        """Delete objects (sealed or reserved) and unlink their files; return bytes freed.

        Ids that are not in the store are ignored, and so are files already gone.
        """
        removed: list[ObjectEntry] = []
        with self._lock:
            for object_id in object_ids:
                entry = self._entries.pop(object_id, None)
                if entry is None:
                    continue
                removed.append(entry)
                self._used -= entry.size
                if entry.sealed:
                    self._objects_deleted += 1
                    self._bytes_deleted += entry.size
                else:
                    self._reserved -= entry.size
                    self._aborted += 1
        for entry in removed:
            self._unlink(entry.object_id)
        return sum(entry.size for entry in removed)

    def _unlink(self, object_id: bytes) -> None:
        try:
            os.unlink(self.path(object_id))
        except FileNotFoundError:
            pass

    def contains(self, object_id: bytes) -> bool:
        """True when ``object_id`` is sealed in the store (readable)."""
        entry = self._entries.get(object_id)
        return entry is not None and entry.sealed

    def __contains__(self, object_id: object) -> bool:
        return isinstance(object_id, bytes) and self.contains(object_id)

    def info(self, object_id: bytes) -> ObjectEntry | None:
        """The entry of ``object_id`` (sealed or reserved), or None."""
        return self._entries.get(object_id)

    def stats(self) -> StoreStats:
        """Current occupancy."""
        with self._lock:
            num_sealed = sum(1 for e in self._entries.values() if e.sealed)
            return StoreStats(
                used_bytes=self._used,
                capacity=self.capacity,
                num_objects=len(self._entries),
                num_sealed=num_sealed,
                num_reserved=len(self._entries) - num_sealed,
                reserved_bytes=self._reserved,
            )

    def list_objects(self) -> list[ObjectEntry]:
        """Every entry, oldest first."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.create_time)

    def statistics(self) -> dict[str, Any]:
        """A plain snapshot for telemetry: occupancy plus monotonic counters."""
        stats = self.stats()
        with self._lock:
            return {
                "used_bytes": stats.used_bytes,
                "reserved_bytes": stats.reserved_bytes,
                "sealed_bytes": stats.used_bytes - stats.reserved_bytes,
                "capacity_bytes": stats.capacity,
                "num_objects": stats.num_objects,
                "num_sealed": stats.num_sealed,
                "num_reserved": stats.num_reserved,
                "objects_created_total": self._objects_created,
                "bytes_created_total": self._bytes_created,
                "objects_deleted_total": self._objects_deleted,
                "bytes_deleted_total": self._bytes_deleted,
                "reservations_aborted_total": self._aborted,
                "full_errors_total": self._full_errors,
            }

    def destroy(self) -> None:
        """Unlink every segment and remove the directory (files left by others included)."""
        with self._lock:
            self._entries.clear()
            self._used = 0
            self._reserved = 0
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(self.directory, name))
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass
        try:
            os.rmdir(self.directory)
        except FileNotFoundError:
            pass
