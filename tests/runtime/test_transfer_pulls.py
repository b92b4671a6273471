"""A node's puller: one transfer per object, and a request for one copy of an object never
handed the outcome of a pull of another copy (a lost one, whose object was rebuilt meanwhile)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from freight.exceptions import ObjectLostError
from freight.node.transfer import ObjectPuller
from freight.objects.serialization import serialize
from freight.objects.shm import read_segment, segment_dir, write_segment
from freight.objects.store import ObjectStore

MiB = 1024 * 1024
SHM_ROOT = "/dev/shm"

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_ROOT), reason="needs a tmpfs /dev/shm")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore(
        segment_dir(SHM_ROOT, f"test-pulls-{os.getpid()}-{tmp_path.name}"),
        10 * MiB,
        spill_dir=str(tmp_path / "spill"),
    )
    yield s
    s.destroy()


def test_a_copy_made_here_while_a_pull_of_a_lost_copy_waits_is_what_its_readers_get(
    store: ObjectStore,
) -> None:
    oid = bytes(range(20))
    obj = serialize(b"rebuilt" * 1000)

    async def scenario() -> tuple[BaseException | None, str]:
        asked, released, never = asyncio.Event(), asyncio.Event(), asyncio.Event()
        views = 0

        async def next_view() -> None:
            # The first pull waits for the node list to name the lost copy's store, which it
            # never will: that wait ends the pull (as a node that left takes its store along).
            nonlocal views
            views += 1
            asked.set()
            await (released if views == 1 else never).wait()

        puller = ObjectPuller(store, "token", lambda _: None, next_view)
        lost_copy = asyncio.ensure_future(puller.fetch(oid, obj.total_size, "o", "/gone/store"))
        await asked.wait()
        rebuilt_copy = asyncio.ensure_future(
            puller.fetch(oid, obj.total_size, "o", "/where/it/was/rebuilt")
        )
        await asyncio.sleep(0)  # (a yield: the second request reaches its wait)
        # The owner's rebuild ran on this node: the object is in this store now.
        write_segment(store.reserve(oid, obj.total_size, "o"), obj)
        store.seal(oid)
        released.set()
        first = await asyncio.gather(lost_copy, return_exceptions=True)
        return first[0] if isinstance(first[0], BaseException) else None, await rebuilt_copy

    first_error, path = asyncio.run(scenario())
    assert isinstance(first_error, ObjectLostError), first_error
    assert path == store.path(oid)
    assert bytes(read_segment(path)) == b"rebuilt" * 1000
