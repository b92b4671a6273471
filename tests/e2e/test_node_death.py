"""A node agent is SIGKILLed in the middle of a job: its workers die with it, their tasks run
again on the other nodes, and a task that may not be retried says its node died."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import freight
from freight import state
from freight.objects import serialization as ser
from freight.protocol.messages import FreeObjects
from freight.testing import (
    Cluster,
    ClusterNode,
    connected_cluster,
    wait_for_condition,
)
from freight.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    quick_checks = {
        "FREIGHT_HEALTH_CHECK_PERIOD_S": "0.5",
        "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "3",
    }
    with connected_cluster({"num_cpus": 1}, {"num_cpus": 2}, env=quick_checks) as c:
        yield c


@freight.remote
def work(i: int, marker: str) -> tuple[int, str]:
    if marker:  # "a task runs on this node"
        Path(f"{marker}.{freight.get_runtime_context().get_node_id()}").touch()
    time.sleep(0.05)  # the work: long enough that the kill lands while tasks run
    return i * i, freight.get_runtime_context().get_node_id()


@freight.remote(max_retries=0)
def pinned_block(marker: str) -> None:
    Path(marker).touch()
    threading.Event().wait()


def test_tasks_of_a_killed_node_run_again_elsewhere(cluster: Cluster, tmp_path: Path) -> None:
    doomed = cluster.add_node(num_cpus=2)
    # Once a task pinned there has run, this node's agent knows the new node: SPREAD uses it.
    pinned = NodeAffinitySchedulingStrategy(doomed.node_id, soft=False)
    assert freight.get(work.options(scheduling_strategy=pinned).remote(0, ""))[1] == doomed.node_id
    marker = str(tmp_path / "ran")
    refs = [work.options(scheduling_strategy="SPREAD").remote(i, marker) for i in range(300)]
    # Kill the node once tasks are running on it.
    on_doomed = Path(f"{marker}.{doomed.node_id}")
    wait_for_condition(on_doomed.exists, 60, "tasks to be running on the node")
    cluster.remove_node(doomed, graceful=False)
    killed = time.monotonic()
    results = freight.get(refs, timeout=300)
    done = time.monotonic()
    assert [r for r, _ in results] == [i * i for i in range(300)]
    # Tasks that were running on the node when it died ran again, on the nodes left: the
    # owner's own records of them (the state API gets them with its next report).
    records = freight._api._require_worker().tasks.history
    again = [r for r in records if r.name == "work" and r.attempt > 0]
    assert again, "no task was running on the node when it died: the test proves nothing"
    finished_there = sum(node == doomed.node_id for _, node in results)
    print(
        f"\nnode killed; {len(again)} tasks ran again elsewhere ({finished_there} had finished "
        f"there); all 300 results {done - killed:.2f} s later"
    )


def test_a_pinned_task_without_retries_fails_with_node_died(
    cluster: Cluster, tmp_path: Path
) -> None:
    doomed = cluster.add_node(num_cpus=1)
    marker = tmp_path / "started"
    strategy = NodeAffinitySchedulingStrategy(doomed.node_id, soft=False)
    ref = pinned_block.options(scheduling_strategy=strategy).remote(str(marker))
    wait_for_condition(marker.exists, 60, "the task to start on its node")
    cluster.remove_node(doomed, graceful=False)
    with pytest.raises(freight.exceptions.NodeDiedError, match="node running task"):
        freight.get(ref, timeout=60)


@freight.remote
def blob(size: int) -> bytes:
    return b"x" * size


MIB = 1024 * 1024


def test_an_object_that_cannot_be_rebuilt_raises_object_lost_not_a_hang(
    cluster: Cluster,
) -> None:
    doomed = cluster.add_node(num_cpus=1)
    strategy = NodeAffinitySchedulingStrategy(doomed.node_id, soft=False)
    # max_retries=0: the task may not run again, so what it made cannot be rebuilt.
    ref = blob.options(scheduling_strategy=strategy, max_retries=0).remote(2 * MIB)
    freight.wait([ref], fetch_local=False, timeout=60)
    cluster.remove_node(doomed, graceful=False)
    with pytest.raises(freight.exceptions.ObjectLostError) as err:
        freight.get(ref, timeout=60)  # a deadline far beyond the answer: it must not hang
    assert ref.hex() in str(err.value)
    assert "cannot be rebuilt" in str(err.value)


@freight.remote
def filled(i: int, size: int) -> bytes:
    return bytes([i % 256]) * size


@freight.remote
def doubled(data: bytes) -> bytes:
    return data + data


@freight.remote
def ident(x: int) -> int:
    return x


def _rebuilt(name: str) -> list[int]:
    """Attempt numbers of the owner's finished tasks called ``name`` that ran again."""
    records = freight._api._require_worker().tasks.history
    return [r.attempt for r in records if r.name == name and r.attempt > 0]


def test_a_return_stored_again_on_its_node_keeps_the_first_value(cluster: Cluster) -> None:
    """A task run twice on one node (a rebuild racing the free of its earlier value, a re-sent
    push) stores the same return id twice: the second run keeps the value already there, as
    Ray's store answers ObjectExists, instead of failing the task."""
    w = freight._api._require_worker()
    oid = w.new_id()
    first = w.encode(ser.serialize(b"a" * MIB), oid, w.address)
    again = w.encode(ser.serialize(b"b" * 2 * MIB), oid, w.address)  # through the agent
    assert again == first
    assert w.decode(again) == b"a" * MIB  # a reader of the first never sees other bytes
    # Another owner's object under the same id is refused: the writer's failure, not a
    # value to share.
    with pytest.raises(ValueError, match="already in the store"):
        w.encode(ser.serialize(b"c" * MIB), oid, "127.0.0.1:1")
    w.agent.send(FreeObjects([oid]))


def _store_of(ref: freight.ObjectRef) -> str:
    """The store (folder) that holds the owner's copy of ``ref``."""
    value = freight._api._require_worker().slots[ref.binary()].value
    assert value is not None and value[0] == "s", value
    return os.path.dirname(value[1])


def _add_known_node(cluster: Cluster, num_cpus: int) -> tuple[ClusterNode, str]:
    """A new node, and its store, once this node's agent knows it (a task pinned there has
    run, so a soft affinity to it is not given up on as a node nobody has heard of)."""
    node = cluster.add_node(num_cpus=num_cpus)
    pinned = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
    probe = filled.options(scheduling_strategy=pinned).remote(0, 2 * MIB)
    freight.wait([probe], fetch_local=False, timeout=60)
    return node, _store_of(probe)


def test_objects_lost_with_a_killed_node_are_rebuilt_from_lineage(cluster: Cluster) -> None:
    doomed, doomed_store = _add_known_node(cluster, 4)
    there = NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)
    made = [filled.options(scheduling_strategy=there).remote(i, 2 * MIB) for i in range(6)]
    # Chains whose first link's value is freed once the second has run: rebuilding the
    # second needs the first rebuilt too.
    firsts = [filled.options(scheduling_strategy=there).remote(100 + i, MIB) for i in range(3)]
    first_ids = [f.binary() for f in firsts]
    chained = [doubled.options(scheduling_strategy=there).remote(f) for f in firsts]
    del firsts
    # And chains whose first link is small, passed inline, and freed: its value travels in
    # the second's spec, so only the second runs again.
    seeded = [
        filled.options(scheduling_strategy=there).remote(ident.remote(200 + i), MIB)
        for i in range(3)
    ]
    made += seeded
    ready, _ = freight.wait(made + chained, num_returns=12, fetch_local=False, timeout=120)
    assert len(ready) == 12
    # The first links are freed once the second tasks have run, a moment later (the owner's
    # housekeeping lets them go, then their stores delete them): wait for that, so the kill
    # finds them gone and their rebuilds are the ones counted below.
    w = freight._api._require_worker()
    wait_for_condition(
        lambda: (
            not any(o in w.slots for o in first_ids)
            and not state.list_objects(
                [
                    ("object_id", "~", "|".join(o.hex() for o in first_ids)),
                    ("owner_address", "!=", ""),  # primaries: copies pulled elsewhere may stay
                ]
            )
        ),
        30,
        "the chains' first links to be freed",
    )
    lost_made = sum(_store_of(r) == doomed_store for r in made)
    lost_chained = sum(_store_of(r) == doomed_store for r in chained)
    assert lost_made + lost_chained, "nothing lay on the node: the test proves nothing"
    before = (len(_rebuilt("ident")),)
    lineage = w.submitter.lineage
    task_of = {
        oid: e.spec.task_id
        for oid in [r.binary() for r in made + chained] + first_ids
        if (e := lineage.spec_of(oid)) is not None
    }
    lost_ids = [r.binary() for r in made + chained if _store_of(r) == doomed_store]
    cluster.remove_node(doomed, graceful=False)
    killed = time.monotonic()
    futures = [ref.future() for ref in made]  # (what `await ref` waits on)
    values = freight.get(made + chained, timeout=300)
    took = time.monotonic() - killed
    assert [f.result(timeout=300) for f in futures] == values[:9]
    for i, v in enumerate(values[:6]):
        assert v == bytes([i]) * 2 * MIB
    for i, v in enumerate(values[6:9]):
        assert v == bytes([200 + i]) * MIB
    for i, v in enumerate(values[9:]):
        assert v == bytes([100 + i]) * 2 * MIB
    # Each lost object was rebuilt by running its task again (on the nodes left: the affinity
    # was soft); a lost chain's freed first link ran again at most once; nothing else ran
    # again (two readers finding one object lost at once start one rebuild, even when the
    # first rebuild has finished before the second reader asks).
    again = Counter(
        r.task_id for r in freight._api._require_worker().tasks.history if r.attempt > 0
    )
    assert all(again[task_of[o]] == 1 for o in lost_ids), [again[task_of[o]] for o in lost_ids]
    assert all(again[task_of[o]] <= 1 for o in first_ids)
    ours = {task_of[o] for o in lost_ids + first_ids}
    assert not [t for t in again if t in task_of.values() and t not in ours]
    assert len(_rebuilt("ident")) == before[0]
    assert all(_store_of(r) != doomed_store for r in made + chained)
    print(
        f"\nnode killed; {lost_made + lost_chained} lost objects rebuilt and all 12 read "
        f"{took:.2f} s later"
    )


@freight.remote
def part(i: int, marker: str) -> tuple[int, str, bytes]:
    node = freight.get_runtime_context().get_node_id()
    Path(f"{marker}.{node}.{i}").touch()
    time.sleep(0.05)  # the work: long enough that the kill lands while some run
    return i, node, bytes([i % 256]) * MIB  # in the store of the node that ran it


def test_a_job_whose_node_agent_is_killed_mid_job_completes(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Tasks running on the node run again elsewhere, and results that lay in its store
    (finished there before the kill) are rebuilt: every result comes back, correct."""
    doomed = cluster.add_node(num_cpus=2)
    pinned = NodeAffinitySchedulingStrategy(doomed.node_id, soft=False)
    assert freight.get(work.options(scheduling_strategy=pinned).remote(0, ""))[1] == doomed.node_id
    marker = str(tmp_path / "ran")
    refs = [part.options(scheduling_strategy="SPREAD").remote(i, marker) for i in range(120)]

    def started_there() -> int:
        return len(list(tmp_path.glob(f"ran.{doomed.node_id}.*")))

    wait_for_condition(lambda: started_there() >= 6, 60, "tasks to have run on the node")
    cluster.remove_node(doomed, graceful=False)
    killed = time.monotonic()
    results = freight.get(refs, timeout=300)
    took = time.monotonic() - killed
    assert [(i, data) for i, _, data in results] == [
        (i, bytes([i % 256]) * MIB) for i in range(120)
    ]
    assert all(node != doomed.node_id for _, node, _ in results)  # nothing read from the dead
    lineage = freight._api._require_worker().submitter.lineage
    rebuilt = sum(e.rebuilds for e in (lineage.spec_of(r.binary()) for r in refs) if e)
    records = freight._api._require_worker().tasks.history
    rerun = [r for r in records if r.name == "part" and r.attempt > 0]
    assert rebuilt, "no finished result lay on the node: the test proves nothing"
    print(
        f"\nnode killed mid-job: {rebuilt} results rebuilt, {len(rerun) - rebuilt} running "
        f"tasks run again; all 120 results {took:.2f} s later"
    )


@freight.remote
def reads(data: bytes) -> int:
    return len(data)


def test_a_task_whose_argument_was_lost_runs_once_it_is_rebuilt(cluster: Cluster) -> None:
    doomed, doomed_store = _add_known_node(cluster, 2)  # one CPU more than the probe holds
    there = NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)
    arg = filled.options(scheduling_strategy=there).remote(7, 3 * MIB)
    freight.wait([arg], fetch_local=False, timeout=60)
    assert _store_of(arg) == doomed_store
    before = len(_rebuilt("filled"))
    cluster.remove_node(doomed, graceful=False)
    # Submitted after the death: its worker finds the argument gone, the owner rebuilds it.
    assert freight.get([reads.remote(arg) for _ in range(4)], timeout=300) == [3 * MIB] * 4
    assert len(_rebuilt("filled")) - before == 1  # once, however many tasks wanted it
    records = freight._api._require_worker().tasks.history
    waited = [
        r
        for r in records
        if r.name == "reads" and any("lost: rebuilding it" in t.cause for t in r.transitions)
    ]
    assert waited, "no task found its argument lost: the test proves nothing"
    assert all(r.attempt == 0 for r in waited)  # waiting for an argument costs no retry


@freight.remote
def repeated(items: list[bytes], times: int) -> bytes:
    return items[0] * times


def test_a_lost_object_made_from_a_large_value_argument_is_rebuilt(cluster: Cluster) -> None:
    """The value (over the inline limit, in a list) went to the caller's store rather than in
    the call; the spec lineage keeps holds it, so the rebuild still has its argument."""
    doomed, doomed_store = _add_known_node(cluster, 2)
    there = NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)
    seed = bytes(range(256)) * 1024  # 256 KiB
    ref = repeated.options(scheduling_strategy=there).remote([seed], 8)
    freight.wait([ref], fetch_local=False, timeout=60)
    assert _store_of(ref) == doomed_store
    before = len(_rebuilt("repeated"))
    cluster.remove_node(doomed, graceful=False)
    assert freight.get(ref, timeout=300) == seed * 8
    assert len(_rebuilt("repeated")) - before == 1


def test_lineage_evicted_under_its_memory_bound_fails_clearly(cluster: Cluster) -> None:
    lineage = freight._api._require_worker().submitter.lineage
    bound = lineage.max_bytes
    lineage.max_bytes = 1  # FREIGHT_LINEAGE_MAX_BYTES for this driver: no room for any spec
    try:
        doomed = cluster.add_node(num_cpus=1)
        there = NodeAffinitySchedulingStrategy(doomed.node_id, soft=False)
        ref = filled.options(scheduling_strategy=there).remote(1, 2 * MIB)
        freight.wait([ref], fetch_local=False, timeout=60)
    finally:
        lineage.max_bytes = bound
    cluster.remove_node(doomed, graceful=False)
    with pytest.raises(freight.exceptions.ObjectReconstructionFailedError) as err:
        freight.get(ref, timeout=60)
    assert "FREIGHT_LINEAGE_MAX_BYTES" in str(err.value)


@freight.remote
def put_there(size: int) -> list[freight.ObjectRef]:
    return [freight.put(b"p" * size)]  # owned by this worker, stored on its node


def test_an_object_whose_owner_died_with_its_node_raises_owner_died(cluster: Cluster) -> None:
    doomed = cluster.add_node(num_cpus=1)
    strategy = NodeAffinitySchedulingStrategy(doomed.node_id, soft=False)
    [inner] = freight.get(put_there.options(scheduling_strategy=strategy).remote(2 * MIB))
    cluster.remove_node(doomed, graceful=False)
    with pytest.raises(freight.exceptions.OwnerDiedError) as err:
        freight.get(inner, timeout=60)
    assert inner.hex() in str(err.value)
