"""The node agent process: gRPC ``NodeAgentService``, head registration and heartbeats."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
import uuid
from typing import Any

import grpc
from loguru import logger

from freight.config import HEARTBEAT_INTERVAL_S, SettingsError, check_settings, settings
from freight.core.logs import Selection, open_reader
from freight.core.placement import NodeState
from freight.objects.store import default_capacity, total_memory
from freight.observe import tracing
from freight.observe.recorder import RECORDER
from freight.protocol import messages as m
from freight.protocol.frames import ProtocolError
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util.grpc_auth import CHANNEL_OPTIONS, TokenAuthInterceptor, aio_channel, read_token
from freight.util.grpc_health import HealthStatus, add_health
from freight.util.grpc_metrics import GrpcMetricsInterceptor, watch_loop_lag
from freight.util.grpc_tls import add_port, check_tls
from freight.util.grpc_tracing import setup as setup_tracing
from freight.util.process import (
    announce_ready,
    read_ready,
    set_parent_death_signal,
    setup_process_logging,
)
from freight.util.rpc_faults import FAULTS, NODE, RpcFaultInterceptor, spec_of

from .agent import NodeAgent, check_resources
from .events import event_loop
from .memory_monitor import MemoryMonitor, monitor_loop
from .metrics import serve_node_metrics
from .node_views import LogService, TooManyFollowers, node_memory
from .transfer import serve_chunks
from .worker_info import WorkerInfoSource

HEARTBEAT_S = HEARTBEAT_INTERVAL_S


class AgentServicer(pb_grpc.NodeAgentServiceServicer):
    def __init__(self, agent: NodeAgent, node_info: pb.NodeInfo) -> None:
        self.agent = agent
        self.node_info = node_info
        self.worker_info = WorkerInfoSource()  # rows of ListWorkers
        self.logs = LogService(node_info.node_id, agent.session_dir)

    async def StartActor(self, request: pb.StartActorRequest, context: Any) -> pb.StartActorReply:
        actor = request.actor
        self.agent.work.actor(actor.actor_id, actor.class_name, actor.max_restarts != 0)
        wid, addr, pid, creation_error, error = await self.agent.start_actor(
            actor.actor_id, request.creation_spec, actor.job_id, dict(actor.resources.amounts)
        )
        return pb.StartActorReply(
            worker_id=wid, worker_address=addr, pid=pid, creation_error=creation_error, error=error
        )

    async def PullObject(self, request: pb.PullObjectRequest, context: Any) -> Any:
        try:
            async for chunk in serve_chunks(self.agent.store, request.object_id, request.offset):
                yield chunk
        except (FileNotFoundError, OSError) as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

    async def ReserveBundles(
        self, request: pb.ReserveBundlesRequest, context: Any
    ) -> pb.ReserveBundlesReply:
        if request.commit and not request.bundles:
            error = self.agent.reserve_bundles(request.pg_id, [], commit=True)
            return pb.ReserveBundlesReply(reserved=not error, error=error)
        if len(request.indexes) != len(request.bundles) or not request.pg_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "ReserveBundles: a pg_id, one index per bundle"
            )
        bundles = [
            (int(i), dict(b.amounts)) for i, b in zip(request.indexes, request.bundles, strict=True)
        ]
        for _, amounts in bundles:
            try:
                check_resources(amounts)
            except ProtocolError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        error = self.agent.reserve_bundles(request.pg_id, bundles)
        if not error and request.commit:  # the group's only node: both phases at once
            error = self.agent.reserve_bundles(request.pg_id, [], commit=True)
        return pb.ReserveBundlesReply(reserved=not error, error=error)

    async def ReturnBundles(
        self, request: pb.ReturnBundlesRequest, context: Any
    ) -> pb.ReturnBundlesReply:
        return pb.ReturnBundlesReply(workers_killed=self.agent.return_bundles(request.pg_id))

    async def FreeObjects(self, request: Any, context: Any) -> pb.FreeObjectsReply:
        return pb.FreeObjectsReply(freed_bytes=self.agent.store.delete(list(request.object_ids)))

    async def KillWorker(self, request: pb.KillWorkerRequest, context: Any) -> pb.KillWorkerReply:
        killed = self.agent.kill_worker(request.worker_id, request.actor_id, request.force)
        return pb.KillWorkerReply(killed=killed)

    async def CancelOwnedTask(
        self, request: pb.CancelOwnedTaskRequest, context: Any
    ) -> pb.CancelOwnedTaskReply:
        try:
            task_id = bytes.fromhex(request.task_id)
        except ValueError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"task id {request.task_id!r} is not hex"
            )
        delivered = self.agent.cancel_owned_task(
            request.owner_address, task_id, request.force, request.recursive
        )
        return pb.CancelOwnedTaskReply(delivered=delivered)

    async def GetNodeStats(self, request: Any, context: Any) -> pb.GetNodeStatsReply:
        node = pb.NodeInfo()
        node.CopyFrom(self.node_info)
        fill_dynamic(node, self.agent)
        return pb.GetNodeStatsReply(node=node)

    async def ListObjects(self, request: Any, context: Any) -> pb.ListObjectsReply:
        return pb.ListObjectsReply(
            objects=[
                pb.ObjectInfo(
                    object_id=e.object_id.hex(),
                    size=e.size,
                    owner_address=e.owner,
                    sealed=e.sealed,
                    create_time=e.create_time,
                    spilled=e.spilled,
                )
                for e in self.agent.store.list_objects()
            ]
        )

    async def ListWorkers(self, request: Any, context: Any) -> pb.ListWorkersReply:
        return pb.ListWorkersReply(workers=self.worker_info.rows(self.agent))

    async def CheckHealth(
        self, request: pb.CheckHealthRequest, context: Any
    ) -> pb.CheckHealthReply:
        # Answered on the agent's event loop, so a blocked or stopped loop fails the check; the
        # node id lets the head notice a different agent listening on this address.
        return pb.CheckHealthReply(
            node_id=self.node_info.node_id, incarnation=self.agent.incarnation
        )

    async def SetDraining(
        self, request: pb.SetDrainingRequest, context: Any
    ) -> pb.SetDrainingReply:
        self.agent.set_draining(request.draining, request.seq)
        tasks, actors, waiting = self.agent.drain_figures()
        return pb.SetDrainingReply(running_tasks=tasks, running_actors=actors, waiting=waiting)

    async def ReadLogs(self, request: pb.ReadLogsRequest, context: Any) -> Any:
        try:
            selection = Selection.checked(dict(request.ids), request.component, request.since)
            if request.tail < 0:
                raise ValueError(f"tail must be 0 (everything) or more, not {request.tail}")
            reader = open_reader(self.agent.session_dir, selection, request.process_output)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            async for reply in self.logs.read(reader, request.tail, request.follow):
                yield reply
        except TooManyFollowers as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))

    async def Memory(self, request: Any, context: Any) -> pb.NodeMemoryReply:
        return await node_memory(
            self.node_info.node_id,
            self.agent.session_dir,
            self.agent.token,
            context.time_remaining(),
        )

    async def Shutdown(self, request: Any, context: Any) -> pb.ShutdownReply:
        logger.info("shutdown requested: {}", request.reason)
        self.agent.stopping.set()
        return pb.ShutdownReply()

    # RPC fault hooks (freight.util.rpc_faults): the head passes an operator's switches here.

    async def SetRpcFault(self, request: pb.SetRpcFaultRequest, context: Any) -> Any:
        try:
            fault = FAULTS.set(spec_of(request.fault, request.duration_s))
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return pb.SetRpcFaultReply(fault=fault.record(self.node_info.node_id))

    async def ClearRpcFaults(self, request: pb.ClearRpcFaultsRequest, context: Any) -> Any:
        cleared, ended = FAULTS.clear(request.fault_ids)
        node_id = self.node_info.node_id
        return pb.ClearRpcFaultsReply(
            cleared=[f.record(node_id) for f in cleared], ended=[f.record(node_id) for f in ended]
        )

    async def ListRpcFaults(self, request: Any, context: Any) -> pb.ListRpcFaultsReply:
        return pb.ListRpcFaultsReply(
            faults=[f.record(self.node_info.node_id) for f in FAULTS.in_force()]
        )


def fill_dynamic(node: pb.NodeInfo, agent: NodeAgent) -> None:
    st = agent.stats()
    node.available.amounts.clear()
    node.available.amounts.update(agent.leases.available)
    node.total.amounts.clear()
    node.total.amounts.update(agent.leases.total)
    node.stats.CopyFrom(
        pb.NodeStats(
            object_store_used=st["object_store_used"],
            object_store_capacity=st["object_store_capacity"],
            num_objects=st["num_objects"],
            num_workers=st["num_workers"],
            num_idle_workers=st["num_idle_workers"],
            num_actor_workers=st["num_actor_workers"],
            pending_by_reason=st["pending_by_reason"],
            infeasible_shapes=st["infeasible_shapes"],
            memory_used=st["memory_used"],
            memory_total=st["memory_total"],
        )
    )


async def fence_and_rejoin(
    agent: NodeAgent, node: pb.NodeInfo, head: Any, why: str, health: HealthStatus
) -> None:
    """The head declared this incarnation dead: stop every worker, then register as a new
    incarnation with a clean slate (docs/decisions/0034-a-dead-node-fences-itself.md).
    The node reports NOT_SERVING meanwhile."""
    logger.warning("{}: stopping every worker before the node rejoins", why)
    await health.set_serving(False)
    old = node.incarnation
    pids = await agent.fence()
    node.incarnation = agent.incarnation
    fill_dynamic(node, agent)
    agent.events.record(
        "NODE_FENCED",
        f"node fenced: {why}; it stopped its {len(pids)} worker(s)"
        f"{' (pids ' + ', '.join(map(str, pids)) + ')' if pids else ''} and rejoins as "
        f"incarnation {node.incarnation[:12]} (was {old[:12]})",
    )
    await head.RegisterNode(pb.RegisterNodeRequest(node=node), timeout=5)
    await health.set_serving(True)


async def heartbeat_loop(
    agent: NodeAgent, node: pb.NodeInfo, head: Any, health: HealthStatus
) -> None:
    while not agent.stopping.is_set():
        try:
            fill_dynamic(node, agent)
            incarnation = node.incarnation
            reply = await head.Heartbeat(
                pb.HeartbeatRequest(
                    node_id=node.node_id,
                    available=node.available,
                    stats=node.stats,
                    total=node.total,
                    incarnation=incarnation,
                ),
                timeout=5,
            )
            agent.heartbeat_accepted_at = time.monotonic()
            if reply.fence and incarnation == node.incarnation:
                await fence_and_rejoin(agent, node, head, reply.fence_reason, health)
            elif reply.reregister:
                await head.RegisterNode(pb.RegisterNodeRequest(node=node), timeout=5)
                await health.set_serving(True)  # if a fence's registration failed midway
            elif reply.cluster:
                agent.on_cluster_view(
                    [
                        NodeState(
                            v.node_id,
                            dict(v.total.amounts),
                            dict(v.available.amounts),
                            dict(v.labels),
                            v.data_address,
                            v.store_dir,
                            v.agent_address,
                            v.draining,
                            v.drain_seq,
                        )
                        for v in reply.cluster
                    ]
                )
        except grpc.aio.AioRpcError as exc:
            logger.warning("heartbeat to the head failed: {}", exc.details())
        try:
            await asyncio.wait_for(agent.stopping.wait(), timeout=HEARTBEAT_S)
        except TimeoutError:
            pass


WORKER_FLUSH_S = 1.5


async def let_workers_flush(agent: NodeAgent) -> None:
    """Ask the workers to exit by themselves, so each sends its queued trace spans first.

    Stopping kills workers outright, which would lose the spans of a short program's last
    tasks. Each worker flushes with its own deadline (1 s); this waits at most WORKER_FLUSH_S.
    """
    asked = list(agent.worker_conns.items())
    for _wid, conn in asked:
        conn.send(m.ExitWorker("the node is stopping"))
    procs = [p for wid, _ in asked if (p := agent.pool.procs.get(wid)) is not None]
    deadline = time.monotonic() + WORKER_FLUSH_S
    while time.monotonic() < deadline and any(p.popen.poll() is None for p in procs):
        await asyncio.sleep(0.02)  # polling child processes' exit, bounded by the deadline


async def task_event_loop(agent: NodeAgent, head: Any) -> None:
    """Forward the task rows of this node's owners to the head's state service."""
    interval = settings.telemetry_interval_s
    while not agent.stopping.is_set():
        try:
            await asyncio.wait_for(agent.stopping.wait(), timeout=interval)
        except TimeoutError:
            pass
        chunks, dropped, counted = agent.take_task_events()
        live = agent.take_live_sampled_out()
        gone = agent.take_owner_gone()
        if not chunks and not dropped and not counted and live is None and not gone:
            continue
        request = pb.ReportTaskEventsRequest(
            node_id=agent.node_id,
            packed=chunks,
            dropped=dropped,
            sampled_out=[
                pb.TaskCount(job_id=job, name=name, actor_task=actor, count=n)
                for (job, name, actor), n in counted.items()
            ],
            live_counts=live is not None,
            live_sampled_out=[
                pb.TaskCount(
                    job_id=job,
                    name=name,
                    actor_task=actor,
                    state=state,
                    pending_reason=why,
                    count=n,
                )
                for (job, name, actor, state, why), n in (live or {}).items()
            ],
            owner_gone=[
                pb.TaskCount(job_id=job, name=name, actor_task=actor, error_type=why, count=n)
                for (job, name, actor, why), n in gone.items()
            ],
        )
        try:
            await head.ReportTaskEvents(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            lost = len(chunks) + sum(counted.values()) + sum(gone.values())
            RECORDER.inc("freight_telemetry_dropped_total", ("task_events",), lost)
            logger.warning("could not send task events to the head: {}", exc.details())


async def amain(args: argparse.Namespace) -> None:
    token = read_token(args.session_dir)
    check_tls()  # a bad FREIGHT_TLS_* setting stops the start-up here, named
    resources = json.loads(args.resources or "{}")
    resources["CPU"] = float(args.num_cpus if args.num_cpus is not None else os.cpu_count() or 1)
    if args.num_gpus:
        resources["GPU"] = float(args.num_gpus)
    resources.setdefault("memory", float(_memory_bytes()))
    capacity = args.object_store_memory or default_capacity(settings.shm_dir)
    resources["object_store_memory"] = float(capacity)
    # A bad threshold stops the start-up here, named (0: the memory monitor is off).
    refresh_ms = settings.memory_monitor_refresh_ms
    memory = MemoryMonitor(settings.memory_usage_threshold) if refresh_ms > 0 else None
    prestart = settings.prestart_workers
    if prestart < 0:
        prestart = int(resources["CPU"])
    labels = json.loads(args.labels or "{}")
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ValueError(f"--labels must be a JSON object of strings, got {args.labels!r}")
    agent = NodeAgent(
        args.session_dir,
        args.node_id,
        token,
        resources,
        capacity,
        settings.shm_dir,
        prestart,
        validate=settings.validate_state,
        node_ip=node_ip(args),
        labels=labels,
    )
    await agent.start()
    # From here a SIGTERM stops the agent cleanly, also while it is still registering.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stopping.set)
    interceptor = TokenAuthInterceptor(token)
    FAULTS.component = NODE
    server = grpc.aio.server(
        interceptors=[interceptor, GrpcMetricsInterceptor(), RpcFaultInterceptor(FAULTS)],
        options=CHANNEL_OPTIONS,
    )
    node = pb.NodeInfo(
        node_id=args.node_id,
        data_socket=agent.data_socket,
        session_dir=args.session_dir,
        state="ALIVE",
        start_time=time.time(),
        is_head_node=args.head_node,
        hostname=socket.gethostname(),
        data_address=agent.data_address,
        node_ip=agent.node_ip,
        store_dir=agent.store.directory,
        labels=labels,
        incarnation=agent.incarnation,
        pid=os.getpid(),
    )
    node.total.amounts.update(resources)
    servicer = AgentServicer(agent, node)
    pb_grpc.add_NodeAgentServiceServicer_to_server(servicer, server)
    # NOT_SERVING until the node has registered with the head.
    health = await add_health(
        server, [pb.DESCRIPTOR.services_by_name["NodeAgentService"].full_name]
    )
    port = add_port(server, f"{args.bind}:0")  # TLS when FREIGHT_USE_TLS
    await server.start()
    node.agent_address = f"{args.bind}:{port}"

    # Workers start and the servers listen before the head's address is needed; a start-up
    # that fails from here stops them first, so none outlives it.
    try:
        head_address = await _head_address(args)
    except BaseException:
        await agent.stop()
        raise
    channel = aio_channel(head_address, token)
    head = pb_grpc.HeadServiceStub(channel)

    async def report_actor_death(actor_id: str, cause: str, worker_id: str) -> None:
        request = pb.ReportActorDeathRequest(
            actor_id=actor_id,
            cause=cause,
            worker_id=worker_id,
            node_id=node.node_id,
            incarnation=node.incarnation,
        )
        try:
            await head.ReportActorDeath(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            logger.warning("could not report actor death: {}", exc.details())

    agent.on_actor_death = report_actor_death

    async def report_driver_lost(job_id: str) -> None:
        # The job ends FAILED: its non-detached actors and placement groups go with it.
        request = pb.FinishJobRequest(job_id=job_id, state="FAILED")
        try:
            await head.FinishJob(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            logger.warning("could not end the job of a lost driver: {}", exc.details())

    agent.on_driver_lost = report_driver_lost
    metrics, metrics_http = serve_node_metrics(agent, head, args.bind, args.metrics_port)
    node.metrics_address = metrics_http.address(args.bind)
    fill_dynamic(node, agent)
    # The head answers as soon as it runs, but on a loaded machine its first connection can
    # take longer than one attempt: keep trying (gRPC's wait_for_ready) until the start-up
    # deadline, as the launcher waits for this agent that long.
    try:
        registered = await head.RegisterNode(
            pb.RegisterNodeRequest(node=node),
            timeout=settings.start_timeout_s,
            wait_for_ready=True,
        )
    except BaseException:
        await agent.stop()
        raise
    await health.set_serving(True)
    metrics.cluster = registered.cluster_name
    agent.write_node_file(node.agent_address, head_address)
    if args.ready_fd >= 0:
        announce_ready(
            [args.ready_fd],
            {"node_id": args.node_id, "head_address": head_address, "address": node.agent_address},
        )
    logger.info("node agent {} up at {} ({})", args.node_id, node.agent_address, agent.data_socket)

    tasks = [
        asyncio.ensure_future(heartbeat_loop(agent, node, head, health)),
        asyncio.ensure_future(agent.reap_loop()),
        asyncio.ensure_future(watch_loop_lag("agent")),
        asyncio.ensure_future(task_event_loop(agent, head)),
        asyncio.ensure_future(event_loop(agent.events, head, agent.stopping)),
    ]
    if memory is not None:
        tasks.append(asyncio.ensure_future(monitor_loop(memory, agent, refresh_ms / 1000)))
    await agent.stopping.wait()
    await health.shutting_down()
    try:
        await head.UnregisterNode(
            pb.UnregisterNodeRequest(node_id=args.node_id, reason="agent stopped"), timeout=2
        )
    except grpc.aio.AioRpcError:
        pass
    for t in tasks:
        t.cancel()
    if tracing.ENABLED:
        await let_workers_flush(agent)
    await agent.stop()
    agent.remove_node_file()
    await agent.puller.close()
    await asyncio.to_thread(metrics_http.stop)
    await server.stop(grace=0.5)
    await channel.close()
    logger.info("node agent {} stopped", args.node_id)


async def _head_address(args: argparse.Namespace) -> str:
    """``--head``, else what the head writes to ``--head-ready-fd`` once it serves, else
    ``head.json`` in the session directory."""
    if args.head:
        return str(args.head)
    if args.head_ready_fd >= 0:
        try:
            info = await asyncio.to_thread(read_ready, args.head_ready_fd, settings.start_timeout_s)
        finally:
            os.close(args.head_ready_fd)
        if info is None or not info.get("address"):
            raise RuntimeError("the head exited before it served")
        return str(info["address"])
    with open(os.path.join(args.session_dir, "head.json")) as f:
        return str(json.load(f)["address"])


def node_ip(args: argparse.Namespace) -> str:
    """The address this node's processes listen on for other nodes: ``--node-ip``, else the
    ``--bind`` address when it is a single one, else loopback."""
    if args.node_ip:
        return str(args.node_ip)
    return "127.0.0.1" if args.bind in ("", "0.0.0.0", "::", "[::]") else str(args.bind)


def _memory_bytes() -> int:
    return int(total_memory() * 0.7)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m freight.node", description="freight node agent")
    p.add_argument("--session-dir", required=True)
    p.add_argument("--node-id", default=uuid.uuid4().hex)
    p.add_argument("--head", default="", help="head address host:port (default: head.json)")
    p.add_argument("--num-cpus", type=float, default=None)
    p.add_argument("--num-gpus", type=float, default=0)
    p.add_argument("--resources", default="{}")
    p.add_argument("--labels", default="{}", help='node labels as JSON, e.g. {"zone": "a"}')
    p.add_argument(
        "--node-ip",
        default="",
        help="address other nodes reach this node's processes at (default: --bind, else loopback)",
    )
    p.add_argument("--object-store-memory", type=int, default=0)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--metrics-port", type=int, default=0, help="/metrics port (0: any free)")
    p.add_argument("--head-node", action="store_true")
    p.add_argument("--die-with-parent", action="store_true")
    p.add_argument("--ready-fd", type=int, default=-1, help="pipe to announce readiness on")
    p.add_argument("--head-ready-fd", type=int, default=-1, help="pipe the head's address comes on")
    args = p.parse_args(argv)
    try:
        check_settings()  # never serve with a FREIGHT_* value that is not valid
    except SettingsError as e:
        print(f"freight node agent: {e}", file=sys.stderr)
        sys.exit(2)
    if args.die_with_parent:
        set_parent_death_signal()
    setup_process_logging(
        args.session_dir, f"agent-{args.node_id[:12]}", "agent", {"node_id": args.node_id}
    )
    setup_tracing("agent", args.session_dir, args.node_id, background=True)
    try:
        asyncio.run(amain(args))
    except Exception as exc:
        logger.exception("node agent failed")
        print(f"freight node agent failed: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
