"""A node agent's accounting of its shared-memory object store.

The store does no I/O on the data path: writers write segment files themselves
(:func:`freight.objects.shm.write_segment`) into space they reserved here first, then seal them.
The store only tracks sizes, owners and states, enforces the capacity, and removes files when
objects are deleted.

Lifecycle of an entry: ``reserve`` (counted against the capacity, not readable yet) -> ``seal``
(readable) -> ``delete``; or ``reserve`` -> ``abort`` when the writer gives up.

**Segment reuse** (``docs/decisions/0012-segment-reuse.md``). A first write into a tmpfs file
makes the kernel allocate and zero every page, which halves the write speed; writing over pages
that exist runs at copy speed. So a deleted object's file of at least ``POOL_MIN_SIZE`` bytes is
not unlinked at once: it is renamed into a bounded pool (``pool-<n>`` in the same folder), and the
next reservation of a similar size gets it renamed to its own path. A file goes to the pool only
when no process has it open or mapped any more (a Linux write lease can only be taken on a file
nobody else holds), so a reader's zero-copy view of a freed object is never overwritten. Pool
files count against the capacity (``used + pooled <= capacity``) and are dropped, oldest first,
whenever a reservation needs their room, when the pool passes its bounds, or after
``POOL_IDLE_S`` seconds unused (:meth:`ObjectStore.trim_pool`).
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import signal
import threading
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any

from ..config import settings
from ..exceptions import ObjectStoreFullError
from .shm import segment_path

__all__ = ["ObjectEntry", "ObjectStore", "StoreStats", "default_capacity", "format_bytes"]

_TOP_HOLDERS = 5

POOL_MIN_SIZE = 1 << 20  # smaller files cost about as much to keep as to allocate afresh
POOL_MAX_FILES = 32
POOL_IDLE_S = 30.0  # pool files unused this long go back to the system

# Linux-only fcntl commands; the values are fixed by the kernel ABI.
_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
# Someone opening a file while we hold its lease makes the kernel signal us, with SIGIO unless
# told otherwise, and SIGIO's default action ends the process. SIGURG's default is to ignore.
_LEASE_BREAK_SIGNAL = signal.SIGURG


def take_lease(fd: int) -> None:
    """Take a write lease on ``fd``: ``OSError`` (``EAGAIN``) when any other open file or
    mapping refers to the same file. Release it with ``F_SETLEASE``/``F_UNLCK`` or by closing.

    A process that opens the file meanwhile blocks until the lease goes, and the kernel signals
    the holder with ``SIGURG``, whose default action is to ignore it (not ``SIGIO``, whose
    default action would end the holder).
    """
    fcntl.fcntl(fd, _F_SETSIG, _LEASE_BREAK_SIGNAL)
    fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_WRLCK)


def format_bytes(n: float) -> str:
    """Human-readable size in binary units: ``512 B``, ``1.5 KiB``, ``3.00 GiB``."""
    if n < 1024:
        return f"{int(n)} B"
    for unit, digits in (("KiB", 1), ("MiB", 1), ("GiB", 2), ("TiB", 2)):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.{digits}f} {unit}"
    raise AssertionError("unreachable")


def total_memory() -> int:
    """Bytes of RAM on this machine (psutil's ``virtual_memory().total``, without loading it)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        import psutil

        return int(psutil.virtual_memory().total)


def default_capacity(shm_root: str = "/dev/shm") -> int:
    """The default store capacity: ``object_store_fraction`` of RAM, at most what ``shm_root``
    has free."""
    capacity = int(total_memory() * settings.object_store_fraction)
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
    pooled_bytes: int = 0  # freed segment files kept for reuse (not objects; see POOL_MIN_SIZE)


class ObjectStore:
    """Capacity accounting for the segment files of one node's object store.

    ``directory`` is created (mode 0700) if missing; ``capacity`` is in bytes. ``pool_bytes``
    bounds the freed segment files kept for reuse (default: ``segment_pool_fraction`` of the
    capacity; 0 turns reuse off). Thread-safe.
    """

    def __init__(self, directory: str, capacity: int, pool_bytes: int | None = None) -> None:
        if capacity <= 0:
            raise ValueError(f"object store capacity must be > 0 bytes, got {capacity}")
        if pool_bytes is None:
            pool_bytes = int(capacity * max(0.0, settings.segment_pool_fraction))
        if pool_bytes < 0:
            raise ValueError(f"pool_bytes must be >= 0, got {pool_bytes}")
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
        # Segment pool: pool file name -> (size, time it was pooled), oldest first.
        self.pool_bytes = min(int(pool_bytes), self.capacity)
        self._pool: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._pooled = 0
        self._pool_seq = itertools.count(1)
        self._reused = 0
        self._reused_bytes = 0
        self._pool_refused_in_use = 0

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
        path = self.path(object_id)
        evicted: list[bytes] = []
        with self._lock:
            if object_id in self._entries:
                state = "sealed" if self._entries[object_id].sealed else "reserved"
                raise ValueError(f"object {object_id.hex()} is already in the store ({state})")
            if self._used + size > self.capacity:
                evicted = self._evict_secondary(self._used + size - self.capacity)
            if self._used + size > self.capacity:
                self._full_errors += 1
                raise ObjectStoreFullError(self._full_message(size))
            self._entries[object_id] = ObjectEntry(object_id, size, owner, False, time.time())
            self._used += size
            self._reserved += size
            drop: list[str] = []
            reuse = self._pool_take(size)
            # Adopted inside the lock, so a delete of this reservation cannot run between the
            # rename and the accounting and leave the file behind.
            if reuse is not None and not self._adopt(reuse[0], reuse[1], size, path):
                drop.append(reuse[0])
            # The new object's room comes out of the pool's first.
            drop += self._pool_shrink(self.capacity - self._used, self.pool_bytes)
        self._unlink_paths(drop)
        for oid in evicted:
            self._unlink(oid)
        return path

    def _evict_secondary(self, need: int) -> list[bytes]:
        """Free secondary copies (objects copied from other nodes, owner ""), oldest first,
        until ``need`` bytes are free or none is left; the caller holds the lock and unlinks
        the returned ids' files. A process that maps one keeps its mapping."""
        copies = sorted(
            (e for e in self._entries.values() if e.sealed and not e.owner),
            key=lambda e: e.create_time,
        )
        out = []
        for e in copies:
            if need <= 0:
                break
            del self._entries[e.object_id]
            self._used -= e.size
            self._objects_deleted += 1
            self._bytes_deleted += e.size
            need -= e.size
            out.append(e.object_id)
        return out

    # -- segment pool -------------------------------------------------------------------------

    def _pool_take(self, size: int) -> tuple[str, int] | None:
        """Remove and return the pool file that best fits ``size`` (within a factor of 2)."""
        if size < POOL_MIN_SIZE or not self._pool:
            return None
        best: str | None = None
        best_gap = 0
        for name, (fsize, _) in self._pool.items():
            if not size // 2 <= fsize <= 2 * size:
                continue
            # Prefer a file at least as large (all its pages reused) over a smaller one.
            gap = fsize - size if fsize >= size else (size - fsize) * 4
            if best is None or gap < best_gap:
                best, best_gap = name, gap
        if best is None:
            return None
        fsize, _ = self._pool.pop(best)
        self._pooled -= fsize
        return os.path.join(self.directory, best), fsize

    def _adopt(self, pool_path: str, fsize: int, size: int, path: str) -> bool:
        """Give the pool file to a new object: cut it to ``size`` and rename it to ``path``."""
        try:
            if fsize > size:
                os.truncate(pool_path, size)  # so the file never holds more than is counted
            os.rename(pool_path, path)
        except OSError:
            return False
        self._reused += 1
        self._reused_bytes += min(size, fsize)
        return True

    def _pool_shrink(self, room: int, limit: int, max_files: int = POOL_MAX_FILES) -> list[str]:
        """Drop pool files, oldest first, until they fit ``room`` and ``limit`` bytes and
        ``max_files`` files; return their paths for unlinking outside the lock."""
        drop: list[str] = []
        while self._pool and (
            self._pooled > room or self._pooled > limit or len(self._pool) > max_files
        ):
            name, (fsize, _) = self._pool.popitem(last=False)
            self._pooled -= fsize
            drop.append(os.path.join(self.directory, name))
        return drop

    def _take_away(self, entry: ObjectEntry) -> str | None:
        """Rename a deleted object's file to a new pool name (under the lock, so a new
        reservation of the same id cannot lose its file); None when there is nothing to pool.

        After the rename no new reader can open the file by the object's path.
        """
        pool_path = os.path.join(self.directory, f"pool-{next(self._pool_seq)}")
        try:
            os.rename(self.path(entry.object_id), pool_path)
        except FileNotFoundError:
            return None  # gone already: nothing to pool or unlink
        except OSError:
            self._unlink(entry.object_id)
            return None
        return pool_path

    def _recycle(self, pool_path: str, size: int) -> None:
        """Keep a taken-away file in the pool if nobody holds it any more, else unlink it."""
        # Whoever still has it open or mapped must find their view intact.
        if not self._unshared(pool_path, size):
            self._unlink_paths([pool_path])
            return
        with self._lock:
            self._pool[os.path.basename(pool_path)] = (size, time.monotonic())
            self._pooled += size
            drop = self._pool_shrink(self.capacity - self._used, self.pool_bytes)
        self._unlink_paths(drop)

    def _unshared(self, path: str, size: int) -> bool:
        """True when no other open file or mapping refers to ``path`` and it has ``size`` bytes.

        A write lease (``F_SETLEASE``) is granted only when the caller's descriptor is the
        file's only open file, and a mapping keeps its file open until it is unmapped.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if os.fstat(fd).st_size != size:
                return False
            take_lease(fd)
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
            return True
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EBUSY):
                # Leases unavailable here (disabled, or a filesystem without them): the store
                # cannot prove a file unused, so it stops reusing files.
                with self._lock:
                    self.pool_bytes = 0
            else:
                with self._lock:
                    self._pool_refused_in_use += 1
            return False
        finally:
            os.close(fd)

    def trim_pool(self, idle_s: float = POOL_IDLE_S) -> int:
        """Release pool files unused for ``idle_s`` seconds; return how many bytes went."""
        cutoff = time.monotonic() - idle_s
        drop: list[str] = []
        freed = 0
        with self._lock:
            while self._pool:
                name, (fsize, since) = next(iter(self._pool.items()))
                if since > cutoff:
                    break
                del self._pool[name]
                self._pooled -= fsize
                freed += fsize
                drop.append(os.path.join(self.directory, name))
        self._unlink_paths(drop)
        return freed

    @staticmethod
    def _unlink_paths(paths: list[str]) -> None:
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

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
        """Delete objects (sealed or reserved) and unlink (or pool) their files; return bytes freed.

        Ids that are not in the store are ignored, and so are files already gone.
        """
        removed: list[ObjectEntry] = []
        unlink: list[bytes] = []
        taken: list[tuple[str, int]] = []
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
                if entry.sealed and entry.size >= POOL_MIN_SIZE and self.pool_bytes > 0:
                    pool_path = self._take_away(entry)
                    if pool_path is not None:
                        taken.append((pool_path, entry.size))
                else:
                    unlink.append(object_id)
        for object_id in unlink:
            self._unlink(object_id)
        for pool_path, size in taken:
            self._recycle(pool_path, size)
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
                pooled_bytes=self._pooled,
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
                "pool_files": len(self._pool),
                "pool_bytes": self._pooled,
                "segments_reused_total": self._reused,
                "bytes_reused_total": self._reused_bytes,
                "pool_refused_in_use_total": self._pool_refused_in_use,
            }

    def destroy(self) -> None:
        """Unlink every segment and remove the directory (files left by others included)."""
        with self._lock:
            self._entries.clear()
            self._used = 0
            self._reserved = 0
            self._pool.clear()
            self._pooled = 0
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
