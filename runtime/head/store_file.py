"""The control store's files: made private, checked before a head trusts them, locked by it.

A control store is a cluster's memory; a head never discards one it cannot read. Before SQLite
opens the file, :func:`check` reads (and changes nothing):

- an empty file, or one that is not SQLite: refused (SQLite would make a new store of it);
- the write-ahead log a head that died left (``-wal``): SQLite replays it up to the first frame
  whose checksum fails and silently drops the rest, so a damaged or cut log would lose committed
  writes. The log is checked frame by frame as SQLite's recovery does, against the count of
  committed frames that the shared-memory index (``-shm``) recorded;

and after it opens, SQLite's ``quick_check``. Every refusal is a :class:`ControlStoreError`
naming the file, what is wrong and how to recover. A new store is made only where there is no
file at all, atomically (a finished empty store is renamed into place), mode 0600 like its log.
"""

from __future__ import annotations

import array
import fcntl
import os
import sqlite3
import struct
import sys

from freight.util.private_files import check_owned, make_private_dir

SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's files next to the database
_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums over little-, big-endian words
_WAL_HEADER = 32
_FRAME_HEADER = 24
_SHM_HEADER = 48  # one copy of the index header; SQLite writes it twice, back to back


class ControlStoreError(RuntimeError):
    """The control store cannot be used as it is; the message says why and what to do."""


def prepare(path: str, schema: str) -> None:
    """Make ``path``'s folder private (0700) and its files this user's and mode 0600; make a
    new, empty store when there is no file at all. Check the store with :func:`check`."""
    folder = os.path.dirname(path) or "."
    make_private_dir(folder, "the control store's folder")
    for name in (path, *(path + s for s in SIDE_FILES)):
        if os.path.lexists(name):
            check_owned(name, "the control store file")
            os.chmod(name, 0o600)  # ours already; an older freight made it 0644
    if not os.path.lexists(path):
        orphans = [path + s for s in ("-wal", "-journal") if os.path.exists(path + s)]
        if orphans:
            raise ControlStoreError(
                f"the control store {path} is missing but its log {orphans[0]} is there: the "
                "database was moved or deleted. Put it back (or restore it from a backup); to "
                f"start a new cluster instead, move {orphans[0]} aside."
            )
        _create(path, schema)


def check(path: str) -> None:
    """Raise :class:`ControlStoreError` if the store at ``path`` is empty, not SQLite, or its
    log would lose committed writes. Reads only."""
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if not head:
        raise ControlStoreError(
            f"the control store {path} is empty (0 bytes), so it holds no cluster, and freight "
            "does not replace a control store it cannot read. Restore it from a backup; if the "
            f"cluster it held is gone for good, delete {path} (and any {path}-wal, -shm) to "
            "start a new one. Nothing was changed."
        )
    if head != _SQLITE_MAGIC:
        raise damaged(path, "it is not an SQLite database (its first bytes are wrong)")
    problem = wal_problem(path)
    if problem:
        raise ControlStoreError(
            f"the control store's log {path}-wal is damaged: {problem}. SQLite would drop those "
            "writes and carry on without them. Nothing was changed. Restore the store and its "
            f"-wal and -shm files from a backup; or, to carry on without the lost writes, move "
            f"{path}-wal and {path}-shm aside and start again."
        )


def damaged(path: str, detail: str) -> ControlStoreError:
    """The error for a store SQLite cannot read, with the ways out."""
    return ControlStoreError(
        f"the control store {path} is damaged: {detail}. Nothing was changed. Restore it from a "
        f"backup, or salvage what is left (`sqlite3 {path} .recover | sqlite3 "
        f"{path}.recovered`, then start on {path}.recovered); to start a new cluster instead, "
        f"move {path} and its -wal and -shm files aside."
    )


def lock(path: str) -> int:
    """Hold ``path`` for this head (an exclusive ``flock``, released when the returned fd is
    closed or the process dies): two heads on one store would overwrite each other's writes."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ControlStoreError(
            f"the control store {path} is in use by another running head; stop that one "
            "first (`freight stop`), or give this head a --storage of its own."
        ) from None
    return fd


def _create(path: str, schema: str) -> None:
    tmp = f"{path}.{os.getpid()}.new"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # recorded in the file
            db.executescript(schema)
        finally:
            db.close()  # checkpoints the log into the file and removes it
        os.replace(tmp, path)
    finally:
        for name in (tmp, *(tmp + s for s in SIDE_FILES)):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass


def wal_problem(path: str) -> str:
    """What is wrong with the write-ahead log of the store at ``path`` ("" if nothing): frames
    SQLite's recovery would drop although they were committed."""
    try:
        with open(path + "-wal", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return ""
    if len(data) < _WAL_HEADER:
        return "" if not data else f"it is {len(data)} bytes, shorter than its header"
    magic, _version, page_size, _seq, _salt1, _salt2, c1, c2 = struct.unpack(">8I", data[:32])
    if magic not in _WAL_MAGIC:
        return "it is not an SQLite write-ahead log (its first bytes are wrong)"
    big = bool(magic & 1)
    header_ok = _checksum(data[:24], big, (0, 0)) == (c1, c2)
    salts = data[16:24]
    frame = _FRAME_HEADER + page_size
    recovered, committed, broken = 0, 0, 0  # frames SQLite keeps; seen committed; first bad
    seed = (c1, c2)
    n = (len(data) - _WAL_HEADER) // frame if header_ok and page_size else 0
    for i in range(n):
        at = _WAL_HEADER + i * frame
        hdr = data[at : at + _FRAME_HEADER]
        pgno, size_after, frame_salts, f1, f2 = struct.unpack(">II8sII", hdr)
        if frame_salts != salts or pgno == 0:
            break  # the end of this log: what follows is from before SQLite last reset it
        ok = _checksum(hdr[:8] + data[at + _FRAME_HEADER : at + frame], big, seed) == (f1, f2)
        seed = (f1, f2)
        if not ok and not broken:
            broken = i + 1
        if size_after and ok:
            committed = i + 1
            if not broken:
                recovered = i + 1
    expected = max(committed, _index_frames(path, salts))
    if expected > recovered:
        where = (
            "its header fails its checksum"
            if not header_ok
            else f"frame {broken} fails its checksum"
            if broken
            else "it is cut short"
        )
        return (
            f"{where}, so SQLite would keep {recovered} of its {expected} committed frames "
            f"({len(data)} bytes, {page_size}-byte pages)"
        )
    return ""


def _index_frames(path: str, salts: bytes) -> int:
    """The committed frame count the ``-shm`` index recorded for the log with ``salts`` (0 when
    the index is missing, unfinished or about another log)."""
    try:
        with open(path + "-shm", "rb") as f:
            raw = f.read(2 * _SHM_HEADER)
    except FileNotFoundError:
        return 0
    if len(raw) < 2 * _SHM_HEADER or raw[:_SHM_HEADER] != raw[_SHM_HEADER:]:
        return 0  # a header torn mid-update: SQLite rebuilds the index from the log
    is_init = raw[12]
    (mx_frame,) = struct.unpack("=I", raw[16:20])  # the index is in the machine's byte order
    return mx_frame if is_init and raw[32:40] == salts else 0


def _checksum(data: bytes, big: bool, seed: tuple[int, int]) -> tuple[int, int]:
    """SQLite's write-ahead-log checksum of ``data`` (a multiple of 8 bytes) from ``seed``."""
    words = array.array("I", data)
    if big != (sys.byteorder == "big"):
        words.byteswap()
    s1, s2 = seed
    it = iter(words)
    for a in it:
        s1 = (s1 + a + s2) & 0xFFFFFFFF
        s2 = (s2 + next(it) + s1) & 0xFFFFFFFF
    return s1, s2
