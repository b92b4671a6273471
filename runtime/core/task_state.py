"""The task lifecycle as an I/O-free state machine, kept by each task's owner.

States follow Ray's names. Events come in as method calls; each returns what the owner must do
next (an :class:`Outcome`), and each change is recorded as a timestamped transition with a cause.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from .transitions import InvalidTransition, Transition, TransitionLog, now


class TaskState(StrEnum):
    PENDING_ARGS_AVAIL = "PENDING_ARGS_AVAIL"
    PENDING_NODE_ASSIGNMENT = "PENDING_NODE_ASSIGNMENT"
    SUBMITTED_TO_WORKER = "SUBMITTED_TO_WORKER"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


S = TaskState
_VALUE = {state: state.value for state in TaskState}  # plain str: cheaper than Enum.value
TERMINAL = frozenset({S.FINISHED, S.FAILED, S.CANCELLED})
ALLOWED: dict[TaskState, frozenset[TaskState]] = {
    S.PENDING_ARGS_AVAIL: frozenset({S.PENDING_NODE_ASSIGNMENT, S.FAILED, S.CANCELLED}),
    S.PENDING_NODE_ASSIGNMENT: frozenset({S.SUBMITTED_TO_WORKER, S.FAILED, S.CANCELLED}),
    S.SUBMITTED_TO_WORKER: frozenset(
        # PENDING_NODE_ASSIGNMENT: a retry; PENDING_ARGS_AVAIL: an argument was lost
        {S.FINISHED, S.FAILED, S.CANCELLED, S.PENDING_NODE_ASSIGNMENT, S.PENDING_ARGS_AVAIL}
    ),
    S.FINISHED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}

# Pending reasons shown by the state API and `freight status`.
WAITING_FOR_ARGS = "waiting for arguments"
WAITING_FOR_RESOURCES = "waiting for resources"
WAITING_FOR_WORKER = "waiting for a worker to start"
INFEASIBLE = "infeasible"
# Only drained nodes (freight drain) could run it: it waits for one to be undrained.
WAITING_FOR_DRAINED = "waiting: every feasible node is draining"


@dataclass(slots=True)
class TaskRecord:
    task_id: bytes
    name: str
    max_retries: int
    retry_exceptions: bool | tuple[type, ...] = False
    actor_id: str = ""
    state: TaskState = S.PENDING_ARGS_AVAIL
    attempt: int = 0
    pending_reason: str = WAITING_FOR_ARGS
    worker_id: str = ""
    submit_time: float = 0.0
    transitions: list[Transition] = field(default_factory=list)
    job_id: str = ""
    parent_task_id: bytes = b""
    # Set by the owner from the worker's report before the transition that ends an attempt.
    start_time: float = 0.0
    end_time: float = 0.0
    error_type: str = ""
    error_kind: str = ""  # none | application | system | cancelled (set on FAILED/CANCELLED)
    traceback: str = ""  # the remote traceback of the failed attempt, when there is one
    trace_id: str = ""
    resources: dict[str, float] | None = None
    reported: int = 0  # transitions already sent to the state service
    unsent: bool = False  # left out of the state service's sample so far (see telemetry)


class Outcome(StrEnum):
    RETRY = "retry"
    FINAL = "final"


class TaskTable:
    """Live tasks of one owner plus a bounded history of finished ones."""

    def __init__(self, history: int = 10_000, validate: bool = False) -> None:
        self.live: dict[bytes, TaskRecord] = {}
        self.history: deque[TaskRecord] = deque(maxlen=history)
        self.log = TransitionLog()
        self.counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        self._validate = validate
        # Set by the process's telemetry: every record that changed since it last looked (a dict
        # store per transition; the figures are worked out from the records once a second).
        self.touched: dict[bytes, TaskRecord] | None = None
        # Called with a record whose attempt failed and is about to be retried, while the
        # attempt's start and end times are still on it.
        self.on_retry: Callable[[TaskRecord], None] | None = None

    def _move(self, rec: TaskRecord, new: TaskState, cause: str) -> None:
        old = rec.state
        if new not in ALLOWED[old]:
            raise InvalidTransition(f"task {rec.task_id.hex()}: {old.value} -> {new.value}")
        tr = Transition(now(), _VALUE[old], _VALUE[new], cause)
        rec.state = new
        rec.transitions.append(tr)
        self.counts[new] += 1
        if new in TERMINAL:
            self.live.pop(rec.task_id, None)
            self.history.append(rec)
        if self.touched is not None:
            self.touched[rec.task_id] = rec
        self.log.emit(rec, tr)
        if self._validate:
            self.validate_record(rec)

    def submit(self, rec: TaskRecord, args_ready: bool) -> None:
        t = rec.submit_time = now()
        self.counts[S.PENDING_ARGS_AVAIL] += 1
        self.live[rec.task_id] = rec
        if self.touched is not None:
            self.touched[rec.task_id] = rec
        first = Transition(t, "", "PENDING_ARGS_AVAIL", "submitted")
        if not args_ready:
            rec.transitions.append(first)
            self.log.emit(rec, first)
            return
        # Both steps at once: the common case of a task whose arguments are all values.
        ready = Transition(t, "PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "arguments ready")
        rec.transitions += (first, ready)
        rec.state = S.PENDING_NODE_ASSIGNMENT
        rec.pending_reason = WAITING_FOR_RESOURCES
        self.counts[S.PENDING_NODE_ASSIGNMENT] += 1
        self.log.emit(rec, first)
        self.log.emit(rec, ready)
        if self._validate:
            self.validate_record(rec)

    def args_ready(self, task_id: bytes) -> None:
        rec = self.live[task_id]
        rec.pending_reason = WAITING_FOR_RESOURCES
        self._move(rec, S.PENDING_NODE_ASSIGNMENT, "arguments ready")

    def set_pending_reason(self, task_id: bytes, reason: str) -> None:
        rec = self.live.get(task_id)
        if rec is not None and rec.state is not S.SUBMITTED_TO_WORKER:
            if rec.pending_reason == reason:
                return
            rec.pending_reason = reason
            if self.touched is not None and rec.reported and not rec.unsent:
                # The state service holds its record with the old reason: send the new one.
                self.touched[rec.task_id] = rec

    def dispatched(self, task_id: bytes, worker_id: str) -> None:
        rec = self.live[task_id]
        rec.worker_id = worker_id
        rec.pending_reason = ""
        self._move(rec, S.SUBMITTED_TO_WORKER, f"pushed to worker {worker_id}")

    def requeued(self, task_id: bytes) -> None:
        """The task never reached its worker (the connection was already closed): it waits
        again, and the attempt does not count."""
        rec = self.live.get(task_id)
        if rec is not None and rec.state is S.SUBMITTED_TO_WORKER:
            rec.pending_reason = WAITING_FOR_WORKER
            self._move(rec, S.PENDING_NODE_ASSIGNMENT, "not delivered: its worker was gone")

    def argument_lost(self, task_id: bytes, object_id: bytes) -> None:
        """An argument was lost with its node before the task could read it: the task waits
        for it to be rebuilt, and the attempt does not count."""
        rec = self.live[task_id]
        rec.pending_reason = WAITING_FOR_ARGS
        self._move(rec, S.PENDING_ARGS_AVAIL, f"argument {object_id.hex()} lost: rebuilding it")

    def finished(self, task_id: bytes) -> None:
        self._move(self.live[task_id], S.FINISHED, "returned")

    def failed(
        self,
        task_id: bytes,
        cause: str,
        system_error: bool,
        app_retryable: bool,
        error_type: str = "",
        error_kind: str = "",
        traceback: str = "",
    ) -> Outcome:
        """A task attempt failed; decide whether it is retried (Ray's max_retries rules).

        ``error_kind`` (application | system) defaults to what ``system_error`` says;
        ``traceback`` is the remote traceback, kept for the state API.
        """
        rec = self.live[task_id]
        rec.error_type = error_type
        rec.traceback = traceback
        rec.error_kind = error_kind or ("system" if system_error else "application")
        retry = (system_error or app_retryable) and (
            rec.max_retries < 0 or rec.attempt < rec.max_retries
        )
        if retry and rec.state is S.SUBMITTED_TO_WORKER:
            if self.on_retry is not None:
                self.on_retry(rec)
            rec.attempt += 1
            rec.pending_reason = WAITING_FOR_RESOURCES
            self._move(rec, S.PENDING_NODE_ASSIGNMENT, f"retry {rec.attempt}: {cause}")
            return Outcome.RETRY
        self._move(rec, S.FAILED, cause)
        return Outcome.FINAL

    def cancelled(self, task_id: bytes, cause: str = "cancelled") -> bool:
        rec = self.live.get(task_id)
        if rec is None:
            return False
        rec.error_kind = "cancelled"
        rec.error_type = "TaskCancelledError"
        self._move(rec, S.CANCELLED, cause)
        return True

    def get(self, task_id: bytes) -> TaskRecord | None:
        rec = self.live.get(task_id)
        if rec is not None:
            return rec
        for old in self.history:
            if old.task_id == task_id:
                return old
        return None

    def pending_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.live.values():
            if rec.state is not S.SUBMITTED_TO_WORKER:
                out[rec.pending_reason] = out.get(rec.pending_reason, 0) + 1
        return out

    def validate_record(self, rec: TaskRecord) -> None:
        """Check one task's invariants (run after each of its transitions when enabled)."""
        tid = rec.task_id
        live = self.live.get(tid)
        if (live is rec) == (rec.state in TERMINAL):
            raise InvalidTransition(
                f"task {tid.hex()} in state {rec.state.value} live={live is rec}"
            )
        if not rec.transitions or rec.transitions[-1].new != rec.state.value:
            raise InvalidTransition(f"task {tid.hex()}: last transition != state")
        for a, b in zip(rec.transitions, rec.transitions[1:], strict=False):
            if b.time < a.time or a.new != b.old:
                raise InvalidTransition(f"task {tid.hex()}: transitions out of order")
        if rec.state is S.SUBMITTED_TO_WORKER and not rec.worker_id:
            raise InvalidTransition(f"task {tid.hex()} submitted without a worker")

    def validate(self) -> None:
        """Check the whole table; raise InvalidTransition on the first broken invariant."""
        for tid, rec in self.live.items():
            if tid != rec.task_id:
                raise InvalidTransition(f"live task {tid.hex()} filed under another id")
            self.validate_record(rec)
        for rec in self.history:
            if rec.state not in TERMINAL:
                raise InvalidTransition(f"finished task {rec.task_id.hex()} not terminal")
