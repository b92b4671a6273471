"""The state API: gRPC ``StateService`` (List / Get / Summary) over everything the cluster holds.

Sources: the control store (nodes, jobs, actors), the :class:`~freight.head.task_store.TaskStore`
(tasks), the placement group directory (placement groups), the event store (events) and, asked
concurrently with a deadline, every alive node agent (objects, workers). Filters are applied before truncation; a page ends with a cursor that encodes
the last row's sort key, so paging while rows keep arriving neither repeats nor skips a row.
Every reply says how many rows the head holds (``total``), how many pass the filters
(``matched``), how many come after this page (``remaining``), how many records retention dropped,
and whether a source did not answer (``partial``, with a warning naming it). Rows are JSON text.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from grpc import aio

from freight.config import settings
from freight.core.events import KINDS as EVENT_KINDS
from freight.core.events import SEVERITIES, SOURCES
from freight.core.filters import BOOL, NUMBER, TEXT, TIME, Field, compile_filters
from freight.core.nodes import NODE_STATES, node_state
from freight.core.order import (
    comes_after,
    compile_sorting,
    cursor_key,
    order_name,
    sort_items,
)
from freight.core.placement import PG_STRATEGIES
from freight.head.rpc import rpc
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc

from .actors import ACTOR_STATES
from .control_store import ControlStore
from .nodes import NodeDirectory
from .placement_groups import CREATED, PENDING, REMOVED, PlacementGroupDirectory
from .task_store import (
    COUNTED_FIELDS,
    TASK_FIELDS,
    TaskStore,
    compile_task_filters,
    compile_task_sorting,
)

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000  # rows per reply; clients page for more
_R = TypeVar("_R")
_T = TypeVar("_T")
_LIVE_JOB_STATES = ("PENDING", "RUNNING")


def job_end_grace_s() -> float:
    """How long after its job ended a task record may stay open: time for the owner's last
    report to arrive (owners and agents each report every FREIGHT_TELEMETRY_INTERVAL_S)."""
    return max(3.0, 3 * settings.telemetry_interval_s)


class Kind(NamedTuple):
    fields: dict[str, Field]
    id_key: str


def _ids(*keys: str) -> dict[str, Field]:
    return {k: Field(TEXT) for k in keys}


KINDS: dict[str, Kind] = {
    "nodes": Kind(
        {
            **_ids("node_id", "hostname", "agent_address", "metrics_address"),
            "state": Field(TEXT, NODE_STATES),
            **_ids("node_ip", "data_address"),
            "pid": Field(NUMBER),
            "is_head_node": Field(BOOL),
            "draining": Field(BOOL),
            "drain_reason": Field(TEXT),
            "start_time": Field(TIME),
            "last_heartbeat": Field(TIME),
            "num_workers": Field(NUMBER),
            "num_objects": Field(NUMBER),
            "object_store_used": Field(NUMBER),
            "object_store_capacity": Field(NUMBER),
            "memory_used": Field(NUMBER),
            "memory_total": Field(NUMBER),
        },
        "node_id",
    ),
    "jobs": Kind(
        {
            **_ids("job_id", "namespace", "entrypoint", "driver_address"),
            "state": Field(
                TEXT, ("PENDING", "RUNNING", "SUCCEEDED", "FINISHED", "FAILED", "STOPPED")
            ),
            "kind": Field(TEXT, ("DRIVER", "SUBMISSION")),
            "driver_pid": Field(NUMBER),
            "supervisor_pid": Field(NUMBER),
            "start_time": Field(TIME),
            "end_time": Field(TIME),
        },
        "job_id",
    ),
    "tasks": Kind(TASK_FIELDS, "task_id"),
    "actors": Kind(
        {
            **_ids("actor_id", "class_name", "name", "namespace", "job_id", "node_id"),
            **_ids("worker_id", "death_cause", "pending_reason"),
            "state": Field(TEXT, ACTOR_STATES),
            "pid": Field(NUMBER),
            "detached": Field(BOOL),
            "start_time": Field(TIME),
            "end_time": Field(TIME),
            "num_restarts": Field(NUMBER),
        },
        "actor_id",
    ),
    "objects": Kind(
        {
            **_ids("object_id", "node_id", "owner_address"),
            "size": Field(NUMBER),
            "sealed": Field(BOOL),
            "spilled": Field(BOOL),
            "create_time": Field(TIME),
        },
        "object_id",
    ),
    "workers": Kind(
        {
            **_ids("worker_id", "node_id", "address", "actor_id", "lease_holder"),
            "state": Field(TEXT, ("STARTING", "IDLE", "LEASED", "ACTOR", "BLOCKED", "STOPPING")),
            "pid": Field(NUMBER),
            "start_time": Field(TIME),
            "rss_bytes": Field(NUMBER),
            "cpu_percent": Field(NUMBER),
        },
        "worker_id",
    ),
    "placement_groups": Kind(
        {
            **_ids("placement_group_id", "name", "namespace", "job_id", "pending_reason"),
            "state": Field(TEXT, (PENDING, CREATED, REMOVED)),
            "strategy": Field(TEXT, PG_STRATEGIES),
            "detached": Field(BOOL),
            "create_time": Field(TIME),
            "num_bundles": Field(NUMBER),
        },
        "placement_group_id",
    ),
    "events": Kind(
        {
            **_ids("event_id", "message"),
            **_ids("node_id", "job_id", "actor_id", "worker_id", "task_id"),
            "source": Field(TEXT, SOURCES),
            "kind": Field(TEXT, tuple(sorted(EVENT_KINDS))),
            "severity": Field(TEXT, SEVERITIES),
            "time": Field(TIME),
            # What some kinds add: a crashed worker's exit; an action's who, what and why.
            **_ids("pid", "exit_code", "signal", "action", "role", "by", "reason"),
        },
        "event_id",
    ),
}
SUMMARY_KINDS = ("tasks", "actors", "objects")


def kind_of(name: str) -> Kind:
    """The kind called ``name`` (singular accepted); ValueError listing the valid ones."""
    kind = KINDS.get(name) or KINDS.get(name + "s")
    if kind is None:
        raise ValueError(f"unknown kind {name!r}; valid kinds: {', '.join(KINDS)}")
    return kind


def _plural(name: str) -> str:
    return name if name in KINDS else name + "s"


def encode_cursor(kind: str, key: Any) -> str:
    raw = json.dumps([kind, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> Any:
    """The sort key a cursor holds; ValueError when it is not a cursor of this kind."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got_kind, key = json.loads(raw)
    except (ValueError, TypeError):
        raise ValueError(
            f"bad cursor {cursor[:40]!r}: pass the next_cursor of the previous reply unchanged"
        ) from None
    if got_kind != kind:
        raise ValueError(
            f"this cursor pages through {got_kind}, not {kind}: pass it back with the kind "
            "and order of the listing it came from"
        )
    return key


def _filters(request: Any) -> list[tuple[str, str, str]]:
    return [(f.key, f.op, f.value) for f in request.filters]


def one_by_prefix(
    items: list[_T], key: Callable[[_T], str], wanted: str, name: str, id_key: str
) -> _T | None:
    """The item whose id (``key``) is ``wanted``, else the one whose id starts with it; None
    when none does, ValueError naming the candidates when several do (``name``: what the items
    are, plural; ``id_key``: what their id is called)."""
    exact = [i for i in items if key(i) == wanted]
    found = exact or [i for i in items if key(i).startswith(wanted)]
    if len(found) > 1:
        shown = ", ".join(key(i) for i in found[:5])
        raise ValueError(
            f"{id_key} prefix {wanted!r} matches {len(found)} {name} ({shown}); "
            "give more characters"
        )
    return found[0] if found else None


def _row_getter(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row.get(key)


def _row_of(get: Callable[[Any], Any]) -> Callable[[tuple[Any, Any]], Any]:
    """``get`` of the row of a (default key, row) pair."""
    return lambda kr: get(kr[1])


def _after_default(after: Any, newest_first: bool) -> Callable[[tuple[Any, Any]], bool]:
    """Whether a (default key, row) pair comes after the cursor key ``after``."""
    if newest_first:
        return lambda kr: bool(kr[0] < after)
    return lambda kr: bool(kr[0] > after)


def _after_sorted(
    after: Any, descending: bool, newest_first: bool
) -> Callable[[tuple[Any, Any]], bool]:
    """Whether a ((value, default key), row) pair comes after the cursor key ``after``."""
    return lambda kr: comes_after(*kr[0], after, descending, newest_first)


def _sorted_cursor(order: str, cursor: str, raw: Any) -> Any:
    try:
        return cursor_key(raw)
    except ValueError:
        raise ValueError(
            f"bad cursor {cursor[:40]!r}: pass the next_cursor of the previous reply of the "
            f"listing of {order} unchanged"
        ) from None


def node_row(n: pb.NodeInfo) -> dict[str, Any]:
    s = n.stats
    return {
        "node_id": n.node_id,
        # DRAINING: alive, taking no new work (freight drain); `draining` stays set on a node
        # that died drained.
        "state": node_state(n.state, n.draining),
        "draining": n.draining,
        "drain_reason": n.drain_reason,
        "drain_time": n.drain_time,
        "hostname": n.hostname,
        "is_head_node": n.is_head_node,
        "pid": n.pid,
        "agent_address": n.agent_address,
        "node_ip": n.node_ip,
        "data_address": n.data_address,
        "metrics_address": n.metrics_address,
        "start_time": n.start_time,
        "last_heartbeat": n.last_heartbeat,
        "resources_total": dict(n.total.amounts),
        "resources_available": dict(n.available.amounts),
        "object_store_used": s.object_store_used,
        "object_store_capacity": s.object_store_capacity,
        "memory_used": s.memory_used,
        "memory_total": s.memory_total,
        "num_objects": s.num_objects,
        "num_workers": s.num_workers,
        "num_idle_workers": s.num_idle_workers,
        "num_actor_workers": s.num_actor_workers,
        "pending_by_reason": dict(s.pending_by_reason),
        "labels": dict(n.labels),
    }


def job_row(j: pb.JobInfo) -> dict[str, Any]:
    return {
        "job_id": j.job_id,
        "state": j.state,
        "namespace": j.namespace,
        "driver_pid": j.driver_pid,
        "driver_address": j.driver_address,
        "entrypoint": j.entrypoint,
        "start_time": j.start_time,
        "end_time": j.end_time,
        "labels": dict(j.labels),
        "kind": j.kind,
        "message": j.message,
        "exit_code": j.exit_code,
        "log_path": j.log_path,
        "supervisor_pid": j.supervisor_pid,
    }


def actor_row(a: pb.ActorInfo) -> dict[str, Any]:
    return {
        "actor_id": a.actor_id,
        "class_name": a.class_name,
        "name": a.name,
        "namespace": a.namespace,
        "job_id": a.job_id,
        "state": a.state,
        "node_id": a.node_id,
        "worker_id": a.worker_id,
        "pid": a.pid,
        "detached": a.detached,
        "death_cause": a.death_cause,
        "pending_reason": a.pending_reason,
        "resources": dict(a.resources.amounts),
        "start_time": a.start_time,
        "end_time": a.end_time,
        "num_restarts": a.num_restarts,
    }


def placement_group_row(pg: pb.PlacementGroupInfo) -> dict[str, Any]:
    return {
        "placement_group_id": pg.pg_id,
        "name": pg.name,
        "namespace": pg.namespace,
        "job_id": pg.job_id,
        "strategy": pg.strategy,
        "state": pg.state,
        "bundles": [dict(b.amounts) for b in pg.bundles],
        "num_bundles": len(pg.bundles),
        "bundle_nodes": list(pg.bundle_nodes),
        "detached": pg.detached,
        "create_time": pg.create_time,
        "pending_reason": pg.pending_reason,
    }


class Rows(NamedTuple):
    rows: list[tuple[Any, dict[str, Any]]]  # (sort key, row), in sort order
    warnings: list[str]
    partial: bool
    dropped: int


class StateServiceServicer(pb_grpc.StateServiceServicer):
    """Every ``StateService`` RPC."""

    watches: Any = None  # the head's freight.head.watch.WatchHub, which serves Watch

    def __init__(
        self,
        store: ControlStore,
        nodes: NodeDirectory,
        tasks: TaskStore,
        events: Any = None,
        placement_groups: PlacementGroupDirectory | None = None,
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.tasks = tasks
        self.events = events  # an EventStore (rows(), dropped), or None
        self.placement_groups = placement_groups

    # -- sources -----------------------------------------------------------------------------

    async def _rows(self, kind: str) -> Rows:
        """Every row of a kind other than tasks, with its sort key, in order."""
        if kind in ("nodes", "jobs", "actors"):
            # The control store keeps these in creation order and never deletes them, so the
            # position is a stable sort key.
            if kind == "nodes":
                rows = [node_row(n) for n in self.store.list_nodes(include_dead=True)]
            elif kind == "jobs":
                rows = [job_row(j) for j in self.store.list_jobs()]
            else:
                rows = [actor_row(a) for a in self.store.list_actors(include_dead=True)]
            return Rows(list(enumerate(rows)), [], False, 0)
        if kind in ("objects", "workers"):
            return await self._from_agents(kind)
        if kind == "events":
            if self.events is None:
                return Rows([], ["events are not recorded by this head"], False, 0)
            rows = self.events.rows(newest_first=False)
            keyed = sorted(((r["time"], r["event_id"]), r) for r in rows)
            return Rows([([t, e], r) for (t, e), r in keyed], [], False, self.events.dropped)
        # placement_groups: kept (REMOVED too) until the head's store is wiped; a restarted head
        # reloads them in key order, so creation time (then id) is the stable sort key.
        if self.placement_groups is None:
            return Rows([], ["placement groups are not tracked by this head"], False, 0)
        groups = sorted(self.placement_groups.list(), key=lambda g: (g.create_time, g.pg_id))
        return Rows(
            [([g.create_time, g.pg_id], placement_group_row(g)) for g in groups], [], False, 0
        )

    async def _from_agents(self, kind: str) -> Rows:
        """Ask every alive agent concurrently; a silent one makes the answer partial."""
        timeout = settings.state_agent_timeout_s
        nodes = self.nodes.alive()

        async def ask(node: pb.NodeInfo) -> Any:
            stub = await self.nodes.agent(node)
            if kind == "objects":
                return await stub.ListObjects(pb.ListObjectsRequest(), timeout=timeout)
            return await stub.ListWorkers(pb.ListWorkersRequest(), timeout=timeout)

        replies = await asyncio.gather(*(ask(n) for n in nodes), return_exceptions=True)
        keyed: list[tuple[Any, dict[str, Any]]] = []
        warnings: list[str] = []
        for node, reply in zip(nodes, replies, strict=True):
            if isinstance(reply, BaseException):
                why = reply.code().name if isinstance(reply, aio.AioRpcError) else repr(reply)
                warnings.append(
                    f"node {node.node_id[:12]} ({node.agent_address}) did not answer ({why}): "
                    f"its {kind} are missing from this answer"
                )
                continue
            if kind == "objects":
                for o in reply.objects:
                    row = {
                        "object_id": o.object_id,
                        "node_id": node.node_id,
                        "size": o.size,
                        "owner_address": o.owner_address,
                        "sealed": o.sealed,
                        "spilled": o.spilled,
                        "create_time": o.create_time,
                    }
                    keyed.append(([node.node_id, o.object_id], row))
            else:
                for w in reply.workers:
                    row = {
                        "worker_id": w.worker_id,
                        "node_id": w.node_id or node.node_id,
                        "pid": w.pid,
                        "state": w.state,
                        "address": w.address,
                        "actor_id": w.actor_id,
                        "start_time": w.start_time,
                        "rss_bytes": w.rss_bytes,
                        "cpu_percent": w.cpu_percent,
                        "lease_holder": w.lease_holder,
                    }
                    keyed.append(([node.node_id, w.worker_id], row))
        keyed.sort(key=lambda kr: kr[0])
        return Rows(keyed, warnings, bool(warnings), 0)

    # -- RPCs --------------------------------------------------------------------------------

    @rpc
    async def List(self, request, context):
        name = _plural(request.kind)
        kind = kind_of(request.kind)
        if request.limit < 0:
            raise ValueError(f"limit must be >= 0 (0: the default {DEFAULT_LIMIT})")
        limit = request.limit or DEFAULT_LIMIT
        warnings: list[str] = []
        if limit > MAX_LIMIT:
            warnings.append(f"limit {limit} lowered to {MAX_LIMIT} rows per reply; page on")
            limit = MAX_LIMIT
        newest_first = request.newest_first
        if name == "tasks":
            sorting = compile_task_sorting(request.sort_by, request.descending)
        else:
            sorting = compile_sorting(
                request.sort_by, request.descending, kind.fields, name, _row_getter
            )
        order = order_name(name, sorting, newest_first)
        after = decode_cursor(order, request.cursor) if request.cursor else None
        if after is not None and sorting is not None:
            after = _sorted_cursor(order, request.cursor, after)
        if name == "tasks":
            pred = compile_task_filters(_filters(request))
            self._close_ended_jobs()
            page = self.tasks.list(pred, limit, after, request.detail, newest_first, sorting)
            reply = pb.ListStateReply(
                rows=page.rows,
                total=page.total,
                matched=page.matched,
                remaining=page.remaining,
                dropped=self.tasks.dropped,
            )
            if page.remaining:
                reply.next_cursor = encode_cursor(order, page.last_key)
            if self.tasks.dropped:
                warnings.append(self._task_drop_note())
            if self.tasks.sampled_out:
                warnings.append(self._task_sample_note())
        else:
            pred = compile_filters(_filters(request), kind.fields, name, _row_getter)
            src = await self._rows(name)
            warnings += src.warnings
            matched = [(k, r) for k, r in src.rows if pred is None or pred(r)]
            if newest_first:
                matched.reverse()
            keyed, later = matched, _after_default(after, newest_first)
            if sorting is not None:  # keyed by (value, default key), in the order asked for
                value = sorting.value
                ordered = sort_items(matched, sorting, _row_of(sorting.get))
                keyed = [((value(r), k), r) for k, r in ordered]
                later = _after_sorted(after, sorting.descending, newest_first)
            start = 0 if after is None else bisect_left(keyed, True, key=later)
            chosen = keyed[start : start + limit]
            remaining = len(keyed) - start - len(chosen)
            reply = pb.ListStateReply(
                rows=[json.dumps(r) for _, r in chosen],
                total=len(src.rows),
                matched=len(keyed),
                remaining=remaining,
                dropped=src.dropped,
                partial=src.partial,
            )
            if remaining:
                reply.next_cursor = encode_cursor(order, chosen[-1][0])
        if request.follow and self.watches is not None and name in self.watches.logs:
            # No await since the rows were read (_rows awaits only for objects and workers,
            # which cannot be watched): the cursor is the log's position as of this listing.
            reply.watch_cursor = self.watches.listed(name)
        reply.truncated = reply.remaining > 0
        if reply.truncated:
            warnings.append(
                f"truncated: {len(reply.rows)} of {reply.matched} matching {name} returned, "
                f"{reply.remaining} more after this page (pass next_cursor to continue)"
            )
        reply.warnings.extend(warnings)
        return reply

    def _task_drop_note(self) -> str:
        t = self.tasks
        return (
            f"{t.dropped_records} task records were evicted by retention "
            f"(FREIGHT_STATE_TASKS_MAX={t.tasks_max}, FREIGHT_STATE_FAILED_TASKS_MAX="
            f"{t.failed_max}) and {t.dropped_events} task events were lost before reaching "
            "the head"
        )

    def _task_sample_note(self) -> str:
        return (
            f"task records are a sample: {self.tasks.num_sampled_out} short successful tasks "
            "have no record of their own (FREIGHT_TASK_ROWS_SAMPLE); summaries count them all"
        )

    def _close_ended_jobs(self) -> None:
        """Close the records of tasks whose job ended a while ago without their outcome."""
        cutoff = time.time() - job_end_grace_s()
        ended = {
            j.job_id: (j.state, j.end_time)
            for j in self.store.list_jobs()
            if j.state not in _LIVE_JOB_STATES and 0 < j.end_time <= cutoff
        }
        self.tasks.end_jobs(ended)

    @rpc
    async def Get(self, request, context):
        name = _plural(request.kind)
        kind = kind_of(request.kind)
        wanted = request.id.strip()
        if not wanted:
            raise ValueError(f"give the id (or a unique id prefix) of the {name[:-1]} to get")
        if name == "tasks":
            rec = self.tasks.get(wanted)
            if rec is None:
                warnings = [self._task_drop_note()] if self.tasks.dropped else []
                return pb.GetStateReply(found=False, warnings=warnings)
            return pb.GetStateReply(row=json.dumps(rec.row(detail=True)), found=True)
        src = await self._rows(name)
        key = kind.id_key
        rows = [r for _, r in src.rows]
        row = one_by_prefix(rows, lambda r: str(r.get(key, "")), wanted, name, key)
        if row is None:
            return pb.GetStateReply(found=False, warnings=src.warnings)
        return pb.GetStateReply(row=json.dumps(row), found=True, warnings=src.warnings)

    @rpc
    async def Watch(self, request, context):
        # Server streaming, written as it goes (a coroutine, so @rpc maps a bad request).
        if self.watches is None:
            raise ValueError("this head does not serve watches")
        await self.watches.serve(self, request, context)

    @rpc
    async def Schema(self, request, context):
        from .watch import WATCHABLE  # (watch builds on this module)

        names = [_plural(request.kind)] if request.kind else list(KINDS)
        if request.kind:
            kind_of(request.kind)  # an unknown kind is a bad request, naming the valid ones
        reply = pb.SchemaReply()
        for name in names:
            kind = KINDS[name]
            reply.kinds.append(
                pb.KindSchema(
                    kind=name,
                    id_key=kind.id_key,
                    fields=[
                        pb.FieldSchema(name=key, type=f.type, choices=list(f.choices))
                        for key, f in kind.fields.items()
                    ],
                    watchable=name in WATCHABLE,
                    summarizable=name in SUMMARY_KINDS,
                )
            )
        return reply

    @rpc
    async def Summary(self, request, context):
        name = _plural(request.kind)
        kind = kind_of(request.kind)
        if name not in SUMMARY_KINDS:
            raise ValueError(
                f"summary covers {', '.join(SUMMARY_KINDS)}, not {name}; use list for {name}"
            )
        if name == "tasks":
            filters = _filters(request)
            pred = compile_task_filters(filters)
            self._close_ended_jobs()
            uncountable = sorted({key for key, _, _ in filters} - COUNTED_FIELDS)
            summary = self.tasks.summary(
                pred,
                with_sampled_out=not uncountable,
                live_nodes={n.node_id for n in self.nodes.alive()},
            )
            warnings = [self._task_drop_note()] if self.tasks.dropped else []
            if self.tasks.sampled_out and uncountable:
                warnings.append(
                    f"these counts cover only the tasks with a record: "
                    f"{self.tasks.num_sampled_out} short successful tasks have none "
                    f"(FREIGHT_TASK_ROWS_SAMPLE) and cannot be filtered by "
                    f"{', '.join(uncountable)}"
                )
            elif summary["counted_without_record"]:
                warnings.append(
                    f"{summary['counted_without_record']} of these {summary['total']} tasks are "
                    "counted without a record (short successful tasks are sampled: "
                    "FREIGHT_TASK_ROWS_SAMPLE); `freight list tasks` shows the sample"
                )
            return pb.SummaryReply(summary=json.dumps(summary), warnings=warnings)
        pred = compile_filters(_filters(request), kind.fields, name, _row_getter)
        src = await self._rows(name)
        rows = [r for _, r in src.rows if pred is None or pred(r)]
        summary = summarize_actors(rows) if name == "actors" else summarize_objects(rows)
        return pb.SummaryReply(
            summary=json.dumps(summary), warnings=src.warnings, partial=src.partial
        )


def summarize_actors(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Actors counted by class and state."""
    by_class: dict[str, dict[str, Any]] = {}
    by_state: dict[str, int] = {}
    for r in rows:
        entry = by_class.setdefault(r["class_name"], {"total": 0, "states": {}, "restarts": 0})
        entry["total"] += 1
        entry["states"][r["state"]] = entry["states"].get(r["state"], 0) + 1
        entry["restarts"] += r["num_restarts"]
        by_state[r["state"]] = by_state.get(r["state"], 0) + 1
    return {"total": len(rows), "by_state": by_state, "by_class": by_class}


def summarize_objects(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Objects in the node stores: count and bytes per node, sealed and being written, and
    how many of them (and bytes) are spilled to disk."""
    by_node: dict[str, dict[str, int]] = {}
    for r in rows:
        entry = by_node.setdefault(
            r["node_id"],
            {
                "objects": 0,
                "bytes": 0,
                "sealed": 0,
                "being_written": 0,
                "spilled": 0,
                "spilled_bytes": 0,
            },
        )
        entry["objects"] += 1
        entry["bytes"] += r["size"]
        entry["sealed" if r["sealed"] else "being_written"] += 1
        if r.get("spilled"):
            entry["spilled"] += 1
            entry["spilled_bytes"] += r["size"]
    return {
        "total": len(rows),
        "total_bytes": sum(r["size"] for r in rows),
        "by_node": by_node,
    }
