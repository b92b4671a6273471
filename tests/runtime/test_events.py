"""Cluster events: the head's EventStore (bounded, persisted, counted) and the ReportEvents RPC."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from freight.head.control_store import ControlStore
from freight.head.events import ID_KEYS, EventStore
from freight.node.events import EventOutbox, WorkerExits, describe_exit
from freight.observe.recorder import Recorder
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.testing import wait_for_condition
from freight.util.grpc_auth import create_token, sync_channel


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "control.db"


def open_events(db: Path, max_events: int = 100) -> tuple[ControlStore, EventStore, Recorder]:
    store = ControlStore(db)
    recorder = Recorder()
    return store, EventStore(store, max_events, recorder), recorder


def test_recorded_events_are_rows_with_flat_ids_newest_first(db: Path) -> None:
    store, events, _ = open_events(db)
    with store:
        events.record("NODE_JOINED", "node joined", node_id="n1")
        events.record("JOB_STARTED", "job started", job_id="00000001", node_id="")
        rows = events.rows()
    assert [r["kind"] for r in rows] == ["JOB_STARTED", "NODE_JOINED"]
    job = rows[0]
    assert set(job) == {"event_id", "time", "severity", "source", "kind", "message", *ID_KEYS}
    assert job["job_id"] == "00000001"
    assert job["node_id"] == ""
    assert job["severity"] == "INFO"
    assert job["source"] == "head"
    assert rows[1]["time"] <= job["time"]
    assert job["event_id"] != rows[1]["event_id"]
    assert [r["kind"] for r in events.rows(newest_first=False)] == ["NODE_JOINED", "JOB_STARTED"]


def test_events_survive_a_restart(db: Path) -> None:
    store, events, _ = open_events(db)
    with store:
        events.record("NODE_DEAD", "node dead: no heartbeat", severity="ERROR", node_id="n1")
    store, events, _ = open_events(db)
    with store:
        (row,) = events.rows()
    assert (row["kind"], row["severity"], row["node_id"]) == ("NODE_DEAD", "ERROR", "n1")


def test_retention_keeps_the_newest_and_counts_the_evicted(db: Path) -> None:
    store, events, recorder = open_events(db, max_events=5)
    with store:
        for i in range(8):
            events.record("JOB_STARTED", f"job {i}", job_id=f"{i:08x}")
        assert [r["message"] for r in events.rows()] == [f"job {i}" for i in (7, 6, 5, 4, 3)]
        assert events.dropped == 3
        counters = recorder.snapshot()["c"]
        assert counters[("freight_telemetry_dropped_total", ("events",))] == 3
        stored = store.connection.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        assert stored == 5
    # A lower limit after a restart trims the table too, and the dropped count persists.
    store, events, recorder = open_events(db, max_events=2)
    with store:
        assert [r["message"] for r in events.rows()] == ["job 7", "job 6"]
        assert events.dropped == 6


def test_every_event_is_counted_by_severity_and_kind(db: Path) -> None:
    store, events, recorder = open_events(db)
    with store:
        events.record("NODE_JOINED", "a")
        events.record("NODE_JOINED", "b")
        events.record("NODE_DEAD", "c", severity="ERROR")
        reported = pb.ClusterEvent(
            severity="WARNING", source="agent", kind="WORKER_CRASHED", message="d"
        )
        assert events.add_reported([reported]) == 1
    counters = recorder.snapshot()["c"]
    assert counters[("freight_events_total", ("INFO", "NODE_JOINED"))] == 2
    assert counters[("freight_events_total", ("ERROR", "NODE_DEAD"))] == 1
    assert counters[("freight_events_total", ("WARNING", "WORKER_CRASHED"))] == 1


def test_rows_filter_by_severity_kind_time_and_limit(db: Path) -> None:
    store, events, _ = open_events(db)
    with store:
        events.record("NODE_JOINED", "joined")
        crashed = events.record("NODE_DEAD", "dead", severity="ERROR")
        events.record("JOB_FINISHED", "failed", severity="WARNING")
        assert crashed is not None
        assert [r["kind"] for r in events.rows(severity="WARNING")] == [
            "JOB_FINISHED",
            "NODE_DEAD",
        ]
        assert [r["message"] for r in events.rows(kind="NODE_DEAD")] == ["dead"]
        assert len(events.rows(since=crashed["time"])) >= 2
        assert [r["kind"] for r in events.rows(limit=1)] == ["JOB_FINISHED"]


def test_a_reported_batch_with_one_bad_event_is_refused_whole(db: Path) -> None:
    store, events, _ = open_events(db)
    good = pb.ClusterEvent(severity="INFO", source="agent", kind="NODE_JOINED", message="ok")
    cases = {
        "severity 'LOUD' is not one of": pb.ClusterEvent(
            severity="LOUD", source="agent", kind="NODE_JOINED"
        ),
        "unknown event kind 'NODE_EXPLODED'": pb.ClusterEvent(
            severity="INFO", source="agent", kind="NODE_EXPLODED"
        ),
        "source 'martian' is not one of": pb.ClusterEvent(
            severity="INFO", source="martian", kind="NODE_JOINED"
        ),
        "invalid id key 'Bad Key'": pb.ClusterEvent(
            severity="INFO", source="agent", kind="NODE_JOINED", ids={"Bad Key": "1"}
        ),
        "invalid id key 'node_name\\\\n'": pb.ClusterEvent(
            severity="INFO", source="agent", kind="NODE_JOINED", ids={"node_name\n": "1"}
        ),
    }
    with store:
        for message, bad in cases.items():
            with pytest.raises(ValueError, match=message):
                events.add_reported([good, bad])
        assert events.rows() == []


def test_a_retried_report_is_stored_once(db: Path) -> None:
    store, events, recorder = open_events(db)
    event = pb.ClusterEvent(
        event_id="abc123", severity="WARNING", source="agent", kind="WORKER_CRASHED"
    )
    with store:
        assert events.add_reported([event]) == 1
        assert events.add_reported([event]) == 0
        assert len(events.rows()) == 1
    assert recorder.snapshot()["c"][("freight_events_total", ("WARNING", "WORKER_CRASHED"))] == 1


def test_an_unknown_kind_from_the_head_itself_is_a_bug(db: Path) -> None:
    store, events, _ = open_events(db)
    with store, pytest.raises(ValueError, match="unknown event kind"):
        events.record("SOMETHING", "x")


# -- the agent side: outbox and crash detection ---------------------------------------------------


def test_the_outbox_is_bounded_and_throttles_store_full() -> None:
    outbox = EventOutbox("node1", max_pending=3)
    for i in range(5):
        outbox.record("WORKER_CRASHED", f"w{i}", worker_id=f"w{i}")
    assert [e.message for e in outbox.pending] == ["w2", "w3", "w4"]
    assert outbox.dropped == 2
    assert all(e.ids["node_id"] == "node1" and e.source == "agent" for e in outbox.pending)
    outbox.take()
    assert outbox.record_throttled("full", "OBJECT_STORE_FULL", "full", 60.0)
    assert not outbox.record_throttled("full", "OBJECT_STORE_FULL", "full", 60.0)
    assert [e.kind for e in outbox.pending] == ["OBJECT_STORE_FULL"]


def test_a_crash_is_reported_once_whatever_the_order_and_asked_exits_are_not() -> None:
    outbox = EventOutbox("node1")
    exits = WorkerExits(outbox)
    exits.connection_closed("w1", {"pid": 11, "actor_id": "a1"})
    exits.exited("w1", -signal.SIGKILL)
    exits.exited("w2", 3)  # the reaper saw it first
    exits.connection_closed("w2", {"pid": 12, "job_id": "00000002"})
    exits.expect("w3")
    exits.connection_closed("w3", {"pid": 13})
    exits.exited("w3", 0)
    exits.exited("w4", 1, {"pid": 14})  # never registered
    crashes = {e.ids["worker_id"]: e for e in outbox.take()}
    assert set(crashes) == {"w1", "w2", "w4"}
    w1 = crashes["w1"]
    assert (w1.kind, w1.severity) == ("WORKER_CRASHED", "WARNING")
    assert dict(w1.ids) == {
        "worker_id": "w1",
        "pid": "11",
        "actor_id": "a1",
        "signal": "SIGKILL",
        "node_id": "node1",
    }
    assert "was killed by SIGKILL while hosting actor a1" in w1.message
    assert crashes["w2"].ids["exit_code"] == "3"
    assert "leased to job 00000002" in crashes["w2"].message
    assert "before it registered" in crashes["w4"].message
    assert describe_exit(0) == ("exited with code 0", {"exit_code": "0"})


# -- the head process, over gRPC ------------------------------------------------------------------


@contextlib.contextmanager
def running_head(session_dir: Path, **env: str) -> Iterator[dict[str, Any]]:
    """A head process on ``session_dir``; yields head.json plus the token; stops it after."""
    token = create_token(session_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "freight.head", "--session-dir", str(session_dir)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    try:
        info_path = session_dir / "head.json"
        wait_for_condition(
            lambda: info_path.exists() or proc.poll() is not None, 20, "the head to start"
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield {**json.loads(info_path.read_text()), "token": token}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        if proc.stderr:
            proc.stderr.close()


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "cluster"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_head_keeps_the_newest_events_and_counts_the_rest(tmp_path: Path) -> None:
    crash = [
        pb.ClusterEvent(
            severity="WARNING", source="agent", kind="WORKER_CRASHED", message=f"crash {i}"
        )
        for i in range(6)
    ]
    with running_head(tmp_path, FREIGHT_EVENTS_MAX="3") as head:
        channel = sync_channel(head["address"], head["token"])
        try:
            pb_grpc.HeadServiceStub(channel).ReportEvents(
                pb.ReportEventsRequest(events=crash), timeout=10
            )
            reply = pb_grpc.StateServiceStub(channel).List(
                pb.ListStateRequest(kind="events"), timeout=10
            )
        finally:
            channel.close()
        figures = scrape(head["metrics_address"])
    assert [json.loads(r)["message"] for r in reply.rows] == ["crash 3", "crash 4", "crash 5"]
    assert reply.dropped == 3
    assert figures[("freight_telemetry_dropped_total", (("kind", "events"),))] == 3
    events_total = ("freight_events_total", (("kind", "WORKER_CRASHED"), ("severity", "WARNING")))
    assert figures[events_total] == 6


def test_the_head_records_its_events_and_takes_reported_ones(tmp_path: Path) -> None:
    with running_head(tmp_path) as info:
        address, token = info["address"], info["token"]
        channel = sync_channel(address, token)
        head = pb_grpc.HeadServiceStub(channel)
        node = pb.NodeInfo(node_id="n" * 32, agent_address="127.0.0.1:1", hostname="box")
        head.RegisterNode(pb.RegisterNodeRequest(node=node), timeout=10)
        job = head.RegisterJob(pb.RegisterJobRequest(job=pb.JobInfo(driver_pid=42))).job
        head.FinishJob(pb.FinishJobRequest(job_id=job.job_id, state="FAILED"), timeout=10)
        crash = pb.ClusterEvent(
            severity="WARNING",
            source="agent",
            kind="WORKER_CRASHED",
            message="worker w1 (pid 7) was killed by SIGKILL",
            ids={"node_id": node.node_id, "worker_id": "w1", "pid": "7"},
        )
        head.ReportEvents(pb.ReportEventsRequest(events=[crash]), timeout=10)
        bad = pb.ClusterEvent(severity="SEVERE", source="agent", kind="WORKER_CRASHED")
        with pytest.raises(grpc.RpcError) as refused:
            head.ReportEvents(pb.ReportEventsRequest(events=[bad]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "severity 'SEVERE'" in (refused.value.details() or "")
        head.UnregisterNode(pb.UnregisterNodeRequest(node_id=node.node_id, reason="stopped"))
        channel.close()
    store, events, _ = open_events(tmp_path / "control.db")
    with store:
        rows = events.rows(newest_first=False)
    got = [(r["kind"], r["severity"], r["source"]) for r in rows]
    assert got == [
        ("NODE_JOINED", "INFO", "head"),
        ("JOB_STARTED", "INFO", "head"),
        ("JOB_FINISHED", "WARNING", "head"),
        ("WORKER_CRASHED", "WARNING", "agent"),
        ("NODE_REMOVED", "INFO", "head"),
    ]
    assert rows[1]["job_id"] == rows[2]["job_id"] == job.job_id
    assert rows[3]["pid"] == "7"
    assert rows[0]["node_id"] == rows[4]["node_id"] == "n" * 32
