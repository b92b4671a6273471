"""Jumps from the selected row to its related rows: a task's node, worker, job, actor and owner;
an actor's node, worker, tasks and restarts; an object's node, owner and holders...

A jump is a view and its filters, made from the row's fields: it opens as any view does (the
head filters; esc comes back). Each view's jump keys are shown in the footer while it is open.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textual.binding import Binding

from .actions import Screenful

Row = dict[str, Any]
Target = tuple[str, tuple[str, ...]]  # a view: kind, filters

_PROCESS = re.compile(r"^(driver|worker) pid=(\d+)$")


@dataclass(frozen=True)
class Jump:
    """``key`` on a row of ``kind`` opens ``to(row)``; None: the row has no such relation (then
    ``missing`` says why)."""

    kind: str
    key: str
    name: str
    to: Callable[[Row], Target | None]
    missing: str


def _by(field: str, kind: str, key: str | None = None) -> Callable[[Row], Target | None]:
    """The rows of ``kind`` whose ``key`` (default: ``field``) is the row's ``field``."""

    def to(row: Row) -> Target | None:
        value = row.get(field)
        return (kind, (f"{key or field}={value}",)) if value else None

    return to


def process_view(process: str) -> Target | None:
    """A holder as `freight memory` names it (``driver pid=12``): its job, or its worker."""
    found = _PROCESS.match(process or "")
    if found is None:
        return None
    who, pid = found.groups()
    return ("jobs", (f"driver_pid={pid}",)) if who == "driver" else ("workers", (f"pid={pid}",))


def task_owner(row: Row) -> Target | None:
    """The task that submitted it; a task the driver submitted: the driver's job."""
    if row.get("parent_task_id"):
        return ("tasks", (f"task_id={row['parent_task_id']}",))
    return _by("job_id", "jobs")(row)


def object_owner(row: Row) -> Target | None:
    if row.get("owner_process"):
        return process_view(row["owner_process"])
    if "/worker-" in str(row.get("owner_address") or ""):
        return ("workers", (f"address={row['owner_address']}",))
    return None


def object_holder(row: Row) -> Target | None:
    """The first process holding it other than its owner (its owner when none other does)."""
    holders = list(row.get("holder_processes") or [])
    others = [h for h in holders if h != row.get("owner_process")]
    return process_view((others or holders or [""])[0])


JUMPS: tuple[Jump, ...] = (
    Jump("tasks", "n", "node", _by("node_id", "nodes"), "the task has not been placed on a node"),
    Jump("tasks", "w", "worker", _by("worker_id", "workers"), "the task has no worker yet"),
    Jump("tasks", "j", "job", _by("job_id", "jobs"), "the task has no job"),
    Jump("tasks", "a", "actor", _by("actor_id", "actors"), "not an actor task"),
    Jump("tasks", "o", "owner", task_owner, "its owner is not known"),
    Jump("actors", "n", "node", _by("node_id", "nodes"), "the actor has no node (pending?)"),
    Jump("actors", "w", "worker", _by("worker_id", "workers"), "the actor has no worker"),
    Jump("actors", "j", "job", _by("job_id", "jobs"), "the actor has no job"),
    Jump("actors", "t", "tasks", _by("actor_id", "tasks"), ""),
    Jump("actors", "e", "restarts", _by("actor_id", "events"), ""),
    Jump("workers", "n", "node", _by("node_id", "nodes"), "the worker has no node"),
    Jump("workers", "a", "actor", _by("actor_id", "actors"), "the worker runs no actor"),
    Jump("objects", "n", "node", _by("node_id", "nodes"), "the object is in no node's store"),
    Jump("objects", "o", "owner", object_owner, "its owner is not known (yet)"),
    Jump("objects", "h", "holders", object_holder, "no process holds it (as last asked)"),
    Jump("nodes", "w", "workers", _by("node_id", "workers"), ""),
    Jump("nodes", "t", "tasks", _by("node_id", "tasks"), ""),
    Jump("nodes", "a", "actors", _by("node_id", "actors"), ""),
    Jump("jobs", "t", "tasks", _by("job_id", "tasks"), ""),
    Jump("jobs", "a", "actors", _by("job_id", "actors"), ""),
)


def find(kind: str, key: str) -> Jump | None:
    return next((j for j in JUMPS if j.kind == kind and j.key == key), None)


def help_lines() -> str:
    kinds: dict[str, list[str]] = {}
    for j in JUMPS:
        kinds.setdefault(j.kind, []).append(f"{j.key} {j.name}")
    return "\n".join(f"  {k:<8} {', '.join(keys)}" for k, keys in kinds.items())


BINDINGS = [
    Binding(j.key, f"jump('{j.key}', '{j.name}')", j.name)
    for j in {(j.key, j.name): j for j in JUMPS}.values()
]


class Jumping(Screenful):
    """The jump keys, mixed into :class:`freight.tui.app.TopApp`."""

    def action_jump(self, key: str, name: str) -> None:
        from .app import View

        jump = find(self.view.kind, key)
        row_key = self.cursor_key()
        if jump is None or row_key is None:
            return
        target = jump.to(self.rows.get(row_key) or {})
        if target is None:
            self.notify(f"no {jump.name} to go to: {jump.missing}", timeout=5)
            return
        self.come_back = (self.view, row_key)  # esc returns to this row
        self.open_view(View(*target))
