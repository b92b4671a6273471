"""The head's side of the RPC fault hooks (:mod:`freight.util.rpc_faults`): faults on its own
calls switch here; a fault on a node's calls is passed to that node's agent, so the operator
talks to the head alone, with the admin token, and the head records each switch as an action."""

from __future__ import annotations

import asyncio

import grpc

from freight.protocol.generated import freight_pb2 as pb
from freight.util.rpc_faults import FAULTS, spec_of

from .nodes import NodeDirectory
from .operator_actions import AGENT_TIMEOUT_S
from .rpc import AgentUnreachableError


def _from_agent(e: grpc.aio.AioRpcError, node: pb.NodeInfo) -> Exception:
    if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return ValueError(e.details())
    return AgentUnreachableError(
        f"the agent of node {node.node_id} did not switch the fault ({e.code().name}: "
        f"{e.details()}); a fault it already holds still ends at its expiry"
    )


def _placed(faults: list[pb.RpcFault], node_id: str) -> list[pb.RpcFault]:
    for fault in faults:
        fault.node_id = node_id
    return faults


async def set_fault(directory: NodeDirectory, request: pb.SetRpcFaultRequest) -> pb.RpcFault:
    """Switch the request's fault on, here or on its node; the fault as now in force."""
    if not request.node_id:
        return FAULTS.set(spec_of(request.fault, request.duration_s)).record()
    node = directory.find(request.node_id)
    stub = await directory.agent(node)
    forwarded = pb.SetRpcFaultRequest(fault=request.fault, duration_s=request.duration_s)
    try:
        reply = await stub.SetRpcFault(forwarded, timeout=AGENT_TIMEOUT_S)
    except grpc.aio.AioRpcError as e:
        raise _from_agent(e, node) from None
    return _placed([reply.fault], node.node_id)[0]


async def clear_faults(
    directory: NodeDirectory, request: pb.ClearRpcFaultsRequest
) -> pb.ClearRpcFaultsReply:
    """End the faults the request names (all when none), here or on its node."""
    if not request.node_id:
        cleared, ended = FAULTS.clear(request.fault_ids)
        return pb.ClearRpcFaultsReply(
            cleared=[f.record() for f in cleared], ended=[f.record() for f in ended]
        )
    node = directory.find(request.node_id)
    stub = await directory.agent(node)
    forwarded = pb.ClearRpcFaultsRequest(fault_ids=request.fault_ids)
    try:
        reply = await stub.ClearRpcFaults(forwarded, timeout=AGENT_TIMEOUT_S)
    except grpc.aio.AioRpcError as e:
        raise _from_agent(e, node) from None
    _placed([*reply.cleared, *reply.ended], node.node_id)
    return reply


async def list_faults(
    directory: NodeDirectory, request: pb.ListRpcFaultsRequest
) -> pb.ListRpcFaultsReply:
    """The faults in force here, on one node, or (``all_nodes``) here and on every live node;
    nodes that did not answer are named in ``unreachable``."""
    if request.node_id:
        nodes = [directory.find(request.node_id)]
    elif request.all_nodes:
        nodes = directory.alive()
    else:
        nodes = []
    mine = [f.record() for f in FAULTS.in_force()] if not request.node_id else []

    async def ask(node: pb.NodeInfo) -> list[pb.RpcFault] | None:
        stub = await directory.agent(node)
        try:
            reply = await stub.ListRpcFaults(pb.ListRpcFaultsRequest(), timeout=AGENT_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return None
        return _placed(list(reply.faults), node.node_id)

    answers = await asyncio.gather(*map(ask, nodes))
    reply = pb.ListRpcFaultsReply(faults=mine)
    for node, got in zip(nodes, answers, strict=True):
        if got is None:
            reply.unreachable.append(node.node_id)
        else:
            reply.faults.extend(got)
    return reply
