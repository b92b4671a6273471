"""The runtime's RPC fault hooks (freight.util.rpc_faults) on a real two-node cluster: switched
through the head's operator API with the admin token only, a delayed method waits, a failed one
ends with its code, a seeded fraction hits the same calls again, every fault ends at its expiry
with nobody clearing it, heartbeats that fail for a while leave the node alive; and on a real
data-plane socket, a failed message kind closes its connection and a delayed one waits. With no
fault in force every call goes straight through."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import grpc
import pytest

import freight
from freight import actions, state
from freight.client import access
from freight.protocol import messages as m
from freight.protocol.aio import AioConn, serve_connection
from freight.protocol.frames import encode_hello, frame_of
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.testing import Cluster, connected_cluster, wait_for_condition
from freight.util.grpc_auth import sync_channel
from freight.util.rpc_faults import FAULTS, FaultSpec, FaultTable, RpcFaultInterceptor
from freight.util.tokens import readonly_token

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with connected_cluster({"num_cpus": 1}, {"num_cpus": 1}) as c:
        yield c


@pytest.fixture
def head(cluster: Cluster) -> Iterator[pb_grpc.HeadServiceStub]:
    channel = sync_channel(cluster.address, cluster._token())
    yield pb_grpc.HeadServiceStub(channel)
    actions.clear_rpc_faults(address=cluster.address)  # whatever a failed test left
    for node in cluster.nodes:
        actions.clear_rpc_faults(node_id=node.node_id, address=cluster.address)
    channel.close()


def in_force(cluster: Cluster) -> list[dict[str, Any]]:
    return actions.list_rpc_faults(all_nodes=True, address=cluster.address)[0]


def fault(fid: str, method: str, action: str, duration: float = 30.0, **kw: Any) -> FaultSpec:
    return FaultSpec(fid, method, action, duration_s=duration, **kw)


@freight.remote
def node_of() -> str:
    return freight.get_runtime_context().get_node_id()


def test_no_fault_is_in_force_by_default_and_calls_go_straight_through(
    cluster: Cluster, head: pb_grpc.HeadServiceStub
) -> None:
    assert in_force(cluster) == []
    assert head.ClusterStatus(pb.ClusterStatusRequest(), timeout=10).cluster_name
    assert freight.get(node_of.remote(), timeout=60)


def test_a_delayed_method_waits_at_least_the_delay(
    cluster: Cluster, head: pb_grpc.HeadServiceStub
) -> None:
    set_ = actions.set_rpc_fault(
        fault("delay1", "HeadService/ClusterStatus", "delay", delay_s=0.5), address=cluster.address
    )
    assert (set_["method"], set_["state"]) == ("freight.v1.HeadService/ClusterStatus", "in force")
    started = time.monotonic()
    head.ClusterStatus(pb.ClusterStatusRequest(), timeout=10)
    took = time.monotonic() - started
    assert took >= 0.5  # a lower bound: the call waited the delay
    (ended,) = actions.clear_rpc_faults(["delay1"], address=cluster.address)
    assert ended["state"] == "cleared" and ended["hits"] >= 1
    assert in_force(cluster) == []


def test_a_failed_method_ends_with_its_code(
    cluster: Cluster, head: pb_grpc.HeadServiceStub
) -> None:
    actions.set_rpc_fault(
        fault("fail1", "HeadService/ClusterStatus", "fail", code="RESOURCE_EXHAUSTED"),
        address=cluster.address,
    )
    with pytest.raises(grpc.RpcError) as failed:
        head.ClusterStatus(pb.ClusterStatusRequest(), timeout=10)
    assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "injected fault" in str(failed.value.details())
    head.ListNodes(pb.ListNodesRequest(), timeout=10)  # other methods are untouched
    actions.clear_rpc_faults(["fail1"], address=cluster.address)
    assert head.ClusterStatus(pb.ClusterStatusRequest(), timeout=10).cluster_name


def pattern(head: pb_grpc.HeadServiceStub, calls: int) -> list[bool]:
    """Which of ``calls`` sequential GetPlacementGroup calls failed (nobody else makes them)."""
    failed = []
    for _ in range(calls):
        try:
            head.GetPlacementGroup(pb.GetPlacementGroupRequest(pg_id="00"), timeout=10)
            failed.append(False)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE
            failed.append(True)
    return failed


def test_a_seeded_fraction_fails_the_same_calls_again(
    cluster: Cluster, head: pb_grpc.HeadServiceStub
) -> None:
    runs = []
    for fid in ("half1", "half2"):
        actions.set_rpc_fault(
            fault(fid, "HeadService/GetPlacementGroup", "fail", fraction=0.5, seed=7),
            address=cluster.address,
        )
        runs.append(pattern(head, 24))
        (ended,) = actions.clear_rpc_faults([fid], address=cluster.address)
        assert (ended["calls"], ended["hits"]) == (24, sum(runs[-1]))
    draws = random.Random(7)
    assert runs[0] == runs[1] == [draws.random() < 0.5 for _ in range(24)]
    assert 0 < sum(runs[0]) < 24


def test_failing_heartbeats_end_at_expiry_with_nobody_clearing_and_the_nodes_stay(
    cluster: Cluster,
) -> None:
    """Every node's heartbeats fail with UNAVAILABLE for 3 s: the agents keep sending them (the
    retry path: every call the fault saw failed, and it saw several), the fault switches itself
    off at its deadline, the heartbeats are accepted again and the nodes never left."""
    set_ = actions.set_rpc_fault(
        fault("hb1", "HeadService/Heartbeat", "fail", duration=3.0), address=cluster.address
    )
    wait_for_condition(lambda: in_force(cluster) == [], 30, "the fault to expire by itself")
    (ended,) = actions.clear_rpc_faults(["hb1"], address=cluster.address)
    assert (ended["state"], ended["ended_before"]) == ("expired", True)
    assert ended["hits"] == ended["calls"] >= 2
    for node in cluster.nodes:
        wait_for_condition(
            lambda n=node: state.get_state("nodes", n.node_id)["last_heartbeat"] > set_["expires"],
            30,
            f"a heartbeat of node {node.node_id} accepted after the fault",
        )
    assert cluster.alive_node_ids() == {n.node_id for n in cluster.nodes}
    assert freight.get(node_of.remote(), timeout=60)


def test_a_node_fault_goes_to_its_agent_and_ends_there(
    cluster: Cluster, head: pb_grpc.HeadServiceStub
) -> None:
    node = cluster.nodes[1]
    set_ = actions.set_rpc_fault(
        fault("node1", "NodeAgentService/ListWorkers", "fail", duration=4.0),
        node_id=node.node_id,
        address=cluster.address,
    )
    assert set_["node_id"] == node.node_id
    rows = state.list_workers([("node_id", "=", node.node_id)])
    assert rows.partial  # the head could not read that node's workers
    (listed,) = in_force(cluster)
    assert (listed["fault_id"], listed["node_id"]) == ("node1", node.node_id)
    assert listed["hits"] >= 1
    wait_for_condition(lambda: in_force(cluster) == [], 30, "the node's fault to expire")
    assert not state.list_workers([("node_id", "=", node.node_id)]).partial


def test_wrong_or_read_only_tokens_are_refused_and_nothing_is_switched_on(
    cluster: Cluster,
) -> None:
    request = pb.SetRpcFaultRequest(
        fault=pb.RpcFault(
            fault_id="x", method="freight.v1.HeadService/ClusterStatus", action="fail"
        ),
        duration_s=30,
    )
    for token, code in (
        ("wrong", grpc.StatusCode.UNAUTHENTICATED),
        (readonly_token(cluster._token()), grpc.StatusCode.PERMISSION_DENIED),
    ):
        channel = sync_channel(cluster.address, token)
        try:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.HeadServiceStub(channel).SetRpcFault(request, timeout=10)
            assert refused.value.code() == code
        finally:
            channel.close()
    assert in_force(cluster) == []
    readonly = access.Target(cluster.address, readonly_token(cluster._token()), "", "--address")
    assert actions.list_rpc_faults(address=readonly) == ([], [])  # reading is allowed


def test_unknown_methods_and_bad_specs_are_refused_naming_what_exists(
    cluster: Cluster, head: pb_grpc.HeadServiceStub
) -> None:
    with pytest.raises(access.UsageError, match=r"HeadService/Heartbeat.*data/RequestLease"):
        actions.set_rpc_fault(fault("u1", "HeadService/Nope", "fail"), address=cluster.address)
    with pytest.raises(access.UsageError, match="served by the node agents"):
        actions.set_rpc_fault(
            fault("u2", "data/RequestLease", "delay", delay_s=1), address=cluster.address
        )
    # The head checks too, for clients that skip the check above.
    for method, action, why in (
        ("freight.v1.HeadService/Nope", "fail", "no RPC method"),
        ("freight.v1.HeadService/SetRpcFault", "fail", "no RPC method"),  # the way out stays
        ("freight.v1.HeadService/ClusterStatus", "explode", "action is 'fail' or 'delay'"),
    ):
        bad = pb.SetRpcFaultRequest(
            fault=pb.RpcFault(fault_id="u3", method=method, action=action, fraction=1),
            duration_s=30,
        )
        with pytest.raises(grpc.RpcError) as refused:
            head.SetRpcFault(bad, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert why in str(refused.value.details())
    assert in_force(cluster) == []


# ---- without a cluster -------------------------------------------------------------------------


def test_with_no_fault_the_interceptor_hands_back_the_servers_own_handler() -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: None)
    details: Any = object()

    async def continuation(_details: Any) -> grpc.RpcMethodHandler:
        return handler

    got = asyncio.run(RpcFaultInterceptor(FaultTable()).intercept_service(continuation, details))
    assert got is handler


def test_a_fault_ends_at_its_deadline_on_its_own_loop() -> None:
    async def run() -> list[str]:
        table = FaultTable()
        table.set(fault("t1", "HeadService/ClusterStatus", "fail", duration=0.2))
        deadline = time.monotonic() + 10
        while table.methods and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # poll; the deadline bounds the wait
        cleared, ended = table.clear(["t1"])
        return [f.state for f in cleared + ended]

    assert asyncio.run(run()) == ["expired"]


def test_one_fault_a_method_and_the_same_id_again_replaces_it() -> None:
    table = FaultTable()
    table.set(fault("a", "HeadService/ClusterStatus", "fail"))
    with pytest.raises(ValueError, match="already has a fault in force here"):
        table.set(fault("b", "HeadService/ClusterStatus", "fail"))
    with pytest.raises(ValueError, match="in force here on another method"):
        table.set(fault("a", "HeadService/ListNodes", "fail"))
    again = table.set(fault("a", "HeadService/ClusterStatus", "delay", delay_s=1))
    assert [f.spec.action for f in table.in_force()] == ["delay"] and again.state == "in force"
    cleared, ended = table.clear(["a"])
    assert [(f.spec.action, f.state) for f in cleared] == [("delay", "cleared")] and ended == []


async def _data_plane(tmp_path: Path, sends: int) -> tuple[list[Any], list[Any], float, bytes]:
    """Serve one real Unix socket with serve_connection; send ``sends`` SealObject messages;
    return what was handled, what the connection ended with (None: the client closed it), the
    seconds until the last was handled (or the server closed), and what the client read."""
    handled: list[Any] = []
    ended: list[Any] = []
    progress = asyncio.Event()
    gone = asyncio.Event()

    def handle(_conn: AioConn, msg: Any) -> None:
        handled.append(msg)
        if len(handled) == sends:
            progress.set()

    def closed(_conn: AioConn, error: BaseException | None) -> None:
        ended.append(error)
        progress.set()
        gone.set()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, "tok", lambda c: None, handle, closed, print, print)

    path = str(tmp_path / "s")
    server = await asyncio.start_unix_server(client, path)
    reader, writer = await asyncio.open_unix_connection(path)
    started = time.monotonic()
    writer.write(encode_hello("tok", ("driver", "x")))
    for i in range(sends):
        writer.write(frame_of(m.SealObject(os.urandom(4) + bytes([i]))))
    await writer.drain()
    await asyncio.wait_for(progress.wait(), 30)
    took = time.monotonic() - started
    rest = await asyncio.wait_for(reader.read(), 30) if gone.is_set() else b""
    writer.close()
    await asyncio.wait_for(gone.wait(), 30)
    server.close()
    await server.wait_closed()
    return handled, ended, took, rest


def test_a_failed_data_plane_kind_closes_the_connection_it_came_on(tmp_path: Path) -> None:
    FAULTS.set(fault("dp1", "data/SealObject", "fail"))
    try:
        handled, ended, _took, rest = asyncio.run(_data_plane(tmp_path, 1))
    finally:
        (state_,) = [f.state for f in FAULTS.clear(["dp1"])[0]]
    assert handled == [] and rest == b"" and state_ == "cleared"
    assert isinstance(ended[0], ConnectionAbortedError) and "injected fault" in str(ended[0])
    handled, ended, _took, _rest = asyncio.run(_data_plane(tmp_path, 1))
    assert len(handled) == 1 and ended == [None]  # cleared: handled as ever


def test_a_delayed_data_plane_kind_waits_and_keeps_its_order(tmp_path: Path) -> None:
    FAULTS.set(fault("dp2", "data/SealObject", "delay", delay_s=0.2))
    try:
        handled, ended, took, _rest = asyncio.run(_data_plane(tmp_path, 3))
    finally:
        FAULTS.clear(["dp2"])
    assert [msg.object_id[-1] for msg in handled] == [0, 1, 2] and ended == [None]
    assert took >= 3 * 0.2  # a lower bound: each message waited behind the one before
