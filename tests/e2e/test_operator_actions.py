"""Acting on a running cluster from another terminal: `freight cancel`, `freight kill actor|worker`,
`freight job stop`, `freight stop --address`; each with the admin token does what it says and is
recorded as an OPERATOR_ACTION cluster event (role, caller, reason); the read-only token is
refused (exit 4) and changes nothing.

One cluster for the module (`freight start --head`); one driver program in it runs the tasks
and actors the test acts on, each task waiting for a file the test creates (never a sleep).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from freight import state
from freight.client import access
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.testing import head_counter, short_temp_dir
from freight.testing import wait_for_condition as wait_until
from freight.util.grpc_auth import sync_channel
from freight.util.tokens import readonly_token

FREIGHT = str(Path(sys.executable).with_name("freight"))
REASON = "disk full on node 3 — ünïcode ✓"

DRIVER = """
import json, os, sys, time, traceback
import freight

freight.init(address="auto")
DIR = sys.argv[1]
refs = {}
actors = {}


def flag(name):
    return os.path.join(DIR, name)


def wait_for(name):
    # The task's own loop: it runs until the test creates the file (cancel interrupts it).
    while not os.path.exists(flag(name)):
        time.sleep(0.02)


@freight.remote(max_retries=0)
def blocker(name):
    ctx = freight.get_runtime_context()
    with open(flag(name + ".id"), "w") as f:
        f.write(ctx.get_task_id())
    wait_for(name + ".go")
    return name


@freight.remote(max_retries=1)
def retried(name):
    ctx = freight.get_runtime_context()
    n = len([p for p in os.listdir(DIR) if p.startswith(name + ".attempt")])
    with open(flag(f"{name}.attempt{n}"), "w") as f:
        f.write(ctx.get_worker_id())
    wait_for(name + ".go")
    return n


@freight.remote(max_retries=0)
def parent(name):
    # Owns the blocker it submits: a cancel of the child goes to this task's worker.
    try:
        return freight.get(blocker.remote(name))
    except freight.exceptions.TaskCancelledError:
        return "child cancelled"


@freight.remote(resources={"absent": 1})
def never():
    return 1


@freight.remote
def quick():
    return freight.get_runtime_context().get_task_id()


@freight.remote(max_restarts=1)
class Counter:
    def pid(self):
        return os.getpid()


def outcome(ref):
    try:
        return {"value": freight.get(ref, timeout=60)}
    except Exception as e:
        return {"error": type(e).__name__}


print(json.dumps({"ready": freight.get_runtime_context().get_job_id()}), flush=True)
for line in sys.stdin:
    try:
        result = eval(line)
    except Exception:
        result = {"crash": traceback.format_exc()}
    print(json.dumps(result, default=str), flush=True)
"""


# The module's cluster: commands name it, as the tests start and stop other clusters beside it.
ADDRESS: dict[str, str] = {}


def env_for(temp_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), COLUMNS="200", NO_COLOR="1")
    env.pop("FREIGHT_TOKEN", None)
    env.pop("FREIGHT_ADDRESS", None)
    env.update(ADDRESS)
    return {**env, **extra}


def cli(temp_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FREIGHT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_for(temp_dir, **env),
        stdin=subprocess.DEVNULL,
    )


class Driver:
    """The driver program: each line sent is evaluated there, and answered with one JSON line."""

    def __init__(self, temp_dir: Path, work: Path) -> None:
        self.work = work
        self.err = open(work / "driver.err", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DRIVER), str(work)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            env=env_for(temp_dir, PYTHONUNBUFFERED="1"),
        )
        self.job_id = self._read(120)["ready"]

    def _read(self, timeout: float) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.err.seek(0)
            pytest.fail(f"the driver did not answer:\n{self.err.read()[-4000:]}")
        return json.loads(line)

    def ask(self, expr: str, timeout: float = 90.0) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(expr + "\n")
        self.proc.stdin.flush()
        answer = self._read(timeout)
        assert not (isinstance(answer, dict) and "crash" in answer), answer
        return answer

    def file(self, name: str, timeout: float = 60.0) -> str:
        """The content of a file a task writes, once it exists."""
        path = self.work / name
        wait_until(lambda: path.exists() and path.read_text() != "", timeout, f"{name} written")
        return path.read_text()

    def go(self, name: str) -> None:
        (self.work / f"{name}.go").touch()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.err.close()


def _start_head(temp_dir: Path) -> dict[str, str]:
    proc = cli(temp_dir, "start", "--head", "--port", "0", "--num-cpus", "2")
    assert proc.returncode == 0, proc.stderr
    address = re.search(r"address:\s+(\d+\.\d+\.\d+\.\d+:\d+)", proc.stdout)
    session = re.search(r"session dir:\s+(\S+)", proc.stdout)
    assert address and session, proc.stdout
    return {"address": address.group(1), "session_dir": session.group(1)}


def _leftovers(folder: Path) -> list[psutil.Process]:
    """Live processes whose command line names ``folder`` or a path in it."""
    whole = str(folder).rstrip(os.sep)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(a == whole or a.startswith(whole + os.sep) for a in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with short_temp_dir() as temp_dir:
        work = Path(temp_dir) / "work"
        work.mkdir()
        driver = None
        try:
            head = _start_head(Path(temp_dir))
            ADDRESS["FREIGHT_ADDRESS"] = head["address"]
            driver = Driver(Path(temp_dir), work)
            session = Path(head["session_dir"])
            yield {
                **head,
                "temp_dir": Path(temp_dir),
                "driver": driver,
                "readonly": readonly_token((session / "token").read_text().strip()),
            }
        finally:
            state.close()  # the connection task() opened
            if driver is not None:
                driver.close()
            ADDRESS.clear()
            try:
                cli(Path(temp_dir), "stop")
            finally:  # whatever a failed stop left behind
                for leftover in _leftovers(Path(temp_dir)):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        leftover.kill()


def actions(cluster: dict[str, Any], action: str) -> list[dict[str, str]]:
    """The cluster's OPERATOR_ACTION events for ``action`` (ids are fields of a row)."""
    proc = cli(cluster["temp_dir"], "events", "--kind", "OPERATOR_ACTION", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["items"]
    return [r for r in rows if r.get("action") == action]


def task(cluster: dict[str, Any], task_id: str) -> dict[str, Any]:
    """The task's record as `freight get task` reads it (the same state API call, from this
    process: a poll does not start a command each time); no state until its owner reported it."""
    session = Path(cluster["session_dir"])
    token = (session / "token").read_text().strip()
    target = access.Target(cluster["address"], token, str(session), "--address")
    return state.get_state("tasks", task_id, address=target) or {"state": ""}


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def _refused(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "read-only token" in proc.stderr and "admin token" in proc.stderr, proc.stderr


def _recorded(ids: dict[str, str], reason: str = REASON, by: str = "freight") -> None:
    assert ids["role"] == "admin", ids
    assert ids["by"].startswith(by), ids
    assert ids["reason"] == reason, ids


# ---- cancel -------------------------------------------------------------------------------------


def test_cancel_a_running_task_from_another_process(cluster: dict[str, Any]) -> None:
    driver = cluster["driver"]
    driver.ask("refs.__setitem__('run', blocker.remote('run'))")
    tid = driver.file("run.id")
    wait_until(lambda: task(cluster, tid)["state"] == "SUBMITTED_TO_WORKER", 30, "it runs")

    _refused(cli(cluster["temp_dir"], "cancel", tid, FREIGHT_TOKEN=cluster["readonly"]))
    assert task(cluster, tid)["state"] == "SUBMITTED_TO_WORKER"

    out = _ok(cli(cluster["temp_dir"], "cancel", tid[:-2], "--reason", REASON))
    assert tid in out and "sent to its owner" in out, out
    assert driver.ask("outcome(refs['run'])") == {"error": "TaskCancelledError"}
    wait_until(lambda: task(cluster, tid)["state"] in ("FAILED", "CANCELLED"), 30, "the task's end")
    (event,) = [e for e in actions(cluster, "cancel_task") if e["task_id"] == tid]
    _recorded(event, by="freight cancel")
    assert not (cluster["temp_dir"] / "work" / "run.go").exists()


def test_cancel_a_task_a_worker_owns(cluster: dict[str, Any]) -> None:
    driver = cluster["driver"]
    driver.ask("refs.__setitem__('parent', parent.remote('child'))")
    tid = driver.file("child.id")
    wait_until(lambda: task(cluster, tid)["state"] == "SUBMITTED_TO_WORKER", 30, "it runs")
    _ok(cli(cluster["temp_dir"], "cancel", tid, "--reason", "nested"))
    assert driver.ask("outcome(refs['parent'])") == {"value": "child cancelled"}


def test_cancel_a_pending_task(cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from freight.actions import cancel_task

    driver = cluster["driver"]
    driver.ask("refs.__setitem__('never', never.remote())")

    def pending() -> str:
        proc = cli(cluster["temp_dir"], "list", "tasks", "--filter", "name=never", "-o", "json")
        items = json.loads(proc.stdout)["items"] if proc.returncode == 0 else []
        return str(items[0]["task_id"]) if items else ""

    wait_until(lambda: pending() != "", 30, "the pending task's record")
    tid = pending()
    # The Python API, from this process (another one than the owner).
    monkeypatch.setenv("FREIGHT_TEMP_DIR", str(cluster["temp_dir"]))  # where its token is
    result = cancel_task(tid, reason="python api", address=cluster["address"])
    assert result.action == "cancel_task" and result.target == tid
    assert driver.ask("outcome(refs['never'])") == {"error": "TaskCancelledError"}
    (event,) = [e for e in actions(cluster, "cancel_task") if e["task_id"] == tid]
    assert event["role"] == "admin" and event["reason"] == "python api", event


def test_cancel_of_a_finished_task_says_so(cluster: dict[str, Any]) -> None:
    tid = cluster["driver"].ask("freight.get(quick.remote())")
    wait_until(lambda: task(cluster, tid)["state"] == "FINISHED", 30, "its record")
    proc = cli(cluster["temp_dir"], "cancel", tid)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"task {tid}" in proc.stderr and "already FINISHED: nothing to cancel" in proc.stderr


def test_cancel_bad_input(cluster: dict[str, Any]) -> None:
    tid = cluster["driver"].ask("freight.get(quick.remote())")
    unknown = cli(cluster["temp_dir"], "cancel", "f" * 32)
    assert unknown.returncode == 1 and "no task" in unknown.stderr, unknown.stderr
    not_hex = cli(cluster["temp_dir"], "cancel", "not-an-id")
    assert not_hex.returncode == 2 and "hexadecimal" in not_hex.stderr, not_hex.stderr
    # Every task of one process shares its id's first half.
    wait_until(lambda: task(cluster, tid)["state"] == "FINISHED", 30, "its record")
    ambiguous = cli(cluster["temp_dir"], "cancel", tid[:8])
    assert ambiguous.returncode == 2 and "give more characters" in ambiguous.stderr, (
        ambiguous.stderr
    )
    for proc in (unknown, not_hex, ambiguous):
        assert "Traceback" not in proc.stderr, proc.stderr


# ---- kill ---------------------------------------------------------------------------------------


def test_kill_actor_restarts_it_unless_no_restart(cluster: dict[str, Any]) -> None:
    driver = cluster["driver"]
    aid = driver.ask("actors.setdefault('c', Counter.remote()) and actors['c']._freight_actor_id")
    first = driver.ask("freight.get(actors['c'].pid.remote())")

    def actor() -> dict[str, Any]:
        proc = cli(cluster["temp_dir"], "get", "actor", aid, "-o", "json")
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    _refused(cli(cluster["temp_dir"], "kill", "actor", aid, FREIGHT_TOKEN=cluster["readonly"]))
    assert actor()["state"] == "ALIVE" and psutil.pid_exists(first)

    _ok(cli(cluster["temp_dir"], "kill", "actor", aid[:-2], "--reason", REASON))
    wait_until(
        lambda: actor()["state"] == "ALIVE" and actor()["num_restarts"] == 1, 60, "a restart"
    )
    _ok(cli(cluster["temp_dir"], "kill", "actor", aid, "--no-restart", "--reason", "done"))
    wait_until(lambda: actor()["state"] == "DEAD", 30, "the actor's death")
    assert actor()["num_restarts"] == 1
    again = cli(cluster["temp_dir"], "kill", "actor", aid)
    assert again.returncode == 1 and "already DEAD" in again.stderr, again.stderr
    events = [e for e in actions(cluster, "kill_actor") if e["actor_id"] == aid]
    assert len(events) == 2, events
    _recorded(events[0], by="freight kill")
    _recorded(events[1], reason="done", by="freight kill")


def test_a_drivers_kill_is_recorded_with_its_job(cluster: dict[str, Any]) -> None:
    driver = cluster["driver"]
    aid = driver.ask("actors.setdefault('k', Counter.remote()) and actors['k']._freight_actor_id")
    driver.ask("freight.get(actors['k'].pid.remote())")
    driver.ask("freight.kill(actors['k'])")
    (event,) = [e for e in actions(cluster, "kill_actor") if e["actor_id"] == aid]
    assert event["by"].startswith(f"freight.kill() in job {driver.job_id}"), event
    assert event["role"] == "admin" and not event.get("reason"), event


@pytest.mark.parametrize("how", ["exit", "--force"])
def test_kill_worker_retries_its_task(cluster: dict[str, Any], how: str) -> None:
    driver = cluster["driver"]
    name = f"retry{how.strip('-')}"
    driver.ask(f"refs.__setitem__({name!r}, retried.remote({name!r}))")
    wid = driver.file(f"{name}.attempt0")
    _refused(cli(cluster["temp_dir"], "kill", "worker", wid, FREIGHT_TOKEN=cluster["readonly"]))
    assert not (cluster["temp_dir"] / "work" / f"{name}.attempt1").exists()

    force = [how] if how == "--force" else []
    out = _ok(cli(cluster["temp_dir"], "kill", "worker", wid[:10], *force, "--reason", REASON))
    assert wid in out and ("SIGKILL" in out) == bool(force), out
    second = driver.file(f"{name}.attempt1")
    assert second != wid
    driver.go(name)
    assert driver.ask(f"outcome(refs[{name!r}])") == {"value": 1}
    (event,) = [e for e in actions(cluster, "kill_worker") if e["worker_id"] == wid]
    _recorded(event, by="freight kill")


def test_kill_worker_bad_input(cluster: dict[str, Any]) -> None:
    unknown = cli(cluster["temp_dir"], "kill", "worker", "f" * 16)
    assert unknown.returncode == 1 and "no worker" in unknown.stderr, unknown.stderr
    bad = cli(cluster["temp_dir"], "kill", "worker", "xyz")
    assert bad.returncode == 2 and "hexadecimal" in bad.stderr, bad.stderr


# ---- jobs and clusters --------------------------------------------------------------------------


def test_job_stop_with_a_reason(cluster: dict[str, Any]) -> None:
    code = "import signal; print('up', flush=True); signal.pause()"
    submitted = _ok(
        cli(cluster["temp_dir"], "job", "submit", "--no-wait", "--", sys.executable, "-c", code)
    )
    job_id = submitted.strip()

    def state() -> str:
        proc = cli(cluster["temp_dir"], "job", "status", job_id, "-o", "json")
        return str(json.loads(proc.stdout)["state"]) if proc.returncode == 0 else ""

    wait_until(lambda: state() == "RUNNING", 60, "the job running")
    _refused(cli(cluster["temp_dir"], "job", "stop", job_id, FREIGHT_TOKEN=cluster["readonly"]))
    assert state() == "RUNNING"
    out = _ok(cli(cluster["temp_dir"], "job", "stop", job_id, "--reason", REASON))
    assert "STOPPED" in out and REASON in out, out
    (event,) = [e for e in actions(cluster, "stop_job") if e["job_id"] == job_id]
    _recorded(event, by="freight job")


def test_stop_address_stops_that_cluster_only(cluster: dict[str, Any]) -> None:
    temp_dir = cluster["temp_dir"]
    other = _start_head(temp_dir)
    session = Path(other["session_dir"])
    wrong = cli(temp_dir, "stop", "--address", other["address"], FREIGHT_TOKEN=cluster["readonly"])
    assert wrong.returncode == 4 and "token is wrong" in wrong.stderr, wrong.stderr
    other_ro = readonly_token((session / "token").read_text().strip())
    _refused(cli(temp_dir, "stop", "--address", other["address"], FREIGHT_TOKEN=other_ro))
    _ok(cli(temp_dir, "status", "--address", other["address"]))

    stop = cli(temp_dir, "stop", "--address", other["address"], "--reason", REASON)
    assert stop.returncode == 0, stop.stderr + _log_tail(session)
    assert "1 node(s)" in stop.stdout, stop.stdout
    gone = cli(temp_dir, "status", "--address", other["address"])
    assert gone.returncode == 3, gone.stdout + gone.stderr
    wait_until(lambda: not _leftovers(session), 30, "the other cluster's processes to exit")
    _ok(cli(temp_dir, "status", "--address", cluster["address"]))  # the first one runs on
    (ids,) = _stop_events(session)  # recorded before the head went down: in its store
    assert ids["action"] == "stop_cluster"
    _recorded(ids, by="freight stop")


def _log_tail(session: Path) -> str:
    """The last lines of a session's head and agent logs (what a failed stop was doing)."""
    out = []
    for log in sorted((session / "logs").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-15:]
        out.append(f"--- {log.name}\n" + "\n".join(line[:300] for line in lines))
    return "\n".join(out)


def _stop_events(session: Path) -> list[dict[str, str]]:
    """The OPERATOR_ACTION events in a stopped cluster's store (recorded before it went down)."""
    with contextlib.closing(sqlite3.connect(session / "control.db")) as db:
        rows = db.execute("SELECT ids FROM events WHERE kind = 'OPERATOR_ACTION'").fetchall()
    return [json.loads(r[0]) for r in rows]


def test_stop_session_stops_that_folders_cluster(cluster: dict[str, Any]) -> None:
    temp_dir = cluster["temp_dir"]
    other = _start_head(temp_dir)
    session = Path(other["session_dir"])
    stop = cli(temp_dir, "stop", "--session", str(session), "--reason", REASON)
    assert stop.returncode == 0, stop.stderr + _log_tail(session)
    assert "1 node(s)" in stop.stdout, stop.stdout + _log_tail(session)
    wait_until(lambda: not _leftovers(session), 30, "the session's processes to exit")
    _ok(cli(temp_dir, "status", "--address", cluster["address"]))
    (ids,) = _stop_events(session)
    assert ids["action"] == "stop_cluster"
    _recorded(ids, by="freight stop")
    not_one = cli(temp_dir, "stop", "--session", str(temp_dir / "work"))
    assert not_one.returncode == 2 and "not a freight session folder" in not_one.stderr


def test_stop_goes_through_when_the_node_leaves_before_it_answers(
    cluster: dict[str, Any],
) -> None:
    """The head asks its node's agent to stop; the node unregisters (the head drops its agent's
    channel) before the agent's answer reaches the head, as a stopping agent does on a loaded
    machine. The head still gets the answer, and stops."""
    temp_dir = cluster["temp_dir"]
    other = _start_head(temp_dir)
    session = Path(other["session_dir"])
    (node_file,) = session.glob("nodes/*.json")
    node = json.loads(node_file.read_text())
    agent = psutil.Process(int(node["pid"]))
    agent.suspend()  # it answers once resumed, after the head has dropped its channel
    try:
        stop = subprocess.Popen(
            [FREIGHT, "stop", "--session", str(session), "--reason", REASON],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env_for(temp_dir), stdin=subprocess.DEVNULL,
        )  # fmt: skip
        head_log = session / "logs" / "head.log"
        wait_until(
            lambda: "shutdown requested" in head_log.read_text(errors="replace"),
            60,
            "the head to take the stop request (and ask the agent)",
        )
        token = (session / "token").read_text().strip()
        with contextlib.closing(sync_channel(other["address"], token)) as channel:
            pb_grpc.HeadServiceStub(channel).UnregisterNode(
                pb.UnregisterNodeRequest(node_id=node["node_id"], reason="agent stopped"),
                timeout=30,
            )
    finally:
        agent.resume()
    out, err = stop.communicate(timeout=120)
    assert stop.returncode == 0, err + _log_tail(session)
    assert "did not stop on request" not in out, out + _log_tail(session)
    assert "(1 node(s) and its head)" in out, out + _log_tail(session)
    wait_until(lambda: not _leftovers(session), 30, "the session's processes to exit")


def test_every_action_is_refused_to_the_read_only_token_and_counted(
    cluster: dict[str, Any],
) -> None:
    before = head_counter(Path(cluster["session_dir"]), "freight_auth_refused_total")
    for args in (
        ("cancel", "ab" * 16),
        ("kill", "actor", "ab" * 12),
        ("kill", "worker", "ab" * 8),
        ("job", "stop", "00000001"),
        ("stop", "--address", cluster["address"]),
    ):
        _refused(cli(cluster["temp_dir"], *args, FREIGHT_TOKEN=cluster["readonly"]))
    after = head_counter(Path(cluster["session_dir"]), "freight_auth_refused_total")
    assert after >= before + 5
    _ok(cli(cluster["temp_dir"], "status"))  # still up


def test_actions_are_not_read_only_methods() -> None:
    from freight.util.grpc_auth import READ_ONLY_METHODS

    for method in ("CancelTask", "KillWorker", "KillActor", "StopJob", "Shutdown"):
        assert f"/freight.v1.HeadService/{method}" not in READ_ONLY_METHODS
    assert "/freight.v1.NodeAgentService/CancelOwnedTask" not in READ_ONLY_METHODS
