"""Helpers for testing programs that use freight (and freight itself)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from freight.chaos.pager import PagerSink, Post


def wait_for_condition(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.02,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that value.

    Raises ``TimeoutError`` naming ``what`` when ``timeout`` seconds pass first. This is how
    tests wait for another process: never with a bare sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # poll interval; the deadline above bounds the wait


def head_counter(session_dir: str | Path, name: str) -> float:
    """The sum of a counter's series on the /metrics endpoint of the head of ``session_dir``."""
    import json
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    address = json.loads((Path(session_dir) / "head.json").read_text())["metrics_address"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


@contextlib.contextmanager
def short_temp_dir() -> Iterator[Path]:
    """A fresh folder for FREIGHT_TEMP_DIR, short enough for the Unix socket paths below it.

    Socket paths are limited to 107 bytes, which pytest's ``tmp_path`` easily exceeds.
    """
    path = tempfile.mkdtemp(prefix="fr-", dir="/tmp")
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def patched_environ(**changes: str | None) -> Iterator[None]:
    """Set (a str) or remove (None) environment variables for the block, then restore all of
    ``os.environ`` as it was. Processes started inside inherit the changes."""
    saved = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def local_cluster(
    env: dict[str, str | None] | None = None, **init_kwargs: Any
) -> Iterator[dict[str, Any]]:
    """A local cluster of the caller's own: ``freight.init(**init_kwargs)`` below a short temp
    folder, shut down after the block (a cluster this process already runs is shut down
    first). ``env`` changes hold while it starts, so its processes inherit them."""
    import freight

    if freight.is_initialized():
        freight.shutdown()
    with short_temp_dir() as tmp:
        with patched_environ(FREIGHT_TEMP_DIR=str(tmp), **(env or {})):
            info = freight.init(**init_kwargs)
        try:
            yield info
        finally:
            freight.shutdown()


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as an :class:`OtlpReceiver` received it (ids in hex, as W3C writes them)."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: str  # INTERNAL, SERVER, CLIENT, PRODUCER or CONSUMER
    start_time_ns: int
    end_time_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]  # attributes of the process that sent it (service.name, ...)
    status: str  # UNSET, OK or ERROR
    status_message: str
    events: tuple[tuple[str, dict[str, Any]], ...]


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


class OtlpReceiver:
    """A real OTLP/gRPC trace receiver on 127.0.0.1 (a free port) that keeps what it is sent.

    Point a program at it with ``OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint`` and
    ``OTEL_EXPORTER_OTLP_INSECURE=true``; read :attr:`spans`, or wait for some with
    :meth:`wait_for`. Built on opentelemetry-proto's ``TraceService`` definitions, so the
    exporter talks to it exactly as it talks to a collector. Use it as a context manager.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests = 0  # Export calls received
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        """``http://HOST:PORT``, the value for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far (a copy)."""
        with self._lock:
            return list(self._spans)

    def start(self) -> OtlpReceiver:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        receiver = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._collect(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self._server)
        self.port = self._server.add_insecure_port(f"{self.host}:0")
        if not self.port:
            raise OSError(f"OtlpReceiver: could not listen on {self.host}")
        self._server.start()
        return self

    def _collect(self, request: Any) -> None:
        from opentelemetry.proto.trace.v1 import trace_pb2

        got = []
        for rs in request.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    got.append(
                        ReceivedSpan(
                            trace_id=sp.trace_id.hex(),
                            span_id=sp.span_id.hex(),
                            parent_span_id=sp.parent_span_id.hex(),
                            name=sp.name,
                            kind=trace_pb2.Span.SpanKind.Name(sp.kind).removeprefix("SPAN_KIND_"),
                            start_time_ns=sp.start_time_unix_nano,
                            end_time_ns=sp.end_time_unix_nano,
                            attributes=_attrs(sp.attributes),
                            resource=resource,
                            status=trace_pb2.Status.StatusCode.Name(sp.status.code).removeprefix(
                                "STATUS_CODE_"
                            ),
                            status_message=sp.status.message,
                            events=tuple((e.name, _attrs(e.attributes)) for e in sp.events),
                        )
                    )
        with self._lock:
            self.requests += 1
            self._spans.extend(got)

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedSpan]], Any],
        timeout: float = 30.0,
        what: str = "spans",
    ) -> Any:
        """Wait until ``predicate(spans)`` is truthy and return its value (TimeoutError if not)."""
        return wait_for_condition(lambda: predicate(self.spans), timeout, what)

    def clear(self) -> None:
        """Forget the spans received so far."""
        with self._lock:
            self._spans.clear()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = [
    "OtlpReceiver",
    "ReceivedPost",
    "ReceivedSpan",
    "WebhookReceiver",
    "short_temp_dir",
    "wait_for_condition",
]


# One request a WebhookReceiver got (``at``: time.monotonic() on arrival).
ReceivedPost: TypeAlias = Post


class WebhookReceiver(PagerSink):
    """A real HTTP server on 127.0.0.1 (a free port) that keeps every JSON POST it is sent, as
    Alertmanager's webhook and PagerDuty receivers send them, and answers 200 ``{}``: the pager
    sink of :mod:`freight.chaos.pager`, without its log file.

    Point a receiver at ``receiver.url + "/some-path"``; read :meth:`posts` (each with its
    arrival time) or wait for some with :meth:`wait_for`. Use it as a context manager.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(None, host)

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedPost]], Any],
        timeout: float = 30.0,
        what: str = "posts",
    ) -> Any:
        """Wait until ``predicate(posts)`` is truthy and return its value (TimeoutError if not)."""
        return wait_for_condition(lambda: predicate(self.posts()), timeout, what)


@dataclass
class ClusterNode:
    """One node agent of a :class:`Cluster`: a real process with its own session folder,
    object store and ports (and, in a network namespace, its own address)."""

    node_id: str
    session_dir: str
    process: subprocess.Popen[bytes]
    resources: dict[str, float]
    labels: dict[str, str]
    is_head: bool = False
    host: Any = None  # its freight.util.netns Host when the cluster uses namespaces

    @property
    def ip(self) -> str:
        return str(self.host.ip) if self.host is not None else "127.0.0.1"


class Cluster:
    """A multi-node cluster on this machine, for tests (like Ray's ``cluster_utils.Cluster``).

    The first :meth:`add_node` starts the head and the head node's agent; every later one starts
    another node agent, which registers with the head. With ``network_namespaces=True`` every
    node after the head runs in a Linux network namespace of its own, behind a bridge, so
    :meth:`isolate` cuts it off the network for real (needs root: see
    :func:`freight.util.netns.unavailable_reason`)::

        cluster = Cluster()
        head = cluster.add_node(num_cpus=1)
        worker = cluster.add_node(num_cpus=2, resources={"gpu_box": 1}, labels={"zone": "b"})
        cluster.wait_for_nodes()
        freight.init(address=cluster.address)
        ...
        cluster.shutdown()
    """

    def __init__(
        self,
        initialize_head: bool = False,
        head_node_args: dict[str, Any] | None = None,
        network_namespaces: bool = False,
    ) -> None:
        from freight import _launcher

        self.nodes: list[ClusterNode] = []
        self.session_dir = _launcher.new_session_dir()
        self.head_address = ""
        self._head_proc: subprocess.Popen[bytes] | None = None
        self._lab: Any = None
        self._bind = "127.0.0.1"
        if network_namespaces:
            from freight.util import netns

            reason = netns.unavailable_reason()
            if reason is not None:
                raise RuntimeError(f"Cluster(network_namespaces=True): {reason}")
            self._lab = netns.NetworkLab()
            self._bind = self._lab.bridge_ip
        if initialize_head:
            self.add_node(**(head_node_args or {}))

    @property
    def address(self) -> str:
        """The head's address, for ``freight.init(address=...)``."""
        return self.head_address

    @property
    def head_node(self) -> ClusterNode:
        return self.nodes[0]

    def _token(self) -> str:
        from freight.util.tokens import read_token

        return read_token(self.session_dir)

    def add_node(
        self,
        num_cpus: float | None = 1,
        num_gpus: float | None = None,
        resources: dict[str, float] | None = None,
        labels: dict[str, str] | None = None,
        object_store_memory: int | None = 256 * 1024 * 1024,
        wait: bool = True,
    ) -> ClusterNode:
        """Start a node (the head and its agent, the first time) and return it once it has
        registered with the head."""
        from freight import _launcher

        total = {"CPU": float(num_cpus or 0), **(resources or {})}
        if num_gpus:
            total["GPU"] = float(num_gpus)
        if self._head_proc is None:
            procs = _launcher.start_cluster(
                self.session_dir,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                resources=resources,
                object_store_memory=object_store_memory,
                bind=self._bind,
                labels=labels,
            )
            self._head_proc = procs.procs[-1]
            self.head_address = procs.head_address
            node = ClusterNode(
                procs.node_id,
                self.session_dir,
                procs.procs[0],
                total,
                dict(labels or {}),
                is_head=True,
            )
        else:
            node_dir = _launcher.new_session_dir()
            token = self._token()
            with open(os.path.join(node_dir, "token"), "w", encoding="utf-8") as f:
                f.write(token)  # the cluster's token, not the one the new folder came with
            host = self._lab.add_host(f"n{len(self.nodes)}") if self._lab is not None else None
            proc, node_id = _launcher.start_agent(
                node_dir,
                self.head_address,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                resources=resources,
                object_store_memory=object_store_memory,
                head_node=False,
                labels=labels,
                node_ip=host.ip if host is not None else "127.0.0.1",
                token=token,
                wrap=host.wrap if host is not None else None,
            )
            node = ClusterNode(node_id, node_dir, proc, total, dict(labels or {}), host=host)
        self.nodes.append(node)
        if wait:
            self.wait_for_nodes()
        return node

    def remove_node(self, node: ClusterNode, graceful: bool = True) -> None:
        """Stop a node agent: ``graceful`` lets it unregister (the head records it removed),
        otherwise it is killed with SIGKILL (the head finds it dead by its health checks)."""
        from freight import _launcher

        if node.is_head:
            raise ValueError("remove_node: the head node goes with shutdown(), not alone")
        self.nodes.remove(node)
        if graceful:
            _launcher.stop_processes([node.process])
        else:
            node.process.kill()
            node.process.wait()
        # Its namespace stays until shutdown(): the lab removes every host at once.

    def kill_head(self) -> int:
        """SIGKILL the head process (the nodes, workers and drivers live on); its pid."""
        if self._head_proc is None:
            raise ValueError("kill_head: this cluster has no head")
        self._head_proc.kill()
        self._head_proc.wait()
        return self._head_proc.pid

    def restart_head(self) -> None:
        """Start the head again on the same session directory, control store and port, as an
        operator (or Kubernetes) would after it died; returns once it serves."""
        from freight import _launcher

        if self._head_proc is not None and self._head_proc.poll() is None:
            raise ValueError("restart_head: the head is still running (kill_head first)")
        port = int(self.head_address.rpartition(":")[2])
        self._head_proc, address = _launcher.start_head(self.session_dir, port, bind=self._bind)
        if address != self.head_address:
            raise RuntimeError(f"the restarted head serves at {address}, not {self.head_address}")

    def isolate(self, node: ClusterNode) -> None:
        """Cut ``node`` off the network (a real partition; needs ``network_namespaces``)."""
        if node.host is None:
            raise ValueError("isolate: this node has no network namespace of its own")
        self._lab.isolate(node.host)

    def rejoin(self, node: ClusterNode) -> None:
        """Undo :meth:`isolate`."""
        if node.host is None:
            raise ValueError("rejoin: this node has no network namespace of its own")
        self._lab.rejoin(node.host)

    def alive_node_ids(self) -> set[str]:
        """Node ids the head lists as alive."""
        from freight.client.head_client import HeadClient
        from freight.client.head_client import pb_module as pb

        head = HeadClient(self.head_address, self._token())
        try:
            nodes = head.call("ListNodes", pb.ListNodesRequest()).nodes
        finally:
            head.close()
        return {n.node_id for n in nodes if n.state == "ALIVE"}

    def wait_for_nodes(self, timeout: float = 30.0) -> None:
        """Wait until the head lists exactly this cluster's nodes as alive."""
        want = {n.node_id for n in self.nodes}
        wait_for_condition(
            lambda: self.alive_node_ids() == want,
            timeout,
            f"the head to list the {len(want)} nodes of the cluster as alive",
        )

    def shutdown(self) -> None:
        """Stop every node, then the head (also one a chaos action started again in its place,
        as its ``head.json`` records it); remove the namespaces, if any."""
        from freight import _launcher
        from freight.util.process import signal_recorded, wait_exit

        head = _launcher.read_trusted_json(os.path.join(self.session_dir, "head.json"))
        procs = [n.process for n in reversed(self.nodes)]
        if self._head_proc is not None:
            procs.append(self._head_proc)
        _launcher.stop_processes(procs)
        if head and signal_recorded(head, signal.SIGTERM):
            wait_exit(int(head["pid"]), 15.0)
            signal_recorded(head, signal.SIGKILL)
        self.nodes.clear()
        self._head_proc = None
        if self._lab is not None:
            self._lab.close()
            self._lab = None

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


@contextlib.contextmanager
def connected_cluster(
    *nodes: dict[str, Any],
    env: dict[str, str | None] | None = None,
    namespace: str | None = None,
    network_namespaces: bool = False,
) -> Iterator[Cluster]:
    """A :class:`Cluster` of ``nodes`` (``add_node`` arguments; the first is the head node)
    below a short temp folder, with this process connected to it as a driver. ``env`` changes
    (FREIGHT_TOKEN and FREIGHT_ADDRESS are cleared) hold for the whole block."""
    import freight

    changes = {"FREIGHT_TOKEN": None, "FREIGHT_ADDRESS": None, **(env or {})}
    with (
        short_temp_dir() as tmp,
        patched_environ(FREIGHT_TEMP_DIR=str(tmp), **changes),
        Cluster(network_namespaces=network_namespaces) as cluster,
    ):
        for node in nodes:
            cluster.add_node(**node)
        freight.init(address=cluster.address, namespace=namespace)
        try:
            yield cluster
        finally:
            freight.shutdown()


def interruptible(argv: list[str]) -> list[str]:
    """``argv`` run with Ctrl-C's default action, for a command a test stops with SIGINT: a
    suite started by a shell without job control (or a test worker) has SIGINT ignored, and a
    child inherits that. Through ``env --default-signal`` rather than a ``preexec_fn``: that makes
    Python fork without exec, which runs gRPC's fork handlers in the child, whose restarted poller
    can abort it (``epoll_wait ... Bad file descriptor``) before it runs the command."""
    return ["env", "--default-signal=INT", *argv]


def kill_chaos_watchdogs(journal_path: str, timeout: float = 30.0) -> None:
    """SIGKILL the chaos watchdog over ``journal_path`` once it runs (a crash that takes the
    whole session, harness and watchdog both): what is left is for the kernel's own expiry and
    `freight chaos recover`."""
    import psutil

    from freight.chaos import watchdog

    for pid in wait_for_condition(
        lambda: watchdog.running(journal_path), timeout, "the fault's watchdog"
    ):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            proc.kill()
            proc.wait(timeout)


def run_with_stacks(
    argv: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv)`` for a Python command (a ``freight`` command line) that must end
    within ``timeout`` s; if it does not, it is made to print every thread's stack (Python's
    fault handler, on SIGABRT) and the test fails with that and what it wrote, so a hang says
    where it hung."""
    full = {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(
            f"{' '.join(argv)} did not end within {timeout:g} s; its stdout:\n{out[-2000:]}\n"
            f"its stderr, with every thread's stack:\n{err[-8000:]}"
        ) from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
