"""Shared-memory segments: write in one process, map zero-copy in another."""

from __future__ import annotations

import json
import mmap
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from freight.objects.serialization import ALIGNMENT, serialize
from freight.objects.shm import (
    SegmentCache,
    read_segment,
    segment_dir,
    segment_path,
    write_segment,
)

SHM_ROOT = "/dev/shm" if os.path.isdir("/dev/shm") else None


@pytest.fixture
def seg_dir(tmp_path: Path) -> Any:
    if SHM_ROOT is None:
        yield str(tmp_path)
        return
    directory = segment_dir(SHM_ROOT, f"test-{os.getpid()}-{tmp_path.name}")
    os.makedirs(directory, mode=0o700)
    yield directory
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)


def mapping_of(arr: np.ndarray) -> Any:
    """The object at the bottom of an array's base chain (the exporter of its memory)."""
    base: Any = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def test_segment_dir_and_path() -> None:
    assert segment_dir("/dev/shm", "s1") == "/dev/shm/freight-s1"
    assert segment_path("/dev/shm/freight-s1", b"\x01\xab") == "/dev/shm/freight-s1/01ab"


def test_write_creates_private_file_of_total_size(seg_dir: str) -> None:
    obj = serialize({"a": np.arange(1000), "b": "x" * 100})
    path = segment_path(seg_dir, b"\x01")
    assert write_segment(path, obj) == obj.total_size
    st = os.stat(path)
    assert st.st_size == obj.total_size
    assert stat.S_IMODE(st.st_mode) == 0o600


@pytest.mark.parametrize("old_elems", [10, 200_000])  # the old file smaller / larger
def test_write_over_a_recycled_file_leaves_nothing_of_the_old_one(
    seg_dir: str, old_elems: int
) -> None:
    path = segment_path(seg_dir, b"\x02")
    old = np.full(old_elems, 0xFF, dtype=np.uint8)
    write_segment(path, serialize(["o" * 33, old, old]))
    new = serialize(["n", np.arange(50_000, dtype=np.int64), np.arange(7, dtype=np.uint8)])
    assert write_segment(path, new) == new.total_size
    with open(path, "rb") as f:
        raw = f.read()
    fresh = segment_path(seg_dir, b"\x04")
    write_segment(fresh, new)
    with open(fresh, "rb") as f:
        assert raw == f.read()  # byte for byte what a fresh file holds, padding included
    text, arr, small = read_segment(path)
    assert text == "n"
    assert np.array_equal(arr, np.arange(50_000))
    assert small.tolist() == list(range(7))


def test_read_in_same_process_is_zero_copy_and_survives_unlink(seg_dir: str) -> None:
    path = segment_path(seg_dir, b"\x03")
    write_segment(path, serialize([np.arange(100_000, dtype=np.float64), "tail"]))
    arr, tail = read_segment(path)
    assert tail == "tail"
    assert not arr.flags.writeable
    assert isinstance(mapping_of(arr), mmap.mmap)
    assert arr.ctypes.data % ALIGNMENT == 0
    os.unlink(path)
    assert arr.sum() == np.arange(100_000, dtype=np.float64).sum()


def test_read_missing_segment_raises_file_not_found(seg_dir: str) -> None:
    path = segment_path(seg_dir, b"\x04")
    with pytest.raises(FileNotFoundError, match="object segment not found") as info:
        read_segment(path)
    assert info.value.filename == path


def test_read_empty_or_corrupt_segment_raises_value_error(seg_dir: str) -> None:
    empty = segment_path(seg_dir, b"\x05")
    open(empty, "wb").close()
    with pytest.raises(ValueError, match="empty"):
        read_segment(empty)
    junk = segment_path(seg_dir, b"\x06")
    with open(junk, "wb") as f:
        f.write(b"not a freight object")
    with pytest.raises(ValueError, match="malformed"):
        read_segment(junk)


_READER = textwrap.dedent(
    """
    import json, mmap, os, sys
    import numpy as np
    from freight.objects.shm import read_segment

    path = sys.argv[1]
    arr = read_segment(path)
    base = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    exporter = base.obj if isinstance(base, memoryview) else base
    before = float(arr[::4096].sum())
    os.unlink(path)
    expected = np.arange(arr.size, dtype=arr.dtype)
    print(json.dumps({
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "writeable": bool(arr.flags.writeable),
        "mmap_backed": isinstance(exporter, mmap.mmap),
        "aligned": arr.ctypes.data % 64 == 0,
        "equal_after_unlink": bool(np.array_equal(arr, expected)),
        "sample_stable": before == float(arr[::4096].sum()),
        "file_gone": not os.path.exists(path),
    }))
    """
)


def test_other_process_reads_10_mib_array_zero_copy_read_only(seg_dir: str) -> None:
    arr = np.arange(10 * 1024 * 1024 // 8, dtype=np.int64)
    path = segment_path(seg_dir, b"\x07" * 20)
    write_segment(path, serialize(arr))
    del arr
    proc = subprocess.run(
        [sys.executable, "-c", _READER, path],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(proc.stdout)
    assert report == {
        "shape": [1310720],
        "dtype": "int64",
        "writeable": False,
        "mmap_backed": True,
        "aligned": True,
        "equal_after_unlink": True,
        "sample_stable": True,
        "file_gone": True,
    }


def test_failed_write_removes_partial_file(seg_dir: str) -> None:
    # A file-size limit makes the write fail part-way, like a full tmpfs (ENOSPC) would.
    path = segment_path(seg_dir, b"\x08")
    script = textwrap.dedent(
        f"""
        import errno, os, resource, signal
        import numpy as np
        from freight.objects.serialization import serialize
        from freight.objects.shm import write_segment

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            write_segment({path!r}, serialize(np.zeros(1 << 20)))
        except OSError as exc:
            assert exc.errno == errno.EFBIG, exc
            print("failed", os.path.exists({path!r}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.split() == ["failed", "False"]


# --- SegmentCache ---------------------------------------------------------------------------


def write_array(seg_dir: str, key: int, n: int = 1000) -> str:
    path = segment_path(seg_dir, key.to_bytes(4, "big"))
    write_segment(path, serialize(np.full(n, key, dtype=np.int64)))
    return path


def test_cache_maps_a_segment_once(seg_dir: str) -> None:
    cache = SegmentCache()
    path = write_array(seg_dir, 1)
    first = cache.get(path)
    second = cache.get(path)
    assert np.shares_memory(first, second)
    assert not second.flags.writeable
    assert path in cache
    assert cache.statistics() == {
        "entries": 1,
        "bytes": os.path.getsize(path),
        "hits": 1,
        "misses": 1,
        "evictions": 0,
    }


def test_cache_evict_remaps_and_keeps_old_values_valid(seg_dir: str) -> None:
    cache = SegmentCache()
    path = write_array(seg_dir, 2)
    old = cache.get(path)
    assert cache.evict(path) is True
    assert cache.evict(path) is False
    assert path not in cache
    os.unlink(path)
    assert int(old.sum()) == 2 * 1000
    with pytest.raises(FileNotFoundError):
        cache.get(path)


def test_cache_is_bounded_lru(seg_dir: str) -> None:
    cache = SegmentCache(max_entries=2)
    paths = [write_array(seg_dir, k) for k in (1, 2, 3)]
    cache.get(paths[0])
    cache.get(paths[1])
    cache.get(paths[0])  # now most recently used
    cache.get(paths[2])
    assert paths[0] in cache
    assert paths[1] not in cache
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0
    assert cache.statistics()["evictions"] == 3


def test_cache_does_not_keep_segments_larger_than_its_byte_limit(seg_dir: str) -> None:
    small = write_array(seg_dir, 1, n=10)
    big = write_array(seg_dir, 2, n=100_000)
    cache = SegmentCache(max_bytes=os.path.getsize(big) - 1)
    cache.get(small)
    assert int(cache.get(big)[0]) == 2
    assert big not in cache
    assert small in cache


def test_cache_rejects_negative_limits() -> None:
    with pytest.raises(ValueError):
        SegmentCache(max_entries=-1)
