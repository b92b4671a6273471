"""The inspector's views as pictures: the committed recording replayed at a fixed time, one shot
per view. The snapshot tests (``test_snapshots.py``) and ``scripts/inspector_screenshots.py``
(the SVGs of ``docs/inspector/``) take the same shots. A new view is one more :data:`SHOTS` entry
(and, if it reads a new source, its payloads in ``make_recording.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from freight.tui.app import TopApp, View
from freight.tui.replay import ReplayApp, load

RECORDING = Path(__file__).parent / "recordings" / "session.jsonl"
T0 = 1767268800.0  # the recording's start (make_recording.T0)
AT = T0 + 60  # the replay's clock in every shot: after the failed task's detail was read
SIZE = (150, 36)
TASK_RUN = "ae54f3760ac0992c0000000000000004"  # make_recording.TASK_RUN: running, with children
TASK_FAILED = "ae54f3760ac0992c0000000000000005"  # make_recording.TASK_FAILED


@dataclass(frozen=True)
class Shot:
    view: str  # the kind the replay opens
    keys: tuple[str, ...] = ()  # pressed once its rows are shown
    row: str = ""  # the row (id) the cursor is moved to before the keys


SHOTS: dict[str, Shot] = {
    "tasks": Shot("tasks"),
    "actors": Shot("actors"),
    "nodes": Shot("nodes"),
    "jobs": Shot("jobs"),
    "objects": Shot("objects"),
    "workers": Shot("workers"),
    "placement-groups": Shot("placement_groups"),
    "events": Shot("events"),
    "task-detail": Shot("tasks", ("enter",), row=TASK_FAILED),
    "help": Shot("tasks", ("question_mark",)),
    "overview": Shot("overview"),
    "logs": Shot("tasks", ("l",), row=TASK_FAILED),
    "trace": Shot("tasks", ("t",), row=TASK_RUN),
}


@contextmanager
def utc() -> Iterator[None]:
    """Times drawn in UTC, whatever the host's timezone."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


def app(shot: Shot) -> ReplayApp:
    """The replay standing still at :data:`AT`."""
    return ReplayApp(load(RECORDING), at=AT, playing=False, view=View(shot.view), refresh=0.5)


async def prepare(pilot: Pilot[None], shot: Shot) -> None:
    """Wait for the view's rows, then move to the shot's row and press its keys."""
    top = pilot.app
    assert isinstance(top, TopApp)
    deadline = time.monotonic() + 30
    while not (top.last is not None and top.last.synced and top.table.row_count):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the replay never showed the {shot.view} rows")
        await pilot.pause(0.02)
    if shot.row:
        top.table.move_cursor(row=top.table.get_row_index(shot.row))
    for key in shot.keys:
        await pilot.press(key)
    await pilot.pause()
    screen = top.screen
    while not shown(screen):  # the screen's recorded data, all of it drawn
        if time.monotonic() > deadline:
            raise TimeoutError(f"{type(screen).__name__} never showed what was recorded")
        await pilot.pause(0.02)
    await pilot.pause()


def shown(screen: Any) -> bool:
    """Whether ``screen`` shows all it will: a detail its record and log lines, the logs view
    its lines written, a trace its timeline, the overview its figures."""
    from freight.tui.logs import DetailLogs

    if hasattr(screen, "lookup") and not (screen.detailed or screen.error):
        return False
    if not all(logs.done for logs in screen.query(DetailLogs)):
        return False
    if hasattr(screen, "backlog"):  # the logs view
        last = screen.last
        return bool(last and last.caught_up and not screen.backlog and not screen.rewrite)
    if hasattr(screen, "timeline"):  # a trace
        return screen.timeline is not None
    if hasattr(screen, "last") and hasattr(screen.last, "nodes_listed"):  # the overview
        return bool(screen.last.nodes_listed)
    return True
