"""Segment reuse in a running cluster: freed segments carry later objects, never a held value."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np
import pytest

import freight
from freight._api import _require_worker
from freight.testing import local_cluster
from freight.testing import wait_for_condition as wait_until

# Workers cannot import this test module: ship the remote functions below by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MiB = 1024 * 1024
STORE_CAPACITY = 64 * MiB  # the pool may keep a quarter of it (FREIGHT_SEGMENT_POOL_FRACTION)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    # Its own cluster: another module's shared one is shut down first.
    with local_cluster(num_cpus=1, object_store_memory=STORE_CAPACITY) as info:
        yield info


def segment_of(ref: Any) -> str:
    """The shared-memory file that holds ``ref``'s value."""
    value = _require_worker().slots[ref.binary()].value
    assert value is not None and value[0] == "s", value
    return str(value[1])


def folder() -> str:
    return os.path.join("/dev/shm", f"freight-{_require_worker().session_name}")


def pool_files() -> list[str]:
    return sorted(name for name in os.listdir(folder()) if name.startswith("pool-"))


def wait_freed(path: str) -> None:
    """Wait until the agent has taken the segment of a dropped object away."""
    gc.collect()
    _require_worker().drain_dropped()
    wait_until(lambda: not os.path.exists(path), 30, f"the agent to free {path}")


def random_array(seed: int, mib: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1 << 62, size=mib * MiB // 8, dtype=np.int64)


@freight.remote
def checksum(arr: np.ndarray) -> tuple[int, int]:
    return int(arr.sum(dtype=np.uint64)), int(arr[-1])


def test_the_next_put_writes_over_a_freed_segment_and_reads_back_intact(
    cluster: dict[str, Any],
) -> None:
    first = freight.put(random_array(1))
    path = segment_of(first)
    inode = os.stat(path).st_ino
    del first
    wait_freed(path)
    wait_until(pool_files, 30, "the freed segment in the pool")

    expected = random_array(2)
    second = freight.put(expected)
    assert os.stat(segment_of(second)).st_ino == inode  # the same file, renamed and rewritten
    assert np.array_equal(freight.get(second), expected)
    assert freight.get(checksum.remote(second)) == (
        int(expected.sum(dtype=np.uint64)),
        int(expected[-1]),
    )


def test_a_value_read_before_its_object_was_freed_is_never_overwritten(
    cluster: dict[str, Any],
) -> None:
    expected = random_array(3)
    ref = freight.put(expected)
    held = freight.get(ref)  # a zero-copy view of the segment
    path = segment_of(ref)
    inode = os.stat(path).st_ino
    del ref
    wait_freed(path)
    for seed in range(4, 8):
        other = freight.put(random_array(seed))
        path = segment_of(other)
        assert os.stat(path).st_ino != inode
        assert np.array_equal(freight.get(other), random_array(seed))
        del other
        wait_freed(path)
    assert np.array_equal(held, expected)


def test_pooled_segments_make_room_for_a_put_that_fits(cluster: dict[str, Any]) -> None:
    for seed in range(3):
        ref = freight.put(random_array(seed, mib=6))
        path = segment_of(ref)
        del ref
        wait_freed(path)
    assert pool_files()
    # Nearly the whole store: fits only once the pool gives its files back.
    big = np.ones(STORE_CAPACITY - 2 * MiB, dtype=np.uint8)
    ref = freight.put(big)
    assert pool_files() == []
    # The next put spills the big object to disk (nothing maps it), and reading it restores it.
    extra = freight.put(np.ones(4 * MiB, dtype=np.uint8))
    assert int(freight.get(extra)[-1]) == 1
    del extra
    assert int(freight.get(ref)[-1]) == 1
    path = segment_of(ref)
    del ref
    wait_freed(path)
    small = freight.put(random_array(9, mib=2))
    assert np.array_equal(freight.get(small), random_array(9, mib=2))


_DRIVER = textwrap.dedent(
    """
    import json, os
    import numpy as np
    import freight
    from freight.testing import wait_for_condition

    info = freight.init(num_cpus=1)
    shm = os.path.join("/dev/shm", "freight-" + os.path.basename(info["session_dir"]))
    ref = freight.put(np.ones(4 << 20, dtype=np.uint8))
    del ref
    freight._api._worker.drain_dropped()
    pooled = wait_for_condition(
        lambda: [n for n in os.listdir(shm) if n.startswith("pool-")], 30, "a pooled segment"
    )
    freight.shutdown()
    print(json.dumps({"pooled": pooled, "folder_left": os.path.exists(shm)}))
    """
)


def test_shutdown_removes_pooled_segments() -> None:
    temp_dir = tempfile.mkdtemp(prefix="fr-", dir="/tmp")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _DRIVER],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "FREIGHT_TEMP_DIR": temp_dir},
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report["pooled"]) == 1
    assert report["folder_left"] is False
