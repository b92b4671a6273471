"""The head's view of the node agents: registration, heartbeats, health checks, agent channels.

A node that has not sent a heartbeat for ``timeout_s`` seconds (head clock) is marked DEAD.
Every change to the node table notifies :attr:`NodeDirectory.changed`, which pending actor
creations wait on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from grpc import aio
from loguru import logger

from freight.head.control_store import ControlStore
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util.grpc_auth import aio_channel

ALIVE = "ALIVE"
DEAD = "DEAD"


def covers(amounts: Mapping[str, float], request: Mapping[str, float]) -> bool:
    """True if ``amounts`` holds at least ``request`` of every resource (a missing key is 0)."""
    return all(amounts.get(k, 0.0) >= v for k, v in request.items() if v > 0)


def sum_amounts(maps: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The per-resource sum of several resource maps."""
    total: dict[str, float] = {}
    for m in maps:
        for k, v in m.items():
            total[k] = total.get(k, 0.0) + v
    return total


class NodeDirectory:
    """Node table operations on top of the control store, plus one gRPC channel per agent."""

    def __init__(
        self,
        store: ControlStore,
        token: str,
        timeout_s: float,
        on_node_dead: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self._store = store
        self._token = token
        self.timeout_s = timeout_s
        self._on_node_dead = on_node_dead
        self.changed = asyncio.Condition()
        self._agents: dict[str, tuple[str, aio.Channel, pb_grpc.NodeAgentServiceStub]] = {}
        # A restarted head gives the nodes it remembers one full timeout to check in again.
        now = time.time()
        for node in store.list_nodes():
            node.last_heartbeat = now
            store.upsert_node(node)

    async def notify(self) -> None:
        """Wake everyone waiting on :attr:`changed`."""
        async with self.changed:
            self.changed.notify_all()

    def alive(self) -> list[pb.NodeInfo]:
        """Alive nodes, in registration order."""
        return self._store.list_nodes(include_dead=False)

    async def register(self, node: pb.NodeInfo) -> None:
        """Record ``node`` as ALIVE (a re-registration replaces the old record)."""
        if not node.node_id:
            raise ValueError("RegisterNode: node.node_id is empty")
        now = time.time()
        record = pb.NodeInfo()
        record.CopyFrom(node)
        record.state = ALIVE
        record.start_time = node.start_time or now
        record.last_heartbeat = now
        if not record.HasField("available"):
            record.available.CopyFrom(record.total)
        self._store.upsert_node(record)
        logger.info(
            "node registered",
            node_id=node.node_id,
            agent_address=node.agent_address,
            total=dict(node.total.amounts),
        )
        await self.notify()

    async def heartbeat(self, request: pb.HeartbeatRequest) -> bool:
        """Record a heartbeat; return True if the node must register again (unknown or DEAD)."""
        node = self._store.get_node(request.node_id)
        if node is None or node.state != ALIVE:
            return True
        node.available.CopyFrom(request.available)
        node.stats.CopyFrom(request.stats)
        node.last_heartbeat = time.time()
        self._store.upsert_node(node)
        await self.notify()
        return False

    async def mark_dead(self, node_id: str, reason: str) -> bool:
        """Mark a node DEAD; return False if it was unknown or already DEAD."""
        node = self._store.get_node(node_id)
        if node is None or node.state == DEAD:
            return False
        node.state = DEAD
        self._store.upsert_node(node)
        logger.warning("node dead", node_id=node_id, reason=reason)
        await self._close_agent(node_id)
        await self._on_node_dead(node_id, reason)
        await self.notify()
        return True

    async def health_loop(self) -> None:
        """Mark nodes DEAD when they miss heartbeats for ``timeout_s``; runs until cancelled."""
        interval = min(1.0, self.timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            deadline = time.time() - self.timeout_s
            for node in self.alive():
                if node.last_heartbeat < deadline:
                    await self.mark_dead(
                        node.node_id, f"no heartbeat for more than {self.timeout_s:g} s"
                    )

    # ---- agent channels ----------------------------------------------------------------------

    async def agent(self, node: pb.NodeInfo) -> pb_grpc.NodeAgentServiceStub:
        """A stub for the node's agent, over a channel cached per node (and per address)."""
        cached = self._agents.get(node.node_id)
        if cached is not None and cached[0] == node.agent_address:
            return cached[2]
        channel = aio_channel(node.agent_address, self._token)
        stub = pb_grpc.NodeAgentServiceStub(channel)
        self._agents[node.node_id] = (node.agent_address, channel, stub)
        if cached is not None:  # the agent came back on a new address
            await cached[1].close()
        return stub

    async def _close_agent(self, node_id: str) -> None:
        cached = self._agents.pop(node_id, None)
        if cached is not None:
            await cached[1].close()

    async def close(self) -> None:
        """Close every agent channel."""
        for node_id in list(self._agents):
            await self._close_agent(node_id)
