"""Many references at once: wait() in a loop, and objects that hold thousands of references."""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

import freight
from freight.core.references import memory_rows
from freight.testing import wait_for_condition as wait_until

# Workers cannot import this test module: ship the remote functions below by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    if freight.is_initialized():
        freight.shutdown()  # another module's shared cluster: this module needs its own
    # A short FREIGHT_TEMP_DIR: Unix socket paths below it are limited to 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="fr-", dir="/tmp")
    saved = os.environ.get("FREIGHT_TEMP_DIR")
    os.environ["FREIGHT_TEMP_DIR"] = temp_dir
    try:
        info = freight.init(num_cpus=2)
    finally:
        if saved is None:
            os.environ.pop("FREIGHT_TEMP_DIR", None)
        else:
            os.environ["FREIGHT_TEMP_DIR"] = saved
    try:
        yield info
    finally:
        freight.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def worker() -> Any:
    w = freight._api._worker
    assert w is not None
    return w


@freight.remote
def quick(i: int) -> int:
    return i


@freight.remote
def until_exists(path: str) -> str:
    """Finish once ``path`` exists: a task the test keeps pending as long as it likes."""
    import time

    while not os.path.exists(path):
        time.sleep(0.01)  # inside the task: polls for the test's go-ahead
    return "released"


@freight.remote
def make_refs(count: int) -> list[Any]:
    return [freight.put(i) for i in range(count)]


@pytest.fixture
def pending(tmp_path: Any) -> Iterator[Any]:
    """A ref that stays not ready until the test ends."""
    marker = str(tmp_path / "go")
    ref = until_exists.remote(marker)
    yield ref
    open(marker, "w").close()
    assert freight.get(ref, timeout=60) == "released"


def test_wait_in_a_loop_returns_every_ref_once_keeping_input_order(
    cluster: dict[str, Any],
) -> None:
    refs = [quick.remote(i) for i in range(300)]
    position = {ref: i for i, ref in enumerate(refs)}
    not_ready = refs
    seen = []
    while not_ready:
        ready, rest = freight.wait(not_ready)
        assert len(ready) == 1 and len(rest) == len(not_ready) - 1
        assert [position[r] for r in rest] == sorted(position[r] for r in rest)
        seen += ready
        not_ready = rest
    assert sorted(position[r] for r in seen) == list(range(300))
    assert freight.get(seen) == [position[r] for r in seen]


def test_wait_takes_the_first_ready_refs_in_input_order(
    cluster: dict[str, Any], pending: Any
) -> None:
    done = [freight.put(i) for i in range(40)]
    refs = [done[0], pending, *done[1:]]
    ready, rest = freight.wait(refs, num_returns=2)
    assert ready == done[:2]
    assert rest == [pending, *done[2:]]
    # More than a few: the first 30 ready ones, and the rest in order.
    ready, rest = freight.wait(refs, num_returns=30)
    assert ready == done[:30]
    assert rest == [pending, *done[30:]]
    # A timeout returns every ready one.
    ready, rest = freight.wait(refs, num_returns=41, timeout=0.1)
    assert ready == done
    assert rest == [pending]
    ready, rest = freight.wait([pending], timeout=0)
    assert (ready, rest) == ([], [pending])


def test_wait_rejects_duplicates_and_non_refs(cluster: dict[str, Any]) -> None:
    ref = freight.put(1)
    same = freight.get(freight.put([ref]))[0]  # an equal ObjectRef, a different object
    with pytest.raises(ValueError, match="more than once"):
        freight.wait([ref, same])
    with pytest.raises(TypeError, match="found a int"):
        freight.wait([ref, 3])


def test_wait_on_borrowed_refs_fetches_them(cluster: dict[str, Any]) -> None:
    inner = freight.get(make_refs.remote(20))  # owned by the worker that ran the task
    assert all(r.owner_address() != worker().address for r in inner)
    not_ready = inner
    ready_all = []
    while not_ready:
        ready, not_ready = freight.wait(not_ready, num_returns=min(3, len(not_ready)))
        ready_all += ready
    assert freight.get(ready_all) == list(range(20))


def owner_rows(ids: set[str]) -> list[dict[str, Any]]:
    w = worker()
    return [r for r in memory_rows(w.session_dir, w.token) if r["owner"] and r["object_id"] in ids]


def test_an_object_holding_10k_refs_is_borrowed_and_released_in_bulk(
    cluster: dict[str, Any],
) -> None:
    outer = make_refs.remote(10_000)
    for _ in range(2):
        inner = freight.get(outer)
        assert len(inner) == 10_000
        assert freight.get([inner[0], inner[4321], inner[-1]]) == [0, 4321, 9999]
    ids = {r.hex() for r in inner}

    def borrowers_of_all(n: int) -> bool:
        # Borrowers: this driver, and the key that keeps the outer object's contents alive.
        rows = owner_rows(ids)
        return len(rows) == 10_000 and all(
            f"borrowed by {n} process(es)" in r["held_by"] for r in rows
        )

    wait_until(lambda: borrowers_of_all(2), 30, "this driver registered as borrower of all")
    del inner
    gc.collect()
    worker().drain_dropped()
    # The owner hears of every release: the outer object's key alone holds them now.
    wait_until(lambda: borrowers_of_all(1), 30, "the owner to drop this driver as borrower of all")
    del outer
    gc.collect()
    worker().drain_dropped()
    wait_until(lambda: owner_rows(ids) == [], 30, "the owner to free the 10,000 objects")
