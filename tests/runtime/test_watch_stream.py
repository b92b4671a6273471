"""The head's watch streams without a network: the change log, filters on changes, resuming,
resync on a cursor the head cannot serve, and a reader too slow for the log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from freight.head.control_store import ControlStore
from freight.head.events import EventStore
from freight.head.state_service import StateServiceServicer
from freight.head.task_store import TaskStore
from freight.head.watch import WatchHub, decode_cursor, encode_cursor
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.messages import TaskEvent


class Stream:
    """What a Watch handler wrote; ``gate`` cleared stalls its writes (a reader that stopped)."""

    def __init__(self) -> None:
        self.events: list[pb.WatchEvent] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, reply: pb.WatchReply) -> None:
        await self.gate.wait()
        self.events.extend(reply.events)

    def seen(self) -> list[tuple[str, str]]:
        """(type, state) of every event (state empty for markers)."""
        return [(e.type, json.loads(e.row)["state"] if e.row else "") for e in self.events]


class Head:
    def __init__(self, path: Path, tasks: TaskStore | None = None) -> None:
        self.store = ControlStore(path / "control.db")
        self.events = EventStore(self.store)
        self.tasks = tasks if tasks is not None else TaskStore()
        self.state = StateServiceServicer(self.store, None, self.tasks, self.events, None)  # type: ignore[arg-type]
        self.hub = WatchHub(self.store, self.tasks, self.events, None)

    def job(self, job_id: str, state: str) -> None:
        self.store.upsert_job(pb.JobInfo(job_id=job_id, state=state))

    async def watch(
        self, kind: str, filters: tuple[str, ...] = (), cursor: str = ""
    ) -> tuple[Stream, asyncio.Task[None]]:
        stream = Stream()
        request = pb.WatchRequest(kind=kind, cursor=cursor)
        for f in filters:
            key, value = f.split("=")
            request.filters.add(key=key, op="=", value=value)
        task = asyncio.create_task(self.hub.serve(self.state, request, stream))
        return stream, task

    async def stop(self, *tasks: asyncio.Task[None]) -> None:
        self.hub.close()
        await asyncio.gather(*tasks)
        self.store.close()


async def until(check: Callable[[], Any], what: str) -> Any:
    for _ in range(2000):
        got = check()
        if got:
            return got
        await asyncio.sleep(0.005)  # let the handler run; bounded by the loop count
    raise AssertionError(f"never: {what}")


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


def test_a_listing_then_every_change_with_cursors(tmp_path: Path) -> None:
    async def main() -> None:
        head = Head(tmp_path)
        head.job("00000001", "RUNNING")
        stream, task = await head.watch("jobs")
        await until(lambda: ("SYNCED", "") in stream.seen(), "the listing")
        head.job("00000002", "RUNNING")
        head.job("00000002", "RUNNING")  # written again unchanged: no event
        head.job("00000001", "FINISHED")
        await until(lambda: len(stream.events) == 4, "two changes")
        assert stream.seen() == [
            ("ADDED", "RUNNING"), ("SYNCED", ""), ("ADDED", "RUNNING"), ("MODIFIED", "FINISHED"),
        ]  # fmt: skip
        revs = [decode_cursor("jobs", e.cursor)[1] for e in stream.events]
        assert revs[0] == revs[1] < revs[2] < revs[3]
        await head.stop(task)

    run(main)


def test_filters_turn_rows_that_start_or_stop_matching_into_added_and_deleted(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        head = Head(tmp_path)
        stream, task = await head.watch("jobs", ("state=RUNNING",))
        await until(lambda: stream.seen() == [("SYNCED", "")], "the empty listing")
        head.job("00000001", "PENDING")  # never matches: never sent
        head.job("00000002", "RUNNING")
        head.job("00000002", "FINISHED")
        await until(lambda: len(stream.events) == 3, "the changes")
        assert stream.seen()[1:] == [("ADDED", "RUNNING"), ("DELETED", "FINISHED")]
        # A resume from the cursor before those changes judges them the same way.
        again, task2 = await head.watch("jobs", ("state=RUNNING",), stream.events[0].cursor)
        await until(lambda: len(again.events) == 2, "the changes again")
        assert again.seen() == [("ADDED", "RUNNING"), ("DELETED", "FINISHED")]
        await head.stop(task, task2)

    run(main)


def test_cursors_the_head_cannot_serve_get_resync(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("FREIGHT_WATCH_BUFFER", "3")

    async def main() -> None:
        head = Head(tmp_path)
        stream, task = await head.watch("jobs")
        await until(lambda: stream.events, "the listing")
        cursor = stream.events[-1].cursor
        for i in range(5):  # more than the log keeps
            head.job(f"0000000{i}", "RUNNING")
        old, t1 = await head.watch("jobs", cursor=cursor)
        restarted = encode_cursor("jobs", "0ther", 1)
        other, t2 = await head.watch("jobs", cursor=restarted)
        await until(lambda: old.events and other.events, "both answers")
        assert old.events[0].type == "RESYNC" and "no longer kept" in old.events[0].message
        assert other.events[0].type == "RESYNC" and "restarted" in other.events[0].message
        with pytest.raises(ValueError, match="ahead of the head"):
            await head.hub.serve(
                head.state,
                pb.WatchRequest(kind="jobs", cursor=encode_cursor("jobs", head.hub.epoch, 999)),
                Stream(),
            )
        await head.stop(task, t1, t2)

    run(main)


def test_a_reader_that_stops_reading_is_told_to_list_again(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("FREIGHT_WATCH_BUFFER", "10")

    async def main() -> None:
        head = Head(tmp_path)
        stream, task = await head.watch("jobs")
        await until(lambda: stream.events, "the listing")
        stream.gate.clear()
        head.job("00000001", "RUNNING")
        await asyncio.sleep(0.01)  # the handler takes that change and blocks in its write
        for i in range(100):
            head.job(f"{i + 2:08x}", "RUNNING")
        log = head.hub.logs["jobs"]
        assert len(log) == 10  # the log stays bounded; nothing queues per watcher
        stream.gate.set()
        await until(lambda: stream.events[-1].type == "RESYNC", "the resync")
        await task  # the stream ended
        assert "fell more than 10 changes behind" in stream.events[-1].message
        await head.stop()

    run(main)


def _event(task_id: str, state: str, t: float) -> TaskEvent:
    return TaskEvent(
        task_id=task_id, job_id="00000001", name="f", actor_id="", parent_task_id="",
        node_id="n", worker_id="", attempt=0, state=state, time=t, cause="", pending_reason="",
        error_type="", error_kind="", start_time=0.0, end_time=0.0, trace_id="",
        owner_address="", error="",
    )  # fmt: skip


def test_task_batches_become_changes_and_evictions_deletions(tmp_path: Path) -> None:
    async def main() -> None:
        head = Head(tmp_path, TaskStore(tasks_max=1, failed_max=1))
        assert head.tasks.feed is None  # nobody watches: the batches pay nothing
        stream, task = await head.watch("tasks")
        await until(lambda: stream.events, "the listing")
        assert head.tasks.feed is not None
        head.tasks.apply([_event("t1", "PENDING_ARGS_AVAIL", 1.0)])
        head.tasks.apply([_event("t1", "FINISHED", 2.0)])
        head.tasks.apply([_event("t2", "PENDING_ARGS_AVAIL", 3.0), _event("t2", "FINISHED", 4.0)])
        await until(lambda: len(stream.events) == 5, "the changes")
        got = [(e.type, json.loads(e.row)["task_id"] if e.row else "") for e in stream.events[1:]]
        # t2 finished and pushed t1 out (one finished record is kept).
        assert got == [("ADDED", "t1"), ("MODIFIED", "t1"), ("DELETED", "t1"), ("ADDED", "t2")]
        await head.stop(task)

    run(main)


def test_recording_stops_a_while_after_the_last_watcher_left(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from freight.head import watch

    async def main() -> None:
        head = Head(tmp_path)
        stream, task = await head.watch("tasks")
        await until(lambda: stream.events, "the listing")
        head.tasks.apply([_event("t1", "PENDING_ARGS_AVAIL", 1.0)])
        await until(lambda: len(stream.events) == 2, "the change")
        cursor = stream.events[-1].cursor
        task.cancel()  # the client went away
        await asyncio.gather(task, return_exceptions=True)
        log = head.hub.logs["tasks"]
        assert log.watchers == 0 and log.recording  # kept a while, for a reconnect
        monkeypatch.setattr(watch, "LINGER_S", 0.0)
        head.tasks.apply([_event("t1", "FINISHED", 2.0)])
        assert not log.recording and head.tasks.feed is None and len(log) == 0
        # A watcher coming back now cannot be told what it missed: it lists again.
        again, task2 = await head.watch("tasks", cursor=cursor)
        await until(lambda: again.events, "the answer")
        assert again.events[0].type == "RESYNC"
        await head.stop(task2)

    run(main)
