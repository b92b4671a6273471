"""The head's actor directory: creation (placement on a node), lookup, kills and deaths.

Placement is a pure function (:func:`place_actor`); :class:`ActorDirectory` carries it out: it
records the actor, waits on the node table while no node can take it, asks the chosen node's
agent to start it, and records the outcome. Each creation runs as its own task, so a slow
constructor or a wait for resources never blocks other calls, and a caller that goes away does
not leave a half-created actor behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from loguru import logger

from freight.core.placement import labels_match, strategy_from_json
from freight.core.task_state import WAITING_FOR_DRAINED, WAITING_FOR_RESOURCES, WAITING_FOR_WORKER
from freight.head.control_store import ControlStore
from freight.head.events import EventStore
from freight.head.nodes import NodeDirectory, covers, sum_amounts
from freight.observe.recorder import RECORDER
from freight.protocol.generated import freight_pb2 as pb

PENDING = "PENDING_CREATION"
ALIVE = "ALIVE"
RESTARTING = "RESTARTING"
DEAD = "DEAD"
ACTOR_STATES = (PENDING, ALIVE, RESTARTING, DEAD)
# Creation specs by actor id: kept while an actor is being created, and for its whole life when
# it may restart, so that a restarted head can finish creations and restart actors.
SPECS_NS = "actor_specs"

WAITING_FOR_NODE = "waiting for a node to join"


def format_resources(amounts: Mapping[str, float]) -> str:
    """``{CPU: 2, GPU: 1}`` style text for messages."""
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(amounts.items())) + "}"


@dataclass(frozen=True)
class Placement:
    """Where an actor goes: a node, or why it waits, or why it never can run."""

    node_id: str = ""
    pending_reason: str = ""
    infeasible: str = ""


def place_actor_with(
    strategy: tuple[Any, ...],
    request: Mapping[str, float],
    nodes: Sequence[pb.NodeInfo],
    reserved: Mapping[str, Mapping[str, float]],
    load: Mapping[str, int],
) -> Placement:
    """Where the actor goes among the nodes that take new work (not drained); an actor only
    drained nodes could take waits for one to be undrained."""
    open_nodes = [n for n in nodes if not n.draining]
    got = _place_with(strategy, request, open_nodes, reserved, load)
    if got.node_id or len(open_nodes) == len(nodes):
        return got
    if got.pending_reason not in ("", WAITING_FOR_NODE):
        return got  # an open node can take it once it has room
    if not _place_with(strategy, request, nodes, {}, {}).infeasible:
        return Placement(pending_reason=WAITING_FOR_DRAINED)
    return got


def _place_with(
    strategy: tuple[Any, ...],
    request: Mapping[str, float],
    nodes: Sequence[pb.NodeInfo],
    reserved: Mapping[str, Mapping[str, float]],
    load: Mapping[str, int],
) -> Placement:
    """:func:`place_actor` under a scheduling strategy (freight.core.placement's wire form):
    a node affinity or label constraint narrows the nodes (a soft one only while the narrowed
    nodes can take the actor); SPREAD puts the actor on the node with the fewest actors."""
    kind = strategy[0] if strategy else "DEFAULT"
    if kind == "NODE":
        target, soft = str(strategy[1]), bool(strategy[2])
        narrowed = [n for n in nodes if n.node_id == target]
        if not narrowed and not soft:
            return Placement(
                infeasible=f"unschedulable: node affinity to node {target[:12]}, which is not alive"
            )
        if narrowed:
            got = place_actor(request, narrowed, reserved, load)
            if not soft or got.node_id:
                return got
    elif kind == "LABELS":
        hard, soft_labels = tuple(strategy[1]), tuple(strategy[2])
        nodes = [n for n in nodes if labels_match(n.labels, hard)]
        if not nodes:
            return Placement(
                infeasible=f"infeasible: no alive node matches the labels {list(hard)}"
            )
        preferred = [n for n in nodes if labels_match(n.labels, soft_labels)]
        if preferred:
            got = place_actor(request, preferred, reserved, load)
            if got.node_id:
                return got
    elif kind == "SPREAD":
        return place_actor(request, nodes, reserved, load, spread=True)
    return place_actor(request, nodes, reserved, load)


def place_actor(
    request: Mapping[str, float],
    nodes: Sequence[pb.NodeInfo],
    reserved: Mapping[str, Mapping[str, float]],
    load: Mapping[str, int],
    spread: bool = False,
) -> Placement:
    """Choose an alive node whose free resources cover ``request``.

    ``reserved`` holds, per node, resources promised to creations still in flight; ``load``
    counts the actors on each node. Among the nodes that fit, the one with the largest free
    share of the requested resources wins, then the one with fewest actors (this spreads
    actors that request nothing).
    """
    if not nodes:
        return Placement(pending_reason=WAITING_FOR_NODE)
    feasible = [n for n in nodes if covers(n.total.amounts, request)]
    if not feasible:
        totals = sum_amounts(n.total.amounts for n in nodes)
        largest = max(nodes, key=lambda n: sum(n.total.amounts.get(k, 0.0) for k in request))
        return Placement(
            infeasible=f"infeasible: the actor requires {format_resources(request)}, but no "
            f"alive node has that much; cluster totals over {len(nodes)} node(s): "
            f"{format_resources(totals)}, largest node {format_resources(largest.total.amounts)}"
        )

    def free(node: pb.NodeInfo) -> dict[str, float]:
        held = reserved.get(node.node_id, {})
        return {k: v - held.get(k, 0.0) for k, v in node.available.amounts.items()}

    fits = [(n, free(n)) for n in feasible]
    fits = [(n, f) for n, f in fits if covers(f, request)]
    if not fits:
        return Placement(pending_reason=WAITING_FOR_RESOURCES)

    def score(item: tuple[pb.NodeInfo, dict[str, float]]) -> tuple[float, int]:
        node, f = item
        shares = [f.get(k, 0.0) / node.total.amounts[k] for k, v in request.items() if v > 0]
        if spread:
            return (load.get(node.node_id, 0), -min(shares, default=0.0))
        return (-min(shares, default=0.0), load.get(node.node_id, 0))

    best, _ = min(fits, key=score)  # min() keeps the first of equals: registration order
    return Placement(node_id=best.node_id)


def _count_death(actor: pb.ActorInfo, why: str) -> None:
    """Count an actor death (why: killed, worker_died, node_died, creation_failed, owner_died)."""
    RECORDER.inc("freight_actor_deaths_total", (actor.class_name, why))


class ActorDirectory:
    """Actor operations on top of the control store and the node directory."""

    def __init__(
        self, store: ControlStore, nodes: NodeDirectory, events: EventStore | None = None
    ) -> None:
        self._store = store
        self._nodes = nodes
        self._events = events
        self._creations: dict[str, asyncio.Task[pb.CreateActorReply]] = {}
        self._reserved: dict[str, dict[str, float]] = {}
        # Creations a previous head left unfinished carry on (their specs were kept).
        for actor in store.list_actors():
            if actor.state in (PENDING, RESTARTING):
                spec = store.kv_get(SPECS_NS, actor.actor_id)
                if spec is None:
                    self._set_dead(actor, "the head restarted before the actor was created")
                    _count_death(actor, "creation_failed")
                    continue
                logger.info("resuming an actor creation", actor_id=actor.actor_id)
                self._start_creation(actor.actor_id, spec)

    # ---- queries -----------------------------------------------------------------------------

    def get(self, request: pb.GetActorRequest) -> pb.GetActorReply:
        """Look an actor up by id, or by name and namespace (live actors only)."""
        if request.actor_id:
            actor = self._store.get_actor(request.actor_id)
        elif request.name:
            actor = self._store.get_named_actor(request.name, request.namespace)
        else:
            raise ValueError("GetActor needs an actor_id or a name")
        return pb.GetActorReply(actor=actor, found=True) if actor else pb.GetActorReply()

    def list(self, include_dead: bool) -> list[pb.ActorInfo]:
        """All actors, DEAD ones only with ``include_dead``."""
        return self._store.list_actors(include_dead=include_dead)

    # ---- creation ----------------------------------------------------------------------------

    async def create(self, request: pb.CreateActorRequest) -> pb.CreateActorReply:
        """Create the actor; return once it is ALIVE or DEAD."""
        spec = request.actor
        if not spec.actor_id:
            raise ValueError("CreateActor: actor.actor_id is empty")
        running = self._creations.get(spec.actor_id)
        if running is not None:  # the caller retried: join the creation in flight
            return await asyncio.shield(running)
        known = self._store.get_actor(spec.actor_id)
        if known is not None:
            return pb.CreateActorReply(actor=known)
        if spec.name:
            holder = self._store.get_named_actor(spec.name, spec.namespace)
            if holder is not None:
                return await self._existing(request, holder)
        actor = pb.ActorInfo()
        actor.CopyFrom(spec)
        for field in ("node_id", "worker_id", "worker_address", "death_cause", "end_time", "pid"):
            actor.ClearField(field)
        actor.state = PENDING
        actor.start_time = time.time()
        actor.num_restarts = 0
        self._store.kv_put(SPECS_NS, actor.actor_id, request.creation_spec)
        self._store.upsert_actor(actor)
        RECORDER.inc("freight_actors_created_total", (actor.class_name,))
        logger.info("actor pending", actor_id=actor.actor_id, job_id=actor.job_id)
        task = self._start_creation(actor.actor_id, request.creation_spec)
        return await asyncio.shield(task)

    def _start_creation(self, actor_id: str, spec: bytes) -> asyncio.Task[pb.CreateActorReply]:
        task = asyncio.create_task(self._run_creation(actor_id, spec))
        self._creations[actor_id] = task
        task.add_done_callback(lambda _t: self._creations.pop(actor_id, None))
        return task

    async def _existing(
        self, request: pb.CreateActorRequest, holder: pb.ActorInfo
    ) -> pb.CreateActorReply:
        spec = request.actor
        if not request.get_if_exists:
            refused = pb.ActorInfo()
            refused.CopyFrom(spec)
            refused.state = DEAD
            refused.death_cause = (
                f"an actor named {spec.name!r} already exists in namespace {spec.namespace!r}"
            )
            return pb.CreateActorReply(actor=refused)
        running = self._creations.get(holder.actor_id)
        if running is not None:
            reply = pb.CreateActorReply()
            reply.CopyFrom(await asyncio.shield(running))
            reply.existed = True
            return reply
        return pb.CreateActorReply(actor=holder, existed=True)

    def _load(self) -> dict[str, int]:
        return self._store.actors_per_node()

    async def _place(self, actor_id: str, request: dict[str, float]) -> pb.ActorInfo:
        """Wait until a node can take the actor; return it with node_id set (or DEAD)."""
        async with self._nodes.changed:
            while True:
                actor = self._store.get_actor(actor_id)
                if actor is None or actor.state == DEAD:  # killed while it waited
                    return actor or pb.ActorInfo(actor_id=actor_id, state=DEAD)
                placement = place_actor_with(
                    strategy_from_json(actor.scheduling_strategy),
                    request,
                    self._nodes.alive(),
                    self._reserved,
                    self._load(),
                )
                if placement.infeasible and any("_group_" in k for k in request):
                    # A placement group's resources: they appear once its bundles are reserved.
                    placement = Placement(pending_reason=WAITING_FOR_RESOURCES)
                if placement.infeasible:
                    logger.warning(
                        "actor infeasible", actor_id=actor_id, cause=placement.infeasible
                    )
                    _count_death(actor, "creation_failed")
                    return self._set_dead(actor, placement.infeasible)
                if placement.node_id:
                    held = self._reserved.setdefault(placement.node_id, {})
                    for k, v in request.items():
                        held[k] = held.get(k, 0.0) + v
                    actor.node_id = placement.node_id
                    actor.pending_reason = WAITING_FOR_WORKER
                    self._store.upsert_actor(actor)
                    return actor
                if actor.pending_reason != placement.pending_reason:
                    actor.pending_reason = placement.pending_reason
                    self._store.upsert_actor(actor)
                await self._nodes.changed.wait()

    async def _run_creation(self, actor_id: str, spec: bytes) -> pb.CreateActorReply:
        began = time.perf_counter()
        first = self._store.get_actor(actor_id)
        request = {k: v for k, v in first.resources.amounts.items() if v > 0} if first else {}
        actor = await self._place(actor_id, request)
        if actor.state == DEAD:
            return pb.CreateActorReply(actor=actor)
        node_id = actor.node_id
        try:
            node = self._store.get_node(node_id)
            if node is None or node.state == DEAD:
                return self._fail(actor_id, f"its node {node_id} died before the actor started")
            stub = await self._nodes.agent(node)
            started = await stub.StartActor(pb.StartActorRequest(actor=actor, creation_spec=spec))
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as e:
            if isinstance(e, asyncio.CancelledError) and asyncio.current_task().cancelling():
                raise  # the head itself is stopping
            detail = f"{e.code().name}: {e.details()}" if isinstance(e, grpc.aio.AioRpcError) else e
            return self._fail(actor_id, f"node {node_id} could not start the actor ({detail})")
        finally:
            held = self._reserved.get(node_id, {})
            for k, v in request.items():
                held[k] = held.get(k, 0.0) - v
        if started.error:
            return self._fail(actor_id, started.error)
        if started.creation_error:
            reply = self._fail(actor_id, "the constructor raised")
            reply.creation_error = started.creation_error
            return reply
        actor = self._store.get_actor(actor_id) or actor
        actor.worker_id = started.worker_id
        actor.worker_address = started.worker_address
        actor.pid = started.pid
        if actor.state == DEAD:  # killed, or its node died, while the constructor ran
            await self._kill_worker(actor)
            return pb.CreateActorReply(actor=actor)
        actor.state = ALIVE
        actor.pending_reason = ""
        self._store.upsert_actor(actor)
        if not actor.max_restarts:
            self._store.kv_del(SPECS_NS, actor.actor_id)  # no restart will need it
        self._charge(node_id, request)
        took = time.perf_counter() - began
        RECORDER.observe("freight_head_scheduling_latency_seconds", ("actor",), took)
        logger.info("actor alive", actor_id=actor_id, node_id=node_id, worker_id=actor.worker_id)
        if self._events is not None:
            self._events.record(
                "ACTOR_CREATED",
                f"actor {actor.class_name} created (pid {actor.pid})",
                actor_id=actor_id,
                job_id=actor.job_id,
                node_id=node_id,
                worker_id=actor.worker_id,
            )
        return pb.CreateActorReply(actor=actor)

    def _charge(self, node_id: str, request: Mapping[str, float]) -> None:
        """Take the actor's resources off the node's free resources until its next heartbeat."""
        node = self._store.get_node(node_id)
        if node is None or not request:
            return
        for k, v in request.items():
            node.available.amounts[k] = node.available.amounts.get(k, 0.0) - v
        self._store.upsert_node(node)

    def _fail(self, actor_id: str, cause: str) -> pb.CreateActorReply:
        actor = self._store.get_actor(actor_id) or pb.ActorInfo(actor_id=actor_id)
        if actor.state != DEAD:
            actor = self._set_dead(actor, cause)
            _count_death(actor, "creation_failed")
        logger.warning("actor creation failed", actor_id=actor_id, cause=actor.death_cause)
        return pb.CreateActorReply(actor=actor)

    def _set_dead(self, actor: pb.ActorInfo, cause: str, severity: str = "WARNING") -> pb.ActorInfo:
        actor.state = DEAD
        actor.death_cause = cause
        actor.pending_reason = ""
        actor.end_time = time.time()
        self._store.upsert_actor(actor)
        self._store.kv_del(SPECS_NS, actor.actor_id)
        if self._events is not None:
            self._events.record(
                "ACTOR_DEAD",
                f"actor {actor.class_name or actor.actor_id} dead: {cause}",
                severity=severity,
                actor_id=actor.actor_id,
                job_id=actor.job_id,
                node_id=actor.node_id,
                worker_id=actor.worker_id,
            )
        return actor

    # ---- deaths ------------------------------------------------------------------------------

    async def kill(
        self, actor_id: str, cause: str, why: str = "killed", no_restart: bool = True
    ) -> bool:
        """Kill the actor (force-stop its worker); return False if it was unknown or DEAD.

        ``why`` is the death cause label of ``freight_actor_deaths_total``. With
        ``no_restart=False`` an actor that may restart is restarted, as after a crash.
        """
        actor = self._store.get_actor(actor_id)
        if actor is None or actor.state == DEAD:
            return False
        if not no_restart and actor.state == ALIVE and actor.max_restarts:
            logger.info("actor killed to restart", actor_id=actor_id, cause=cause)
            await self._kill_worker(actor)  # its agent reports the death: report_death restarts
            return True
        _count_death(actor, why)
        was_alive = actor.state == ALIVE
        self._set_dead(actor, cause, "INFO")  # asked for: not a failure
        logger.info("actor killed", actor_id=actor_id, cause=cause)
        if was_alive:
            await self._kill_worker(actor)
        else:
            await self._nodes.notify()  # wakes its creation, which sees it DEAD
        return True

    async def _kill_worker(self, actor: pb.ActorInfo) -> None:
        node = self._store.get_node(actor.node_id)
        if node is None or node.state == DEAD or not actor.worker_id:
            return
        stub = await self._nodes.agent(node)
        request = pb.KillWorkerRequest(
            actor_id=actor.actor_id, worker_id=actor.worker_id, force=True
        )
        try:
            await stub.KillWorker(request, timeout=30)
        except grpc.aio.AioRpcError as e:
            logger.warning(
                "could not kill the actor's worker",
                actor_id=actor.actor_id,
                node_id=actor.node_id,
                error=f"{e.code().name}: {e.details()}",
            )

    def report_death(self, actor_id: str, cause: str, worker_id: str = "") -> None:
        """An agent saw the actor's worker exit; a cause recorded earlier (a kill) is kept.
        An actor with restarts left is started again. The exit of a worker that is not the
        actor's now (an incarnation it restarted from, one still being created) changes
        nothing: the creation or the restart already answered for it."""
        actor = self._store.get_actor(actor_id)
        if actor is None or actor.state == DEAD:
            return
        if worker_id and worker_id != actor.worker_id:
            logger.info(
                "death of a worker the actor no longer runs on",
                actor_id=actor_id,
                worker_id=worker_id,
                current=actor.worker_id,
            )
            return
        cause = cause or "its worker exited"
        if actor.state == ALIVE and self._restart(actor, cause):
            return
        self._set_dead(actor, cause)
        _count_death(actor, "worker_died")
        logger.warning("actor died", actor_id=actor_id, cause=actor.death_cause)

    async def on_node_dead(self, node_id: str, reason: str) -> None:
        """Restart the actors of a dead node that may be restarted; mark the others DEAD."""
        for actor in self._store.list_actors():
            if actor.node_id == node_id:
                cause = f"its node {node_id} died: {reason}"
                if actor.state == ALIVE and self._restart(actor, cause):
                    continue
                self._set_dead(actor, cause)
                _count_death(actor, "node_died")

    def _restart(self, actor: pb.ActorInfo, cause: str) -> bool:
        """Run the constructor of a dead actor again (elsewhere if its node is gone), if its
        ``max_restarts`` allows; False if it does not."""
        if not (actor.max_restarts < 0 or actor.num_restarts < actor.max_restarts):
            return False
        spec = self._store.kv_get(SPECS_NS, actor.actor_id)
        if spec is None:
            return False
        old_node = actor.node_id
        actor.state = RESTARTING
        actor.num_restarts += 1
        actor.pending_reason = WAITING_FOR_RESOURCES
        for field in ("node_id", "worker_id", "worker_address", "pid"):
            actor.ClearField(field)
        self._store.upsert_actor(actor)
        RECORDER.inc("freight_actor_restarts_total", (actor.class_name,))
        logger.warning(
            "actor restarting", actor_id=actor.actor_id, restart=actor.num_restarts, cause=cause
        )
        if self._events is not None:
            limit = "unlimited" if actor.max_restarts < 0 else str(actor.max_restarts)
            self._events.record(
                "ACTOR_RESTARTED",
                f"actor {actor.class_name} restarting ({actor.num_restarts} of {limit}): {cause}",
                severity="WARNING",
                actor_id=actor.actor_id,
                job_id=actor.job_id,
                node_id=old_node,
            )
        self._start_creation(actor.actor_id, spec)
        return True

    async def kill_job_actors(self, job_id: str, cause: str = "") -> int:
        """Kill the live non-detached actors of a job; return how many were killed."""
        victims = [
            a.actor_id for a in self._store.list_actors() if a.job_id == job_id and not a.detached
        ]
        cause = cause or f"its job {job_id} finished"
        kills = (self.kill(actor_id, cause, "owner_died") for actor_id in victims)
        done = await asyncio.gather(*kills)
        return sum(done)

    async def close(self) -> None:
        """Cancel the creations in flight."""
        tasks = list(self._creations.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
