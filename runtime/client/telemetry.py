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
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from freight.config import settings
from freight.core.task_state import TERMINAL, TaskRecord, TaskState
from freight.core.transitions import Transition
from freight.observe.recorder import RECORDER, Recorder
from freight.protocol import messages as m

if TYPE_CHECKING:
    from .core_worker import CoreWorker

S = TaskState
_FINISHED = S.FINISHED.value
_PENDING_NODE = S.PENDING_NODE_ASSIGNMENT.value
_SUBMITTED = S.SUBMITTED_TO_WORKER.value
_TERMINAL = frozenset(s.value for s in TERMINAL)


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
        # Tasks that changed since the last report; each report sends one row per task with its
        # new transitions, so a short task costs one row, not one event per state change.
        self.touched: dict[bytes, TaskRecord] = {}
        self.max_events = max(1, settings.task_events_buffer)
        self.dropped = 0
        # Cumulative resource-seconds by (job id, resource); the agent maps jobs to team/owner.
        self.usage: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._flushes = 0
        self._gc_start = 0.0
        self.gc_pauses: deque[tuple[str, float]] = deque(maxlen=10_000)
        if not self.enabled:
            return
        cw.tasks.log.subscribe(self.on_transition)
        gc.callbacks.append(self._on_gc)
        threading.Thread(target=self._loop, name="freight-telemetry", daemon=True).start()

    # -- recording ---------------------------------------------------------------------------

    def on_transition(self, rec: TaskRecord, tr: Transition) -> None:
        new = tr.new
        r = self.rec
        if not tr.old:
            r.inc("freight_tasks_submitted_total", (rec.name,))
        elif new in _TERMINAL or (new == _PENDING_NODE and tr.old == _SUBMITTED):
            if rec.start_time:
                self._attempt_ran(rec)
            if new == _PENDING_NODE:
                r.inc("freight_task_retries_total", (rec.name, rec.error_kind or "system"))
            else:
                kind = "none" if new == _FINISHED else (rec.error_kind or "system")
                r.inc("freight_tasks_finished_total", (rec.name, new, kind, rec.error_type))
        self._event(rec, tr)

    def _attempt_ran(self, rec: TaskRecord) -> None:
        r = self.rec
        r.observe(
            "freight_task_scheduling_latency_seconds",
            (rec.name,),
            max(0.0, rec.start_time - rec.submit_time),
        )
        took = max(0.0, rec.end_time - rec.start_time)
        r.observe("freight_task_execution_latency_seconds", (rec.name,), took)
        if rec.resources and took:
            with self.lock:
                for res, amount in rec.resources.items():
                    if amount and res in ("CPU", "GPU"):
                        key = (rec.job_id, res)
                        self.usage[key] = self.usage.get(key, 0.0) + amount * took

    def _event(self, rec: TaskRecord, tr: Transition) -> None:
        touched = self.touched
        if len(touched) >= self.max_events and rec.task_id not in touched:
            self.dropped += 1  # the report is late or the agent slow: count, never block
            return
        touched[rec.task_id] = rec

    def _rows(self, records: list[TaskRecord]) -> list[tuple[Any, ...]]:
        """One row per task: TaskEvent fields (latest state) + the transitions not yet sent."""
        cw = self.cw
        node, address = cw.node_id, cw.address
        rows = []
        for rec in records:
            trs = rec.transitions[rec.reported :]
            if not trs:
                continue
            rec.reported += len(trs)
            last = trs[-1]
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
                    last.new,
                    last.time,
                    last.cause,
                    rec.pending_reason,
                    rec.error_type,
                    rec.error_kind,
                    rec.start_time,
                    rec.end_time,
                    rec.trace_id,
                    address,
                    last.cause if last.new == "FAILED" else "",
                    [(t.time, t.new, t.cause) for t in trs],
                )
            )
        return rows

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
        with self.cw.lock:
            for rec in list(live.values()):
                by_state[rec.state] = by_state.get(rec.state, 0) + 1
            pending = tasks.pending_by_reason()
        r = self.rec
        r.clear_gauge("freight_tasks")
        for state, n in by_state.items():
            r.set("freight_tasks", (str(state),), n)
        r.clear_gauge("freight_queue_depth")
        for reason, n in pending.items():
            r.set("freight_queue_depth", (reason,), n)

    def report(self, final: bool = False) -> None:
        """Send the agent the current figures and the task events since the last report."""
        if not self.enabled:
            return
        self._flushes += 1
        self._gauges()
        while self.gc_pauses:
            gen, pause = self.gc_pauses.popleft()
            self.rec.observe("freight_gc_pause_seconds", (gen,), pause)
        with self.cw.lock:  # the listener fills ``touched`` under the owner's lock
            touched, self.touched = self.touched, {}
            dropped, self.dropped = self.dropped, 0
        # Outside the lock: a transition appended meanwhile re-touches its task and goes with
        # the next report (``reported`` counts exactly what was sliced here).
        rows = self._rows(list(touched.values()))
        with self.lock:
            usage = dict(self.usage)
        snap = self.rec.snapshot()
        try:
            self.cw.agent.send(m.Telemetry(snap, usage, rows, dropped, final))
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
