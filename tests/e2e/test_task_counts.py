"""Exact task counts with the default sampling of task records, honest loss figures, and no
pending demand left behind by jobs that ended, against a real cluster.

One cluster for the module (default FREIGHT_TASK_ROWS_SAMPLE); drivers are scripts run as their
own jobs, so each job really ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from freight import state
from freight.testing import Cluster, patched_environ, short_temp_dir, wait_for_condition

FREIGHT = str(Path(sys.executable).with_name("freight"))
N_TASKS, N_FAILING = 500, 100

N_QUEUED = 300  # more than one report's sample of task records (100 by default)

WORKLOAD = textwrap.dedent(
    f"""\
    import sys

    import freight


    @freight.remote(max_retries=0)
    def unit(i):
        if i % {N_TASKS // N_FAILING} == 0:
            raise ValueError(i)
        return i


    freight.init(address=sys.argv[1])
    failed = 0
    for ref in [unit.remote(i) for i in range({N_TASKS})]:
        try:
            freight.get(ref)
        except freight.exceptions.RayTaskError:
            failed += 1
    assert failed == {N_FAILING}, failed
    print("JOB", freight.get_runtime_context().get_job_id())
    """
)

# Submits tasks no node can run, waits until the head has their records, then exits: its job
# ends with the tasks still pending.
INFEASIBLE = textwrap.dedent(
    """\
    import sys
    import time

    import freight
    from freight import state


    @freight.remote(num_cpus=64)
    def never():
        return 1


    freight.init(address=sys.argv[1])
    job = freight.get_runtime_context().get_job_id()
    refs = [never.remote() for _ in range(3)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = state.list_tasks([("job_id", "=", job), ("state", "~", "^PENDING")])
        if len(rows) == 3:
            break
        time.sleep(0.1)  # polling the head, bounded by the deadline
    else:
        raise SystemExit("the pending tasks never reached the head")
    print("JOB", job)
    """
)


# Submits more tasks than one report's sample, none of which can run, and keeps them queued
# until its stdin closes.
QUEUED = textwrap.dedent(
    f"""\
    import sys

    import freight


    @freight.remote(num_cpus=64)
    def queued():
        return 1


    freight.init(address=sys.argv[1])
    refs = [queued.remote() for _ in range({N_QUEUED})]
    print("JOB", freight.get_runtime_context().get_job_id(), flush=True)
    sys.stdin.read()
    """
)


def run_driver(tmp: Path, address: str, name: str, script: str) -> str:
    """Run a driver script to its end; return its job id."""
    path = tmp / f"{name}.py"
    path.write_text(script)
    run = subprocess.run(
        [sys.executable, str(path), address],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    (job,) = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("JOB ")]
    return job


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with (
        short_temp_dir() as tmp,
        patched_environ(
            FREIGHT_TEMP_DIR=str(tmp),
            FREIGHT_TOKEN=None,
            FREIGHT_ADDRESS=None,
            FREIGHT_TASK_ROWS_SAMPLE=None,  # the default sampling
        ),
        Cluster() as c,
    ):
        c.add_node(num_cpus=2)
        head = json.loads((Path(c.session_dir) / "head.json").read_text())
        try:
            yield {
                "tmp": tmp,
                "address": c.address,
                "metrics": f"http://{head['metrics_address']}/metrics",
            }
        finally:
            state.close()


@pytest.fixture(scope="module")
def workload(cluster: dict[str, Any]) -> str:
    """The job id of a finished run of N_TASKS tasks, N_FAILING of which raised."""
    return run_driver(cluster["tmp"], cluster["address"], "workload", WORKLOAD)


def summary_of(cluster: dict[str, Any], job: str) -> Any:
    return state.summarize_tasks([("job_id", "=", job)], address=cluster["address"])


def test_summaries_count_every_task_although_records_are_sampled(
    cluster: dict[str, Any], workload: str
) -> None:
    s = wait_for_condition(
        lambda: (got := summary_of(cluster, workload))["total"] == N_TASKS and got,
        30,
        f"the summary of job {workload} to count its {N_TASKS} tasks",
    )
    assert s["by_state"] == {"FINISHED": N_TASKS - N_FAILING, "FAILED": N_FAILING}
    assert s["by_name"]["unit"]["states"] == s["by_state"]
    assert s["by_name"]["unit"]["error_types"] == {"ValueError": N_FAILING}
    assert s["by_job"][workload] == s["by_state"]
    # The records are a sample (every failure among them), and the answer says so.
    assert N_FAILING <= s["recorded"] < N_TASKS
    assert s["counted_without_record"] == N_TASKS - s["recorded"]
    assert any("counted without a record" in w for w in s.warnings), s.warnings
    listed = state.list_tasks([("job_id", "=", workload)], address=cluster["address"])
    assert listed.matched == s["recorded"]
    assert any("task records are a sample" in w for w in listed.warnings), listed.warnings
    # A filter the counts cannot answer (a time) covers the records only, and says so.
    timed = state.summarize_tasks(
        [("job_id", "=", workload), ("end_time", ">", "0")], address=cluster["address"]
    )
    assert timed["total"] == s["recorded"]
    assert any("cover only the tasks with a record" in w for w in timed.warnings)


def dropped_task_events(cluster: dict[str, Any]) -> float:
    with urllib.request.urlopen(cluster["metrics"], timeout=10) as r:
        text = r.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "freight_telemetry_dropped_total"
        and sample.labels.get("kind") == "task_events"
    )


def test_sampling_is_not_counted_as_loss(cluster: dict[str, Any], workload: str) -> None:
    s = wait_for_condition(
        lambda: (got := summary_of(cluster, workload))["total"] == N_TASKS and got,
        30,
        "every task counted",
    )
    assert s["dropped_events"] == 0
    assert not [w for w in s.warnings if "lost" in w], s.warnings
    assert dropped_task_events(cluster) == 0


def test_a_finished_job_leaves_no_pending_demand(cluster: dict[str, Any]) -> None:
    job = run_driver(cluster["tmp"], cluster["address"], "infeasible", INFEASIBLE)

    def pending() -> dict[str, int]:
        return dict(summary_of(cluster, job)["pending_by_reason"])

    wait_for_condition(lambda: not pending(), 30, f"job {job}'s pending tasks to be closed")
    rows = state.list_tasks([("job_id", "=", job)], address=cluster["address"])
    assert [(r["state"], r["error_type"]) for r in rows] == [("FAILED", "JobEnded")] * 3
    assert f"job {job} ended" in rows[0]["error"]
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    status = subprocess.run(
        [FREIGHT, "status", "--address", cluster["address"]],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "pending tasks" not in status.stdout, status.stdout


def test_queued_tasks_are_counted_exactly_while_their_driver_runs(cluster: dict[str, Any]) -> None:
    path = cluster["tmp"] / "queued.py"
    path.write_text(QUEUED)
    with subprocess.Popen(
        [sys.executable, str(path), cluster["address"]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as driver:  # fmt: skip
        try:
            assert driver.stdout is not None
            job = driver.stdout.readline().split()[1]
            s = wait_for_condition(
                lambda: (
                    (got := summary_of(cluster, job))["pending_by_reason"]
                    == {"infeasible": N_QUEUED}
                    and got
                ),
                30,
                f"the {N_QUEUED} queued tasks of job {job} in its summary",
            )
            assert s["total"] == N_QUEUED and s["recorded"] < N_QUEUED  # a sample, counted all
        finally:
            assert driver.stdin is not None
            driver.stdin.close()
        assert driver.wait(timeout=60) == 0
    # The driver has gone with its queued tasks: they failed with their job, every one counted.
    ended = wait_for_condition(
        lambda: (got := summary_of(cluster, job))["by_state"] == {"FAILED": N_QUEUED} and got,
        30,
        f"job {job}'s queued tasks counted as failed",
    )
    assert ended["pending_by_reason"] == {}
    assert ended["by_name"]["queued"]["error_types"] == {"JobEnded": N_QUEUED}
