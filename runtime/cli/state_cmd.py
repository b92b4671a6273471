"""`freight list`, `freight get`, `freight summary`, `freight timeline`: clients of the state API.

Output is a Rich table on a terminal and JSON when stdout is not one (``--format`` overrides).
Every listing says how complete it is: how many rows matched, how many more there are and the
cursor for the next page, what retention dropped and which node did not answer.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from typing import Any

from freight import state
from freight.client import access
from freight.core.filters import parse_time

from . import common

TIMELINE_PAGE = 5000
_SHORT = 12

# Columns of each kind's table: (title, key, formatter name). Task and object ids begin with
# their owner's prefix, so they are shown whole; node and worker ids are random (12 characters).
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "nodes": [
        ("node", "node_id", "id"), ("state", "state", ""), ("host", "hostname", ""),
        ("agent", "agent_address", ""), ("pid", "pid", ""),
        ("head", "is_head_node", ""), ("workers", "num_workers", ""),
        ("objects", "num_objects", ""), ("store used", "object_store_used", "bytes"),
        ("started", "start_time", "time"), ("last heartbeat", "last_heartbeat", "time"),
    ],
    "jobs": [
        ("job", "job_id", ""), ("state", "state", ""), ("namespace", "namespace", ""),
        ("driver pid", "driver_pid", ""), ("started", "start_time", "time"),
        ("ended", "end_time", "time"), ("entrypoint", "entrypoint", "long"),
    ],
    "tasks": [
        ("task", "task_id", ""), ("name", "name", ""), ("state", "state", ""),
        ("attempt", "attempt", ""), ("job", "job_id", ""), ("node", "node_id", "id"),
        ("worker", "worker_id", "id"), ("duration", "duration", "secs"),
        ("error / pending", "error_type", "why"),
    ],
    "actors": [
        ("actor", "actor_id", "id"), ("class", "class_name", ""), ("name", "name", ""),
        ("state", "state", ""), ("node", "node_id", "id"), ("pid", "pid", ""),
        ("restarts", "num_restarts", ""), ("death cause", "death_cause", "long"),
    ],
    "objects": [
        ("object", "object_id", "long"), ("node", "node_id", "id"), ("size", "size", "bytes"),
        ("sealed", "sealed", ""), ("spilled", "spilled", ""),
        ("owner", "owner_address", "long"), ("created", "create_time", "time"),
    ],
    "workers": [
        ("worker", "worker_id", "id"), ("node", "node_id", "id"), ("pid", "pid", ""),
        ("state", "state", ""), ("actor", "actor_id", "id"), ("rss", "rss_bytes", "bytes"),
        ("cpu %", "cpu_percent", ""), ("started", "start_time", "time"),
    ],
    "placement_groups": [
        ("placement group", "placement_group_id", ""), ("name", "name", ""),
        ("state", "state", ""), ("strategy", "strategy", ""), ("bundles", "bundles", "long"),
        ("nodes", "bundle_nodes", "ids"), ("created", "create_time", "time"),
        ("pending reason", "pending_reason", "why"),
    ],
    "events": [
        ("time", "time", "time"), ("severity", "severity", ""), ("source", "source", ""),
        ("kind", "kind", ""), ("message", "message", "long"),
    ],
}  # fmt: skip


# Columns only `-o wide` shows (as kubectl's wide adds the IP and node columns).
WIDE_ONLY: dict[str, tuple[str, ...]] = {"nodes": ("agent_address", "pid")}


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _cell(row: dict[str, Any], key: str, how: str, wide: bool = False) -> str:
    """One table cell; ``wide`` (``-o wide``) shows ids and long texts whole."""
    value = row.get(key)
    if how == "why":
        return str(row.get("error_type") or row.get("pending_reason") or "")
    if value in (None, ""):
        return "-"
    short = None if wide else _SHORT
    if how == "id":
        return str(value)[:short]
    if how == "ids":
        return ", ".join(str(v)[:short] for v in value) or "-"
    if how == "time":
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"
    if how == "bytes":
        return _bytes(value)
    if how == "secs":
        return f"{value:.3f}s" if value else "-"
    if how == "long":
        text = str(value)
        return text if wide or len(text) <= 60 else text[:57] + "..."
    return str(value)


def _console() -> Any:

    return common.console()


def _notes(console: Any, warnings: list[str]) -> None:
    for w in warnings:
        console.print(f"[yellow]note:[/yellow] {w}", highlight=False)


def cmd_explain(args: argparse.Namespace) -> int:
    """The filterable fields of one kind or of every kind (as ``kubectl explain``)."""
    kinds = state.schema(args.kind, address=common.target(args))
    fmt = common.chosen(args)
    if common.is_structured(fmt):
        items = [{**k._asdict(), "fields": [f._asdict() for f in k.fields]} for k in kinds.values()]
        common.dump(common.envelope("schemas", items), fmt)
        return 0
    from rich.table import Table

    console = _console()
    for k in kinds.values():
        serves = ["list", "get"] + ["watch"] * k.watchable + ["summary"] * k.summarizable
        table = Table(title=f"{k.kind} (id: {k.id_key}; {', '.join(serves)})")
        for col in ("field", "type", "values"):
            table.add_column(col, overflow="fold")
        for f in k.fields:
            table.add_row(f.name, f.type, ", ".join(f.choices) or "-")
        console.print(table)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if getattr(args, "watch", False):
        if args.sort_by:
            raise access.UsageError(
                "--sort-by orders one listing and --watch prints changes as they come: "
                "drop one of them"
            )
        from freight.cli.watch_cmd import cmd_list_watch

        return cmd_list_watch(args)
    rows = state.list_state(
        args.kind,
        args.filter or None,
        limit=args.limit,
        cursor=args.cursor,
        detail=args.detail,
        newest_first=args.newest,
        sort_by=args.sort_by or "",
        descending=args.desc,
        address=common.target(args),
    )
    fmt = common.chosen(args)
    if common.is_structured(fmt):
        meta = rows.meta()
        del meta["kind"], meta["returned"]
        common.dump(common.envelope(rows.kind, list(rows), **meta), fmt)
        return 0
    wide = fmt == "wide"
    from rich.table import Table

    console = _console()
    kind = rows.kind
    table = Table(title=f"{kind} ({len(rows)} of {rows.matched} matching, {rows.total} held)")
    columns = [c for c in COLUMNS.get(kind, []) if wide or c[1] not in WIDE_ONLY.get(kind, ())]
    for title, _, _ in columns:
        table.add_column(title)
    for row in rows:
        table.add_row(*(_cell(row, key, how, wide) for _, key, how in columns))
    console.print(table)
    _notes(console, rows.warnings)
    if rows.truncated:
        console.print(f"next page: freight list {kind} ... --cursor {rows.next_cursor}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    row = state.get_state(args.kind, args.id, address=common.target(args))
    if row is None:
        kind = args.kind.rstrip("s")
        hint = (
            " (old task records are evicted by retention: `freight summary tasks` shows how "
            "many were dropped)"
            if kind == "task"
            else ""
        )
        raise access.NotFound(f"no {kind} with id {args.id!r}{hint}")
    fmt = common.chosen(args)
    if common.is_structured(fmt):
        common.dump(row, fmt)
        return 0
    from rich.table import Table

    console = _console()
    table = Table(title=args.kind.rstrip("s"), show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in row.items():
        if key in ("transitions", "attempts", "traceback"):
            continue
        how = "time" if key.endswith("_time") else "secs" if key == "duration" else ""
        shown = _cell(row, key, how) if how else value
        table.add_row(key, json.dumps(shown) if isinstance(shown, (dict, list)) else str(shown))
    console.print(table)
    if row.get("transitions"):
        tr = Table(title="transitions")
        for col in ("time", "state", "cause"):
            tr.add_column(col)
        for t in row["transitions"]:
            stamp = datetime.fromtimestamp(t["time"]).strftime("%H:%M:%S.%f")[:-3]
            tr.add_row(stamp, t["state"], t["cause"])
        console.print(tr)
    if row.get("attempts"):
        at = Table(title="attempts")
        for col in ("attempt", "worker", "node", "ran for", "outcome"):
            at.add_column(col)
        for a in row["attempts"]:
            took = a["end_time"] - a["start_time"] if a["end_time"] else 0
            at.add_row(
                str(a["attempt"]), a["worker_id"][:_SHORT], a["node_id"][:_SHORT],
                f"{took:.3f}s", a["outcome"],
            )  # fmt: skip
        console.print(at)
    if row.get("traceback"):
        console.print("traceback", style="bold")
        console.print(row["traceback"].rstrip(), markup=False, highlight=False)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    summary = state.summarize(args.kind, args.filter or None, address=common.target(args))
    fmt = common.chosen(args)
    if common.is_structured(fmt):
        common.dump({**summary, "warnings": summary.warnings, "partial": summary.partial}, fmt)
        return 0
    from rich.table import Table

    console = _console()
    if args.kind.startswith("task"):
        states = sorted({s for entry in summary["by_name"].values() for s in entry["states"]})
        table = Table(title=f"tasks by name ({summary['total']} tasks)")
        for col in ("name", "total", *states, "errors"):
            table.add_column(col)
        for name, entry in sorted(summary["by_name"].items(), key=lambda kv: -kv[1]["total"]):
            errors = ", ".join(f"{k}: {v}" for k, v in sorted(entry["error_types"].items()))
            counts = [str(entry["states"].get(s, 0)) for s in states]
            table.add_row(name, str(entry["total"]), *counts, errors or "-")
        console.print(table)
        if summary["pending_by_reason"]:
            pending = ", ".join(f"{n} {r}" for r, n in sorted(summary["pending_by_reason"].items()))
            console.print(f"pending: {pending}")
        console.print(
            f"dropped: {summary['dropped_records']} task records (retention), "
            f"{summary['dropped_events']} task events (on the way)"
        )
    elif args.kind.startswith("actor"):
        table = Table(title=f"actors by class ({summary['total']} actors)")
        for col in ("class", "total", "states", "restarts"):
            table.add_column(col)
        for name, entry in sorted(summary["by_class"].items()):
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(entry["states"].items()))
            table.add_row(name, str(entry["total"]), shown, str(entry["restarts"]))
        console.print(table)
    else:
        table = Table(title=f"objects in node stores ({summary['total']} objects)")
        for col in ("node", "objects", "bytes", "sealed", "being written", "spilled"):
            table.add_column(col)
        for node, entry in sorted(summary["by_node"].items()):
            spilled = entry.get("spilled", 0)
            table.add_row(
                node[:_SHORT], str(entry["objects"]), _bytes(entry["bytes"]), str(entry["sealed"]),
                str(entry["being_written"]),
                f"{spilled} ({_bytes(entry.get('spilled_bytes', 0))})" if spilled else "0",
            )  # fmt: skip
        console.print(table)
    _notes(console, summary.warnings)
    return 0


def timeline_events(rows: list[dict[str, Any]], since: float, until: float) -> dict[str, Any]:
    """Chrome trace (catapult JSON) of task executions: one complete event per attempt run.

    ``pid`` is the node and ``tid`` the worker (named by metadata events). Returns the trace
    and counts: tasks drawn, executions drawn, tasks with no finished execution in the window.
    """
    pids: dict[str, int] = {}
    tids: dict[tuple[str, str], int] = {}
    events: list[dict[str, Any]] = []
    drawn_tasks = not_run = 0
    for row in rows:
        drawn = False
        for a in row.get("attempts", ()):
            start, end = a["start_time"], a["end_time"]
            if not start or not end or end < since or start > until:
                continue
            node, worker = a["node_id"] or "unknown", a["worker_id"] or "unknown"
            if node not in pids:
                pids[node] = len(pids) + 1
                events.append(
                    {"name": "process_name", "ph": "M", "pid": pids[node],
                     "args": {"name": f"node {node[:_SHORT]}"}}
                )  # fmt: skip
            if (node, worker) not in tids:
                tids[(node, worker)] = len(tids) + 1
                events.append(
                    {"name": "thread_name", "ph": "M", "pid": pids[node],
                     "tid": tids[(node, worker)], "args": {"name": f"worker {worker[:_SHORT]}"}}
                )  # fmt: skip
            events.append(
                {
                    "name": row["name"],
                    "cat": "actor_task" if row.get("actor_id") else "task",
                    "ph": "X",
                    "ts": start * 1e6,
                    "dur": max(0.0, end - start) * 1e6,
                    "pid": pids[node],
                    "tid": tids[(node, worker)],
                    "args": {
                        "task_id": row["task_id"],
                        "job_id": row["job_id"],
                        "attempt": a["attempt"],
                        "outcome": a["outcome"],
                        "state": row["state"],
                        "actor_id": row.get("actor_id", ""),
                        "parent_task_id": row.get("parent_task_id", ""),
                        "node_id": node,
                        "worker_id": worker,
                        "error_type": row.get("error_type", ""),
                    },
                }
            )
            drawn = True
        drawn_tasks += drawn
        not_run += not drawn
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "counts": {"tasks": drawn_tasks, "not_drawn": not_run},
    }


def cmd_timeline(args: argparse.Namespace) -> int:
    since = parse_time(args.since) if args.since else 0.0
    until = parse_time(args.until) if args.until else time.time()
    address = common.target(args)
    filters = [*(args.filter or []), f"submit_time<={until!r}"]
    if since:
        filters.append(f"end_time>={since!r}")
    if args.job:
        filters.append(f"job_id={args.job}")
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    warnings: list[str] = []
    dropped = 0
    while True:  # every page: the timeline leaves no task out
        page = state.list_state(
            "tasks", filters, limit=TIMELINE_PAGE, cursor=cursor, detail=True, address=address
        )
        rows += page
        dropped = page.dropped
        warnings += [w for w in page.warnings if not w.startswith("truncated")]
        cursor = page.next_cursor
        if not cursor:
            break
    trace = timeline_events(rows, since, until)
    counts = trace.pop("counts")
    executions = sum(1 for e in trace["traceEvents"] if e["ph"] == "X")
    trace["otherData"] = {
        "freight": {
            "tasks_listed": len(rows),
            "tasks_drawn": counts["tasks"],
            "executions": executions,
            "not_drawn": counts["not_drawn"],
            "since": since,
            "until": until,
            "dropped": dropped,
            "warnings": sorted(set(warnings)),
        }
    }
    with open(args.file, "w", encoding="utf-8") as f:
        json.dump(trace, f)
    print(
        f"wrote {executions} task executions of {counts['tasks']} tasks to {args.file} "
        "(open it in chrome://tracing or https://ui.perfetto.dev)"
    )
    if counts["not_drawn"]:
        print(
            f"{counts['not_drawn']} more tasks in the window have no finished execution to draw "
            "(pending, running, or failed/cancelled before they ran)"
        )
    if dropped:
        print(f"note: {dropped} task records/events were dropped before this timeline was made")
    for w in sorted(set(warnings)):
        print(f"note: {w}")
    return 0


def pending_tasks_by_reason(address: str | access.Target | None) -> dict[str, int] | None:
    """Tasks waiting to run by pending reason, from the state API (None if it did not answer)."""
    try:
        summary = state.summarize("tasks", ["state~^PENDING"], address=address, timeout=5)
    except (ValueError, ConnectionError, PermissionError, OSError):
        return None
    return dict(summary.get("pending_by_reason", {}))


def _common(p: argparse.ArgumentParser, filters: bool = True) -> None:
    common.add_address_option(p)
    common.add_output_option(p)
    if filters:
        p.add_argument("--filter", action="append", metavar="KEY=VALUE",
                       help="keep rows matching: = != ~(RE2 regex) !~ > < >= <= ; repeatable")  # fmt: skip


def add_parsers(sub: Any) -> None:
    kinds = list(state.KINDS)
    p = sub.add_parser(
        "list", help="list nodes, jobs, tasks, actors, objects, workers, placement groups, events"
    )
    p.add_argument("kind", choices=[*kinds, *(k[:-1] for k in kinds)], metavar="KIND",
                   help=f"one of {', '.join(kinds)} (singular works too)")  # fmt: skip
    _common(p)
    p.add_argument("--limit", type=int, default=state.DEFAULT_LIMIT, help="rows to show")
    p.add_argument("--cursor", default=None, help="next_cursor of a previous page")
    p.add_argument("--newest", action="store_true",
                   help="newest first (with --limit N: the N most recent)")  # fmt: skip
    p.add_argument("--sort-by", metavar="FIELD",
                   help="order by this field (freight explain KIND lists them); rows without "
                        "a value last")  # fmt: skip
    p.add_argument("--desc", action="store_true", help="with --sort-by: largest first")
    p.add_argument("--detail", action="store_true", help="heavy fields (task transitions)")
    p.add_argument("--watch", "-w", action="store_true",
                   help="print the rows, then a line per change until Ctrl-C")  # fmt: skip
    p.set_defaults(func=cmd_list)
    p = sub.add_parser(
        "get", help="one node/job/task/actor/object/worker/placement group by id or id prefix"
    )
    p.add_argument("kind", choices=[*kinds, *(k[:-1] for k in kinds)], metavar="KIND",
                   help=f"one of {', '.join(kinds)} (singular works too)")  # fmt: skip
    p.add_argument("id")
    _common(p, filters=False)
    p.set_defaults(func=cmd_get)
    p = sub.add_parser(
        "explain",
        help="the fields of each kind that --filter can name: type and allowed values",
    )
    p.add_argument("kind", nargs="?", choices=[*kinds, *(k[:-1] for k in kinds)], metavar="KIND",
                   help="one kind (default: every kind)")  # fmt: skip
    common.add_address_option(p)
    common.add_output_option(p)
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("summary", help="task, actor or object counts")
    p.add_argument("kind", choices=("tasks", "actors", "objects", "task", "actor", "object"),
                   metavar="KIND", help="tasks, actors or objects")  # fmt: skip
    _common(p)
    p.set_defaults(func=cmd_summary)
    p = sub.add_parser("timeline", help="write task executions as a Chrome trace")
    p.add_argument("--file", required=True, help="file to write (trace.json)")
    p.add_argument("--job", default=None, help="only this job's tasks")
    p.add_argument("--since", default=None, help="unix time, ISO-8601, or 5m ago")
    p.add_argument("--until", default=None, help="unix time, ISO-8601, or 1m ago (default: now)")
    common.add_address_option(p)
    p.add_argument("--filter", action="append", metavar="KEY=VALUE", help="task filters")
    p.set_defaults(func=cmd_timeline)
