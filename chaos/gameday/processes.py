"""What a game day adds to the toolkit about processes: killing a driver (a program connected
to the cluster, named by its job through the state API), and the probes that tell whether the
cluster has dealt with the processes that ended (what dead drivers held, nodes gone unnoticed).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psutil

from freight import state
from freight.client import access
from freight.util.process import identity

from .. import targets
from ..targets import FaultRefused, ProcessTarget

# A driver registers its job just after it starts: its process started before its job did.
# (Slack for clocks read a moment apart by two processes.)
DRIVER_START_SLACK_S = 1.0


def driver(cluster: access.Target, job_id: str = "") -> ProcessTarget:
    """The process of a running driver on this machine: of job ``job_id`` (a prefix will do),
    else the first running driver the head lists that is not this process (the harness may be
    a driver too: its canary probe connects). Proven by its start time: before its job's."""
    rows = state.list_state(
        "jobs", [("state", "=", "RUNNING"), ("kind", "=", "DRIVER")], limit=1000, address=cluster
    )
    mine = os.getpid()
    for row in rows:
        if not str(row["job_id"]).startswith(job_id) or int(row.get("driver_pid") or 0) == mine:
            continue
        pid = int(row.get("driver_pid") or 0)
        try:
            created = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            continue  # it ended a moment ago: the head will mark its job over
        if created > float(row.get("start_time") or 0.0) + DRIVER_START_SLACK_S:
            continue  # that pid now names a later process, not the job's driver
        process = {"pid": pid, "create_time": created, "cmdline": identity(pid).get("cmdline")}
        return ProcessTarget("driver", str(row["job_id"]), "", process)
    what = f"job {job_id}" if job_id else "any job"
    raise FaultRefused(
        f"no running driver of {what} runs on this machine (besides this harness); "
        "`freight list jobs --filter state=RUNNING` shows them"
    )


def held_by_ended_drivers(cluster: access.Target) -> int:
    """Actors (not detached) still alive, and workers still leased, for drivers that are gone:
    their job is over, or its driver's process on this machine has ended (before the cluster
    noticed). What a dead driver leaks when the cluster does not free its work."""
    jobs = state.list_state("jobs", [("kind", "=", "DRIVER")], limit=10_000, address=cluster)
    gone = {
        str(j["job_id"]): str(j.get("driver_address") or "")
        for j in jobs
        if j.get("state") != "RUNNING" or not _driver_runs(j)
    }
    actors = state.list_state("actors", [("state", "!=", "DEAD")], limit=10_000, address=cluster)
    leaked = sum(1 for a in actors if str(a["job_id"]) in gone and not a.get("detached"))
    holders = {address for address in gone.values() if address}
    workers = state.list_state("workers", [("state", "=", "LEASED")], limit=10_000, address=cluster)
    return leaked + sum(1 for w in workers if str(w.get("lease_holder") or "") in holders)


def _driver_runs(job: dict[str, Any]) -> bool:
    """Whether the driver of a RUNNING job still runs, as far as this machine can tell (a
    driver elsewhere is taken to run)."""
    pid = int(job.get("driver_pid") or 0)
    if pid <= 0:
        return True
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= float(job.get("start_time") or 0.0) + DRIVER_START_SLACK_S
    except psutil.NoSuchProcess:
        return False


def nodes_gone_unnoticed(cluster: access.Target) -> int:
    """Nodes of this machine the head still lists ALIVE whose agent process is gone (no node
    file proves a live agent): a node lost and not yet declared dead by the head's health
    checks."""
    gone = 0
    for node in targets.alive_nodes(cluster):
        if node.get("hostname") and node["hostname"] != socket.gethostname():
            continue  # another machine's: this one cannot tell
        try:
            targets.node_agent(cluster, str(node["node_id"]))
        except FaultRefused:
            gone += 1
    return gone
