"""Writes ``recordings/session.jsonl``: a small `freight top --record` session, hand-written.

Every id, time, host and address is fixed, so a replay of it at a fixed time draws the same
screen anywhere (the snapshot tests, ``scripts/inspector_screenshots.py``). Each view's source
is open for the whole recording (a recording made by hand may watch them all at once); the tasks
change over time, so a replay can be moved back and forth: ``train_step`` (``TASK_RUN``) is
SUBMITTED_TO_WORKER from T0+1 and FINISHED at T0+30. The detail of the failed task was read at
T0+50.

Run ``python tests/tui/make_recording.py`` after changing it; a test checks the committed file
is what this script writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

T0 = 1767268800.0  # 2026-01-01 12:00:00 UTC
END = T0 + 90
ADDRESS = "10.0.0.1:6379"
PATH = Path(__file__).parent / "recordings" / "session.jsonl"
ID_KEYS = {
    "nodes": "node_id",
    "jobs": "job_id",
    "tasks": "task_id",
    "actors": "actor_id",
    "objects": "object_id",
    "workers": "worker_id",
    "placement_groups": "placement_group_id",
    "events": "event_id",
}
HEAD, NODE2 = "a1" * 16, "b2" * 16
W1, W2, W3 = "c3c3c3c3c3c3c3c1", "c3c3c3c3c3c3c3c2", "c3c3c3c3c3c3c3c3"
JOB = "00000001"
TASKS = "ae54f3760ac0992c"  # task ids: the job's prefix, then a counter (as freight's)
TASK_RUN = f"{TASKS}{4:016x}"  # SUBMITTED_TO_WORKER, then FINISHED at T0+30
TASK_FAILED = f"{TASKS}{5:016x}"


def task(n: int, name: str, state: str, **kw: Any) -> dict[str, Any]:
    row = {
        "task_id": f"{TASKS}{n:016x}",
        "name": name,
        "state": state,
        "job_id": JOB,
        "actor_id": "",
        "parent_task_id": "",
        "node_id": HEAD if n % 2 else NODE2,
        "worker_id": W1 if n % 2 else W2,
        "attempt": 0,
        "pending_reason": "",
        "error_type": "",
        "error_kind": "",
        "error": "",
        "submit_time": T0 - 10 + n,
        "start_time": T0 - 9 + n,
        "end_time": 0.0,
        "duration": 0.0,
    }
    row.update(kw)
    if state in ("FINISHED", "FAILED") and not row["end_time"]:
        row["end_time"] = row["start_time"] + 0.25 * n
    if row["end_time"]:
        row["duration"] = round(row["end_time"] - row["start_time"], 3)
    return row


FAILED_ERROR = "ValueError: shard 7 has 0 rows (expected > 0)"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "pipeline.py", line 41, in preprocess\n'
    "    raise ValueError(f'shard {shard} has 0 rows (expected > 0)')\n"
    "ValueError: shard 7 has 0 rows (expected > 0)\n"
)

TASKS_AT_START = [
    task(1, "etl.load", "FINISHED"),
    task(2, "etl.load", "FINISHED"),
    task(3, "etl.load", "FINISHED"),
    task(4, "train_step", "SUBMITTED_TO_WORKER"),
    task(5, "preprocess", "FAILED", error_type="ValueError", error=FAILED_ERROR),
    task(
        6,
        "train_step",
        "PENDING_NODE_ASSIGNMENT",
        node_id="",
        worker_id="",
        start_time=0.0,
        pending_reason="waiting for resources: {'GPU': 1.0}",
    ),
]

NODES = [
    {
        "node_id": HEAD, "state": "ALIVE", "hostname": "head-0", "agent_address": "10.0.0.1:7001",
        "pid": 4101, "is_head_node": True, "num_workers": 2, "num_objects": 2,
        "object_store_used": 3 << 20, "start_time": T0 - 600, "last_heartbeat": T0 + 0.5,
    },
    {
        "node_id": NODE2, "state": "ALIVE", "hostname": "worker-1",
        "agent_address": "10.0.0.2:7001", "pid": 4202, "is_head_node": False,
        "num_workers": 1, "num_objects": 1, "object_store_used": 512 << 10,
        "start_time": T0 - 590, "last_heartbeat": T0 + 0.7,
    },
]  # fmt: skip
JOBS = [
    {
        "job_id": "00000000", "state": "SUCCEEDED", "namespace": "etl", "driver_pid": 3990,
        "start_time": T0 - 500, "end_time": T0 - 400, "entrypoint": "python etl.py --day 2025-12-31",
    },
    {
        "job_id": JOB, "state": "RUNNING", "namespace": "train", "driver_pid": 4000,
        "start_time": T0 - 10, "end_time": 0.0, "entrypoint": "python train.py --epochs 3",
    },
]  # fmt: skip
ACTORS = [
    {
        "actor_id": "d4" * 16, "class_name": "ParameterServer", "name": "ps", "state": "ALIVE",
        "node_id": HEAD, "pid": 4120, "num_restarts": 0, "death_cause": "",
    },
    {
        "actor_id": "e5" * 16, "class_name": "Trainer", "name": "trainer-0",
        "state": "RESTARTING", "node_id": NODE2, "pid": 4230, "num_restarts": 2,
        "death_cause": "worker process exited (SIGKILL: out of memory)",
    },
    {
        "actor_id": "f6" * 16, "class_name": "MetricsLogger", "name": "", "state": "DEAD",
        "node_id": HEAD, "pid": 4125, "num_restarts": 0,
        "death_cause": "killed by freight.kill()",
    },
]  # fmt: skip
OBJECTS = [
    {
        "object_id": "0b" * 14 + "0001", "node_id": HEAD, "size": 2 << 20,
        "sealed": True, "spilled": False, "owner_address": "10.0.0.1:40001",
        "create_time": T0 - 3,
    },
    {
        "object_id": "0b" * 14 + "0002", "node_id": HEAD, "size": 1 << 20,
        "sealed": True, "spilled": True, "owner_address": "10.0.0.1:40001",
        "create_time": T0 - 2,
    },
    {
        "object_id": "0b" * 14 + "0003", "node_id": NODE2, "size": 512 << 10,
        "sealed": True, "spilled": False, "owner_address": "10.0.0.2:40002",
        "create_time": T0 - 1,
    },
]  # fmt: skip
WORKERS = [
    {
        "worker_id": W1, "node_id": HEAD, "pid": 4110, "state": "LEASED", "actor_id": "",
        "rss_bytes": 180 << 20, "cpu_percent": 97.5, "start_time": T0 - 300,
    },
    {
        "worker_id": W2, "node_id": NODE2, "pid": 4210, "state": "LEASED", "actor_id": "",
        "rss_bytes": 150 << 20, "cpu_percent": 88.0, "start_time": T0 - 290,
    },
    {
        "worker_id": W3, "node_id": HEAD, "pid": 4120, "state": "ACTOR",
        "actor_id": "d4" * 16, "rss_bytes": 95 << 20, "cpu_percent": 3.0,
        "start_time": T0 - 280,
    },
]  # fmt: skip
PLACEMENT_GROUPS = [
    {
        "placement_group_id": "9a" * 9, "name": "trainers", "state": "CREATED",
        "strategy": "SPREAD", "bundles": [{"CPU": 1.0}, {"CPU": 1.0}],
        "bundle_nodes": [HEAD, NODE2], "create_time": T0 - 9, "pending_reason": "",
    },
    {
        "placement_group_id": "9b" * 9, "name": "gpu-eval", "state": "PENDING",
        "strategy": "PACK", "bundles": [{"GPU": 1.0}], "bundle_nodes": [],
        "create_time": T0 - 8, "pending_reason": "no node has {'GPU': 1.0}",
    },
]  # fmt: skip
EVENTS = [
    (T0 - 600, "INFO", "head", "NODE_JOINED", "node joined (head-0)"),
    (T0 - 590, "INFO", "head", "NODE_JOINED", "node joined (worker-1)"),
    (T0 - 10, "INFO", "head", "JOB_STARTED", "job 00000001 started: python train.py --epochs 3"),
    (T0 - 2.75, "ERROR", "head", "TASK_FAILED", f"task preprocess failed: {FAILED_ERROR}"),
    (T0 - 1, "WARNING", "head", "ACTOR_RESTARTING", "actor Trainer (trainer-0) restarting: 2/3"),
]


def event_rows() -> list[dict[str, Any]]:
    return [
        {"event_id": f"ev{i:022d}", "time": t, "severity": sev, "source": src, "kind": kind,
         "message": msg, "node_id": "", "job_id": "", "actor_id": "", "worker_id": "",
         "task_id": ""}
        for i, (t, sev, src, kind, msg) in enumerate(EVENTS)
    ]  # fmt: skip


GIB = 1 << 30


def overview() -> dict[str, Any]:
    """The overview at T0+1: two nodes (the head's store nearly full), ten minutes of rates,
    the SLOs, one alert firing and the newest events."""
    meters = [
        {"node_id": HEAD, "hostname": "head-0", "state": "ALIVE", "is_head_node": True,
         "cpu_used": 2.0, "cpu_total": 2.0, "gpu_used": 0.0, "gpu_total": 0.0,
         "memory_used": 14 * GIB, "memory_total": 16 * GIB,
         "store_used": 7 * GIB + GIB // 2, "store_total": 8 * GIB},
        {"node_id": NODE2, "hostname": "worker-1", "state": "DRAINING", "is_head_node": False,
         "cpu_used": 1.0, "cpu_total": 4.0, "gpu_used": 1.0, "gpu_total": 1.0,
         "memory_used": 5 * GIB, "memory_total": 16 * GIB,
         "store_used": GIB // 2, "store_total": 8 * GIB},
    ]  # fmt: skip
    wave = [0, 1, 2, 3, 5, 8, 9, 8, 6, 4, 3, 2, 2, 3, 4, 6, 8, 9, 7, 5]
    return {
        "nodes": meters,
        "nodes_listed": True,
        "throughput": [float(40 + 3 * w) for w in wave * 3],
        "failures": [float(w // 4) for w in wave * 3],
        "latency_p95": [0.05 + 0.01 * w for w in wave * 3],
        "latency_p50": 0.012,
        "scrapes": 60,
        "history_points": 0,
        "metrics_note": "",
        "slos": [
            {"name": "task_system_errors", "title": "task success", "objective": 0.999,
             "bad_ratio": 0.0004, "budget_left": 0.6},
            {"name": "task_scheduling_slow", "title": "scheduling < 200 ms", "objective": 0.99,
             "bad_ratio": 0.013, "budget_left": -0.3},
            {"name": "head_unavailable", "title": "head availability", "objective": 0.999,
             "bad_ratio": 0.0, "budget_left": 1.0},
        ],
        "slo_basis": "since start, no Prometheus",
        "alerts": [
            {"name": "FreightObjectStoreNearlyFull", "severity": "page", "state": "active",
             "summary": "node head-0's object store is 94% full", "starts_at": "11:58:00",
             "cluster": "prod"},
        ],
        "alertmanager": "http://10.0.0.1:9093",
        "alerts_note": "",
        "events": [
            {"time": t, "severity": sev, "kind": kind, "message": msg}
            for t, sev, _, kind, msg in reversed(EVENTS)
        ],
        "stale_since": None,
        "stale_reason": "",
    }  # fmt: skip


def log_lines() -> list[dict[str, Any]]:
    """What the failed task wrote, as `freight logs -o json` gives it."""
    base = {"component": "worker", "job_id": JOB, "task_id": TASK_FAILED, "node_id": NODE2,
            "worker_id": W2, "actor_id": ""}  # fmt: skip
    said = [
        (T0 - 3.9, "INFO", "preprocess: reading shard 7 from s3://data/day=2025-12-31/"),
        (T0 - 3.2, "WARNING", "preprocess: shard 7 is empty [0 rows, 0 bytes]"),
        (T0 - 2.76, "ERROR", "task preprocess failed:"),
    ]
    return [
        {**base, "timestamp": t, "level": level, "message": message,
         "exception": TRACEBACK if level == "ERROR" else ""}
        for t, level, message in said
    ]  # fmt: skip


def timeline() -> dict[str, Any]:
    """The trace of the running train_step and its children (state transitions)."""
    rows = [
        {"id": TASK_RUN, "parent": "", "name": "train_step", "depth": 0,
         "state": "RUNNING", "queued": T0 - 6, "start": T0 - 5, "end": 0.0},
        {"id": f"{TASKS}{0x41:016x}", "parent": TASK_RUN, "name": "load_batch",
         "depth": 1, "state": "FINISHED", "queued": T0 - 5, "start": T0 - 4.8, "end": T0 - 3},
        {"id": f"{TASKS}{0x42:016x}", "parent": TASK_RUN, "name": "forward",
         "depth": 1, "state": "FINISHED", "queued": T0 - 3, "start": T0 - 2.9, "end": T0 - 1},
        {"id": f"{TASKS}{0x43:016x}", "parent": TASK_RUN, "name": "backward",
         "depth": 1, "state": "RUNNING", "queued": T0 - 1, "start": T0 - 0.8, "end": 0.0},
    ]  # fmt: skip
    return {"rows": rows, "origin": "state transitions", "note": "", "error": "",
            "read_at": T0 + 1, "final": False}  # fmt: skip


def batch(rows: dict[str, dict[str, Any] | None], total: int) -> dict[str, Any]:
    return {
        "changes": rows,
        "synced": True,
        "matched": total,
        "total": total,
        "stale_since": None,
        "stale_reason": "",
        "error": "",
    }


def lines() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"t": T0, "recording": 1, "address": ADDRESS, "id_keys": ID_KEYS}]
    batch_type = "freight.tui.feed:Batch"
    views = {  # tasks first: the view a replay of this opens
        "tasks": TASKS_AT_START,
        "nodes": NODES,
        "jobs": JOBS,
        "actors": ACTORS,
        "objects": OBJECTS,
        "workers": WORKERS,
        "placement_groups": PLACEMENT_GROUPS,
        "events": event_rows(),
    }
    session = {}
    for n, (kind, rows) in enumerate(views.items(), 1):
        session[kind] = n
        out.append({"t": T0 + 0.5, "session": n, "source": kind, "open": True})
        listed = {r[ID_KEYS[kind]]: r for r in rows}
        out.append({"t": T0 + 1, "session": n, "type": batch_type,
                    "payload": batch(listed, len(rows))})  # fmt: skip
    tasks = session["tasks"]
    # Screens of their own, each read once: the overview, the failed task's logs (its view and
    # its detail's tail), the running task's trace.
    logs_batch = {"lines": log_lines(), "warnings": [], "caught_up": True, "done": False,
                  "error": ""}  # fmt: skip
    screens = [
        ("overview", "freight.tui.overview:Overview", overview()),
        (f"logs task_id={TASK_FAILED}", "freight.tui.logs:LogBatch", logs_batch),
        (f"logs task_id={TASK_FAILED} tail=50", "freight.tui.logs:LogBatch",
         dict(logs_batch, done=True)),
        (f"traces task_id={TASK_RUN}", "freight.tui.traces:Timeline", timeline()),
    ]  # fmt: skip
    for n, (name, payload_type, payload) in enumerate(screens, len(views) + 10):
        out.append({"t": T0 + 0.5, "session": n, "source": name, "open": True})
        out.append({"t": T0 + 1, "session": n, "type": payload_type, "payload": payload})

    def tasks_change(t: float, rows: list[dict[str, Any]], total: int) -> None:
        changes = {r["task_id"]: r for r in rows}
        out.append({"t": t, "session": tasks, "type": batch_type,
                    "payload": batch(changes, total)})  # fmt: skip

    tasks_change(T0 + 30, [task(4, "train_step", "FINISHED", end_time=T0 + 30)], 6)
    tasks_change(T0 + 31, [task(6, "train_step", "SUBMITTED_TO_WORKER", start_time=T0 + 31)], 6)
    out += [{"t": T0 + t, "beat": True} for t in (36, 41)]
    tasks_change(T0 + 45, [task(7, "evaluate", "PENDING_NODE_ASSIGNMENT", node_id="",
                               worker_id="", start_time=0.0,
                               pending_reason="waiting for arguments")], 7)  # fmt: skip
    detail = dict(TASKS_AT_START[4])
    detail.update(
        trace_id="",
        traceback=TRACEBACK,
        owner_address="10.0.0.1:40001",
        transitions=[
            {"time": T0 - 5.0, "state": "PENDING_ARGS_AVAIL", "cause": ""},
            {"time": T0 - 4.9, "state": "PENDING_NODE_ASSIGNMENT", "cause": ""},
            {"time": T0 - 4.0, "state": "SUBMITTED_TO_WORKER", "cause": f"worker {W1}"},
            {"time": T0 - 2.75, "state": "FAILED", "cause": "ValueError"},
        ],
        attempts=[],
    )
    get = len(views) + 1
    out += [
        {"t": T0 + 50, "session": get, "source": f"get tasks {TASK_FAILED}", "open": True},
        {"t": T0 + 50.02, "session": get, "type": "freight.tui.lookup:Lookup",
         "payload": {"done": True, "row": detail, "error": ""}},
        {"t": T0 + 55, "session": get, "close": True},
    ]  # fmt: skip
    out += [{"t": T0 + t, "beat": True} for t in (60, 65)]
    tasks_change(T0 + 70, [task(6, "train_step", "FINISHED", start_time=T0 + 31,
                               end_time=T0 + 69)], 7)  # fmt: skip
    out += [{"t": T0 + t, "beat": True} for t in (75, 80, 85, 90)]
    return out


def text() -> str:
    return "".join(json.dumps(line) + "\n" for line in lines())


if __name__ == "__main__":
    PATH.write_text(text())
    print(f"wrote {PATH}")
