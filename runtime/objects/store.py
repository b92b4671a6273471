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

**Spilling** (``docs/decisions/0021-object-spilling.md``), when the store has a spill folder
(:mod:`freight.objects.spill`). Above ``spill_threshold`` of the capacity the agent calls
:meth:`ObjectStore.spill_to_threshold` off its event loop; a reservation that does not fit
makes room itself (:meth:`ObjectStore.reserve`, in a thread). Either way secondary copies are
evicted first, then sealed primary objects that no process maps are copied to disk, least
recently used first, and their segment files leave shared memory (into the segment pool when
nobody holds them). A spilled entry stays, with its size, owner and spill file; a reader that
finds the segment gone asks the agent, which copies it back (:meth:`ObjectStore.restore`). The
spill file is kept until the object is freed, so spilling it again costs no write.
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
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from ..config import settings
from ..exceptions import ObjectLostError, ObjectStoreFullError, OutOfDiskError
from ..observe.recorder import RECORDER
from .shm import segment_path
from .spill import SpillDir, checksum, copy_file, damage

__all__ = ["ObjectEntry", "ObjectStore", "StoreStats", "default_capacity", "format_bytes"]

_T = TypeVar("_T")

_TOP_HOLDERS = 5

POOL_MIN_SIZE = 1 << 20  # smaller files cost about as much to keep as to allocate afresh
POOL_MAX_FILES = 32
POOL_IDLE_S = 30.0  # pool files unused this long go back to the system

# How long a reservation or restore that spilling cannot serve yet waits for writes to be sealed
# and readers to let go (agents pass it; callers on an event loop pass 0: a seal comes through
# that loop). Spills in flight are always waited for: they end by themselves.
FULL_WAIT_S = 5.0
# A background spill pass leaves an object restored this recently alone: its reader is about to
# map it (a put that needs room may still take it).
RESTORE_GRACE_S = 2.0
_FULL_POLL_S = 0.1  # readers unmap without telling anyone: look again this often

# Linux-only fcntl commands; the values are fixed by the kernel ABI.
_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
# Someone opening a file while we hold its lease makes the kernel signal us, with SIGIO unless
# told otherwise, and SIGIO's default action ends the process. SIGURG's default is to ignore.
_LEASE_BREAK_SIGNAL = signal.SIGURG


class _SpillFirst(Exception):
    """try_reserve: the reservation fits once objects are spilled (not on this thread)."""


class ObjectExistsError(ValueError):
    """A task return is already stored here, sealed, by the same owner: an earlier attempt of
    the task (run twice: a re-sent push, a retry after a runtime failure) or a run whose value
    its owner freed a moment ago. As Ray's plasma answers ``ObjectExists``, the writer keeps
    that value (``path``, ``size``) instead of writing a second one: a reader already holding
    the first never sees its bytes change under it."""

    def __init__(self, object_id: bytes, path: str, size: int) -> None:
        super().__init__(f"object {object_id.hex()} is already in the store (sealed)")
        self.object_id, self.path, self.size = object_id, path, size

    def __reduce__(self) -> tuple[Any, ...]:
        return ObjectExistsError, (self.object_id, self.path, self.size)


def take_lease(fd: int) -> None:
    """Take a write lease on ``fd``: ``OSError`` (``EAGAIN``) when any other open file or
    mapping refers to the same file. Release it with ``F_SETLEASE``/``F_UNLCK`` or by closing.

    A process that opens the file meanwhile blocks until the lease goes, and the kernel signals
    the holder with ``SIGURG``, whose default action is to ignore it (not ``SIGIO``, whose
    default action would end the holder).
    """
    fcntl.fcntl(fd, _F_SETSIG, _LEASE_BREAK_SIGNAL)
    fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_WRLCK)


def in_use(path: str) -> bool:
    """True when another open file or mapping, in any process, refers to ``path`` (a write
    lease is refused); False when nobody does or when it cannot tell (no such file, leases
    unavailable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        take_lease(fd)
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError as e:
        return e.errno in (errno.EAGAIN, errno.EBUSY)
    finally:
        os.close(fd)


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
    spill_path: str = ""  # its copy on disk, once spilled (kept after a restore)
    spill_crc: int = 0  # the CRC-32 of its bytes, checked when they are read back from disk
    in_memory: bool = True  # False while it lives only in its spill file

    @property
    def spilled(self) -> bool:
        """True while the object is on disk only (a reader must have it restored)."""
        return not self.in_memory


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
    spilled_bytes: int = 0  # objects on disk only (not in used_bytes)
    num_spilled: int = 0


class ObjectStore:
    """Capacity accounting for the segment files of one node's object store.

    ``directory`` is created (mode 0700) if missing; ``capacity`` is in bytes. ``pool_bytes``
    bounds the freed segment files kept for reuse (default: ``segment_pool_fraction`` of the
    capacity; 0 turns reuse off). ``spill_dir`` turns spilling on: the folder spilled objects
    go to, above ``spill_threshold`` of the capacity (default ``FREIGHT_OBJECT_SPILLING_THRESHOLD``).
    Thread-safe.
    """

    def __init__(
        self,
        directory: str,
        capacity: int,
        pool_bytes: int | None = None,
        spill_dir: str | None = None,
        spill_threshold: float | None = None,
    ) -> None:
        if spill_threshold is None:
            spill_threshold = settings.object_spilling_threshold
        if not 0.0 < spill_threshold <= 1.0:
            raise ValueError(
                f"the spilling threshold is a share of the store capacity in (0, 1], got "
                f"{spill_threshold} (FREIGHT_OBJECT_SPILLING_THRESHOLD)"
            )
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
        # Spilling: primary copies sealed in memory, least recently used first (the candidates),
        # the ones being copied out, and the restores in progress.
        self.spill = SpillDir(spill_dir) if spill_dir else None
        self.spill_threshold = float(spill_threshold)
        self._cond = threading.Condition(self._lock)  # room may have been made
        self._resident: OrderedDict[bytes, None] = OrderedDict()
        self._spilling: set[bytes] = set()
        self._restoring: dict[bytes, threading.Event] = {}
        self._restored_at: dict[bytes, float] = {}  # monotonic time of recent restores
        # Objects whose spill file was found damaged: why, for every later reader, until the
        # object is freed or made again (rebuilt) under its id.
        self._lost: dict[bytes, str] = {}
        self.restore_grace_s = RESTORE_GRACE_S
        self._spilled_now = 0  # objects on disk only, and their bytes
        self._spilled_now_bytes = 0
        self._disk_bytes = 0  # spill files kept, restored objects' included
        self._spilled_total = 0
        self._spilled_bytes_total = 0
        self._restored_total = 0
        self._restored_bytes_total = 0
        self._spill_errors = 0
        self._spill_error = ""

    def path(self, object_id: bytes) -> str:
        """The file that holds ``object_id``'s bytes now: its segment in shared memory, or its
        spill file while it is spilled (readers on other nodes pull from either)."""
        entry = self._entries.get(object_id)
        if entry is not None and not entry.in_memory and entry.spill_path:
            return entry.spill_path
        return segment_path(self.directory, object_id)

    def _shm_path(self, object_id: bytes) -> str:
        return segment_path(self.directory, object_id)

    def reserve(self, object_id: bytes, size: int, owner: str, wait_s: float = 0.0) -> str:
        """Reserve ``size`` bytes for ``object_id`` and return the path to write it to.

        When it does not fit, secondary copies are evicted and, with spilling on, primary
        objects spilled, in the calling thread (blocking I/O; an event loop uses
        :meth:`try_reserve` first). Raises :class:`ObjectStoreFullError` when that cannot make
        room, after waiting up to ``wait_s`` seconds for writes to be sealed and readers to let
        go; ``OutOfDiskError`` when spilling failed for want of disk; ``ValueError`` when the
        id is already present.
        """
        return cast(str, self._reserve(object_id, size, owner, wait_s, may_spill=True))

    def try_reserve(self, object_id: bytes, size: int, owner: str) -> str | None:
        """:meth:`reserve` without spilling or waiting, for an event loop: None when objects
        must be spilled first (then call :meth:`reserve` in a thread)."""
        return self._reserve(object_id, size, owner, 0.0, may_spill=False)

    def _reserve(
        self, object_id: bytes, size: int, owner: str, wait_s: float, may_spill: bool
    ) -> str | None:
        if not isinstance(object_id, bytes) or not object_id:
            raise TypeError(f"object_id must be non-empty bytes, got {object_id!r}")
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        path = self._shm_path(object_id)

        def take() -> list[str]:
            self._check_new(object_id)
            self._entries[object_id] = ObjectEntry(object_id, size, owner, False, time.time())
            self._lost.pop(object_id, None)
            return self._claim(size, path)

        with self._lock:
            entry = self._entries.get(object_id)
            if entry is not None and owner and entry.sealed and entry.owner == owner:
                raise ObjectExistsError(object_id, path, entry.size)
            copy_in_the_way = entry is not None and owner and entry.sealed and not entry.owner
        if copy_in_the_way:
            # A copy pulled from the node that made it, which died: the object is being made
            # again here (rebuilt from its lineage), and the new primary replaces the copy.
            self.delete([object_id])
        with self._lock:
            self._check_new(object_id)  # before any eviction or spill on its behalf
        try:
            drop = self._admit(size, wait_s, take, may_spill)
        except _SpillFirst:
            return None
        self._unlink_paths(drop)
        return path

    def _check_new(self, object_id: bytes) -> None:
        entry = self._entries.get(object_id)
        if entry is not None:
            state = "spilled" if entry.spilled else "sealed" if entry.sealed else "reserved"
            raise ValueError(f"object {object_id.hex()} is already in the store ({state})")

    def _claim(self, size: int, path: str) -> list[str]:
        """Count ``size`` more bytes as reserved for ``path`` (the caller holds the lock and
        has made room); return pool files to unlink."""
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
        return drop

    def _admit(
        self, size: int, wait_s: float, take: Callable[[], _T], may_spill: bool = True
    ) -> _T:
        """Run ``take()`` under the lock once ``size`` more bytes fit in memory: after evicting
        secondary copies, then spilling primaries in this thread, then waiting (up to
        ``wait_s``) for writes to be sealed and readers to unmap. Raises when none of it can
        make room; ``_SpillFirst`` when that needs a spill and ``may_spill`` is False."""
        deadline = time.monotonic() + wait_s
        failed: set[bytes] = set()  # spills that failed in this call are not tried again
        error: OSError | None = None
        while True:
            evicted: list[bytes] = []
            batch: list[ObjectEntry] = []
            try:
                with self._lock:
                    short = self._used + size - self.capacity
                    if short > 0:
                        evicted = self._evict_secondary(short)
                        short = self._used + size - self.capacity
                    if short <= 0:
                        return take()
                    spills = self.spill is not None and size <= self.capacity
                    if spills and not may_spill:
                        raise _SpillFirst
                    if spills:
                        batch = self._plan_spill(short, failed)
                    if not batch:
                        left = deadline - time.monotonic()
                        if self._spilling or (spills and left > 0 and self._may_free()):
                            # Spills in flight notify as they land; readers do not.
                            self._cond.wait(
                                _FULL_POLL_S if self._spilling else min(left, _FULL_POLL_S)
                            )
                            continue
                        self._full_errors += 1
                        message = self._full_message(size, error)
                        if error is not None and error.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise OutOfDiskError(message)
                        raise ObjectStoreFullError(message)
            finally:
                for oid in evicted:
                    self._unlink(oid)
            error = self._spill_batch(batch, failed)[1] or error

    def _may_free(self) -> bool:
        """Whether waiting can make room: writes in progress will be sealed (and can then be
        spilled), primary objects that readers map now may be let go."""
        return self._reserved > 0 or bool(self._resident)

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

    # -- spilling -----------------------------------------------------------------------------

    def over_threshold(self) -> bool:
        """True when spilling is on and objects in memory pass the spilling threshold."""
        return self.spill is not None and self._used > self.spill_threshold * self.capacity

    def spill_to_threshold(self) -> int:
        """Evict secondary copies, then spill primary objects (least recently used first,
        skipping those a process maps), until usage is at most the threshold or nothing is
        left to spill; return the bytes spilled. Blocking I/O: call it off the event loop."""
        if self.spill is None:
            return 0
        failed: set[bytes] = set()
        spilled = 0
        while True:
            evicted: list[bytes] = []
            batch: list[ObjectEntry] = []
            with self._lock:
                excess = self._used - int(self.spill_threshold * self.capacity)
                if excess > 0:
                    evicted = self._evict_secondary(excess)
                    excess = self._used - int(self.spill_threshold * self.capacity)
                if excess > 0:
                    batch = self._plan_spill(excess, failed, self.restore_grace_s)
            for oid in evicted:
                self._unlink(oid)
            if not batch:
                return spilled
            spilled += self._spill_batch(batch, failed)[0]

    def _plan_spill(self, need: int, skip: set[bytes], grace_s: float = 0.0) -> list[ObjectEntry]:
        """Pick primary objects in memory to spill, least recently used first, until ``need``
        bytes; mark them as being spilled. With ``grace_s``, objects restored that recently are
        left alone: their reader has not mapped them yet. The caller holds the lock."""
        out: list[ObjectEntry] = []
        recent = time.monotonic() - grace_s
        if len(self._restored_at) > 1024:  # forget the old ones now and then
            self._restored_at = {k: t for k, t in self._restored_at.items() if t > recent}
        for object_id in self._resident:
            if need <= 0:
                break
            if object_id in self._spilling or object_id in skip:
                continue
            if grace_s and self._restored_at.get(object_id, 0.0) > recent:
                continue
            # A mapped segment's pages stay in memory until the reader unmaps it: spilling it
            # would free nothing now. (An open during this check waits microseconds.)
            if in_use(self._shm_path(object_id)):
                continue
            entry = self._entries[object_id]
            self._spilling.add(object_id)
            out.append(entry)
            need -= entry.size
        return out

    def _spill_batch(
        self, batch: list[ObjectEntry], failed: set[bytes]
    ) -> tuple[int, OSError | None]:
        """Copy planned objects to disk and take them out of memory, one at a time (each lands
        as soon as it is on disk); return the bytes spilled and the last error."""
        assert self.spill is not None
        spilled = 0
        error: OSError | None = None
        for entry in batch:
            object_id = entry.object_id
            path, crc, wrote = entry.spill_path, entry.spill_crc, False
            if not path:  # (one spilled before and restored keeps its file: no write)
                try:
                    shm = self._shm_path(object_id)
                    path, crc = self.spill.write(object_id, shm, entry.size)
                    wrote = True
                except OSError as e:
                    failed.add(object_id)
                    with self._lock:
                        self._spilling.discard(object_id)
                        if self._entries.get(object_id) is entry:  # else freed meanwhile
                            error = e
                            self._spill_errors += 1
                            self._spill_error = f"spilling to {self.spill.directory} failed: {e}"
                        self._cond.notify_all()
                    continue
            if self._land_spill(entry, path, crc, wrote):
                spilled += entry.size
        return spilled, error

    def _land_spill(self, entry: ObjectEntry, path: str, crc: int, wrote: bool) -> bool:
        """Mark a copied object spilled and move its segment out of the way (to the pool)."""
        object_id, size = entry.object_id, entry.size
        taken: str | None = None
        with self._lock:
            self._spilling.discard(object_id)
            landed = self._entries.get(object_id) is entry
            if landed:
                self._entries[object_id] = replace(
                    entry, spill_path=path, spill_crc=crc, in_memory=False
                )
                self._resident.pop(object_id, None)
                self._used -= size
                self._spilled_now += 1
                self._spilled_now_bytes += size
                self._spilled_total += 1
                self._spilled_bytes_total += size
                if wrote:
                    self._disk_bytes += size
                # Renamed under the lock: a restore may recreate the path right after.
                taken = self._take_away(entry)
                self._cond.notify_all()
        if not landed:
            if wrote:
                SpillDir.remove([path])  # the object was freed while it was being copied
            return False
        if taken is not None:
            if size >= POOL_MIN_SIZE and self.pool_bytes > 0:
                self._recycle(taken, size)  # the reservation waiting for room may reuse it
            else:
                self._unlink_paths([taken])
        RECORDER.inc("freight_object_spilled_total")
        RECORDER.inc("freight_object_spilled_bytes_total", (), size)
        return True

    def resident_path(self, object_id: bytes) -> str | None:
        """The segment path of a sealed object that is in memory now, else None (spilled,
        not sealed, or not here)."""
        entry = self._entries.get(object_id)
        if entry is None or not entry.sealed or not entry.in_memory:
            return None
        return self._shm_path(object_id)

    def restore(self, object_id: bytes, wait_s: float = 0.0) -> str:
        """Copy a spilled object back into shared memory and return its segment path (at once
        when it is in memory already). Room is made as for :meth:`reserve` (blocking I/O);
        concurrent calls for one object make one copy. ``KeyError`` when the store does not
        hold the object (it was freed)."""
        while True:
            with self._lock:
                entry = self._entries.get(object_id)
                if entry is None and object_id in self._lost:
                    raise ObjectLostError(object_id.hex(), self._lost[object_id])
                if entry is None or not entry.sealed:
                    raise KeyError(f"object {object_id.hex()} is not in this node's store")
                if entry.in_memory:
                    if object_id in self._resident:
                        self._resident.move_to_end(object_id)  # just used
                    return self._shm_path(object_id)
                done = self._restoring.get(object_id)
                if done is None:
                    done = self._restoring[object_id] = threading.Event()
                    break
            done.wait()  # another thread is copying it back; then look again
        try:
            return self._restore(entry, wait_s)
        finally:
            with self._lock:
                del self._restoring[object_id]
            done.set()

    def _restore(self, entry: ObjectEntry, wait_s: float) -> str:
        object_id, size = entry.object_id, entry.size
        path = self._shm_path(object_id)
        self._unlink_paths(self._admit(size, wait_s, lambda: self._claim(size, path)))
        wrong = ""
        try:
            wrong = damage(entry.spill_path, size)
            if not wrong:
                copy_file(entry.spill_path, path, size)
                if checksum(path, size) != entry.spill_crc:
                    wrong = "corrupted (its bytes changed on disk since they were written)"
        except BaseException:
            if self._undo_restore(entry):  # its spill file went with it
                raise KeyError(f"object {object_id.hex()} was freed while it was restored")
            wrong = damage(entry.spill_path, size)  # changed while it was copied
            if not wrong:
                raise
        if wrong:
            if self._undo_restore(entry):
                raise KeyError(f"object {object_id.hex()} was freed while it was restored")
            # The bytes are gone for good here: drop the object, so that a rebuild of it (by
            # its owner, from lineage) can store it again under its id; readers until then
            # hear why.
            self.delete([object_id])
            why = (
                f"Object {object_id.hex()} is lost: this node's spill file {entry.spill_path} "
                f"is {wrong}."
            )
            with self._lock:
                self._lost[object_id] = why
            raise ObjectLostError(object_id.hex(), why)
        with self._lock:
            self._used -= size
            self._reserved -= size
            restored = self._entries.get(object_id) is entry
            if restored:
                self._entries[object_id] = replace(entry, in_memory=True)
                self._used += size
                self._resident[object_id] = None  # the most recently used
                self._restored_at[object_id] = time.monotonic()
                self._spilled_now -= 1
                self._spilled_now_bytes -= size
                self._restored_total += 1
                self._restored_bytes_total += size
            else:
                self._unlink(object_id)  # freed while it was copied
            self._cond.notify_all()
        if not restored:
            raise KeyError(f"object {object_id.hex()} was freed while it was restored")
        RECORDER.inc("freight_object_restored_total")
        RECORDER.inc("freight_object_restored_bytes_total", (), size)
        return path

    def _undo_restore(self, entry: ObjectEntry) -> bool:
        """Give back the room a failed restore of ``entry`` took and remove its partial segment;
        return True when the object was freed meanwhile."""
        with self._lock:
            self._used -= entry.size
            self._reserved -= entry.size
            self._unlink(entry.object_id)
            freed = self._entries.get(entry.object_id) is not entry
            self._cond.notify_all()
        return freed

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
        """Rename a deleted (or spilled) object's file to a new pool name (under the lock, so a
        new reservation or a restore of the same id cannot lose its file); None when there is
        nothing to pool.

        After the rename no new reader can open the file by the object's path.
        """
        pool_path = os.path.join(self.directory, f"pool-{next(self._pool_seq)}")
        try:
            os.rename(self._shm_path(entry.object_id), pool_path)
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

    def _full_message(self, size: int, error: OSError | None = None) -> str:
        holders: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for entry in self._entries.values():
            if not entry.in_memory:
                continue  # spilled objects use disk, not the store
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
        if self.spill is not None and size > self.capacity:
            lines.append(
                f"The object is larger than the whole store ({format_bytes(self.capacity)}), so "
                "spilling cannot make room for it: split it into smaller objects, or give the "
                "node a larger store."
            )
        elif self.spill is not None:
            lines.append(
                f"Spilling could not make room: {self._spilled_now} object"
                f"{'' if self._spilled_now == 1 else 's'} "
                f"({format_bytes(self._spilled_now_bytes)}) are spilled to "
                f"{self.spill.directory} already, and what is left in memory is being written "
                "or restored, or is mapped by readers (a value read with get() keeps its object "
                "in memory while it lives)."
            )
            if error is not None:
                lines.append(
                    f"{self._spill_error}; free disk space there or set "
                    "FREIGHT_OBJECT_SPILLING_DIR to a folder with more room."
                )
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
            if entry.owner:  # a primary copy: it can be spilled from now on
                self._resident[object_id] = None
            self._cond.notify_all()

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
            self._cond.notify_all()
        self._unlink(object_id)

    def delete(self, object_ids: Any) -> int:
        """Delete objects (sealed, reserved or spilled) and unlink (or pool) their files, spill
        files included; return the bytes freed in memory.

        Ids that are not in the store are ignored, and so are files already gone.
        """
        removed: list[ObjectEntry] = []
        unlink: list[bytes] = []
        taken: list[tuple[str, int]] = []
        spill_files: list[str] = []
        with self._lock:
            for object_id in object_ids:
                self._lost.pop(object_id, None)
                entry = self._entries.pop(object_id, None)
                if entry is None:
                    continue
                if entry.spill_path:
                    spill_files.append(entry.spill_path)
                    self._disk_bytes -= entry.size
                if not entry.in_memory:
                    # On disk only (a restore in progress finds it gone and cleans up).
                    self._spilled_now -= 1
                    self._spilled_now_bytes -= entry.size
                    self._objects_deleted += 1
                    self._bytes_deleted += entry.size
                    continue
                self._resident.pop(object_id, None)
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
            if removed:
                self._cond.notify_all()
        SpillDir.remove(spill_files)
        for object_id in unlink:
            self._unlink(object_id)
        for pool_path, size in taken:
            self._recycle(pool_path, size)
        return sum(entry.size for entry in removed)

    def _unlink(self, object_id: bytes) -> None:
        try:
            os.unlink(self._shm_path(object_id))
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
                spilled_bytes=self._spilled_now_bytes,
                num_spilled=self._spilled_now,
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
                "num_spilled": stats.num_spilled,
                "spilled_bytes": stats.spilled_bytes,
                "spill_disk_bytes": self._disk_bytes,
                "objects_spilled_total": self._spilled_total,
                "bytes_spilled_total": self._spilled_bytes_total,
                "objects_restored_total": self._restored_total,
                "bytes_restored_total": self._restored_bytes_total,
                "spill_errors_total": self._spill_errors,
            }

    def destroy(self) -> None:
        """Unlink every segment and remove the directory (files left by others included), and
        the spill folder with every spill file."""
        with self._lock:
            self._entries.clear()
            self._used = 0
            self._reserved = 0
            self._pool.clear()
            self._pooled = 0
            self._resident.clear()
            self._spilled_now = self._spilled_now_bytes = self._disk_bytes = 0
            self._cond.notify_all()
        if self.spill is not None:
            self.spill.destroy()
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
