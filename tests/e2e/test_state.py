"""The state API and its CLI against a cluster started with `freight start --head`.

One cluster for the module runs 10,441 tasks (plain ones of which a tenth raise, retried ones,
nested ones, actor calls); the tests then list, page, filter, get and summarize them, and check
every answer against the work that was done.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
import pytest

import freight
from freight import state
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.testing import short_temp_dir, wait_for_condition
from freight.util.grpc_auth import read_token, sync_channel

FREIGHT = str(Path(sys.executable).with_name("freight"))
N_WORK = 10_000  # a tenth of them raise
N_FLAKY = 20  # fail once, succeed on the retry
N_PARENTS, N_CHILDREN = 20, 10
N_ACTOR_CALLS = 200  # plus one that raises
TOTAL = N_WORK + N_FLAKY + N_PARENTS * (1 + N_CHILDREN) + N_ACTOR_CALLS + 1
FAILED = N_WORK // 10 + 1


def cli(temp_dir: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    full_env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), COLUMNS="250", NO_COLOR="1")
    full_env.pop("FREIGHT_TOKEN", None)
    full_env.pop("FREIGHT_ADDRESS", None)
    full_env.update(env or {})
    return subprocess.run(
        [FREIGHT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


def start_head(temp_dir: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, str]:
    proc = cli(temp_dir, "start", "--head", "--port", "0", *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    address = re.search(r"address:\s+(\S+)", proc.stdout)
    session = re.search(r"session dir:\s+(\S+)", proc.stdout)
    node = re.search(r"node:\s+(\S+)", proc.stdout)
    assert address and session and node, proc.stdout
    return {"address": address[1], "session_dir": session[1], "node_id": node[1]}


def session_pids(session_dir: str) -> list[int]:
    pids = []
    for path in [Path(session_dir) / "head.json", *Path(session_dir).glob("nodes/*.json")]:
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(json.loads(path.read_text())["pid"]))
    return pids


def stop_pids(pids: list[int]) -> None:
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            p = psutil.Process(pid)
            p.send_signal(signal.SIGCONT)
            p.terminate()
            procs.append(p)
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        p.kill()


# -- the workload -------------------------------------------------------------------------------


@freight.remote(max_retries=0)
def work(i: int) -> str:
    if i % 10 == 0:
        raise ValueError(f"work {i} refuses")
    return freight.get_runtime_context().get_task_id() or ""


@freight.remote(max_retries=2, retry_exceptions=True)
def flaky(marker: str) -> str:
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        raise RuntimeError("first attempt fails")
    return freight.get_runtime_context().get_task_id() or ""


@freight.remote
def child(i: int) -> int:
    return i


@freight.remote
def late(i: int) -> int:
    return i


@freight.remote
def parent(n: int) -> int:
    return sum(freight.get([child.remote(i) for i in range(n)]))


@freight.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    def boom(self) -> None:
        raise KeyError("boom")


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with short_temp_dir() as temp_dir:
        mp = pytest.MonkeyPatch()
        mp.setenv("FREIGHT_TEMP_DIR", str(temp_dir))
        mp.delenv("FREIGHT_TOKEN", raising=False)
        mp.delenv("FREIGHT_ADDRESS", raising=False)
        # These tests count every task at the head: no sampling of short successes.
        mp.setenv("FREIGHT_TASK_ROWS_SAMPLE", "0")
        info: dict[str, Any] = {}
        try:
            # A silent agent costs the state API its timeout: keep the partial-answer test short.
            info = start_head(
                temp_dir, "--num-cpus", "2", env={"FREIGHT_STATE_AGENT_TIMEOUT_S": "1"}
            )
            info["temp_dir"] = temp_dir
            freight.init(address=info["address"])
            yield info
        finally:
            freight.shutdown()
            state.close()
            cli(temp_dir, "stop")
            if info:
                stop_pids(session_pids(info["session_dir"]))
            mp.undo()


@pytest.fixture(scope="module")
def workload(cluster: dict[str, Any]) -> dict[str, Any]:
    refs = [work.remote(i) for i in range(N_WORK)]
    markers = [str(cluster["temp_dir"] / f"flaky-{i}") for i in range(N_FLAKY)]
    flaky_refs = [flaky.remote(m) for m in markers]
    ok_ids: set[str] = set()
    for i, ref in enumerate(refs):
        if i % 10:
            ok_ids.add(freight.get(ref))
        else:
            with pytest.raises(freight.exceptions.RayTaskError):
                freight.get(ref)
    flaky_ids = set(freight.get(flaky_refs))
    mid = time.time()
    counter = Counter.remote()
    assert freight.get([parent.remote(N_CHILDREN) for _ in range(N_PARENTS)]) == [45] * N_PARENTS
    assert freight.get([counter.add.remote(1) for _ in range(N_ACTOR_CALLS)])[-1] == N_ACTOR_CALLS
    with pytest.raises(freight.exceptions.RayTaskError):
        freight.get(counter.boom.remote())

    def recorded() -> bool:
        s = state.summarize_tasks()
        done = sum(n for st, n in s["by_state"].items() if st in ("FINISHED", "FAILED"))
        return done >= TOTAL

    wait_for_condition(recorded, 60, "every task to reach the head's state store")
    return {"ok_ids": ok_ids, "flaky_ids": flaky_ids, "mid": mid, "counter": counter}


def all_rows(filters: list[Any], page: int = 5000, detail: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        got = state.list_tasks(filters, limit=page, cursor=cursor, detail=detail)
        rows += got
        cursor = got.next_cursor
        if not cursor:
            return rows


# -- tasks --------------------------------------------------------------------------------------


def test_state_filter_applies_before_truncation(workload: dict[str, Any]) -> None:
    failed = state.list_tasks(["state=FAILED"], limit=50)
    assert len(failed) == 50
    assert all(r["state"] == "FAILED" for r in failed)
    assert failed.matched == FAILED
    assert failed.truncated and failed.remaining == FAILED - 50
    assert any(f"50 of {FAILED} matching" in w for w in failed.warnings)
    everything = all_rows(["state=FAILED"], page=300)
    work_failed = [r for r in everything if r["name"] == "work"]
    assert len(everything) == FAILED
    assert len(work_failed) == N_WORK // 10
    assert all(r["error_type"] == "ValueError" for r in work_failed)
    assert not {r["task_id"] for r in everything} & workload["ok_ids"]
    finished_work = all_rows([("name", "=", "work"), ("state", "=", "FINISHED")])
    assert {r["task_id"] for r in finished_work} == workload["ok_ids"]


def test_regex_and_not_equal(workload: dict[str, Any]) -> None:
    children = state.list_tasks(["name~^chi"], limit=1)
    assert children.matched == N_PARENTS * N_CHILDREN
    actor_calls = state.list_tasks(["actor_id!="], limit=1000)
    assert actor_calls.matched == N_ACTOR_CALLS + 1
    assert {r["name"] for r in actor_calls} == {"Counter.add", "Counter.boom"}
    not_work = state.list_tasks(["name!=work", "name~^(flaky|parent|child|Counter)"], limit=1)
    assert not_work.matched == TOTAL - N_WORK
    nested = state.list_tasks(["name=child", "parent_task_id!="], limit=1)
    assert nested.matched == N_PARENTS * N_CHILDREN


def test_numeric_filter_finds_the_retried_tasks(workload: dict[str, Any]) -> None:
    retried = state.list_tasks(["attempt>0"], limit=100, detail=True)
    assert {r["task_id"] for r in retried} == workload["flaky_ids"]
    for r in retried:
        assert r["state"] == "FINISHED" and r["attempt"] == 1
        assert [a["attempt"] for a in r["attempts"]] == [0, 1]
        assert r["attempts"][0]["outcome"].startswith("retry 1")
        assert r["attempts"][1]["outcome"] == "FINISHED"
        assert r["attempts"][0]["end_time"] <= r["attempts"][1]["start_time"]


def test_time_filters_in_unix_seconds_and_iso(workload: dict[str, Any]) -> None:
    later = N_PARENTS * (1 + N_CHILDREN) + N_ACTOR_CALLS + 1
    mid = workload["mid"]
    assert state.list_tasks([f"start_time>{mid}"], limit=1).matched == later
    iso = datetime.fromtimestamp(mid, UTC).isoformat()
    assert state.list_tasks([("start_time", ">", iso)], limit=1).matched == later
    earlier = state.list_tasks([f"end_time<={mid}", "end_time>0"], limit=1)
    assert earlier.matched == N_WORK + N_FLAKY


def test_pages_cover_every_match_exactly_once_while_tasks_arrive(workload: dict[str, Any]) -> None:
    expected = state.list_tasks(["state=FINISHED", "name=work"], limit=1).matched
    seen: list[str] = []
    cursor = None
    arriving: list[Any] = []
    while True:
        page = state.list_tasks(["state=FINISHED"], limit=997, cursor=cursor)
        seen += [r["task_id"] for r in page if r["name"] == "work"]
        arriving.append(late.remote(len(arriving)))  # more tasks arrive while we page
        cursor = page.next_cursor
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == expected
    assert set(seen) == workload["ok_ids"]
    freight.get(arriving)


def test_newest_first_pages_the_same_rows_in_reverse(workload: dict[str, Any]) -> None:
    oldest_first = [r["task_id"] for r in all_rows(["name=work", "state=FAILED"])]
    newest: list[str] = []
    cursor = None
    while True:  # pages of 97 rows, newest first
        page = state.list_tasks(
            ["name=work", "state=FAILED"], limit=97, cursor=cursor, newest_first=True
        )
        newest += [r["task_id"] for r in page]
        cursor = page.next_cursor
        if not cursor:
            break
    assert len(oldest_first) == FAILED - 1 and newest == oldest_first[::-1]
    # --limit N --newest: the N most recent; events and the other kinds too. (Filters hold
    # the sets still: other tests' tasks and events may still be arriving.)
    last = state.list_tasks(["name=work"], limit=1, newest_first=True)[0]
    assert last["task_id"] == all_rows(["name=work"])[-1]["task_id"]
    before = [("time", "<", str(time.time()))]
    events = state.list_events(before, limit=1000)
    assert [e["event_id"] for e in state.list_events(before, limit=3, newest_first=True)] == [
        e["event_id"] for e in events[::-1][:3]
    ]
    # A cursor pages on in the order it was made for.
    page = state.list_tasks(limit=5, newest_first=True)
    with pytest.raises(ValueError, match="newest first, not tasks"):
        state.list_tasks(limit=5, cursor=page.next_cursor)


def test_the_schema_names_every_kinds_filterable_fields(cluster: dict[str, Any]) -> None:
    kinds = state.schema()
    assert sorted(kinds) == sorted(state.KINDS)
    tasks = kinds["tasks"]
    assert tasks.id_key == "task_id" and tasks.watchable and tasks.summarizable
    fields = {f.name: f for f in tasks.fields}
    assert fields["state"].type == "text" and "FAILED" in fields["state"].choices
    assert fields["attempt"].type == "number" and fields["start_time"].type == "time"
    assert not kinds["objects"].watchable
    actions = {f.name for f in kinds["events"].fields}
    assert {"action", "role", "by", "reason"} <= actions
    # Every field the schema names is one a filter may use.
    for name, kind in kinds.items():
        for f in kind.fields:
            value = f.choices[0] if f.choices else ("1" if f.type != "text" else "x")
            state.list_state(name, [(f.name, "=" if f.type != "time" else ">", value)], limit=1)
    # The CLI: `freight explain`.
    out = cli(cluster["temp_dir"], "explain", "task", "-o", "json")
    assert out.returncode == 0, out.stderr
    (item,) = json.loads(out.stdout)["items"]
    assert (
        item["kind"] == "tasks"
        and {"name": "attempt", "type": "number", "choices": []} in (item["fields"])
    )
    table = cli(cluster["temp_dir"], "explain", "nodes")
    assert table.returncode == 0 and "node_id" in table.stdout and "DEAD" in table.stdout
    bad = cli(cluster["temp_dir"], "explain", "bogus")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_truncation_counts_are_honest(workload: dict[str, Any]) -> None:
    first = state.list_tasks(limit=10)
    assert first.matched == first.total >= TOTAL
    assert first.remaining == first.total - 10 and first.truncated and first.next_cursor
    held = state.list_tasks(["state=FAILED"], limit=FAILED)
    assert len(held) == FAILED and not held.truncated and held.next_cursor == ""
    assert held.remaining == 0 and held.dropped == 0 and not held.partial


def test_a_task_record_holds_its_history(cluster: dict[str, Any], workload: dict[str, Any]) -> None:
    failed = state.list_tasks(["name=work", "state=FAILED"], limit=1)[0]
    rec = state.get_task(failed["task_id"])
    assert rec is not None
    states = [t["state"] for t in rec["transitions"]]
    assert states == [
        "PENDING_ARGS_AVAIL",
        "PENDING_NODE_ASSIGNMENT",
        "SUBMITTED_TO_WORKER",
        "FAILED",
    ]
    times = [t["time"] for t in rec["transitions"]]
    assert times == sorted(times) and times[0] > 0
    assert rec["node_id"] == cluster["node_id"]
    assert rec["worker_id"] and rec["attempts"][-1]["worker_id"] == rec["worker_id"]
    assert rec["attempt"] == 0 and len(rec["attempts"]) == 1
    assert rec["error_type"] == "ValueError" and rec["error_kind"] == "application"
    assert "refuses" in rec["error"]
    assert rec["start_time"] <= rec["end_time"] <= times[-1]
    assert rec["job_id"] == freight.get_runtime_context().get_job_id()


def test_get_by_prefix(workload: dict[str, Any]) -> None:
    task_id = next(iter(workload["ok_ids"]))
    rec = state.get_task(task_id[:20])
    assert rec is not None and rec["task_id"] == task_id and rec["state"] == "FINISHED"
    with pytest.raises(ValueError, match=r"matches \d+ tasks.*give more characters"):
        state.get_task(task_id[:16])  # the owner's id prefix: shared by its tasks
    assert state.get_task("0" * 32) is None


def test_summaries_count_per_name_and_state(workload: dict[str, Any]) -> None:
    s = state.summarize_tasks()
    assert s["by_name"]["work"]["states"] == {"FINISHED": N_WORK * 9 // 10, "FAILED": N_WORK // 10}
    assert s["by_name"]["work"]["error_types"] == {"ValueError": N_WORK // 10}
    assert s["by_name"]["child"]["states"]["FINISHED"] >= N_PARENTS * N_CHILDREN
    assert s["by_name"]["Counter.boom"]["states"] == {"FAILED": 1}
    assert s["by_name"]["Counter.add"]["actor_task"] is True
    only = state.summarize_tasks(["name=flaky"])
    assert only["total"] == N_FLAKY and only["by_state"] == {"FINISHED": N_FLAKY}
    actors = state.summarize_actors()
    assert actors["by_class"]["Counter"]["states"] == {"ALIVE": 1}


# -- other kinds --------------------------------------------------------------------------------


def test_list_nodes_jobs_actors(cluster: dict[str, Any], workload: dict[str, Any]) -> None:
    nodes = state.list_nodes(["state=ALIVE", "is_head_node=true"])
    assert [n["node_id"] for n in nodes] == [cluster["node_id"]]
    assert nodes[0]["resources_total"]["CPU"] == 2
    # The agent's pid and addresses, to reach or signal it.
    agent = psutil.Process(nodes[0]["pid"])
    assert "freight.node" in " ".join(agent.cmdline())
    assert nodes[0]["agent_address"] and nodes[0]["metrics_address"] and nodes[0]["data_address"]
    job_id = freight.get_runtime_context().get_job_id()
    jobs = state.list_jobs([f"job_id={job_id}"])
    assert len(jobs) == 1 and jobs[0]["state"] == "RUNNING" and jobs[0]["driver_pid"] == os.getpid()
    actors = state.list_actors(["class_name=Counter"])
    assert len(actors) == 1 and actors[0]["state"] == "ALIVE"
    assert state.get_actor(actors[0]["actor_id"][:12])["class_name"] == "Counter"
    assert state.get_node(cluster["node_id"][:8])["is_head_node"] is True


def test_list_workers_and_objects(cluster: dict[str, Any], workload: dict[str, Any]) -> None:
    workers = state.list_workers()
    assert not workers.partial and len(workers) >= 2
    assert all(w["node_id"] == cluster["node_id"] and w["pid"] > 0 for w in workers)
    actor_worker = [w for w in workers if w["state"] == "ACTOR"]
    assert len(actor_worker) == 1 and actor_worker[0]["actor_id"]
    assert psutil.Process(actor_worker[0]["pid"]).memory_info().rss > 0
    assert all(w["rss_bytes"] > 0 for w in workers if w["state"] != "STARTING")
    array = np.arange(2_000_000, dtype=np.float64)
    ref = freight.put(array)
    objects = state.list_objects([f"object_id={ref.hex()}"])
    assert len(objects) == 1
    assert objects[0]["size"] >= array.nbytes and objects[0]["sealed"] is True
    assert objects[0]["node_id"] == cluster["node_id"]
    summary = state.summarize_objects()
    assert summary["by_node"][cluster["node_id"]]["bytes"] >= array.nbytes
    del ref


def test_bad_filter_is_invalid_argument_and_the_head_keeps_serving(cluster: dict[str, Any]) -> None:
    token = read_token(cluster["session_dir"])
    channel = sync_channel(cluster["address"], token)
    try:
        stub = pb_grpc.StateServiceStub(channel)
        bad = pb.ListStateRequest(
            kind="tasks", filters=[pb.Filter(key="colour", op="=", value="x")]
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.List(bad, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown filter key 'colour' for tasks; valid keys:" in err.value.details()
        assert "state" in err.value.details()
        regex = pb.ListStateRequest(
            kind="tasks", filters=[pb.Filter(key="name", op="~", value="(")]
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.List(regex, timeout=10)
        assert "bad regular expression" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.List(pb.ListStateRequest(kind="gadgets"), timeout=10)
        assert "valid kinds: nodes, jobs, tasks" in err.value.details()
        assert stub.List(pb.ListStateRequest(kind="nodes"), timeout=10).matched >= 1
    finally:
        channel.close()
    with pytest.raises(ValueError, match=r"FAILD.*valid values:.*FAILED"):
        state.list_tasks(["state=FAILD"])


def test_a_node_that_does_not_answer_makes_the_answer_partial(cluster: dict[str, Any]) -> None:
    proc = cli(cluster["temp_dir"], "start", "--address", cluster["address"], "--num-cpus", "0")
    assert proc.returncode == 0, proc.stderr
    node_id = re.search(r"node:\s+(\S+)", proc.stdout)[1]  # type: ignore[index]
    node_dir = re.search(r"session dir:\s+(\S+)", proc.stdout)[1]  # type: ignore[index]
    info = json.loads((Path(node_dir) / "nodes" / f"{node_id}.json").read_text())
    agent = psutil.Process(info["pid"])
    try:
        wait_for_condition(lambda: state.list_nodes([f"node_id={node_id}", "state=ALIVE"]))
        agent.suspend()
        workers = state.list_workers()
        assert workers.partial
        assert any(node_id[:12] in w and "did not answer" in w for w in workers.warnings)
        assert workers and all(w["node_id"] == cluster["node_id"] for w in workers)
    finally:
        stop_pids([agent.pid])
    wait_for_condition(lambda: not state.list_workers().partial, 30, "a complete answer again")


# -- retention, on a cluster of its own ----------------------------------------------------------

RETENTION_DRIVER = """
    import sys
    import freight

    @freight.remote(max_retries=0)
    def job(i):
        if i % 10 == 0:
            raise ValueError(i)
        return i

    freight.init(address=sys.argv[1])
    refs = [job.remote(i) for i in range(500)]
    freight.wait(refs, num_returns=len(refs), timeout=120)
    freight.shutdown()
"""


def test_retention_evicts_successes_first_and_reports_dropped(cluster: dict[str, Any]) -> None:
    small = {"FREIGHT_STATE_TASKS_MAX": "100", "FREIGHT_STATE_FAILED_TASKS_MAX": "1000"}
    other = start_head(cluster["temp_dir"], "--num-cpus", "1", env=small)
    try:
        env = dict(os.environ, FREIGHT_TEMP_DIR=str(cluster["temp_dir"]))
        driver = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(RETENTION_DRIVER), other["address"]],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )
        assert driver.returncode == 0, driver.stderr[-3000:]
        address = other["address"]

        def settled() -> Any:
            s = state.summarize_tasks(address=address)
            return (
                s if s["held"] == {"live": 0, "finished": 100, "failed_or_cancelled": 50} else None
            )

        s = wait_for_condition(settled, 60, "the small cluster's records to settle")
        assert s["by_state"] == {"FINISHED": 100, "FAILED": 50}
        assert s["dropped_records"] == 450 - 100
        failed = state.list_tasks(["state=FAILED"], limit=100, address=address)
        assert len(failed) == 50 and not failed.truncated
        assert failed.dropped >= 350
        assert any("evicted by retention" in w for w in failed.warnings)
        kept = state.list_tasks(["state=FINISHED"], limit=1000, address=address)
        newest = max(r["submit_time"] for r in kept)
        oldest_failed = min(r["submit_time"] for r in failed)
        assert oldest_failed < min(r["submit_time"] for r in kept) <= newest
    finally:
        stop_pids(list(reversed(session_pids(other["session_dir"]))))


# -- the command line ---------------------------------------------------------------------------


def run_cli(cluster: dict[str, Any], *args: str) -> Any:
    proc = cli(cluster["temp_dir"], *args, "--address", cluster["address"])
    assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_list_failed_tasks_as_json(cluster: dict[str, Any], workload: dict[str, Any]) -> None:
    out = json.loads(
        run_cli(cluster, "list", "tasks", "--filter", "state=FAILED", "-o", "json").stdout
    )
    assert out["matched"] == FAILED and out["returned"] == 100
    assert out["truncated"] is True and out["remaining"] == FAILED - 100 and out["next_cursor"]
    assert all(r["state"] == "FAILED" for r in out["items"])
    nxt = run_cli(
        cluster, "list", "task", "--filter", "state=FAILED", "--cursor", out["next_cursor"],
        "-o", "json",
    )  # fmt: skip
    page2 = json.loads(nxt.stdout)
    assert not {r["task_id"] for r in page2["items"]} & {r["task_id"] for r in out["items"]}


def test_cli_list_as_yaml_and_table(cluster: dict[str, Any], workload: dict[str, Any]) -> None:
    import yaml

    out = yaml.safe_load(run_cli(cluster, "list", "nodes", "-o", "yaml").stdout)
    assert out["items"][0]["node_id"] == cluster["node_id"]
    table = run_cli(
        cluster, "list", "tasks", "--filter", "name=work", "--limit", "5", "-o", "table"
    )
    assert "work" in table.stdout and "next page" in table.stdout and "--cursor" in table.stdout
    # -o wide adds columns (kubectl's convention): a node's agent address and pid.
    nodes, wide = (run_cli(cluster, "list", "nodes", *o).stdout for o in ([], ["-o", "wide"]))
    assert " pid " not in nodes and " agent " not in nodes, nodes
    assert " pid " in wide and f" {out['items'][0]['pid']} " in wide and " agent " in wide, wide
    assert cluster["node_id"] in wide  # and ids whole


def test_cli_get_task(cluster: dict[str, Any], workload: dict[str, Any]) -> None:
    task_id = next(iter(workload["flaky_ids"]))
    row = json.loads(run_cli(cluster, "get", "task", task_id, "-o", "json").stdout)
    assert row["task_id"] == task_id and row["attempt"] == 1
    assert [t["state"] for t in row["transitions"]][-1] == "FINISHED"
    table = run_cli(cluster, "get", "task", task_id, "-o", "table").stdout
    assert "transitions" in table and "attempts" in table and "retry 1" in table
    missing = cli(cluster["temp_dir"], "get", "task", "f" * 32, "--address", cluster["address"])
    assert missing.returncode == 1 and "no task with id" in missing.stderr


def test_cli_summary_tasks(cluster: dict[str, Any], workload: dict[str, Any]) -> None:
    out = json.loads(run_cli(cluster, "summary", "tasks", "-o", "json").stdout)
    assert out["by_name"]["work"]["states"]["FAILED"] == N_WORK // 10
    table = run_cli(cluster, "summary", "tasks", "-o", "table").stdout
    assert "work" in table and "ValueError: 1000" in table


def test_cli_bad_filter(cluster: dict[str, Any]) -> None:
    proc = cli(
        cluster["temp_dir"],
        "list",
        "tasks",
        "--filter",
        "colour=red",
        "--address",
        cluster["address"],
    )
    assert proc.returncode == 2  # a usage error
    assert "unknown filter key 'colour'" in proc.stderr and "valid keys" in proc.stderr


def test_cli_timeline_has_every_finished_task(
    cluster: dict[str, Any], workload: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "trace.json"
    proc = run_cli(cluster, "timeline", "--file", str(out))
    trace = json.loads(out.read_text())
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    for e in complete[:100]:
        assert {"name", "ts", "dur", "pid", "tid", "args"} <= set(e) and e["dur"] >= 0
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert f"node {cluster['node_id'][:12]}" in names
    drawn = {e["args"]["task_id"] for e in complete}
    finished = {r["task_id"] for r in all_rows(["state=FINISHED"])}
    assert finished <= drawn
    retried = [e for e in complete if e["args"]["task_id"] in workload["flaky_ids"]]
    assert len(retried) == 2 * N_FLAKY  # both attempts of each retried task
    assert f"wrote {len(complete)} task executions" in proc.stdout


def test_cli_timeline_window_and_job(
    cluster: dict[str, Any], workload: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "later.json"
    job_id = freight.get_runtime_context().get_job_id()
    run_cli(
        cluster, "timeline", "--file", str(out), "--since", str(workload["mid"]), "--job", job_id
    )
    complete = [e for e in json.loads(out.read_text())["traceEvents"] if e["ph"] == "X"]
    assert complete and all(e["ts"] + e["dur"] >= workload["mid"] * 1e6 - 1 for e in complete)
    assert not any(e["name"] == "work" for e in complete)


def test_status_shows_the_state_figures(cluster: dict[str, Any]) -> None:
    proc = run_cli(cluster, "status", "-o", "json")
    assert "pending_tasks_by_reason" in json.loads(proc.stdout)


# -- placement groups ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def groups(cluster: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One group that fits the 2-CPU cluster (created) and one that never can (pending)."""
    from freight.util.placement_group import placement_group, remove_placement_group

    fits = placement_group([{"CPU": 1}], strategy="PACK", name="fits")
    huge = placement_group([{"CPU": 1000}, {"CPU": 1}], strategy="SPREAD", name="huge")
    try:
        assert fits.wait(timeout_seconds=30)

        def huge_is_infeasible() -> bool:
            row = state.get_placement_group(huge.id)
            return bool(row) and row["pending_reason"].startswith("infeasible")

        wait_for_condition(huge_is_infeasible, 30, "the huge group's pending reason")
        yield {"fits": fits.id, "huge": huge.id}
    finally:
        remove_placement_group(fits)
        remove_placement_group(huge)


def test_cli_lists_placement_groups_with_state_and_reason(
    cluster: dict[str, Any], groups: dict[str, Any]
) -> None:
    out = json.loads(run_cli(cluster, "list", "placement_groups", "-o", "json").stdout)
    rows = [r for r in out["items"] if r["placement_group_id"] in groups.values()]
    assert [r["placement_group_id"] for r in rows] == [groups["fits"], groups["huge"]]
    fits, huge = rows
    assert fits["state"] == "CREATED" and fits["pending_reason"] == ""
    assert fits["bundles"] == [{"CPU": 1.0}] and fits["bundle_nodes"] == [cluster["node_id"]]
    assert fits["strategy"] == "PACK" and fits["name"] == "fits" and fits["detached"] is False
    assert fits["job_id"] == freight.get_runtime_context().get_job_id()
    assert huge["state"] == "PENDING" and huge["pending_reason"].startswith("infeasible")
    assert huge["bundles"] == [{"CPU": 1000.0}, {"CPU": 1.0}] and huge["bundle_nodes"] == []
    assert fits["create_time"] <= huge["create_time"] <= time.time()
    assert not out["warnings"]
    table = run_cli(cluster, "list", "placement_groups", "-o", "table").stdout
    assert groups["huge"] in table and "infeasible" in table


def test_placement_groups_filter_and_page(groups: dict[str, Any]) -> None:
    pending = state.list_placement_groups(["state=PENDING", "name~^(fits|huge)$"])
    assert [r["placement_group_id"] for r in pending] == [groups["huge"]]
    created = state.list_placement_groups([("state", "=", "CREATED"), "num_bundles=1"])
    assert groups["fits"] in [r["placement_group_id"] for r in created]
    assert groups["huge"] not in [r["placement_group_id"] for r in created]
    first = state.list_placement_groups(["name~^(fits|huge)$"], limit=1)
    assert first.truncated and first.matched == 2
    second = state.list_placement_groups(["name~^(fits|huge)$"], cursor=first.next_cursor)
    assert [r["placement_group_id"] for r in [*first, *second]] == [groups["fits"], groups["huge"]]
    with pytest.raises(ValueError, match="PENDING"):
        state.list_placement_groups(["state=WAITING"])


def test_cli_get_placement_group_by_id_prefix(
    cluster: dict[str, Any], groups: dict[str, Any]
) -> None:
    row = json.loads(
        run_cli(cluster, "get", "placement_group", groups["huge"][:10], "-o", "json").stdout
    )
    assert row["placement_group_id"] == groups["huge"] and row["state"] == "PENDING"


def test_status_shows_pending_placement_groups(
    cluster: dict[str, Any], groups: dict[str, Any]
) -> None:
    text = run_cli(cluster, "status").stdout
    assert "placement groups:" in text and "Infeasible demand" in text
    line = next(ln for ln in text.splitlines() if groups["huge"] in ln)
    assert "{CPU: 1000}, {CPU: 1}" in line and "infeasible" in line
    data = json.loads(run_cli(cluster, "status", "-o", "json").stdout)["placement_groups"]
    assert data["by_state"]["PENDING"] >= 1 and data["by_state"]["CREATED"] >= 1
    assert groups["huge"] in [g["placement_group_id"] for g in data["pending"]]


def test_a_removed_placement_group_shows_removed(cluster: dict[str, Any]) -> None:
    from freight.util.placement_group import placement_group, remove_placement_group

    pg = placement_group([{"CPU": 0.5}], strategy="STRICT_PACK")
    assert pg.wait(timeout_seconds=30)
    remove_placement_group(pg)  # the head marks it REMOVED before it answers
    row = state.get_placement_group(pg.id)
    assert row is not None and row["state"] == "REMOVED"
    removed = state.list_placement_groups(["state=REMOVED"])
    assert pg.id in [r["placement_group_id"] for r in removed]
