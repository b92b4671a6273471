"""A burst of actors on a small node: worker processes start a bounded number at a time, the
rest wait in line where the state API shows them, the node answers its (quick) health checks
throughout, and every actor comes up."""

from __future__ import annotations

import os
import signal
import urllib.request
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

import freight
from freight import state
from freight.core.task_state import WAITING_FOR_WORKER
from freight.testing import connected_cluster, wait_for_condition
from freight.worker.zygote import ZYGOTE_MODULE

BOUND = 2
ACTORS = 200
ENV = {
    "FREIGHT_MAXIMUM_STARTUP_CONCURRENCY": str(BOUND),
    "FREIGHT_HEALTH_CHECK_PERIOD_S": "0.5",
    "FREIGHT_HEALTH_CHECK_TIMEOUT_S": "1",
    "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "3",
}


@freight.remote(num_cpus=0)
class Member:
    def pid(self) -> int:
        return os.getpid()


def node_row(node_id: str) -> dict[str, Any]:
    rows = state.list_nodes(filters=[("node_id", "=", node_id)])
    assert len(rows) == 1, rows
    return rows[0]


def gauge(node: dict[str, Any], name: str) -> float:
    with urllib.request.urlopen(f"http://{node['metrics_address']}/metrics", timeout=30) as r:
        text = r.read().decode()
    return next(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def fork_server_of(agent_pid: int) -> psutil.Process:
    children = psutil.Process(agent_pid).children()
    return next(p for p in children if ZYGOTE_MODULE in " ".join(p.cmdline()))


def test_a_burst_of_actors_starts_within_the_bound_and_the_node_stays_alive() -> None:
    with connected_cluster({"num_cpus": 2}, env=ENV) as cluster:
        node_id = cluster.head_node.node_id
        # Hold every new worker at its start (the fork server is stopped), so the line of
        # actors waiting for one is there to see for as long as the test looks.
        forks = fork_server_of(cluster.head_node.process.pid)
        forks.send_signal(signal.SIGSTOP)
        try:
            members = [Member.remote() for _ in range(ACTORS)]
            waiting = wait_for_condition(
                lambda: (
                    node_row(node_id)["pending_by_reason"].get(WAITING_FOR_WORKER, 0)
                    >= ACTORS - 2 * BOUND
                ),  # the prestarted workers took the first ones
                60,
                "the node to report the actors waiting for a worker to start",
            )
            assert waiting
            pending = state.list_actors(filters=[("state", "=", "PENDING_CREATION")], limit=1000)
            assert {a["pending_reason"] for a in pending} == {WAITING_FOR_WORKER}
            node = node_row(node_id)
            assert gauge(node, "freight_workers_starting_max") == BOUND
        finally:
            forks.send_signal(signal.SIGCONT)
        pids = freight.get([m.pid.remote() for m in members], timeout=600)
        assert len(set(pids)) == ACTORS  # every actor up, each in a process of its own
        node = node_row(node_id)
        assert node["state"] == "ALIVE"
        assert gauge(node, "freight_workers_starting_max") == BOUND
        deaths = state.list_events(filters=[("kind", "=", "NODE_DEAD")])
        assert not [e for e in deaths if node_id in str(e)], deaths
