"""`freight job`: drivers the head starts, follows, stops and records, against real processes.

One cluster for the module, started with `freight start --head` (with a one-second stop grace);
the restart test runs heads of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from freight.core.jobs import job_summary
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.testing import short_temp_dir, wait_for_condition
from freight.util.grpc_auth import create_token, read_token, sync_channel

FREIGHT = str(Path(sys.executable).with_name("freight"))
PYTHON = sys.executable
STOP_GRACE_S = "1"


def cli_env(temp_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), COLUMNS="250", NO_COLOR="1")
    env.pop("FREIGHT_TOKEN", None)
    env.pop("FREIGHT_ADDRESS", None)
    env.update(extra or {})
    return env


def freight(
    temp_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FREIGHT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(temp_dir, env),
        stdin=subprocess.DEVNULL,
    )


def gone(pid: int) -> bool:
    """The process has exited (a zombie whose parent is not freight counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def zombie_children(pid: int) -> list[int]:
    return [
        c.pid
        for c in psutil.Process(pid).children()
        if c.status() == psutil.STATUS_ZOMBIE  # an exited driver the head did not reap
    ]


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with short_temp_dir() as temp_dir:
        proc = freight(
            temp_dir,
            *("start", "--head", "--port", "0", "--num-cpus", "2"),
            env={"FREIGHT_JOB_STOP_GRACE_S": STOP_GRACE_S},
        )
        try:
            assert proc.returncode == 0, proc.stderr
            address = re.search(r"address:\s+(\S+)", proc.stdout)
            session = re.search(r"session dir:\s+(\S+)", proc.stdout)
            assert address and session, proc.stdout
            session_dir = Path(session[1])
            work = temp_dir / "work"
            work.mkdir()
            yield {
                "temp_dir": temp_dir,
                "address": address[1],
                "session_dir": session_dir,
                "head_pid": json.loads((session_dir / "head.json").read_text())["pid"],
                "work": work,
            }
        finally:
            freight(temp_dir, "stop")
            prefix = str(temp_dir)
            for leftover in psutil.process_iter(["cmdline"]):
                if any(prefix in a for a in leftover.info["cmdline"] or ()):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        leftover.kill()


def job(cluster: dict[str, Any], *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return freight(cluster["temp_dir"], "job", *args, **kwargs)


def script(cluster: dict[str, Any], name: str, text: str) -> str:
    path = cluster["work"] / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def submitted_id(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.stdout, proc.stderr
    return proc.stdout.splitlines()[0].strip()


def status(cluster: dict[str, Any], job_id: str) -> dict[str, Any]:
    proc = job(cluster, "status", job_id, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def listed(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """Every job the head holds, as `freight job list -o json` lists them, asked from this
    process (the same call and rows, without starting a command each time)."""
    channel = sync_channel(cluster["address"], read_token(cluster["session_dir"]))
    try:
        reply = pb_grpc.HeadServiceStub(channel).ListJobs(pb.ListJobsRequest(), timeout=30)
    finally:
        channel.close()
    return [job_summary(j) for j in reply.jobs]


def log_text(job_status: dict[str, Any]) -> str:
    try:
        return Path(job_status["log_path"]).read_text()
    except FileNotFoundError:
        return ""


# -- a job's life ---------------------------------------------------------------------------------


def test_a_submitted_script_runs_tasks_and_succeeds(cluster: dict[str, Any]) -> None:
    script(
        cluster,
        "tasks.py",
        """
        import sys
        import freight

        freight.init()

        @freight.remote
        def square(x):
            return x * x

        print("result", sum(freight.get([square.remote(i) for i in range(10)])), sys.argv[1:])
        print("job", freight.get_runtime_context().get_job_id())
        """,
    )
    jobs_before = len(listed(cluster))
    before = time.time()
    proc = job(
        cluster,
        *("submit", "--label", "team=ml", "--label", "owner=alice"),
        *("--working-dir", str(cluster["work"]), "--", PYTHON, "tasks.py", "a", "b"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = submitted_id(proc)
    assert "result 285 ['a', 'b']" in proc.stdout
    assert f"job {job_id}\n" in proc.stdout  # the driver joined under the submission's id
    assert "SUCCEEDED" in proc.stderr

    got = status(cluster, job_id)
    assert (got["state"], got["kind"], got["exit_code"]) == ("SUCCEEDED", "SUBMISSION", 0)
    assert got["labels"] == {"team": "ml", "owner": "alice"}
    assert got["entrypoint"] == shlex.join([PYTHON, "tasks.py", "a", "b"])
    assert before <= got["start_time"] <= got["end_time"] <= time.time()
    assert got["log_path"] == str(cluster["session_dir"] / "logs" / f"job-{job_id}.log")
    assert "result 285" in log_text(got)

    jobs = listed(cluster)
    assert len(jobs) == jobs_before + 1  # one record: the driver's registration was merged
    assert [j["job_id"] for j in jobs].count(job_id) == 1
    logs = job(cluster, "logs", job_id)
    assert logs.returncode == 0, logs.stderr
    assert "result 285" in logs.stdout
    assert gone(got["driver_pid"])
    assert zombie_children(cluster["head_pid"]) == []


def test_a_failing_script_is_failed_with_its_exit_code(cluster: dict[str, Any]) -> None:
    code = "import sys; print('giving up', flush=True); sys.exit(3)"
    proc = job(cluster, "submit", "--", PYTHON, "-c", code)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    job_id = submitted_id(proc)
    assert "giving up" in proc.stdout
    got = status(cluster, job_id)
    assert (got["state"], got["exit_code"]) == ("FAILED", 3)
    assert "code 3" in got["message"]
    assert job_id in {j["job_id"] for j in listed(cluster) if j["state"] == "FAILED"}
    table = job(cluster, "list", "-o", "table")
    assert table.returncode == 0 and job_id in table.stdout, table.stderr


def test_stop_ends_a_long_running_job_and_its_process_group(cluster: dict[str, Any]) -> None:
    # The driver ignores SIGTERM (so the stop escalates to SIGKILL) and has a child of its own.
    script(
        cluster,
        "stubborn.py",
        """
        import os, signal, subprocess, sys

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
        print("pids", os.getpid(), child.pid, flush=True)
        signal.pause()
        """,
    )
    proc = job(
        cluster, "submit", "--no-wait", "--working-dir", str(cluster["work"]), "--", PYTHON,
        "stubborn.py",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job_id = submitted_id(proc)
    running = status(cluster, job_id)
    assert running["state"] == "RUNNING" and running["end_time"] is None
    found = wait_for_condition(
        lambda: re.search(r"pids (\d+) (\d+)", log_text(running)), 30, "the driver's pids"
    )
    pids = [int(found[1]), int(found[2])]
    assert pids[0] == running["driver_pid"]

    stopped = job(cluster, "stop", job_id)
    assert stopped.returncode == 0, stopped.stderr
    got = status(cluster, job_id)
    assert got["state"] == "STOPPED", got
    assert "freight job stop" in got["message"] and "SIGKILL" in got["message"]
    assert got["end_time"] >= got["start_time"]
    wait_for_condition(lambda: all(map(gone, pids)), 10, "the driver and its child to exit")
    assert zombie_children(cluster["head_pid"]) == []
    again = job(cluster, "stop", job_id)
    assert again.returncode == 0 and "already ended" in again.stdout, again.stderr


def test_logs_follow_streams_until_the_job_ends(cluster: dict[str, Any]) -> None:
    go = cluster["work"] / "go"
    script(
        cluster,
        "waits.py",
        """
        import os, sys, time

        print("first line", flush=True)
        while not os.path.exists(sys.argv[1]):  # the test says when to go on
            time.sleep(0.02)
        print("last line", flush=True)
        """,
    )
    proc = job(
        cluster, "submit", "--no-wait", "--working-dir", str(cluster["work"]), "--", PYTHON,
        "waits.py", str(go),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job_id = submitted_id(proc)
    out_path = cluster["work"] / "follow.out"
    with open(out_path, "w") as out:
        follower = subprocess.Popen(
            [FREIGHT, "job", "logs", job_id, "--follow"],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(cluster["temp_dir"]),
        )
    try:
        wait_for_condition(lambda: "first line" in out_path.read_text(), 30, "the first line")
        assert follower.poll() is None  # still following: the job has not ended
        go.touch()
        assert follower.wait(timeout=30) == 0, follower.stderr.read() if follower.stderr else ""
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        if follower.stderr:
            follower.stderr.close()
    assert out_path.read_text() == "first line\nlast line\n"
    assert status(cluster, job_id)["state"] == "SUCCEEDED"


def test_a_chosen_submission_id_is_used_once(cluster: dict[str, Any]) -> None:
    proc = job(cluster, "submit", "--submission-id", "nightly-7", "--", PYTHON, "-c", "pass")
    assert proc.returncode == 0, proc.stderr
    assert submitted_id(proc) == "nightly-7"
    again = job(cluster, "submit", "--submission-id", "nightly-7", "--", PYTHON, "-c", "pass")
    assert again.returncode == 2
    assert "already exists" in again.stderr


# -- security and bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("token", ["wrong", "missing"])
def test_a_submission_without_the_right_token_runs_nothing(
    cluster: dict[str, Any], token: str
) -> None:
    marker = cluster["work"] / f"marker-{token}"
    logs_dir = cluster["session_dir"] / "logs"
    logs_before = set(os.listdir(logs_dir))
    jobs_before = listed(cluster)
    # Missing: no FREIGHT_TOKEN, and a temp dir without the cluster's session (and its token).
    env = {"FREIGHT_TOKEN": "0" * 64} if token == "wrong" else {"FREIGHT_TEMP_DIR": "/"}
    proc = job(
        cluster, "submit", "--address", cluster["address"], "--", PYTHON, "-c",
        f"open({str(marker)!r}, 'w').close()", env=env,
    )  # fmt: skip
    assert proc.returncode == 4, proc.stdout + proc.stderr  # access denied
    assert "token is wrong or missing" in proc.stderr
    assert proc.stdout == ""
    assert listed(cluster) == jobs_before  # no record, so no process was started
    assert set(os.listdir(logs_dir)) == logs_before
    assert not marker.exists()


@pytest.mark.parametrize("args", [("list",), ("logs", "00000001", "--follow")])
def test_reading_jobs_needs_the_token_too(cluster: dict[str, Any], args: tuple[str, ...]) -> None:
    proc = job(cluster, *args, "--address", cluster["address"], env={"FREIGHT_TOKEN": "0" * 64})
    assert proc.returncode == 4
    assert "token is wrong or missing" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (("status", "ffffffff"), 1, "no job 'ffffffff'"),
        (("logs", "ffffffff"), 1, "no job 'ffffffff'"),
        (("stop", "ffffffff"), 1, "no job 'ffffffff'"),
        (("submit", "--"), 2, "give the command to run"),
        (("submit", "--label", "team", "--", PYTHON), 2, "is not KEY=VALUE"),
        (("submit", "--label", "a=b,c", "--", PYTHON), 2, "no comma"),
        (("submit", "--env", "FREIGHT_JOB_ID=x", "--", PYTHON), 2, "cannot be overridden"),
        (("submit", "--submission-id", "../up", "--", PYTHON), 2, "is not valid"),
        # Matched whole: a trailing newline is not let through as `$` would.
        (("submit", "--submission-id", "nightly-8\n", "--", PYTHON), 2, "is not valid"),
        (("submit", "--label", "team\n=ml", "--", PYTHON), 2, "is not valid"),
        (("submit", "--env", "MY_VAR\n=1", "--", PYTHON), 2, "is not valid"),
        (("submit", "--", "no-such-command-here"), 2, "was not found"),
        (("submit", "--working-dir", "/no/such/dir", "--", PYTHON), 2, "not a directory"),
        (("submit", "--address", "127.0.0.1:1", "--", PYTHON), 3, "did not answer"),
        (("status", "x", "--address", "nonsense"), 2, "HOST:PORT"),
    ],
    ids=[
        "unknown-status",
        "unknown-logs",
        "unknown-stop",
        "no-entrypoint",
        "label-syntax",
        "label-value",
        "reserved-env",
        "bad-id",
        "id-ending-in-newline",
        "label-key-ending-in-newline",
        "env-name-ending-in-newline",
        "no-command",
        "no-working-dir",
        "unreachable",
        "bad-address",
    ],
)
def test_bad_input_gets_a_clear_message(
    cluster: dict[str, Any], args: tuple[str, ...], exit_code: int, message: str
) -> None:
    jobs_before = listed(cluster)
    proc = job(cluster, *args)
    assert proc.returncode == exit_code, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert listed(cluster) == jobs_before  # nothing was recorded, and the head still serves


def test_a_driver_with_a_bad_job_id_is_refused_with_a_clear_error(
    cluster: dict[str, Any],
) -> None:
    code = "import freight\ntry:\n    freight.init(address='auto')\nexcept ValueError as e:\n    print(e)"
    proc = subprocess.run(
        [PYTHON, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(cluster["temp_dir"], {"FREIGHT_JOB_ID": "nightly-9\n"}),
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert "FREIGHT_JOB_ID 'nightly-9\\n' is not valid" in proc.stdout
    assert all(j["job_id"].strip() != "nightly-9" for j in listed(cluster))


# -- the head's life ------------------------------------------------------------------------------


class BareHead:
    """A head process of its own (no node agent: the drivers here do not join the cluster)."""

    def __init__(self, session_dir: Path) -> None:
        env = dict(os.environ, FREIGHT_JOB_STOP_GRACE_S=STOP_GRACE_S)
        env.pop("FREIGHT_TOKEN", None)
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "freight.head", "--session-dir", str(session_dir)],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        info_path = session_dir / "head.json"

        def ready() -> dict[str, Any] | None:
            assert self.proc.poll() is None, f"the head exited with {self.proc.returncode}"
            with contextlib.suppress(OSError, ValueError):
                info: dict[str, Any] = json.loads(info_path.read_text())
                return info if info["pid"] == self.proc.pid else None
            return None

        info = wait_for_condition(ready, 30, "the head to serve")
        self.channel = sync_channel(info["address"], read_token(session_dir))
        self.stub = pb_grpc.HeadServiceStub(self.channel)

    def submit_waiting_job(self) -> pb.JobInfo:
        code = "print('up', flush=True); import signal; signal.pause()"
        job = self.stub.SubmitJob(pb.SubmitJobRequest(entrypoint=[PYTHON, "-c", code])).job
        wait_for_condition(lambda: Path(job.log_path).read_text() == "up\n", 30, "'up'")
        return job

    def get(self, job_id: str) -> pb.JobInfo:
        reply = self.stub.GetJob(pb.GetJobRequest(job_id=job_id))
        assert reply.found, job_id
        return reply.job

    def end(self, sig: int) -> int:
        self.channel.close()
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


def test_drivers_outlive_a_head_crash_and_the_next_head_takes_them_over() -> None:
    with short_temp_dir() as temp_dir:
        session_dir = temp_dir / "session"
        session_dir.mkdir()
        create_token(session_dir)
        heads: list[BareHead] = []
        try:
            first = BareHead(session_dir)
            heads.append(first)
            stopped = first.submit_waiting_job()
            assert first.end(signal.SIGTERM) == 0  # a graceful stop stops its drivers
            assert gone(stopped.driver_pid)

            second = BareHead(session_dir)
            heads.append(second)
            got = second.get(stopped.job_id)
            assert (got.state, got.message) == ("STOPPED", "stopped: the head shut down")
            waiting = second.submit_waiting_job()
            # A driver that ends on its own while no head is up, with code 4.
            code = (
                "import signal, sys\n"
                "signal.signal(signal.SIGUSR1, lambda *_: sys.exit(4))\n"
                "print('up', flush=True)\n"
                "signal.pause()"
            )
            reply = second.stub.SubmitJob(pb.SubmitJobRequest(entrypoint=[PYTHON, "-c", code]))
            ending = reply.job
            wait_for_condition(lambda: Path(ending.log_path).read_text() == "up\n", 30, "'up'")
            assert ending.driver_pid != ending.supervisor_pid  # the driver runs under it
            assert second.end(signal.SIGKILL) == -signal.SIGKILL
            os.kill(ending.driver_pid, signal.SIGUSR1)
            wait_for_condition(lambda: gone(ending.driver_pid), 30, "the driver to end")
            assert not gone(waiting.driver_pid)  # the head crashed: the driver runs on

            third = BareHead(session_dir)
            heads.append(third)
            got = third.get(ending.job_id)  # it ended while no head was up: told how
            assert (got.state, got.exit_code) == ("FAILED", 4), got
            assert "code 4" in got.message and "after a restart" in got.message
            got = third.get(waiting.job_id)  # still running: watched again, and stoppable
            assert got.state == "RUNNING", got
            assert third.stub.StopJob(pb.StopJobRequest(job_id=waiting.job_id)).stopped
            got = third.get(waiting.job_id)
            assert got.state == "STOPPED" and got.end_time >= got.start_time
            assert gone(waiting.driver_pid) and gone(waiting.supervisor_pid)
            ids = [j.job_id for j in third.stub.ListJobs(pb.ListJobsRequest()).jobs]
            assert ids == [stopped.job_id, waiting.job_id, ending.job_id]
        finally:
            for head in heads:
                if head.proc.poll() is None:
                    head.end(signal.SIGTERM)
