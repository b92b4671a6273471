"""The head's task records, folded from the task events that owners report through their agents.

One :class:`TaskEntry` per task id holds every state transition (time, state, cause) ordered by
time (batches from different agents may arrive out of order), and the task's latest whereabouts:
name, job, actor, parent, node, worker, attempt, pending reason, error and the start/end of its
last attempt; attempts that were retried are kept as well (the timeline draws every execution).

Owners keep a sample of their short successful tasks as records (``FREIGHT_TASK_ROWS_SAMPLE``)
and count the rest by job, name and kind; the store adds those counts (:meth:`TaskStore.
count_sampled_out`) to its summaries, so counts are exact although the records are a sample.
Leaving a record out of the sample is not a loss and is not counted as dropped.

A job that has ended leaves no task behind: records still pending or running some time after
their job ended (their owner went away before reporting an end) are closed as FAILED by
:meth:`TaskStore.end_jobs`, as Ray's task manager does when a job finishes.

Retention is bounded and honest: successful (FINISHED) records are capped by
``FREIGHT_STATE_TASKS_MAX`` and failed or cancelled ones by ``FREIGHT_STATE_FAILED_TASKS_MAX``, so
failures outlive the successes around them; live (not yet finished) records are capped by the sum
of both, a safety net against a flood of queued tasks. The oldest record of the full class is
evicted first, and every evicted record (and every event lost
on the way) is counted in :attr:`TaskStore.dropped` and ``freight_telemetry_dropped_total``.

Entries use ``__slots__``, interned strings and flat tuples, so 100,000 records take tens of MB.
The store does no I/O; :mod:`freight.head.state_service` serves it.
"""

from __future__ import annotations

import itertools
import json
import sys
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

from freight.config import settings
from freight.core.filters import BOOL, NUMBER, TEXT, TIME, Field, Predicate, compile_filters
from freight.core.order import Sorting, Value, compile_sorting, sort_items, start_after
from freight.core.task_state import TaskState
from freight.observe.recorder import RECORDER
from freight.protocol import messages

FINISHED = TaskState.FINISHED.value
_FAILED = frozenset({TaskState.FAILED.value, TaskState.CANCELLED.value})
_TERMINAL = _FAILED | {FINISHED}
_SUBMITTED = TaskState.SUBMITTED_TO_WORKER.value
_PUSHED = "pushed to worker "  # the cause of a dispatch, as freight.core.task_state words it
_LIVE, _OK, _BAD = 0, 1, 2  # retention classes
MAX_CAUSE = 300  # characters of a transition's cause kept
MAX_ERROR = 4000  # characters of the error text kept
MAX_TRACEBACK = 16_000  # characters of a failed task's traceback kept (its end: the raise)
EVICTED_MEMORY = 10_000  # evicted ids remembered, so late events do not resurrect a record
JOB_ENDED = "JobEnded"  # error_type of the tasks closed because their job ended
# The fields a summary can filter the tasks counted without a record on (what their count knows:
# job, name, actor or not, and that they succeeded at the first attempt).
COUNTED_FIELDS = frozenset(
    {
        *("job_id", "name", "state", "is_actor_task", "attempt", "pending_reason"),
        *("error_type", "error_kind", "error"),
    }
)
_intern = sys.intern

TASK_FIELDS: dict[str, Field] = {
    "task_id": Field(TEXT),
    "name": Field(TEXT),
    "state": Field(TEXT, tuple(s.value for s in TaskState)),
    "job_id": Field(TEXT),
    "actor_id": Field(TEXT),
    "parent_task_id": Field(TEXT),
    "node_id": Field(TEXT),
    "worker_id": Field(TEXT),
    "attempt": Field(NUMBER),
    "pending_reason": Field(TEXT),
    "error_type": Field(TEXT),
    "error_kind": Field(TEXT),
    "error": Field(TEXT),
    "trace_id": Field(TEXT),
    "owner_address": Field(TEXT),
    "submit_time": Field(TIME),
    "start_time": Field(TIME),
    "end_time": Field(TIME),
    "last_time": Field(TIME),
    "duration": Field(NUMBER),
    "is_actor_task": Field(BOOL),
}


class TaskEntry:
    """Everything the head knows about one task."""

    __slots__ = (
        "actor_id",
        "attempt",
        "end_time",
        "error",
        "error_kind",
        "error_type",
        "job_id",
        "last_time",
        "name",
        "node_id",
        "owner_address",
        "parent_task_id",
        "pending_reason",
        "seq",
        "start_time",
        "state",
        "task_id",
        "trace_id",
        "traceback",
        "transitions",
        "worker_id",
    )

    actor_id: str
    attempt: int
    end_time: float
    error: str
    error_kind: str
    error_type: str
    job_id: str
    name: str
    node_id: str
    owner_address: str
    parent_task_id: str
    pending_reason: str
    start_time: float
    trace_id: str
    traceback: str
    worker_id: str

    def __init__(self, seq: int, task_id: str) -> None:
        self.seq = seq
        self.task_id = task_id
        self.state = ""
        self.last_time = 0.0
        self.transitions: tuple[Any, ...] = ()  # flat: time, state, cause, time, state, cause ...

    @property
    def submit_time(self) -> float:
        """When the task was first seen (its first transition)."""
        return self.transitions[0] if self.transitions else 0.0

    @property
    def duration(self) -> float:
        """Run time of the last attempt (0 while unknown)."""
        return self.end_time - self.start_time if self.start_time and self.end_time else 0.0

    @property
    def is_actor_task(self) -> bool:
        return bool(self.actor_id)

    def attempts(self) -> list[dict[str, Any]]:
        """Every execution of the task, oldest first: times, worker, outcome.

        Attempts are read off the transitions: each ``SUBMITTED_TO_WORKER`` (whose cause names
        the worker) opens one and the next transition closes it (a retry or the outcome). The
        worker's own start/end times are known for the last reported attempt (``measured``);
        the others span dispatch to close.
        """
        tr = self.transitions
        out: list[dict[str, Any]] = []
        attempt = 0
        for i in range(0, len(tr), 3):
            if tr[i + 1] != _SUBMITTED:
                continue
            closed = i + 3 < len(tr)
            cause = tr[i + 2]
            worker = cause[len(_PUSHED) :] if cause.startswith(_PUSHED) else ""
            out.append(
                {
                    "attempt": attempt,
                    "start_time": tr[i],
                    "end_time": tr[i + 3] if closed else 0.0,
                    "worker_id": worker,
                    "node_id": self.node_id,
                    "outcome": (tr[i + 4] if tr[i + 4] in _TERMINAL else tr[i + 5])
                    if closed
                    else tr[i + 1],
                    "measured": False,
                }
            )
            attempt += 1
        if out and self.start_time:
            last = out[-1]  # start_time was cleared if it belongs to an earlier attempt
            last.update(start_time=self.start_time, end_time=self.end_time, measured=True)
            last["worker_id"] = last["worker_id"] or self.worker_id
        return out

    def row(self, detail: bool = False) -> dict[str, Any]:
        """The task as a JSON-ready dict; ``detail`` adds transitions, attempts and full error."""
        row: dict[str, Any] = {
            "task_id": self.task_id,
            "name": self.name,
            "state": self.state,
            "job_id": self.job_id,
            "actor_id": self.actor_id,
            "parent_task_id": self.parent_task_id,
            "node_id": self.node_id,
            "worker_id": self.worker_id,
            "attempt": self.attempt,
            "pending_reason": self.pending_reason,
            "error_type": self.error_type,
            "error_kind": self.error_kind,
            "error": self.error if detail else self.error[:200],
            "submit_time": self.submit_time,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration": self.duration,
        }
        if detail:
            tr = self.transitions
            row["trace_id"] = self.trace_id
            row["traceback"] = self.traceback
            row["owner_address"] = self.owner_address
            row["transitions"] = [
                {"time": tr[i], "state": tr[i + 1], "cause": tr[i + 2]}
                for i in range(0, len(tr), 3)
            ]
            row["attempts"] = self.attempts()
        return row


def _last_dispatch(tr: tuple[Any, ...]) -> float:
    """Time of the latest SUBMITTED_TO_WORKER transition (0 if none)."""
    for i in range(len(tr) - 3, -1, -3):
        if tr[i + 1] == _SUBMITTED:
            return float(tr[i])
    return 0.0


class _Counted(NamedTuple):
    """What a summary filter sees of tasks counted without a record (see COUNTED_FIELDS)."""

    job_id: str
    name: str
    actor_task: bool
    state: str = FINISHED
    pending_reason: str = ""
    attempt: int = 0
    error_type: str = ""
    error_kind: str = ""
    error: str = ""

    @property
    def is_actor_task(self) -> bool:
        return self.actor_task


class Page(NamedTuple):
    rows: list[str]  # JSON objects
    total: int  # records held
    matched: int  # records passing the filters
    remaining: int  # matched records after this page
    last_key: Any  # the last row's cursor key: its position, or (value, position) sorted


def _getter(key: str) -> Callable[[Any], Any]:
    return attrgetter(key)


def compile_task_sorting(sort_by: str, descending: bool) -> Sorting | None:
    """The order of a task listing by ``sort_by`` (raises FilterError naming the fields)."""
    return compile_sorting(sort_by, descending, TASK_FIELDS, "tasks", _getter)


def compile_task_filters(filters: Iterable[Any]) -> Predicate | None:
    """Compile state API filters over task records (raises FilterError)."""
    return compile_filters(filters, TASK_FIELDS, "tasks", _getter)


class ChangeFeed(Protocol):
    """Told what each batch did to the records, while someone watches tasks
    (:class:`freight.head.watch.TaskFeed`)."""

    def begin(self, store: TaskStore, tids: list[str]) -> ChangeFeed | None: ...
    def evicted(self, rec: TaskEntry) -> None: ...
    def end(self, store: TaskStore) -> None: ...


class TaskStore:
    """Task records by id, in the order the head first heard of them."""

    def __init__(self, tasks_max: int | None = None, failed_max: int | None = None) -> None:
        self.tasks_max = max(1, settings.state_tasks_max if tasks_max is None else tasks_max)
        self.failed_max = max(
            1, settings.state_failed_tasks_max if failed_max is None else failed_max
        )
        self.records: dict[str, TaskEntry] = {}
        # Retention classes (live, finished, failed): ids oldest first, and how many records
        # each holds. A record that changes class leaves a stale id behind in the old queue
        # (skipped when it comes up, dropped when the queue is compacted): 8 bytes, not a node.
        self._queues: tuple[deque[str], ...] = (deque(), deque(), deque())
        self._sizes = [0, 0, 0]
        self._bounds = (self.tasks_max + self.failed_max, self.tasks_max, self.failed_max)
        self._evicted: set[str] = set()
        self._evicted_order: deque[str] = deque()
        self._seq = itertools.count(1)
        self.dropped_records = 0
        self.dropped_events = 0
        # Successful tasks owners left out of their samples, by (job id, name, actor task), and
        # the live ones left out now, per node: (job, name, actor task, state, reason, count).
        self.sampled_out: dict[tuple[str, str, bool], int] = {}
        self.live_sampled_out: dict[str, list[tuple[str, str, bool, str, str, int]]] = {}
        # Live left-out tasks whose owner exited with them: FAILED, by (job, name, actor, why).
        self.owner_gone: dict[tuple[str, str, bool, str], int] = {}
        # Set only while tasks are watched: without watchers a batch pays one test for it.
        self.feed: ChangeFeed | None = None

    @property
    def dropped(self) -> int:
        """Task records evicted by retention plus task events lost before they got here."""
        return self.dropped_records + self.dropped_events

    # -- events ------------------------------------------------------------------------------

    def apply(self, events: Iterable[Any], dropped: int = 0) -> None:
        """Fold a batch of ``TaskEvent`` messages in; ``dropped``: events lost on the way."""
        lost = max(0, int(dropped))
        evicted_before = self.dropped_records
        feed = self.feed
        if feed is not None:
            events = list(events)
            feed = feed.begin(self, [ev.task_id for ev in events])
        for ev in events:
            if not self._apply_one(ev):
                lost += 1
        if feed is not None:
            feed.end(self)
        if lost:
            self.dropped_events += lost
            RECORDER.inc("freight_telemetry_dropped_total", ("task_events",), lost)
        evicted = self.dropped_records - evicted_before
        if evicted:
            RECORDER.inc("freight_telemetry_dropped_total", ("task_records",), evicted)

    def apply_rows(self, rows: Iterable[tuple[Any, ...]], dropped: int = 0) -> None:
        """Fold in task rows as :func:`freight.protocol.messages.load_task_rows` returns them:
        one per task, its latest fields and the flat transitions it gained."""
        lost = max(0, int(dropped))
        evicted_before = self.dropped_records
        feed = self.feed
        if feed is not None:
            rows = list(rows)
            feed = feed.begin(self, [row[0] for row in rows])
        for row in rows:
            lost += self._apply_row(row)
        if feed is not None:
            feed.end(self)
        if lost:
            self.dropped_events += lost
            RECORDER.inc("freight_telemetry_dropped_total", ("task_events",), lost)
        evicted = self.dropped_records - evicted_before
        if evicted:
            RECORDER.inc("freight_telemetry_dropped_total", ("task_records",), evicted)

    def count_sampled_out(self, counts: Iterable[tuple[str, str, bool, int]]) -> None:
        """Count successful tasks that have no record (left out of their owner's sample)."""
        got = self.sampled_out
        for job_id, name, actor_task, n in counts:
            if n > 0:
                key = (_intern(job_id), _intern(name), bool(actor_task))
                got[key] = got.get(key, 0) + int(n)

    def count_owner_gone(self, counts: Iterable[tuple[str, str, bool, str, int]]) -> None:
        """Count live tasks without a record whose owner exited with them (they failed)."""
        got = self.owner_gone
        for job_id, name, actor_task, error_type, n in counts:
            if n > 0:
                key = (_intern(job_id), _intern(name), bool(actor_task), _intern(error_type))
                got[key] = got.get(key, 0) + int(n)

    def set_live_sampled_out(
        self, node_id: str, counts: list[tuple[str, str, bool, str, str, int]]
    ) -> None:
        """Replace a node's snapshot of the live tasks its owners left out of their samples."""
        if counts:
            self.live_sampled_out[node_id] = [
                (_intern(j), _intern(n), a, _intern(s), _intern(r), c)
                for j, n, a, s, r, c in counts
            ]
        else:
            self.live_sampled_out.pop(node_id, None)

    @property
    def num_sampled_out(self) -> int:
        live = sum(c[5] for counts in self.live_sampled_out.values() for c in counts)
        return sum(self.sampled_out.values()) + sum(self.owner_gone.values()) + live

    def end_jobs(self, ended: dict[str, tuple[str, float]]) -> int:
        """Close the live records of ended jobs (job id -> (state, end time)) as FAILED; return
        how many. The caller passes only jobs that ended a while ago, so an owner's last report
        (sent at its exit) had time to arrive and its real outcomes stand."""
        if not ended or not self._sizes[_LIVE]:
            return 0
        closed = 0
        for tid in list(self._queues[_LIVE]):
            rec = self.records.get(tid)
            if rec is None or self._class_of(rec.state) != _LIVE:
                continue
            job = ended.get(rec.job_id)
            if job is None:
                continue
            state, end_time = job
            cause = (
                f"job {rec.job_id} ended ({state}) before this task did: its owner exited "
                "without reporting an outcome"
            )
            old = rec.state
            t = max(end_time, rec.last_time)
            rec.transitions = (*rec.transitions, t, _intern("FAILED"), cause)
            rec.last_time = t
            rec.state = _intern("FAILED")
            rec.pending_reason = ""
            rec.error_type = JOB_ENDED
            rec.error_kind = "system"
            rec.error = cause
            self._reclassify(rec, old)
            closed += 1
        return closed

    def _apply_row(self, row: tuple[Any, ...]) -> int:
        """Apply one row; return how many of its transitions were lost."""
        tid = row[0]
        flat = row[20]
        rec = self.records.get(tid)
        if rec is None:
            if not tid or tid in self._evicted:
                return len(flat) // 3
            rec = self._new_record(tid, row[1], row[2], row[3], row[4], row[17])
        tr = rec.transitions
        if (tr and flat[0] <= tr[-3]) or max(map(len, flat[2::3])) > 64:
            # Out of order or repeated (batches of different agents), or long causes to cut:
            # one transition at a time.
            return sum(not self._apply_one(ev) for ev in messages.row_events(row))
        # The strings of one batch are shared already (pickle keeps one copy of each).
        rec.transitions = tr + flat
        old = rec.state
        state = flat[-2]
        rec.last_time = flat[-3]
        rec.state = state
        self._latest(
            rec, row[5], row[6], row[7], row[11], row[12], row[13], row[18], row[16], row[19]
        )
        start = row[14]
        if start and rec.attempt and start < _last_dispatch(rec.transitions):
            start = 0.0  # the times of an earlier attempt (this one has not reported yet)
        rec.start_time = start
        rec.end_time = row[15] if start else 0.0
        if old != state:
            self._reclassify(rec, old)
        return 0

    def _latest(
        self,
        rec: TaskEntry,
        node_id: str,
        worker_id: str,
        attempt: int,
        pending_reason: str,
        error_type: str,
        error_kind: str,
        error: str,
        trace_id: str,
        traceback: str = "",
    ) -> None:
        rec.node_id = _intern(node_id)
        rec.worker_id = _intern(worker_id)
        rec.attempt = attempt
        rec.pending_reason = _intern(pending_reason)
        rec.error_type = _intern(error_type)
        rec.error_kind = _intern(error_kind)
        if error:
            rec.error = error[:MAX_ERROR]
        if trace_id:
            rec.trace_id = trace_id
        if traceback:
            rec.traceback = (
                traceback
                if len(traceback) <= MAX_TRACEBACK
                else "...\n" + traceback[-MAX_TRACEBACK:]
            )

    def _apply_one(self, ev: Any) -> bool:
        tid = ev.task_id
        rec = self.records.get(tid)
        if rec is None:
            if not tid or tid in self._evicted:
                return False
            rec = self._new(tid, ev)
        t = ev.time
        state = _intern(ev.state)
        cause = ev.cause
        cause = _intern(cause) if len(cause) <= 64 else cause[:MAX_CAUSE]
        tr = rec.transitions
        i = len(tr)
        while i and tr[i - 3] > t:  # nearly always appends: events of a task come in order
            i -= 3
        if i and tr[i - 3] == t and tr[i - 2] == state:
            # A repeated event. An owner repeats a pending task's latest one to say that its
            # pending reason changed (found infeasible after it was reported, say).
            if i == len(tr) and state == rec.state and state not in _TERMINAL | {_SUBMITTED}:
                rec.pending_reason = _intern(ev.pending_reason)
            return True
        rec.transitions = (
            (*tr[:i], t, state, cause, *tr[i:]) if i < len(tr) else (*tr, t, state, cause)
        )
        if t < rec.last_time:
            return True  # a late event: its fields are older than what we hold
        old = rec.state
        rec.last_time = t
        rec.state = state
        self._latest(
            rec,
            ev.node_id,
            ev.worker_id,
            ev.attempt,
            ev.pending_reason,
            ev.error_type,
            ev.error_kind,
            ev.error,
            ev.trace_id,
            ev.traceback,
        )
        start = ev.start_time
        if start and rec.attempt and start < _last_dispatch(rec.transitions):
            start = 0.0  # the times of an earlier attempt (this one has not reported yet)
        rec.start_time = start
        rec.end_time = ev.end_time if start else 0.0
        if old != state:
            self._reclassify(rec, old)
        return True

    def _new(self, tid: str, ev: Any) -> TaskEntry:
        return self._new_record(
            tid,
            _intern(ev.job_id),
            _intern(ev.name),
            _intern(ev.actor_id),
            ev.parent_task_id,
            _intern(ev.owner_address),
        )

    def _new_record(
        self, tid: str, job_id: str, name: str, actor_id: str, parent_id: str, owner: str
    ) -> TaskEntry:
        rec = TaskEntry(next(self._seq), tid)
        rec.job_id = job_id
        rec.name = name
        rec.actor_id = actor_id
        parent = self.records.get(parent_id) if parent_id else None
        rec.parent_task_id = parent.task_id if parent is not None else parent_id
        rec.owner_address = owner
        rec.node_id = rec.worker_id = rec.pending_reason = ""
        rec.error_type = rec.error_kind = rec.error = rec.trace_id = rec.traceback = ""
        rec.attempt = 0
        rec.start_time = rec.end_time = 0.0
        self.records[tid] = rec
        self._queues[_LIVE].append(tid)
        self._sizes[_LIVE] += 1
        self._enforce(_LIVE)
        return rec

    @staticmethod
    def _class_of(state: str) -> int:
        return _OK if state == FINISHED else _BAD if state in _FAILED else _LIVE

    def _reclassify(self, rec: TaskEntry, old: str) -> None:
        before, after = self._class_of(old), self._class_of(rec.state)
        if before == after:
            return
        self._sizes[before] -= 1
        self._sizes[after] += 1
        self._queues[after].append(rec.task_id)
        if len(self._queues[before]) > 2 * self._sizes[before] + 1024:
            self._compact(before)
        self._enforce(after)

    def _member(self, tid: str, cls: int) -> bool:
        rec = self.records.get(tid)
        return rec is not None and self._class_of(rec.state) == cls

    def _compact(self, cls: int) -> None:
        queue = self._queues[cls]
        kept = [tid for tid in queue if self._member(tid, cls)]
        queue.clear()
        queue.extend(kept)

    def _enforce(self, cls: int) -> None:
        queue, bound = self._queues[cls], self._bounds[cls]
        while self._sizes[cls] > bound:
            tid = queue.popleft()
            if not self._member(tid, cls):
                continue  # stale: the record moved to another class
            if self.feed is not None:
                self.feed.evicted(self.records[tid])
            del self.records[tid]
            self._sizes[cls] -= 1
            self.dropped_records += 1
            self._evicted.add(tid)
            self._evicted_order.append(tid)
            if len(self._evicted_order) > EVICTED_MEMORY:
                self._evicted.discard(self._evicted_order.popleft())

    # -- queries -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def counts(self) -> dict[str, int]:
        """Records held by retention class."""
        live, ok, bad = self._sizes
        return {"live": live, "finished": ok, "failed_or_cancelled": bad}

    def list(
        self,
        pred: Predicate | None,
        limit: int,
        after: Any = None,
        detail: bool = False,
        newest_first: bool = False,
        sorting: Sorting | None = None,
    ) -> Page:
        """Rows matching ``pred`` after the cursor key ``after`` (None: from the start), at
        most ``limit`` of them: oldest first or ``newest_first``, or by ``sorting``'s field
        with ties in that order (:mod:`freight.core.order`). A cursor key is a record's
        position, or for a sorted listing its (value, position)."""
        records = list(self.records.values())  # in position order: the order first heard of
        if newest_first:
            records.reverse()
        matching = records if pred is None else [rec for rec in records if pred(rec)]
        if sorting is None:
            start = 0
            if after:
                seq = int(after)
                start = bisect_left(
                    matching, True, key=lambda r: r.seq < seq if newest_first else r.seq > seq
                )
            page = matching[start : start + limit]
            last: Any = page[-1].seq if page else after
        else:
            page = sort_items(matching, sorting, sorting.get)
            start = 0
            if after is not None:

                def key(rec: TaskEntry) -> tuple[Value | None, int]:
                    return sorting.value(rec), rec.seq

                start = start_after(page, key, after, sorting.descending, newest_first)
            page = page[start : start + limit]
            last = [sorting.value(page[-1]), page[-1].seq] if page else after
        remaining = len(matching) - start - len(page)
        rows = [json.dumps(rec.row(detail)) for rec in page]
        return Page(rows, len(self.records), len(matching), remaining, last)

    def get(self, id_or_prefix: str) -> TaskEntry | None:
        """The record with this id or unique id prefix; ValueError when the prefix is ambiguous."""
        rec = self.records.get(id_or_prefix)
        if rec is not None or not id_or_prefix:
            return rec
        found = [r for tid, r in self.records.items() if tid.startswith(id_or_prefix)]
        if len(found) > 1:
            shown = ", ".join(r.task_id for r in found[:5])
            raise ValueError(
                f"task id prefix {id_or_prefix!r} matches {len(found)} tasks ({shown}"
                f"{', ...' if len(found) > 5 else ''}); give more characters"
            )
        return found[0] if found else None

    def summary(
        self,
        pred: Predicate | None = None,
        with_sampled_out: bool = True,
        live_nodes: set[str] | None = None,
    ) -> dict[str, Any]:
        """Counts by function name and state, by job, by error type and by pending reason.

        The tasks counted without a record (successes, and live tasks on ``live_nodes``: all
        nodes when None) are included when ``with_sampled_out`` (the caller decides whether
        ``pred`` filters only on :data:`COUNTED_FIELDS`); ``recorded`` says how many of the
        tasks counted have a record."""
        by_name: dict[str, dict[str, Any]] = {}
        by_state: dict[str, int] = {}
        by_job: dict[str, dict[str, int]] = {}
        pending: dict[str, int] = {}
        total = 0
        for rec in self.records.values():
            if pred is not None and not pred(rec):
                continue
            total += 1
            st = rec.state
            by_state[st] = by_state.get(st, 0) + 1
            entry = by_name.get(rec.name)
            if entry is None:
                entry = by_name[rec.name] = {
                    "total": 0,
                    "states": {},
                    "error_types": {},
                    "actor_task": bool(rec.actor_id),
                }
            entry["total"] += 1
            states = entry["states"]
            states[st] = states.get(st, 0) + 1
            if rec.error_type and st in _FAILED:
                errors = entry["error_types"]
                errors[rec.error_type] = errors.get(rec.error_type, 0) + 1
            jobs = by_job.setdefault(rec.job_id, {})
            jobs[st] = jobs.get(st, 0) + 1
            if st not in _TERMINAL and st != TaskState.SUBMITTED_TO_WORKER.value:
                reason = rec.pending_reason or "unknown"
                pending[reason] = pending.get(reason, 0) + 1
        recorded = total
        without = 0
        if with_sampled_out:
            counted = [
                (_Counted(job_id, name, actor_task), n)
                for (job_id, name, actor_task), n in self.sampled_out.items()
            ]
            counted += [
                (_Counted(j, n, a, "FAILED", error_type=e, error_kind="system"), c)
                for (j, n, a, e), c in self.owner_gone.items()
            ]
            for node_id, counts in self.live_sampled_out.items():
                if live_nodes is None or node_id in live_nodes:
                    counted += [(_Counted(j, n, a, s, r), c) for j, n, a, s, r, c in counts]
            for task, n in counted:
                if pred is not None and not pred(task):
                    continue
                without += n
                st = task.state
                by_state[st] = by_state.get(st, 0) + n
                entry = by_name.get(task.name)
                if entry is None:
                    entry = by_name[task.name] = {
                        "total": 0,
                        "states": {},
                        "error_types": {},
                        "actor_task": task.actor_task,
                    }
                entry["total"] += n
                entry["states"][st] = entry["states"].get(st, 0) + n
                if task.error_type:
                    errors = entry["error_types"]
                    errors[task.error_type] = errors.get(task.error_type, 0) + n
                jobs = by_job.setdefault(task.job_id, {})
                jobs[st] = jobs.get(st, 0) + n
                if st not in _TERMINAL and st != _SUBMITTED:
                    reason = task.pending_reason or "unknown"
                    pending[reason] = pending.get(reason, 0) + n
        total += without
        return {
            "total": total,
            "recorded": recorded,
            "counted_without_record": without,
            "by_state": by_state,
            "by_name": by_name,
            "by_job": by_job,
            "pending_by_reason": pending,
            "held": self.counts(),
            "dropped_records": self.dropped_records,
            "dropped_events": self.dropped_events,
        }
