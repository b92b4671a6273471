"""Object spilling on a real node: three times the store's capacity goes through, nothing lost.

A one-node cluster with a 64 MiB store (spilling above 80%): puts, task returns and task
arguments far beyond the capacity spill to disk and come back when read; the agent's /metrics
count the spills and restores; an object larger than the whole store still fails, clearly.
First, on two nodes of their own, objects spilled on one node are read from the other.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import freight
from freight._api import _require_worker
from freight.cli.status import status_report
from freight.exceptions import ObjectLostError, ObjectStoreFullError
from freight.state import list_objects
from freight.testing import Cluster, local_cluster, patched_environ, short_temp_dir
from freight.testing import wait_for_condition as wait_until

# Workers cannot import this test module: ship the remote functions below by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MiB = 1024 * 1024
STORE_CAPACITY = 64 * MiB
OBJECT_BYTES = 4 * MiB


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    # Its own cluster: another module's shared one is shut down first.
    with local_cluster(num_cpus=1, object_store_memory=STORE_CAPACITY) as info:
        yield info


def block(n: int, nbytes: int = OBJECT_BYTES) -> np.ndarray:
    """``nbytes`` of content that differs for every ``n``."""
    return np.random.default_rng(n).integers(0, 2**63, nbytes // 8, dtype=np.int64)


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array))).hexdigest()


@freight.remote
def make_block(n: int) -> np.ndarray:
    return block(n, 8 * MiB)


@freight.remote
def checksum(array: np.ndarray) -> str:
    return digest(array)


@freight.remote(resources={"far": 1})
def far_checksum(array: np.ndarray) -> str:
    return digest(array)


@freight.remote(resources={"far": 1})
def far_block(n: int) -> np.ndarray:
    return block(n)


def node_metrics() -> dict[str, float]:
    """The spill and restore counters of the node agent's /metrics."""
    w = _require_worker()
    (node,) = status_report(w.head_address, w.token).nodes
    with urllib.request.urlopen(f"http://{node.metrics_address}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(("freight_object_spilled", "freight_object_restored"))
    }


def spill_files() -> list[str]:
    folder = os.path.join(_require_worker().session_dir, "spill")
    return os.listdir(folder) if os.path.isdir(folder) else []


def wait_for_no_spill_files(what: str) -> None:
    """Freed objects take their spill files with them."""
    try:
        wait_until(lambda: not spill_files(), timeout=30, what=f"spill files removed {what}")
    except TimeoutError as e:
        raise AssertionError(f"{e}; left: {spill_files()}") from None


# First, before the module's one-node cluster starts: this test brings its own two nodes.
def test_objects_spilled_on_one_node_are_read_from_another() -> None:
    if freight.is_initialized():
        freight.shutdown()  # another module's shared cluster
    with (
        short_temp_dir() as tmp,
        patched_environ(FREIGHT_TEMP_DIR=str(tmp), FREIGHT_TOKEN=None, FREIGHT_ADDRESS=None),
        Cluster() as c,
    ):
        c.add_node(num_cpus=1, object_store_memory=STORE_CAPACITY)
        c.add_node(num_cpus=1, resources={"far": 1}, object_store_memory=STORE_CAPACITY)
        freight.init(address=c.address)
        try:
            count = 3 * STORE_CAPACITY // OBJECT_BYTES
            # Spilled on the driver's node, pulled by the other one's worker as arguments.
            refs = [freight.put(block(n)) for n in range(count)]
            sums = freight.get([far_checksum.remote(ref) for ref in refs[:8]], timeout=120)
            assert sums == [digest(block(n)) for n in range(8)]
            del refs
            # Made and spilled on the other node, pulled here by get.
            returns = [far_block.remote(100 + n) for n in range(count)]
            freight.wait(returns, num_returns=count, timeout=120)
            for n, ref in enumerate(returns):
                array = freight.get(ref, timeout=120)
                assert digest(array) == digest(block(100 + n)), n
                del array
            del returns, ref
        finally:
            freight.shutdown()


def test_putting_three_times_the_capacity_loses_nothing(cluster: dict[str, Any]) -> None:
    count = 3 * STORE_CAPACITY // OBJECT_BYTES  # 48 objects of 4 MiB
    expected = [digest(block(n)) for n in range(count)]
    refs = [freight.put(block(n)) for n in range(count)]
    assert spill_files(), "nothing was spilled"
    # The state API and its summary tell spilled objects from those in memory.
    from freight.state import list_objects, summarize_objects

    def spilled_now() -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        # The agent spills in the background, so an object may go to disk between the two
        # reads: take a pair of reads between which nothing moved.
        spilled = list_objects(filters=["spilled=true"], limit=1000)
        (per_node,) = summarize_objects()["by_node"].values()
        return (spilled, per_node) if per_node["spilled"] == len(spilled) else None

    spilled, per_node = wait_until(spilled_now, 30, "a list and a summary of the same spills")
    assert spilled and all(r["spilled"] and r["size"] >= OBJECT_BYTES for r in spilled)
    assert per_node["spilled_bytes"] == sum(r["size"] for r in spilled)

    for n, ref in enumerate(refs):
        array = freight.get(ref)
        assert digest(array) == expected[n], n
        del array  # its mapping keeps the object in memory; let it go

    figures = wait_until(
        lambda: (f := node_metrics()).get("freight_object_restored_total", 0) > 0 and f,
        timeout=30,
        what="restore counters on /metrics",
    )
    assert figures["freight_object_spilled_total"] >= count - STORE_CAPACITY // OBJECT_BYTES
    assert figures["freight_object_spilled_bytes_total"] >= OBJECT_BYTES * (count - 16)
    assert figures["freight_object_restored_bytes_total"] >= OBJECT_BYTES
    del refs, ref
    wait_for_no_spill_files("after the refs were dropped")


def test_freight_memory_says_which_objects_are_spilled(cluster: dict[str, Any]) -> None:
    count = 2 * STORE_CAPACITY // OBJECT_BYTES
    refs = [freight.put(block(2000 + n)) for n in range(count)]
    assert spill_files(), "nothing was spilled"
    w = _require_worker()
    cli = os.path.join(os.path.dirname(sys.executable), "freight")
    # The cluster's sessions live in a temp folder of their own: name it, as its user would.
    env = dict(os.environ, FREIGHT_TOKEN=w.token, FREIGHT_TEMP_DIR=os.path.dirname(w.session_dir))
    args = [cli, "memory", "--address", w.head_address, "--group-by", "none"]
    proc = subprocess.run(
        [*args, "-o", "json"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["object_id"]: r for r in json.loads(proc.stdout)["items"]}
    said = {ref.hex(): rows[ref.hex()]["where"] for ref in refs}
    # (Nothing reads them, so nothing comes back from disk: what was spilled then still is.)
    on_disk = {r["object_id"] for r in list_objects(filters=["spilled=true"], limit=1000)}
    spilled = {oid for oid, where in said.items() if where == "spilled to disk"}
    assert spilled and spilled <= on_disk, (spilled, on_disk)
    assert set(said.values()) == {"spilled to disk", "shared memory"}
    table = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert table.returncode == 0, table.stderr
    assert re.search(r"in \d+ spilled", table.stdout), table.stdout
    del refs
    wait_for_no_spill_files("after the puts were dropped")


def test_task_returns_beyond_the_capacity_come_back(cluster: dict[str, Any]) -> None:
    count = 3 * STORE_CAPACITY // (8 * MiB)  # 24 returns of 8 MiB
    refs = [make_block.remote(n) for n in range(count)]
    freight.wait(refs, num_returns=count, timeout=120)
    assert spill_files(), "nothing was spilled"
    for n, ref in enumerate(refs):
        array = freight.get(ref)
        assert digest(array) == digest(block(n, 8 * MiB)), n
        del array
    del refs, ref
    wait_for_no_spill_files("after the returns were dropped")


def test_spilled_task_arguments_are_restored_for_the_worker(cluster: dict[str, Any]) -> None:
    count = 2 * STORE_CAPACITY // OBJECT_BYTES
    refs = [freight.put(block(1000 + n)) for n in range(count)]
    assert spill_files(), "nothing was spilled"
    restored = node_metrics().get("freight_object_restored_total", 0.0)
    # The oldest objects are the ones on disk now.
    sums = freight.get([checksum.remote(ref) for ref in refs[:8]], timeout=120)
    assert sums == [digest(block(1000 + n)) for n in range(8)]
    wait_until(
        lambda: node_metrics().get("freight_object_restored_total", 0.0) >= restored + 8,
        timeout=30,
        what="the arguments' restores on /metrics",
    )
    del refs
    wait_for_no_spill_files("after the arguments were dropped")


def test_an_object_larger_than_the_store_still_fails_clearly(cluster: dict[str, Any]) -> None:
    too_big = np.zeros(STORE_CAPACITY + 8 * MiB, dtype=np.uint8)  # pages are never touched
    with pytest.raises(ObjectStoreFullError) as info:
        freight.put(too_big)
    message = str(info.value)
    assert "72.0 MiB" in message, message  # the object
    assert "larger than the whole store (64.0 MiB)" in message, message
    assert "--object-store-memory" in message, message
    del too_big, info
    # The cluster keeps serving, spilling included.
    refs = [freight.put(block(2000 + n)) for n in range(20)]
    assert digest(freight.get(refs[0])) == digest(block(2000))
    assert freight.get(checksum.remote(refs[1])) == digest(block(2001))
    del refs
    wait_for_no_spill_files("after the failed put")


@pytest.mark.parametrize("damage", ["truncated", "missing", "corrupted"])
def test_a_damaged_spill_file_is_a_lost_object_that_says_what_happened(
    cluster: dict[str, Any], damage: str
) -> None:
    count = 2 * STORE_CAPACITY // OBJECT_BYTES
    refs = [freight.put(block(3000 + n)) for n in range(count)]
    on_disk = {r["object_id"] for r in list_objects(filters=["spilled=true"], limit=1000)}
    victim, intact = [ref for ref in refs if ref.hex() in on_disk][:2]
    path = os.path.join(_require_worker().session_dir, "spill", victim.hex())
    if damage == "truncated":
        os.truncate(path, os.path.getsize(path) // 2)
    elif damage == "missing":
        os.unlink(path)
    else:  # one bit, in the middle of the array's bytes
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            byte = f.read(1)[0]
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte ^ 0x04]))
    with pytest.raises(ObjectLostError) as info:
        freight.get(victim, timeout=60)
    message = str(info.value)
    assert f"this node's spill file {path} is {damage}" in message, message
    assert "died" not in message, message  # no node died: the message must not say one did
    # The node serves on: the other objects come back intact.
    assert digest(freight.get(intact, timeout=60)) == digest(block(3000 + refs.index(intact)))
    del refs, victim, intact, info
