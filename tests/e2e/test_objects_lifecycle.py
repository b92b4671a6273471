"""Objects from creation to release: reference tables and the node's store return to empty."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np
import pytest

import freight
from freight._api import _require_worker
from freight.cli.status import status_report
from freight.core.references import memory_rows
from freight.exceptions import ObjectStoreFullError
from freight.testing import local_cluster
from freight.testing import wait_for_condition as wait_until

# Workers cannot import this test module: ship the remote functions below by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MiB = 1024 * 1024
STORE_CAPACITY = 200 * MiB


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    # Its own cluster: another module's shared one is shut down first.
    with local_cluster(num_cpus=2, object_store_memory=STORE_CAPACITY) as info:
        yield info


def store_stats() -> tuple[int, int, int]:
    """(objects, bytes used, capacity) of the node's object store, as its agent reports them."""
    w = _require_worker()
    st = status_report(w.head_address, w.token)
    assert len(st.nodes) == 1
    s = st.nodes[0].stats
    return s.num_objects, s.object_store_used, s.object_store_capacity


def segment_files() -> list[str]:
    """The objects' segment files (freed ones kept for reuse, ``pool-*``, hold no object)."""
    w = _require_worker()
    folder = os.path.join("/dev/shm", f"freight-{w.session_name}")
    return [name for name in os.listdir(folder) if not name.startswith("pool-")]


def ref_table_size() -> int:
    w = _require_worker()
    w.drain_dropped()
    return len(w.refs.entries)


def wait_for_empty_store(what: str) -> None:
    # Store figures reach the head with the next heartbeat: wait for them and the files both.
    wait_until(
        lambda: store_stats()[:2] == (0, 0) and segment_files() == [],
        30,
        f"an empty object store {what}",
    )


def wait_for_ref_table(size: int, what: str) -> None:
    gc.collect()
    wait_until(lambda: ref_table_size() == size, 30, f"the reference table back to {size} {what}")


@pytest.fixture
def baseline(cluster: dict[str, Any]) -> Iterator[int]:
    """Every test starts and ends with nothing held: no references, an empty store."""
    wait_for_ref_table(0, "before the test")
    wait_for_empty_store("before the test")
    yield 0


@freight.remote
def identity(x: Any) -> Any:
    return x


@freight.remote
def small_value(i: int) -> int:
    return i


@freight.remote
def echo_list(items: list[Any]) -> list[Any]:
    return items


@freight.remote
def inspect_array(arr: np.ndarray) -> tuple[bool, float, tuple[int, ...]]:
    return bool(arr.flags.writeable), float(arr.sum()), arr.shape


# -- (a) many small objects ---------------------------------------------------------------------


def test_many_small_objects_are_all_released(cluster: dict[str, Any], baseline: int) -> None:
    w = _require_worker()
    slots_before = len(w.slots)
    created = 0
    for batch in range(9):
        refs = [freight.put(i) for i in range(batch * 10_000, (batch + 1) * 10_000)]
        created += len(refs)
        assert freight.get(refs[-1]) == (batch + 1) * 10_000 - 1
        del refs
    for _ in range(5):
        refs = [small_value.remote(i) for i in range(2_000)]
        created += len(refs)
        assert freight.get(refs) == list(range(2_000))
        del refs
    assert created == 100_000
    wait_for_ref_table(baseline, "after dropping 100,000 objects")
    wait_until(lambda: len(w.slots) <= slots_before, 30, "the in-process store to empty")
    wait_for_empty_store("after dropping 100,000 objects")
    mine = [r for r in memory_rows(w.session_dir, w.token) if r["owner"]]
    assert mine == [], mine[:5]


# -- (b) large objects ----------------------------------------------------------------------------


def test_large_objects_are_released(cluster: dict[str, Any], baseline: int) -> None:
    payload = np.ones(MiB, dtype=np.uint8)
    for _ in range(4):
        refs = [freight.put(payload) for _ in range(50)]
        stats = wait_until(
            lambda: (lambda s: s if s[0] >= 50 else None)(store_stats()), 30, "50 objects"
        )
        assert stats[1] >= 50 * MiB, stats
        del refs
    wait_for_ref_table(baseline, "after dropping 200 large objects")
    wait_for_empty_store("after dropping 200 large objects")


# -- (c) a put larger than the store ---------------------------------------------------------------


def test_put_larger_than_the_store_fails_and_the_cluster_keeps_serving(
    cluster: dict[str, Any], baseline: int
) -> None:
    too_big = np.zeros(STORE_CAPACITY + 10 * MiB, dtype=np.uint8)  # pages are never touched
    with pytest.raises(ObjectStoreFullError) as info:
        freight.put(too_big)
    message = str(info.value)
    assert "210.0 MiB" in message, message  # the object
    assert "200.0 MiB" in message, message  # the capacity
    del too_big, info
    # The cluster keeps serving: puts, gets and tasks, small and large.
    small = freight.put("still here")
    assert freight.get(small) == "still here"
    large = freight.put(np.arange(MiB, dtype=np.int64))
    assert int(freight.get(large)[-1]) == MiB - 1
    assert freight.get(identity.remote(41)) == 41
    assert freight.get(identity.remote(large)).sum() == np.arange(MiB, dtype=np.int64).sum()
    del small, large
    wait_for_ref_table(baseline, "after the failed put")
    wait_for_empty_store("after the failed put")


# -- (d) objects that contain references ------------------------------------------------------------


def test_refs_inside_an_object_keep_their_objects_alive(
    cluster: dict[str, Any], baseline: int
) -> None:
    inner = [freight.put(np.full(MiB, i, dtype=np.uint8)) for i in range(3)]
    inner_ids = [r.hex() for r in inner]
    outer = freight.put(inner)
    del inner
    gc.collect()
    _require_worker().drain_dropped()
    # The inner objects are held by the outer one alone now.
    wait_until(lambda: store_stats()[0] == 3, 30, "the three inner objects in the store")
    rows = {
        r["object_id"]: r
        for r in memory_rows(_require_worker().session_dir, _require_worker().token)
    }
    for oid in inner_ids:
        assert any("contained in" in h for h in rows[oid]["held_by"]), rows[oid]
    got = freight.get(outer)
    assert [r.hex() for r in got] == inner_ids
    for i, ref in enumerate(got):
        arr = freight.get(ref)
        assert arr.shape == (MiB,) and int(arr[0]) == i and int(arr[-1]) == i
    del got, ref, arr
    # Dropping the outer object releases the inner ones too.
    del outer
    wait_for_ref_table(baseline, "after dropping the outer object")
    wait_for_empty_store("after dropping the outer object")


# -- (e) a ref nested in a task's argument and return value -------------------------------------------


@pytest.mark.parametrize("size", [16, 2 * MiB], ids=["inline", "shared-memory"])
def test_nested_ref_returned_by_a_task_stays_reachable(
    cluster: dict[str, Any], baseline: int, size: int
) -> None:
    value = np.arange(size, dtype=np.uint8)
    ref = freight.put(value)
    out = echo_list.remote([ref])
    ready, _ = freight.wait([out], timeout=60)
    assert ready == [out]
    del ready, ref
    gc.collect()
    _require_worker().drain_dropped()
    returned = freight.get(out)
    assert len(returned) == 1
    np.testing.assert_array_equal(freight.get(returned[0]), value)
    del returned, out
    wait_for_ref_table(baseline, "after dropping the task's result")
    wait_for_empty_store("after dropping the task's result")


# -- (f) large arrays are read-only views -----------------------------------------------------------


def test_large_arrays_are_read_only_everywhere(cluster: dict[str, Any], baseline: int) -> None:
    original = np.arange(MiB // 4, dtype=np.float64)  # 2 MiB: shared memory
    ref = freight.put(original)
    got = freight.get(ref)
    np.testing.assert_array_equal(got, original)
    assert got.dtype == original.dtype
    assert not got.flags.writeable
    with pytest.raises(ValueError):
        got[0] = 1.0
    writeable, total, shape = freight.get(inspect_array.remote(ref))
    assert writeable is False
    assert total == float(original.sum())
    assert shape == original.shape
    # The caller's own copy is untouched.
    assert original.flags.writeable
    del got, ref
    wait_for_ref_table(baseline, "after dropping the array")
    wait_for_empty_store("after dropping the array")
