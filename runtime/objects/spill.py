"""The disk side of object spilling: one plain file per spilled object.

When a node's object store passes its spilling threshold, the store
(:mod:`freight.objects.store`) copies sealed primary objects from shared memory into a folder
on disk, here, and takes them out of memory; a reader that finds an object gone asks its agent,
which copies it back (``docs/decisions/0021-object-spilling.md``). This module only moves bytes
and names files; which objects go, and when, is the store's business.

A spill file is written under a temporary name and renamed into place, so a file under an
object's name is always complete. Nothing is fsynced: spilled objects live no longer than the
node's shared memory, which a crash loses anyway. Each write returns the CRC-32 of the object's
bytes (:func:`checksum`; zlib's runs at about 1.7 GiB/s here, 36 ms for 64 MiB, against 135 ms
for BLAKE2b), which the store keeps and checks when it reads the file back: a file cut short,
removed or changed on disk is a lost object that says so, never wrong data.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
import zlib
from collections.abc import Iterable

from ..config import settings

__all__ = ["SpillDir", "checksum", "copy_file", "damage", "spill_directory"]

_COPY_CHUNK = 8 << 20  # the read/write fallback's unit; sendfile takes what it can


def spill_directory(session_dir: str, store_directory: str) -> str:
    """The folder a node spills to: ``FREIGHT_OBJECT_SPILLING_DIR/<store folder name>`` when
    set (one folder per session and node, so several can share a disk), else
    ``<session_dir>/spill``."""
    root = settings.object_spilling_dir
    if root:
        return os.path.join(root, os.path.basename(os.path.normpath(store_directory)))
    return os.path.join(session_dir, "spill")


def copy_file(src: str, dst: str, size: int) -> None:
    """Copy the first ``size`` bytes of ``src`` into ``dst`` (created if missing, not
    truncated first, so the pages of a recycled shared-memory file are written over, then cut
    to ``size``). ``OSError`` when ``src`` is shorter or either side fails."""
    src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _copy_fds(src_fd, dst_fd, size)
            if os.fstat(dst_fd).st_size != size:
                os.ftruncate(dst_fd, size)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def checksum(path: str, size: int) -> int:
    """The CRC-32 of the first ``size`` bytes of ``path`` (read through a mapping, so a
    segment in shared memory is not copied)."""
    if size == 0:
        return 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as view:
        return zlib.crc32(view)


def damage(path: str, size: int) -> str:
    """What is wrong with the spill file ``path`` of a ``size``-byte object before it is read
    back: "missing", "truncated (...)", or "" when it is all there."""
    try:
        have = os.stat(path).st_size
    except FileNotFoundError:
        return "missing (was the spill folder cleaned up while the node ran?)"
    if have < size:
        return f"truncated ({have} of its {size} bytes are left)"
    return ""


def _copy_fds(src_fd: int, dst_fd: int, size: int) -> None:
    offset = 0
    use_sendfile = True
    while offset < size:
        if use_sendfile:
            os.lseek(dst_fd, offset, os.SEEK_SET)
            try:
                sent = os.sendfile(dst_fd, src_fd, offset, size - offset)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                use_sendfile = False  # a file system sendfile cannot write to
                continue
        else:
            data = os.pread(src_fd, min(_COPY_CHUNK, size - offset), offset)
            sent = os.pwrite(dst_fd, data, offset) if data else 0
        if sent <= 0:
            raise OSError(errno.EIO, f"the copy ended at {offset} of {size} bytes")
        offset += sent


class SpillDir:
    """A folder of spill files, one per object, named by the object id (hex).

    The folder is made (mode 0700) on the first spill, so a node that never spills leaves
    nothing on disk. Thread-safe: every method works on its own files.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._made = False
        self._closed = False
        self._lock = threading.Lock()

    def path(self, object_id: bytes) -> str:
        """The spill file of ``object_id``."""
        return os.path.join(self.directory, object_id.hex())

    def write(self, object_id: bytes, src: str, size: int) -> tuple[str, int]:
        """Copy ``size`` bytes of the segment ``src`` into a spill file; return its path and
        the :func:`checksum` of the bytes, to check them against when they are read back.

        ``OSError`` (``ENOSPC`` when the disk is full) leaves no file behind.
        """
        self._make()
        path = self.path(object_id)
        tmp = f"{path}.{threading.get_ident()}.tmp"
        try:
            copy_file(src, tmp, size)
            crc = checksum(src, size)  # the segment is sealed: these are the bytes written
            os.rename(tmp, path)
        except BaseException:
            self.remove([tmp])
            raise
        return path, crc

    def _make(self) -> None:
        with self._lock:
            if self._closed:
                raise OSError(errno.ESHUTDOWN, "the object store is shut down", self.directory)
            if not self._made:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                self._made = True

    @staticmethod
    def remove(paths: Iterable[str]) -> None:
        """Unlink spill files; files already gone are ignored."""
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def disk_free(self) -> int:
        """Bytes free on the spill folder's file system (0 when it cannot be read)."""
        probe = self.directory
        while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        try:
            st = os.statvfs(probe)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def destroy(self) -> None:
        """Remove every spill file and the folder; later writes fail."""
        with self._lock:
            self._closed = True
        try:
            names = os.listdir(self.directory)
        except OSError:
            return  # never made (or not a folder: nothing of ours is there)
        self.remove(os.path.join(self.directory, name) for name in names)
        try:
            os.rmdir(self.directory)
        except OSError:
            pass  # a file someone else put there, or a write that raced the shutdown
