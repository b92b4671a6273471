"""Asking every node of a cluster: the alive nodes' agents (from the head), a channel to each,
and the one wording of "this node did not answer" for an answer that is partial.

`freight logs` and `freight memory` read each node from its agent (``ReadLogs``, ``Memory``):
the files and processes of a node are only on its machine. A node that does not answer is named
in a warning and the rest is still shown (the command then exits with
:data:`freight.client.access.EXIT_PARTIAL`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from freight.client import access
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util.grpc_auth import sync_channel


@dataclass(frozen=True)
class Agent:
    """One alive node's agent."""

    node_id: str
    address: str
    is_head_node: bool

    @property
    def name(self) -> str:
        return f"node {self.node_id[:12]} ({self.address})"


def alive_agents(target: access.Target, timeout: float = 10.0) -> list[Agent]:
    """The agents of the cluster's alive nodes, the head's node first. Raises what
    :func:`freight.client.access.rpc_error` says when the head does not answer or refuses."""
    channel = sync_channel(target.address, target.token)
    try:
        stub = pb_grpc.HeadServiceStub(channel)
        nodes = access.call(target, stub.ListNodes, pb.ListNodesRequest(), timeout).nodes
    finally:
        channel.close()
    agents = [
        Agent(n.node_id, n.agent_address, n.is_head_node)
        for n in nodes
        if n.state == "ALIVE" and n.agent_address
    ]
    return sorted(agents, key=lambda a: (not a.is_head_node, a.node_id))


class AgentChannel:
    """A channel to one agent and its stub; close it when done."""

    def __init__(self, agent: Agent, token: str) -> None:
        self.agent = agent
        self.channel = sync_channel(agent.address, token)
        self.stub = pb_grpc.NodeAgentServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


def why(e: BaseException) -> str:
    """A failed call's reason, short: ``UNAVAILABLE: ...``."""
    if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        return f"{e.code().name}: {e.details()}"
    return str(e) or type(e).__name__


def did_not_answer(agent: Agent, e: BaseException, what: str) -> str:
    """The warning for a node whose ``what`` (its logs, its references) are missing."""
    return f"{agent.name} did not answer ({why(e)}): {what} are missing from this answer"


def ask_all(agents: list[Agent], token: str, ask: Any) -> list[tuple[Agent, Any, Any]]:
    """``ask(stub)`` on every agent at once; ``(agent, reply, error)`` per agent, in order."""
    from concurrent.futures import ThreadPoolExecutor

    def one(agent: Agent) -> tuple[Agent, Any, Any]:
        ch = AgentChannel(agent, token)
        try:
            return agent, ask(ch.stub), None
        except grpc.RpcError as e:
            return agent, None, e
        finally:
            ch.close()

    if not agents:
        return []
    with ThreadPoolExecutor(min(16, len(agents))) as pool:
        return list(pool.map(one, agents))
