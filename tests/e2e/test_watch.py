"""Watching the cluster (``StateService.Watch``, ``freight.state.watch``) against real clusters:
the current rows then every change, filters applied to changes, resuming from a cursor, a
head restart, a slow consumer, and bad requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import freight
from freight import state
from freight.state import ADDED, DELETED, MODIFIED, RESYNC, SYNCED, WatchEvent
from freight.testing import Cluster, connected_cluster, wait_for_condition

BUFFER = 300  # FREIGHT_WATCH_BUFFER of the test cluster: small, so a slow reader overflows it


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    env = {
        "FREIGHT_WATCH_BUFFER": str(BUFFER),
        "FREIGHT_TASK_ROWS_SAMPLE": "0",  # every task gets its record, so every one is watched
        "FREIGHT_HEALTH_CHECK_PERIOD_S": "0.3",
        "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "2",
    }
    with connected_cluster({"num_cpus": 2}, env=env) as c:
        yield c


class Watcher:
    """``freight.state.watch`` iterated in a thread; the events it got, in order."""

    def __init__(self, kind: str, filters: Any = None, cursor: str | None = None) -> None:
        self.events: list[WatchEvent] = []
        self.error: BaseException | None = None
        self._it = state.watch(kind, filters, cursor=cursor)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in self._it:
                self.events.append(ev)
                if self._stop.is_set():
                    return
        except BaseException as e:  # reported by wait()
            self.error = e

    def wait(self, predicate: Callable[[list[WatchEvent]], Any], what: str) -> Any:
        def check() -> Any:
            if self.error is not None:
                raise self.error
            return predicate(list(self.events))

        return wait_for_condition(check, 60, what)

    def synced(self) -> list[dict[str, Any]]:
        """The rows of the first listing, once it is complete."""
        self.wait(lambda evs: any(e.type == SYNCED for e in evs), "the listing")
        first = next(i for i, e in enumerate(self.events) if e.type == SYNCED)
        return [e.row for e in self.events[:first] if e.row is not None]

    def after_sync(self) -> list[WatchEvent]:
        first = next(i for i, e in enumerate(self.events) if e.type == SYNCED)
        return self.events[first + 1 :]

    def stop(self) -> None:
        """Stop reading (the thread ends at the next event; its stream is then cancelled)."""
        self._stop.set()


def changes_of(w: Watcher, key: str, ids: set[str]) -> dict[str, list[tuple[str, str]]]:
    """(type, state) of every change after the listing, by id, for these ids."""
    out: dict[str, list[tuple[str, str]]] = {i: [] for i in ids}
    for e in w.after_sync():
        if e.row is not None and e.row.get(key) in ids:
            out[e.row[key]].append((e.type, e.row.get("state", "")))
    return out


@freight.remote
def square(x: int) -> str:
    """Its own task id."""
    return freight.get_runtime_context().get_task_id() or ""


@freight.remote
def wait_for_file(path: str) -> str:
    wait_for_condition(lambda: os.path.exists(path), 120, path)
    return path


@freight.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n


def _task_ids(refs: list[Any]) -> set[str]:
    return set(freight.get(refs, timeout=120))


def _listed(ids: set[str]) -> None:
    wait_for_condition(
        lambda: ids <= {t["task_id"] for t in state.list_tasks(["state=FINISHED"], limit=10_000)},
        60,
        "the head to hold the tasks' records",
    )


def test_tasks_listing_then_changes(cluster: Cluster) -> None:
    before = [square.remote(i) for i in range(5)]
    freight.get(before)
    old = _task_ids(before)
    _listed(old)
    w = Watcher("tasks")
    try:
        listed = {r["task_id"]: r for r in w.synced()}
        assert old <= set(listed), "the listing lacks tasks that finished before the watch"
        assert all(listed[t]["state"] == "FINISHED" for t in old)
        after = [square.remote(i) for i in range(5)]
        freight.get(after)
        new = _task_ids(after)
        seen = w.wait(
            lambda _: (
                (got := changes_of(w, "task_id", new))
                and all(ch and ch[-1][1] == "FINISHED" for ch in got.values())
                and got
            ),
            "every new task to finish in the stream",
        )
        for changes in seen.values():
            assert changes[0][0] == ADDED  # first seen: added, then modified
            assert all(t == MODIFIED for t, _ in changes[1:])
        assert not any(changes_of(w, "task_id", old).values()), "old tasks changed"
        # Every change carries a cursor, and cursors name later revisions as they come.
        assert all(e.cursor for e in w.after_sync())
    finally:
        w.stop()


def test_actors_nodes_and_jobs_are_watched(cluster: Cluster, tmp_path: Path) -> None:
    actors, nodes, jobs = Watcher("actors"), Watcher("nodes"), Watcher("jobs")
    try:
        for w in (actors, nodes, jobs):
            w.synced()
        counter = Counter.remote()
        assert freight.get(counter.add.remote()) == 1
        actor_id = counter._actor_id.hex()
        actors.wait(
            lambda _: ("MODIFIED", "ALIVE") in changes_of(actors, "actor_id", {actor_id})[actor_id],
            "the actor to be ALIVE in the stream",
        )
        freight.kill(counter)
        actors.wait(
            lambda _: changes_of(actors, "actor_id", {actor_id})[actor_id][-1][1] == "DEAD",
            "the actor to be DEAD in the stream",
        )
        assert changes_of(actors, "actor_id", {actor_id})[actor_id][0][0] == ADDED

        node = cluster.add_node(num_cpus=1)
        nodes.wait(
            lambda _: (
                (ADDED, "ALIVE") in changes_of(nodes, "node_id", {node.node_id})[node.node_id]
            ),
            "the new node in the stream",
        )
        cluster.remove_node(node)
        nodes.wait(
            lambda _: (
                (MODIFIED, "DEAD") in changes_of(nodes, "node_id", {node.node_id})[node.node_id]
            ),
            "the node's death in the stream",
        )

        script = (
            "import sys, freight; freight.init(address=sys.argv[1]); "
            "print(freight.get_runtime_context().get_job_id())"
        )
        env = dict(os.environ, FREIGHT_TOKEN=cluster._token())
        done = subprocess.run(
            [sys.executable, "-c", script, cluster.address],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        job_id = done.stdout.split()[-1]
        jobs.wait(
            lambda _: changes_of(jobs, "job_id", {job_id})[job_id][-1:] == [(MODIFIED, "FINISHED")],
            "the driver's job to finish in the stream",
        )
        assert changes_of(jobs, "job_id", {job_id})[job_id][0] == (ADDED, "RUNNING")
    finally:
        for w in (actors, nodes, jobs):
            w.stop()


def test_placement_groups_are_watched(cluster: Cluster) -> None:
    from freight.util.placement_group import placement_group, remove_placement_group

    w = Watcher("placement_groups")
    try:
        w.synced()
        pg = placement_group([{"CPU": 1}], strategy="PACK")
        assert pg.wait(timeout_seconds=60)
        pg_id = pg.id
        remove_placement_group(pg)
        got = w.wait(
            lambda _: (
                (c := changes_of(w, "placement_group_id", {pg_id})[pg_id])
                and c[-1][1] == "REMOVED"
                and c
            ),
            "the group created, then removed, in the stream",
        )
        assert got[0][0] == ADDED and (MODIFIED, "CREATED") in got
    finally:
        w.stop()


def test_filters_apply_to_changes(cluster: Cluster, tmp_path: Path) -> None:
    """A row that starts matching comes as ADDED, one that stops as DELETED; others never."""
    running = Watcher("tasks", ["state=SUBMITTED_TO_WORKER", "name~wait_for_file"])
    try:
        assert running.synced() == []
        go = tmp_path / "go"
        ref = wait_for_file.remote(str(go))
        noise = [square.remote(i) for i in range(5)]
        added = running.wait(
            lambda _: [e for e in running.after_sync() if e.type == ADDED], "the task to run"
        )
        assert [(e.row["state"], e.row["name"]) for e in added] == [
            ("SUBMITTED_TO_WORKER", "wait_for_file")
        ]
        tid = added[0].row["task_id"]
        go.touch()
        freight.get([ref, *noise])
        running.wait(
            lambda _: changes_of(running, "task_id", {tid})[tid][-1] == (DELETED, "FINISHED"),
            "the task to be DELETED once it no longer runs",
        )
        others = [e for e in running.after_sync() if e.row and e.row["task_id"] != tid]
        assert others == [], "rows that never matched the filters were sent"
    finally:
        running.stop()


def test_resume_from_a_cursor(cluster: Cluster) -> None:
    first = Watcher("tasks", ["name~square"])
    try:
        first.synced()
        refs = [square.remote(i) for i in range(3)]
        freight.get(refs)
        ids = _task_ids(refs)
        first.wait(
            lambda _: all(
                c and c[-1][1] == "FINISHED" for c in changes_of(first, "task_id", ids).values()
            ),
            "the first tasks in the stream",
        )
        cursor = first.events[-1].cursor
    finally:
        first.stop()
    later = [square.remote(i) for i in range(3)]  # while nobody watches
    freight.get(later)
    later_ids = _task_ids(later)
    _listed(later_ids)
    again = Watcher("tasks", ["name~square"], cursor=cursor)
    try:
        again.wait(
            lambda evs: (
                later_ids
                <= {e.row["task_id"] for e in evs if e.row and e.row["state"] == "FINISHED"}
            ),
            "the changes made between the two watches",
        )
        assert not any(e.type in (SYNCED, RESYNC) for e in again.events)
        assert not ids & {e.row["task_id"] for e in again.events if e.row}, "changes repeated"
    finally:
        again.stop()


def test_bad_requests_get_clear_errors_and_the_head_keeps_serving(cluster: Cluster) -> None:
    with pytest.raises(ValueError, match="unknown kind 'bogus'"):
        state.watch("bogus")
    with pytest.raises(ValueError, match="objects cannot be watched"):
        state.watch("objects")
    with pytest.raises(ValueError, match="unknown filter key 'colour' for tasks"):
        next(state.watch("tasks", ["colour=red"]))
    with pytest.raises(ValueError, match="is not a tasks state"):
        next(state.watch("tasks", ["state=SLEEPY"]))
    with pytest.raises(ValueError, match="bad watch cursor"):
        next(state.watch("tasks", cursor="not-a-cursor"))
    nodes_cursor = next(e.cursor for e in state.watch("nodes") if e.type == SYNCED)
    with pytest.raises(ValueError, match="from a watch of nodes, not tasks"):
        next(state.watch("tasks", cursor=nodes_cursor))
    # Raw RPC: a kind the client would have refused is refused by the head too.
    from freight.protocol.generated import freight_pb2 as pb

    _, stub = state._stub(None)
    with pytest.raises(Exception) as caught:
        next(iter(stub.Watch(pb.WatchRequest(kind="workers"), timeout=30)))
    assert "workers cannot be watched" in str(caught.value)
    assert freight.get(square.remote(3))
    assert state.list_nodes()


CONSUMER = """
    import sys
    from freight import state

    for ev in state.watch("tasks", address=sys.argv[1]):
        print(ev.type, ev.row["task_id"] if ev.row else "", flush=True)
"""


def test_a_slow_consumer_gets_a_resync_and_the_head_stays_bounded(
    cluster: Cluster, tmp_path: Path
) -> None:
    out = tmp_path / "consumer.out"
    env = dict(os.environ, FREIGHT_TOKEN=cluster._token())
    with out.open("w") as sink:
        consumer = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CONSUMER), cluster.address],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    head = psutil.Process(_head_pid(cluster))
    try:
        wait_for_condition(lambda: "SYNCED" in out.read_text(), 60, "the consumer's listing")
        os.kill(consumer.pid, signal.SIGSTOP)
        rss_before = head.memory_info().rss
        ids = _task_ids([square.remote(i) for i in range(20 * BUFFER)])
        _listed(ids)
        grew = head.memory_info().rss - rss_before
        os.kill(consumer.pid, signal.SIGCONT)
        lines = wait_for_condition(
            lambda: (text := out.read_text()).count("SYNCED") >= 2 and text.splitlines(),
            120,
            "the consumer to be told to list again, and to list again",
        )
        resync = lines.index(next(line for line in lines if line.startswith(RESYNC)))
        got_before = {
            line.split()[1] for line in lines[:resync] if line.startswith(("ADDED", "MODIFIED"))
        }
        # The head dropped what the reader could not take instead of queueing it ...
        assert len(got_before & ids) < len(ids)
        # ... and the listing after the resync holds every task.
        relisted = {line.split()[1] for line in lines[resync:] if line.startswith("ADDED")}
        assert ids <= relisted
        print(
            f"\nhead RSS grew {grew / 2**20:.1f} MiB over {len(ids)} tasks with a stopped watcher"
        )
        assert grew < 200 * 2**20
    finally:
        os.kill(consumer.pid, signal.SIGCONT)
        consumer.kill()
        consumer.wait()


def _head_pid(cluster: Cluster) -> int:
    assert cluster._head_proc is not None
    return cluster._head_proc.pid


def test_a_watch_across_a_head_restart(cluster: Cluster) -> None:
    """An open watch rides out the restart (RESYNC, then the listing again); a cursor of the
    old head gets an explicit RESYNC."""
    w = Watcher("actors")
    try:
        w.synced()
        counter = Counter.options(name="survivor", lifetime="detached").remote()
        assert freight.get(counter.add.remote()) == 1
        actor_id = counter._actor_id.hex()
        w.wait(lambda _: changes_of(w, "actor_id", {actor_id})[actor_id], "the actor")
        old_cursor = w.events[-1].cursor
        cluster.kill_head()
        cluster.restart_head()
        w.wait(
            lambda evs: (
                any(e.type == RESYNC for e in evs) and [e for e in evs if e.type == SYNCED][1:]
            ),
            "the open watch to list again after the restart",
        )
        resync = next(i for i, e in enumerate(w.events) if e.type == RESYNC)
        relisted = {e.row["actor_id"] for e in w.events[resync:] if e.type == ADDED and e.row}
        assert actor_id in relisted  # the control store kept it
        replay = state.watch("actors", cursor=old_cursor)
        first = next(replay)
        assert first.type == RESYNC and "restarted" in first.message
        assert any(e.type == SYNCED for e in _until_synced(replay))
        freight.kill(counter)
    finally:
        w.stop()


def _until_synced(events: Iterator[WatchEvent]) -> list[WatchEvent]:
    out = []
    for e in events:
        out.append(e)
        if e.type == SYNCED:
            return out
    return out


def _cli(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    cli = str(Path(sys.executable).with_name("freight"))
    env = dict(os.environ, FREIGHT_TOKEN=cluster._token())
    return subprocess.Popen(
        [cli, *args, "-o", "json", "--address", cluster.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def test_freight_list_watch_prints_rows_then_changes(cluster: Cluster) -> None:
    with _cli(cluster, "list", "actors", "--watch") as proc:
        try:
            assert proc.stdout is not None
            lines = iter(proc.stdout.readline, "")
            first = json.loads(next(lines))
            while first["type"] != SYNCED:
                first = json.loads(next(lines))
            counter = Counter.remote()
            freight.get(counter.add.remote())
            change = json.loads(next(lines))
            assert change["type"] == ADDED and change["row"]["class_name"] == "Counter"
            assert change["cursor"]
            freight.kill(counter)
        finally:
            proc.kill()


def test_freight_events_follow_prints_new_events(cluster: Cluster) -> None:
    with _cli(cluster, "events", "--follow", "--kind", "NODE_JOINED") as proc:
        try:
            assert proc.stdout is not None
            node = cluster.add_node(num_cpus=1)
            seen: list[dict[str, Any]] = []
            for line in iter(proc.stdout.readline, ""):
                seen.append(json.loads(line))
                if seen[-1]["node_id"] == node.node_id:
                    break
            assert seen[-1]["kind"] == "NODE_JOINED"
            assert len({e["event_id"] for e in seen}) == len(seen), "an event printed twice"
            cluster.remove_node(node)
        finally:
            proc.kill()
