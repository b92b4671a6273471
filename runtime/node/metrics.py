"""The node agent's ``/metrics``: its processes' figures folded together, plus its own.

At scrape time, on the agent's event loop (:func:`freight.observe.http.loop_reader`),
:class:`NodeMetrics` sums the latest reports of the node's drivers and workers and the retired
totals of those that exited (:class:`~freight.observe.aggregate.NodeFigures`) with the agent
process's own recorder (driver disconnects, worker starts, crashes and restarts, gRPC latency,
event-loop lag, refusals), then adds the live figures it reads from the agent's seams:
``agent.stats()``, ``agent.leases.statistics()`` and ``agent.store.stats()``. Nothing here runs on
a task's path.

Job resource-seconds and cost come from the usage the node's task owners report (by job id and
resource) plus the lifetimes of the actors the agent started (:class:`ActorUsage`); job ids map
to their ``team`` and ``owner`` labels through the drivers' greetings, or, for jobs whose driver
runs elsewhere, one ``ListJobs`` call to the head per unknown job.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import grpc
from loguru import logger

import freight
from freight.config import HEARTBEAT_INTERVAL_S, settings
from freight.objects.store import ObjectEntry
from freight.observe.aggregate import Usage
from freight.observe.catalogue import BYTE_RESOURCES, OBJECT_STORE_STATES, Source
from freight.observe.exposition import FiguresCollector
from freight.observe.http import MetricsServer, loop_reader
from freight.observe.recorder import RECORDER, Snapshot
from freight.protocol.generated import freight_pb2 as pb

if TYPE_CHECKING:
    from .agent import NodeAgent

COSTED = ("CPU", "GPU")
WORKER_STATES = ("STARTING", "IDLE", "LEASED", "ACTOR", "BLOCKED")
STORE_STATES = OBJECT_STORE_STATES
LIST_JOBS_TIMEOUT_S = 2.0


class ActorUsage:
    """Resource-seconds of the actors a node runs: resources claimed from start to worker exit."""

    def __init__(self) -> None:
        self.live: dict[str, tuple[str, dict[str, float], float]] = {}
        self.ended: Usage = {}

    def started(self, actor_id: str, job_id: str, resources: dict[str, float]) -> None:
        held = {k: float(v) for k, v in resources.items() if k in COSTED and v > 0}
        self.live[actor_id] = (job_id, held, time.monotonic())

    def stopped(self, actor_id: str) -> None:
        got = self.live.pop(actor_id, None)
        if got is not None:
            job_id, held, since = got
            took = time.monotonic() - since
            for res, amount in held.items():
                key = (job_id, res)
                self.ended[key] = self.ended.get(key, 0.0) + amount * took

    def totals(self) -> Usage:
        """Cumulative resource-seconds by (job id, resource), live actors counted up to now."""
        out = dict(self.ended)
        now = time.monotonic()
        for job_id, held, since in self.live.values():
            for res, amount in held.items():
                key = (job_id, res)
                out[key] = out.get(key, 0.0) + amount * (now - since)
        return out


def overdue(last: float, now: float | None = None) -> float:
    """Seconds a heartbeat is late: the time since ``last`` (monotonic) beyond the interval."""
    now = time.monotonic() if now is None else now
    return max(0.0, now - last - HEARTBEAT_INTERVAL_S)


def store_state(e: ObjectEntry) -> str:
    """The one state of an object in the node's store (freight_object_store_bytes{state})."""
    if not e.in_memory:
        return "spilled"  # on disk only
    if not e.sealed:
        return "being_written"  # reserved by a write in progress
    # Every sealed copy in memory is held for its owner: the agent frees the objects of an
    # owner whose connection closes. A restored one keeps its spill file, so spilling it again
    # writes nothing.
    return "restored_in_memory" if e.spill_path else "pinned_in_memory"


def _add(part: dict[Any, Any], name: str, labels: tuple[str, ...], value: float) -> None:
    key = (name, labels)
    part[key] = part.get(key, 0.0) + value


class NodeMetrics:
    """Builds the node's snapshot for :class:`~freight.observe.exposition.FiguresCollector`."""

    def __init__(self, agent: NodeAgent, head: Any = None) -> None:
        self.agent = agent
        self.head = head  # HeadServiceStub (asyncio), for the labels of jobs driven elsewhere
        self.cluster = ""  # from RegisterNodeReply
        self.version = freight.__version__
        self._jobs: dict[str, dict[str, str]] = {}  # job id -> labels learnt from the head
        self._asked: set[str] = set()
        self._list_jobs_failed = False

    async def snapshot(self) -> Snapshot:
        """Every figure of this node, cumulative; runs on the agent's event loop."""
        agent = self.agent
        snap, usage = agent.figures.totals(RECORDER.snapshot())
        c, g = snap["c"], snap["g"]
        self._live_figures(c, g)
        for key, seconds in agent.actor_usage.totals().items():
            usage[key] = usage.get(key, 0.0) + seconds
        unknown = {job for job, _ in usage if job not in agent.job_labels and job not in self._jobs}
        if unknown - self._asked:
            await self._learn_jobs(unknown)
        self._job_figures(c, usage)
        g[("freight_build_info", (self.version,))] = 1.0
        return snap

    def _live_figures(self, c: dict[Any, Any], g: dict[Any, Any]) -> None:
        agent = self.agent
        stats = agent.leases.statistics()
        states = dict.fromkeys(WORKER_STATES, 0)
        for w in agent.leases.workers.values():
            state = "BLOCKED" if w.blocked else w.state
            states[state] = states.get(state, 0) + 1
        for state, n in states.items():
            g[("freight_workers", (state,))] = float(n)
        g[("freight_workers_starting_max", ())] = float(agent.leases.starting_peak)
        g[("freight_node_heartbeat_overdue_seconds", ())] = overdue(agent.heartbeat_accepted_at)
        for name, part in (
            ("freight_resources_capacity", "total"),
            ("freight_resources_available", "available"),
        ):
            amounts = stats[part]
            assert isinstance(amounts, dict)
            for res, amount in amounts.items():
                # One unit per metric: bytes and counts never share a series name.
                unit = "_bytes" if res in BYTE_RESOURCES else ""
                g[(name + unit, (str(res),))] = float(amount)
        store = agent.store.stats()
        # One state per object, so the states partition the store's bytes and sum() is the
        # whole store; in memory is every state but spilled (compare it with the capacity).
        by_state = {state: [0, 0] for state in STORE_STATES}
        for e in agent.store.list_objects():
            by_state[store_state(e)][0] += e.size
            by_state[store_state(e)][1] += 1
        for state, (nbytes, count) in by_state.items():
            g[("freight_object_store_bytes", (state,))] = float(nbytes)
            g[("freight_object_store_objects", (state,))] = float(count)
        in_memory = [v for state, v in by_state.items() if state != "spilled"]
        g[("freight_object_store_in_memory_bytes", ())] = float(sum(v[0] for v in in_memory))
        g[("freight_object_store_in_memory_objects", ())] = float(sum(v[1] for v in in_memory))
        g[("freight_object_store_capacity_bytes", ())] = float(store.capacity)
        # Transfers between nodes count in this process (freight.node.transfer); both
        # directions are present from the start, for dashboards.
        for direction in ("in", "out"):
            _add(c, "freight_object_transfer_bytes_total", (direction,), 0.0)
            _add(c, "freight_object_transfers_total", (direction,), 0.0)
        _add(c, "freight_auth_refused_total", ("data",), float(agent.refused))
        _add(c, "freight_auth_refused_total", ("grpc",), 0.0)
        _add(c, "freight_protocol_errors_total", (), float(agent.malformed))
        for clean in ("true", "false"):
            _add(c, "freight_driver_disconnects_total", (clean,), 0.0)

    async def _learn_jobs(self, job_ids: set[str]) -> None:
        """Ask the head once for the labels of jobs whose drivers are on other nodes."""
        self._asked |= job_ids
        if self.head is None:
            return
        try:
            reply = await self.head.ListJobs(pb.ListJobsRequest(), timeout=LIST_JOBS_TIMEOUT_S)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            if not self._list_jobs_failed:
                self._list_jobs_failed = True
                logger.warning("metrics: could not read job labels from the head: {}", exc)
            return
        for job in reply.jobs:
            self._jobs[job.job_id] = dict(job.labels)

    def _labels(self, job_id: str) -> tuple[str, str]:
        labels = self.agent.job_labels.get(job_id) or self._jobs.get(job_id) or {}
        return labels.get("team", ""), labels.get("owner", "")

    def _job_figures(self, c: dict[Any, Any], usage: Usage) -> None:
        price = {"CPU": settings.price_cpu_hour / 3600.0, "GPU": settings.price_gpu_hour / 3600.0}
        for (job_id, res), seconds in usage.items():
            team, owner = self._labels(job_id)
            _add(c, "freight_job_resource_seconds_total", (res, team, owner), seconds)
            _add(c, "freight_job_cost_total", (team, owner), seconds * price.get(res, 0.0))


def serve_node_metrics(
    agent: NodeAgent, head: Any, bind: str, port: int
) -> tuple[NodeMetrics, MetricsServer]:
    """Start the agent's ``/metrics`` endpoint (call on the agent's event loop)."""
    figures = NodeMetrics(agent, head)
    collector = FiguresCollector(
        Source.NODE,
        loop_reader(asyncio.get_running_loop(), figures.snapshot),
        lambda: figures.cluster,
        top_n=max(1, settings.metrics_top_n),
        notes={"freight_job_cost_total": f"Currency: {settings.price_currency}."},
    )
    return figures, MetricsServer([collector], bind=bind, port=port).start()
