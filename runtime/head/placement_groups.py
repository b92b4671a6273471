"""Placement groups on the head: create (reserve every bundle or none), remove, look up.

A group waits PENDING until the alive nodes' free amounts can hold all its bundles under its
strategy (:func:`freight.core.placement.assign_bundles`); the head then asks each chosen node's
agent to reserve its bundles (``ReserveBundles``). If any node refuses (its amounts changed
since its last heartbeat) or fails, the bundles already reserved are returned and the group
waits again: all or none. Once CREATED, tasks and actors draw on the bundles through the
``<resource>_group_<pg>`` resources the agents added (see ``in_group``). Removing a group returns
its bundles; the workers that used them are killed, as Ray does. Groups are kept in the control
store's key/value table, so a restarted head still knows them.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import grpc
from loguru import logger

from freight.core.placement import PG_STRATEGIES, assign_bundles, covers
from freight.core.task_state import WAITING_FOR_DRAINED
from freight.head.control_store import ControlStore
from freight.head.events import EventStore
from freight.head.nodes import NodeDirectory, sum_amounts
from freight.head.rpc import NotFoundError
from freight.observe.recorder import RECORDER
from freight.protocol.generated import freight_pb2 as pb

KV_NAMESPACE = "placement_groups"
PENDING, CREATED, REMOVED = "PENDING", "CREATED", "REMOVED"
RETRY_S = 1.0  # a pending group looks again at least this often (node changes wake it sooner)
MAX_PG_WAIT_S = 60.0  # the longest one GetPlacementGroup call waits for a group to settle


def check_group(pg: pb.PlacementGroupInfo) -> list[dict[str, float]]:
    """The group's bundles as dicts; raises ValueError saying what is wrong."""
    if pg.strategy not in PG_STRATEGIES:
        raise ValueError(
            f"placement group strategy must be one of {', '.join(PG_STRATEGIES)}, "
            f"got {pg.strategy!r}"
        )
    if not pg.bundles:
        raise ValueError("a placement group needs at least one bundle")
    bundles = []
    for i, b in enumerate(pg.bundles):
        amounts = {k: v for k, v in b.amounts.items() if v}
        if not amounts or any(not math.isfinite(v) or v < 0 for v in amounts.values()):
            raise ValueError(
                f"bundle {i} must map resource names to positive amounts, got {dict(b.amounts)}"
            )
        bundles.append(amounts)
    return bundles


class PlacementGroupDirectory:
    def __init__(self, store: ControlStore, nodes: NodeDirectory, events: EventStore) -> None:
        self._store = store
        self._nodes = nodes
        self._events = events
        self.groups: dict[str, pb.PlacementGroupInfo] = {}
        self._waiters: dict[str, asyncio.Task[None]] = {}
        self._returning: set[asyncio.Task[None]] = set()
        self._settled = asyncio.Event()  # set (and replaced) when a group leaves PENDING
        for pg in store.kv_messages(KV_NAMESPACE, pb.PlacementGroupInfo):
            if pg.pg_id:
                self.groups[pg.pg_id] = pg

    def _save(self, pg: pb.PlacementGroupInfo) -> None:
        self.groups[pg.pg_id] = pg
        self._store.kv_put(KV_NAMESPACE, pg.pg_id, pg.SerializeToString(), True)
        if self._store.feed is not None:
            self._store.feed("placement_groups", pg)
        if pg.state != PENDING:
            self._settled.set()
            self._settled = asyncio.Event()

    async def settled(self, pg_id: str, wait_s: float) -> pb.PlacementGroupInfo:
        """The group once it is CREATED or REMOVED, or as it is after ``wait_s`` seconds."""
        deadline = time.monotonic() + wait_s
        while self.groups[pg_id].state == PENDING:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._settled.wait(), left)
            except TimeoutError:
                break
        return self.groups[pg_id]

    # -- requests ----------------------------------------------------------------------------

    async def create(self, request: pb.CreatePlacementGroupRequest) -> pb.PlacementGroupInfo:
        pg = pb.PlacementGroupInfo()
        pg.CopyFrom(request.pg)
        check_group(pg)
        if pg.name and self.find(pg.name, pg.namespace) is not None:
            raise ValueError(
                f"a placement group named {pg.name!r} already exists in namespace "
                f"{pg.namespace!r}; remove it first or choose another name"
            )
        pg.pg_id = pg.pg_id or uuid.uuid4().hex[:18]
        pg.state = PENDING
        pg.create_time = time.time()
        del pg.bundle_nodes[:]
        self._save(pg)
        self._waiters[pg.pg_id] = asyncio.create_task(self._place(pg.pg_id))
        return pg

    def get(self, request: pb.GetPlacementGroupRequest) -> pb.PlacementGroupInfo | None:
        if request.pg_id:
            return self.groups.get(request.pg_id)
        return self.find(request.name, request.namespace)

    def find(self, name: str, namespace: str) -> pb.PlacementGroupInfo | None:
        return next(
            (
                g
                for g in self.groups.values()
                if g.name == name and g.namespace == namespace and g.state != REMOVED
            ),
            None,
        )

    def list(self) -> list[pb.PlacementGroupInfo]:
        return list(self.groups.values())

    async def remove(self, pg_id: str) -> bool:
        pg = self.groups.get(pg_id)
        if pg is None:
            raise NotFoundError(f"no placement group {pg_id!r}")
        if pg.state == REMOVED:
            return False
        waiter = self._waiters.pop(pg_id, None)
        if waiter is not None:
            waiter.cancel()
        nodes = set(pg.bundle_nodes)
        pg.state = REMOVED
        self._save(pg)
        # The bundles go back in the background (as in Ray, removal does not wait for it).
        task = asyncio.create_task(self._return(pg_id, nodes))
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)
        RECORDER.inc("freight_placement_groups_removed_total", ())
        self._events.record(
            "PLACEMENT_GROUP_REMOVED", f"placement group {pg_id} removed", job_id=pg.job_id
        )
        return True

    async def remove_job_groups(self, job_id: str) -> int:
        """Remove the non-detached groups of a job that finished."""
        doomed = [
            g.pg_id
            for g in self.groups.values()
            if g.job_id == job_id and not g.detached and g.state != REMOVED
        ]
        for pg_id in doomed:
            await self.remove(pg_id)
        return len(doomed)

    # -- placing -----------------------------------------------------------------------------

    async def _place(self, pg_id: str) -> None:
        began = time.perf_counter()
        while True:
            pg = self.groups.get(pg_id)
            if pg is None or pg.state != PENDING:
                return
            bundles = check_group(pg)
            alive = self._nodes.alive()
            # Drained nodes take no new bundles (freight drain).
            free = {n.node_id: dict(n.available.amounts) for n in alive if not n.draining}
            assignment = assign_bundles(bundles, pg.strategy, free)
            if assignment is not None and await self._reserve(pg_id, bundles, assignment):
                pg = self.groups[pg_id]
                if pg.state != PENDING:  # removed while reserving
                    await self._return(pg_id, set(assignment))
                    return
                pg.state = CREATED
                pg.pending_reason = ""
                del pg.bundle_nodes[:]
                pg.bundle_nodes.extend(assignment)
                self._save(pg)
                RECORDER.inc("freight_placement_groups_created_total", ())
                RECORDER.observe(
                    "freight_head_scheduling_latency_seconds",
                    ("placement_group",),
                    time.perf_counter() - began,
                )
                logger.info("placement group created", pg_id=pg_id, nodes=assignment)
                self._events.record(
                    "PLACEMENT_GROUP_CREATED",
                    f"placement group {pg_id} created ({pg.strategy}, {len(bundles)} bundles)",
                    job_id=pg.job_id,
                )
                return
            reason = self._why_pending(bundles, pg.strategy, alive)
            if pg.pending_reason != reason:
                pg.pending_reason = reason
                self._save(pg)
            async with self._nodes.changed:
                try:
                    await asyncio.wait_for(self._nodes.changed.wait(), RETRY_S)
                except TimeoutError:
                    pass

    @staticmethod
    def _why_pending(
        bundles: list[dict[str, float]], strategy: str, alive: list[pb.NodeInfo]
    ) -> str:
        totals = {n.node_id: dict(n.total.amounts) for n in alive}
        open_totals = {n.node_id: dict(n.total.amounts) for n in alive if not n.draining}
        if assign_bundles(bundles, strategy, totals) is not None and (
            assign_bundles(bundles, strategy, open_totals) is None
        ):
            return WAITING_FOR_DRAINED
        if assign_bundles(bundles, strategy, totals) is None:
            need = sum_amounts(bundles)
            return (
                f"infeasible: no set of alive nodes can hold these bundles under {strategy} "
                f"(they need {need} in all)"
                if strategy.startswith("STRICT") or not covers(sum_amounts(totals.values()), need)
                else f"infeasible: a bundle is larger than any alive node ({strategy})"
            )
        return "waiting for resources"

    async def _ask(self, node_id: str, request: pb.ReserveBundlesRequest) -> bool:
        """One ReserveBundles call (a phase on one node); False when refused or unreachable."""
        node = self._store.get_node(node_id)
        what = "commit" if request.commit and not request.bundles else "reserve"
        try:
            if node is None:
                raise ConnectionError(f"node {node_id} is gone")
            stub = await self._nodes.agent(node)
            reply = await stub.ReserveBundles(request, timeout=10)
        except (grpc.aio.AioRpcError, ConnectionError) as exc:
            logger.warning(f"could not {what} bundles", pg_id=request.pg_id, error=str(exc))
            return False
        if not reply.reserved:
            logger.info(f"node refused to {what} bundles", pg_id=request.pg_id, why=reply.error)
        return bool(reply.reserved)

    def _charge(self, node_id: str, taken: dict[str, float]) -> None:
        """Until the node's next heartbeat, count ``taken`` as gone there, so the next group is
        not planned on amounts that are gone."""
        node = self._store.get_node(node_id)
        if node is not None:
            for k, v in taken.items():
                node.available.amounts[k] = node.available.amounts.get(k, 0.0) - v
            self._store.upsert_node(node)

    async def _reserve(
        self, pg_id: str, bundles: list[dict[str, float]], assignment: list[str]
    ) -> bool:
        by_node: dict[str, list[int]] = {}
        for i, node_id in enumerate(assignment):
            by_node.setdefault(node_id, []).append(i)
        one_node = len(by_node) == 1  # nothing to be atomic with: reserve and commit at once
        done: set[str] = set()
        ok = True
        for node_id, indexes in by_node.items():  # phase 1: set the amounts aside everywhere
            request = pb.ReserveBundlesRequest(
                pg_id=pg_id,
                indexes=indexes,
                bundles=[pb.ResourceMap(amounts=bundles[i]) for i in indexes],
                commit=one_node,
            )
            ok = await self._ask(node_id, request)
            if not ok:
                break
            done.add(node_id)
            self._charge(node_id, sum_amounts(bundles[i] for i in indexes))
        if ok and not one_node:  # phase 2: every node holds its bundles, make them usable
            for node_id in done:
                ok = await self._ask(node_id, pb.ReserveBundlesRequest(pg_id=pg_id, commit=True))
                if not ok:
                    break
        if not ok:
            await self._return(pg_id, done)
        return ok

    async def _return(self, pg_id: str, node_ids: set[str]) -> None:
        for node_id in node_ids:
            node = self._store.get_node(node_id)
            if node is None or node.state != "ALIVE":
                continue  # a dead node took its reservations with it
            try:
                stub = await self._nodes.agent(node)
                await stub.ReturnBundles(pb.ReturnBundlesRequest(pg_id=pg_id), timeout=10)
            except grpc.aio.AioRpcError as exc:
                logger.warning(
                    "could not return bundles", pg_id=pg_id, node_id=node_id, error=exc.details()
                )

    async def close(self) -> None:
        for task in self._waiters.values():
            task.cancel()
        await asyncio.gather(*self._waiters.values(), *self._returning, return_exceptions=True)
