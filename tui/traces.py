"""The inspector's Traces view: a task and the tasks it started, as a timeline.

One row per task attempt (or per span), indented under its parent: name, state, start (seconds
after the first row began), duration, and a bar over the trace's time: ``░`` waiting for a
worker, ``█`` running. Where the rows come from:

- **A trace backend** (``freight top --traces URL``, a Jaeger query service): when the task's
  record carries a trace id (its owner traced it), the spans of that trace, from Jaeger's
  ``GET /api/traces/{trace_id}``.
- **Otherwise the state transitions** the head keeps for each task (its record, and the records
  whose ``parent_task_id`` leads back to it); the screen says which, and why.

A :class:`TraceSource` reads in its thread, again every ``refresh`` while a task runs.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.text import Text
from textual.content import Content
from textual.widget import Widget
from textual.widgets import DataTable

from freight import state
from freight.client import access
from freight.core.filters import FilterError

from .modal import BACK_AND_QUIT, SourceScreen

MAX_TASKS = 500  # rows of a timeline built from the state transitions
HTTP_TIMEOUT_S = 10.0
BAR_WIDTH = 60
TERMINAL = frozenset({"FINISHED", "FAILED", "CANCELLED"})
STATE_STYLE = {"FAILED": "red", "ERROR": "red", "CANCELLED": "yellow", "FINISHED": "green"}


@dataclass
class Timeline:
    """What a :class:`TraceSource` read last: ``rows`` (plain dicts: ``id``, ``parent``,
    ``name``, ``depth``, ``state``, ``queued``, ``start``, ``end``, unix seconds, ``end`` 0 while
    running, ``start`` 0 while waiting), where they come from and why (``origin``, ``note``)."""

    rows: list[dict[str, Any]]
    origin: str  # "state transitions" or "jaeger <url>"
    note: str = ""  # why the transitions are shown although a backend is configured
    error: str = ""  # why nothing could be read
    read_at: float = 0.0  # when (unix seconds): a running bar ends there
    final: bool = False  # every task has ended: nothing more will change


# -- the state transitions ----------------------------------------------------------------------


def task_rows(task: dict[str, Any], depth: int) -> list[dict[str, Any]]:
    """One row per attempt of a task record read with detail (one row while none ran)."""
    base = {"id": task["task_id"], "parent": task.get("parent_task_id") or "", "depth": depth}
    queued = float(task.get("submit_time") or 0.0)
    attempts = task.get("attempts") or []
    if not attempts:
        return [{**base, "name": task["name"], "state": task["state"], "queued": queued}]
    out = []
    for i, a in enumerate(attempts):
        last = i == len(attempts) - 1
        name = task["name"] if len(attempts) == 1 else f"{task['name']} #{a['attempt']}"
        out.append(
            {
                **base,
                "name": name,
                "state": task["state"] if last else a.get("outcome") or "RETRIED",
                "queued": queued,
                "start": float(a.get("start_time") or 0.0),
                "end": float(a.get("end_time") or 0.0),
            }
        )
        queued = float(a.get("end_time") or 0.0) or queued  # a retry waits from the failure
    return out


@dataclass
class TaskTree:
    """A task's record (with detail), its tree as timeline rows, whether every task of it has
    ended, and a note when the tree was cut at :data:`MAX_TASKS`."""

    root: dict[str, Any]
    rows: list[dict[str, Any]]
    final: bool
    cut: str


def read_transitions(address: str, task_id: str) -> TaskTree:
    """The task and its descendants (breadth first, at most :data:`MAX_TASKS`) from the state
    API. ``LookupError`` for a task the head does not know."""
    root = state.get_state("tasks", task_id, address=address, timeout=HTTP_TIMEOUT_S)
    if root is None:
        raise LookupError(f"no task {task_id} in the cluster (its record may have been dropped)")
    tasks = [(root, 0)]
    level, depth, cut = [root["task_id"]], 0, ""
    while level and len(tasks) < MAX_TASKS:
        depth += 1
        children: list[dict[str, Any]] = []
        for parent in level:
            got = state.list_state(
                "tasks",
                [f"parent_task_id={parent}"],
                limit=MAX_TASKS - len(tasks) - len(children) or 1,
                detail=True,
                address=address,
                timeout=HTTP_TIMEOUT_S,
            )
            children += got
            if got.truncated:
                cut = f"showing the first {MAX_TASKS} tasks of the tree"
            if len(tasks) + len(children) >= MAX_TASKS:
                break
        tasks += [(c, depth) for c in children]
        level = [c["task_id"] for c in children]
    ordered = _tree_order([(t["task_id"], t.get("parent_task_id") or "", (t, d)) for t, d in tasks])
    rows = [r for t, d in ordered for r in task_rows(t, d)]
    return TaskTree(root, rows, all(t["state"] in TERMINAL for t, _ in tasks), cut)


def _tree_order(items: Iterable[tuple[str, str, Any]]) -> list[Any]:
    """``(id, parent, value)`` items as a tree walked depth first, children in the given order
    (a parent before its children; items whose parent is not here are roots)."""
    items = list(items)
    ids = {i for i, _, _ in items}
    children: dict[str, list[tuple[str, Any]]] = {}
    roots = []
    for i, parent, value in items:
        if parent in ids and parent != i:
            children.setdefault(parent, []).append((i, value))
        else:
            roots.append((i, value))
    out: list[Any] = []
    seen: set[str] = set()
    stack = list(reversed(roots))
    while stack:
        i, value = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        out.append(value)
        stack += reversed(children.get(i, []))
    return out


# -- Jaeger ------------------------------------------------------------------------------------


def jaeger_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans of a Jaeger query API answer (``GET /api/traces/{id}``: ``{"data": [{"traceID",
    "spans": [{"spanID", "operationName", "references": [{"refType": "CHILD_OF", "spanID"}],
    "startTime": µs, "duration": µs, "tags": [{"key", "value"}], "processID"}], "processes":
    {id: {"serviceName"}}}]}``) as timeline rows, a parent before its children. ``ValueError``
    when the answer is not shaped so."""
    try:
        traces = doc["data"]
        spans = [(t, s) for t in traces for s in t["spans"]]
        rows = []
        for trace, span in spans:
            parent = next(
                (r["spanID"] for r in span.get("references") or [] if r["refType"] == "CHILD_OF"),
                "",
            )
            tags = {t["key"]: t.get("value") for t in span.get("tags") or []}
            error = tags.get("error") in (True, "true") or tags.get("otel.status_code") == "ERROR"
            service = (trace.get("processes") or {}).get(span.get("processID"), {})
            start = float(span["startTime"]) / 1e6
            rows.append(
                {
                    "id": span["spanID"],
                    "parent": parent,
                    "name": span["operationName"],
                    "service": service.get("serviceName", ""),
                    "state": "ERROR" if error else "OK",
                    "queued": start,
                    "start": start,
                    "end": start + float(span["duration"]) / 1e6,
                }
            )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a Jaeger trace answer ({type(e).__name__}: {e})") from None
    rows.sort(key=lambda r: r["start"])
    ordered = _tree_order((r["id"], r["parent"], r) for r in rows)
    depth: dict[str, int] = {}
    for r in ordered:
        r["depth"] = depth[r["id"]] = depth.get(r["parent"], -1) + 1
    return list(ordered)


def read_jaeger(url: str, trace_id: str) -> list[dict[str, Any]]:
    """The spans of ``trace_id`` from the Jaeger query service at ``url``; ``OSError`` or
    ``ValueError`` saying what went wrong."""
    where = f"{url.rstrip('/')}/api/traces/{urllib.parse.quote(trace_id)}"
    with urllib.request.urlopen(where, timeout=HTTP_TIMEOUT_S) as reply:
        doc = json.load(reply)
    rows = jaeger_rows(doc)
    if not rows:
        raise ValueError(f"{where} has no spans for this trace")
    return rows


# -- the source and the screen -----------------------------------------------------------------


@dataclass
class _Shared:
    latest: Timeline | None = None


@dataclass
class TraceSource:
    """The timeline of ``task_id``, read again every ``refresh`` seconds until every task ended
    (spans from ``traces_url`` once)."""

    address: str
    task_id: str
    traces_url: str = ""
    refresh: float = 1.0
    _shared: _Shared = field(default_factory=_Shared)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> TraceSource:
        threading.Thread(target=self._run, daemon=True, name="top-traces").start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def take(self) -> Timeline | None:
        """The timeline read since the last call (None: nothing new)."""
        with self._lock:
            latest, self._shared.latest = self._shared.latest, None
            return latest

    def _put(self, timeline: Timeline) -> None:
        timeline.read_at = timeline.read_at or time.time()
        with self._lock:
            self._shared.latest = timeline

    def _run(self) -> None:
        try:
            self._read_until_final()
        except Exception as e:  # a bug: the screen says so, its traceback goes to the hook
            self._put(Timeline([], "", error=f"{type(e).__name__}: {e}", final=True))
            raise

    def _read_until_final(self) -> None:
        while not self._stop.is_set():
            timeline = self.read()
            self._put(timeline)
            if timeline.final:
                return
            self._stop.wait(max(self.refresh, 1.0))

    def read(self) -> Timeline:
        """One reading (blocking: the source's thread)."""
        try:
            tree = read_transitions(self.address, self.task_id)
        except ConnectionError as e:
            return Timeline([], "state transitions", error=f"{e} (asking again)")
        except (LookupError, PermissionError, access.UsageError, FilterError, ValueError) as e:
            return Timeline([], "state transitions", error=str(e), final=True)
        if not self.traces_url:
            note = "no trace backend (freight top --traces URL shows the spans)"
        elif not tree.root.get("trace_id"):
            note = "the task has no trace id (tracing was off where it ran)"
        else:
            try:
                spans = read_jaeger(self.traces_url, tree.root["trace_id"])
            except (OSError, ValueError) as e:
                note = f"{self.traces_url} gave no spans ({e})"
            else:
                return Timeline(spans, f"jaeger {self.traces_url}", final=tree.final)
        note = "; ".join(n for n in (note, tree.cut) if n)
        return Timeline(tree.rows, "state transitions", note=note, final=tree.final)


def bar(row: dict[str, Any], t0: float, t1: float, width: int = BAR_WIDTH) -> Text:
    """The row's bar over ``[t0, t1]``: waiting ``░``, running ``█``."""
    span = max(t1 - t0, 1e-9)

    def col(t: float) -> int:
        return min(width, max(0, round((t - t0) / span * width)))

    queued = row.get("queued") or row.get("start") or t1
    start = row.get("start") or t1
    end = row.get("end") or t1
    a, b, c = col(queued), col(start), col(end)
    c = max(c, b + 1) if row.get("start") else c  # a run shorter than a cell still shows
    style = STATE_STYLE.get(row["state"], "cyan")
    text = Text(" " * a)
    text.append("░" * (b - a), style="dim")
    text.append("█" * (min(c, width) - b), style=style)
    return text


class TracesScreen(SourceScreen):
    """``:traces TASK_ID`` or ``t`` on a task row: the task and its children over time."""

    BINDINGS: ClassVar[list[Any]] = BACK_AND_QUIT
    STATUS_ID = "traces-status"

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.timeline: Timeline | None = None
        self.source: TraceSource | None = None

    def first_status(self) -> str:
        return f"trace of task {self.task_id}: reading..."

    def body(self) -> Iterable[Widget]:
        yield DataTable(id="traces-table", classes="body", cursor_type="row", zebra_stripes=True)

    def open_source(self) -> None:
        app: Any = self.app
        address, task_id = app.address, self.task_id
        url, refresh = getattr(app, "traces_url", ""), app.refresh_s
        self.source = app.source(
            f"traces task_id={task_id}", lambda: TraceSource(address, task_id, url, refresh)
        )

    def ready(self) -> None:
        table = self.query_one(DataTable)
        for name in ("task", "state", "start", "duration", "timeline"):
            table.add_column(name, key=name)
        table.focus()

    def tick(self) -> None:
        if self.source is None:
            return
        timeline = self.source.take()
        if timeline is None:
            return
        if timeline.rows or self.timeline is None:  # a failed re-read keeps the rows shown
            self.show(timeline)
        self.render_status(timeline)
        if timeline.final:
            self.ticker.stop()

    def show(self, timeline: Timeline) -> None:
        """The rows as a table (a trace is small: it is drawn again whole)."""
        self.timeline = timeline
        table = self.query_one(DataTable)
        table.clear()
        rows = timeline.rows
        if not rows:
            return
        t0 = min(r.get("queued") or r.get("start") or timeline.read_at for r in rows)
        t1 = max(max(r.get("end") or timeline.read_at for r in rows), t0)
        for i, r in enumerate(rows):
            begin = r.get("start") or 0.0
            end = r.get("end") or 0.0
            duration = f"{end - begin:.3f}s" if begin and end else ("-" if not begin else "...")
            table.add_row(
                Text("  " * r["depth"] + r["name"]),
                Text(r["state"], style=STATE_STYLE.get(r["state"], "")),
                f"+{begin - t0:.3f}s" if begin else "-",
                duration,
                bar(r, t0, t1),
                key=f"{r['id']}:{i}",
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a task's row: its detail (transitions, error, log lines); spans have none."""
        event.stop()
        timeline, key = self.timeline, event.row_key.value
        if timeline is None or key is None or timeline.origin != "state transitions":
            return
        from .app import DetailScreen  # the app imports this module

        app: Any = self.app
        self.app.push_screen(DetailScreen(app.address, "tasks", key.rsplit(":", 1)[0], None))

    def status_text(self, timeline: Timeline) -> str:
        parts = [f"trace of task {self.task_id}"]
        shown = self.timeline.rows if self.timeline else []
        if timeline.origin:
            parts.append(f"{len(shown)} rows from the {timeline.origin}")
        if timeline.note:
            parts.append(timeline.note)
        if timeline.error:
            parts.append(timeline.error)
        if not timeline.final and not timeline.error:
            parts.append("live")
        return "  |  ".join(parts)

    def render_status(self, timeline: Timeline) -> None:
        self.status.update(Content(self.status_text(timeline)))
