"""Segment reuse: freed segment files are pooled and handed to later objects of similar size."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from freight.exceptions import ObjectStoreFullError
from freight.objects.serialization import serialize
from freight.objects.shm import read_segment, segment_dir, write_segment
from freight.objects.store import POOL_MAX_FILES, POOL_MIN_SIZE, ObjectStore, take_lease
from freight.testing import wait_for_condition

MiB = 1024 * 1024
SHM_ROOT = "/dev/shm"
F_SETLEASE, F_GETLEASE = 1024, 1025  # Linux fcntl commands

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_ROOT), reason="needs a tmpfs /dev/shm")


@pytest.fixture
def make_store(tmp_path: Any) -> Iterator[Any]:
    stores: list[ObjectStore] = []

    def make(capacity: int = 100 * MiB, pool_bytes: int | None = 50 * MiB) -> ObjectStore:
        directory = segment_dir(SHM_ROOT, f"test-pool-{os.getpid()}-{tmp_path.name}-{len(stores)}")
        store = ObjectStore(directory, capacity, pool_bytes=pool_bytes)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.destroy()


def oid(n: int) -> bytes:
    return n.to_bytes(20, "big")


def array(n: int, mib: float) -> np.ndarray:
    """A recognisable int64 array of about ``mib`` MiB: n at every position plus the index."""
    count = int(mib * MiB) // 8
    return np.arange(count, dtype=np.int64) + n * 1_000_000_007


def put(store: ObjectStore, n: int, value: Any, owner: str = "owner") -> str:
    obj = serialize(value)
    path = store.reserve(oid(n), obj.total_size, owner)
    write_segment(path, obj)
    store.seal(oid(n))
    return path


def files(store: ObjectStore) -> list[str]:
    return sorted(os.listdir(store.directory))


def pool_files(store: ObjectStore) -> list[str]:
    return [name for name in files(store) if name.startswith("pool-")]


def test_a_freed_segment_is_reused_and_the_new_value_reads_back_intact(make_store: Any) -> None:
    store = make_store()
    put(store, 1, array(1, 4))
    size = store.info(oid(1)).size  # type: ignore[union-attr]
    store.delete([oid(1)])
    assert files(store) == pool_files(store) and len(pool_files(store)) == 1
    assert store.stats().pooled_bytes == size
    assert store.stats().used_bytes == 0

    path = put(store, 2, array(2, 4))
    assert pool_files(store) == []
    stats = store.statistics()
    assert stats["segments_reused_total"] == 1
    assert stats["pool_bytes"] == 0
    assert stats["used_bytes"] == size
    assert np.array_equal(read_segment(path), array(2, 4))


def test_a_segment_still_mapped_by_a_reader_is_never_reused(make_store: Any) -> None:
    store = make_store()
    path = put(store, 1, array(1, 4))
    held = read_segment(path)  # a zero-copy view, as get() returns it
    store.delete([oid(1)])
    assert files(store) == []  # unlinked, not pooled
    assert store.statistics()["pool_refused_in_use_total"] == 1
    put(store, 2, array(2, 4))
    put(store, 3, array(3, 4))
    assert np.array_equal(held, array(1, 4))


_HOLDER = textwrap.dedent(
    """
    import sys
    from freight.objects.shm import read_segment
    arr = read_segment(sys.argv[1])
    print(int(arr[0]), flush=True)
    sys.stdin.readline()
    print(int(arr[0]), int(arr[-1]), flush=True)
    """
)


def test_a_segment_mapped_by_another_process_is_never_reused(make_store: Any) -> None:
    store = make_store()
    path = put(store, 1, array(1, 4))
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as reader:
        assert reader.stdout is not None and reader.stdin is not None
        try:
            first = int(reader.stdout.readline())
            store.delete([oid(1)])
            assert pool_files(store) == []
            put(store, 2, array(2, 4))
            reader.stdin.write("\n")
            reader.stdin.flush()
            again, last = map(int, reader.stdout.readline().split())
        finally:
            reader.kill()
    expected = array(1, 4)
    assert (first, again, last) == (int(expected[0]), int(expected[0]), int(expected[-1]))


def test_reuse_takes_the_best_fit_and_cuts_it_to_size(make_store: Any) -> None:
    store = make_store()
    put(store, 1, array(1, 2))
    put(store, 2, array(2, 8))
    store.delete([oid(1), oid(2)])
    assert len(pool_files(store)) == 2
    path = put(store, 3, array(3, 7))  # the 8 MiB file fits best; the 2 MiB one is too small
    assert os.path.getsize(path) == serialize(array(3, 7)).total_size
    assert np.array_equal(read_segment(path), array(3, 7))
    assert store.statistics()["segments_reused_total"] == 1
    assert len(pool_files(store)) == 1
    path = put(store, 4, array(4, 40))  # more than twice the pooled file: a new file
    assert store.statistics()["segments_reused_total"] == 1
    assert np.array_equal(read_segment(path), array(4, 40))


def test_a_smaller_segment_is_grown_and_holds_nothing_of_its_past(make_store: Any) -> None:
    store = make_store()
    put(store, 1, [b"\xff" * 100, np.full(3 * MiB, 0xEE, dtype=np.uint8)])
    store.delete([oid(1)])
    value = ["x", np.arange(4 * MiB // 8, dtype=np.int64)]
    path = put(store, 2, value)
    assert store.statistics()["segments_reused_total"] == 1
    text, arr = read_segment(path)
    assert text == "x" and np.array_equal(arr, value[1])
    fresh = os.path.join(store.directory, "fresh")
    write_segment(fresh, serialize(value))
    with open(path, "rb") as a, open(fresh, "rb") as b:
        assert a.read() == b.read()


def test_pooled_bytes_give_way_to_objects_and_never_cause_a_full_error(make_store: Any) -> None:
    store = make_store(capacity=40 * MiB, pool_bytes=40 * MiB)
    for n in range(3):
        put(store, n, array(n, 10))
    store.delete([oid(0), oid(1), oid(2)])
    assert store.stats().pooled_bytes > 25 * MiB
    # 35 MiB fits the capacity only if the pool gives its room back.
    store.reserve(oid(9), 35 * MiB, "big")
    stats = store.stats()
    assert stats.used_bytes + stats.pooled_bytes <= stats.capacity
    with pytest.raises(ObjectStoreFullError):
        store.reserve(oid(10), 10 * MiB, "too much")
    assert store.statistics()["full_errors_total"] == 1


def test_used_plus_pooled_never_exceeds_capacity(make_store: Any) -> None:
    store = make_store(capacity=64 * MiB, pool_bytes=64 * MiB)
    rng = np.random.default_rng(7)
    live: list[int] = []
    for n in range(60):
        if live and (len(live) > 4 or rng.random() < 0.4):
            victim = live.pop(int(rng.integers(len(live))))
            store.delete([oid(victim)])
        try:
            put(store, n, array(n, float(rng.uniform(1, 12))))
            live.append(n)
        except ObjectStoreFullError:
            pass
        stats = store.stats()
        on_disk = sum(os.path.getsize(os.path.join(store.directory, f)) for f in files(store))
        assert stats.used_bytes + stats.pooled_bytes <= stats.capacity
        assert on_disk <= stats.used_bytes + stats.pooled_bytes
    assert store.statistics()["segments_reused_total"] > 0
    for n in live:
        value = read_segment(store.path(oid(n)))
        assert np.array_equal(value, array(n, value.nbytes / MiB))


def test_the_pool_is_bounded_in_bytes_and_files(make_store: Any) -> None:
    store = make_store(capacity=500 * MiB, pool_bytes=10 * MiB)
    for n in range(4):
        put(store, n, array(n, 4))
    store.delete([oid(n) for n in range(4)])
    assert len(pool_files(store)) == 2
    assert store.stats().pooled_bytes <= 10 * MiB

    store = make_store(capacity=500 * MiB, pool_bytes=500 * MiB)
    count = POOL_MAX_FILES + 3
    for n in range(count):
        put(store, n, np.zeros(POOL_MIN_SIZE, dtype=np.uint8))
    store.delete([oid(n) for n in range(count)])
    assert len(pool_files(store)) == POOL_MAX_FILES


def test_small_or_unsealed_objects_are_unlinked_not_pooled(make_store: Any) -> None:
    store = make_store()
    put(store, 1, np.zeros(POOL_MIN_SIZE // 2, dtype=np.uint8))
    path = store.reserve(oid(2), 4 * MiB, "writer")
    write_segment(path, serialize(array(2, 4)))  # written but never sealed
    store.delete([oid(1), oid(2)])
    assert files(store) == []
    assert store.stats().pooled_bytes == 0


def test_reuse_off_unlinks_every_file(make_store: Any) -> None:
    store = make_store(pool_bytes=0)
    put(store, 1, array(1, 4))
    store.delete([oid(1)])
    assert files(store) == []


def test_idle_pool_files_are_released(make_store: Any) -> None:
    store = make_store()
    put(store, 1, array(1, 4))
    store.delete([oid(1)])
    assert store.trim_pool(idle_s=3600) == 0
    assert len(pool_files(store)) == 1
    size = store.stats().pooled_bytes
    assert store.trim_pool(idle_s=0) == size
    assert files(store) == []
    assert store.stats().pooled_bytes == 0


def test_destroy_removes_pool_files(make_store: Any) -> None:
    store = make_store()
    put(store, 1, array(1, 4))
    store.delete([oid(1)])
    assert pool_files(store)
    store.destroy()
    assert not os.path.exists(store.directory)
    assert store.stats().pooled_bytes == 0


def test_pool_bytes_must_not_be_negative(make_store: Any) -> None:
    with pytest.raises(ValueError, match="pool_bytes"):
        make_store(pool_bytes=-1)


_OPENER = textwrap.dedent(
    """
    import sys
    with open(sys.argv[1], "rb") as f:
        print(len(f.read()), flush=True)
    """
)


def test_an_open_during_the_lease_check_blocks_the_opener_and_spares_the_store(
    tmp_path: Any,
) -> None:
    path = str(tmp_path / "segment")
    with open(path, "wb") as f:
        f.write(b"x" * 100)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        take_lease(fd)
        with subprocess.Popen(
            [sys.executable, "-c", _OPENER, path], stdout=subprocess.PIPE, text=True
        ) as opener:
            # The lease is being broken (F_GETLEASE reads what it breaks to) once the opener
            # has tried; the kernel has signalled this process by then, which must survive it.
            wait_for_condition(
                lambda: fcntl.fcntl(fd, F_GETLEASE) != fcntl.F_WRLCK, 30, "the open to start"
            )
            assert opener.poll() is None  # blocked until the lease goes
            fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
            out, _ = opener.communicate(timeout=60)
        assert out.strip() == "100"
    finally:
        os.close(fd)
