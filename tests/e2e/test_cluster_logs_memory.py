"""`freight logs` and `freight memory` read every node of the cluster, through its agents.

A two-node cluster on this machine (:class:`freight.testing.Cluster`): the second node's agent
has a session folder of its own, as it would on another machine, so its log files and its
processes' sockets are not in the folder of the head's node. Tasks and an actor run on the
second node; the commands run against the head (``--address``) from another process, as an
on-call engineer would, and must show what happened there: the lines and traceback of a task,
lines written while ``--follow`` runs, the objects its processes hold. The read-only token reads
both, a wrong token is refused (exit 4), and a node whose agent does not answer (SIGSTOP) is
named while the rest is printed (exit 5).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import freight
from freight.testing import Cluster, connected_cluster, interruptible, run_with_stacks
from freight.testing import wait_for_condition as wait_until
from freight.util.tokens import readonly_token

FREIGHT = str(Path(sys.executable).with_name("freight"))
FAR = {"far": 1.0}  # the second node's resource: what runs there asks for it


@freight.remote(resources=FAR, max_retries=0)
def fail_far(marker: str) -> None:
    ctx = freight.get_runtime_context()
    print(marker)
    raise ValueError(f"failed on purpose {ctx.get_task_id()} on {ctx.get_node_id()}")


@freight.remote(resources=FAR)
def print_far(marker: str) -> str:
    print(marker)
    return freight.get_runtime_context().get_node_id()


@freight.remote(num_cpus=0)
def print_near(marker: str) -> str:
    print(marker)
    return freight.get_runtime_context().get_node_id()


@freight.remote(resources=FAR)
def write_below_python(marker: str) -> str:
    """Writes to its stdout's file descriptor, and runs a child that writes there: neither
    passes through Python's sys.stdout, so neither is a log record."""
    os.write(1, f"{marker}-fd\n".encode())
    subprocess.run(["echo", f"{marker}-child"], check=True)
    return freight.get_runtime_context().get_worker_id()


@freight.remote(resources=FAR, num_cpus=0)
class Holder:
    """Holds an object it put, on the second node."""

    def __init__(self) -> None:
        self.ref = freight.put(b"x" * 300_000)

    def held(self) -> tuple[str, str, int]:
        return self.ref.hex(), freight.get_runtime_context().get_node_id(), os.getpid()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with connected_cluster({"num_cpus": 1}, {"num_cpus": 1, "resources": FAR}) as c:
        head, far = c.nodes
        assert os.path.realpath(far.session_dir) != os.path.realpath(head.session_dir)
        yield c


@pytest.fixture(scope="module")
def far_failure(cluster: Cluster) -> dict[str, str]:
    """A task that printed a marker and failed on the second node."""
    marker = f"far-{uuid.uuid4().hex[:8]}"
    with pytest.raises(Exception, match="failed on purpose") as err:
        freight.get(fail_far.remote(marker))
    said = re.search(r"failed on purpose ([0-9a-f]+) on ([0-9a-f]+)", str(err.value))
    assert said, str(err.value)
    task_id, node_id = said.groups()
    assert node_id == cluster.nodes[1].node_id
    return {"marker": marker, "task_id": task_id, "node_id": node_id}


def cli(cluster: Cluster, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, COLUMNS="250", NO_COLOR="1", **env)
    return run_with_stacks([FREIGHT, *args, "--address", cluster.address], 120, full)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def task_lines(cluster: Cluster, task_id: str, **env: str) -> list[dict[str, Any]]:
    proc = cli(cluster, "logs", "--task", task_id, "--tail", "0", "-o", "json", **env)
    assert proc.returncode == 0, proc.stderr
    return json_lines(proc.stdout)


def test_logs_of_a_task_on_another_node_show_its_lines_and_traceback(
    cluster: Cluster, far_failure: dict[str, str]
) -> None:
    task_id, marker = far_failure["task_id"], far_failure["marker"]
    lines = wait_until(
        lambda: (
            (got := task_lines(cluster, task_id))
            and any("Traceback" in r["message"] for r in got)
            and got
        ),
        30,
        "the far task's traceback in `freight logs --task`",
    )
    printed = next(r for r in lines if r["message"] == marker)
    assert printed["node_id"] == far_failure["node_id"] and printed["task_id"] == task_id
    (failure,) = [r for r in lines if "Traceback" in r["message"]]
    assert failure["level"] == "ERROR"
    assert f'File "{__file__}"' in failure["message"], failure["message"]
    assert "ValueError: failed on purpose" in failure["message"]
    # The lines came from the second node's folder: the head's node has no copy of them.
    head_logs = Path(cluster.nodes[0].session_dir) / "logs"
    assert not any(marker in p.read_text(errors="replace") for p in head_logs.iterdir())
    # As text, the traceback's lines are printed under the task's line.
    text = cli(cluster, "logs", "--task", task_id, "--tail", "0")
    assert text.returncode == 0, text.stderr
    assert f"task={task_id}" in text.stdout and marker in text.stdout
    assert 'raise ValueError(f"failed on purpose' in text.stdout, text.stdout


class Follower:
    """`freight logs -f` of this driver's job, as JSON lines; once open, the history has come:
    whatever it prints next came through the followed streams."""

    def __init__(self, proc: subprocess.Popen[bytes], out_path: Path) -> None:
        self.proc, self.out_path = proc, out_path
        self.code: int | None = None  # once closed: its exit code and what it wrote on stderr
        self.err = ""

    def seen(self) -> dict[str, dict[str, Any]]:
        """The lines printed so far, by message (it must still run)."""
        _alive(self.proc)
        return {r["message"]: r for r in json_lines(self.out_path.read_text())}


@contextlib.contextmanager
def following(cluster: Cluster, tmp_path: Path) -> Iterator[Follower]:
    """A :class:`Follower` for the block; interrupted (SIGINT) as it ends, as Ctrl-C would."""
    job_id = freight.get_runtime_context().get_job_id()
    out_path = tmp_path / "follow.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(
            interruptible([FREIGHT, "logs", "-f", "--tail", "1", "--job", job_id, "-o", "json",
                           "--address", cluster.address]),
            stdout=out,
            stderr=subprocess.PIPE,
            env=dict(os.environ),
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    follower = Follower(proc, out_path)
    try:
        # The last line of the history comes once every node has sent its history.
        wait_until(follower.seen, 60, "the history's last line from `freight logs -f`")
        yield follower
    finally:
        proc.send_signal(signal.SIGINT)
        follower.code = proc.wait(timeout=30)
        assert proc.stderr is not None
        if not proc.stderr.closed:  # (a failed check has read it)
            follower.err = proc.stderr.read().decode()
            proc.stderr.close()


def test_follow_prints_lines_of_every_node_written_after_it_started(
    cluster: Cluster, tmp_path: Path
) -> None:
    with following(cluster, tmp_path) as follower:
        far_marker, near_marker = (f"{w}-{uuid.uuid4().hex[:8]}" for w in ("far", "near"))
        assert freight.get(print_far.remote(far_marker)) == cluster.nodes[1].node_id
        assert freight.get(print_near.remote(near_marker)) == cluster.nodes[0].node_id
        seen = wait_until(
            lambda: (got := follower.seen()) and far_marker in got and near_marker in got and got,
            60,
            "both markers in the `freight logs -f` output",
        )
    assert follower.code == 0, follower.err
    assert seen[far_marker]["node_id"] == cluster.nodes[1].node_id
    assert seen[near_marker]["node_id"] == cluster.nodes[0].node_id


def test_process_output_shows_what_a_worker_on_another_node_wrote_itself(
    cluster: Cluster,
) -> None:
    marker = f"raw-{uuid.uuid4().hex[:8]}"
    worker = freight.get(write_below_python.remote(marker))
    records = cli(cluster, "logs", "--worker", worker, "--tail", "0", "-o", "json")
    assert records.returncode == 0, records.stderr
    assert f"{marker}-fd" not in [r["message"] for r in json_lines(records.stdout)]
    wanted = [f"{marker}-fd", f"{marker}-child"]
    text = wait_until(
        lambda: (
            (p := cli(cluster, "logs", "--worker", worker, "--process-output", "--tail", "0"))
            and all(w in p.stdout.splitlines() for w in wanted)
            and p
        ),
        30,
        "the worker's own output lines",
    )
    assert text.returncode == 0, text.stderr
    as_json = cli(cluster, "logs", "--worker", worker, "--process-output", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    lines = [r for r in json_lines(as_json.stdout) if r["message"] in wanted]
    assert [r["message"] for r in lines] == wanted
    assert all(r["node_id"] == cluster.nodes[1].node_id for r in lines), lines
    assert all(r["worker_id"].startswith(worker) for r in lines), lines
    for bad in (("--process-output",), ("--worker", worker, "--task", "ab", "--process-output")):
        proc = cli(cluster, "logs", *bad)
        assert proc.returncode == 2 and "--worker ID" in proc.stderr, proc.stderr


def test_follow_reads_a_node_that_joined_after_it_started(cluster: Cluster, tmp_path: Path) -> None:
    late = None
    try:
        with following(cluster, tmp_path) as follower:
            late = cluster.add_node(num_cpus=1, resources={"late": 1.0})
            marker = f"late-{uuid.uuid4().hex[:8]}"
            ran_on = freight.get(print_near.options(resources={"late": 1.0}).remote(marker))
            assert ran_on == late.node_id
            seen = wait_until(
                lambda: (got := follower.seen()) and marker in got and got,
                60,
                "the joined node's line in the `freight logs -f` output",
            )
            assert seen[marker]["node_id"] == late.node_id
            # A node that leaves is named; the others are still followed.
            cluster.remove_node(late)
            late = None
            cluster.wait_for_nodes()
            after = f"after-{uuid.uuid4().hex[:8]}"
            freight.get(print_near.remote(after))
            wait_until(
                lambda: after in follower.seen(),
                60,
                "a line of the head's node after the late node left",
            )
    finally:
        if late is not None:
            cluster.remove_node(late)
            cluster.wait_for_nodes()
    assert follower.code == 5, follower.err  # partial: one node's lines stopped coming
    assert f"node {seen[marker]['node_id'][:12]}" in follower.err, follower.err
    assert "stopped answering" in follower.err, follower.err


def test_follow_ends_when_no_node_is_left(cluster: Cluster, tmp_path: Path) -> None:
    """A cluster that stops (a program's own, say) ends `logs -f` following it."""
    with Cluster(initialize_head=True) as other:
        follower = subprocess.Popen(
            [FREIGHT, "logs", "-f", "--tail", "1", "--address", other.address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ),
            stdin=subprocess.DEVNULL,
        )
        assert follower.stdout is not None and follower.stderr is not None
        assert follower.stdout.readline()  # the history: following from here on
        other.shutdown()
        code = follower.wait(timeout=60)
    err = follower.stderr.read().decode()
    follower.stdout.close()
    follower.stderr.close()
    assert code == 5, err
    assert "no node is left to follow" in err and "stopped answering" in err, err


def test_an_agent_follows_a_bounded_number_of_streams(cluster: Cluster) -> None:
    from freight.node.node_views import MAX_FOLLOWERS
    from freight.protocol.generated import freight_pb2 as pb
    from freight.protocol.generated import freight_pb2_grpc as pb_grpc
    from freight.util.grpc_auth import sync_channel

    (far,) = [n for n in _nodes(cluster) if n.node_id == cluster.nodes[1].node_id]
    channel = sync_channel(far.agent_address, cluster._token())
    stub = pb_grpc.NodeAgentServiceStub(channel)
    request = pb.ReadLogsRequest(ids={"task_id": "ffff"}, follow=True)
    calls = []
    try:
        for _ in range(MAX_FOLLOWERS):
            calls.append(stub.ReadLogs(request))
            while not next(calls[-1]).caught_up:  # following from here on
                pass
        refused = stub.ReadLogs(request)
        with pytest.raises(grpc.RpcError) as err:
            next(refused)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"already serves {MAX_FOLLOWERS} followed log streams" in err.value.details()
        calls.pop().cancel()
        again = wait_until(
            lambda: _first_reply(stub.ReadLogs(request)), 30, "a follow slot after a cancel"
        )
        assert again.caught_up
        bad = stub.ReadLogs(pb.ReadLogsRequest(ids={"task_id": "xyz!"}))
        with pytest.raises(grpc.RpcError) as err:
            next(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "hex id" in err.value.details()
    finally:
        for call in calls:
            call.cancel()
        channel.close()


def _nodes(cluster: Cluster) -> Any:
    from freight.client.head_client import HeadClient
    from freight.client.head_client import pb_module as pb

    head = HeadClient(cluster.address, cluster._token())
    try:
        return head.call("ListNodes", pb.ListNodesRequest()).nodes
    finally:
        head.close()


def _first_reply(call: Any) -> Any:
    """The stream's first reply, or None when the agent refused it for now."""
    try:
        return next(call)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return None
    finally:
        call.cancel()


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        err = ""
        if proc.stderr is not None and not proc.stderr.closed:
            err = proc.stderr.read().decode(errors="replace")
            proc.stderr.close()
        pytest.fail(f"`freight logs -f` exited with {proc.returncode}; its stderr:\n{err[-4000:]}")
    return True


@pytest.fixture(scope="module")
def far_object(cluster: Cluster) -> dict[str, Any]:
    """An object a worker of the second node owns (an actor put it), and one this driver owns
    on the head's node."""
    holder = Holder.remote()
    object_id, node_id, pid = freight.get(holder.held.remote())
    near = freight.put(b"y" * 1000)
    yield {"object_id": object_id, "node_id": node_id, "pid": pid, "near": near.hex()}
    freight.kill(holder)
    del near


def memory_rows(cluster: Cluster, **env: str) -> dict[str, dict[str, Any]]:
    proc = cli(cluster, "memory", "--group-by", "none", "-o", "json", **env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["partial"] is False and data["warnings"] == [], data["warnings"]
    return {r["object_id"]: r for r in data["items"]}


def test_memory_lists_objects_held_on_every_node(
    cluster: Cluster, far_object: dict[str, Any]
) -> None:
    rows = memory_rows(cluster)
    far = rows[far_object["object_id"]]
    assert far["node_id"] == cluster.nodes[1].node_id == far_object["node_id"]
    assert far["process"] == f"worker pid={far_object['pid']}"
    assert far["owner"] is True and far["where"] == "shared memory"
    assert "LOCAL_REFERENCE" in far["reference_types"]
    near = rows[far_object["near"]]
    assert near["node_id"] == cluster.nodes[0].node_id
    assert near["process"] == f"driver pid={os.getpid()}"
    table = cli(cluster, "memory")
    assert table.returncode == 0, table.stderr
    assert f"node {cluster.nodes[1].node_id}" in table.stdout, table.stdout


def test_the_read_only_token_reads_logs_and_memory(
    cluster: Cluster, far_failure: dict[str, str], far_object: dict[str, Any]
) -> None:
    readonly = readonly_token(cluster._token())
    lines = task_lines(cluster, far_failure["task_id"], FREIGHT_TOKEN=readonly)
    assert far_failure["marker"] in [r["message"] for r in lines]
    assert far_object["object_id"] in memory_rows(cluster, FREIGHT_TOKEN=readonly)


@pytest.mark.parametrize("command", [("logs",), ("memory",)])
def test_a_wrong_token_is_refused(cluster: Cluster, command: tuple[str, ...]) -> None:
    proc = cli(cluster, *command, FREIGHT_TOKEN="0" * 64)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "refused" in proc.stderr and "FREIGHT_TOKEN" in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_a_node_that_does_not_answer_is_named_and_the_rest_printed(
    cluster: Cluster, far_object: dict[str, Any]
) -> None:
    """Last in the module: it stops the second node's agent for a few seconds (far less than
    the head's health checks need to declare it dead)."""
    far = cluster.nodes[1]
    marker = f"near-{uuid.uuid4().hex[:8]}"
    assert freight.get(print_near.remote(marker)) == cluster.nodes[0].node_id
    env = {"FREIGHT_STATE_AGENT_TIMEOUT_S": "2"}
    os.kill(far.process.pid, signal.SIGSTOP)
    try:
        logs = cli(cluster, "logs", "--tail", "0", "-o", "json", **env)
        memory = cli(cluster, "memory", "--group-by", "none", "-o", "json", **env)
    finally:
        os.kill(far.process.pid, signal.SIGCONT)
    for proc in (logs, memory):
        assert proc.returncode == 5, proc.stdout[-2000:] + proc.stderr
        assert f"node {far.node_id[:12]}" in proc.stderr and "did not answer" in proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
    assert marker in [r["message"] for r in json_lines(logs.stdout)]
    data = json.loads(memory.stdout)
    assert data["partial"] is True
    assert any(far.node_id[:12] in w for w in data["warnings"]), data["warnings"]
    ids = {r["object_id"] for r in data["items"]}
    assert far_object["near"] in ids and far_object["object_id"] not in ids
