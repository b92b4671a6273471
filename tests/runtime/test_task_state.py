"""The owner's task lifecycle state machine (``freight.core.task_state``), driven directly."""

from __future__ import annotations

import pytest

from freight.core.task_state import (
    INFEASIBLE,
    WAITING_FOR_ARGS,
    WAITING_FOR_RESOURCES,
    WAITING_FOR_WORKER,
    Outcome,
    TaskRecord,
    TaskState,
    TaskTable,
)
from freight.core.transitions import InvalidTransition, Transition

S = TaskState


def tid(n: int) -> bytes:
    return n.to_bytes(4, "big")


def new_task(
    table: TaskTable,
    n: int = 1,
    *,
    max_retries: int = 3,
    args_ready: bool = True,
    retry_exceptions: bool | tuple[type, ...] = False,
) -> TaskRecord:
    rec = TaskRecord(tid(n), f"f{n}", max_retries, retry_exceptions=retry_exceptions)
    table.submit(rec, args_ready=args_ready)
    return rec


def running_task(table: TaskTable, n: int = 1, **kw: object) -> TaskRecord:
    rec = new_task(table, n, **kw)  # type: ignore[arg-type]
    table.dispatched(rec.task_id, f"w{n}")
    return rec


@pytest.fixture
def table() -> TaskTable:
    return TaskTable(validate=True)


# -- the happy path ---------------------------------------------------------------------------


def test_submit_without_args_waits_for_arguments(table: TaskTable) -> None:
    rec = new_task(table, args_ready=False)
    assert rec.state is S.PENDING_ARGS_AVAIL
    assert rec.pending_reason == WAITING_FOR_ARGS
    assert table.live == {rec.task_id: rec}
    assert rec.submit_time > 0
    assert rec.transitions[0][1:] == ("", "PENDING_ARGS_AVAIL", "submitted")


def test_submit_with_args_ready_goes_to_node_assignment(table: TaskTable) -> None:
    rec = new_task(table, args_ready=True)
    assert rec.state is S.PENDING_NODE_ASSIGNMENT
    assert rec.pending_reason == WAITING_FOR_RESOURCES
    assert [t.new for t in rec.transitions] == ["PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT"]


def test_args_ready_later_moves_the_task_on(table: TaskTable) -> None:
    rec = new_task(table, args_ready=False)
    table.args_ready(rec.task_id)
    assert rec.state is S.PENDING_NODE_ASSIGNMENT
    assert rec.transitions[-1].cause == "arguments ready"


def test_dispatch_records_the_worker_and_clears_the_reason(table: TaskTable) -> None:
    rec = running_task(table)
    assert rec.state is S.SUBMITTED_TO_WORKER
    assert rec.worker_id == "w1"
    assert rec.pending_reason == ""
    assert rec.transitions[-1].cause == "pushed to worker w1"


def test_finished_task_leaves_live_and_enters_history(table: TaskTable) -> None:
    rec = running_task(table)
    table.finished(rec.task_id)
    assert rec.state is S.FINISHED
    assert rec.task_id not in table.live
    assert list(table.history) == [rec]
    assert table.get(rec.task_id) is rec
    assert [t.new for t in rec.transitions] == [
        "PENDING_ARGS_AVAIL",
        "PENDING_NODE_ASSIGNMENT",
        "SUBMITTED_TO_WORKER",
        "FINISHED",
    ]


def test_transitions_are_timestamped_in_order(table: TaskTable) -> None:
    rec = running_task(table)
    table.finished(rec.task_id)
    times = [t.time for t in rec.transitions]
    assert times == sorted(times)
    assert all(isinstance(t, Transition) for t in rec.transitions)


def test_counts_track_entries_into_each_state(table: TaskTable) -> None:
    a = running_task(table, 1)
    b = running_task(table, 2)
    new_task(table, 3, args_ready=False)
    table.finished(a.task_id)
    table.cancelled(b.task_id)
    assert table.counts[S.PENDING_ARGS_AVAIL] == 3
    assert table.counts[S.PENDING_NODE_ASSIGNMENT] == 2
    assert table.counts[S.SUBMITTED_TO_WORKER] == 2
    assert table.counts[S.FINISHED] == 1
    assert table.counts[S.CANCELLED] == 1
    assert table.counts[S.FAILED] == 0


def test_get_of_an_unknown_task_is_none(table: TaskTable) -> None:
    assert table.get(b"nope") is None


# -- cancellation -----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["args", "node", "worker"])
def test_cancel_from_every_non_terminal_state(table: TaskTable, stage: str) -> None:
    rec = new_task(table, args_ready=stage != "args")
    if stage == "worker":
        table.dispatched(rec.task_id, "w")
    assert table.cancelled(rec.task_id, "user asked") is True
    assert rec.state is S.CANCELLED
    assert rec.transitions[-1].cause == "user asked"
    assert rec.task_id not in table.live


def test_cancel_of_a_finished_or_unknown_task_returns_false(table: TaskTable) -> None:
    rec = running_task(table)
    table.finished(rec.task_id)
    assert table.cancelled(rec.task_id) is False
    assert rec.state is S.FINISHED
    assert table.cancelled(b"unknown") is False


# -- retries ----------------------------------------------------------------------------------


def test_system_error_is_retried_up_to_max_retries(table: TaskTable) -> None:
    rec = running_task(table, max_retries=2)
    outcomes = []
    for _ in range(3):
        outcomes.append(table.failed(rec.task_id, "worker died", True, False))
        if rec.state is S.PENDING_NODE_ASSIGNMENT:
            table.dispatched(rec.task_id, "w2")
    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.FINAL]
    assert rec.attempt == 2
    assert rec.state is S.FAILED
    assert rec.transitions[-1].cause == "worker died"


def test_retry_goes_back_to_node_assignment_with_a_reason(table: TaskTable) -> None:
    rec = running_task(table, max_retries=1)
    assert table.failed(rec.task_id, "worker died", True, False) is Outcome.RETRY
    assert rec.state is S.PENDING_NODE_ASSIGNMENT
    assert rec.pending_reason == WAITING_FOR_RESOURCES
    assert rec.attempt == 1
    assert rec.transitions[-1].cause == "retry 1: worker died"
    assert rec.task_id in table.live


def test_max_retries_zero_fails_at_once(table: TaskTable) -> None:
    rec = running_task(table, max_retries=0)
    assert table.failed(rec.task_id, "worker died", True, False) is Outcome.FINAL
    assert rec.state is S.FAILED
    assert rec.attempt == 0


def test_max_retries_minus_one_retries_forever(table: TaskTable) -> None:
    rec = running_task(table, max_retries=-1)
    for i in range(1, 501):
        assert table.failed(rec.task_id, "worker died", True, False) is Outcome.RETRY
        assert rec.attempt == i
        table.dispatched(rec.task_id, f"w{i}")
    table.finished(rec.task_id)
    assert rec.state is S.FINISHED


def test_application_error_is_not_retried_unless_retryable(table: TaskTable) -> None:
    rec = running_task(table, max_retries=5)
    assert table.failed(rec.task_id, "ValueError", False, False) is Outcome.FINAL
    assert rec.state is S.FAILED
    assert rec.attempt == 0


def test_retryable_application_error_is_retried_up_to_max_retries(table: TaskTable) -> None:
    rec = running_task(table, max_retries=1, retry_exceptions=True)
    assert table.failed(rec.task_id, "ValueError", False, True) is Outcome.RETRY
    table.dispatched(rec.task_id, "w2")
    assert table.failed(rec.task_id, "ValueError", False, True) is Outcome.FINAL
    assert rec.attempt == 1
    assert rec.state is S.FAILED


def test_system_and_application_retries_share_one_budget(table: TaskTable) -> None:
    rec = running_task(table, max_retries=2)
    assert table.failed(rec.task_id, "worker died", True, False) is Outcome.RETRY
    table.dispatched(rec.task_id, "w2")
    assert table.failed(rec.task_id, "ValueError", False, True) is Outcome.RETRY
    table.dispatched(rec.task_id, "w3")
    assert table.failed(rec.task_id, "worker died", True, False) is Outcome.FINAL
    assert rec.attempt == 2


def test_failure_before_dispatch_is_final(table: TaskTable) -> None:
    # Nothing ran yet, so there is no attempt to retry: e.g. an argument's owner died.
    rec = new_task(table, args_ready=False, max_retries=5)
    assert table.failed(rec.task_id, "argument lost", True, False) is Outcome.FINAL
    assert rec.state is S.FAILED
    assert rec.attempt == 0


# -- pending reasons --------------------------------------------------------------------------


def test_set_pending_reason_and_pending_by_reason(table: TaskTable) -> None:
    new_task(table, 1, args_ready=False)
    b = new_task(table, 2)
    c = new_task(table, 3)
    d = new_task(table, 4)
    running_task(table, 5)
    table.set_pending_reason(b.task_id, WAITING_FOR_WORKER)
    table.set_pending_reason(c.task_id, INFEASIBLE)
    assert d.pending_reason == WAITING_FOR_RESOURCES
    assert table.pending_by_reason() == {
        WAITING_FOR_ARGS: 1,
        WAITING_FOR_WORKER: 1,
        INFEASIBLE: 1,
        WAITING_FOR_RESOURCES: 1,
    }


def test_set_pending_reason_ignores_running_and_unknown_tasks(table: TaskTable) -> None:
    rec = running_task(table)
    table.set_pending_reason(rec.task_id, INFEASIBLE)
    assert rec.pending_reason == ""
    table.set_pending_reason(b"unknown", INFEASIBLE)  # no error
    assert table.pending_by_reason() == {}


# -- forbidden transitions --------------------------------------------------------------------


def test_dispatch_before_args_ready_is_forbidden(table: TaskTable) -> None:
    rec = new_task(table, args_ready=False)
    with pytest.raises(InvalidTransition, match="PENDING_ARGS_AVAIL -> SUBMITTED_TO_WORKER"):
        table.dispatched(rec.task_id, "w")


def test_finish_before_dispatch_is_forbidden(table: TaskTable) -> None:
    rec = new_task(table)
    with pytest.raises(InvalidTransition, match="PENDING_NODE_ASSIGNMENT -> FINISHED"):
        table.finished(rec.task_id)
    assert rec.state is S.PENDING_NODE_ASSIGNMENT
    assert rec.task_id in table.live


def test_args_ready_twice_is_forbidden(table: TaskTable) -> None:
    rec = new_task(table)
    with pytest.raises(InvalidTransition):
        table.args_ready(rec.task_id)


def test_dispatch_twice_is_forbidden(table: TaskTable) -> None:
    rec = running_task(table)
    with pytest.raises(InvalidTransition):
        table.dispatched(rec.task_id, "w-other")


@pytest.mark.parametrize("end", ["finished", "failed", "cancelled"])
def test_terminal_states_allow_no_further_transition(table: TaskTable, end: str) -> None:
    rec = running_task(table)
    if end == "finished":
        table.finished(rec.task_id)
    elif end == "failed":
        table.failed(rec.task_id, "boom", False, False)
    else:
        table.cancelled(rec.task_id)
    # A terminal record put back by mistake is still refused by the rules.
    table.live[rec.task_id] = rec
    with pytest.raises(InvalidTransition):
        table.finished(rec.task_id)
    with pytest.raises(InvalidTransition):
        table.dispatched(rec.task_id, "w")


def test_a_refused_transition_changes_nothing(table: TaskTable) -> None:
    rec = new_task(table, args_ready=False)
    seen: list[tuple[str, Transition]] = []
    table.log.subscribe(lambda key, tr: seen.append((key, tr)))
    before = (rec.state, list(rec.transitions), dict(table.counts))
    with pytest.raises(InvalidTransition):
        table.finished(rec.task_id)
    assert (rec.state, rec.transitions, table.counts) == before
    assert seen == []


# -- validate() -------------------------------------------------------------------------------


def test_validate_passes_on_a_consistent_table() -> None:
    table = TaskTable()
    a = running_task(table, 1)
    new_task(table, 2, args_ready=False)
    table.finished(a.task_id)
    table.validate()


def test_validate_catches_a_state_without_matching_transition() -> None:
    table = TaskTable()
    rec = new_task(table)
    rec.state = S.SUBMITTED_TO_WORKER
    rec.worker_id = "w"
    with pytest.raises(InvalidTransition, match="last transition"):
        table.validate()


def test_validate_catches_submitted_without_worker() -> None:
    table = TaskTable()
    rec = running_task(table)
    rec.worker_id = ""
    with pytest.raises(InvalidTransition, match="without a worker"):
        table.validate()


def test_validate_catches_a_terminal_task_still_live() -> None:
    table = TaskTable()
    rec = running_task(table)
    table.finished(rec.task_id)
    table.live[rec.task_id] = rec
    with pytest.raises(InvalidTransition, match="FINISHED"):
        table.validate()


def test_validate_catches_a_live_record_under_the_wrong_key() -> None:
    table = TaskTable()
    rec = new_task(table)
    table.live[b"other"] = table.live.pop(rec.task_id)
    with pytest.raises(InvalidTransition):
        table.validate()


def test_validate_catches_a_non_terminal_task_in_history() -> None:
    table = TaskTable()
    rec = running_task(table)
    table.finished(rec.task_id)
    rec.state = S.SUBMITTED_TO_WORKER
    with pytest.raises(InvalidTransition, match="not terminal"):
        table.validate()


def test_validating_table_refuses_a_transition_that_breaks_an_invariant() -> None:
    table = TaskTable(validate=True)
    rec = new_task(table)
    with pytest.raises(InvalidTransition, match="without a worker"):
        table.dispatched(rec.task_id, "")


def test_non_validating_table_leaves_checking_to_validate() -> None:
    table = TaskTable()
    rec = new_task(table)
    table.dispatched(rec.task_id, "")
    with pytest.raises(InvalidTransition, match="without a worker"):
        table.validate()


# -- history ----------------------------------------------------------------------------------


def test_history_is_bounded_and_keeps_the_newest() -> None:
    table = TaskTable(history=5)
    for n in range(20):
        rec = running_task(table, n)
        table.finished(rec.task_id)
    assert len(table.history) == 5
    assert [r.task_id for r in table.history] == [tid(n) for n in range(15, 20)]
    assert table.get(tid(0)) is None
    assert table.get(tid(19)) is not None
    assert table.counts[S.FINISHED] == 20
    assert table.live == {}


# -- transition listeners ---------------------------------------------------------------------


def test_listener_sees_every_transition_of_every_task() -> None:
    table = TaskTable()
    seen: list[tuple[str, str, str]] = []
    table.log.subscribe(lambda key, tr: seen.append((key.task_id.hex(), tr.old, tr.new)))
    a = running_task(table, 1)
    table.finished(a.task_id)
    b = new_task(table, 2, args_ready=False)
    table.cancelled(b.task_id)
    # Every change after submission; the submission itself has its own test below.
    expected = [(a.task_id.hex(), t.old, t.new) for t in a.transitions[1:]] + [
        (b.task_id.hex(), t.old, t.new) for t in b.transitions[1:]
    ]
    assert [s for s in seen if s[1]] == expected


def test_listener_sees_the_submission() -> None:
    table = TaskTable()
    seen: list[tuple[str, str]] = []
    table.log.subscribe(lambda key, tr: seen.append((tr.old, tr.new)))
    new_task(table, args_ready=False)
    assert seen == [("", "PENDING_ARGS_AVAIL")]


def test_failing_listener_is_dropped_and_the_table_keeps_working() -> None:
    table = TaskTable(validate=True)
    calls = {"bad": 0}
    good: list[str] = []

    def bad(key: str, tr: Transition) -> None:
        calls["bad"] += 1
        raise RuntimeError("exporter down")

    table.log.subscribe(bad)
    table.log.subscribe(lambda key, tr: good.append(tr.new))
    rec = running_task(table)  # the first emitted transition drops ``bad``
    table.finished(rec.task_id)
    assert calls["bad"] == 1
    assert rec.state is S.FINISHED
    assert good[-3:] == ["PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER", "FINISHED"]
