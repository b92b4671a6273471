"""A listing's watch cursor (``list_state(..., follow=True).watch_cursor``) against a real
cluster: a watch from it gets exactly the changes made after the listing, none missed and none
the listing already had, also for a kind nobody watched before the listing; kinds that cannot be
watched get no cursor."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import freight
from freight import state
from freight.state import ADDED, DELETED, MODIFIED
from freight.testing import Cluster, connected_cluster, wait_for_condition


@freight.remote
def cursor_step(i: int) -> int:
    return i


@freight.remote
class CursorActor:
    def ping(self) -> int:
        return 1


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    env = {
        "FREIGHT_TASK_ROWS_SAMPLE": "0",  # every task gets its record, so every one is watched
        "FREIGHT_HEALTH_CHECK_PERIOD_S": "0.3",
        "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "2",
    }
    with connected_cluster({"num_cpus": 2}, env=env) as c:
        yield c


def by_id(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in rows}


def follow_until(
    kind: str, cursor: str, held: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]
) -> list[state.WatchEvent]:
    """Apply the changes after ``cursor`` to ``held`` until it equals ``want``; the events."""
    key = f"{kind[:-1]}_id"
    events: list[state.WatchEvent] = []
    for ev in state.watch(kind, cursor=cursor, timeout=30):
        assert ev.type in (ADDED, MODIFIED, DELETED), ev  # never RESYNC: the cursor is held
        assert ev.row is not None
        events.append(ev)
        if ev.type == DELETED:
            held.pop(ev.row[key], None)
        else:
            held[ev.row[key]] = ev.row
        if held == want:
            return events
    raise AssertionError(f"the watch from the listing never caught up: {len(events)} events")


def test_a_listing_cursor_resumes_with_exactly_the_changes_after_it(cluster: Cluster) -> None:
    # Tasks were never watched on this cluster: the listing itself starts their change log.
    assert freight.get([cursor_step.remote(i) for i in range(20)]) == list(range(20))
    submitted = threading.Event()

    def more() -> None:  # tasks made and finished while the listing is taken
        for i in range(30):
            freight.get(cursor_step.remote(100 + i))
            if i == 5:
                submitted.set()

    worker = threading.Thread(target=more)
    worker.start()
    assert submitted.wait(30)
    listed = state.list_state("tasks", limit=10_000, follow=True)
    worker.join()
    assert listed.watch_cursor, "a watchable kind listed with follow gets a cursor"
    assert listed.watch_cursor.startswith("w1.tasks.")

    def all_finished() -> state.StateList | None:
        rows = state.list_state("tasks", limit=10_000)
        return rows if len(rows) == 50 and all(r["state"] == "FINISHED" for r in rows) else None

    final = wait_for_condition(all_finished, 30, "the 50 tasks recorded FINISHED")
    held = by_id(list(listed), "task_id")
    events = follow_until("tasks", listed.watch_cursor, dict(held), by_id(list(final), "task_id"))
    added = [ev.row["task_id"] for ev in events if ev.type == ADDED and ev.row]
    # No duplicate: no row the listing had comes as new, and none comes twice.
    assert not set(added) & set(held)
    assert len(added) == len(set(added))
    # No gap: every task made after the listing came (the final state matched above).
    assert set(added) == {r["task_id"] for r in final} - set(held)
    cursors = [ev.cursor for ev in events]
    assert len(cursors) == len(set(cursors))


def test_a_cursor_for_actors_and_none_for_objects(cluster: Cluster) -> None:
    before = CursorActor.remote()
    assert freight.get(before.ping.remote()) == 1
    listed = state.list_state("actors", limit=10_000, follow=True)
    assert listed.watch_cursor.startswith("w1.actors.")
    after = CursorActor.remote()
    assert freight.get(after.ping.remote()) == 1
    final = state.list_state("actors", limit=10_000)
    held = by_id(list(listed), "actor_id")
    events = follow_until("actors", listed.watch_cursor, dict(held), by_id(list(final), "actor_id"))
    assert [ev.row["actor_id"] for ev in events if ev.type == ADDED and ev.row] == [
        after._actor_id.hex()
    ]
    # Without follow no cursor is handed out (nor the change log started); objects cannot be
    # watched at all.
    assert state.list_state("actors").watch_cursor == ""
    assert state.list_state("objects", follow=True).watch_cursor == ""


def test_a_quiet_stream_gives_the_heads_bookmark_when_asked(cluster: Cluster) -> None:
    listed = state.list_state("placement_groups", follow=True)  # none made: a quiet kind
    events = state.watch("placement_groups", cursor=listed.watch_cursor, bookmarks=True, timeout=30)
    first = next(events)
    events.close()
    assert first.type == state.BOOKMARK and first.row is None
    assert first.cursor.startswith("w1.placement_groups.")
