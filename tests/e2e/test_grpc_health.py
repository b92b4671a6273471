"""The standard gRPC health service (grpc.health.v1) on the head and every node agent.

Probes as Kubernetes and grpc_health_probe make them: a plain channel, no token, the stock
``HealthStub`` of grpcio-health-checking. Check answers SERVING while the process serves and
NOT_SERVING once it stops; every other call (Watch included) still needs the token.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.testing import (
    Cluster,
    connected_cluster,
    patched_environ,
    short_temp_dir,
    wait_for_condition,
)
from freight.util.grpc_auth import TOKEN_METADATA_KEY, read_token, sync_channel

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEAD_SERVICES = ("", "freight.v1.HeadService", "freight.v1.StateService")
AGENT_SERVICES = ("", "freight.v1.NodeAgentService")


def nodes(cluster: Cluster) -> list[pb.NodeInfo]:
    with sync_channel(cluster.address, read_token(cluster.session_dir)) as channel:
        reply = pb_grpc.HeadServiceStub(channel).ListNodes(pb.ListNodesRequest(), timeout=10)
    return list(reply.nodes)


def check(address: str, service: str = "") -> int:
    """What a probe sees: no token, no freight code on the client side."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return int(reply.status)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with connected_cluster({"num_cpus": 1}, {"num_cpus": 1}) as c:
        yield c


def test_head_and_every_agent_answer_serving_to_a_probe_without_a_token(cluster: Cluster) -> None:
    agents = [n.agent_address for n in nodes(cluster)]
    assert len(agents) == 2
    assert {s: check(cluster.address, s) for s in HEAD_SERVICES} == dict.fromkeys(
        HEAD_SERVICES, SERVING
    )
    for address in agents:
        assert {s: check(address, s) for s in AGENT_SERVICES} == dict.fromkeys(
            AGENT_SERVICES, SERVING
        )


def test_an_unknown_service_is_not_found(cluster: Cluster) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        check(cluster.address, "freight.v1.NoSuchService")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_only_check_is_open_without_the_token(cluster: Cluster) -> None:
    with grpc.insecure_channel(cluster.address) as channel:
        with pytest.raises(grpc.RpcError) as listed:
            pb_grpc.HeadServiceStub(channel).ListNodes(pb.ListNodesRequest(), timeout=10)
        assert listed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        with pytest.raises(grpc.RpcError) as watched:
            next(watch)
        assert watched.value.code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = [(TOKEN_METADATA_KEY, "not-the-token")]
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.HeadServiceStub(channel).ListNodes(
                pb.ListNodesRequest(), timeout=10, metadata=wrong
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


class Watcher:
    """A Watch stream (with the token) and every status it has received, on a thread."""

    def __init__(self, address: str, token: str, timeout: float = 60) -> None:
        self.statuses: list[int] = []
        self.ended = threading.Event()
        self._changed = threading.Condition()
        self._channel = grpc.insecure_channel(address)
        stub = health_pb2_grpc.HealthStub(self._channel)
        self._stream = stub.Watch(
            health_pb2.HealthCheckRequest(), metadata=[(TOKEN_METADATA_KEY, token)], timeout=timeout
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for reply in self._stream:
                with self._changed:
                    self.statuses.append(int(reply.status))
                    self._changed.notify_all()
        except grpc.RpcError:
            pass  # the server went away: the end of the stream
        finally:
            self.ended.set()
            with self._changed:
                self._changed.notify_all()

    def wait_for(self, status: int, timeout: float = 30.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: status in self.statuses, timeout=timeout):
                raise TimeoutError(f"no status {status} on the watch: got {self.statuses}")

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(timeout=10)
        self._channel.close()


def test_a_stopping_agent_and_a_stopping_head_report_not_serving() -> None:
    with (
        short_temp_dir() as tmp,
        patched_environ(FREIGHT_TEMP_DIR=str(tmp), FREIGHT_TOKEN=None, FREIGHT_ADDRESS=None),
        Cluster() as cluster,
    ):
        cluster.add_node(num_cpus=1)
        second = cluster.add_node(num_cpus=1)
        token = read_token(cluster.session_dir)
        agent = next(n.agent_address for n in nodes(cluster) if n.node_id == second.node_id)
        head_watch, agent_watch = Watcher(cluster.address, token), Watcher(agent, token)
        try:
            head_watch.wait_for(SERVING)
            agent_watch.wait_for(SERVING)
            cluster.remove_node(second)  # SIGTERM: the agent stops gracefully
            agent_watch.wait_for(NOT_SERVING)
            assert check(cluster.address) == SERVING  # the head serves on
            with sync_channel(cluster.address, token) as channel:
                pb_grpc.HeadServiceStub(channel).Shutdown(pb.ShutdownRequest(), timeout=10)
            head_watch.wait_for(NOT_SERVING)
            assert head_watch.statuses[:2] == [SERVING, NOT_SERVING]
            assert agent_watch.statuses[:2] == [SERVING, NOT_SERVING]
        finally:
            head_watch.close()
            agent_watch.close()


QUICK = {
    "FREIGHT_HEALTH_CHECK_PERIOD_S": "0.2",
    "FREIGHT_HEALTH_CHECK_TIMEOUT_S": "0.3",
    "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "3",
}


def test_an_agent_reports_not_serving_while_it_fences_itself() -> None:
    # SIGSTOP the agent until the head declares its node dead; once it runs again its heartbeat
    # learns so, and it stops its workers and rejoins as a new incarnation (decision 0034).
    with (
        short_temp_dir() as tmp,
        patched_environ(
            FREIGHT_TEMP_DIR=str(tmp), FREIGHT_TOKEN=None, FREIGHT_ADDRESS=None, **QUICK
        ),
        Cluster() as cluster,
    ):
        cluster.add_node(num_cpus=1)
        far = cluster.add_node(num_cpus=1)
        token = read_token(cluster.session_dir)
        agent = next(n.agent_address for n in nodes(cluster) if n.node_id == far.node_id)
        watch = Watcher(agent, token, timeout=120)
        try:
            watch.wait_for(SERVING)
            far.process.send_signal(signal.SIGSTOP)
            try:
                wait_for_condition(
                    lambda: far.node_id not in cluster.alive_node_ids(), 60, "NODE_DEAD"
                )
            finally:
                far.process.send_signal(signal.SIGCONT)
            wait_for_condition(
                lambda: far.node_id in cluster.alive_node_ids(), 60, "the node to rejoin"
            )
            watch.wait_for(NOT_SERVING)
            wait_for_condition(
                lambda: watch.statuses[-1:] == [SERVING], 60, "SERVING again after the fence"
            )
            assert watch.statuses == [SERVING, NOT_SERVING, SERVING]
            assert check(agent) == SERVING
        finally:
            watch.close()
