"""What a driver or worker reports about its work: metric figures and task events.

The owner of a task sees its whole life (submission, retries, the outcome, even a worker that
died under it), so task lifecycle figures are recorded here, from the task table's transitions,
and not by the worker that ran the task. Every ``FREIGHT_TELEMETRY_INTERVAL_S`` the process sends
its node agent one :class:`~freight.protocol.messages.Telemetry` message: its cumulative metric
snapshot, the task events since the last report and its resource usage per job. The agent folds
the figures into the node's ``/metrics`` (keeping those of processes that exited) and forwards the
task events to the head's state service. A clean shutdown sends a final report.
"""

from __future__ import annotations

import gc
import operator
import sys
import threading
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from freight.config import settings
from freight.core import task_state
from freight.core.task_state import TERMINAL, TaskRecord, TaskState
from freight.observe.catalogue import PENDING_REASONS
from freight.observe.recorder import RECORDER, Recorder
from freight.protocol import messages as m

if TYPE_CHECKING:
    from .core_worker import CoreWorker

S = TaskState
_FINISHED = S.FINISHED.value
_SUBMITTED = S.SUBMITTED_TO_WORKER.value
# The pending reasons people read (`freight status`) as the short label values of
# freight_queue_depth{reason}; a task pending for no recorded reason waits for resources.
QUEUE_REASONS = dict(
    zip(
        (
            task_state.WAITING_FOR_ARGS,
            task_state.WAITING_FOR_RESOURCES,
            task_state.WAITING_FOR_WORKER,
            task_state.INFEASIBLE,
        ),
        PENDING_REASONS,
        strict=True,
    )
)
_TERMINAL = frozenset(s.value for s in TERMINAL)
_NOT_WAITING = _TERMINAL | {_SUBMITTED}
# A task left out of a sample gets a state-API record after all once it has run this long.
LONG_RUNNING_S = 10.0
_BILLED = ("CPU", "GPU")  # the resources whose seconds are summed per job
_WIRE = operator.itemgetter(0, 2, 3)  # a Transition as it travels: (time, state, cause)
_FINISHED_STATE = S.FINISHED
_NAME = operator.attrgetter("name")
_START = operator.attrgetter("start_time")
_END = operator.attrgetter("end_time")
_SUBMIT = operator.attrgetter("submit_time")


def parse_labels(text: str, what: str = "FREIGHT_JOB_LABELS") -> dict[str, str]:
    """Parse ``"team=ml,owner=alice"``; raise ValueError saying what is wrong."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"{what}: {part!r} is not key=value; write labels as 'team=ml,owner=alice'."
            )
        out[key.strip()] = value.strip()
    return out


class Telemetry:
    """Records one process's task figures and reports them to its node agent."""

    def __init__(self, cw: CoreWorker, recorder: Recorder = RECORDER) -> None:
        self.cw = cw
        self.rec = recorder
        self.enabled = settings.instrumentation
        recorder.enabled = self.enabled
        recorder.top_n = settings.metrics_top_n
        self.interval = settings.telemetry_interval_s
        # Each report sends one row per task that changed (cw.tasks.touched) with its new
        # transitions, so a short task costs one row, not one event per state change.
        self.max_events = max(1, settings.task_events_buffer)
        self.sample = max(0, settings.task_rows_sample)
        # Running tasks left out of a sample, oldest first (see _revisit), and the successful
        # tasks left out since the last report by (job id, name, actor task): the head counts
        # them in its summaries, so they are exact although the records are a sample. Leaving
        # a task out of the sample is by design, not a loss: it is not counted as dropped.
        self.unsent: deque[tuple[float, TaskRecord]] = deque()
        self.sampled_out: dict[tuple[str, str, bool], int] = {}
        # The live tasks left out of the sample now, by (job, name, actor task, state, pending
        # reason): each report sends the whole snapshot, which replaces the previous one.
        self.live_out: list[tuple[str, str, bool, str, str, int]] = []
        # Cumulative resource-seconds by (job id, resource); the agent maps jobs to team/owner.
        self.usage: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._flushes = 0
        self._gc_start = 0.0
        self.gc_pauses: deque[tuple[str, float]] = deque(maxlen=10_000)
        if not self.enabled:
            return
        cw.tasks.touched = {}
        cw.tasks.on_retry = self._on_retry
        gc.callbacks.append(self._on_gc)
        threading.Thread(target=self._loop, name="freight-telemetry", daemon=True).start()

    # -- recording ---------------------------------------------------------------------------
    # The hot path only marks a task record as touched (TaskTable.touched); the figures are
    # worked out here, once per report, from the transitions each record gained since the last
    # one. Retries are the exception: the attempt's times are overwritten by the next attempt,
    # so they are recorded as they happen (a rare path).

    def _on_retry(self, rec: TaskRecord) -> None:
        if rec.start_time:
            waited = max(0.0, rec.start_time - rec.submit_time)
            took = self._attempt_ran(rec)
            self.rec.observe("freight_task_scheduling_latency_seconds", (rec.name,), waited)
            self.rec.observe("freight_task_execution_latency_seconds", (rec.name,), took)
        self.rec.inc("freight_task_retries_total", (rec.name, rec.error_kind or "system"))

    def _attempt_ran(
        self, rec: TaskRecord, usage: dict[tuple[str, str], float] | None = None
    ) -> float:
        """Add one attempt's resource-seconds to ``usage`` (default: the process's, under its
        lock); return how long it ran."""
        took = max(0.0, rec.end_time - rec.start_time)
        if rec.resources and took:
            if usage is None:
                with self.lock:
                    self._add_usage(self.usage, rec, took)
            else:
                self._add_usage(usage, rec, took)
        return took

    @staticmethod
    def _add_usage(usage: dict[tuple[str, str], float], rec: TaskRecord, took: float) -> None:
        for res, amount in rec.resources.items():  # type: ignore[union-attr]
            if amount and res in _BILLED:
                key = (rec.job_id, res)
                usage[key] = usage.get(key, 0.0) + amount * took

    def _collect(self, records: list[TaskRecord]) -> tuple[list[tuple[Any, ...]], int]:
        """Record the figures of the records' new transitions; return their rows (at most
        ``max_events``) and how many transitions were left out.

        Tasks whose whole life falls in this report and that succeeded at the first attempt
        (nearly all of them under load) are counted in bulk; the rest one by one."""
        whole: list[TaskRecord] = []
        rest: list[TaskRecord] = []
        for r in records:  # one look at each record's state: it may change meanwhile
            if r.state is _FINISHED_STATE and not r.reported and not r.attempt:
                whole.append(r)
            else:
                rest.append(r)
        submitted: dict[str, int] = {}
        finished: dict[tuple[str, str, str, str], int] = {}
        sched: dict[str, list[float]] = {}
        execs: dict[str, list[float]] = {}
        usage: dict[tuple[str, str], float] = {}
        if whole:
            self._collect_whole(whole, submitted, finished, sched, execs, usage)
        picked: list[tuple[TaskRecord, Any]] = []
        fresh: list[tuple[TaskRecord, Any]] = []  # first seen, still live: sampled too
        for rec in rest:
            trs = rec.transitions[rec.reported :]
            if not trs:
                if rec.reported and not rec.unsent and rec.state.value not in _NOT_WAITING:
                    # Only its pending reason changed (the agent found it infeasible, say): its
                    # last transition again, which carries the new reason to its record.
                    picked.append((rec, rec.transitions[rec.reported - 1 : rec.reported]))
                continue
            rec.reported += len(trs)
            name = rec.name
            # Only a slice's ends count: submission is a task's first transition and its end
            # the last one (retries in between were recorded when they happened).
            first = not trs[0][1]
            if first:
                submitted[name] = submitted.get(name, 0) + 1
            state = trs[-1][2]
            ended = state in _TERMINAL
            if ended:
                if rec.start_time:
                    waited = max(0.0, rec.start_time - rec.submit_time)
                    sched.setdefault(name, []).append(waited)
                    execs.setdefault(name, []).append(self._attempt_ran(rec, usage))
                if state == _FINISHED:  # an earlier attempt's error does not label it
                    key = (name, state, "none", "")
                else:
                    key = (name, state, rec.error_kind or "system", rec.error_type)
                finished[key] = finished.get(key, 0) + 1
            if rec.unsent:
                if state == _FINISHED and not rec.attempt:
                    self._left_out(rec)  # a sampled-out task that succeeded
                elif ended or rec.attempt:
                    # Failed, cancelled or retried: worth a record after all, whole (the
                    # state service has not seen it).
                    rec.unsent = False
                    picked.append((rec, rec.transitions[: rec.reported]))
                elif state == _SUBMITTED:
                    self.unsent.append((time.time(), rec))  # now running: watch how long
            elif first and not ended:
                fresh.append((rec, trs))
            else:
                picked.append((rec, trs))
        sampled = self._sample(whole, fresh, picked)  # may add long-running tasks to picked
        rows, dropped = self._rows(sampled, picked)
        r = self.rec
        for name, n in submitted.items():
            r.inc("freight_tasks_submitted_total", (name,), n)
        for key, n in finished.items():
            r.inc("freight_tasks_finished_total", key, n)
        for name, values in sched.items():
            r.observe_many("freight_task_scheduling_latency_seconds", (name,), values)
        for name, values in execs.items():
            r.observe_many("freight_task_execution_latency_seconds", (name,), values)
        if usage:
            with self.lock:
                for key, seconds in usage.items():
                    self.usage[key] = self.usage.get(key, 0.0) + seconds
        return rows, dropped

    def _left_out(self, rec: TaskRecord) -> None:
        key = (rec.job_id, rec.name, bool(rec.actor_id))
        self.sampled_out[key] = self.sampled_out.get(key, 0) + 1

    def _sample(
        self, whole: list[TaskRecord], fresh: list[tuple[TaskRecord, Any]], picked: list[Any]
    ) -> list[tuple[TaskRecord, Any]]:
        """The tasks first seen in this report that get a state-API row: all of them up to
        ``FREIGHT_TASK_ROWS_SAMPLE``, beyond it an evenly spread sample of that many (a million
        tiny tasks need no million records at the head). Whole successful lives left out are
        counted in ``sampled_out`` at once; live tasks left out are marked ``unsent`` and sent
        after all, whole, if they fail or are retried, or once they have run ``LONG_RUNNING_S``
        (:meth:`_revisit`); their successes are counted in ``sampled_out`` when they come."""
        now = time.time()
        self._revisit(now, picked)
        n = len(whole) + len(fresh)
        if not self.sample or n <= self.sample:
            return [(rec, rec.transitions) for rec in whole] + fresh
        out = []
        step = n / self.sample
        chosen = {int(i * step) for i in range(self.sample)}
        for i, rec in enumerate(whole):
            if i in chosen:
                out.append((rec, rec.transitions))
            else:
                self._left_out(rec)
        base = len(whole)
        unsent = self.unsent
        running = S.SUBMITTED_TO_WORKER
        for i, (rec, trs) in enumerate(fresh, base):
            if i in chosen:
                out.append((rec, trs))
            else:
                rec.unsent = True
                if rec.state is running:
                    unsent.append((now, rec))  # watched from now on (see _revisit)
        return out

    def _revisit(self, now: float, picked: list[Any]) -> None:
        """Send the live tasks left out of a sample that have been running for more than
        ``LONG_RUNNING_S`` (a long task stays visible). ``unsent`` holds each left-out task
        once per dispatch, from the report that saw it running, oldest first; queued tasks are
        not in it (a million queued tasks cost nothing here until they run)."""
        unsent = self.unsent
        cutoff = now - LONG_RUNNING_S
        running = S.SUBMITTED_TO_WORKER
        while unsent and unsent[0][0] <= cutoff:
            _, rec = unsent.popleft()
            # Still left out and still on the dispatch that put it here (the report that saw
            # it came after the dispatch, so that dispatch is older than the cutoff too).
            if rec.unsent and rec.state is running and rec.transitions[-1][0] <= cutoff:
                rec.unsent = False
                picked.append((rec, rec.transitions[: rec.reported]))

    @staticmethod
    def _collect_whole(
        whole: list[TaskRecord],
        submitted: dict[str, int],
        finished: dict[tuple[str, str, str, str], int],
        sched: dict[str, list[float]],
        execs: dict[str, list[float]],
        usage: dict[tuple[str, str], float],
    ) -> None:
        """The figures of whole successful lives, in bulk. Their transitions need no
        ``reported`` mark: a finished task gains none, so it is never touched again."""
        for name, n in Counter(map(_NAME, whole)).items():
            submitted[name] = submitted.get(name, 0) + n
            key = (name, _FINISHED, "none", "")
            finished[key] = finished.get(key, 0) + n
        ran = [r for r in whole if r.start_time]
        starts = list(map(_START, ran))
        waited = [w if w > 0.0 else 0.0 for w in map(operator.sub, starts, map(_SUBMIT, ran))]
        took = [t if t > 0.0 else 0.0 for t in map(operator.sub, map(_END, ran), starts)]
        names = list(map(_NAME, ran))
        if names and names.count(names[0]) == len(names):  # one function: no grouping
            sched.setdefault(names[0], []).extend(waited)
            execs.setdefault(names[0], []).extend(took)
        else:
            for name, w, t in zip(names, waited, took, strict=True):
                sched.setdefault(name, []).append(w)
                execs.setdefault(name, []).append(t)
        # Resource-seconds: summed per (job, resource dict) first; calls of one function share
        # their options' dict, so the per-resource work is once per function, not per task.
        by_ask: dict[tuple[str, int], list[Any]] = {}
        for rec, t in zip(ran, took, strict=True):
            res = rec.resources
            if res and t:
                k = (rec.job_id, id(res))
                got = by_ask.get(k)
                if got is None:
                    by_ask[k] = [res, t]
                else:
                    got[1] += t
        for (job, _), (res, seconds) in by_ask.items():
            for name, amount in res.items():
                if amount and name in _BILLED:
                    key = (job, name)
                    usage[key] = usage.get(key, 0.0) + amount * seconds

    def _rows(
        self, sampled: list[tuple[TaskRecord, Any]], picked: list[tuple[TaskRecord, Any]]
    ) -> tuple[list[tuple[Any, ...]], int]:
        """The state-API rows of the sampled new tasks and the other changed records (at most
        ``max_events``), and how many transitions were lost for want of room."""
        dropped = 0
        todo = sampled + picked
        room = self.max_events
        if len(todo) > room:
            # The report is late or the agent slow: count what is left out, never block.
            dropped += sum(len(trs) for _, trs in todo[room:])
            del todo[room:]
        node, address = self.cw.node_id, self.cw.address
        rows = []
        for rec, trs in todo:
            last = trs[-1]
            state = last[2]
            rows.append(
                (
                    rec.task_id.hex(),
                    rec.job_id,
                    rec.name,
                    rec.actor_id,
                    rec.parent_task_id.hex(),
                    node,
                    rec.worker_id,
                    rec.attempt,
                    state,
                    last[0],
                    last[3],
                    rec.pending_reason,
                    rec.error_type,
                    rec.error_kind,
                    rec.start_time,
                    rec.end_time,
                    rec.trace_id,
                    address,
                    last[3] if state == "FAILED" else "",
                    rec.traceback if state == "FAILED" else "",
                    list(map(_WIRE, trs)),
                )
            )
        return rows, dropped

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self._gc_start:
            pause = time.perf_counter() - self._gc_start
            self._gc_start = 0.0
            # A collection can start while this thread holds a recorder lock: take no lock here
            # (deque.append is atomic); report() records the pauses.
            self.gc_pauses.append((str(info.get("generation", "")), pause))

    # -- reporting ---------------------------------------------------------------------------

    def _gauges(self) -> None:
        tasks = self.cw.tasks
        live = tasks.live
        by_state = dict.fromkeys((S.PENDING_ARGS_AVAIL, S.PENDING_NODE_ASSIGNMENT, _SUBMITTED), 0)
        # A million queued tasks make this a noticeable scan: then refresh every tenth report.
        if len(live) > 100_000 and self._flushes % 10:
            return
        out: dict[tuple[str, str, bool, str, str], int] = {}
        with self.cw.lock:
            for rec in list(live.values()):
                by_state[rec.state] = by_state.get(rec.state, 0) + 1
                if rec.unsent:
                    job, name, actor = rec.job_id, rec.name, bool(rec.actor_id)
                    key = (job, name, actor, rec.state.value, rec.pending_reason)
                    out[key] = out.get(key, 0) + 1
            pending = tasks.pending_by_reason()
        self.live_out = [(*key, n) for key, n in out.items()]
        r = self.rec
        r.clear_gauge("freight_tasks")
        for state, n in by_state.items():
            r.set("freight_tasks", (str(state),), n)
        depth = dict.fromkeys(PENDING_REASONS, 0)
        for reason, n in pending.items():
            label = QUEUE_REASONS.get(reason, "waiting_for_resources")
            depth[label] += n
        r.clear_gauge("freight_queue_depth")
        for label, n in depth.items():
            r.set("freight_queue_depth", (label,), n)

    def report(self, final: bool = False) -> None:
        """Send the agent the current figures and the task events since the last report."""
        if not self.enabled:
            return
        self._flushes += 1
        while self.gc_pauses:
            gen, pause = self.gc_pauses.popleft()
            self.rec.observe("freight_gc_pause_seconds", (gen,), pause)
        tasks = self.cw.tasks
        with self.cw.lock:  # transitions mark records touched under the owner's lock
            touched, tasks.touched = tasks.touched or {}, {}
        # Outside the lock: a transition appended meanwhile re-touches its task and goes with
        # the next report (``reported`` counts exactly what was sliced here).
        rows, dropped = self._collect(list(touched.values()))
        # After _collect, which marks the tasks it leaves out of the sample: the snapshot of
        # live left-out tasks then matches the successes counted in this report.
        self._gauges()
        counted = [(*key, n) for key, n in self.sampled_out.items()]
        self.sampled_out = {}
        with self.lock:
            usage = dict(self.usage)
        snap = self.rec.snapshot()
        # Packed here, once: the agent forwards the bytes to the head without reading them.
        packed = m.pack_task_rows(rows) if rows else b""
        try:
            self.cw.agent.send(
                m.Telemetry(snap, usage, packed, dropped, final, len(rows), counted, self.live_out)
            )
        except OSError:
            pass  # the agent is gone; the process is going too

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.report()
            except Exception as e:  # telemetry never takes the process down
                print(f"freight: telemetry report failed: {e!r}", file=sys.stderr)

    def close(self) -> None:
        """Stop reporting; send one final report (clean shutdown)."""
        self._stop.set()
        if self.enabled:
            try:
                gc.callbacks.remove(self._on_gc)
            except ValueError:
                pass
            self.report(final=True)
            self.rec.reset()
