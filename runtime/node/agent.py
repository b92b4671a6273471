"""The node agent: one per machine. Owns the node's resources, worker pool and object store.

Drivers and workers talk to it over the Unix data-plane socket (leases, object reservations,
frees); the head talks to it over gRPC (actor workers, stats, shutdown). All scheduling decisions
are made by the I/O-free :class:`freight.core.lease.LeaseManager`; this module only carries
messages and processes.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import pickle
import socket
import time
import uuid
from collections import deque
from typing import Any

from loguru import logger

from freight.config import settings
from freight.core.lease import (
    ActorClaim,
    ActorRequest,
    Grant,
    Held,
    Infeasible,
    LeaseManager,
    LeaseRequest,
    StartWorkers,
    Stop,
    WorkerSlot,
    fits,
)
from freight.core.placement import ClusterView, NodeState
from freight.core.task_state import INFEASIBLE, WAITING_FOR_DRAINED, WAITING_FOR_RESOURCES
from freight.exceptions import ObjectStoreFullError, OutOfDiskError
from freight.objects.shm import segment_dir
from freight.objects.spill import spill_directory
from freight.objects.store import FULL_WAIT_S, ObjectStore, format_bytes
from freight.observe import tracing
from freight.observe.aggregate import NodeFigures
from freight.observe.recorder import RECORDER
from freight.protocol import messages as m
from freight.protocol.aio import AioConn, serve_connection
from freight.protocol.frames import ProtocolError, split_address
from freight.util.process import identity

from .events import STORE_FULL_INTERVAL_S, EventOutbox, WorkerExits
from .memory_monitor import Candidate, WorkLedger, memory_usage
from .metrics import ActorUsage
from .transfer import ObjectPuller
from .worker_pool import WorkerPool

# How long the memory monitor waits for a victim's owner to answer WorkerKilled (so that its
# tasks fail with OutOfMemoryError, not WorkerCrashedError) before it kills the worker anyway.
OWNER_ANSWER_S = 0.5
GONE_STORES_MAX = 10_000  # remembered stores of nodes that left (to fail their fetches at once)
STOP_GRACE_S = 2.0  # a worker asked to exit (its owner is gone) is killed if still there after
# A hard node affinity to a node this agent has not heard of waits this long for it to show up
# in the head's heartbeat replies (it may have just joined) before the task is unschedulable.
NODE_AFFINITY_GRACE_S = 5.0
FENCE_WAIT_S = 10.0  # how long fencing waits for the killed workers' exits to be seen
MAX_SAMPLED_OUT_KEYS = 100_000  # (job, name, actor task) keys one telemetry report may count


def check_strategy(strategy: Any) -> tuple[Any, ...]:
    """A lease request's scheduling strategy must be one of freight.core.placement's forms."""
    if (
        isinstance(strategy, tuple)
        and strategy
        and (
            (strategy[0] in ("DEFAULT", "SPREAD") and len(strategy) == 1)
            or (
                strategy[0] == "NODE"
                and len(strategy) == 3
                and isinstance(strategy[1], str)
                and isinstance(strategy[2], bool)
            )
            or (
                strategy[0] == "LABELS"
                and len(strategy) == 3
                and all(
                    isinstance(c, tuple)
                    and len(c) == 3
                    and isinstance(c[0], str)
                    and c[1] in ("in", "not_in", "exists", "does_not_exist")
                    and isinstance(c[2], tuple)
                    for c in (*strategy[1], *strategy[2])
                )
            )
        )
    ):
        return strategy
    raise ProtocolError(f"invalid scheduling strategy {strategy!r}")


def check_resources(resources: Any) -> None:
    """A lease request's amounts must be finite non-negative numbers keyed by name."""
    if not isinstance(resources, dict) or not all(
        isinstance(k, str)
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and v >= 0
        for k, v in resources.items()
    ):
        raise ProtocolError(f"invalid resource request {resources!r}")


class NodeAgent:
    def __init__(
        self,
        session_dir: str,
        node_id: str,
        token: str,
        resources: dict[str, float],
        store_capacity: int,
        shm_root: str,
        prestart: int,
        validate: bool = False,
        node_ip: str = "",
        labels: dict[str, str] | None = None,
    ) -> None:
        self.session_dir = session_dir
        self.node_id = node_id
        # This life of the node: a new one after the agent fenced itself (fence()).
        self.incarnation = uuid.uuid4().hex
        self.fenced_workers: set[str] = set()  # killed by fence(): their deaths are not news
        self.token = token
        self.data_socket = os.path.join(session_dir, "sockets", f"agent-{node_id[:12]}.sock")
        self.leases = LeaseManager(
            resources, validate, node_id, labels, settings.maximum_startup_concurrency
        )
        self.node_ip = node_ip
        self.data_address = ""  # host:port of the TCP data plane, once it listens
        # This node live (the lease manager's own amounts), the others as the head last said.
        self.view = ClusterView(
            NodeState(node_id, self.leases.total, self.leases.available, dict(labels or {}))
        )
        # (its store folder is set below, once the store is made)
        self.spilled = 0  # lease requests sent on to other nodes
        self.drain_seq = 0  # the head's latest word on draining this node (NodeInfo.drain_seq)
        session_name = os.path.basename(os.path.normpath(session_dir))
        store_dir = segment_dir(shm_root, session_name)
        self.store = ObjectStore(
            store_dir, store_capacity, spill_dir=spill_directory(session_dir, store_dir)
        )
        self._restores: dict[bytes, asyncio.Future[str]] = {}  # one restore per object at once
        self._spill_running = False  # a background spill pass is under way
        self.view.nodes[node_id].store_dir = self.store.directory
        self.pool = WorkerPool(session_dir, node_id, self.data_socket, token)
        self.puller = ObjectPuller(self.store, token, self._agent_of_store, self._next_view)
        self.prestart = prestart
        self.conns: dict[int, AioConn] = {}
        self.worker_conns: dict[str, AioConn] = {}
        self.actor_waiters: dict[str, asyncio.Future[bytes]] = {}
        # Actors queued for a worker (LeaseManager.actor_queue): the claim wakes its creator.
        self.actor_claims: dict[int, asyncio.Future[WorkerSlot]] = {}
        self.actor_of_worker: dict[str, str] = {}
        self.view_updated = asyncio.Event()  # set and cleared by each cluster view
        self.stopping = asyncio.Event()
        self.on_actor_death: Any = None  # async callable(actor_id, cause, worker_id), by the server
        self.on_driver_lost: Any = None  # async callable(job_id), set by the server
        self.refused = 0  # connections refused at the greeting (wrong token, bad HELLO)
        # When the head last answered a heartbeat (start counts as on time), for
        # freight_node_heartbeat_overdue_seconds.
        self.heartbeat_accepted_at = time.monotonic()
        self.malformed = 0  # authenticated connections closed for a malformed or invalid frame
        # Telemetry: the figures of every process on this node, and task events for the head.
        self.figures = NodeFigures()
        # Task rows from owners, one batch per report (forwarded to the head as they came).
        self.task_events: deque[tuple[int, bytes]] = deque()
        self.task_event_rows = 0
        self.max_task_rows = max(1, settings.task_events_buffer) * 4
        self.task_events_dropped = 0
        # Successful tasks the owners left out of their samples, by (job, name, actor task),
        # and each owner's latest snapshot of its live tasks left out (see Telemetry).
        self.task_sampled_out: dict[tuple[str, str, bool], int] = {}
        self.live_sampled_out: dict[int, list[tuple[str, str, bool, str, str, int]]] = {}
        self.live_sampled_out_changed = False
        # Live left-out tasks whose owner exited with them, by (job, name, actor task, why).
        self.task_owner_gone: dict[tuple[str, str, bool, str], int] = {}
        self.clean_exit: set[int] = set()  # connections that sent a final report
        self.job_labels: dict[str, dict[str, str]] = {}
        self.actor_usage = ActorUsage()  # resource-seconds of this node's actors, for job cost
        # Cluster events for the head (server.py sends them), and crash detection.
        self.events = EventOutbox(node_id)
        self.worker_exits = WorkerExits(self.events)
        # The memory monitor (memory_monitor.py): what each worker runs, the workers it is
        # killing (their owner told, the kill to follow), and why actors' workers were killed.
        self.work = WorkLedger()
        self.doomed: dict[str, tuple[Candidate, str]] = {}
        self.memory_causes: dict[str, str] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tcp_server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Future[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.data_socket), exist_ok=True)
        if os.path.exists(self.data_socket):
            os.unlink(self.data_socket)
        self._server = await asyncio.start_unix_server(self._on_client, path=self.data_socket)
        os.chmod(self.data_socket, 0o600)
        if self.node_ip:
            # Owners of other nodes ask here for leases; the same HELLO check guards it.
            self._tcp_server = await asyncio.start_server(self._on_client, self.node_ip, 0)
            port = self._tcp_server.sockets[0].getsockname()[1]
            host = f"[{self.node_ip}]" if ":" in self.node_ip else self.node_ip
            self.data_address = f"{host}:{port}"
            self.view.nodes[self.node_id].address = self.data_address
        self._apply(self.leases.prestart(self.prestart))

    async def stop(self) -> None:
        for server in (self._server, self._tcp_server):
            if server is not None:
                server.close()
        for conn in list(self.conns.values()):
            conn.close()
        await asyncio.to_thread(self.pool.stop_all)
        self.store.destroy()
        if os.path.exists(self.data_socket):
            os.unlink(self.data_socket)

    def _spawn(self) -> None:
        wid = self.pool.spawn()
        self.leases.worker_starting(wid)

    # -- data plane --------------------------------------------------------------------------

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(
            reader,
            writer,
            self.token,
            self._opened,
            self._handle,
            self._closed,
            self._refusal,
            self._malformed,
        )

    def _refusal(self, text: str) -> None:
        self.refused += 1
        logger.warning(text)

    def _malformed(self, text: str) -> None:
        self.malformed += 1
        logger.warning(text)

    def _opened(self, conn: AioConn) -> None:
        self.conns[conn.id] = conn
        role = conn.role
        if len(role) > 3 and role[0] == "driver" and isinstance(role[3], dict):
            self.job_labels[str(role[2])] = {str(k): str(v) for k, v in role[3].items()}

    def _closed(self, conn: AioConn, error: BaseException | None) -> None:
        self.conns.pop(conn.id, None)
        gone = self.live_sampled_out.pop(conn.id, None)
        if gone:
            # Its live tasks went with it: they end here, failed, as their records do.
            self.live_sampled_out_changed = True
            why = "JobEnded" if conn.role and conn.role[0] == "driver" else "OwnerDiedError"
            for job, name, actor, _state, _reason, n in gone:
                key = (job, name, actor, why)
                self.task_owner_gone[key] = self.task_owner_gone.get(key, 0) + n
        self.figures.retire(conn.id)
        clean = conn.id in self.clean_exit
        self.clean_exit.discard(conn.id)
        role = conn.role
        if len(role) > 1 and role[0] == "driver" and not self.stopping.is_set():
            RECORDER.inc("freight_driver_disconnects_total", ("true" if clean else "false",))
            if not clean:
                job = str(role[2]) if len(role) > 2 else ""
                self.events.record(
                    "DRIVER_DISCONNECTED",
                    f"the driver of job {job or '?'} disconnected without shutting down",
                    job_id=job,
                )
                if job and self.on_driver_lost is not None:
                    self._background(self.on_driver_lost(job))
        owner = ""
        if len(role) < 2:
            pass  # a peer that never said who it is owns nothing here
        elif role[0] in ("driver", "owner"):
            owner = role[1]  # "owner": a driver or worker of another node holding leases here
        elif role[0] == "worker":
            slot = self.leases.workers.get(role[1])
            owner = slot.address if slot is not None else ""
        if owner and not self.stopping.is_set():
            # An owner that is gone can never free its objects: free them for it.
            gone = [e.object_id for e in self.store.list_objects() if e.owner == owner]
            if gone:
                self.store.delete(gone)
        if len(role) > 1 and role[0] == "worker":
            wid = role[1]
            if not self.stopping.is_set():
                self.worker_exits.connection_closed(wid, self._worker_info(wid))
            self.worker_conns.pop(wid, None)
            self.pool.connection_lost(wid)
            self._apply(self.leases.worker_exited(wid, "connection closed"))
            actor_id = self.actor_of_worker.pop(wid, None)
            if actor_id:
                self.actor_usage.stopped(actor_id)
                waiter = self.actor_waiters.pop(actor_id, None)
                if waiter and not waiter.done():
                    waiter.set_exception(RuntimeError("the actor's worker process exited"))
                cause = self.memory_causes.pop(wid, "worker process died")
                fenced = wid in self.fenced_workers
                if self.on_actor_death is not None and not self.stopping.is_set() and not fenced:
                    self._background(self.on_actor_death(actor_id, cause, wid))
            self.fenced_workers.discard(wid)
        # Workers own leases too (nested tasks, actors that submit tasks): take those back.
        self._apply(self.leases.client_gone(conn.id, crashed=not clean))

    def _worker_info(self, wid: str) -> dict[str, Any]:
        """What a crash report says about a worker: pid, and the actor or job it served."""
        slot = self.leases.workers.get(wid)
        info: dict[str, Any] = {"pid": (slot.pid if slot else 0) or self.pool.pid(wid)}
        info["actor_id"] = self.actor_of_worker.get(wid, "")
        holder = self.conns.get(slot.client) if slot is not None and slot.client >= 0 else None
        if holder is not None and len(holder.role) > 2 and holder.role[0] == "driver":
            info["job_id"] = str(holder.role[2])
        return info

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handle(self, conn: AioConn, msg: Any) -> None:
        t = type(msg)
        if t is m.RequestLease:
            check_resources(msg.resources)
            strategy = check_strategy(msg.strategy)
            if not isinstance(msg.prefer, str):
                raise ProtocolError("malformed RequestLease: prefer must be a store folder")
            # A drained node decides again even for a request sent here: an open node takes it.
            draining = self.leases.draining
            if (not msg.spilled or draining) and (
                len(self.view.nodes) > 1 or strategy[0] != "DEFAULT" or draining
            ):
                choice = self.view.pick(msg.resources, strategy, msg.prefer)
                if choice.node_id and choice.node_id != self.node_id:
                    self._spill(conn, msg.req_id, msg.resources, choice.node_id, choice.near)
                    return
                if not choice.node_id and strategy[0] == "NODE" and strategy[1] in self.view.nodes:
                    # infeasible=False: unschedulable for good, the owner fails the task
                    conn.send(m.LeaseRejected(msg.req_id, f"{msg.name}: {choice.reason}", False))
                    return
            elif (
                msg.spilled
                and conn.role[:1] == ("owner",)
                and not fits(msg.resources, self.leases.total)
            ):
                # Sent here on an old view: say so, and the owner asks its own agent again.
                conn.send(
                    m.LeaseRejected(msg.req_id, f"node {self.node_id[:12]} cannot run it", True)
                )
                return
            if not isinstance(msg.retriable, bool):
                raise ProtocolError("malformed RequestLease: retriable must be a bool")
            self.work.requested(conn.id, msg.req_id, msg.retriable)
            req = LeaseRequest(
                msg.req_id, conn.id, msg.resources, msg.name, strategy=strategy, spilled=msg.spilled
            )
            self._apply(self.leases.request(req))
        elif t is m.ReturnLease:
            if msg.worker_id in self.doomed:
                # The owner heard of the memory monitor's kill (or gave the worker back first,
                # which must not make it idle): kill it now.
                self._kill_doomed(msg.worker_id)
            elif msg.disconnect:
                # The owner lost the worker (usually because it died): killing what is left is
                # cleanup, not a request to exit, so a death here still counts as a crash.
                self.pool.kill(msg.worker_id, requested=False)
            else:
                self._apply(self.leases.lease_returned(msg.worker_id))
        elif t is m.ReserveObject:
            try:
                path = self.store.try_reserve(msg.object_id, msg.size, msg.owner)
            except (ObjectStoreFullError, ValueError) as exc:
                self._reserve_failed(conn, msg.req_id, exc)
            else:
                if path is None:  # room must be made by spilling first: off the event loop
                    self._background(self._reserve_spilling(conn, msg))
                else:
                    conn.send(m.Reserved(msg.req_id, path))
                self._spill_soon()
        elif t is m.RestoreObject:
            if not isinstance(msg.object_id, bytes):
                raise ProtocolError("malformed RestoreObject")
            path = self.store.resident_path(msg.object_id)
            if path is not None:  # restored already, or never spilled
                conn.send(m.Reserved(msg.req_id, path))
            else:
                self._background(self._restore(conn, msg))
        elif t is m.FetchObject:
            if (
                not isinstance(msg.object_id, bytes)
                or not isinstance(msg.size, int)
                or msg.size < 0
                or not isinstance(msg.store_dir, str)
            ):
                raise ProtocolError("malformed FetchObject")
            self._background(self._fetch(conn, msg))
        elif t is m.FreeElsewhere:
            if not isinstance(msg.store_dir, str) or not isinstance(msg.object_ids, list):
                raise ProtocolError("malformed FreeElsewhere")
            address = self._agent_of_store(msg.store_dir)
            if address is not None:  # a node that is gone took its store with it
                self._background(self.puller.free_at(address, msg.object_ids))
        elif t is m.SealObject:
            self.store.seal(msg.object_id)
        elif t is m.FreeObjects:
            self.store.delete(msg.object_ids)
        elif t is m.CancelLeaseRequest:
            self.leases.cancel(msg.req_id, conn.id)
        elif t is m.WorkerBlocked or t is m.WorkerUnblocked:
            self._apply(self.leases.set_blocked(msg.worker_id, t is m.WorkerBlocked))
        elif t is m.RegisterWorker:
            self.worker_conns[msg.worker_id] = conn
            self._apply(self.leases.worker_registered(msg.worker_id, msg.address, msg.pid))
        elif t is m.Telemetry:
            self._on_telemetry(conn, msg)
        elif t is m.ActorReady:
            waiter = self.actor_waiters.pop(msg.actor_id, None)
            if waiter and not waiter.done():
                waiter.set_result(msg.error)
        else:
            raise ProtocolError(f"unexpected {t.__name__} message on the agent socket")

    async def _next_view(self) -> None:
        """Return once the head's next cluster view has arrived."""
        await self.view_updated.wait()

    def _agent_of_store(self, store_dir: str) -> str | None:
        node = next((n for n in self.view.nodes.values() if n.store_dir == store_dir), None)
        return node.agent_address if node is not None and node.agent_address else None

    # -- spilling (freight.objects.store does the work, in threads) --------------------------

    def _reserve_failed(self, conn: AioConn, req_id: int, exc: Exception) -> None:
        try:
            blob = pickle.dumps(exc)
        except Exception:
            blob = b""
        conn.send(m.Error(req_id, str(exc), blob))
        if isinstance(exc, ObjectStoreFullError | OutOfDiskError):
            self.events.record_throttled(
                "store_full", "OBJECT_STORE_FULL", str(exc), STORE_FULL_INTERVAL_S
            )

    async def _reserve_spilling(self, conn: AioConn, msg: m.ReserveObject) -> None:
        """A reservation that needs objects spilled first: the store spills in a thread (and
        waits a little for writes in progress and readers) while the writer waits."""
        try:
            path = await asyncio.to_thread(
                self.store.reserve, msg.object_id, msg.size, msg.owner, FULL_WAIT_S
            )
        except Exception as exc:
            self._reserve_failed(conn, msg.req_id, exc)
            return
        if conn.id not in self.conns:  # the writer is gone, and its objects were freed
            self.store.delete([msg.object_id])
            return
        conn.send(m.Reserved(msg.req_id, path))
        self._spill_soon()

    async def _restore(self, conn: AioConn, msg: m.RestoreObject) -> None:
        """Copy a spilled object back into shared memory for a reader (one copy however many
        ask) and answer with its path."""
        oid = msg.object_id
        pending = self._restores.get(oid)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(self.store.restore, oid, FULL_WAIT_S))
            self._restores[oid] = pending
            pending.add_done_callback(
                lambda f: self._restores.pop(oid) if self._restores.get(oid) is f else None
            )
        try:
            path = await asyncio.shield(pending)
        except KeyError:
            conn.send(m.Error(msg.req_id, f"object {oid.hex()} is not in this node's store", b""))
            return
        except Exception as exc:
            self._reserve_failed(conn, msg.req_id, exc)
            return
        conn.send(m.Reserved(msg.req_id, path))
        self._spill_soon()

    def _spill_soon(self) -> None:
        """Start a background spill pass when the store is over its spilling threshold."""
        if not self._spill_running and self.store.over_threshold():
            self._spill_running = True
            self._background(self._spill_in_background())

    async def _spill_in_background(self) -> None:
        try:
            spilled = await asyncio.to_thread(self.store.spill_to_threshold)
        except Exception:
            logger.exception("spilling objects failed")
            return
        finally:
            self._spill_running = False
        store = self.store
        if spilled and store.spill is not None:
            self.events.record_throttled(
                "spill",
                "OBJECT_SPILLED",
                f"the object store passed {store.spill_threshold:.0%} of its "
                f"{format_bytes(store.capacity)}: spilled {format_bytes(spilled)} of objects "
                f"to {store.spill.directory}",
                STORE_FULL_INTERVAL_S,
            )

    async def _fetch(self, conn: AioConn, msg: m.FetchObject) -> None:
        try:
            path = await self.puller.fetch(msg.object_id, msg.size, "", msg.store_dir)
        except Exception as exc:
            try:
                blob = pickle.dumps(exc)
            except Exception:
                blob = b""
            conn.send(m.Error(msg.req_id, str(exc), blob))
        else:
            conn.send(m.Reserved(msg.req_id, path))

    def _spill(
        self,
        conn: AioConn,
        req_id: int,
        resources: dict[str, float],
        node_id: str,
        near: bool = False,
    ) -> None:
        node = self.view.nodes[node_id]
        self.view.charge(node_id, resources)
        self.spilled += 1
        RECORDER.inc("freight_lease_spillbacks_total", ())
        conn.send(m.LeaseSpillback(req_id, node_id, node.address, near))

    # -- draining (freight drain) -------------------------------------------------------------

    def set_draining(self, draining: bool, seq: int) -> bool:
        """The head drained this node (or opened it again): no new lease is granted here, the
        owners of leases here give them back once their tasks in flight are done, and the
        requests waiting here go to an open node that can run them; those only drained nodes
        can run wait here. What runs here goes on. ``seq`` orders the head's words (a
        heartbeat reply may carry an older one than a direct call); returns False for an old one.
        """
        if seq < self.drain_seq:
            return False
        self.drain_seq = seq
        if draining == self.leases.draining:
            return True
        self.view.nodes[self.node_id].draining = draining
        self.leases.draining = draining
        logger.info("node {}", "drained: it takes no new work" if draining else "open again")
        if draining:
            # An owner would go on pushing tasks to the workers it leased here: it gives them
            # back once their tasks in flight are done.
            for w in self.leases.workers.values():
                holder = self.conns.get(w.client) if w.state == "LEASED" else None
                if holder is not None:
                    holder.send(m.RecallLease(w.worker_id))
        self._send_on_held()
        self._apply(self.leases._dispatch())
        return True

    def _send_on_held(self) -> None:
        """While this node is drained: send the requests waiting here to an open node that can
        run them (room or not: it will grant them, this node will not)."""
        if not self.leases.draining:
            return
        for req in list(self.leases.pending):
            target = self.view.nodes.get(self.view.pick(req.resources, req.strategy).node_id)
            if target is None or target.node_id == self.node_id or target.draining:
                continue
            conn = self.conns.get(req.client)
            if conn is not None and self.leases.cancel(req.req_id, req.client):
                self._spill(conn, req.req_id, req.resources, target.node_id)

    def drain_figures(self) -> tuple[int, int, int]:
        """Tasks and actors running here, and requests waiting here for a drained node."""
        workers = self.leases.workers.values()
        return (
            sum(w.state == "LEASED" for w in workers),
            sum(w.state == "ACTOR" for w in workers),
            sum(r.reason == WAITING_FOR_DRAINED for r in self.leases.pending),
        )

    def on_cluster_view(self, nodes: list[NodeState]) -> None:
        """The head's latest word on the nodes: keep it, and send requests waiting here to a
        node that has room for them now (or that joined and can run what nobody could)."""
        stores = {n.store_dir for n in self.view.nodes.values() if n.store_dir}
        self.view.update([n for n in nodes if n.address])
        me = next((n for n in nodes if n.node_id == self.node_id), None)
        if me is not None:  # a drain the head's direct call did not bring (or a restarted agent)
            self.set_draining(me.draining, me.drain_seq)
        self._send_on_held()
        now_stores = {n.store_dir for n in self.view.nodes.values()}
        gone_stores = self.puller.gone_stores
        gone_stores -= now_stores  # back (a view sent while the head restarted lacked it)
        if stores - now_stores:  # their objects are lost: a fetch of one fails at once
            if len(gone_stores) > GONE_STORES_MAX:
                gone_stores.clear()
            gone_stores |= stores - now_stores
        self.view_updated.set()
        self.view_updated = asyncio.Event()
        now = time.time()
        moved, gone = [], []
        for req in self.leases.pending:
            if (
                req.strategy[0] == "NODE"
                and not req.strategy[2]
                and req.strategy[1] not in self.view.nodes
                and now - req.time > NODE_AFFINITY_GRACE_S
            ):
                gone.append(req)  # a hard affinity to a node that did not show up
                continue
            if req.spilled or req.reason not in (INFEASIBLE, WAITING_FOR_RESOURCES):
                continue
            choice = self.view.pick(req.resources, req.strategy)
            target = self.view.nodes.get(choice.node_id)
            if (
                target is not None
                and target.node_id != self.node_id
                and all(target.available.get(k, 0.0) + 1e-9 >= v for k, v in req.resources.items())
            ):
                moved.append((req, target.node_id))
        for req, node_id in moved:
            conn = self.conns.get(req.client)
            if conn is not None and self.leases.cancel(req.req_id, req.client):
                self._spill(conn, req.req_id, req.resources, node_id)
        for req in gone:
            conn = self.conns.get(req.client)
            if conn is not None and self.leases.cancel(req.req_id, req.client):
                why = f"{req.name}: unschedulable: node affinity to node {req.strategy[1]!s:.12}"
                conn.send(m.LeaseRejected(req.req_id, f"{why}, which is not alive", False))

    def _on_telemetry(self, conn: AioConn, msg: m.Telemetry) -> None:
        self.figures.update(conn.id, msg.metrics, msg.usage)
        if (
            not isinstance(msg.task_events, bytes)
            or not isinstance(msg.dropped, int)
            or not isinstance(msg.task_rows, int)
        ):
            raise ProtocolError("malformed task events in a telemetry report")
        self.task_events_dropped += max(0, msg.dropped)
        if msg.sampled_out:
            self._count_sampled_out(msg.sampled_out)
        self._live_sampled_out(conn.id, msg.live_sampled_out)
        rows = max(0, msg.task_rows)
        if msg.task_events and rows:
            # The rows stay packed: the head reads them, this process only forwards them.
            while self.task_events and self.task_event_rows + rows > self.max_task_rows:
                old_rows, _ = self.task_events.popleft()  # the head is not keeping up
                self.task_event_rows -= old_rows
                self.task_events_dropped += old_rows
            self.task_events.append((rows, msg.task_events))
            self.task_event_rows += rows
        if msg.final:
            self.clean_exit.add(conn.id)

    def _count_sampled_out(self, counts: Any) -> None:
        if not isinstance(counts, list) or len(counts) > MAX_SAMPLED_OUT_KEYS:
            raise ProtocolError("malformed sampled-out task counts in a telemetry report")
        got = self.task_sampled_out
        for item in counts:
            if not (
                type(item) is tuple
                and tuple(map(type, item)) == (str, str, bool, int)
                and item[3] > 0
            ):
                raise ProtocolError("malformed sampled-out task counts in a telemetry report")
            key = item[:3]
            got[key] = got.get(key, 0) + item[3]

    def _live_sampled_out(self, conn_id: int, counts: Any) -> None:
        if not isinstance(counts, list) or len(counts) > MAX_SAMPLED_OUT_KEYS:
            raise ProtocolError("malformed live task counts in a telemetry report")
        for item in counts:
            if not (
                type(item) is tuple
                and tuple(map(type, item)) == (str, str, bool, str, str, int)
                and item[5] > 0
            ):
                raise ProtocolError("malformed live task counts in a telemetry report")
        if counts or self.live_sampled_out.get(conn_id):
            self.live_sampled_out[conn_id] = counts
            self.live_sampled_out_changed = True

    def take_owner_gone(self) -> dict[tuple[str, str, bool, str], int]:
        """Left-out live tasks whose owner exited since the last call, by (job, name, actor
        task, error type)."""
        gone, self.task_owner_gone = self.task_owner_gone, {}
        return gone

    def take_live_sampled_out(self) -> dict[tuple[str, str, bool, str, str], int] | None:
        """This node's owners' live tasks left out of their samples, summed, if there are any or
        they changed since the last call (else None). A snapshot is sent again while it has
        counts: a restarted head, or one that missed a report, has it again at the next one."""
        if not self.live_sampled_out_changed and not any(self.live_sampled_out.values()):
            return None
        self.live_sampled_out_changed = False
        total: dict[tuple[str, str, bool, str, str], int] = {}
        for counts in self.live_sampled_out.values():
            for *key, n in counts:
                k = tuple(key)
                total[k] = total.get(k, 0) + n  # type: ignore[index]
        return total  # type: ignore[return-value]

    def take_task_events(self) -> tuple[list[bytes], int, dict[tuple[str, str, bool], int]]:
        """The packed task-row batches received since the last call, how many rows were
        dropped, and the successful tasks left out of the owners' samples."""
        chunks = [chunk for _, chunk in self.task_events]
        self.task_events.clear()
        self.task_event_rows = 0
        dropped, self.task_events_dropped = self.task_events_dropped, 0
        counted, self.task_sampled_out = self.task_sampled_out, {}
        return chunks, dropped, counted

    def _apply(self, actions: list[Any]) -> None:
        for act in actions:
            if type(act) is Grant:
                conn = self.conns.get(act.req.client)
                w = act.worker
                if conn is None:
                    self.leases.lease_returned(w.worker_id)
                    continue
                self.work.granted(w.worker_id, act.req.client, act.req.req_id, act.req.name)
                conn.send(m.LeaseGranted(act.req.req_id, w.worker_id, w.address, w.pid, w.gpu_ids))
            elif type(act) is ActorClaim:
                claim = self.actor_claims.pop(id(act.req), None)
                if claim is not None and not claim.done():
                    claim.set_result(act.worker)
                else:  # its creation was given up meanwhile: the worker serves others
                    self._apply(self.leases.unclaim(act.worker.worker_id))
            elif type(act) is StartWorkers:
                for _ in range(act.n):
                    self._spawn()
            elif type(act) is Stop:
                for wid in act.worker_ids:
                    self._stop_worker(wid, act.reason)
            elif type(act) is Held:
                conn = self.conns.get(act.req.client)
                if conn is not None:
                    conn.send(m.LeaseWaiting(act.req.req_id, act.req.reason))
            elif type(act) is Infeasible:
                logger.warning(act.message)
                conn = self.conns.get(act.req.client)
                if conn is not None:
                    conn.send(m.LeaseRejected(act.req.req_id, act.message, True))

    # -- actors ------------------------------------------------------------------------------

    async def start_actor(
        self, actor_id: str, creation_spec: bytes, job_id: str, resources: dict[str, float]
    ) -> tuple[str, str, int, bytes, str]:
        """Claim a worker for an actor and run its constructor.

        Returns (worker_id, worker_address, pid, creation_error, error).
        """
        incarnation = self.incarnation
        infeasible = self.leases.actor_infeasible(resources)
        if infeasible:
            return "", "", 0, b"", infeasible
        # In line for a worker (started within the start-up bound); the claim wakes this one.
        req = ActorRequest(actor_id, resources)
        claim: asyncio.Future[WorkerSlot] = asyncio.get_running_loop().create_future()
        self.actor_claims[id(req)] = claim
        try:
            self._apply(self.leases.request_actor(req))
            w = await claim
        except BaseException:  # given up (the head's call was cancelled)
            if self.actor_claims.pop(id(req), None) is not None:
                self.leases.cancel_actor(req)
            elif claim.done() and not claim.cancelled():
                self._apply(self.leases.unclaim(claim.result().worker_id))
            raise
        conn = self.worker_conns.get(w.worker_id)
        if conn is None:
            return "", "", 0, b"", f"worker {w.worker_id} is not connected"
        if self.incarnation != incarnation:
            return "", "", 0, b"", self._fenced_start(w.worker_id)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.actor_waiters[actor_id] = fut
        self.actor_of_worker[w.worker_id] = actor_id
        conn.send(m.CreateActor(actor_id, creation_spec, job_id, w.gpu_ids))
        try:
            creation_error = await fut
        except RuntimeError as exc:
            return w.worker_id, w.address, w.pid, b"", str(exc)
        if self.incarnation != incarnation:
            return w.worker_id, w.address, w.pid, b"", self._fenced_start(w.worker_id)
        if not creation_error:
            self.actor_usage.started(actor_id, job_id, resources)
        # Keep the pool warm for tasks: the claimed worker now belongs to the actor.
        self._apply(self.leases._dispatch())
        return w.worker_id, w.address, w.pid, creation_error, ""

    def _fenced_start(self, worker_id: str) -> str:
        """An actor start the head asked of an incarnation that has since fenced itself: its
        worker must not live on (the head has given the actor up with that incarnation)."""
        self.fenced_workers.add(worker_id)
        self.worker_exits.expect(worker_id)
        self.pool.kill(worker_id, force=True)
        return f"node {self.node_id} fenced itself while the actor started (declared dead)"

    # -- fencing -----------------------------------------------------------------------------

    async def fence(self) -> list[int]:
        """The head declared this incarnation of the node dead, and has restarted or given up
        its actors and retried its tasks elsewhere: stop every worker (their leases go with
        them) before the node may come back, so that no actor runs twice. Returns the pids
        killed; the node's incarnation is new from here on
        (docs/decisions/0034-a-dead-node-fences-itself.md)."""
        self.incarnation = uuid.uuid4().hex
        doomed = [(wid, p) for wid, p in self.pool.procs.items() if p.popen.poll() is None]
        for wid, _ in doomed:
            self.fenced_workers.add(wid)
            self.worker_exits.expect(wid)  # killed on purpose: not a crash
            self.pool.kill(wid, force=True)
        deadline = time.monotonic() + FENCE_WAIT_S
        while time.monotonic() < deadline and any(
            p.popen.poll() is None or wid in self.worker_conns for wid, p in doomed
        ):
            # The exits are seen by the connection readers and the reap loop: give them turns.
            await asyncio.sleep(0.02)
        self._apply(self.leases._dispatch())  # work queued meanwhile starts on fresh workers
        return [p.popen.pid for _, p in doomed]

    # -- placement groups --------------------------------------------------------------------

    def reserve_bundles(
        self, pg_id: str, bundles: list[tuple[int, dict[str, float]]], commit: bool = False
    ) -> str:
        """Set a placement group's bundles aside here (all of them or none), or with
        ``commit`` make them usable; "" or why not."""
        if commit:
            error, actions = self.leases.commit_bundles(pg_id)
            self._apply(actions)
            return error
        if self.leases.draining:  # the head places no group here; a call sent before the drain
            return f"node {self.node_id[:12]} is drained: it takes no new bundles"
        error, actions = self.leases.reserve_bundles(pg_id, bundles)
        self._apply(actions)
        if not error:
            logger.info("reserved {} bundles of placement group {}", len(bundles), pg_id)
        return error

    def return_bundles(self, pg_id: str) -> int:
        """Give a placement group's bundles back; its workers are killed. Returns how many."""
        doomed, actions = self.leases.return_bundles(pg_id)
        for wid in doomed:
            self.kill_worker(worker_id=wid, force=True)
        self._apply(actions)
        return len(doomed)

    def cancel_owned_task(self, owner: str, task_id: bytes, force: bool, recursive: bool) -> bool:
        """Pass a cancel on to the driver or worker of this node whose data-plane address is
        ``owner`` (the task's owner); False when none of them is connected here."""
        path = split_address(owner)[0] or owner
        for conn in list(self.conns.values()):
            role = conn.role
            if len(role) < 2:
                continue
            if role[0] == "driver":
                address = str(role[1])
            elif role[0] == "worker":
                slot = self.leases.workers.get(role[1])
                address = slot.address if slot is not None else ""
            else:
                continue  # an owner of another node holding leases here: not its node
            if address and (split_address(address)[0] or address) == path:
                conn.send(m.CancelOwnedTask(task_id, force, recursive))
                return True
        return False

    def kill_worker(self, worker_id: str = "", actor_id: str = "", force: bool = True) -> bool:
        if not worker_id and actor_id:
            worker_id = next((w for w, a in self.actor_of_worker.items() if a == actor_id), "")
        if not worker_id:
            return False
        if not force:
            conn = self.worker_conns.get(worker_id)
            if conn is not None:
                self.pool.request_exit(worker_id)
                conn.send(m.ExitWorker("asked to exit"))
                return True
        self.worker_exits.expect(worker_id)
        conn = self.worker_conns.get(worker_id) if tracing.ENABLED else None
        if conn is not None:
            # Let it send its queued trace spans first (it gives that 1 s), then make sure.
            self.pool.request_exit(worker_id)
            conn.send(m.ExitWorker("killed"))
            asyncio.get_running_loop().call_later(1.5, self.pool.kill, worker_id, True)
            return True
        return self.pool.kill(worker_id, force=True)

    # -- memory monitor ----------------------------------------------------------------------

    def kill_for_memory(self, victim: Candidate, reason: str) -> None:
        """Kill a worker to free the node's memory (the memory monitor chose it). The owner of
        its lease hears ``reason`` first and answers with ReturnLease, on which it is killed;
        an owner that does not answer within OWNER_ANSWER_S does not hold it up."""
        wid = victim.worker_id
        slot = self.leases.workers.get(wid)
        if slot is None or slot.pid != victim.pid or wid in self.doomed:
            return
        self.doomed[wid] = (victim, reason)
        holder = self.conns.get(slot.client) if slot.state == "LEASED" else None
        if holder is None:
            self._kill_doomed(wid)
            return
        holder.send(m.WorkerKilled(wid, reason))
        asyncio.get_running_loop().call_later(OWNER_ANSWER_S, self._kill_doomed, wid)

    def _kill_doomed(self, wid: str) -> None:
        doomed = self.doomed.pop(wid, None)
        if doomed is None:
            return  # killed already
        victim, reason = doomed
        if not self.pool.kill(wid, force=True):
            return  # it exited by itself meanwhile
        self.worker_exits.expect(wid)  # a TASK_OOM_KILLED event, not WORKER_CRASHED
        if victim.actor:
            self.memory_causes[wid] = (
                f"its worker was killed because the node ran low on memory. {reason}"
            )
            for gone in [w for w in self.memory_causes if w not in self.leases.workers]:
                del self.memory_causes[gone]
        RECORDER.inc("freight_memory_monitor_kills_total", ("actor" if victim.actor else "task",))
        logger.warning("{}", reason)
        info = self._worker_info(wid)
        self.events.record(
            "TASK_OOM_KILLED",
            reason,
            worker_id=wid,
            pid=victim.pid,
            actor_id=info.get("actor_id", ""),
            job_id=info.get("job_id", ""),
        )

    def _stop_worker(self, wid: str, why: str) -> None:
        """Ask a worker to exit now (it sends its spans first, even mid-task); kill it if it
        has not gone after STOP_GRACE_S."""
        conn = self.worker_conns.get(wid)
        self.worker_exits.expect(wid)
        self.pool.request_exit(wid)
        if conn is None:
            self.pool.kill(wid)
            return
        conn.send(m.ExitWorker(why))
        asyncio.get_running_loop().call_later(STOP_GRACE_S, self.pool.kill, wid)

    # -- housekeeping ------------------------------------------------------------------------

    async def reap_loop(self) -> None:
        idle_timeout = settings.worker_idle_timeout_s
        while not self.stopping.is_set():
            self.store.trim_pool()  # freed segments nobody reused go back to the system
            for wid in self.leases.idle_surplus(time.time(), idle_timeout):
                conn = self.worker_conns.get(wid)
                if conn is not None and self.leases.retire(wid):
                    self.worker_exits.expect(wid)
                    self.pool.request_exit(wid)
                    conn.send(m.ExitWorker("idle beyond the CPU count"))
            for wid, rc in self.pool.reap():
                if not self.stopping.is_set():
                    unregistered = wid in self.leases.workers and wid not in self.worker_conns
                    info = self._worker_info(wid) if unregistered else None
                    self.worker_exits.exited(wid, rc, info)
                if wid in self.leases.workers and wid not in self.worker_conns:
                    # Died before it registered: forget it so a replacement can start.
                    self._apply(self.leases.worker_exited(wid, f"exited with code {rc}"))
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=0.5)
            except TimeoutError:
                pass

    def stats(self) -> dict[str, Any]:
        st = self.store.stats()
        lease_stats = self.leases.statistics()
        workers = lease_stats["workers"]
        assert isinstance(workers, dict)
        memory = memory_usage()
        return {
            "object_store_used": st.used_bytes,
            "object_store_capacity": st.capacity,
            "num_objects": st.num_objects,
            "num_workers": sum(workers.values()),
            "num_idle_workers": workers.get("IDLE", 0),
            "num_actor_workers": workers.get("ACTOR", 0),
            "pending_by_reason": self.leases.pending_by_reason(),
            "infeasible_shapes": self.leases.infeasible_shapes(),
            "memory_used": memory.used,
            "memory_total": memory.total,
        }

    def write_node_file(self, agent_address: str, head_address: str = "") -> None:
        nodes = os.path.join(self.session_dir, "nodes")
        os.makedirs(nodes, exist_ok=True)
        path = os.path.join(nodes, f"{self.node_id}.json")
        info = {
            "node_id": self.node_id,
            "agent_address": agent_address,
            "data_socket": self.data_socket,
            "data_address": self.data_address,
            "head_address": head_address,
            # where it spills, for tools acting on this node's disk (freight.chaos.resources)
            "spill_dir": self.store.spill.directory if self.store.spill else "",
            **identity(),  # pid, and what tells this process from a later one with its pid
            "hostname": socket.gethostname(),
            "start_time": time.time(),
        }
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, path)

    def remove_node_file(self) -> None:
        """Remove the node file once this agent stops, so that nothing takes it for a live one."""
        try:
            os.unlink(os.path.join(self.session_dir, "nodes", f"{self.node_id}.json"))
        except FileNotFoundError:
            pass
