"""The owner-side telemetry seam: task transitions become figures and events, sent to the agent."""

from __future__ import annotations

import gc
import pickle
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from freight.client.telemetry import Telemetry, parse_labels
from freight.core.task_state import TaskRecord, TaskTable
from freight.observe.recorder import Recorder
from freight.protocol import frames
from freight.protocol import messages as m


@dataclass
class Owner:
    """The parts of a core worker that telemetry reads: its task table and agent connection."""

    agent: frames.FrameSocket
    tasks: TaskTable = field(default_factory=lambda: TaskTable(validate=True))
    lock: threading.RLock = field(default_factory=threading.RLock)
    node_id: str = "node-1"
    address: str = "/tmp/owner.sock"


def owner_and_agent(monkeypatch: pytest.MonkeyPatch, **env: str):
    """An owner with its telemetry, and the agent's end of their connection (a generator for
    a fixture: it closes both at the end)."""
    monkeypatch.setenv("FREIGHT_TELEMETRY_INTERVAL_S", "3600")  # reports only when asked
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    a, b = socket.socketpair()
    owner = Owner(frames.FrameSocket(a))
    tel = Telemetry(owner, Recorder(top_n=10))  # type: ignore[arg-type]
    yield owner, tel, frames.FrameSocket(b)
    tel._stop.set()
    a.close()
    b.close()


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch):
    yield from owner_and_agent(monkeypatch, FREIGHT_TASK_EVENTS_BUFFER="5")


def run(
    owner: Owner,
    n: int,
    name: str = "f",
    fail: bool = False,
    job: str = "01000000",
    resources: dict[str, float] | None = None,
    ran: tuple[float, float] = (0.5, 2.5),  # start and end, seconds after submission
) -> None:
    for i in range(n):
        rec = TaskRecord(name.encode() + i.to_bytes(15, "little"), name, max_retries=0)
        rec.job_id = job
        rec.resources = resources or {"CPU": 1.0}
        owner.tasks.submit(rec, args_ready=True)
        owner.tasks.dispatched(rec.task_id, "w1")
        rec.start_time, rec.end_time = rec.submit_time + ran[0], rec.submit_time + ran[1]
        if fail:
            owner.tasks.failed(rec.task_id, "boom", False, False, "ValueError")
        else:
            owner.tasks.finished(rec.task_id)


def test_transitions_become_counters_histograms_and_usage(pair) -> None:
    owner, tel, peer = pair
    run(owner, 3)
    run(owner, 2, name="g", fail=True)
    tel.report()
    msg = peer.recv()
    assert type(msg) is m.Telemetry
    c, h = msg.metrics["c"], msg.metrics["h"]
    assert c[("freight_tasks_submitted_total", ("f",))] == 3
    assert c[("freight_tasks_finished_total", ("f", "FINISHED", "none", ""))] == 3
    assert c[("freight_tasks_finished_total", ("g", "FAILED", "application", "ValueError"))] == 2
    sched = h[("freight_task_scheduling_latency_seconds", ("f",))]
    assert sum(sched[:-1]) == 3 and sched[-1] == pytest.approx(1.5)
    assert h[("freight_task_execution_latency_seconds", ("g",))][-1] == pytest.approx(4.0)
    assert msg.usage == {("01000000", "CPU"): pytest.approx(10.0)}  # 5 tasks x 2 s x 1 CPU
    assert msg.final is False


def test_whole_lives_of_several_functions_and_jobs_are_counted_apart(pair) -> None:
    owner, tel, peer = pair
    run(owner, 3, name="f")
    run(owner, 2, name="g")
    run(owner, 1, "h", job="02000000", resources={"CPU": 2.0, "GPU": 1.0, "memory": 5.0},
        ran=(0.25, 1.25))  # fmt: skip
    tel.report()
    msg = peer.recv()
    c, h = msg.metrics["c"], msg.metrics["h"]
    for name, n in (("f", 3), ("g", 2), ("h", 1)):
        assert c[("freight_tasks_submitted_total", (name,))] == n
        assert c[("freight_tasks_finished_total", (name, "FINISHED", "none", ""))] == n
        assert sum(h[("freight_task_execution_latency_seconds", (name,))][:-1]) == n
    assert h[("freight_task_execution_latency_seconds", ("g",))][-1] == pytest.approx(4.0)
    assert h[("freight_task_scheduling_latency_seconds", ("h",))][-1] == pytest.approx(0.25)
    assert msg.usage == {
        ("01000000", "CPU"): pytest.approx(10.0),  # 5 tasks x 2 s x 1 CPU
        ("02000000", "CPU"): pytest.approx(2.0),
        ("02000000", "GPU"): pytest.approx(1.0),  # memory is not billed
    }
    # The buffer holds 5 rows (the fixture): the sixth task is counted as dropped, whole.
    events, bad = m.unpack_task_rows(msg.task_events)
    finished = sorted(ev.name for ev in events if ev.state == "FINISHED")
    assert bad == 0 and finished == ["f", "f", "f", "g", "g"]
    assert msg.task_rows == 5 and msg.dropped == 4  # its 4 transitions


def test_a_retried_attempt_is_measured_before_the_next_one_overwrites_it(pair) -> None:
    owner, tel, peer = pair
    rec = TaskRecord(b"r" * 16, "f", max_retries=1)
    rec.job_id, rec.resources = "01000000", {"CPU": 1.0}
    owner.tasks.submit(rec, args_ready=True)
    owner.tasks.dispatched(rec.task_id, "w1")
    rec.start_time, rec.end_time = rec.submit_time + 1.0, rec.submit_time + 2.0
    owner.tasks.failed(rec.task_id, "worker died", True, False, "WorkerCrashedError")
    owner.tasks.dispatched(rec.task_id, "w2")
    rec.start_time, rec.end_time = rec.submit_time + 3.0, rec.submit_time + 7.0
    owner.tasks.finished(rec.task_id)
    tel.report()
    msg = peer.recv()
    c, h = msg.metrics["c"], msg.metrics["h"]
    assert c[("freight_task_retries_total", ("f", "system"))] == 1
    assert c[("freight_tasks_finished_total", ("f", "FINISHED", "none", ""))] == 1
    assert h[("freight_task_execution_latency_seconds", ("f",))][-1] == pytest.approx(5.0)
    assert h[("freight_task_scheduling_latency_seconds", ("f",))][-1] == pytest.approx(4.0)
    assert msg.usage == {("01000000", "CPU"): pytest.approx(5.0)}


def test_one_row_per_task_with_its_transitions_and_drops_counted(pair) -> None:
    owner, tel, peer = pair
    run(owner, 8)  # 8 tasks into a buffer of 5 tasks: 3 tasks x 4 transitions dropped
    tel.report()
    msg = peer.recv()
    events, bad = m.unpack_task_rows(msg.task_events)
    assert bad == 0 and msg.dropped == 12
    assert len(events) == 5 * 4  # one event per transition, expanded from 5 rows
    by_task: dict[str, list[str]] = {}
    for ev in events:
        by_task.setdefault(ev.task_id, []).append(ev.state)
    assert (
        list(by_task.values())
        == [["PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER", "FINISHED"]]
        * 5
    )
    last = events[-1]
    assert (last.name, last.worker_id, last.node_id, last.job_id) == (
        "f",
        "w1",
        "node-1",
        "01000000",
    )
    assert last.start_time > 0 and last.end_time > last.start_time
    tel.report()
    again = peer.recv()
    assert again.task_events == b"" and again.dropped == 0  # each transition is sent once


def test_a_task_touched_again_sends_only_its_new_transitions(pair) -> None:
    owner, tel, peer = pair
    rec = TaskRecord(b"t" * 16, "f", max_retries=0)
    owner.tasks.submit(rec, args_ready=True)
    tel.report()
    first, _ = m.unpack_task_rows(peer.recv().task_events)
    owner.tasks.dispatched(rec.task_id, "w1")
    owner.tasks.finished(rec.task_id)
    tel.report()
    second, _ = m.unpack_task_rows(peer.recv().task_events)
    assert [e.state for e in first] == ["PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT"]
    assert [e.state for e in second] == ["SUBMITTED_TO_WORKER", "FINISHED"]


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "chunk",
    [
        b"not a pickle",
        m.pack_task_rows({"a": 1}),  # type: ignore[arg-type]
        m.pack_task_rows([("too", "short")]),
        m.pack_task_rows([("x",) * 19 + ("not transitions",)]),
        pickle.dumps([Evil()]),  # names a function: refused without running it
    ],
)
def test_malformed_task_rows_are_counted_not_raised(chunk: bytes) -> None:
    events, bad = m.unpack_task_rows(chunk)
    assert events == [] and bad == 1


def test_gauges_count_live_tasks_by_state_and_reason(pair) -> None:
    owner, tel, peer = pair
    for i in range(4):
        owner.tasks.submit(TaskRecord(bytes([i]) * 16, "f", 0), args_ready=i % 2 == 0)
    tel.report()
    g = peer.recv().metrics["g"]
    assert g[("freight_tasks", ("PENDING_ARGS_AVAIL",))] == 2
    assert g[("freight_tasks", ("PENDING_NODE_ASSIGNMENT",))] == 2
    # reasons are short label values, and every reason is present (at 0 when none waits)
    assert g[("freight_queue_depth", ("waiting_for_args",))] == 2
    assert g[("freight_queue_depth", ("waiting_for_resources",))] == 2
    assert g[("freight_queue_depth", ("waiting_for_worker",))] == 0
    assert g[("freight_queue_depth", ("infeasible",))] == 0


def test_gc_pause_is_recorded_without_taking_locks(pair) -> None:
    _, tel, peer = pair
    # A collection that starts while this thread holds the recorder's lock must not deadlock.
    with tel.rec._lock:
        gc.collect()
    tel.report()
    h = peer.recv().metrics["h"]
    pauses = [v for k, v in h.items() if k[0] == "freight_gc_pause_seconds"]
    assert sum(sum(v[:-1]) for v in pauses) >= 1  # observation counts, without the sum slot


def test_close_sends_a_final_report(pair) -> None:
    _, tel, peer = pair
    tel.close()
    assert peer.recv().final is True


def test_off_records_and_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREIGHT_INSTRUMENTATION", "0")
    a, b = socket.socketpair()
    with a, b:
        owner = Owner(frames.FrameSocket(a))
        rec = Recorder()
        tel = Telemetry(owner, rec)  # type: ignore[arg-type]
        run(owner, 2)
        tel.close()
        assert rec.snapshot() == {"c": {}, "g": {}, "h": {}}
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(1)


@pytest.mark.parametrize(
    ("text", "want"),
    [("", {}), ("team=ml,owner=alice", {"team": "ml", "owner": "alice"}), (" a = b ,", {"a": "b"})],
)
def test_parse_labels(text: str, want: dict[str, str]) -> None:
    assert parse_labels(text) == want


@pytest.mark.parametrize("text", ["team", "=x", "team=ml,owner"])
def test_parse_labels_says_what_is_wrong(text: str) -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_labels(text)


def test_short_successes_are_sampled_above_the_budget_and_the_rest_always_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FREIGHT_TELEMETRY_INTERVAL_S", "3600")
    monkeypatch.setenv("FREIGHT_TASK_ROWS_SAMPLE", "10")
    a, b = socket.socketpair()
    owner = Owner(frames.FrameSocket(a))
    tel = Telemetry(owner, Recorder(top_n=10))  # type: ignore[arg-type]
    peer = frames.FrameSocket(b)
    try:
        long = TaskRecord(b"long" * 4, "slow", max_retries=0)
        owner.tasks.submit(long, args_ready=True)
        tel.report()  # the long task's first row: its later ones must follow whatever the load
        peer.recv()
        run(owner, 100)  # 100 short successes
        run(owner, 3, name="bad", fail=True)
        owner.tasks.dispatched(long.task_id, "w1")
        owner.tasks.finished(long.task_id)
        tel.report()
        msg = peer.recv()
        events, bad = m.unpack_task_rows(msg.task_events)
        assert bad == 0
        names = [ev.name for ev in events if ev.state in ("FINISHED", "FAILED")]
        assert names.count("f") == 10  # an evenly spread sample of the short successes
        assert names.count("bad") == 3 and names.count("slow") == 1
        # Left out of the sample, by design: counted for the head's summaries, not lost.
        assert msg.task_rows == 14 and msg.dropped == 0
        assert msg.sampled_out == [("01000000", "f", False, 90)]
        sampled = sorted(int.from_bytes(bytes.fromhex(ev.task_id)[1:], "little") for ev in events
                         if ev.name == "f" and ev.state == "FINISHED")  # fmt: skip
        assert sampled[0] < 20 and sampled[-1] >= 80  # spread over the report, not the first 10
        c = msg.metrics["c"]
        assert c[("freight_tasks_finished_total", ("f", "FINISHED", "none", ""))] == 100
        assert c[("freight_tasks_submitted_total", ("f",))] == 100
    finally:
        tel._stop.set()
        a.close()
        b.close()


@pytest.fixture
def sampled(monkeypatch: pytest.MonkeyPatch):
    """An owner whose telemetry keeps a sample of 4 new tasks per report."""
    yield from owner_and_agent(monkeypatch, FREIGHT_TASK_ROWS_SAMPLE="4")


def submit_live(owner: Owner, n: int, dispatch: bool) -> list[TaskRecord]:
    recs = []
    for i in range(n):
        rec = TaskRecord(b"q" + i.to_bytes(15, "little"), "q", max_retries=0)
        rec.job_id = "01000000"
        owner.tasks.submit(rec, args_ready=True)
        if dispatch:
            owner.tasks.dispatched(rec.task_id, "w1")
        recs.append(rec)
    return recs


def report(tel: Telemetry, peer: frames.FrameSocket) -> tuple[m.Telemetry, list[Any]]:
    tel.report()
    msg = peer.recv()
    if not msg.task_events:
        return msg, []
    events, bad = m.unpack_task_rows(msg.task_events)
    assert bad == 0
    return msg, events


def test_new_live_tasks_are_sampled_and_the_left_out_ones_sent_when_they_fail(sampled) -> None:
    owner, tel, peer = sampled
    recs = submit_live(owner, 20, dispatch=False)  # a burst, queued at report time
    msg, events = report(tel, peer)
    assert msg.task_rows == 4 and len({ev.task_id for ev in events}) == 4
    sent = {ev.task_id for ev in events}
    assert msg.metrics["c"][("freight_tasks_submitted_total", ("q",))] == 20
    left_out = [r for r in recs if r.task_id.hex() not in sent]
    assert len(left_out) == 16 and all(r.unsent for r in left_out)
    for rec in recs:
        owner.tasks.dispatched(rec.task_id, "w1")
        rec.start_time, rec.end_time = rec.submit_time + 0.1, rec.submit_time + 0.2
    failing = left_out[0]
    owner.tasks.failed(failing.task_id, "boom", False, False, "ValueError")
    for rec in recs:
        if rec is not failing:
            owner.tasks.finished(rec.task_id)
    msg, events = report(tel, peer)
    by_task: dict[str, list[Any]] = {}
    for ev in events:
        by_task.setdefault(ev.task_id, []).append(ev)
    # The 4 sampled tasks go on; of the rest only the failed one, with its whole history.
    assert set(by_task) == sent | {failing.task_id.hex()}
    states = [ev.state for ev in by_task[failing.task_id.hex()]]
    assert states[0] == "PENDING_ARGS_AVAIL" and states[-1] == "FAILED"
    # The 15 left-out successes are counted for the head's summaries, not lost.
    assert msg.dropped == 0 and msg.sampled_out == [("01000000", "q", False, 15)]
    c = msg.metrics["c"]
    assert c[("freight_tasks_finished_total", ("q", "FINISHED", "none", ""))] == 19
    assert c[("freight_tasks_finished_total", ("q", "FAILED", "application", "ValueError"))] == 1


@pytest.mark.parametrize("queued_first", [False, True])
def test_a_left_out_task_that_runs_long_is_sent_after_all(
    sampled, monkeypatch: pytest.MonkeyPatch, queued_first: bool
) -> None:
    owner, tel, peer = sampled
    recs = submit_live(owner, 10, dispatch=not queued_first)
    _, events = report(tel, peer)
    sent = {ev.task_id for ev in events}
    assert len(sent) == 4
    if queued_first:  # queued at the first report, running from the second on
        for rec in recs:
            owner.tasks.dispatched(rec.task_id, "w1")
        _, events = report(tel, peer)
        assert {ev.task_id for ev in events} == sent  # the sample goes on, nothing else
    _, events = report(tel, peer)  # not running long yet: nothing new
    assert events == []
    monkeypatch.setattr("freight.client.telemetry.LONG_RUNNING_S", 0.0)
    _, events = report(tel, peer)
    late = {ev.task_id for ev in events}
    assert late == {r.task_id.hex() for r in recs} - sent
    assert all(not r.unsent for r in recs)
    assert {ev.state for ev in events} >= {"PENDING_ARGS_AVAIL", "SUBMITTED_TO_WORKER"}
