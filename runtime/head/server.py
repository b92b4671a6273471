"""The head process: the control store behind the ``HeadService`` gRPC server.

:class:`HeadServicer` only carries messages; nodes live in :mod:`freight.head.nodes`, actors in
:mod:`freight.head.actors`, jobs and submitted drivers in :mod:`freight.head.jobs`, persistence
in :mod:`freight.head.control_store`. :func:`run_head`
binds the port, writes ``<session_dir>/head.json``, serves until ``Shutdown`` or SIGTERM/SIGINT,
then stops gracefully.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from grpc import aio
from loguru import logger

from freight.config import settings
from freight.core.task_state import TERMINAL
from freight.head import fault_hooks, operator_actions
from freight.head.actors import ALIVE, ActorDirectory
from freight.head.audit import record_action
from freight.head.control_store import ControlStore
from freight.head.events import EventStore
from freight.head.jobs import STOP_REQUESTED, JobManager
from freight.head.metrics import HeadMetrics
from freight.head.nodes import HealthCheckPolicy, NodeDirectory, sum_amounts
from freight.head.placement_groups import MAX_PG_WAIT_S, PlacementGroupDirectory
from freight.head.rpc import rpc
from freight.head.state_service import StateServiceServicer
from freight.head.task_store import TaskStore
from freight.head.watch import WatchHub
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.protocol.messages import load_task_rows
from freight.util.grpc_auth import CHANNEL_OPTIONS, TokenAuthInterceptor, caller, read_token
from freight.util.grpc_health import add_health
from freight.util.grpc_metrics import GrpcMetricsInterceptor, watch_loop_lag
from freight.util.grpc_tls import add_port, check_tls
from freight.util.grpc_tracing import KV_KEY as TRACING_KV_KEY
from freight.util.grpc_tracing import KV_NAMESPACE as TRACING_KV_NAMESPACE
from freight.util.grpc_tracing import published_config as published_tracing_config
from freight.util.grpc_tracing import server_interceptors as tracing_interceptors
from freight.util.private_files import make_private_dir
from freight.util.process import announce_ready, identity
from freight.util.rpc_faults import FAULTS, HEAD, RpcFaultInterceptor
from freight.util.tokens import storage_token_path, write_token

HEAD_INFO_FILE = "head.json"
CONTROL_DB_FILE = "control.db"
# Where older heads kept the cluster's token in the store; now it is <storage>.token (0600).
LEGACY_TOKEN_KV = ("freight", "cluster_token")

_Reply = TypeVar("_Reply")


@dataclass(frozen=True)
class HeadConfig:
    """Command-line settings of the head process."""

    session_dir: str
    port: int = 0
    bind: str = "127.0.0.1"
    cluster_name: str = "freight"
    # A node whose heartbeats stop for this long is marked dead; None: a looser default than
    # the health checks (docs/decisions/0016-health-checks.md).
    node_timeout_s: float | None = None
    # None: from the FREIGHT_HEALTH_CHECK_* settings, read when the head starts.
    health_checks: HealthCheckPolicy | None = None
    metrics_port: int = 0  # the head's /metrics and /sd (0: any free port)
    ready_fds: tuple[int, ...] = ()  # pipes to write the address to once serving (launchers)
    die_with_parent: bool = False  # the launcher's process exiting ends the head too
    # The control store (SQLite, WAL): "" is control.db in the session directory. A head
    # started on a store a previous head left carries on its cluster.
    storage: str = ""


class HeadServicer(pb_grpc.HeadServiceServicer):
    """Every ``HeadService`` RPC."""

    def __init__(self, config: HeadConfig, store: ControlStore, token: str) -> None:
        self.config = config
        self.token = token  # to tell the role of a call that acts (head/audit.py)
        self.start_time = time.time()
        self.stopping = asyncio.Event()
        self.store = store
        self.events = EventStore(store, settings.events_max)
        self._leaving: set[str] = set()  # nodes that unregistered: removed, not dead
        self.nodes = NodeDirectory(
            store,
            token,
            self._on_node_dead,
            health=config.health_checks or HealthCheckPolicy.from_settings(),
            heartbeat_timeout_s=config.node_timeout_s,
        )
        self.actors = ActorDirectory(store, self.nodes, self.events)
        self.jobs = JobManager(
            store,
            self.events,
            self.actors,
            os.path.abspath(config.session_dir),
            token,
            settings.job_stop_grace_s,
        )
        self.pgs = PlacementGroupDirectory(store, self.nodes, self.events)
        self.tasks = TaskStore()  # task records for the state API
        self.metrics = HeadMetrics(store, config.session_dir, config.cluster_name)

    async def _on_node_dead(self, node_id: str, reason: str) -> None:
        self.metrics.nodes_changed()
        if node_id in self._leaving:
            self.events.record("NODE_REMOVED", f"node left: {reason}", node_id=node_id)
        else:
            self.events.record(
                "NODE_DEAD", f"node dead: {reason}", severity="ERROR", node_id=node_id
            )
        await self.actors.on_node_dead(node_id, reason)

    # ---- nodes -------------------------------------------------------------------------------

    @rpc
    async def RegisterNode(self, request, context):
        known = self.store.get_node(request.node.node_id)
        await self.nodes.admit(request.node)  # a dead incarnation is refused here
        self.metrics.on_register(request.node)
        await self.nodes.register(request.node)
        self.metrics.nodes_changed()
        rejoined = " again" if known is not None and known.state == "DEAD" else ""
        self.events.record(
            "NODE_JOINED",
            f"node joined{rejoined} ({request.node.hostname or request.node.agent_address})",
            node_id=request.node.node_id,
        )
        return pb.RegisterNodeReply(cluster_name=self.config.cluster_name)

    @rpc
    async def Heartbeat(self, request, context):
        verdict = await self.nodes.heartbeat(request)
        if verdict.reregister:
            return pb.HeartbeatReply(
                reregister=True,
                fence=bool(verdict.fence_reason),
                fence_reason=verdict.fence_reason,
            )
        self.metrics.on_heartbeat(request.node_id)
        # Every agent learns the others' free amounts from here, to spill lease requests back.
        view = [
            pb.NodeView(
                node_id=n.node_id,
                data_address=n.data_address,
                total=n.total,
                available=n.available,
                labels=n.labels,
                is_head_node=n.is_head_node,
                store_dir=n.store_dir,
                agent_address=n.agent_address,
                draining=n.draining,
                drain_seq=n.drain_seq,
            )
            for n in self.nodes.alive()
        ]
        return pb.HeartbeatReply(cluster=view)

    @rpc
    async def UnregisterNode(self, request, context):
        self._leaving.add(request.node_id)
        try:
            await self.nodes.mark_dead(request.node_id, request.reason or "unregistered")
        finally:
            self._leaving.discard(request.node_id)
        return pb.UnregisterNodeReply()

    @rpc
    async def ListNodes(self, request, context):
        return pb.ListNodesReply(nodes=self.store.list_nodes(include_dead=request.include_dead))

    @rpc
    async def DrainNode(self, request, context):
        node = self.nodes.find(request.node_id)
        draining = not request.undrain
        changed = node.draining != draining
        if changed:
            reason = caller(context.invocation_metadata(), self.token).reason
            node = await self.nodes.set_draining(node.node_id, draining, reason)
        told = await self.nodes.tell_draining(node)  # again if unchanged: it may have missed it
        if changed:
            what = "drained: it takes no new work" if draining else "undrained: it takes work again"
            record_action(
                self.events,
                context,
                self.token,
                "drain_node" if draining else "undrain_node",
                f"node {node.node_id[:12]} {what}",
                node_id=node.node_id,
            )
        others = [n for n in self.nodes.alive() if n.node_id != node.node_id and not n.draining]
        return pb.DrainNodeReply(
            node=node,
            changed=changed,
            open_nodes=len(others),
            node_told=told is not None,
            running_tasks=told.running_tasks if told else 0,
            running_actors=told.running_actors if told else 0,
            waiting=told.waiting if told else 0,
        )

    # ---- jobs --------------------------------------------------------------------------------

    @rpc
    async def RegisterJob(self, request, context):
        return pb.RegisterJobReply(job=self.jobs.register_driver(request.job))

    @rpc
    async def FinishJob(self, request, context):
        await self.jobs.driver_finished(request.job_id, request.state)
        await self.pgs.remove_job_groups(request.job_id)
        return pb.FinishJobReply()

    @rpc
    async def ListJobs(self, request, context):
        return pb.ListJobsReply(jobs=self.store.list_jobs())

    @rpc
    async def SubmitJob(self, request, context):
        return pb.SubmitJobReply(job=await self.jobs.submit(request))

    @rpc
    async def GetJob(self, request, context):
        job = self.jobs.get(request.job_id)
        return pb.GetJobReply(job=job, found=True) if job is not None else pb.GetJobReply()

    @rpc
    async def StopJob(self, request, context):
        who = caller(context.invocation_metadata(), self.token)
        why = STOP_REQUESTED + (f" (reason: {who.reason})" if who.reason else "")
        stopped = await self.jobs.stop(request.job_id, why)
        if stopped:
            record_action(
                self.events, context, self.token, "stop_job", f"job {request.job_id} stopped",
                job_id=request.job_id,
            )  # fmt: skip
        return pb.StopJobReply(stopped=stopped)

    @rpc
    async def JobLogs(self, request, context):
        # Server streaming: chunks are written as they are read (a coroutine, not a generator,
        # so that @rpc turns a bad request into its status code).
        async for data in self.jobs.logs(request.job_id, request.follow, request.offset):
            await context.write(pb.JobLogsChunk(data=data))

    # ---- actors ------------------------------------------------------------------------------

    @rpc
    async def CreateActor(self, request, context):
        return await self.actors.create(request)

    @rpc
    async def GetActor(self, request, context):
        return self.actors.get(request)

    @rpc
    async def KillActor(self, request, context):
        who = caller(context.invocation_metadata(), self.token)
        acting = bool(who.by or who.reason)  # `freight kill actor`, freight.kill(): an action
        actor_id = request.actor_id
        if acting:  # an id or a unique prefix, as `freight get actor` takes
            actor_id = operator_actions.actor_named(self.store.list_actors(True), actor_id)
        cause = request.cause or "killed by freight.kill"
        if acting:
            cause = f"{cause} (by {who.by or 'a client'}" + (
                f", reason: {who.reason})" if who.reason else ")"
            )
        killed = await self.actors.kill(actor_id, cause, no_restart=request.no_restart)
        if killed and acting:
            restart = "" if request.no_restart else ", may restart"
            record_action(
                self.events,
                context,
                self.token,
                "kill_actor",
                f"actor {actor_id} killed{restart}",
                actor_id=actor_id,
            )
        return pb.KillActorReply(killed=killed, actor_id=actor_id)

    @rpc
    async def CancelTask(self, request, context):
        rec = operator_actions.task_to_cancel(self.tasks, request.task_id, request.force)
        what = f"task {rec.task_id}" + (f" ({rec.name})" if rec.name else "")
        if rec.state in TERMINAL:
            return pb.CancelTaskReply(
                task_id=rec.task_id,
                state=rec.state,
                message=f"{what} already {rec.state}: nothing to cancel",
            )
        node_id = await operator_actions.ask_owner_to_cancel(
            self.nodes, rec, request.force, request.recursive
        )
        how = " (force: its worker is killed)" if request.force else ""
        record_action(
            self.events,
            context,
            self.token,
            "cancel_task",
            f"cancel of {what}, {rec.state}, sent to its owner{how}",
            task_id=rec.task_id,
            job_id=rec.job_id,
            node_id=node_id,
        )
        return pb.CancelTaskReply(
            task_id=rec.task_id,
            state=rec.state,
            requested=True,
            message=f"cancel of {what} ({rec.state}) sent to its owner{how}",
        )

    @rpc
    async def KillWorker(self, request, context):
        node, worker_id = await operator_actions.find_worker(self.nodes, request.worker_id)
        stub = await self.nodes.agent(node)
        reply = await stub.KillWorker(
            pb.KillWorkerRequest(worker_id=worker_id, force=request.force),
            timeout=operator_actions.AGENT_TIMEOUT_S,
        )
        if reply.killed:
            how = "killed (SIGKILL)" if request.force else "asked to exit"
            record_action(
                self.events,
                context,
                self.token,
                "kill_worker",
                f"worker {worker_id} {how}",
                worker_id=worker_id,
                node_id=node.node_id,
            )
        return pb.KillWorkerByIdReply(
            worker_id=worker_id, node_id=node.node_id, killed=reply.killed
        )

    @rpc
    async def ListActors(self, request, context):
        return pb.ListActorsReply(actors=self.actors.list(request.include_dead))

    @rpc
    async def ReportActorDeath(self, request, context):
        stale = self.nodes.stale(request.node_id, request.incarnation) if request.node_id else ""
        if stale:  # its node was declared dead: the actor's fate was decided then
            logger.info("stale actor death report ignored", actor_id=request.actor_id, why=stale)
        else:
            self.actors.report_death(request.actor_id, request.cause, request.worker_id)
        return pb.ReportActorDeathReply()

    # ---- placement groups --------------------------------------------------------------------

    @rpc
    async def CreatePlacementGroup(self, request, context):
        return pb.CreatePlacementGroupReply(pg=await self.pgs.create(request))

    @rpc
    async def RemovePlacementGroup(self, request, context):
        return pb.RemovePlacementGroupReply(removed=await self.pgs.remove(request.pg_id))

    @rpc
    async def GetPlacementGroup(self, request, context):
        if not 0 <= request.wait_s <= MAX_PG_WAIT_S:
            raise ValueError(f"wait_s must be between 0 and {MAX_PG_WAIT_S}, got {request.wait_s}")
        pg = self.pgs.get(request)
        if pg is not None and request.wait_s:
            pg = await self.pgs.settled(pg.pg_id, request.wait_s)
        return pb.GetPlacementGroupReply(pg=pg, found=True) if pg else pb.GetPlacementGroupReply()

    @rpc
    async def ListPlacementGroups(self, request, context):
        return pb.ListPlacementGroupsReply(pgs=self.pgs.list())

    # ---- key/value ---------------------------------------------------------------------------

    @rpc
    async def KVPut(self, request, context):
        added = self.store.kv_put(request.ns, request.key, request.value, request.overwrite)
        return pb.KVPutReply(added=added)

    @rpc
    async def KVGet(self, request, context):
        value = self.store.kv_get(request.ns, request.key)
        return pb.KVGetReply(value=value, found=True) if value is not None else pb.KVGetReply()

    @rpc
    async def KVDel(self, request, context):
        return pb.KVDelReply(deleted=self.store.kv_del(request.ns, request.key))

    # ---- cluster -----------------------------------------------------------------------------

    @rpc
    async def ClusterStatus(self, request, context):
        nodes = self.nodes.alive()
        return pb.ClusterStatusReply(
            cluster_name=self.config.cluster_name,
            nodes=nodes,
            total=pb.ResourceMap(amounts=sum_amounts(n.total.amounts for n in nodes)),
            available=pb.ResourceMap(amounts=sum_amounts(n.available.amounts for n in nodes)),
            num_actors_alive=sum(a.state == ALIVE for a in self.store.list_actors()),
            num_jobs_running=sum(j.state == "RUNNING" for j in self.store.list_jobs()),
            head_start_time=self.start_time,
        )

    @rpc
    async def ReportEvents(self, request, context):
        self.events.add_reported(request.events)
        return pb.ReportEventsReply()

    @rpc
    async def ReportTaskEvents(self, request, context):
        rows: list[Any] = []
        dropped = request.dropped
        for chunk in request.packed:
            got, bad = load_task_rows(chunk)
            rows += got
            dropped += bad
        self.tasks.apply_rows(rows, dropped)
        if request.sampled_out:
            self.tasks.count_sampled_out(
                (c.job_id, c.name, c.actor_task, c.count) for c in request.sampled_out
            )
        if request.owner_gone:
            self.tasks.count_owner_gone(
                (c.job_id, c.name, c.actor_task, c.error_type, c.count) for c in request.owner_gone
            )
        if request.live_counts:
            self.tasks.set_live_sampled_out(
                request.node_id,
                [
                    (c.job_id, c.name, c.actor_task, c.state, c.pending_reason, c.count)
                    for c in request.live_sampled_out
                ],
            )
        if request.events:
            self.tasks.apply(list(request.events))
        return pb.ReportTaskEventsReply()

    @rpc
    async def Shutdown(self, request, context):
        logger.info("shutdown requested", reason=request.reason)
        # Recorded first: the event is in the store before the head goes down.
        who = record_action(
            self.events,
            context,
            self.token,
            "stop_cluster",
            f"cluster {self.config.cluster_name} stopping"
            + (" with its nodes" if request.stop_nodes else ""),
        )
        stopped = 0
        try:
            if request.stop_nodes:
                stopped = await operator_actions.stop_nodes(
                    self.nodes, f"the cluster was stopped by {who.by or 'a client'}"
                )
        finally:
            self.stopping.set()  # asked to stop: whatever stopping the nodes met, even a cancel
        return pb.ShutdownReply(nodes_stopped=stopped)

    # ---- RPC fault hooks (freight.util.rpc_faults) -------------------------------------------

    @rpc
    async def SetRpcFault(self, request, context):
        fault = await fault_hooks.set_fault(self.nodes, request)
        where = f"node {fault.node_id[:12]}" if fault.node_id else "the head"
        what = f"fail with {fault.code}" if fault.action == "fail" else f"wait {fault.delay_s:g} s"
        record_action(
            self.events,
            context,
            self.token,
            "set_rpc_fault",
            f"RPC fault {fault.fault_id} on {where}: {fault.fraction:.0%} of {fault.method} "
            f"calls {what} for {request.duration_s:g} s",
            severity="WARNING",
            node_id=fault.node_id,
        )
        return pb.SetRpcFaultReply(fault=fault)

    @rpc
    async def ClearRpcFaults(self, request, context):
        reply = await fault_hooks.clear_faults(self.nodes, request)
        if reply.cleared:
            where = f"node {request.node_id}" if request.node_id else "the head"
            record_action(
                self.events,
                context,
                self.token,
                "clear_rpc_faults",
                f"RPC faults {', '.join(f.fault_id for f in reply.cleared)} cleared on {where}",
                node_id=reply.cleared[0].node_id,
            )
        return reply

    @rpc
    async def ListRpcFaults(self, request, context):
        return await fault_hooks.list_faults(self.nodes, request)


STOP_TIMEOUT_S = 15.0  # how long a stopping head may take to wind down before it just ends


def write_head_info(
    session_dir: str, address: str, cluster_name: str, metrics_address: str = ""
) -> str:
    """Write ``head.json`` atomically (temporary file, then rename); return its path."""
    path = os.path.join(session_dir, HEAD_INFO_FILE)
    info = {
        "address": address,
        **identity(),  # pid, and what tells this process from a later one with its pid
        "cluster_name": cluster_name,
        "session_dir": session_dir,
        "metrics_address": metrics_address,
    }
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(tmp, path)
    return path


def _remove_head_info(session_dir: str) -> None:
    """Remove ``head.json`` if it is still ours, so nobody dials a head that has gone."""
    path = os.path.join(session_dir, HEAD_INFO_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            if json.load(f).get("pid") == os.getpid():
                os.unlink(path)
    except (OSError, ValueError):
        pass


async def run_head(config: HeadConfig) -> None:
    """Serve ``HeadService`` until ``Shutdown`` or SIGTERM/SIGINT."""
    session_dir = os.path.abspath(config.session_dir)
    # It holds the token and, by default, the control store: this user's alone.
    make_private_dir(session_dir, "the session folder", tighten=True)
    token = read_token(session_dir)
    check_tls()  # a bad FREIGHT_TLS_* setting stops the start-up here, named
    store = ControlStore(config.storage or os.path.join(session_dir, CONTROL_DB_FILE))
    try:
        servicer = HeadServicer(config, store, token)  # reads all the store holds
    except BaseException:
        store.close()
        raise
    # The cluster's tracing configuration, for the drivers that join it (decision 0057); only
    # once the store has been read and found sound (a damaged one is left as it was).
    store.kv_put(TRACING_KV_NAMESPACE, TRACING_KV_KEY, published_tracing_config())
    if config.storage:
        # A head started again on this store (`freight start --head --storage`) takes this
        # token, so that the nodes and drivers of the cluster it carries on can still connect.
        write_token(storage_token_path(config.storage), token)
    if store.kv_get(*LEGACY_TOKEN_KV) is not None:
        store.forget_secret(*LEGACY_TOKEN_KV)  # older heads kept it in the store itself
    FAULTS.component = HEAD
    interceptors = [
        TokenAuthInterceptor(token),
        GrpcMetricsInterceptor(),
        RpcFaultInterceptor(FAULTS),  # after the metrics: a failed call is counted with its code
        *tracing_interceptors(),
    ]
    server = aio.server(interceptors=interceptors, options=CHANNEL_OPTIONS)
    pb_grpc.add_HeadServiceServicer_to_server(servicer, server)
    state = StateServiceServicer(
        store, servicer.nodes, servicer.tasks, servicer.events, servicer.pgs
    )
    state.watches = watches = WatchHub(store, servicer.tasks, servicer.events, servicer.pgs)
    pb_grpc.add_StateServiceServicer_to_server(state, server)
    # The standard health service: NOT_SERVING until the head serves, and again once it stops.
    services = [
        pb.DESCRIPTOR.services_by_name[name].full_name for name in ("HeadService", "StateService")
    ]
    serving = await add_health(server, services)
    health: asyncio.Task[None] | None = None
    lag: asyncio.Task[None] | None = None
    metrics_http = None
    try:
        port = add_port(server, f"{config.bind}:{config.port}")  # TLS when FREIGHT_USE_TLS
        if not port:
            raise OSError(f"could not bind the head to {config.bind}:{config.port}")
        host = "127.0.0.1" if config.bind in ("", "0.0.0.0", "::", "[::]") else config.bind
        address = f"{host}:{port}"
        servicer.jobs.head_address = address  # what submitted drivers join
        await server.start()
        await servicer.jobs.adopt()  # jobs a previous head left running
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, servicer.stopping.set)
        health = asyncio.create_task(servicer.nodes.health_loop())
        lag = asyncio.create_task(watch_loop_lag("head"))
        metrics_http = servicer.metrics.serve(config.bind, config.metrics_port, host)
        await serving.set_serving(True)
        write_head_info(session_dir, address, config.cluster_name, servicer.metrics.address)
        announce_ready(config.ready_fds, {"address": address})
        logger.info("head serving", address=address, cluster_name=config.cluster_name)
        await servicer.stopping.wait()
        logger.info("head stopping")
    finally:
        step = ["health"]

        async def wind_down() -> None:
            await serving.shutting_down()  # probes see NOT_SERVING while the head winds down
            watches.close()  # watch streams end now, not after the grace period below
            if health is not None:
                health.cancel()
                await asyncio.gather(health, return_exceptions=True)
            if lag is not None:
                lag.cancel()
            step[0] = "metrics endpoint"
            if metrics_http is not None:
                await asyncio.to_thread(metrics_http.stop)
            _remove_head_info(session_dir)
            step[0] = "jobs"
            await servicer.jobs.close()  # a head that stops stops its drivers (docs/jobs.md)
            step[0] = "gRPC server"
            await server.stop(grace=2.0)
            step[0] = "directories"
            await servicer.actors.close()
            await servicer.pgs.close()
            await servicer.nodes.close()

        # A head asked to stop is gone within the bound, whatever one step waits on: clients
        # take a head that still answers for one that has not stopped.
        try:
            await asyncio.wait_for(wind_down(), STOP_TIMEOUT_S)
        except TimeoutError:
            logger.error("the head's stop waited too long; ending it", step=step[0])
            await server.stop(grace=None)
        store.close()
        logger.info("head stopped")
