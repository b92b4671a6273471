"""A cluster whose second node lives in a network namespace of its own, behind a bridge.

Everything between the head's machine and that node crosses a real network link: leases over
the TCP data plane, objects over gRPC, health checks. Cutting the link is a real partition: the
head marks the node dead by its health checks, and the node comes back when the link does.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

import freight
from freight.testing import (
    Cluster,
    connected_cluster,
    wait_for_condition,
)
from freight.util import netns
from freight.util.scheduling_strategies import NodeAffinitySchedulingStrategy

REASON = netns.unavailable_reason()
# Labs of one machine share /run/freight-netns and sweep_stale(): one lab-making file at a time.
pytestmark = pytest.mark.xdist_group("netns")
if REASON is not None and os.environ.get("CI") != "true":
    pytest.skip(f"network namespaces: {REASON}", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    assert REASON is None, f"CI must run the network tests: {REASON}"
    quick_checks = {  # so that a partition is noticed within seconds
        "FREIGHT_HEALTH_CHECK_PERIOD_S": "0.3",
        "FREIGHT_HEALTH_CHECK_TIMEOUT_S": "0.5",
        "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "3",
    }
    nodes = ({"num_cpus": 1}, {"num_cpus": 1, "resources": {"far": 1}})
    with connected_cluster(*nodes, env=quick_checks, network_namespaces=True) as c:
        yield c


@freight.remote
def node_and_ip() -> tuple[str, str]:
    import socket

    ctx = freight.get_runtime_context()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((os.environ["FREIGHT_NODE_IP"], 9))  # no packet is sent: picks the route
        return ctx.get_node_id(), s.getsockname()[0]


@freight.remote
def blob(size: int) -> bytes:
    return hashlib.sha256(b"netns").digest() * (size // 32)


def test_the_node_has_its_own_address(cluster: Cluster) -> None:
    far = cluster.nodes[1]
    assert far.ip != cluster.nodes[0].ip
    node_id, ip = freight.get(node_and_ip.options(resources={"far": 1}).remote())
    assert (node_id, ip) == (far.node_id, far.ip)


def test_objects_cross_the_link(cluster: Cluster) -> None:
    size = 4 * 1024 * 1024
    on_far = NodeAffinitySchedulingStrategy(cluster.nodes[1].node_id)
    data = freight.get(blob.options(scheduling_strategy=on_far).remote(size))
    assert data == hashlib.sha256(b"netns").digest() * (size // 32)


def test_a_partitioned_node_is_marked_dead_and_comes_back(cluster: Cluster) -> None:
    far = cluster.nodes[1]
    cluster.isolate(far)
    try:
        wait_for_condition(
            lambda: far.node_id not in cluster.alive_node_ids(),
            30,
            "the head to mark the isolated node dead",
        )
    finally:
        cluster.rejoin(far)
    wait_for_condition(
        lambda: far.node_id in cluster.alive_node_ids(), 30, "the node to register again"
    )
    node_id, _ = freight.get(node_and_ip.options(resources={"far": 1}).remote(), timeout=60)
    assert node_id == far.node_id
