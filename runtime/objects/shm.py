"""Client side of a node's shared-memory object store: write and map object segments.

Each object above the inline limit is one file ``<shm_root>/freight-<session>/<object id hex>``
holding the packed layout of :mod:`freight.objects.serialization`. Readers map it read-only, so
numpy arrays and other out-of-band buffers come back as zero-copy, read-only views. A mapping
outlives the file: when the object is freed and its file unlinked, values already read stay
valid until the last view of them is dropped.

Writers use ``pwrite`` rather than copying through a writable mapping. On tmpfs this is about
2.5x faster (the kernel allocates the pages without a page fault each and without zeroing
them first), and a full tmpfs then fails the write with ``ENOSPC`` instead of killing the
writer with ``SIGBUS`` on first touch of a page it could not back.

The path a writer gets from its agent may already hold a file: a freed object's segment that
the store recycled (see :mod:`freight.objects.store`). Writing over its existing pages is about
twice as fast again as filling new ones, which the kernel must allocate and zero.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections import OrderedDict
from typing import Any

from .serialization import ALIGNMENT, SerializedObject, packed_pieces, unpack

__all__ = ["SegmentCache", "read_segment", "segment_dir", "segment_path", "write_segment"]


def segment_dir(shm_root: str, session_name: str) -> str:
    """The folder of a session's segments: ``<shm_root>/freight-<session_name>``."""
    return os.path.join(shm_root, f"freight-{session_name}")


def segment_path(directory: str, object_id: bytes) -> str:
    """The file of one object in a segment folder: ``<directory>/<object id hex>``."""
    return os.path.join(directory, object_id.hex())


_ZEROS = bytes(ALIGNMENT)


def _pwrite_all(fd: int, piece: Any, offset: int) -> int:
    """Write all of ``piece`` at ``offset``; return its length."""
    view = memoryview(piece)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    total = view.nbytes
    while view.nbytes:
        # Linux writes at most ~2 GiB per call; loop over short writes.
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, f"pwrite wrote {written} bytes")
        view = view[written:]
        offset += written
    return total


def write_segment(path: str, obj: SerializedObject) -> int:
    """Write ``obj`` packed into the segment file ``path``; return its size in bytes.

    The file is created, or, when the store handed out a recycled segment, overwritten and cut
    or grown to size (the bytes between pieces are zeroed, so nothing of the previous object
    remains). On any failure (for example ``ENOSPC`` when the tmpfs is full) the partial file
    is removed and the error re-raised.
    """
    size = obj.total_size
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        old_size = os.fstat(fd).st_size
        if old_size != size:
            # Size first so the padding of a new file reads as zeros without being written.
            os.ftruncate(fd, size)
        end = 0
        for offset, piece in packed_pieces(obj):
            if old_size and offset > end:
                _pwrite_all(fd, _ZEROS[: offset - end], end)
            end = offset + _pwrite_all(fd, piece, offset)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)
    return size


def _map_segment(path: str) -> mmap.mmap:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT,
            "object segment not found (the object was freed, or is not on this node)",
            path,
        ) from None
    try:
        if os.fstat(fd).st_size == 0:
            raise ValueError(f"object segment {path} is empty (it was never written)")
        return mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        # The mapping keeps the file's pages; the descriptor is not needed any more.
        os.close(fd)


def read_segment(path: str) -> Any:
    """Map the segment file ``path`` read-only and return its value, zero-copy.

    Out-of-band buffers (numpy arrays ...) are read-only views of the mapping, which stays
    mapped while any of them lives, even after the file is unlinked.
    """
    return unpack(memoryview(_map_segment(path)))


class SegmentCache:
    """Keeps the mappings of recently read segments so that reading one again does not re-map.

    A cached mapping pins its segment's memory even after the file is unlinked, so evict a
    segment when its object is freed; the cache is bounded by ``max_entries`` and
    ``max_bytes`` (least recently used first out). Thread-safe.
    """

    def __init__(self, max_entries: int = 64, max_bytes: int = 1 << 30) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("SegmentCache limits must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._views: OrderedDict[str, memoryview] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get(self, path: str) -> Any:
        """Return the value of the segment ``path``, mapping it only when not cached."""
        with self._lock:
            view = self._views.get(path)
            if view is not None:
                self._views.move_to_end(path)
                self._hits += 1
        if view is None:
            view = memoryview(_map_segment(path))
            with self._lock:
                self._misses += 1
                if path not in self._views and view.nbytes <= self.max_bytes:
                    self._views[path] = view
                    self._bytes += view.nbytes
                    self._shrink()
        return unpack(view)

    def _shrink(self) -> None:
        while self._views and (len(self._views) > self.max_entries or self._bytes > self.max_bytes):
            _, old = self._views.popitem(last=False)
            self._bytes -= old.nbytes
            self._evictions += 1

    def evict(self, path: str) -> bool:
        """Drop the cached mapping of ``path`` (values already read stay valid)."""
        with self._lock:
            view = self._views.pop(path, None)
            if view is None:
                return False
            self._bytes -= view.nbytes
            self._evictions += 1
            return True

    def clear(self) -> None:
        """Drop every cached mapping."""
        with self._lock:
            self._evictions += len(self._views)
            self._views.clear()
            self._bytes = 0

    def __contains__(self, path: object) -> bool:
        with self._lock:
            return path in self._views

    def __len__(self) -> int:
        with self._lock:
            return len(self._views)

    def statistics(self) -> dict[str, int]:
        """A snapshot for telemetry: entries, mapped bytes, hits, misses, evictions."""
        with self._lock:
            return {
                "entries": len(self._views),
                "bytes": self._bytes,
                "hits": self._hits,
                "misses": self._misses,
                "evictions": self._evictions,
            }
