"""The head's task records: ordering, attempts, retention, pagination, lookups and summaries."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest

from freight.head.task_store import TaskStore, compile_task_filters
from freight.observe.recorder import RECORDER
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.messages import TaskEvent, load_task_rows, pack_task_rows, unpack_task_rows

PREFIX = "ab" * 8


def tid(i: int) -> str:
    return PREFIX + i.to_bytes(8, "little").hex()


def event(i: int, state: str, t: float, **fields: Any) -> TaskEvent:
    base: dict[str, Any] = {
        "task_id": tid(i),
        "job_id": "00000001",
        "name": f"fn{i % 3}",
        "actor_id": "",
        "parent_task_id": "",
        "node_id": "node-1",
        "worker_id": "",
        "attempt": 0,
        "state": state,
        "time": t,
        "cause": "",
        "pending_reason": "",
        "error_type": "",
        "error_kind": "",
        "start_time": 0.0,
        "end_time": 0.0,
        "trace_id": "",
        "owner_address": "/tmp/driver.sock",
        "error": "",
    }
    base.update(fields)
    return TaskEvent(**base)


def life(i: int, t: float, outcome: str = "FINISHED", worker: str = "w1") -> list[TaskEvent]:
    """The four events of a task that ran once on ``worker`` and ended in ``outcome``."""
    error = {}
    if outcome == "FAILED":
        error = {"error_type": "ValueError", "error_kind": "application", "error": "boom"}
    return [
        event(i, "PENDING_ARGS_AVAIL", t, cause="submitted"),
        event(i, "PENDING_NODE_ASSIGNMENT", t + 0.1, pending_reason="waiting for resources"),
        event(i, "SUBMITTED_TO_WORKER", t + 0.2, worker_id=worker, cause=f"pushed to {worker}"),
        event(i, outcome, t + 0.5, worker_id=worker, start_time=t + 0.3, end_time=t + 0.4,
              cause="returned", **error),
    ]  # fmt: skip


def rows(page: Any) -> list[dict[str, Any]]:
    return [json.loads(r) for r in page.rows]


def dropped_counter(kind: str) -> float:
    return RECORDER.snapshot()["c"].get(("freight_telemetry_dropped_total", (kind,)), 0.0)


def test_transitions_are_ordered_by_time_across_out_of_order_batches() -> None:
    store = TaskStore()
    evs = life(1, 100.0)
    store.apply(evs[2:])  # the later batch arrives first
    store.apply(evs[:2])
    rec = store.get(tid(1))
    assert rec is not None
    row = rec.row(detail=True)
    assert [t["state"] for t in row["transitions"]] == [
        "PENDING_ARGS_AVAIL",
        "PENDING_NODE_ASSIGNMENT",
        "SUBMITTED_TO_WORKER",
        "FINISHED",
    ]
    assert [t["time"] for t in row["transitions"]] == [100.0, 100.1, 100.2, 100.5]
    # The late (older) events did not overwrite what the newest one said.
    assert row["state"] == "FINISHED"
    assert row["worker_id"] == "w1"
    assert row["pending_reason"] == ""
    assert row["submit_time"] == 100.0
    assert (row["start_time"], row["end_time"]) == (100.3, 100.4)


def test_repeated_events_are_recorded_once() -> None:
    store = TaskStore()
    store.apply(life(1, 10.0))
    store.apply(life(1, 10.0))
    rec = store.get(tid(1))
    assert rec is not None
    assert len(rec.row(detail=True)["transitions"]) == 4


def test_a_repeated_latest_event_updates_a_pending_reason() -> None:
    """An owner repeats a queued task's latest event when only its pending reason changed (the
    agent found it infeasible after the record was sent): the record takes the new reason."""
    store = TaskStore()
    queued = event(1, "PENDING_NODE_ASSIGNMENT", 1.1, pending_reason="waiting for resources")
    store.apply([event(1, "PENDING_ARGS_AVAIL", 1.0, cause="submitted"), queued])
    store.apply([queued._replace(pending_reason="infeasible")])
    rec = store.get(tid(1))
    assert rec is not None
    assert (rec.pending_reason, len(rec.transitions) // 3) == ("infeasible", 2)
    assert store.summary()["pending_by_reason"] == {"infeasible": 1}
    # An older event repeated says nothing new: the latest reason stays.
    store.apply([event(1, "PENDING_ARGS_AVAIL", 1.0, cause="submitted")])
    assert rec.pending_reason == "infeasible"


def test_a_retried_task_keeps_every_attempt() -> None:
    store = TaskStore()
    store.apply(
        [
            event(1, "PENDING_ARGS_AVAIL", 1.0),
            event(1, "PENDING_NODE_ASSIGNMENT", 1.1),
            event(1, "SUBMITTED_TO_WORKER", 1.2, worker_id="w1", cause="pushed to worker w1"),
            event(1, "PENDING_NODE_ASSIGNMENT", 2.0, worker_id="w1", attempt=1,
                  start_time=1.3, end_time=1.9, cause="retry 1: worker died"),
            event(1, "SUBMITTED_TO_WORKER", 2.1, worker_id="w2", attempt=1,
                  start_time=1.3, end_time=1.9, cause="pushed to worker w2"),
        ]
    )  # fmt: skip
    rec = store.get(tid(1))
    assert rec is not None
    # While attempt 1 runs, the times of attempt 0 are not shown as its own.
    assert (rec.attempt, rec.worker_id, rec.start_time) == (1, "w2", 0.0)
    assert rec.attempts()[-1]["end_time"] == 0.0  # still running
    store.apply(
        [event(1, "FINISHED", 3.0, worker_id="w2", attempt=1, start_time=2.2, end_time=2.9)]
    )
    attempts = rec.row(detail=True)["attempts"]
    assert attempts == [
        {"attempt": 0, "start_time": 1.2, "end_time": 2.0, "worker_id": "w1",
         "node_id": "node-1", "outcome": "retry 1: worker died", "measured": False},
        {"attempt": 1, "start_time": 2.2, "end_time": 2.9, "worker_id": "w2",
         "node_id": "node-1", "outcome": "FINISHED", "measured": True},
    ]  # fmt: skip
    page = store.list(compile_task_filters(["attempt>0"]), 10)
    assert [r["task_id"] for r in rows(page)] == [tid(1)]


def test_owner_reports_in_the_packed_form() -> None:
    """An owner's report row: the latest fields, then every transition since the last report."""
    store = TaskStore()
    latest = event(1, "FINISHED", 3.0, worker_id="w2", attempt=1, start_time=2.2, end_time=2.9)
    transitions = [
        [1.0, "PENDING_ARGS_AVAIL", "submitted"],
        [1.1, "PENDING_NODE_ASSIGNMENT", "arguments ready"],
        [1.2, "SUBMITTED_TO_WORKER", "pushed to worker w1"],
        [2.0, "PENDING_NODE_ASSIGNMENT", "retry 1: boom"],
        [2.1, "SUBMITTED_TO_WORKER", "pushed to worker w2"],
        [3.0, "FINISHED", "returned"],
    ]
    chunk = pack_task_rows([(*latest, transitions)])
    request = pb.ReportTaskEventsRequest(packed=[chunk, b"not a pickle"])
    for packed in request.packed:
        events, bad = unpack_task_rows(packed)
        store.apply(events, bad)
    rec = store.get(tid(1))
    assert rec is not None
    assert rec.state == "FINISHED" and store.dropped_events == 1
    assert [(a["worker_id"], a["start_time"], a["end_time"]) for a in rec.attempts()] == [
        ("w1", 1.2, 2.0),
        ("w2", 2.2, 2.9),
    ]


def as_row(evs: list[TaskEvent]) -> tuple[Any, ...]:
    """The owner's row for consecutive transitions of one task (latest fields last)."""
    return (*evs[-1], [(e.time, e.state, e.cause) for e in evs])


@pytest.mark.parametrize("seed", range(5))
def test_whole_rows_fold_in_exactly_as_their_events_do(seed: int) -> None:
    """apply_rows (one step per task row) ends where applying every event one by one does,
    with batches split anywhere, repeated and delivered out of order."""
    import random

    rng = random.Random(seed)
    batches: list[list[tuple[Any, ...]]] = []
    for i in range(40):
        evs = life(i, 100.0 + i, outcome=rng.choice(["FINISHED", "FAILED"]))
        cut = rng.randint(1, 3)
        batches += [[as_row(evs[:cut])], [as_row(evs[cut:])]]
    batches += rng.sample(batches, 5)  # repeats
    rng.shuffle(batches)
    by_rows, by_events = TaskStore(), TaskStore()
    for batch in batches:
        loaded, bad = load_task_rows(pack_task_rows(batch))
        assert bad == 0
        by_rows.apply_rows(loaded)
        events, _ = unpack_task_rows(pack_task_rows(batch))
        by_events.apply(events)
    for i in range(40):
        a, b = by_rows.get(tid(i)), by_events.get(tid(i))
        assert a is not None and b is not None
        assert {**a.row(detail=True), "seq": 0} == {**b.row(detail=True), "seq": 0}
    assert by_rows.counts() == by_events.counts()


@pytest.mark.parametrize(
    "row",
    [
        (*event(1, "FINISHED", 1.0), []),  # no transitions
        (*event(1, "FINISHED", 1.0)[:-1], 5, [(1.0, "FINISHED", "")]),  # error is not text
        (*event(1, "FINISHED", 1.0, attempt="0"), [(1.0, "FINISHED", "")]),  # type: ignore
        (*event(1, "FINISHED", 1.0), [(1.0, "FINISHED")]),  # a transition too short
        (*event(1, "FINISHED", 1.0), [("then", "FINISHED", "")]),  # time is not a number
    ],
)
def test_ill_typed_rows_are_counted_and_skipped(row: tuple[Any, ...]) -> None:
    good = as_row(life(2, 5.0))
    loaded, bad = load_task_rows(pack_task_rows([row, good]))
    assert bad == 1 and [r[0] for r in loaded] == [tid(2)]
    store = TaskStore()
    store.apply_rows(loaded, bad)
    assert len(store) == 1 and store.dropped_events == 1


def test_retention_evicts_oldest_successes_and_keeps_failures() -> None:
    before = dropped_counter("task_records")
    store = TaskStore(tasks_max=5, failed_max=100)
    for i in range(20):
        store.apply(life(i, float(i), "FAILED" if i % 4 == 0 else "FINISHED"))
    failed = [i for i in range(20) if i % 4 == 0]
    kept_ok = [i for i in range(20) if i % 4][-5:]  # the five newest successes
    assert {r.task_id for r in store.records.values()} == {tid(i) for i in failed + kept_ok}
    assert store.dropped_records == 15 - 5
    assert store.dropped == store.dropped_records
    assert dropped_counter("task_records") - before == 10
    assert store.counts() == {"live": 0, "finished": 5, "failed_or_cancelled": 5}


def test_failed_records_have_their_own_bound() -> None:
    store = TaskStore(tasks_max=100, failed_max=2)
    for i in range(5):
        store.apply(life(i, float(i), "FAILED"))
    assert sorted(store.records) == [tid(3), tid(4)]
    assert store.dropped_records == 3


def test_live_records_are_bounded_too() -> None:
    store = TaskStore(tasks_max=2, failed_max=1)  # live ones: at most 2 + 1
    store.apply([event(i, "PENDING_ARGS_AVAIL", float(i)) for i in range(5)])
    assert sorted(store.records) == [tid(2), tid(3), tid(4)]
    assert store.dropped_records == 2


def test_late_events_of_an_evicted_task_are_counted_not_resurrected() -> None:
    before = dropped_counter("task_events")
    store = TaskStore(tasks_max=1)
    store.apply(life(1, 1.0))
    store.apply(life(2, 2.0))  # evicts task 1
    store.apply([event(1, "FINISHED", 9.0)], dropped=7)  # 7 lost on the way, 1 too late
    assert store.get(tid(1)) is None
    assert store.dropped_events == 8
    assert dropped_counter("task_events") - before == 8


def test_filters_apply_before_truncation() -> None:
    store = TaskStore()
    for i in range(50):
        store.apply(life(i, float(i), "FAILED" if i % 5 == 0 else "FINISHED"))
    page = store.list(compile_task_filters(["state=FAILED"]), limit=3)
    got = rows(page)
    assert [r["task_id"] for r in got] == [tid(0), tid(5), tid(10)]
    assert all(r["state"] == "FAILED" for r in got)
    assert (page.total, page.matched, page.remaining) == (50, 10, 7)


def test_pages_cover_every_match_once_while_tasks_arrive() -> None:
    store = TaskStore()
    for i in range(30):
        store.apply(life(i, float(i)))
    pred = compile_task_filters(["name=fn0"])
    seen: list[str] = []
    after, i = 0, 30
    while True:
        page = store.list(pred, limit=4, after=after)
        seen += [r["task_id"] for r in rows(page)]
        store.apply(life(i, float(i)))  # more work arrives between pages
        i += 1
        if not page.remaining:
            break
        after = page.last_key
    expected = [tid(n) for n in range(i) if n % 3 == 0]
    assert len(seen) == len(set(seen))
    assert seen == expected[: len(seen)]
    assert set(expected[:10]) <= set(seen)


def test_get_by_prefix() -> None:
    store = TaskStore()
    store.apply(life(1, 1.0) + life(2, 2.0))
    rec = store.get(tid(2)[:18])
    assert rec is not None and rec.task_id == tid(2)
    with pytest.raises(ValueError, match=r"matches 2 tasks.*give more characters"):
        store.get(PREFIX)
    assert store.get("ffff") is None


def test_summary_counts_by_name_state_job_and_reason() -> None:
    store = TaskStore()
    for i in range(6):
        store.apply(life(i, float(i), "FAILED" if i == 0 else "FINISHED"))
    store.apply([event(9, "PENDING_NODE_ASSIGNMENT", 9.0, pending_reason="infeasible")])
    s = store.summary()
    assert s["total"] == 7
    assert s["by_state"] == {"FAILED": 1, "FINISHED": 5, "PENDING_NODE_ASSIGNMENT": 1}
    assert s["by_name"]["fn0"]["states"] == {
        "FAILED": 1,
        "FINISHED": 1,
        "PENDING_NODE_ASSIGNMENT": 1,
    }
    assert s["by_name"]["fn0"]["error_types"] == {"ValueError": 1}
    assert s["by_job"] == {"00000001": {"FAILED": 1, "FINISHED": 5, "PENDING_NODE_ASSIGNMENT": 1}}
    assert s["pending_by_reason"] == {"infeasible": 1}
    only_failed = store.summary(compile_task_filters(["state=FAILED"]))
    assert only_failed["total"] == 1


def test_protobuf_events_are_accepted() -> None:
    store = TaskStore()
    request = pb.ReportTaskEventsRequest(
        events=[pb.TaskEvent(**e._asdict()) for e in life(1, 5.0, "FAILED")], dropped=2
    )
    store.apply(request.events, request.dropped)
    rec = store.get(tid(1))
    assert rec is not None
    assert (rec.state, rec.error_type, rec.error) == ("FAILED", "ValueError", "boom")
    assert store.dropped_events == 2


def test_records_stay_small() -> None:
    """Under 800 bytes a record (transitions, ids, strings): 100,000 take well under 100 MB."""
    n = 20_000
    store = TaskStore(tasks_max=n)
    tracemalloc.start()
    try:
        for i in range(0, n, 1000):
            batch = [e for k in range(i, i + 1000) for e in life(k, float(k), worker=f"w{k % 8}")]
            store.apply(batch)
            del batch
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(store) == n
    assert used / n < 800, f"{used / n:.0f} bytes per task record"


def test_summaries_add_the_successes_counted_without_a_record() -> None:
    store = TaskStore()
    store.apply(
        [ev for i in range(4) for ev in life(i, 10.0 + i, "FAILED" if i == 0 else "FINISHED")]
    )
    store.count_sampled_out([("00000001", "fn1", False, 90), ("00000002", "fn1", False, 5)])
    s = store.summary()
    assert s["total"] == 99 and s["recorded"] == 4 and s["counted_without_record"] == 95
    assert s["by_state"] == {"FAILED": 1, "FINISHED": 98}
    assert s["by_name"]["fn1"]["states"] == {"FINISHED": 96}
    assert s["by_job"] == {"00000001": {"FAILED": 1, "FINISHED": 93}, "00000002": {"FINISHED": 5}}
    assert s["dropped_events"] == 0  # counting is not losing
    # Filters the counts know apply to them too.
    job2 = store.summary(compile_task_filters([("job_id", "=", "00000002")]))
    assert job2["total"] == 5 and job2["recorded"] == 0
    failed = store.summary(compile_task_filters([("state", "=", "FAILED")]))
    assert failed["total"] == 1 and failed["counted_without_record"] == 0
    records_only = store.summary(with_sampled_out=False)
    assert records_only["total"] == 4


def test_records_left_open_by_an_ended_job_are_closed_as_failed() -> None:
    store = TaskStore()
    store.apply([event(1, "PENDING_ARGS_AVAIL", 5.0, cause="submitted")])
    store.apply([event(2, "PENDING_ARGS_AVAIL", 5.0, cause="submitted", job_id="00000002")])
    store.apply(life(3, 5.0))
    assert store.end_jobs({"00000001": ("FINISHED", 20.0)}) == 1
    closed = store.get(tid(1))
    assert closed is not None and closed.state == "FAILED" and closed.error_type == "JobEnded"
    assert "job 00000001 ended (FINISHED)" in closed.error
    assert store.get(tid(2)).state == "PENDING_ARGS_AVAIL"  # another job's, still running
    assert store.get(tid(3)).state == "FINISHED"  # an outcome stands
    assert store.summary()["pending_by_reason"] == {"unknown": 1}
    # A real outcome reported after all is not overwritten by the closing.
    store.apply([event(1, "FINISHED", 25.0, cause="returned")])
    assert store.get(tid(1)).state == "FINISHED"


def test_live_tasks_left_out_of_the_sample_are_counted_per_node() -> None:
    store = TaskStore()
    store.apply([event(1, "PENDING_NODE_ASSIGNMENT", 5.0, pending_reason="infeasible")])
    store.set_live_sampled_out("n1", [("00000001", "fn1", False, "PENDING_NODE_ASSIGNMENT",
                                       "infeasible", 199)])  # fmt: skip
    store.set_live_sampled_out("n2", [("00000001", "fn1", False, "SUBMITTED_TO_WORKER", "", 7)])
    s = store.summary()
    assert s["total"] == 207 and s["recorded"] == 1
    assert s["pending_by_reason"] == {"infeasible": 200}
    assert s["by_state"] == {"PENDING_NODE_ASSIGNMENT": 200, "SUBMITTED_TO_WORKER": 7}
    # A node that is gone counts no more; a new snapshot replaces the node's last one.
    assert store.summary(live_nodes={"n1"})["total"] == 200
    store.set_live_sampled_out("n1", [])
    pending = store.summary(compile_task_filters([("state", "~", "^PENDING")]))
    assert pending["pending_by_reason"] == {"infeasible": 1}
    # Tasks whose owner exited with them count as failed, with why.
    store.count_owner_gone([("00000001", "fn1", False, "JobEnded", 199)])
    s = store.summary()
    assert s["by_state"]["FAILED"] == 199
    assert s["by_name"]["fn1"]["error_types"] == {"JobEnded": 199}
