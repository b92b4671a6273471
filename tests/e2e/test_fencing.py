"""A node the head declared dead fences itself before it rejoins: no actor runs twice.

A gray failure: the node's agent is SIGSTOPped (its workers run on) past the health checks'
threshold. The head declares the node dead, restarts its restartable actor on another node and
marks its other actor DEAD. When the agent runs again, its heartbeat learns that this
incarnation of the node was declared dead: it stops every worker and registers as a new
incarnation. The old actor processes are gone, old handles reach the one live incarnation (or
fail), and the head refuses the old incarnation's registrations and heartbeats. The same holds
for a node cut off by a real partition (a network namespace) that heals.

Health checks are quick (period 0.2 s, timeout 0.3 s, 3 in a row: a stopped agent is found dead
within 1.1 s).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psutil
import pytest

import freight
from freight import state
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.testing import Cluster, ClusterNode, connected_cluster, wait_for_condition
from freight.util import netns
from freight.util.grpc_auth import read_token, sync_channel
from freight.util.scheduling_strategies import NodeAffinitySchedulingStrategy

QUICK = {
    "FREIGHT_HEALTH_CHECK_PERIOD_S": "0.2",
    "FREIGHT_HEALTH_CHECK_TIMEOUT_S": "0.3",
    "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "3",
}
WAIT_S = 60.0
NETNS = netns.unavailable_reason()
# Labs of one machine share /run/freight-netns and sweep_stale(): one lab-making file at a time.
pytestmark = pytest.mark.xdist_group("netns")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with connected_cluster({"num_cpus": 1}, {"num_cpus": 1}, env=QUICK) as c:
        yield c


@freight.remote(num_cpus=0)
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n

    def where(self) -> tuple[int, str]:
        return os.getpid(), freight.get_runtime_context().get_node_id()


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def head_stub(cluster: Cluster) -> tuple[grpc.Channel, pb_grpc.HeadServiceStub]:
    channel = sync_channel(cluster.address, read_token(cluster.session_dir))
    return channel, pb_grpc.HeadServiceStub(channel)


def node_record(stub: pb_grpc.HeadServiceStub, node_id: str) -> pb.NodeInfo:
    nodes = stub.ListNodes(pb.ListNodesRequest(include_dead=True), timeout=10).nodes
    return next(n for n in nodes if n.node_id == node_id)


def actor_row(name: str) -> dict[str, Any]:
    rows = state.list_actors(filters=[f"name={name}"], detail=True)
    assert len(rows) == 1, rows
    return rows[0]


def place_on(node: ClusterNode) -> dict[str, Any]:
    # Soft: once its node is dead, a restart may go anywhere.
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=True)}


def fenced_after(
    cluster: Cluster, far: ClusterNode, cut: Callable[[], None], heal: Callable[[], None], what: str
) -> None:
    """Put two actors on ``far``, cut it off with ``cut`` until the head has given them up,
    ``heal``, and check that the node fenced itself: one incarnation of each actor at most."""
    restartable = Counter.options(name=f"{what}-restartable", max_restarts=-1, **place_on(far))
    doomed = Counter.options(name=f"{what}-plain", **place_on(far))
    r, d = restartable.remote(), doomed.remote()
    (r_pid, r_node), (d_pid, d_node) = freight.get([r.where.remote(), d.where.remote()])
    assert r_node == d_node == far.node_id
    assert freight.get([r.add.remote(), d.add.remote()]) == [1, 1]
    channel, stub = head_stub(cluster)
    try:
        before = node_record(stub, far.node_id)

        cut()
        try:
            wait_for_condition(
                lambda: far.node_id not in cluster.alive_node_ids(), WAIT_S, "NODE_DEAD"
            )
            wait_for_condition(
                lambda: (
                    actor_row(f"{what}-restartable")["state"] == "ALIVE"
                    and actor_row(f"{what}-restartable")["pid"] != r_pid
                ),
                WAIT_S,
                "the restartable actor restarted on the other node",
            )
            assert actor_row(f"{what}-plain")["state"] == "DEAD"
            # The gray failure: the head gave both up, and their processes still run.
            assert running(r_pid) and running(d_pid)
        finally:
            heal()
        healed = time.monotonic()

        wait_for_condition(
            lambda: not running(r_pid) and not running(d_pid),
            WAIT_S,
            "the old actor processes to be stopped by their fenced node",
        )
        wait_for_condition(
            lambda: far.node_id in cluster.alive_node_ids(), WAIT_S, "the node to rejoin"
        )
        # Exactly one incarnation serves: old handles and a fresh lookup reach the same one,
        # with the state of the restarted actor (its constructor ran again).
        new_pid, _ = freight.get(r.where.remote(), timeout=WAIT_S)
        assert freight.get(r.add.remote(), timeout=WAIT_S) == 1
        looked_up = freight.get_actor(f"{what}-restartable")
        assert freight.get(looked_up.where.remote(), timeout=WAIT_S)[0] == new_pid
        assert new_pid != r_pid and running(new_pid)
        assert actor_row(f"{what}-restartable")["pid"] == new_pid
        with pytest.raises(freight.exceptions.RayActorError):
            freight.get(d.add.remote(), timeout=WAIT_S)
        healthy = time.monotonic() - healed

        # The node came back as a new incarnation, and says it fenced itself.
        after = node_record(stub, far.node_id)
        assert after.state == "ALIVE" and before.incarnation
        assert after.incarnation != before.incarnation
        fenced = wait_for_condition(
            lambda: state.list_events(filters=[f"node_id={far.node_id}", "kind=NODE_FENCED"]),
            WAIT_S,
            "the NODE_FENCED event",
        )
        assert str(r_pid) in fenced[-1]["message"] and str(d_pid) in fenced[-1]["message"]
        # The old incarnation is refused: its registration, and its heartbeats must fence.
        with pytest.raises(grpc.RpcError) as refused:
            stub.RegisterNode(pb.RegisterNodeRequest(node=before), timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "new incarnation" in (refused.value.details() or "")
        beat = stub.Heartbeat(
            pb.HeartbeatRequest(node_id=far.node_id, incarnation=before.incarnation), timeout=10
        )
        assert beat.fence and beat.reregister
        assert node_record(stub, far.node_id).incarnation == after.incarnation
        print(f"\n{what}: fenced, healthy with one incarnation {healthy:.2f} s after it ended")
    finally:
        channel.close()
        freight.kill(r)


def test_an_agent_stopped_past_the_health_checks_fences_itself_before_it_rejoins(
    cluster: Cluster,
) -> None:
    far = cluster.nodes[1]
    fenced_after(
        cluster,
        far,
        lambda: far.process.send_signal(signal.SIGSTOP),
        lambda: far.process.send_signal(signal.SIGCONT),
        "stopped",
    )


@pytest.mark.skipif(NETNS is not None and os.environ.get("CI") != "true", reason=f"{NETNS}")
def test_a_partitioned_node_fences_itself_before_it_rejoins() -> None:
    assert NETNS is None, f"CI must run the network tests: {NETNS}"
    nodes = ({"num_cpus": 1}, {"num_cpus": 1})
    with connected_cluster(*nodes, env=QUICK, network_namespaces=True) as partitioned:
        far = partitioned.nodes[1]
        fenced_after(
            partitioned,
            far,
            lambda: partitioned.isolate(far),
            lambda: partitioned.rejoin(far),
            "partitioned",
        )
