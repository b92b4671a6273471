"""The inspector's feed follows the watch stream after listing its window (a real cluster): with
a refresh far longer than the deadlines here, a new task, its state changes and the counts still
show, so they came from the stream; a RESYNC (a change log of 16 changes, a burst of tasks)
lists again and ends with the right rows; "showing N of M" follows adds on screen; a frozen
head shows as stale, then the rows follow again once it runs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pilot import app_for, run, until
from textual.pilot import Pilot

import freight
from freight import state
from freight.testing import Cluster, connected_cluster, wait_for_condition
from freight.tui.app import TopApp, View
from freight.tui.feed import Batch, Feed

BUFFER = 16  # FREIGHT_WATCH_BUFFER: a burst of tasks overflows it
LONG = 60.0  # a refresh no deadline here waits for
SOON = 10.0  # the deadline for what the stream brings


@freight.remote
def feed_watch_wait(path: str) -> str:
    deadline = time.monotonic() + 60
    while not os.path.exists(path):  # held running until the test creates the file
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)  # the task's own wait; the deadline bounds it
    return path


@freight.remote
def feed_watch_step(i: int) -> int:
    return i


@freight.remote
def feed_watch_burst(i: int) -> int:
    return i


@freight.remote
def feed_watch_count(i: int) -> int:
    return i


@freight.remote
def feed_watch_shown(i: int) -> int:
    return i


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    env = {
        "FREIGHT_TASK_ROWS_SAMPLE": "0",  # every task gets its record
        "FREIGHT_WATCH_BUFFER": str(BUFFER),
    }
    with connected_cluster({"num_cpus": 2}, env=env) as c:
        yield c


class Screen:
    """What a screen would hold of a feed: its rows by id and its last batch."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.rows: dict[str, dict[str, Any]] = {}
        self.last: Batch | None = None

    def take(self) -> Batch:
        batch = self.feed.take()
        assert not batch.error, batch.error
        for key, row in batch.changes.items():
            if row is None:
                self.rows.pop(key, None)
            else:
                self.rows[key] = row
        self.last = batch
        return batch

    def wait(self, predicate: Any, what: str, timeout: float = SOON) -> Any:
        return wait_for_condition(lambda: (self.take(), predicate())[1], timeout, what)

    def states(self) -> dict[str, str]:
        return {key: str(row["state"]) for key, row in self.rows.items()}

    def state_of(self, name: str) -> str:
        """The state of the one task called ``name`` ("" while there is none)."""
        found = [str(r["state"]) for r in self.rows.values() if r["name"] == name]
        assert len(found) <= 1, found
        return found[0] if found else ""


def feed(cluster: Cluster, filters: list[str], *, refresh: float, limit: int = 1000) -> Feed:
    return Feed(
        "tasks", filters, address=cluster.address, id_key="task_id", refresh=refresh, limit=limit
    ).start()


def test_a_new_task_and_its_state_changes_come_from_the_stream(
    cluster: Cluster, tmp_path: Path
) -> None:
    f = feed(cluster, ["name~^feed_watch_(wait|step)$"], refresh=LONG)
    screen = Screen(f)
    try:
        screen.wait(lambda: screen.last and screen.last.synced, "the first listing", 30)
        assert screen.rows == {}
        gate = tmp_path / "gate"
        held = feed_watch_wait.remote(str(gate))
        name = "feed_watch_wait"
        screen.wait(lambda: screen.state_of(name) == "SUBMITTED_TO_WORKER", "the new task")
        gate.touch()
        assert freight.get(held) == str(gate)
        screen.wait(lambda: screen.state_of(name) == "FINISHED", "its change to FINISHED")
        assert freight.get(feed_watch_step.remote(7)) == 7
        screen.wait(lambda: len(screen.rows) == 2, "a second new task")
        screen.wait(lambda: screen.last and screen.last.matched == 2, "the count of 2")
    finally:
        f.stop()


def test_counts_follow_adds_beyond_a_full_window(cluster: Cluster) -> None:
    f = feed(cluster, ["name=feed_watch_count"], refresh=LONG, limit=3)
    screen = Screen(f)
    try:
        screen.wait(lambda: screen.last and screen.last.synced, "the first listing", 30)
        assert freight.get([feed_watch_count.remote(i) for i in range(2)]) == [0, 1]
        screen.wait(lambda: len(screen.rows) == 2, "two rows in the window")
        assert freight.get([feed_watch_count.remote(i) for i in range(3)]) == [0, 1, 2]
        screen.wait(lambda: screen.last and screen.last.matched == 5, "5 counted")
        assert len(screen.rows) == 3  # the window holds its 3 rows; the rest are counted
    finally:
        f.stop()


def test_a_resync_lists_again_and_ends_with_the_right_rows(cluster: Cluster) -> None:
    f = feed(cluster, ["name=feed_watch_burst"], refresh=0.1)
    screen = Screen(f)
    try:
        screen.wait(lambda: screen.last and screen.last.synced, "the first listing", 30)
        # One report of finished tasks holds more changes than the head keeps (BUFFER): the
        # stream cannot go on from where it was.
        assert freight.get([feed_watch_burst.remote(i) for i in range(200)]) == list(range(200))

        def finished() -> bool:
            states = screen.states()
            return len(states) == 200 and set(states.values()) == {"FINISHED"}

        screen.wait(finished, "the 200 tasks FINISHED", 60)
        assert f.resyncs >= 1
        listed = state.list_state("tasks", ["name=feed_watch_burst"], limit=1000)
        assert screen.rows == {r["task_id"]: r for r in listed}
        assert screen.last is not None and screen.last.matched == 200
    finally:
        f.stop()


def test_the_view_says_showing_n_of_m_as_tasks_are_added(cluster: Cluster) -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: app.last is not None and app.last.synced, "the listing")
        assert app.counts().startswith("0 rows")
        refs = [feed_watch_shown.remote(100 + i) for i in range(3)]
        await until(pilot, lambda: len(app.shown) == 3, "3 rows")
        assert freight.get(refs) == [100, 101, 102]
        more = [feed_watch_shown.remote(200 + i) for i in range(4)]
        await until(pilot, lambda: app.counts().startswith("showing 4 of 7"), "showing 4 of 7")
        assert freight.get(more) == [200, 201, 202, 203]

    view = View("tasks", ("name=feed_watch_shown",))
    run(app_for(cluster, view, max_rows=4), body)


def head_process(cluster: Cluster) -> psutil.Process:
    """The cluster's head (``python -m freight.head``), a child of this process."""
    for p in psutil.Process().children(recursive=True):
        cmd = p.cmdline()
        if "freight.head" in cmd and any(cluster.session_dir in a for a in cmd):
            return p
    raise AssertionError("no head process among this test's children")


def test_a_frozen_head_shows_as_stale_then_the_rows_follow_again(cluster: Cluster) -> None:
    f = feed(cluster, ["name=feed_watch_step"], refresh=0.5)
    screen = Screen(f)
    head = head_process(cluster)
    try:
        screen.wait(lambda: screen.last and screen.last.synced, "the first listing", 30)
        known = len(screen.rows)
        head.send_signal(signal.SIGSTOP)
        try:
            screen.wait(lambda: screen.last and screen.last.stale_since, "the stale marker", 30)
            assert screen.last is not None and screen.last.stale_reason
            assert len(screen.rows) == known  # the rows stay, as last seen
        finally:
            head.send_signal(signal.SIGCONT)
        screen.wait(lambda: screen.last and not screen.last.stale_since, "the marker cleared", 30)
        assert freight.get(feed_watch_step.remote(9)) == 9
        screen.wait(lambda: len(screen.rows) == known + 1, "a new task after the thaw", 30)
    finally:
        f.stop()


# -- where a change of the stream goes (no cluster: the feed's rules on a listing it holds) -----


def held(rows: int, *, matched: int, next_cursor: str = "", filters: tuple[str, ...] = ()) -> Feed:
    """A feed (not started) holding a listing of ``rows`` tasks t0, t1... of ``matched``: the
    first page when there is a ``next_cursor``, else the last."""
    f = Feed("tasks", list(filters), address="", id_key="task_id", refresh=LONG, limit=3)
    listed = [{"task_id": f"t{i}", "state": "RUNNING"} for i in range(rows)]
    f._replace(
        state.StateList(
            listed,
            kind="tasks",
            total=matched,
            matched=matched,
            remaining=matched - rows if next_cursor else 0,  # no next page: rows are the last
            next_cursor=next_cursor,
            watch_cursor="w1.tasks.e.1",
        )
    )
    f.take()
    return f


def event(kind: str, task_id: str, st: str = "FINISHED") -> state.WatchEvent:
    return state.WatchEvent(kind, {"task_id": task_id, "state": st}, "w1.tasks.e.2")


def test_a_change_in_the_window_is_applied_by_key_and_others_only_counted() -> None:
    f = held(2, matched=2)
    with f._lock:
        assert not f._apply(event(state.MODIFIED, "t1"))
        assert not f._apply(event(state.ADDED, "t9", "PENDING"))  # the last page has room
        assert f._apply(event(state.ADDED, "t10", "PENDING"))  # full: list for the next page
        assert not f._apply(event(state.MODIFIED, "t10"))  # not held: stays counted
        assert not f._apply(event(state.DELETED, "t0"))  # the last page: nothing moves in
    b = f.take()
    assert b.changes == {
        "t1": {"task_id": "t1", "state": "FINISHED"},
        "t9": {"task_id": "t9", "state": "PENDING"},
        "t0": None,
    }
    assert (b.matched, b.total) == (3, 3)


def test_a_page_with_more_after_it_lists_again_when_a_row_leaves() -> None:
    f = held(3, matched=10, next_cursor="c3")
    with f._lock:
        assert not f._apply(event(state.ADDED, "t20", "PENDING"))  # counted for a later page
        assert f._apply(event(state.DELETED, "t2"))  # the next page's first row moves in
        assert not f._apply(event(state.DELETED, "t15"))  # another page's: uncounted
    b = f.take()
    assert b.changes == {"t2": None}
    assert b.matched == 9


def test_a_window_sorted_at_the_head_lists_again_on_any_change() -> None:
    f = held(2, matched=2)
    f.sort_by = "state"
    with f._lock:
        assert f._apply(event(state.ADDED, "t9"))
        assert f._apply(event(state.MODIFIED, "t1"))  # updated, and maybe moved
    assert f.take().changes == {"t1": {"task_id": "t1", "state": "FINISHED"}}


def test_a_row_that_starts_matching_on_a_later_page_lists_again() -> None:
    f = held(1, matched=4, filters=("state=FINISHED",))  # the last page, rows 4 to 4
    assert f.take().first == 4
    with f._lock:
        assert f._apply(event(state.ADDED, "t9"))  # it may belong to an earlier page
    b = f.take()
    assert b.changes == {}
    assert (b.matched, b.total) == (5, 4)  # a filtered add: the kind's total is unknown
