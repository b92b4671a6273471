"""Object spilling in the store: what spills and when, restore, eviction order, full errors.

Real segment files in /dev/shm (leases, as in production) and real spill files in a temp folder.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from freight.exceptions import ObjectLostError, ObjectStoreFullError
from freight.objects.serialization import serialize
from freight.objects.shm import read_segment, segment_dir, write_segment
from freight.objects.spill import SpillDir, copy_file, spill_directory
from freight.objects.store import ObjectStore
from freight.observe.recorder import RECORDER

MiB = 1024 * 1024
SHM_ROOT = "/dev/shm"
CHUNK = MiB  # the size of most test objects, plus a little header

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_ROOT), reason="needs a tmpfs /dev/shm")


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Any]:
    stores: list[ObjectStore] = []

    def make(capacity: int = 10 * MiB, threshold: float = 0.8, **kw: Any) -> ObjectStore:
        name = f"test-spill-{os.getpid()}-{tmp_path.name}-{len(stores)}"
        kw.setdefault("spill_dir", str(tmp_path / f"spill-{len(stores)}"))
        store = ObjectStore(segment_dir(SHM_ROOT, name), capacity, spill_threshold=threshold, **kw)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.destroy()


def oid(n: int) -> bytes:
    return n.to_bytes(20, "big")


def value(n: int) -> np.ndarray:
    """About 1 MiB whose every element depends on ``n``."""
    return np.arange(CHUNK // 8, dtype=np.int64) * 7 + n


def put(store: ObjectStore, n: int, owner: str = "owner", wait_s: float = 0.0) -> int:
    obj = serialize(value(n))
    path = store.reserve(oid(n), obj.total_size, owner, wait_s)
    write_segment(path, obj)
    store.seal(oid(n))
    return obj.total_size


def read(store: ObjectStore, n: int) -> np.ndarray:
    """The value of object ``n`` as a reader gets it: restored first when it was spilled."""
    return np.array(read_segment(store.restore(oid(n))))  # a copy, so nothing stays mapped


def reserve_unsealed(store: ObjectStore, n: int, size: int) -> None:
    """A write in progress: reserved, its file written, not sealed."""
    path = store.reserve(oid(n), size, "writer")
    with open(path, "wb") as f:
        f.truncate(size)


def counter(name: str) -> float:
    return float(RECORDER.snapshot()["c"].get((name, ()), 0.0))


def test_over_the_threshold_the_oldest_primaries_spill_to_disk(make_store: Any) -> None:
    store = make_store(threshold=0.5)
    sizes = [put(store, n) for n in range(8)]
    assert store.over_threshold()
    spilled_before = counter("freight_object_spilled_bytes_total")

    spilled = store.spill_to_threshold()

    assert not store.over_threshold()
    stats = store.statistics()
    assert stats["used_bytes"] <= 5 * MiB
    assert stats["num_spilled"] == 4 and spilled == stats["spilled_bytes"] == sum(sizes[:4])
    assert stats["objects_spilled_total"] == 4
    assert counter("freight_object_spilled_bytes_total") - spilled_before == spilled
    for n in range(8):
        entry = store.info(oid(n))
        assert entry is not None and entry.spilled == (n < 4), n  # oldest first
    # A spilled object's segment is gone and its spill file holds it.
    assert not os.path.exists(os.path.join(store.directory, oid(0).hex()))
    spill_file = store.info(oid(0)).spill_path  # type: ignore[union-attr]
    assert os.path.getsize(spill_file) == sizes[0]
    assert store.path(oid(0)) == spill_file  # what another node's pull reads


def test_a_spilled_object_comes_back_intact_on_restore(make_store: Any) -> None:
    store = make_store(threshold=0.5)
    for n in range(8):
        put(store, n)
    store.spill_to_threshold()
    restored_before = counter("freight_object_restored_total")

    path = store.restore(oid(1))

    assert path == os.path.join(store.directory, oid(1).hex())
    np.testing.assert_array_equal(read_segment(path), value(1))
    entry = store.info(oid(1))
    assert entry is not None and not entry.spilled
    stats = store.statistics()
    assert stats["objects_restored_total"] == 1 and stats["num_spilled"] == 3
    assert counter("freight_object_restored_total") - restored_before == 1


def test_a_reservation_that_does_not_fit_spills_instead_of_failing(make_store: Any) -> None:
    store = make_store(threshold=1.0)
    n = 0
    while store.stats().used_bytes + CHUNK + 4096 <= store.capacity:
        put(store, n)
        n += 1
    assert store.statistics()["num_spilled"] == 0

    put(store, n)  # does not fit: the oldest object spills to make room

    assert store.info(oid(0)).spilled  # type: ignore[union-attr]
    assert store.stats().used_bytes <= store.capacity


def test_putting_three_times_the_capacity_loses_nothing(make_store: Any) -> None:
    store = make_store(capacity=8 * MiB)
    count = 24  # ~3x the capacity
    for n in range(count):
        put(store, n)
        store.spill_to_threshold()  # as the agent does after each reservation
    assert store.statistics()["num_spilled"] >= count - 8
    for n in range(count):
        np.testing.assert_array_equal(read(store, n), value(n))
    assert store.stats().used_bytes <= store.capacity


def test_secondary_copies_are_evicted_before_primaries_spill(make_store: Any) -> None:
    store = make_store(threshold=0.5)
    put(store, 100, owner="")  # a copy pulled from another node: oldest of all
    for n in range(6):
        put(store, n)

    store.spill_to_threshold()

    assert store.info(oid(100)) is None  # evicted, not spilled
    assert not os.path.exists(os.path.join(store.directory, oid(100).hex()))
    assert store.info(oid(0)).spilled  # type: ignore[union-attr]


def test_an_object_a_reader_maps_is_not_spilled(make_store: Any) -> None:
    store = make_store(threshold=0.5)
    for n in range(8):
        put(store, n)
    view = read_segment(store.restore(oid(0)))  # mapped, zero-copy

    store.spill_to_threshold()

    assert not store.info(oid(0)).spilled  # type: ignore[union-attr]
    assert store.info(oid(4)).spilled  # type: ignore[union-attr]  # one more in its place
    np.testing.assert_array_equal(view, value(0))


def test_concurrent_restores_of_one_object_make_one_copy(make_store: Any) -> None:
    store = make_store(threshold=0.5)
    for n in range(8):
        put(store, n)
    store.spill_to_threshold()
    start = threading.Barrier(8)

    def restore() -> str:
        start.wait()
        return store.restore(oid(2))

    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: restore(), range(8)))

    assert len(set(paths)) == 1
    assert store.statistics()["objects_restored_total"] == 1
    np.testing.assert_array_equal(read_segment(paths[0]), value(2))


def test_a_background_pass_leaves_a_just_restored_object_alone(make_store: Any) -> None:
    store = make_store(threshold=0.5)
    for n in range(8):
        put(store, n)
    store.spill_to_threshold()
    store.restore(oid(0))  # its reader is about to map it
    for n in range(10, 14):
        put(store, n)
    store.spill_to_threshold()
    assert not store.info(oid(0)).spilled  # type: ignore[union-attr]
    np.testing.assert_array_equal(read(store, 0), value(0))


def test_spilling_a_restored_object_again_writes_nothing(make_store: Any) -> None:
    store = make_store(threshold=0.5)
    store.restore_grace_s = 0.0  # spill it again at once
    for n in range(8):
        put(store, n)
    store.spill_to_threshold()
    spill_file = store.info(oid(0)).spill_path  # type: ignore[union-attr]
    inode = os.stat(spill_file).st_ino
    store.restore(oid(0))
    store.delete([oid(n) for n in range(1, 4)])  # only object 0 is left to spill among the old
    for n in range(10, 14):
        put(store, n)

    store.spill_to_threshold()

    assert store.info(oid(0)).spilled  # type: ignore[union-attr]
    assert os.stat(spill_file).st_ino == inode  # the same file, not rewritten
    np.testing.assert_array_equal(read(store, 0), value(0))


def test_freeing_a_spilled_object_removes_its_spill_file(make_store: Any) -> None:
    store = make_store(threshold=0.5)
    for n in range(8):
        put(store, n)
    store.spill_to_threshold()
    spill_file = store.info(oid(0)).spill_path  # type: ignore[union-attr]

    assert store.delete([oid(0)]) == 0  # no memory freed: it was on disk

    assert not os.path.exists(spill_file)
    assert store.info(oid(0)) is None
    stats = store.statistics()
    assert stats["num_spilled"] == 3
    with pytest.raises(KeyError, match="not in this node's store"):
        store.restore(oid(0))


def test_destroy_removes_the_spill_folder(make_store: Any) -> None:
    store = make_store(threshold=0.5)
    for n in range(8):
        put(store, n)
    store.spill_to_threshold()
    assert store.spill is not None and os.listdir(store.spill.directory)

    store.destroy()

    assert not os.path.exists(store.spill.directory)
    assert not os.path.exists(store.directory)


def test_an_object_bigger_than_the_store_is_refused_at_once(make_store: Any) -> None:
    store = make_store()
    put(store, 0)

    with pytest.raises(ObjectStoreFullError) as info:
        store.reserve(oid(1), 11 * MiB, "driver", wait_s=30.0)

    message = str(info.value)
    assert "larger than the whole store (10.0 MiB)" in message
    assert "split it into smaller objects" in message
    assert "--object-store-memory" in message
    assert store.info(oid(0)) is not None and not store.info(oid(0)).spilled  # type: ignore[union-attr]


def test_full_only_when_nothing_can_be_spilled(make_store: Any) -> None:
    store = make_store(threshold=1.0)
    for n in range(3):
        reserve_unsealed(store, n, 3 * MiB)  # never sealed: not spillable

    with pytest.raises(ObjectStoreFullError) as info:
        store.reserve(oid(9), 2 * MiB, "driver")

    message = str(info.value)
    assert "Spilling could not make room" in message
    assert "9.0 MiB of 10.0 MiB is in use (9.0 MiB of it reserved" in message
    assert "writer: 9.0 MiB in 3 objects" in message


def test_a_waiting_reservation_spills_what_is_sealed_meanwhile(make_store: Any) -> None:
    store = make_store(threshold=1.0)
    for n in range(3):
        reserve_unsealed(store, n, 3 * MiB)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(store.reserve, oid(9), 2 * MiB, "driver", 30.0)
        store.seal(oid(0))  # before or during its wait: either way it can spill object 0
        path = waiting.result(timeout=30)

    assert path.endswith(oid(9).hex())
    assert store.info(oid(0)).spilled  # type: ignore[union-attr]


def test_try_reserve_asks_for_a_thread_when_it_must_spill(make_store: Any) -> None:
    store = make_store(threshold=1.0)
    for n in range(9):
        put(store, n)

    assert store.try_reserve(oid(50), 1000, "driver") is not None  # fits: at once
    assert store.try_reserve(oid(51), 2 * CHUNK, "driver") is None  # would need a spill
    assert store.info(oid(51)) is None
    assert store.statistics()["num_spilled"] == 0
    with pytest.raises(ObjectStoreFullError):
        store.try_reserve(oid(52), 11 * MiB, "driver")  # spilling cannot help


def test_a_failing_spill_folder_gives_a_full_error_that_names_it(
    make_store: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store = make_store(threshold=1.0, spill_dir=str(blocker / "spill"))
    for n in range(9):
        put(store, n)

    with pytest.raises(ObjectStoreFullError) as info:
        store.reserve(oid(99), 2 * CHUNK, "driver")

    assert f"spilling to {blocker / 'spill'} failed" in str(info.value)
    assert store.statistics()["spill_errors_total"] >= 1
    np.testing.assert_array_equal(read(store, 0), value(0))  # nothing lost


def test_without_a_spill_folder_the_store_never_spills(make_store: Any) -> None:
    store = make_store(threshold=0.5, spill_dir=None)
    for n in range(9):
        put(store, n)
    assert not store.over_threshold()
    assert store.spill_to_threshold() == 0
    with pytest.raises(ObjectStoreFullError):
        put(store, 9)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_the_threshold_must_be_a_share_of_the_capacity(make_store: Any, threshold: float) -> None:
    with pytest.raises(ValueError, match="FREIGHT_OBJECT_SPILLING_THRESHOLD"):
        make_store(threshold=threshold)


def test_the_spill_folder_is_per_session_when_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FREIGHT_OBJECT_SPILLING_DIR", raising=False)
    assert spill_directory("/s/session_1", "/dev/shm/freight-session_1") == "/s/session_1/spill"
    monkeypatch.setenv("FREIGHT_OBJECT_SPILLING_DIR", str(tmp_path))
    assert spill_directory("/s/session_1", "/dev/shm/freight-session_1") == str(
        tmp_path / "freight-session_1"
    )


def test_copy_file_writes_over_a_longer_file_and_cuts_it(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"a" * 5000 + b"tail-of-src")
    dst.write_bytes(b"x" * 20000)
    copy_file(str(src), str(dst), 5000)
    assert dst.read_bytes() == b"a" * 5000


def test_a_spill_write_leaves_no_partial_file(tmp_path: Path) -> None:
    spill = SpillDir(str(tmp_path / "spill"))
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    with pytest.raises(OSError):
        spill.write(oid(1), str(short), 10)  # the source ends early
    assert os.listdir(spill.directory) == []


def test_a_spill_file_removed_behind_the_stores_back_is_a_lost_object(make_store: Any) -> None:
    store = make_store(threshold=0.5)
    for n in range(8):
        put(store, n)
    store.spill_to_threshold()
    os.unlink(store.info(oid(0)).spill_path)  # type: ignore[union-attr]

    with pytest.raises(ObjectLostError, match="spill folder"):
        store.restore(oid(0))

    assert store.stats().used_bytes <= store.capacity
    np.testing.assert_array_equal(read(store, 1), value(1))  # the others still come back


def _flip_a_bit(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x01]))


@pytest.mark.parametrize("damage", ["truncated", "missing", "corrupted"])
def test_a_damaged_spill_file_is_a_lost_object_that_names_it(make_store: Any, damage: str) -> None:
    store = make_store(threshold=0.5)
    for n in range(8):
        put(store, n)
    store.spill_to_threshold()
    path = store.info(oid(0)).spill_path  # type: ignore[union-attr]
    if damage == "truncated":
        os.truncate(path, os.path.getsize(path) - 1)
    elif damage == "missing":
        os.unlink(path)
    else:
        _flip_a_bit(path)

    for _ in range(2):  # every reader hears why, not only the first
        with pytest.raises(ObjectLostError, match=f"spill file {path} is {damage}"):
            store.restore(oid(0))
    assert not os.path.exists(path)  # the damaged file is dropped with the object
    assert store.stats().used_bytes <= store.capacity
    np.testing.assert_array_equal(read(store, 1), value(1))  # the others still come back
    put(store, 0)  # made again under its id (a rebuild), it is readable again
    np.testing.assert_array_equal(read(store, 0), value(0))


def test_a_spill_file_changed_on_disk_is_not_sent_to_another_node(make_store: Any) -> None:
    import asyncio

    from freight.node.transfer import serve_chunks

    store = make_store(threshold=0.5)
    for n in range(8):
        put(store, n)
    store.spill_to_threshold()
    path = store.info(oid(0)).spill_path  # type: ignore[union-attr]

    async def pull() -> bytes:
        return b"".join([c.data async for c in serve_chunks(store, oid(0), 0)])

    assert len(asyncio.run(pull())) == store.info(oid(0)).size  # type: ignore[union-attr]
    _flip_a_bit(path)
    with pytest.raises(OSError, match=f"spill file {path} is corrupted"):
        asyncio.run(pull())
