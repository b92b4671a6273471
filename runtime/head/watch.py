"""Watching the head's records: a bounded change log per kind, and the ``Watch`` stream over it.

The head's tables tell :class:`WatchHub` of every change where they already make it (the control
store's ``upsert_*``, the placement group directory's save, the event store's insert, the task
store's batches), and only while a kind is watched: otherwise the task store's hot path pays
one ``is None`` test per batch and the others one call that returns at once. Each change is
turned into its row (the JSON ``List`` returns) once, however many watch it, and appended to the
kind's :class:`ChangeLog`: a ring of the last ``FREIGHT_WATCH_BUFFER`` changes, each numbered by
a revision that only grows during one life of the head.

A watcher is a position in that log, never a queue of its own: the head's memory for watching
is the ring, whatever the number of watchers. One that falls more than the ring behind (a slow
reader; gRPC's flow control holds it back once its socket is full) finds its position gone and
gets ``RESYNC``: it lists again. A cursor names the head's life (epoch), the kind and the
revision; a watcher that reconnects with it resumes after it while the ring still holds what
came next, and gets ``RESYNC`` when the head restarted (the log lives in memory) or the changes
are gone. Rows that start or stop matching the watcher's filters are ADDED or DELETED for it, as
Kubernetes' field selectors do: each change carries the row before it, so this needs no state
per watcher and holds across a resume (docs/decisions/0061-watch.md).

Objects and workers cannot be watched: the node agents hold them and the head sees them only
when it asks; ``list`` them again instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from freight.config import settings
from freight.core.filters import Predicate, compile_filters
from freight.protocol.generated import freight_pb2 as pb

from .state_service import (
    KINDS,
    _plural,
    _row_getter,
    actor_row,
    job_row,
    kind_of,
    node_row,
    placement_group_row,
)
from .task_store import TaskEntry, TaskStore, compile_task_filters

WATCHABLE = ("nodes", "jobs", "tasks", "actors", "placement_groups", "events")
ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
SYNCED, RESYNC, BOOKMARK = "SYNCED", "RESYNC", "BOOKMARK"
MAX_BATCH = 500  # events per WatchReply
BOOKMARK_S = 5.0  # a watcher that got nothing for this long gets a BOOKMARK
LINGER_S = 120.0  # a kind's changes are still kept this long after its last watcher left
# Keys whose change alone is no change for a watcher: heartbeats touch every node each second.
_QUIET_KEYS = {"nodes": ("last_heartbeat",)}
_ID_KEYS = {name: KINDS[name].id_key for name in WATCHABLE}


class Change:
    """One change of a row, as every watcher of its kind reads it."""

    __slots__ = ("event", "key", "prev", "rev", "text", "view")

    def __init__(
        self,
        rev: int,
        key: str,
        text: str,
        view: dict[str, Any] | None,
        prev: dict[str, Any] | None,
    ) -> None:
        self.rev = rev
        self.key = key  # the row's id
        self.text = text  # the row as sent (JSON); for a deletion, its last state
        self.view = view  # the row the filters read; None: deleted
        self.prev = prev  # the row before this change; None: it is new
        # The event as a watcher without filters gets it, made by the first one to send it.
        self.event: pb.WatchEvent | None = None


def encode_cursor(kind: str, epoch: str, rev: int) -> str:
    """An opaque-looking cursor; plain text, as one is made for every event of every watcher."""
    return f"w1.{kind}.{epoch}.{rev}"


def decode_cursor(kind: str, cursor: str) -> tuple[str, int]:
    """(epoch, revision) of a watch cursor; ValueError when it is not one of this kind."""
    parts = cursor.split(".")
    if len(parts) != 4 or parts[0] != "w1" or not parts[3].isdigit() or not parts[2].isalnum():
        raise ValueError(
            f"bad watch cursor {cursor[:40]!r}: pass the cursor of the last event received "
            "unchanged, or none to list from the start"
        )
    if parts[1] != kind:
        raise ValueError(f"this cursor is from a watch of {parts[1]}, not {kind}")
    return parts[2], int(parts[3])


class ChangeLog:
    """The last ``size`` changes of one kind, recorded while the kind is watched."""

    def __init__(self, kind: str, epoch: str, size: int) -> None:
        self.kind = kind
        self.epoch = epoch
        self.size = size
        self.rev = 0  # revision of the newest change
        self.base = 0  # every change after this revision is held
        # The ring: changes[_first:] are held, in revision order (a list trimmed in chunks, so
        # a watcher finds its position by arithmetic).
        self.changes: list[Change] = []
        self._first = 0
        # Each row's latest view, for the next change's ``prev``: every row of the small kinds
        # (seeded when recording starts); for tasks, the rows whose latest change is held.
        self.latest: dict[str, dict[str, Any]] = {}
        self.recording = False
        self.watchers = 0
        self.idle_since = 0.0  # monotonic time the last watcher left
        self._woken: asyncio.Event | None = None

    def start(self) -> None:
        """Record from now on. Changes made while nobody recorded are unknown: every older
        cursor is refused (its position is below ``base``)."""
        self.rev += 1
        self.base = self.rev
        self.changes.clear()
        self._first = 0
        self.latest.clear()
        self.recording = True

    def stop(self) -> None:
        self.recording = False
        self.changes.clear()
        self._first = 0
        self.latest.clear()

    def lingered(self) -> bool:
        """True when nobody has watched for LINGER_S: time to stop recording."""
        return self.watchers == 0 and time.monotonic() - self.idle_since > LINGER_S

    def append(
        self, key: str, text: str, view: dict[str, Any] | None, prev: dict[str, Any] | None
    ) -> None:
        self.rev += 1
        self.changes.append(Change(self.rev, key, text, view, prev))
        if self.kind != "events":  # events are only ever added: no row before them
            if view is None:
                self.latest.pop(key, None)
            else:
                self.latest[key] = view
        if len(self.changes) - self._first > self.size:
            old = self.changes[self._first]
            self._first += 1
            self.base = old.rev
            if self.kind == "tasks" and self.latest.get(old.key) is old.view:
                del self.latest[old.key]  # tasks: only the rows whose change is still held
            if self._first >= self.size:
                del self.changes[: self._first]
                self._first = 0
        if self._woken is not None:
            self._woken.set()
            self._woken = None

    def after(self, pos: int, limit: int) -> list[Change]:
        """Up to ``limit`` changes after revision ``pos`` (which must be >= ``base``)."""
        i = self._first + pos - self.base  # revisions in the ring follow each other
        return self.changes[i : i + limit]

    def __len__(self) -> int:
        """Changes held."""
        return len(self.changes) - self._first

    async def wait(self, pos: int, timeout: float) -> None:
        """Return once a change after ``pos`` is held, or after ``timeout`` seconds."""
        if self.rev > pos:
            return
        if self._woken is None:
            self._woken = asyncio.Event()
        woken = self._woken
        try:
            await asyncio.wait_for(woken.wait(), timeout)
        except TimeoutError:
            pass

    def wake(self) -> None:
        if self._woken is not None:
            self._woken.set()
            self._woken = None


def _sig(view: dict[str, Any], quiet: Sequence[str]) -> str:
    if quiet:
        view = {k: v for k, v in view.items() if k not in quiet}
    return json.dumps(view, sort_keys=True)


def task_view(rec: TaskEntry) -> tuple[dict[str, Any], str]:
    """A task's row as List sends it (JSON) and as the filters read it (every filter key)."""
    view = rec.row()
    text = json.dumps(view)
    view["error"] = rec.error
    view["trace_id"] = rec.trace_id
    view["owner_address"] = rec.owner_address
    view["last_time"] = rec.last_time
    view["is_actor_task"] = bool(rec.actor_id)
    return view, text


class TaskFeed:
    """What a batch of task events did to the task store, as changes (see TaskStore.feed)."""

    def __init__(self, log: ChangeLog) -> None:
        self.log = log
        self._touched: list[str] = []
        self._prev: dict[str, dict[str, Any]] = {}
        self._gone: list[TaskEntry] = []

    def begin(self, store: TaskStore, tids: list[str]) -> TaskFeed | None:
        """Before a batch: remember the rows it may change. None (and the store's feed unset)
        when nobody has watched tasks for a while: recording stops."""
        if self.log.lingered():
            self.log.stop()
            store.feed = None
            return None
        latest = self.log.latest
        prev: dict[str, dict[str, Any]] = {}
        for tid in tids:
            if tid in prev:
                continue
            rec = store.records.get(tid)
            if rec is not None:
                prev[tid] = latest.get(tid) or task_view(rec)[0]
        self._touched, self._prev, self._gone = tids, prev, []
        return self

    def evicted(self, rec: TaskEntry) -> None:
        self._gone.append(rec)

    def end(self, store: TaskStore) -> None:
        """After the batch: one change per task it added, changed or evicted."""
        log, prev, touched = self.log, self._prev, self._touched
        new = set(touched).difference(prev)
        for rec in self._gone:
            if rec.task_id in new:
                continue  # added and evicted within the batch: nobody saw it
            before = prev.get(rec.task_id) or log.latest.get(rec.task_id)
            view, text = task_view(rec)
            log.append(rec.task_id, text, None, before or view)
        for tid in dict.fromkeys(touched):
            rec = store.records.get(tid)
            if rec is not None:
                view, text = task_view(rec)
                log.append(tid, text, view, prev.get(tid))
        self._touched, self._prev, self._gone = [], {}, []


class WatchHub:
    """The change logs of every watchable kind, fed by the head's tables, and the streams."""

    def __init__(self, store: Any, tasks: TaskStore, events: Any, placement_groups: Any) -> None:
        self.store = store
        self.tasks = tasks
        self.events = events
        self.placement_groups = placement_groups
        self.epoch = f"{time.time_ns():x}{os.urandom(4).hex()}"  # this life of the head
        size = max(1, settings.watch_buffer)
        self.logs = {kind: ChangeLog(kind, self.epoch, size) for kind in WATCHABLE}
        self._sigs: dict[str, dict[str, str]] = {kind: {} for kind in WATCHABLE}
        self.closed = False
        self.resyncs = 0  # RESYNC markers sent because a watcher fell behind
        store.feed = self.changed
        if events is not None:
            events.feed = self.changed

    # -- feeds ---------------------------------------------------------------------------------

    def changed(self, kind: str, obj: Any) -> None:
        """A record of ``kind`` was written (a protobuf message, or an event's row)."""
        log = self.logs[kind]
        if not log.recording:
            return
        if log.lingered():
            log.stop()
            return
        if kind == "events":
            log.append(obj["event_id"], json.dumps(obj), obj, None)
            return
        view = _ROWS[kind](obj)
        key = view[_ID_KEYS[kind]]
        sig = _sig(view, _QUIET_KEYS.get(kind, ()))
        sigs = self._sigs[kind]
        if sigs.get(key) == sig:
            return  # written again unchanged (or only its heartbeat time moved)
        sigs[key] = sig
        log.append(key, json.dumps(view), view, log.latest.get(key))

    def _current(self, kind: str) -> list[dict[str, Any]]:
        if kind == "nodes":
            return [node_row(n) for n in self.store.list_nodes(include_dead=True)]
        if kind == "jobs":
            return [job_row(j) for j in self.store.list_jobs()]
        if kind == "actors":
            return [actor_row(a) for a in self.store.list_actors(include_dead=True)]
        if kind == "placement_groups" and self.placement_groups is not None:
            return [placement_group_row(g) for g in self.placement_groups.list()]
        return []

    def _enter(self, log: ChangeLog) -> None:
        self._record(log)
        log.watchers += 1

    def listed(self, kind: str) -> str:
        """The cursor of ``kind``'s log now, for a listing made in the same step of the event
        loop (no await between them): a watch from it gets exactly the changes after the
        listing. The kind's changes are recorded from now on, if nobody watched it, and kept
        LINGER_S after this listing as after a watcher left; a later watch from the cursor, or
        one after a restart of the head, gets RESYNC."""
        log = self.logs[kind]
        self._record(log)
        if log.watchers == 0:
            log.idle_since = time.monotonic()
        return encode_cursor(kind, self.epoch, log.rev)

    def _record(self, log: ChangeLog) -> None:
        """Make sure ``log`` records: start it (a new base) if it does not, or no longer should."""
        if log.recording and log.lingered():
            log.stop()
        if log.recording:
            return
        log.start()
        kind = log.kind
        if kind == "tasks":
            self.tasks.feed = TaskFeed(log)
        elif kind != "events":
            rows = self._current(kind)
            quiet = _QUIET_KEYS.get(kind, ())
            key = _ID_KEYS[kind]
            log.latest.update((r[key], r) for r in rows)
            self._sigs[kind] = {r[key]: _sig(r, quiet) for r in rows}

    def _leave(self, log: ChangeLog) -> None:
        log.watchers -= 1
        if log.watchers == 0:
            log.idle_since = time.monotonic()

    def close(self) -> None:
        """The head is stopping: end every stream (clients reconnect with their cursor)."""
        self.closed = True
        for log in self.logs.values():
            log.wake()

    # -- the stream ----------------------------------------------------------------------------

    async def serve(self, state: Any, request: pb.WatchRequest, context: Any) -> None:
        """Run one ``Watch`` stream; ValueError for a bad kind, filter or cursor."""
        kind_of(request.kind)  # unknown kinds: the message lists the valid ones
        name = _plural(request.kind)
        if name not in WATCHABLE:
            raise ValueError(
                f"{name} cannot be watched: the node agents hold them and the head learns of "
                f"them only when it asks; list them again instead (watchable kinds: "
                f"{', '.join(WATCHABLE)})"
            )
        filters = [(f.key, f.op, f.value) for f in request.filters]
        pred = compile_filters(filters, KINDS[name].fields, name, _row_getter)
        log = self.logs[name]
        if request.cursor:
            epoch, pos = decode_cursor(name, request.cursor)
            if epoch == self.epoch and pos > log.rev:
                raise ValueError("this watch cursor is ahead of the head: it was not issued here")
        self._enter(log)
        try:
            if request.cursor:
                why = ""
                if epoch != self.epoch:
                    why = "the head restarted since this cursor was issued"
                elif pos < log.base:
                    why = (
                        "the changes after this cursor are no longer kept (more than "
                        f"{log.size} changes ago, or nobody watched {name} for a while)"
                    )
                if why:
                    await self._resync(context, why + f": list {name} again")
                    return
                sent = None
                until = pos
            else:
                pos, sent = await self._listing(state, name, filters, pred, log, context)
                until = log.rev
            await self._follow(log, pos, pred, sent, until, context)
        finally:
            self._leave(log)

    async def _resync(self, context: Any, why: str) -> None:
        await context.write(pb.WatchReply(events=[pb.WatchEvent(type=RESYNC, message=why)]))

    async def _listing(
        self,
        state: Any,
        name: str,
        filters: list[tuple[str, str, str]],
        pred: Predicate | None,
        log: ChangeLog,
        context: Any,
    ) -> tuple[int, set[str]]:
        """Send the rows that match now, then SYNCED; the revision they are from and their ids.

        The rows may be built while changes arrive (a big listing of tasks is sent in chunks,
        so the head keeps serving): a change after ``pos`` is then already in a row sent, and is
        sent again as MODIFIED. The ids sent stand for what the watcher holds until the stream
        has caught up with the revision the listing ended at.
        """
        pos = log.rev
        cursor = encode_cursor(name, self.epoch, pos)
        key = _ID_KEYS[name]
        sent: set[str] = set()
        batch: list[pb.WatchEvent] = []

        async def flush() -> None:
            if batch:
                await context.write(pb.WatchReply(events=batch))
                batch.clear()

        if name == "tasks":
            task_pred = compile_task_filters(filters)
            # The head serves others between two messages (each write awaits), so the records
            # are taken as they are now and their rows made as the listing goes.
            for rec in list(self.tasks.records.values()):
                if task_pred is None or task_pred(rec):
                    sent.add(rec.task_id)
                    batch.append(
                        pb.WatchEvent(type=ADDED, row=json.dumps(rec.row()), cursor=cursor)
                    )
                    if len(batch) >= MAX_BATCH:
                        await flush()
        else:
            src = await state._rows(name)
            for _, row in src.rows:
                if pred is None or pred(row):
                    sent.add(row[key])
                    batch.append(pb.WatchEvent(type=ADDED, row=json.dumps(row), cursor=cursor))
                    if len(batch) >= MAX_BATCH:
                        await flush()
        batch.append(pb.WatchEvent(type=SYNCED, cursor=cursor))
        await flush()
        return pos, sent

    async def _follow(
        self,
        log: ChangeLog,
        pos: int,
        pred: Predicate | None,
        sent: set[str] | None,
        until: int,
        context: Any,
    ) -> None:
        """Send every change after ``pos`` as it comes, until the head stops or the client
        goes; RESYNC when the watcher fell behind the log."""
        name = log.kind
        quiet_since = time.monotonic()
        while not self.closed:
            if not log.recording or pos < log.base:
                self.resyncs += 1
                await self._resync(
                    context,
                    f"this watcher fell more than {log.size} changes behind "
                    f"(FREIGHT_WATCH_BUFFER): list {name} again",
                )
                return
            changes = log.after(pos, MAX_BATCH)
            if changes:
                last = changes[-1].rev
            else:
                await log.wait(pos, BOOKMARK_S)
                if log.rev == pos and time.monotonic() - quiet_since >= BOOKMARK_S:
                    cursor = encode_cursor(name, self.epoch, pos)
                    await context.write(
                        pb.WatchReply(events=[pb.WatchEvent(type=BOOKMARK, cursor=cursor)])
                    )
                    quiet_since = time.monotonic()
                continue
            events: list[pb.WatchEvent] = []
            if pred is None and (sent is None or changes[0].rev > until):
                # Without filters every change is sent as it is: the event is made once.
                sent = None
                for c in changes:
                    if c.event is None:
                        kind = DELETED if c.view is None else MODIFIED if c.prev else ADDED
                        cursor = encode_cursor(name, self.epoch, c.rev)
                        c.event = pb.WatchEvent(type=kind, row=c.text, cursor=cursor)
                    events.append(c.event)
                changes = []
            for c in changes:
                if sent is not None and c.rev <= until:
                    was = c.key in sent
                    now = c.view is not None and (pred is None or pred(c.view))
                    if now:
                        sent.add(c.key)
                    else:
                        sent.discard(c.key)
                else:
                    sent = None
                    was = c.prev is not None and (pred is None or pred(c.prev))
                    now = c.view is not None and (pred is None or pred(c.view))
                if was or now:
                    kind = (MODIFIED if was else ADDED) if now else DELETED
                    cursor = encode_cursor(name, self.epoch, c.rev)
                    events.append(pb.WatchEvent(type=kind, row=c.text, cursor=cursor))
            pos = last
            if events:
                await context.write(pb.WatchReply(events=events))
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= BOOKMARK_S:
                cursor = encode_cursor(name, self.epoch, pos)
                await context.write(
                    pb.WatchReply(events=[pb.WatchEvent(type=BOOKMARK, cursor=cursor)])
                )
                quiet_since = time.monotonic()


_ROWS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "nodes": node_row,
    "jobs": job_row,
    "actors": actor_row,
    "placement_groups": placement_group_row,
}
