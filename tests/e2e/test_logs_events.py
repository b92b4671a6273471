"""`freight logs` and `freight events` against a cluster started by `freight start --head`.

Drivers print markers from tasks and actors; the tests find those lines by task, actor and job
id in the JSON-lines logs, follow new lines (from worker processes started after the command),
kill a worker and find the WORKER_CRASHED event, and check the head's event metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from freight.testing import interruptible, short_temp_dir
from freight.testing import wait_for_condition as wait_until

FREIGHT = str(Path(sys.executable).with_name("freight"))
ROLES = ("freight.head", "freight.node", "freight.worker")


def cli_env(temp_dir: Path) -> dict[str, str]:
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), COLUMNS="250", NO_COLOR="1")
    env.pop("FREIGHT_TOKEN", None)
    env.pop("FREIGHT_ADDRESS", None)
    return env


def freight_cli(temp_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FREIGHT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(temp_dir),
        stdin=subprocess.DEVNULL,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Driver:
    """A driver script; it prints ``key value`` lines and reads commands from its stdin."""

    def __init__(self, temp_dir: Path, work: Path, script: str) -> None:
        self.out = work / f"driver-{uuid.uuid4().hex[:6]}.out"
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", script],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=dict(cli_env(temp_dir), PYTHONUNBUFFERED="1"),
            )

    def value(self, key: str, timeout: float = 60.0) -> str:
        """The value of the driver's ``key value`` output line, once printed."""

        def found() -> str | None:
            text = self.out.read_text()
            hit = re.search(rf"^{re.escape(key)} (\S+)$", text, re.M)
            if hit is None and self.proc.poll() is not None:
                pytest.fail(f"the driver exited ({self.proc.returncode}):\n{text[-4000:]}")
            return hit.group(1) if hit else None

        return str(wait_until(found, timeout, f"{key!r} from the driver"))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> int:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


DRIVER = """
import os, sys
import freight

freight.init(address="auto")
print("job", freight.get_runtime_context().get_job_id())

@freight.remote
def shout(marker):
    import sys
    import freight
    print(marker)
    print(marker + "-err", file=sys.stderr)
    return freight.get_runtime_context().get_task_id()

@freight.remote
def half(marker):
    import freight
    print(marker, end="")  # no newline: the task ends with the line open
    return freight.get_runtime_context().get_task_id()

@freight.remote(num_cpus=0)
class Speaker:
    def say(self, marker):
        import os
        import freight
        print(marker)
        ctx = freight.get_runtime_context()
        return ctx.get_actor_id(), ctx.get_worker_id(), os.getpid()

def say(key, value):
    sys.stdout.write(f"{key} {value}\\n")  # one write: worker output lines cannot split it

speakers = []
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "task":
        say("task", freight.get(shout.remote(arg)))
    elif cmd == "half":
        say("half", freight.get(half.remote(arg)))
    elif cmd == "actor":
        speakers.append(Speaker.remote())
        actor, worker, pid = freight.get(speakers[-1].say.remote(arg))
        say(f"actor-{arg}", actor)
        say(f"worker-{arg}", worker)
        say(f"pid-{arg}", pid)
print("bye")
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with short_temp_dir() as temp_dir:
        proc = freight_cli(temp_dir, "start", "--head", "--port", "0", "--num-cpus", "2")
        try:
            assert proc.returncode == 0, proc.stderr
            session = re.search(r"session dir:\s+(\S+)", proc.stdout)
            node = re.search(r"node:\s+([0-9a-f]+)", proc.stdout)
            assert session and node, proc.stdout
            yield {"temp_dir": temp_dir, "session_dir": session.group(1), "node": node.group(1)}
        finally:
            freight_cli(temp_dir, "stop")
            prefix = str(temp_dir) + os.sep
            for p in psutil.process_iter(["cmdline"]):
                cmd = p.info["cmdline"] or []
                if any(r in cmd for r in ROLES) and any(a.startswith(prefix) for a in cmd):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.kill()


@pytest.fixture(scope="module")
def driver(cluster: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    d = Driver(cluster["temp_dir"], tmp_path_factory.mktemp("driver"), DRIVER)
    d.value("job")
    yield d
    assert d.finish() == 0, d.out.read_text()[-4000:]


def logs(cluster: dict[str, Any], *args: str) -> list[dict[str, Any]]:
    proc = freight_cli(cluster["temp_dir"], "logs", "--tail", "0", "-o", "json", *args)
    assert proc.returncode == 0, proc.stderr
    return json_lines(proc.stdout)


def events(cluster: dict[str, Any], *args: str) -> list[dict[str, Any]]:
    proc = freight_cli(cluster["temp_dir"], "events", "--limit", "1000", "-o", "json", *args)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert listing["kind"] == "events" and listing["returned"] == len(listing["items"])
    return list(listing["items"])


def test_logs_by_task_show_what_the_task_printed_with_its_ids(
    cluster: dict[str, Any], driver: Driver
) -> None:
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    driver.send(f"task {marker}")
    task_id = driver.value("task")
    job_id = driver.value("job")

    lines = logs(cluster, "--task", task_id)
    out = next(r for r in lines if r["message"] == marker)
    assert out["task_id"] == task_id
    assert out["job_id"] == job_id
    assert out["node_id"] == cluster["node"]
    assert re.fullmatch(r"[0-9a-f]{16}", out["worker_id"]), out
    assert out["component"] == "worker"
    assert (out["level"], out["extra"]["stream"]) == ("INFO", "stdout")
    err = next(r for r in lines if r["message"] == marker + "-err")
    assert (err["level"], err["extra"]["stream"]) == ("ERROR", "stderr")
    assert all(r["task_id"] == task_id for r in lines)
    # A prefix is enough, the job filter finds it too, and the text form shows it.
    assert marker in [r["message"] for r in logs(cluster, "--task", task_id[:20])]
    assert marker in [r["message"] for r in logs(cluster, "--job", job_id, "--component", "worker")]
    proc = freight_cli(cluster["temp_dir"], "logs", "--task", task_id, "-o", "text")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.endswith(f"| {marker}"))
    assert f"task={task_id}" in line and f"job={job_id}" in line and " INFO " in line, line


def test_a_line_left_open_when_a_task_ends_is_that_tasks_line(
    cluster: dict[str, Any], driver: Driver
) -> None:
    """print(x, end="") as a task's last output is logged when the task ends, with its ids; not
    held until another task's newline and logged under that task's ids."""
    marker = f"open-line-{uuid.uuid4().hex[:8]}"
    driver.send(f"half {marker}")
    task_id = driver.value("half")
    lines = wait_until(
        lambda: [r for r in logs(cluster, "--task", task_id) if r["message"] == marker],
        30,
        "the open line in the task's log",
    )
    assert lines[0]["task_id"] == task_id


def test_logs_by_actor_show_the_method_output(cluster: dict[str, Any], driver: Driver) -> None:
    marker = f"actor-says-{uuid.uuid4().hex[:8]}"
    driver.send(f"actor {marker}")
    actor_id = driver.value(f"actor-{marker}")
    lines = logs(cluster, "--actor", actor_id)
    said = next(r for r in lines if r["message"] == marker)
    assert said["actor_id"] == actor_id
    assert said["worker_id"] == driver.value(f"worker-{marker}")
    assert said["task_id"]
    other = "0" * len(actor_id)
    assert marker not in [r["message"] for r in logs(cluster, "--actor", other)]


def test_follow_prints_new_lines_from_workers_started_after_it(
    cluster: dict[str, Any], driver: Driver, tmp_path: Path
) -> None:
    logs_dir = Path(cluster["session_dir"]) / "logs"
    before = {p.name for p in logs_dir.glob("worker-*.log")}
    job_id = driver.value("job")
    out_path = tmp_path / "follow.out"
    with open(out_path, "w") as out:
        follower = subprocess.Popen(
            interruptible(
                [FREIGHT, "logs", "--follow", "--tail", "0", "--job", job_id, "-o", "json"]
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env(cluster["temp_dir"]),
            stdin=subprocess.DEVNULL,
        )
    try:
        # Each actor gets a worker process of its own: the pool runs out of idle ones, so later
        # actors run in workers (and log files) that did not exist when --follow started.
        markers = [f"late-{i}-{uuid.uuid4().hex[:6]}" for i in range(len(before) + 2)]
        for marker in markers:
            driver.send(f"actor {marker}")
            driver.value(f"actor-{marker}")

        def followed() -> dict[str, dict[str, Any]] | None:
            if follower.poll() is not None:
                pytest.fail(f"freight logs --follow exited: {out_path.read_text()[-2000:]}")
            seen = {r["message"]: r for r in json_lines(out_path.read_text())}
            return seen if all(m in seen for m in markers) else None

        seen = wait_until(followed, 60, "every marker in the --follow output")
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=20) == 0
    files = {seen[m]["file"] for m in markers}
    assert files - before, f"no marker came from a new worker log file: {files} vs {before}"
    assert all(seen[m]["job_id"] == job_id for m in markers)


def test_a_killed_worker_is_a_worker_crashed_event(cluster: dict[str, Any], driver: Driver) -> None:
    marker = f"doomed-{uuid.uuid4().hex[:6]}"
    driver.send(f"actor {marker}")
    pid = int(driver.value(f"pid-{marker}"))
    worker_id = driver.value(f"worker-{marker}")
    actor_id = driver.value(f"actor-{marker}")
    os.kill(pid, signal.SIGKILL)

    def crashed() -> dict[str, Any] | None:
        rows = events(cluster, "--kind", "WORKER_CRASHED")
        return next((r for r in rows if r.get("pid") == str(pid)), None)

    event = wait_until(crashed, 30, f"a WORKER_CRASHED event for pid {pid}")
    assert event["severity"] == "WARNING"
    assert event["source"] == "agent"
    assert event["worker_id"] == worker_id
    assert event["actor_id"] == actor_id
    assert event["node_id"] == cluster["node"]
    assert event["signal"] == "SIGKILL"
    assert str(pid) in event["message"] and "SIGKILL" in event["message"]
    dead = wait_until(
        lambda: [r for r in events(cluster, "--kind", "ACTOR_DEAD") if r["actor_id"] == actor_id],
        30,
        "an ACTOR_DEAD event",
    )
    assert dead[0]["severity"] == "WARNING"


def test_node_and_job_events_have_severities(cluster: dict[str, Any], tmp_path: Path) -> None:
    short = Driver(
        cluster["temp_dir"],
        tmp_path,
        'import freight\nfreight.init(address="auto")\n'
        'print("job", freight.get_runtime_context().get_job_id())\nfreight.shutdown()\n',
    )
    job_id = short.value("job")
    assert short.finish() == 0
    rows = wait_until(
        lambda: (lambda rs: rs if any(r["kind"] == "JOB_FINISHED" for r in rs) else None)(
            [r for r in events(cluster) if r["job_id"] == job_id]
        ),
        30,
        "JOB_FINISHED",
    )
    assert [(r["kind"], r["severity"]) for r in rows] == [
        ("JOB_STARTED", "INFO"),
        ("JOB_FINISHED", "INFO"),
    ]
    joined = [
        r for r in events(cluster, "--kind", "node_joined") if r["node_id"] == cluster["node"]
    ]
    assert joined and joined[0]["severity"] == "INFO"
    assert not [r for r in events(cluster, "--severity", "warning") if r["severity"] == "INFO"]
    newest = events(cluster, "--limit", "1")  # the last --limit wins: one event, the newest
    assert len(newest) == 1 and newest[0]["time"] >= rows[-1]["time"]
    proc = freight_cli(cluster["temp_dir"], "events", "-o", "table")
    assert proc.returncode == 0, proc.stderr
    assert "JOB_FINISHED" in proc.stdout and "NODE_JOINED" in proc.stdout, proc.stdout


def test_the_head_counts_events_by_severity_and_kind(cluster: dict[str, Any]) -> None:
    head = json.loads((Path(cluster["session_dir"]) / "head.json").read_text())
    if not head.get("metrics_address"):
        pytest.fail("the head publishes no metrics_address in head.json")
    rows = events(cluster)
    expected: dict[tuple[str, str], int] = {}
    for r in rows:
        expected[(r["severity"], r["kind"])] = expected.get((r["severity"], r["kind"]), 0) + 1
    with urllib.request.urlopen(f"http://{head['metrics_address']}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    counted: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "freight_events_total":
                counted[(sample.labels["severity"], sample.labels["kind"])] = sample.value
    # Events may arrive between the two reads; none was evicted, so counts are at least these.
    for key, n in expected.items():
        assert counted.get(key, 0) >= n, (key, counted)
    assert counted[("INFO", "NODE_JOINED")] >= 1


def test_events_are_read_through_the_state_module(cluster: dict[str, Any]) -> None:
    """`freight events` calls the state service as every client does (freight.state: its
    connections, its paging), with the rows, counts and severity filter of the command."""
    from freight import state
    from freight.cli.events_cmd import fetch_events, severity_filter
    from freight.client import access
    from freight.testing import patched_environ

    with patched_environ(FREIGHT_TEMP_DIR=str(cluster["temp_dir"]), FREIGHT_ADDRESS=None):
        target = access.resolve(None)
    state.close()
    page = fetch_events(target, [("kind", "=", "NODE_JOINED")], 1)
    assert (target.address, target.token) in state._clients  # the state module's channel
    assert [r["node_id"] for r in page.rows] == [cluster["node"]] and page.matched == 1
    assert not page.warnings  # the command says "showing N of M" itself
    warnings = fetch_events(target, [severity_filter("WARNING")], 1000).rows
    assert all(r["severity"] in ("WARNING", "ERROR") for r in warnings)
    state.close()


# -- bad input ------------------------------------------------------------------------------------


def test_bad_events_options_are_refused_clearly(cluster: dict[str, Any]) -> None:
    proc = freight_cli(cluster["temp_dir"], "events", "--severity", "loud")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr and "WARNING" in proc.stderr, proc.stderr
    proc = freight_cli(cluster["temp_dir"], "events", "--limit", "0")
    assert proc.returncode == 2
    assert "--limit must be at least 1" in proc.stderr, proc.stderr


def test_bad_logs_options_are_refused_clearly(cluster: dict[str, Any]) -> None:
    proc = freight_cli(cluster["temp_dir"], "logs", "--task", "not-an-id!")
    assert proc.returncode == 2
    assert "--task expects a hex id" in proc.stderr, proc.stderr
    proc = freight_cli(cluster["temp_dir"], "logs", "--component", "driver")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr, proc.stderr


def test_without_a_cluster_both_commands_say_so() -> None:
    with short_temp_dir() as empty:
        for command in ("events", "logs"):
            proc = freight_cli(empty, command)
            assert proc.returncode == 3, proc.stderr  # no cluster
            assert "no running freight cluster found" in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr
