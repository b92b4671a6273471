"""The head process, started for real, called over gRPC with the cluster token.

Actor creation needs a node agent; :class:`AgentStub` is a small real ``NodeAgentService``
server in the test process that answers ``StartActor``/``KillWorker`` and records the calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc import aio

from freight.head.control_store import ControlStore
from freight.head.server import HeadConfig, HeadServicer
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.testing import wait_for_condition
from freight.util.grpc_auth import (
    TOKEN_METADATA_KEY,
    TokenAuthInterceptor,
    aio_channel,
    create_token,
    read_token,
    sync_channel,
)

START_TIMEOUT_S = 20.0


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    return wait_for_condition(condition, timeout, what or "a condition")


@dataclass
class Head:
    session_dir: Path
    proc: subprocess.Popen
    address: str
    token: str

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=START_TIMEOUT_S)
        finally:
            self.proc.stderr.close()


def start_head(session_dir: Path, *args: str) -> Head:
    """Start ``python -m freight.head`` and wait for its head.json."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "freight.head", "--session-dir", str(session_dir), *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    info_path = session_dir / "head.json"

    def ready():
        if proc.poll() is not None:
            err = proc.stderr.read()
            proc.stderr.close()
            pytest.fail(f"the head exited with {proc.returncode}: {err}")
        if info_path.exists():
            info = json.loads(info_path.read_text())
            return info if info["pid"] == proc.pid else None
        return None

    info = wait_until(ready, START_TIMEOUT_S, "head.json")
    return Head(session_dir, proc, info["address"], read_token(session_dir))


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Iterator[Head]:
    session_dir = tmp_path_factory.mktemp("session")
    create_token(session_dir)
    h = start_head(session_dir, "--cluster-name", "test-cluster")
    yield h
    assert h.stop() == 0


@pytest.fixture(scope="module")
def channel(head) -> Iterator[grpc.Channel]:
    ch = sync_channel(head.address, head.token)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel) -> pb_grpc.HeadServiceStub:
    return pb_grpc.HeadServiceStub(channel)


class AgentStub(pb_grpc.NodeAgentServiceServicer):
    """A real NodeAgentService server that starts no process, for the head to call."""

    def __init__(self, node_id: str = "agent-node") -> None:
        self.node_id = node_id  # what CheckHealth answers: the node it is registered as
        self.started: list[pb.StartActorRequest] = []
        self.killed: list[pb.KillWorkerRequest] = []
        self.tokens: list[str] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=4)
        self.server = grpc.server(self._executor)
        pb_grpc.add_NodeAgentServiceServicer_to_server(self, self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def _record_token(self, context) -> None:
        tokens = [v for k, v in context.invocation_metadata() if k == TOKEN_METADATA_KEY]
        with self._lock:
            self.tokens.extend(tokens)

    def StartActor(self, request, context):
        self._record_token(context)
        with self._lock:
            self.started.append(request)
        if request.creation_spec == b"raise":
            return pb.StartActorReply(worker_id="w-failed", creation_error=b"pickled error")
        return pb.StartActorReply(
            worker_id=f"w-{request.actor.actor_id}",
            worker_address=f"/tmp/worker-{request.actor.actor_id}.sock",
            pid=4242,
        )

    def KillWorker(self, request, context):
        self._record_token(context)
        with self._lock:
            self.killed.append(request)
        return pb.KillWorkerReply(killed=True)

    def CheckHealth(self, request, context):
        return pb.CheckHealthReply(node_id=self.node_id)

    def close(self) -> None:
        self.server.stop(None).wait()
        self._executor.shutdown()


@pytest.fixture(scope="module")
def agent(stub) -> Iterator[AgentStub]:
    """An agent registered as a node that offers the custom resource ``agent_slot``."""
    a = AgentStub()
    node = pb.NodeInfo(node_id="agent-node", agent_address=a.address)
    node.total.amounts.update({"CPU": 2, "agent_slot": 1000})
    stub.RegisterNode(pb.RegisterNodeRequest(node=node))
    yield a
    a.close()


def _new_id() -> str:
    return uuid.uuid4().hex


def _actor(name: str = "", namespace: str = "ns", job_id: str = "", **resources: float):
    actor = pb.ActorInfo(actor_id=_new_id(), class_name="Counter", name=name, namespace=namespace)
    actor.job_id = job_id
    actor.resources.amounts.update({"agent_slot": 1, **resources})
    return actor


# ---- tokens --------------------------------------------------------------------------------


def test_create_token_writes_a_private_file_once(tmp_path):
    token = create_token(tmp_path)
    assert len(token) == 64
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
    assert read_token(tmp_path) == token
    with pytest.raises(FileExistsError):
        create_token(tmp_path)


def test_read_token_prefers_freight_token(tmp_path, monkeypatch):
    create_token(tmp_path)
    monkeypatch.setenv("FREIGHT_TOKEN", "from-env")
    assert read_token(tmp_path) == "from-env"


def test_read_token_says_where_a_token_comes_from(tmp_path, monkeypatch):
    monkeypatch.delenv("FREIGHT_TOKEN", raising=False)
    with pytest.raises(FileNotFoundError, match="FREIGHT_TOKEN"):
        read_token(tmp_path)
    with pytest.raises(ValueError, match="FREIGHT_TOKEN"):
        read_token(None)


# ---- authentication --------------------------------------------------------------------------


def test_a_wrong_token_is_rejected_and_the_head_keeps_serving(head, stub):
    with sync_channel(head.address, "not-the-token") as bad, pytest.raises(grpc.RpcError) as err:
        pb_grpc.HeadServiceStub(bad).ListJobs(pb.ListJobsRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "FREIGHT_TOKEN" in err.value.details()
    assert stub.ListJobs(pb.ListJobsRequest(), timeout=10) is not None


def test_a_missing_token_is_rejected_and_the_head_keeps_serving(head, stub):
    with grpc.insecure_channel(head.address) as plain, pytest.raises(grpc.RpcError) as err:
        pb_grpc.HeadServiceStub(plain).KVPut(
            pb.KVPutRequest(ns="x", key="k", value=b"v"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not stub.KVGet(pb.KVGetRequest(ns="x", key="k"), timeout=10).found


def test_the_interceptor_refuses_before_the_handler_runs_and_counts(tmp_path):
    async def scenario() -> int:
        interceptor = TokenAuthInterceptor("right")
        server = aio.server(interceptors=[interceptor])
        store = ControlStore(tmp_path / "control.db")
        servicer = HeadServicer(HeadConfig(str(tmp_path)), store, "right")
        pb_grpc.add_HeadServiceServicer_to_server(servicer, server)
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        try:
            async with aio_channel(address, "wrong") as bad:
                with pytest.raises(aio.AioRpcError) as err:
                    await pb_grpc.HeadServiceStub(bad).KVPut(pb.KVPutRequest(ns="n", key="k"))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            async with aio_channel(address, "right") as good:
                got = await pb_grpc.HeadServiceStub(good).KVGet(pb.KVGetRequest(ns="n", key="k"))
                assert not got.found  # the refused KVPut never reached its handler
        finally:
            await server.stop(None)
            await servicer.nodes.close()
            store.close()
        return interceptor.refused

    assert asyncio.run(scenario()) == 1


# ---- nodes ---------------------------------------------------------------------------------


def test_nodes_register_heartbeat_and_unregister(stub):
    node_id = _new_id()
    node = pb.NodeInfo(node_id=node_id, agent_address="127.0.0.1:1")
    node.total.amounts["CPU"] = 4
    reply = stub.RegisterNode(pb.RegisterNodeRequest(node=node))
    assert reply.cluster_name == "test-cluster"

    listed = {n.node_id: n for n in stub.ListNodes(pb.ListNodesRequest()).nodes}
    assert listed[node_id].state == "ALIVE"
    assert listed[node_id].available.amounts["CPU"] == 4

    beat = pb.HeartbeatRequest(node_id=node_id, stats=pb.NodeStats(num_workers=3))
    beat.available.amounts["CPU"] = 1
    assert stub.Heartbeat(beat).reregister is False
    listed = {n.node_id: n for n in stub.ListNodes(pb.ListNodesRequest()).nodes}
    assert listed[node_id].available.amounts["CPU"] == 1
    assert listed[node_id].stats.num_workers == 3

    stub.UnregisterNode(pb.UnregisterNodeRequest(node_id=node_id, reason="test"))
    assert node_id not in {n.node_id for n in stub.ListNodes(pb.ListNodesRequest()).nodes}
    everything = stub.ListNodes(pb.ListNodesRequest(include_dead=True)).nodes
    assert {n.node_id: n.state for n in everything}[node_id] == "DEAD"


def test_a_dead_incarnation_must_fence_and_only_a_new_one_rejoins(stub):
    node_id = _new_id()
    first = pb.NodeInfo(node_id=node_id, agent_address="127.0.0.1:1", incarnation="first")
    stub.RegisterNode(pb.RegisterNodeRequest(node=first))
    stub.UnregisterNode(pb.UnregisterNodeRequest(node_id=node_id, reason="test"))

    beat = stub.Heartbeat(pb.HeartbeatRequest(node_id=node_id, incarnation="first"))
    assert beat.reregister and beat.fence and f"declared node {node_id} dead" in beat.fence_reason
    with pytest.raises(grpc.RpcError) as refused:
        stub.RegisterNode(pb.RegisterNodeRequest(node=first))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "register as a new incarnation" in refused.value.details()

    second = pb.NodeInfo(node_id=node_id, agent_address="127.0.0.1:1", incarnation="second")
    stub.RegisterNode(pb.RegisterNodeRequest(node=second))
    listed = {n.node_id: n for n in stub.ListNodes(pb.ListNodesRequest()).nodes}
    assert listed[node_id].incarnation == "second"
    assert not stub.Heartbeat(pb.HeartbeatRequest(node_id=node_id, incarnation="second")).reregister
    stale = stub.Heartbeat(pb.HeartbeatRequest(node_id=node_id, incarnation="first"))
    assert stale.fence and "(incarnation first)" in stale.fence_reason  # declared dead before
    with pytest.raises(grpc.RpcError):
        stub.RegisterNode(pb.RegisterNodeRequest(node=first))
    stub.UnregisterNode(pb.UnregisterNodeRequest(node_id=node_id, reason="test"))


def test_a_restarted_agent_replaces_an_old_incarnation_that_no_longer_answers(stub):
    # Nothing listens on 127.0.0.1:1: the old incarnation's agent is gone (killed, say), and the
    # head has not noticed yet when the agent, restarted under the same node id, registers.
    node_id = _new_id()
    old = pb.NodeInfo(node_id=node_id, agent_address="127.0.0.1:1", incarnation="old")
    stub.RegisterNode(pb.RegisterNodeRequest(node=old))
    new = pb.NodeInfo(node_id=node_id, agent_address="127.0.0.1:1", incarnation="new")
    stub.RegisterNode(pb.RegisterNodeRequest(node=new))
    listed = {n.node_id: n for n in stub.ListNodes(pb.ListNodesRequest()).nodes}
    assert (listed[node_id].incarnation, listed[node_id].state) == ("new", "ALIVE")
    # The replaced incarnation is dead to the head: told to fence, and refused if it registers.
    beat = stub.Heartbeat(pb.HeartbeatRequest(node_id=node_id, incarnation="old"))
    assert beat.fence and "(incarnation old)" in beat.fence_reason
    assert "restarted as a new incarnation" in beat.fence_reason
    with pytest.raises(grpc.RpcError) as refused:
        stub.RegisterNode(pb.RegisterNodeRequest(node=old))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not stub.Heartbeat(pb.HeartbeatRequest(node_id=node_id, incarnation="new")).reregister
    stub.UnregisterNode(pb.UnregisterNodeRequest(node_id=node_id, reason="test"))


def test_a_heartbeat_from_an_unknown_node_asks_it_to_register(stub):
    assert stub.Heartbeat(pb.HeartbeatRequest(node_id=_new_id())).reregister is True


# ---- jobs ----------------------------------------------------------------------------------


def test_jobs_get_distinct_increasing_ids(stub):
    ids = [stub.RegisterJob(pb.RegisterJobRequest(job=pb.JobInfo())).job.job_id for _ in range(3)]
    assert len(set(ids)) == 3
    assert ids == sorted(ids)


def test_finish_job_records_the_end(stub):
    job = stub.RegisterJob(pb.RegisterJobRequest(job=pb.JobInfo(driver_pid=7))).job
    assert job.state == "RUNNING"
    stub.FinishJob(pb.FinishJobRequest(job_id=job.job_id))
    listed = {j.job_id: j for j in stub.ListJobs(pb.ListJobsRequest()).jobs}
    assert listed[job.job_id].state == "FINISHED"
    assert listed[job.job_id].end_time >= job.start_time


def test_finishing_an_unknown_job_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.FinishJob(pb.FinishJobRequest(job_id="ffffffff"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# ---- key/value -----------------------------------------------------------------------------


def test_kv_put_get_delete(stub):
    ns = _new_id()
    assert stub.KVPut(pb.KVPutRequest(ns=ns, key="k", value=b"1")).added is True
    assert stub.KVPut(pb.KVPutRequest(ns=ns, key="k", value=b"2")).added is False
    assert stub.KVGet(pb.KVGetRequest(ns=ns, key="k")).value == b"1"
    stub.KVPut(pb.KVPutRequest(ns=ns, key="k", value=b"3", overwrite=True))
    assert stub.KVGet(pb.KVGetRequest(ns=ns, key="k")).value == b"3"
    assert stub.KVDel(pb.KVDelRequest(ns=ns, key="k")).deleted is True
    assert stub.KVGet(pb.KVGetRequest(ns=ns, key="k")).found is False


# ---- actors --------------------------------------------------------------------------------


def test_a_named_actor_is_created_found_and_killed(stub, agent, head):
    actor = _actor(name="counter-" + _new_id())
    created = stub.CreateActor(pb.CreateActorRequest(actor=actor, creation_spec=b"spec"))
    assert created.actor.state == "ALIVE"
    assert created.actor.node_id == "agent-node"
    assert created.actor.worker_id == f"w-{actor.actor_id}"
    assert agent.started[-1].creation_spec == b"spec"
    assert set(agent.tokens) == {head.token}

    found = stub.GetActor(pb.GetActorRequest(name=actor.name, namespace="ns"))
    assert found.found and found.actor.actor_id == actor.actor_id
    other_ns = stub.GetActor(pb.GetActorRequest(name=actor.name, namespace="elsewhere"))
    assert not other_ns.found

    assert stub.KillActor(pb.KillActorRequest(actor_id=actor.actor_id)).killed is True
    assert agent.killed[-1].worker_id == f"w-{actor.actor_id}" and agent.killed[-1].force
    assert not stub.GetActor(pb.GetActorRequest(name=actor.name, namespace="ns")).found
    dead = stub.GetActor(pb.GetActorRequest(actor_id=actor.actor_id)).actor
    assert (dead.state, dead.death_cause) == ("DEAD", "killed by freight.kill")
    assert stub.KillActor(pb.KillActorRequest(actor_id=actor.actor_id)).killed is False


def test_a_taken_name_is_refused_or_shared(stub, agent):
    name = "svc-" + _new_id()
    first = stub.CreateActor(pb.CreateActorRequest(actor=_actor(name=name))).actor
    refused = stub.CreateActor(pb.CreateActorRequest(actor=_actor(name=name))).actor
    assert refused.state == "DEAD"
    assert f"an actor named {name!r} already exists in namespace 'ns'" in refused.death_cause
    shared = stub.CreateActor(pb.CreateActorRequest(actor=_actor(name=name), get_if_exists=True))
    assert shared.existed and shared.actor.actor_id == first.actor_id


def test_a_raising_constructor_makes_the_actor_dead(stub, agent):
    reply = stub.CreateActor(pb.CreateActorRequest(actor=_actor(), creation_spec=b"raise"))
    assert reply.actor.state == "DEAD"
    assert reply.actor.death_cause == "the constructor raised"
    assert reply.creation_error == b"pickled error"


def test_an_infeasible_actor_is_dead_with_a_clear_cause(stub, agent):
    reply = stub.CreateActor(pb.CreateActorRequest(actor=_actor(CPU=512)))
    assert reply.actor.state == "DEAD"
    cause = reply.actor.death_cause
    assert cause.startswith("infeasible:")
    assert "CPU: 512" in cause and "cluster totals" in cause


def test_an_actor_waits_for_resources_then_starts(stub, agent):
    node_id = _new_id()
    node = pb.NodeInfo(node_id=node_id, agent_address=agent.address)
    node.total.amounts["gpu_slot"] = 1
    node.available.amounts["gpu_slot"] = 0
    stub.RegisterNode(pb.RegisterNodeRequest(node=node))
    actor = _actor(gpu_slot=1)
    del actor.resources.amounts["agent_slot"]
    future = stub.CreateActor.future(pb.CreateActorRequest(actor=actor))
    try:

        def pending_reason():
            got = stub.GetActor(pb.GetActorRequest(actor_id=actor.actor_id))
            return got.found and got.actor.pending_reason == "waiting for resources"

        wait_until(pending_reason, what="the actor to wait for resources")
        assert not future.done()
        beat = pb.HeartbeatRequest(node_id=node_id)
        beat.available.amounts["gpu_slot"] = 1
        stub.Heartbeat(beat)
        reply = future.result(timeout=10)
    finally:
        future.cancel()
        stub.UnregisterNode(pb.UnregisterNodeRequest(node_id=node_id))
    assert (reply.actor.state, reply.actor.node_id) == ("ALIVE", node_id)


def test_finishing_a_job_kills_its_non_detached_actors(stub, agent):
    job_id = stub.RegisterJob(pb.RegisterJobRequest(job=pb.JobInfo())).job.job_id
    owned = _actor(job_id=job_id)
    detached = _actor(job_id=job_id)
    detached.detached = True
    for a in (owned, detached):
        assert stub.CreateActor(pb.CreateActorRequest(actor=a)).actor.state == "ALIVE"

    stub.FinishJob(pb.FinishJobRequest(job_id=job_id))
    owned_now = stub.GetActor(pb.GetActorRequest(actor_id=owned.actor_id)).actor
    assert owned_now.state == "DEAD" and job_id in owned_now.death_cause
    assert stub.GetActor(pb.GetActorRequest(actor_id=detached.actor_id)).actor.state == "ALIVE"
    assert f"w-{owned.actor_id}" in {k.worker_id for k in agent.killed}


def test_a_reported_death_is_recorded(stub, agent):
    actor = _actor()
    stub.CreateActor(pb.CreateActorRequest(actor=actor))
    stub.ReportActorDeath(pb.ReportActorDeathRequest(actor_id=actor.actor_id, cause="exit 9"))
    got = stub.GetActor(pb.GetActorRequest(actor_id=actor.actor_id)).actor
    assert (got.state, got.death_cause) == ("DEAD", "exit 9")
    listed = stub.ListActors(pb.ListActorsRequest()).actors
    assert actor.actor_id not in {a.actor_id for a in listed}


def test_cluster_status_sums_alive_nodes(stub, agent, head):
    status = stub.ClusterStatus(pb.ClusterStatusRequest())
    assert status.cluster_name == "test-cluster"
    assert "agent-node" in {n.node_id for n in status.nodes}
    assert status.total.amounts["agent_slot"] == 1000
    assert status.head_start_time > 0
    alive = [a for a in stub.ListActors(pb.ListActorsRequest()).actors if a.state == "ALIVE"]
    assert status.num_actors_alive == len(alive)


# ---- process lifecycle -----------------------------------------------------------------------


def test_shutdown_exits_zero_and_a_restart_keeps_jobs_and_kv(tmp_path):
    create_token(tmp_path)
    first = start_head(tmp_path)
    with sync_channel(first.address, first.token) as ch:
        s = pb_grpc.HeadServiceStub(ch)
        job_id = s.RegisterJob(pb.RegisterJobRequest(job=pb.JobInfo(namespace="n"))).job.job_id
        s.KVPut(pb.KVPutRequest(ns="n", key="k", value=b"kept"))
        s.Shutdown(pb.ShutdownRequest(reason="test"))
    assert first.stop() == 0
    assert not (tmp_path / "head.json").exists()

    second = start_head(tmp_path)
    try:
        with sync_channel(second.address, second.token) as ch:
            s = pb_grpc.HeadServiceStub(ch)
            assert job_id in {j.job_id for j in s.ListJobs(pb.ListJobsRequest()).jobs}
            assert s.KVGet(pb.KVGetRequest(ns="n", key="k")).value == b"kept"
            new_id = s.RegisterJob(pb.RegisterJobRequest(job=pb.JobInfo())).job.job_id
            assert new_id > job_id
    finally:
        assert second.stop() == 0  # SIGTERM is a graceful stop too


def test_a_node_that_stops_heartbeating_is_marked_dead_with_its_actors(tmp_path):
    create_token(tmp_path)
    h = start_head(tmp_path, "--node-timeout-s", "1.5")
    agent = AgentStub("n1")
    try:
        with sync_channel(h.address, h.token) as ch:
            s = pb_grpc.HeadServiceStub(ch)
            node = pb.NodeInfo(node_id="n1", agent_address=agent.address)
            s.RegisterNode(pb.RegisterNodeRequest(node=node))
            assert s.Heartbeat(pb.HeartbeatRequest(node_id="n1")).reregister is False
            actor = pb.ActorInfo(actor_id=_new_id())
            assert s.CreateActor(pb.CreateActorRequest(actor=actor)).actor.state == "ALIVE"

            def node_dead():
                nodes = s.ListNodes(pb.ListNodesRequest(include_dead=True)).nodes
                return [n.state for n in nodes] == ["DEAD"]

            wait_until(node_dead, what="the silent node to be marked dead")
            got = s.GetActor(pb.GetActorRequest(actor_id=actor.actor_id)).actor
            assert got.state == "DEAD" and "its node n1 died" in got.death_cause
            assert s.Heartbeat(pb.HeartbeatRequest(node_id="n1")).reregister is True
    finally:
        agent.close()
        assert h.stop() == 0


def test_the_head_refuses_to_start_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FREIGHT_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "freight.head", "--session-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=START_TIMEOUT_S,
    )
    assert done.returncode == 1
    assert "FREIGHT_TOKEN" in done.stderr
