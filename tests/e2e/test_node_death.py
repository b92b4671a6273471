"""A node agent is SIGKILLed in the middle of a job: its workers die with it, their tasks run
again on the other nodes, and a task that may not be retried says its node died."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import freight
from freight.testing import (
    Cluster,
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


def test_an_object_lost_with_its_node_raises_object_lost_not_a_hang(cluster: Cluster) -> None:
    doomed = cluster.add_node(num_cpus=1)
    strategy = NodeAffinitySchedulingStrategy(doomed.node_id, soft=False)
    ref = blob.options(scheduling_strategy=strategy).remote(2 * 1024 * 1024)  # in its store
    freight.wait([ref], fetch_local=False, timeout=60)
    cluster.remove_node(doomed, graceful=False)
    with pytest.raises(freight.exceptions.ObjectLostError) as err:
        freight.get(ref, timeout=60)  # a deadline far beyond the answer: it must not hang
    assert ref.hex() in str(err.value)
