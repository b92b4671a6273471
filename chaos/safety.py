"""The harness's brakes: the halt marker (`freight chaos halt`) that makes every new injection
refuse and every fault in flight end early, and :func:`hold`, the one wait a fault holds its
effect with, which returns early on a halt or when the run aborts (a breached stop condition).

The marker is ``halt.json`` in the fault journal's folder: the default journal's folder
(``$FREIGHT_TEMP_DIR/chaos``) halts every journal on this machine, another folder halts the
journals kept there. It records who halted (user, host, pid), when and why, and stays until
`freight chaos halt --clear`. This module depends on nothing else of freight.chaos but the
refusal type, so the journal can check the marker under its own lock.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from freight import state
from freight.client import access
from freight.config import settings
from freight.core.nodes import ALIVE
from freight.util.private_files import check_owned, make_private_dir, write_private_file
from freight.util.process import identity

from .targets import LIMIT, FaultRefused

MARKER = "halt.json"
POLL_S = 0.1  # how often a held fault looks at the marker: a halt ends it within this
EXAMPLES = 5  # ids a dry run's blast radius names of each kind it counts
ALIVE_ROW = ("state", "=", ALIVE)


class Halted(FaultRefused):
    """An injection refused because the harness is halted: nothing was done."""


@dataclass(frozen=True)
class Halt:
    """Who halted the harness, when and why, as the marker records it."""

    reason: str
    user: str = field(default_factory=getpass.getuser)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    time: float = field(default_factory=time.time)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.time))
        why = f" ({self.reason})" if self.reason else ""
        return f"halted by {self.user} on {self.host} (pid {self.pid}) at {when}{why}"


def chaos_dir() -> str:
    """The folder of the default fault journal and of the machine-wide halt marker."""
    return os.path.join(settings.temp_dir, "chaos")


def marker_path(journal_path: str) -> str:
    """The halt marker that `freight chaos halt` writes for the journal at ``journal_path``."""
    return os.path.join(os.path.dirname(os.path.abspath(journal_path)), MARKER)


def _markers(journal_path: str) -> Iterator[str]:
    own = marker_path(journal_path)
    yield own
    machine = os.path.join(chaos_dir(), MARKER)
    if os.path.abspath(machine) != own:
        yield machine


def read_marker(path: str) -> Halt | None:
    """The halt the marker at ``path`` records, None when there is none. A marker that cannot
    be read still halts (a broken brake must not release faults): it reads as a halt saying
    what is wrong with it."""
    try:
        check_owned(path, "the chaos halt marker")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return Halt(
            reason=str(data.get("reason", "")),
            user=str(data.get("user", "?")),
            host=str(data.get("host", "?")),
            pid=int(data.get("pid") or 0),
            time=float(data.get("time") or 0.0),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError) as e:
        return Halt(reason=f"the marker {path} is unreadable ({e}); remove it to clear", pid=0)


def halted(journal_path: str) -> Halt | None:
    """The halt in force for the journal at ``journal_path`` (its folder's marker, or the
    machine-wide one), None when faults may run."""
    for path in _markers(journal_path):
        found = read_marker(path)
        if found is not None:
            return found
    return None


def refuse_if_halted(journal_path: str) -> None:
    """Raise :class:`Halted` when a halt is in force for ``journal_path``."""
    found = halted(journal_path)
    if found is not None:
        raise Halted(
            f"the chaos harness is {found.describe()}: no fault runs until it is cleared with "
            f"{clear_command(journal_path)}"
        )


def refuse_if_aborted() -> None:
    """Raise :class:`Halted` when this process's run was aborted by a stop condition: what is
    left of the run injects nothing more."""
    why = aborted()
    if why is not None:
        raise Halted(f"the run was aborted ({why}): it injects no more faults")


def clear_command(journal_path: str) -> str:
    """The command that lifts the halt in force for ``journal_path``, with its marker."""
    for path in _markers(journal_path):
        if read_marker(path) is not None:
            where = "" if path == os.path.join(chaos_dir(), MARKER) else f" {journal_path}"
            return f"`freight chaos halt --clear{where}` (marker {path})"
    return "`freight chaos halt --clear`"


def write_marker(journal_path: str, halt: Halt) -> str:
    """Write ``halt`` as the marker of ``journal_path``'s folder; its path."""
    path = marker_path(journal_path)
    make_private_dir(os.path.dirname(path), "the chaos journal's folder")
    write_private_file(path, json.dumps(asdict(halt), indent=1) + "\n")
    return path


def clear_marker(journal_path: str) -> Halt | None:
    """Remove the marker of ``journal_path``'s folder; the halt it held, None if none."""
    path = marker_path(journal_path)
    found = read_marker(path)
    if found is not None:
        os.unlink(path)
    return found


# A breached stop condition aborts this process's run: faults held here end at once.
_abort = threading.Event()
_abort_reason: list[str] = []


def abort(reason: str) -> None:
    """End every fault this process holds now (their waits return), and say why."""
    _abort_reason[:] = [reason]
    _abort.set()


def aborted() -> str | None:
    """Why this process's run was aborted, None while it was not."""
    return _abort_reason[0] if _abort.is_set() and _abort_reason else None


def reset_abort() -> None:
    """A new run starts: a past abort no longer ends its faults."""
    _abort.clear()
    _abort_reason.clear()


def hold(duration: float, journal_path: str) -> str:
    """Wait ``duration`` seconds while a fault holds its effect, returning early when the
    harness is halted or the run aborted. Returns why it returned: ``"expired"``,
    ``"halted: ..."`` or ``"aborted: ..."``, for the fault's ``end`` record."""
    deadline = time.monotonic() + duration
    while True:
        found = halted(journal_path)
        if found is not None:
            return f"halted: {found.describe()}"
        left = deadline - time.monotonic()
        if left <= 0:
            return "expired"
        if _abort.wait(min(left, POLL_S)):
            return f"aborted: {aborted() or 'the run was aborted'}"


# (harness pid, journal) pairs that have their watchdog: one each, started by the first fault.
_watched: set[tuple[int, str]] = set()
_watched_lock = threading.Lock()


def watchdog_command(journal_path: str, harness: dict[str, object]) -> list[str]:
    """The command line of the watchdog of ``harness`` (an identity) over ``journal_path``."""
    return [sys.executable, "-m", "freight.chaos.watchdog", journal_path, json.dumps(harness)]


def start_watchdog(journal_path: str) -> None:
    """Start the watchdog of this process's faults in the journal at ``journal_path``, once per
    process and journal (:mod:`freight.chaos.watchdog`): detached in a session of its own, so
    that the harness's death, its terminal's hangup or a Ctrl-C to its process group leaves it
    running. Its messages go to ``watchdog.log`` next to the journal."""
    path = os.path.abspath(journal_path)
    key = (os.getpid(), path)
    with _watched_lock:
        if key in _watched:
            return
        folder = os.path.dirname(path)
        make_private_dir(folder, "the chaos journal's folder")
        log = os.open(
            os.path.join(folder, "watchdog.log"),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
            0o600,
        )
        try:
            # Through a shell that starts it in the background and exits at once: the
            # watchdog is nobody's child here, so it never lingers as this process's zombie.
            subprocess.run(
                ["/bin/sh", "-c", '"$@" &', "sh", *watchdog_command(path, identity())],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                check=True,
            )
        finally:
            os.close(log)
        _watched.add(key)


def blast_radius(cluster: access.Target, target: dict[str, str]) -> dict[str, Any]:
    """What a fault on ``target`` (as :meth:`ProcessTarget.describe` gives it) would reach,
    from the cluster's state now: for a node, its workers, the tasks running there, its live
    actors and the objects whose primary copy is there; for a worker, the task it runs or the
    actor it hosts; for an actor, its running calls; for the head, the whole control plane
    (every node, live actor, pending and running task, running job). Counts, with the first
    few ids of each."""
    kind, tid = target.get("kind", ""), target.get("id", "")

    def rows(what: str, *filters: tuple[str, str, str]) -> list[dict[str, Any]]:
        return list(state.list_state(what, list(filters), limit=LIMIT, address=cluster))

    def count(found: list[dict[str, Any]], id_key: str) -> dict[str, Any]:
        return {"count": len(found), "ids": [str(r.get(id_key)) for r in found[:EXAMPLES]]}

    running = ("state", "=", "SUBMITTED_TO_WORKER")  # a task a worker runs
    if kind == "node":
        objects = rows("objects", ("node_id", "=", tid))
        return {
            "workers": count(rows("workers", ("node_id", "=", tid)), "worker_id"),
            "running_tasks": count(rows("tasks", running, ("node_id", "=", tid)), "task_id"),
            "actors": count(rows("actors", ALIVE_ROW, ("node_id", "=", tid)), "actor_id"),
            "objects": count(objects, "object_id"),
            "object_bytes": sum(int(o.get("size") or 0) for o in objects),
        }
    if kind == "worker":
        return {
            "running_tasks": count(rows("tasks", running, ("worker_id", "=", tid)), "task_id"),
            "actors": count(rows("actors", ALIVE_ROW, ("worker_id", "=", tid)), "actor_id"),
        }
    if kind == "actor":
        return {
            "actors": {"count": 1, "ids": [tid]},
            "running_tasks": count(rows("tasks", running, ("actor_id", "=", tid)), "task_id"),
        }
    if kind == "head":
        return {
            "nodes": count(rows("nodes", ALIVE_ROW), "node_id"),
            "actors": count(rows("actors", ALIVE_ROW), "actor_id"),
            "pending_tasks": count(rows("tasks", ("state", "~", "^PENDING")), "task_id"),
            "running_tasks": count(rows("tasks", running), "task_id"),
            "running_jobs": count(rows("jobs", ("state", "=", "RUNNING")), "job_id"),
        }
    return {}


def plan_line(plan: dict[str, Any]) -> str:
    """One line telling what a planned fault (what :func:`freight.chaos.faults.planned`
    returned) would do and reach."""
    target = f"{plan.get('target_kind', '?')} {plan.get('target_id', '?')}"
    node = plan.get("target_node_id")
    if node and node != plan.get("target_id"):
        target += f" on node {node}"
    skip = {"dry_run", "fault", "blast_radius"}
    details = ", ".join(
        f"{k}={v}" for k, v in plan.items() if k not in skip and not k.startswith("target_")
    )
    reach = []
    for what, found in (plan.get("blast_radius") or {}).items():
        if isinstance(found, dict):
            ids = ", ".join(found.get("ids") or [])
            more = "" if found.get("count", 0) <= len(found.get("ids") or []) else ", ..."
            reach.append(
                f"{found.get('count', 0)} {what.replace('_', ' ')}"
                + (f" ({ids}{more})" if ids else "")
            )
        elif what == "object_bytes" and found:
            reach.append(f"{found} bytes of objects")
    return (
        f"{plan.get('fault', '?')} on {target}"
        + (f" [{details}]" if details else "")
        + ": would reach "
        + ("; ".join(reach) or "nothing listed")
    )
