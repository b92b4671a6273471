"""The head health-checks node agents: real head and agent processes, stopped and continued.

The head runs with small health-check settings (period 0.2 s, timeout 0.3 s, threshold 3), so a
stopped agent is found dead within ``period + threshold * max(period, timeout)`` seconds (1.1 s)
plus slack, long before the heartbeat rule (30 s at least) could decide. The policy and the
counting behind it are checked without processes first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from freight import _launcher
from freight.head.nodes import CheckFailure, HealthCheckPolicy, HealthTally, ObservedClock
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.testing import short_temp_dir, wait_for_condition
from freight.util.grpc_auth import read_token, sync_channel

POLICY = HealthCheckPolicy(period_s=0.2, timeout_s=0.3, failure_threshold=3)
# Process scheduling on a loaded machine, the polling below: generous, and still far below the
# heartbeat rule's 30 s, so a death within the bound is the health checks' doing.
SLACK_S = 5.0
DEAD_WITHIN_S = POLICY.detection_bound_s + SLACK_S
START_S = 30.0  # a process start, a re-registration
HEALTHY_CHECKS = 15  # answered checks a healthy node must survive: several periods
# Attached processes are started with a preexec_fn, that is a fork that runs Python before the
# exec; with this process's gRPC channel active, gRPC's fork handlers sometimes abort that child
# ("epoll_wait error: Bad file descriptor"). Detached ones are started without it; the fixtures
# stop them.
ATTACHED = False


# ---- the policy and the count, without I/O ------------------------------------------------------


def test_a_node_is_dead_after_threshold_failures_in_a_row_and_an_answer_resets_the_count():
    tally = HealthTally(failure_threshold=3)
    timeout = CheckFailure("deadline_exceeded", "deadline exceeded")
    assert tally.failed("n1", timeout) is None
    assert tally.failed("n1", timeout) is None
    tally.passed("n1")
    assert tally.in_a_row("n1") == 0
    assert tally.failed("n1", timeout) is None
    assert tally.failed("n2", timeout) is None  # counts are per node
    assert tally.failed("n1", timeout) is None
    verdict = tally.failed("n1", timeout)
    assert verdict == "failed 3 health checks in a row: deadline exceeded"
    tally.reset("n1")  # it registered again
    assert tally.in_a_row("n1") == 0
    stats = tally.statistics()
    assert stats["checks"] == 7
    assert stats["failed"] == {"n1": 5, "n2": 1}
    assert stats["failing_in_a_row"] == {"n2": 1}


def test_the_observed_clock_does_not_count_the_heads_own_stalls():
    real = [100.0]
    clock = ObservedClock(max_step_s=1.0, clock=lambda: real[0])
    real[0] += 0.5
    assert clock.tick() == 0.0 and clock.now() == 0.5  # a normal tick counts in full
    mark = (real[0], clock.now())
    real[0] += 120.0  # the head was SIGSTOPped for two minutes
    assert clock.now() == 1.5  # read right after the stall, before the next tick: 1 s of it
    assert clock.stalled_since(*mark) == 119.0  # a check that spanned it is not counted
    assert clock.tick() == 119.0
    real[0] += 0.25
    assert clock.now() == 1.75 and clock.stalled_s == 119.0


def test_the_heartbeat_timeout_defaults_to_looser_than_the_health_checks():
    ray_like = HealthCheckPolicy()
    assert (ray_like.period_s, ray_like.timeout_s, ray_like.failure_threshold) == (3.0, 10.0, 5)
    assert ray_like.detection_bound_s == 3.0 + 5 * 10.0
    assert ray_like.default_heartbeat_timeout_s == 2 * ray_like.detection_bound_s
    assert POLICY.default_heartbeat_timeout_s == 30.0  # never below the old 30 s


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        # The settings' declarations refuse these, with the value and what is accepted.
        ("FREIGHT_HEALTH_CHECK_PERIOD_S", "0", "='0' is not valid: expected a number > 0"),
        ("FREIGHT_HEALTH_CHECK_TIMEOUT_S", "-1", "='-1' is not valid: expected a number > 0"),
        (
            "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD",
            "0",
            "='0' is not valid: expected an integer >= 1",
        ),
    ],
)
def test_invalid_settings_are_refused_naming_the_variable(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError, match=message) as refused:
        HealthCheckPolicy.from_settings()
    assert env in str(refused.value)


# ---- a real head and real agents ----------------------------------------------------------------


@dataclass
class Head:
    session_dir: str
    proc: subprocess.Popen[bytes]
    address: str
    metrics_address: str
    channel: grpc.Channel

    @property
    def stub(self) -> pb_grpc.HeadServiceStub:
        return pb_grpc.HeadServiceStub(self.channel)

    def node(self, node_id: str) -> pb.NodeInfo | None:
        nodes = self.stub.ListNodes(pb.ListNodesRequest(include_dead=True), timeout=10).nodes
        return next((n for n in nodes if n.node_id == node_id), None)

    def state(self, node_id: str) -> str:
        node = self.node(node_id)
        return node.state if node is not None else ""

    def events(self, node_id: str) -> list[dict[str, Any]]:
        """The node's cluster events, oldest first."""
        request = pb.ListStateRequest(
            kind="events", filters=[pb.Filter(key="node_id", op="=", value=node_id)], limit=1000
        )
        reply = pb_grpc.StateServiceStub(self.channel).List(request, timeout=10)
        return sorted((json.loads(r) for r in reply.rows), key=lambda e: e["time"])

    def event(self, node_id: str, kind: str, containing: str = "") -> dict[str, Any] | None:
        return next(
            (e for e in self.events(node_id) if e["kind"] == kind and containing in e["message"]),
            None,
        )

    def failed_checks(self, reason: str) -> float:
        return sum(
            s.value
            for s in scrape(self.metrics_address)
            if s.name == "freight_node_health_check_failures_total"
            and s.labels.get("reason") == reason
        )


def scrape(address: str) -> list[Any]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    """A head whose health-check settings come from its environment."""
    with short_temp_dir() as root, pytest.MonkeyPatch.context() as env:
        env.setenv("FREIGHT_TEMP_DIR", str(root))
        env.setenv("FREIGHT_HEALTH_CHECK_PERIOD_S", str(POLICY.period_s))
        env.setenv("FREIGHT_HEALTH_CHECK_TIMEOUT_S", str(POLICY.timeout_s))
        env.setenv("FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD", str(POLICY.failure_threshold))
        session_dir = _launcher.new_session_dir()
        proc, address = _launcher.start_head(session_dir, attached=ATTACHED)
        try:
            with open(os.path.join(session_dir, "head.json")) as f:
                metrics_address = json.load(f)["metrics_address"]
            with sync_channel(address, read_token(session_dir)) as channel:
                yield Head(session_dir, proc, address, metrics_address, channel)
        finally:
            _launcher.stop_processes([proc])
        assert proc.returncode == 0


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    node_id: str


@pytest.fixture
def agent(head: Head, monkeypatch) -> Iterator[Agent]:
    """A registered node agent, light: no prestarted workers, no fork server."""
    monkeypatch.setenv("FREIGHT_PRESTART_WORKERS", "0")
    monkeypatch.setenv("FREIGHT_FORK_SERVER", "0")
    proc, node_id = _launcher.start_agent(
        head.session_dir, head.address, num_cpus=1, attached=ATTACHED
    )
    try:
        got = Agent(proc, node_id)
        # It answered a check: its start-up is over (it handles SIGTERM from then on).
        wait_for_condition(lambda: checks_answered(got, head) >= 1, START_S, "a first check")
        yield got
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        _launcher.stop_processes([proc])


def test_a_stopped_agent_is_marked_dead_by_its_health_checks(head: Head, agent: Agent):
    assert head.state(agent.node_id) == "ALIVE"
    timeouts_before = head.failed_checks("deadline_exceeded")

    agent.proc.send_signal(signal.SIGSTOP)
    dead = wait_for_condition(
        lambda: head.event(agent.node_id, "NODE_DEAD"),
        DEAD_WITHIN_S,
        f"NODE_DEAD within {DEAD_WITHIN_S:g} s of SIGSTOP",
        interval=0.05,
    )

    assert "failed 3 health checks in a row: deadline exceeded" in dead["message"]
    assert dead["severity"] == "ERROR"
    assert head.state(agent.node_id) == "DEAD"
    assert head.failed_checks("deadline_exceeded") >= timeouts_before + 3


def test_a_dead_node_that_answers_again_rejoins(head: Head, agent: Agent):
    agent.proc.send_signal(signal.SIGSTOP)
    wait_for_condition(lambda: head.state(agent.node_id) == "DEAD", DEAD_WITHIN_S, "NODE_DEAD")

    agent.proc.send_signal(signal.SIGCONT)
    joined = wait_for_condition(
        lambda: head.event(agent.node_id, "NODE_JOINED", "joined again"),
        START_S,
        "NODE_JOINED again after SIGCONT",
    )

    assert head.state(agent.node_id) == "ALIVE"
    dead = head.event(agent.node_id, "NODE_DEAD")
    assert dead is not None and dead["time"] <= joined["time"]
    # Its checks start over: the rejoined node is not found dead again.
    answered = checks_answered(agent, head)
    wait_for_condition(
        lambda: checks_answered(agent, head) >= answered + HEALTHY_CHECKS,
        START_S,
        f"{HEALTHY_CHECKS} more answered health checks",
    )
    assert head.state(agent.node_id) == "ALIVE"
    assert [e["kind"] for e in head.events(agent.node_id)].count("NODE_DEAD") == 1


def test_a_healthy_node_is_never_marked_dead(head: Head, agent: Agent):
    wait_for_condition(
        lambda: checks_answered(agent, head) >= HEALTHY_CHECKS,
        START_S,
        f"{HEALTHY_CHECKS} answered health checks",
    )
    assert head.state(agent.node_id) == "ALIVE"
    assert [e["kind"] for e in head.events(agent.node_id)] == ["NODE_JOINED"]


def test_a_node_that_stops_cleanly_is_removed_not_dead(head: Head, agent: Agent):
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=START_S) == 0

    removed = wait_for_condition(
        lambda: head.event(agent.node_id, "NODE_REMOVED"), START_S, "NODE_REMOVED"
    )
    assert "agent stopped" in removed["message"]
    assert head.state(agent.node_id) == "DEAD"
    assert head.event(agent.node_id, "NODE_DEAD") is None


def test_an_answer_from_another_node_fails_the_check(head: Head, agent: Agent):
    # A node registered at the real agent's address: the agent there answers with its own id,
    # as when a different agent now listens where the node used to be.
    impostor = pb.NodeInfo(
        node_id=f"expected-{agent.node_id[:8]}", agent_address=address(head, agent)
    )
    head.stub.RegisterNode(pb.RegisterNodeRequest(node=impostor), timeout=10)
    wrong_before = head.failed_checks("wrong_node")

    dead = wait_for_condition(
        lambda: head.event(impostor.node_id, "NODE_DEAD"),
        DEAD_WITHIN_S,
        "NODE_DEAD of the node whose address another agent answers",
        interval=0.05,
    )

    assert "failed 3 health checks in a row" in dead["message"]
    assert f"is node {agent.node_id}" in dead["message"]
    assert head.failed_checks("wrong_node") >= wrong_before + 3
    assert head.state(agent.node_id) == "ALIVE"  # the agent that answered is fine


def address(head: Head, agent: Agent) -> str:
    node = head.node(agent.node_id)
    assert node is not None
    return node.agent_address


def checks_answered(agent: Agent, head: Head) -> float:
    """CheckHealth calls the agent answered, from its own /metrics (gRPC server figures)."""
    node = head.node(agent.node_id)
    assert node is not None and node.metrics_address
    return sum(
        s.value
        for s in scrape(node.metrics_address)
        if s.name == "freight_grpc_request_seconds_count"
        and s.labels.get("method") == "CheckHealth"
        and s.labels.get("code") == "OK"
    )
