"""A real multi-node cluster on this machine: three node agents, one driver.

Each node is its own agent process with its own session folder, object store and ports; tasks
reach workers of other nodes over TCP after the local agent spills their lease requests back.
The tests check that work lands where its resources and scheduling strategy say.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

import freight
from freight import state
from freight.testing import (
    Cluster,
    connected_cluster,
    wait_for_condition,
)
from freight.util.placement_group import (
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from freight.util.scheduling_strategies import (
    Exists,
    In,
    NodeAffinitySchedulingStrategy,
    NodeLabelSchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

# Moves the machine's memory use by a GiB or more, or measures it: one such file at a time.
pytestmark = pytest.mark.xdist_group("memory")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    big = 1_500_000_000  # room for the 1 GiB object on the nodes it moves between
    nodes = (
        {"num_cpus": 1, "labels": {"zone": "a"}, "object_store_memory": big},
        {
            "num_cpus": 2,
            "resources": {"special": 1},
            "labels": {"zone": "b", "disk": "ssd"},
            "object_store_memory": big,
        },
        {"num_cpus": 2, "labels": {"zone": "c"}},
    )
    with connected_cluster(*nodes) as c:
        yield c


@freight.remote
def where() -> str:
    return freight.get_runtime_context().get_node_id()


@freight.remote
def hold_where(seconds: float) -> str:
    time.sleep(seconds)  # keeps the worker busy so that concurrent tasks need other workers
    return freight.get_runtime_context().get_node_id()


@freight.remote
class Where:
    def node(self) -> str:
        return freight.get_runtime_context().get_node_id()

    def echo(self, value: Any) -> Any:
        return value


def test_nodes_and_resources_cover_the_whole_cluster(cluster: Cluster) -> None:
    alive = [n for n in freight.nodes() if n["Alive"]]
    assert {n["NodeID"] for n in alive} == {n.node_id for n in cluster.nodes}
    total = freight.cluster_resources()
    assert total["CPU"] == 5
    assert total["special"] == 1
    labels = {n["NodeID"]: n.get("Labels", {}) for n in alive}
    assert labels[cluster.nodes[1].node_id]["zone"] == "b"


def test_custom_resource_runs_on_the_node_that_has_it(cluster: Cluster) -> None:
    nodes = freight.get([where.options(resources={"special": 1}).remote() for _ in range(3)])
    assert set(nodes) == {cluster.nodes[1].node_id}


def test_more_cpus_than_a_node_has_fit_on_a_bigger_node(cluster: Cluster) -> None:
    nodes = freight.get(where.options(num_cpus=2).remote())
    assert nodes in {cluster.nodes[1].node_id, cluster.nodes[2].node_id}


def test_hard_node_affinity(cluster: Cluster) -> None:
    target = cluster.nodes[2].node_id
    strategy = NodeAffinitySchedulingStrategy(target, soft=False)
    got = freight.get([where.options(scheduling_strategy=strategy).remote() for _ in range(4)])
    assert set(got) == {target}


def test_hard_affinity_to_an_unknown_node_is_unschedulable(cluster: Cluster) -> None:
    strategy = NodeAffinitySchedulingStrategy("ab" * 16, soft=False)
    ref = where.options(scheduling_strategy=strategy).remote()
    with pytest.raises(freight.exceptions.TaskUnschedulableError, match="not alive"):
        freight.get(ref, timeout=30)


def test_soft_affinity_to_an_unknown_node_runs_elsewhere(cluster: Cluster) -> None:
    strategy = NodeAffinitySchedulingStrategy("cd" * 16, soft=True)
    got = freight.get(where.options(scheduling_strategy=strategy).remote(), timeout=30)
    assert got in {n.node_id for n in cluster.nodes}


def test_label_strategy(cluster: Cluster) -> None:
    strategy = NodeLabelSchedulingStrategy(hard={"zone": In("b", "c")}, soft={"disk": Exists()})
    got = freight.get([where.options(scheduling_strategy=strategy).remote() for _ in range(3)])
    assert set(got) <= {cluster.nodes[1].node_id, cluster.nodes[2].node_id}
    with pytest.raises(ValueError, match=r"use In\(\.\.\.\)"):
        where.options(scheduling_strategy=NodeLabelSchedulingStrategy(hard={"zone": "b"}))
    nowhere = NodeLabelSchedulingStrategy(hard={"zone": In("mars")})
    ref = where.options(scheduling_strategy=nowhere).remote()
    ready, _ = freight.wait([ref], timeout=2)
    assert not ready  # pending (infeasible), not run somewhere it must not run
    freight.cancel(ref)


def test_spread_uses_every_node(cluster: Cluster) -> None:
    refs = [hold_where.options(scheduling_strategy="SPREAD").remote(0.5) for _ in range(5)]
    assert set(freight.get(refs)) == {n.node_id for n in cluster.nodes}


def test_default_policy_spreads_once_the_local_node_is_busy(cluster: Cluster) -> None:
    refs = [hold_where.remote(1.0) for _ in range(5)]
    assert len(set(freight.get(refs))) >= 2


def test_bad_strategy_is_refused_with_what_to_write(cluster: Cluster) -> None:
    with pytest.raises(ValueError, match="SPREAD"):
        where.options(scheduling_strategy="PACK").remote()


def test_actor_lands_on_the_node_with_its_resource_and_answers_over_tcp(
    cluster: Cluster,
) -> None:
    a = Where.options(resources={"special": 1}).remote()
    assert freight.get(a.node.remote()) == cluster.nodes[1].node_id
    payload = b"x" * 50_000
    assert freight.get([a.echo.remote(payload) for _ in range(20)]) == [payload] * 20
    freight.kill(a)


def test_infeasible_task_runs_once_a_node_that_can_run_it_joins(cluster: Cluster) -> None:
    ref = where.options(resources={"late": 1}).remote()
    ready, _ = freight.wait([ref], timeout=1)
    assert not ready
    node = cluster.add_node(num_cpus=1, resources={"late": 1})
    try:
        assert freight.get(ref, timeout=60) == node.node_id
    finally:
        cluster.remove_node(node)
        wait_for_condition(
            lambda: node.node_id not in cluster.alive_node_ids(), 30, "the node to be removed"
        )


def test_actor_strategies(cluster: Cluster) -> None:
    target = cluster.nodes[2].node_id
    pinned = Where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(target)).remote()
    assert freight.get(pinned.node.remote()) == target
    spread = [Where.options(scheduling_strategy="SPREAD").remote() for _ in range(3)]
    assert len(set(freight.get([s.node.remote() for s in spread]))) >= 2
    labelled = Where.options(
        scheduling_strategy=NodeLabelSchedulingStrategy(hard={"zone": In("b")})
    ).remote()
    assert freight.get(labelled.node.remote()) == cluster.nodes[1].node_id
    nowhere = Where.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy("ef" * 16, soft=False)
    ).remote()
    with pytest.raises(freight.exceptions.RayActorError, match="not alive"):
        freight.get(nowhere.node.remote(), timeout=30)
    for a in (pinned, *spread, labelled):
        freight.kill(a)


@freight.remote
def make_bytes(size: int, seed: int) -> bytes:
    import hashlib

    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB of a known pattern
    return (block * (size // len(block) + 1))[:size]


@freight.remote
def digest(data: Any) -> tuple[str, str]:
    import hashlib

    return hashlib.sha256(memoryview(data)).hexdigest(), freight.get_runtime_context().get_node_id()


def expected_digest(size: int, seed: int) -> str:
    import hashlib

    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    return hashlib.sha256((block * (size // len(block) + 1))[:size]).hexdigest()


@pytest.mark.parametrize("size", [1024, 200 * 1024, 8 * 1024 * 1024 + 3])
def test_objects_made_on_another_node_arrive_intact(cluster: Cluster, size: int) -> None:
    import hashlib

    strategy = NodeAffinitySchedulingStrategy(cluster.nodes[2].node_id)
    data = freight.get(make_bytes.options(scheduling_strategy=strategy).remote(size, size))
    assert hashlib.sha256(data).hexdigest() == expected_digest(size, size)


def test_task_arguments_living_on_another_node(cluster: Cluster) -> None:
    import hashlib

    import numpy as np

    array = np.arange(3_000_000, dtype=np.int64)  # 24 MB: in the head node's store
    ref = freight.put(array)
    for node in cluster.nodes[1:3]:
        strategy = NodeAffinitySchedulingStrategy(node.node_id)
        got, ran_on = freight.get(digest.options(scheduling_strategy=strategy).remote(ref))
        assert ran_on == node.node_id
        assert got == hashlib.sha256(memoryview(array)).hexdigest()


def test_an_object_moves_between_two_other_nodes(cluster: Cluster) -> None:
    on_b = NodeAffinitySchedulingStrategy(cluster.nodes[1].node_id)
    on_c = NodeAffinitySchedulingStrategy(cluster.nodes[2].node_id)
    size = 5 * 1024 * 1024
    ref = make_bytes.options(scheduling_strategy=on_c).remote(size, 7)
    refs = [digest.options(scheduling_strategy=on_b).remote(ref) for _ in range(4)]
    assert {d for d, _ in freight.get(refs)} == {expected_digest(size, 7)}


def test_tasks_with_large_arguments_run_where_the_arguments_lie(cluster: Cluster) -> None:
    for node, seed in ((cluster.nodes[1], 10), (cluster.nodes[2], 11)):
        # Follow the arguments only to a node with room: wait until earlier work (actors of
        # other tests, leases held idle) has let go of every worker. The agents answer that
        # live; the head's view of free CPUs is up to a heartbeat old.
        _wait_for_no_leases()
        size = 4 * 1024 * 1024
        on_node = NodeAffinitySchedulingStrategy(node.node_id)
        ref = make_bytes.options(scheduling_strategy=on_node).remote(size, seed)
        freight.wait([ref], fetch_local=False)
        # Default strategy, submitted from the head node: it runs where its argument is (the
        # hybrid policy alone would keep it on the head node).
        got = []
        for _ in range(3):
            got.append(freight.get(digest.remote(ref)))
            _wait_for_no_leases()  # each a fresh lease
        assert {d for d, _ in got} == {expected_digest(size, seed)}
        assert [n for _, n in got] == [node.node_id] * 3, got


def test_an_owner_withdraws_lease_requests_it_no_longer_needs(
    cluster: Cluster, tmp_path: Any
) -> None:
    # Node 0 has one CPU. The first task holds it; the second waits in the owner's queue, and
    # the owner asks node 0's agent for a second worker. When the first ends, the second runs
    # on its worker and the queue is empty: the request still standing at the agent must be
    # withdrawn, or it takes the CPU whenever it comes free, and a task that needs the node
    # later finds it full. (The tasks wait on FIFOs, not on freight.get, which would lend
    # their CPU out while they wait.)
    _wait_for_no_leases()
    node = cluster.nodes[0]
    on_node = NodeAffinitySchedulingStrategy(node.node_id)
    fifos = [str(tmp_path / "first"), str(tmp_path / "second")]
    for path in fifos:
        os.mkfifo(path)
    before = _pending_leases(node)  # an infeasible task of another test may wait there
    refs = [read_fifo.options(scheduling_strategy=on_node).remote(p) for p in fifos]
    wait_for_condition(lambda: _pending_leases(node) == before + 1, 30, "a worker asked for")
    first = wait_for_condition(lambda: _writer(fifos[0]), 30, "the first task running")
    _open_gate(first, b"1")
    second = wait_for_condition(lambda: _writer(fifos[1]), 30, "the second task running")
    wait_for_condition(lambda: _pending_leases(node) == before, 30, "the request withdrawn")
    _open_gate(second, b"2")
    assert freight.get(refs) == ["1", "2"]


@freight.remote
def read_fifo(path: str) -> str:
    with open(path) as f:  # blocks until the test writes and closes its end
        return f.read()


def _writer(path: str) -> int | None:
    """The FIFO's write end once a task has it open for reading, else None."""
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return None


def _open_gate(fd: int | None, data: bytes) -> None:
    assert fd is not None
    os.write(fd, data)
    os.close(fd)


def _pending_leases(node: Any) -> int:
    """Lease requests waiting at ``node``'s agent, as its last heartbeat told the head."""
    row = state.get_node(node.node_id)
    assert row is not None
    return sum(row["pending_by_reason"].values())


def _wait_for_no_leases() -> None:
    wait_for_condition(
        lambda: not state.list_workers(["state=LEASED"]) and _cpus_free() == 5,
        30,
        "every worker back from its lease",
    )


def test_one_gibibyte_object_between_nodes(cluster: Cluster) -> None:
    size = 1 << 30
    on_b = NodeAffinitySchedulingStrategy(cluster.nodes[1].node_id)
    ref = make_bytes.options(scheduling_strategy=on_b).remote(size, 1)
    import hashlib

    data = freight.get(ref, timeout=300)
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == expected_digest(size, 1)
    del data, ref


# -- placement groups ---------------------------------------------------------------------------


def _cpus_free() -> float:
    return freight.available_resources().get("CPU", 0.0)


def test_strict_spread_group_puts_one_bundle_per_node(cluster: Cluster) -> None:
    pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert freight.get(pg.ready(), timeout=60) is True
    table = placement_group_table(pg)
    assert table["state"] == "CREATED"
    nodes = table["bundles_to_node_id"]
    assert sorted(nodes.values()) == sorted(n.node_id for n in cluster.nodes[:3])
    for index, node_id in nodes.items():
        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)
        assert freight.get(where.options(scheduling_strategy=strategy).remote()) == node_id
    any_bundle = PlacementGroupSchedulingStrategy(pg)
    assert freight.get(where.options(scheduling_strategy=any_bundle).remote()) in nodes.values()
    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"


def test_strict_pack_group_and_an_actor_in_it(cluster: Cluster) -> None:
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK", name="packed")
    assert pg.wait(timeout_seconds=60)
    assert get_placement_group("packed") == pg
    node_id = placement_group_table(pg)["bundles_to_node_id"][0]
    assert node_id in {cluster.nodes[1].node_id, cluster.nodes[2].node_id}  # the 2-CPU nodes
    actor = Where.options(
        num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1)
    ).remote()
    assert freight.get(actor.node.remote()) == node_id
    remove_placement_group(pg)  # its actor goes with it, as in Ray
    with pytest.raises(freight.exceptions.RayActorError):
        for _ in range(100):
            freight.get(actor.node.remote(), timeout=30)


def test_a_group_that_cannot_fit_reserves_nothing(cluster: Cluster) -> None:
    before = freight.cluster_resources()["CPU"]
    pg = placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")  # 3 nodes, 4 bundles
    assert not pg.wait(timeout_seconds=1)
    table = placement_group_table(pg)
    assert table["state"] == "PENDING" and table["bundles_to_node_id"] == {}
    assert "infeasible" in table["pending_reason"]
    # Nothing was held back: every CPU is still free for ordinary work.
    wait_for_condition(lambda: _cpus_free() == before, 30, "all CPUs to be free")
    # A wait in progress ends, False, when the group is removed (the head answers it then).
    import threading

    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(pg.wait(timeout_seconds=600)))
    waiter.start()
    remove_placement_group(pg)
    waiter.join(timeout=60)
    assert answers == [False]


def test_removed_groups_give_their_resources_back(cluster: Cluster) -> None:
    total = freight.cluster_resources()["CPU"]
    pg = placement_group([{"CPU": 2}], strategy="PACK")
    assert pg.wait(timeout_seconds=60)
    wait_for_condition(lambda: _cpus_free() == total - 2, 30, "the bundle's CPUs to be taken")
    remove_placement_group(pg)
    wait_for_condition(lambda: _cpus_free() == total, 30, "the bundle's CPUs to come back")


def test_bad_placement_groups_say_what_is_wrong(cluster: Cluster) -> None:
    with pytest.raises(ValueError, match="strategy must be one of"):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    with pytest.raises(ValueError, match="non-empty list"):
        placement_group([])
    with pytest.raises(ValueError, match="bundle 0"):
        placement_group([{"CPU": -1}])
    pg = placement_group([{"CPU": 1}])
    with pytest.raises(ValueError, match="bundle_index"):
        PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=3)
    with pytest.raises(ValueError, match="Failed to look up"):
        get_placement_group("no such group")
    import grpc

    from freight import _api
    from freight.protocol.generated import freight_pb2 as pb

    head = _api._require_worker().head
    for wait_s in (-1.0, 1e9):
        with pytest.raises(grpc.RpcError, match="wait_s must be between 0 and 60") as err:
            head.call("GetPlacementGroup", pb.GetPlacementGroupRequest(pg_id=pg.id, wait_s=wait_s))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert pg.wait(timeout_seconds=60)  # the head kept serving
    remove_placement_group(pg)


# -- security of the TCP data plane -------------------------------------------------------------


def _exchange_tcp(address: str, data: bytes) -> bytes:
    import socket

    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return got


@pytest.mark.parametrize("token", ["wrong-token", ""])
def test_tcp_data_plane_refuses_a_wrong_or_missing_token(cluster: Cluster, token: str) -> None:
    from freight.protocol import frames
    from freight.protocol import messages as m

    far = next(n for n in freight.nodes() if n["NodeID"] == cluster.nodes[2].node_id)
    address = far["DataAddress"]
    probe = frames.encode(m.Kind.REQUEST_LEASE, (1, {"CPU": 100.0}, "", "probe"))
    assert _exchange_tcp(address, frames.encode_hello(token, ("owner", "x")) + probe) == b""
    # The same request with the cluster's token is answered (a spillback or a rejection).
    good = frames.encode_hello(cluster._token(), ("owner", "x")) + probe
    assert _exchange_tcp(address, good) != b""
    # And the node keeps serving: work still lands there.
    strategy = NodeAffinitySchedulingStrategy(cluster.nodes[2].node_id)
    assert freight.get(where.options(scheduling_strategy=strategy).remote()) == far["NodeID"]


@freight.remote
def gpus_seen(hold: float) -> tuple[str, list[int], str]:
    time.sleep(hold)  # both tasks hold their GPU at once
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return freight.get_runtime_context().get_node_id(), freight.get_gpu_ids(), visible


@freight.remote
class GpuActor:
    def ids(self) -> list[int]:
        return freight.get_gpu_ids()


def test_gpu_tasks_and_actors_see_their_own_gpus(cluster: Cluster) -> None:
    node = cluster.add_node(num_cpus=3, num_gpus=2)
    try:
        first, second = freight.get(
            [gpus_seen.options(num_gpus=1).remote(0.5) for _ in range(2)], timeout=60
        )
        assert first[0] == second[0] == node.node_id
        assert sorted(first[1] + second[1]) == [0, 1]
        assert first[2] in ("0", "1") and first[2] != second[2]
        actor = GpuActor.options(num_gpus=1).remote()
        assert len(freight.get(actor.ids.remote(), timeout=60)) == 1
        freight.kill(actor)
        _, plain, _ = freight.get(where_gpus.remote())
        assert plain == []  # a task without GPUs is not given any
    finally:
        cluster.remove_node(node)
        wait_for_condition(
            lambda: node.node_id not in cluster.alive_node_ids(), 30, "the node to be removed"
        )


@freight.remote(num_cpus=0)
def where_gpus() -> tuple[str, list[int], str]:
    return freight.get_runtime_context().get_node_id(), freight.get_gpu_ids(), ""


def test_an_actor_whose_node_leaves_restarts_on_another(cluster: Cluster) -> None:
    from freight.state import get_actor

    node = cluster.add_node(num_cpus=1)
    try:
        strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=True)
        actor = Where.options(scheduling_strategy=strategy, max_restarts=1).remote()
        assert freight.get(actor.node.remote(), timeout=60) == node.node_id
    finally:
        cluster.remove_node(node)
        wait_for_condition(
            lambda: node.node_id not in cluster.alive_node_ids(), 30, "the node to be removed"
        )
    # The next call waits for the restart, which finds another node.
    moved = freight.get(actor.node.remote(), timeout=60)
    assert moved != node.node_id and moved in cluster.alive_node_ids()
    row = get_actor(actor._actor_id.hex())
    assert row["num_restarts"] == 1 and row["node_id"] == moved
    freight.kill(actor)
