"""Object store accounting: capacity, full errors, delete and destroy."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import numpy as np
import psutil
import pytest

from freight.exceptions import ObjectStoreFullError
from freight.objects.serialization import serialize
from freight.objects.shm import read_segment, write_segment
from freight.objects.store import (
    ObjectEntry,
    ObjectExistsError,
    ObjectStore,
    StoreStats,
    default_capacity,
    format_bytes,
)

MiB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore(str(tmp_path / "freight-test"), capacity=100 * MiB)


def oid(n: int) -> bytes:
    return n.to_bytes(20, "big")


def put(store: ObjectStore, n: int, value: object, owner: str = "127.0.0.1:7000") -> int:
    obj = serialize(value)
    path = store.reserve(oid(n), obj.total_size, owner)
    write_segment(path, obj)
    store.seal(oid(n))
    return obj.total_size


def test_directory_is_created_private(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "freight-s"
    ObjectStore(str(directory), capacity=MiB)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


def test_rejects_non_positive_capacity(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="capacity"):
        ObjectStore(str(tmp_path / "s"), capacity=0)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_default_capacity_is_fraction_of_ram_bounded_by_shm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ram = psutil.virtual_memory().total
    monkeypatch.setenv("FREIGHT_OBJECT_STORE_FRACTION", "0.001")
    assert default_capacity(str(tmp_path)) == min(int(ram * 0.001), free_bytes(tmp_path))
    # A fraction above 1 asks for more than RAM: the free space of the folder bounds it (other
    # processes may write meanwhile, hence the tolerance).
    monkeypatch.setenv("FREIGHT_OBJECT_STORE_FRACTION", "1000")
    assert abs(default_capacity(str(tmp_path)) - free_bytes(tmp_path)) < 256 * MiB
    monkeypatch.delenv("FREIGHT_OBJECT_STORE_FRACTION")
    assert default_capacity(str(tmp_path)) <= int(ram * 0.3)


def test_reserve_seal_and_read(store: ObjectStore) -> None:
    path = store.reserve(oid(1), 1000, "owner-a")
    assert path == os.path.join(store.directory, oid(1).hex())
    assert not store.contains(oid(1))  # reserved, not readable yet
    info = store.info(oid(1))
    assert info is not None
    assert (info.size, info.owner, info.sealed) == (1000, "owner-a", False)
    write_segment(path, serialize("value"))
    store.seal(oid(1))
    assert store.contains(oid(1))
    assert oid(1) in store
    assert read_segment(path) == "value"
    assert store.info(oid(2)) is None


def test_accounting_counts_sealed_and_reserved(store: ObjectStore) -> None:
    size = put(store, 1, b"x" * (10 * MiB))
    store.reserve(oid(2), 5 * MiB, "owner-b")
    assert store.stats() == StoreStats(
        used_bytes=size + 5 * MiB,
        capacity=100 * MiB,
        num_objects=2,
        num_sealed=1,
        num_reserved=1,
        reserved_bytes=5 * MiB,
    )
    entries = store.list_objects()
    assert [e.object_id for e in entries] == [oid(1), oid(2)]
    assert all(isinstance(e, ObjectEntry) for e in entries)
    assert [e.sealed for e in entries] == [True, False]


def test_reserve_up_to_capacity_then_full(store: ObjectStore) -> None:
    store.reserve(oid(1), 60 * MiB, "a")
    store.reserve(oid(2), 40 * MiB, "b")  # exactly full is allowed
    with pytest.raises(ObjectStoreFullError):
        store.reserve(oid(3), 1, "c")
    assert store.info(oid(3)) is None
    assert store.statistics()["full_errors_total"] == 1


def test_full_error_message_names_sizes_holders_and_remedies(store: ObjectStore) -> None:
    for i in range(7):
        store.reserve(oid(i), (i + 1) * MiB, f"10.0.0.{i}:700{i}")
    store.reserve(oid(100), 20 * MiB, "10.0.0.6:7006")  # second object of the top holder
    store.seal(oid(100))
    with pytest.raises(ObjectStoreFullError) as info:
        store.reserve(oid(99), 60 * MiB, "10.0.0.9:7009")
    message = str(info.value)
    assert "60.0 MiB" in message  # requested
    assert "48.0 MiB of 100.0 MiB" in message  # used of capacity
    assert "Top holders (7 in all)" in message
    holder_lines = [line.strip() for line in message.splitlines() if line.startswith("  ")]
    assert holder_lines == [
        "10.0.0.6:7006: 27.0 MiB in 2 objects",
        "10.0.0.5:7005: 6.0 MiB in 1 object",
        "10.0.0.4:7004: 5.0 MiB in 1 object",
        "10.0.0.3:7003: 4.0 MiB in 1 object",
        "10.0.0.2:7002: 3.0 MiB in 1 object",
    ]
    assert "--object-store-memory" in message
    assert "references" in message


def test_reserving_an_existing_id_raises(store: ObjectStore) -> None:
    store.reserve(oid(1), 10, "a")
    with pytest.raises(ValueError, match="already in the store"):
        store.reserve(oid(1), 10, "a")


def test_a_return_stored_again_by_its_owner_names_the_value_already_there(
    store: ObjectStore,
) -> None:
    size = put(store, 1, b"r" * 1000, owner="127.0.0.1:7000")
    with pytest.raises(ObjectExistsError) as raised:
        store.reserve(oid(1), 2 * size, "127.0.0.1:7000")  # the same task's return, again
    assert (raised.value.path, raised.value.size) == (store.path(oid(1)), size)
    # It crosses the agent's socket pickled, and arrives whole.
    back = pickle.loads(pickle.dumps(raised.value))
    assert (back.object_id, back.path, back.size) == (oid(1), store.path(oid(1)), size)
    assert store.statistics()["used_bytes"] == size  # nothing reserved for the second run


def test_a_rebuilt_primary_replaces_a_copy_pulled_from_its_dead_node(store: ObjectStore) -> None:
    size = put(store, 1, b"c" * 1000, owner="")  # a secondary copy: pulled, owned elsewhere
    path = store.reserve(oid(1), size, "127.0.0.1:7000")  # the same object, made again here
    assert path
    entry = next(e for e in store.list_objects() if e.object_id == oid(1))
    assert entry.owner == "127.0.0.1:7000" and not entry.sealed
    assert store.statistics()["used_bytes"] == size  # counted once
    with pytest.raises(ValueError, match="already in the store"):  # a primary is never replaced
        store.reserve(oid(1), size, "127.0.0.1:7001")


@pytest.mark.parametrize(
    ("object_id", "size", "error"),
    [("abc", 1, TypeError), (b"", 1, TypeError), (b"\x01", -1, ValueError)],
)
def test_reserve_validates_arguments(
    store: ObjectStore, object_id: bytes, size: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.reserve(object_id, size, "a")


def test_seal_errors(store: ObjectStore) -> None:
    with pytest.raises(KeyError):
        store.seal(oid(1))
    store.reserve(oid(1), 10, "a")
    store.seal(oid(1))
    with pytest.raises(ValueError, match="already sealed"):
        store.seal(oid(1))


def test_delete_frees_capacity_and_unlinks(store: ObjectStore) -> None:
    size1 = put(store, 1, b"a" * MiB)
    size2 = put(store, 2, b"b" * MiB)
    path1 = store.path(oid(1))
    assert store.delete([oid(1), oid(42)]) == size1
    assert not os.path.exists(path1)
    assert not store.contains(oid(1))
    assert store.stats().used_bytes == size2
    assert os.path.exists(store.path(oid(2)))
    stats = store.statistics()
    assert stats["objects_deleted_total"] == 1
    assert stats["bytes_deleted_total"] == size1
    assert stats["objects_created_total"] == 2


def test_delete_tolerates_missing_files_and_reservations(store: ObjectStore) -> None:
    store.reserve(oid(1), 100, "a")  # never written
    put(store, 2, "x")
    os.unlink(store.path(oid(2)))
    assert store.delete([oid(1), oid(2)]) == 100 + store_size("x")
    assert store.stats().used_bytes == 0
    assert store.stats().num_objects == 0


def store_size(value: object) -> int:
    return serialize(value).total_size


def test_full_store_accepts_again_after_delete(store: ObjectStore) -> None:
    store.reserve(oid(1), 100 * MiB, "a")
    with pytest.raises(ObjectStoreFullError):
        store.reserve(oid(2), MiB, "b")
    store.delete([oid(1)])
    store.reserve(oid(2), MiB, "b")


def test_abort_releases_reservation_and_partial_file(store: ObjectStore) -> None:
    path = store.reserve(oid(1), 50 * MiB, "a")
    with open(path, "wb") as f:
        f.write(b"partial")
    store.abort(oid(1))
    assert not os.path.exists(path)
    assert store.stats().used_bytes == 0
    assert store.info(oid(1)) is None
    assert store.statistics()["reservations_aborted_total"] == 1
    with pytest.raises(KeyError):
        store.abort(oid(1))
    put(store, 2, "sealed")
    with pytest.raises(ValueError, match="delete it instead"):
        store.abort(oid(2))


def test_readers_keep_values_after_delete(store: ObjectStore) -> None:
    put(store, 1, np.arange(10_000))
    arr = read_segment(store.path(oid(1)))
    store.delete([oid(1)])
    assert int(arr.sum()) == sum(range(10_000))


def test_destroy_removes_everything(store: ObjectStore) -> None:
    put(store, 1, "a")
    store.reserve(oid(2), 10, "b")
    with open(os.path.join(store.directory, "stray"), "wb") as f:
        f.write(b"left by a crashed writer")
    store.destroy()
    assert not os.path.exists(store.directory)
    assert store.stats().num_objects == 0
    store.destroy()  # idempotent


def test_statistics_is_a_plain_snapshot(store: ObjectStore) -> None:
    put(store, 1, "a")
    snapshot = store.statistics()
    assert all(isinstance(v, int) for v in snapshot.values())
    assert snapshot["num_sealed"] == 1
    assert snapshot["capacity_bytes"] == 100 * MiB
    put(store, 2, "b")
    assert snapshot["num_sealed"] == 1


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * MiB, "5.0 MiB"), (3 << 30, "3.00 GiB")],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text
