"""The head's ``/metrics`` and ``/sd``, and the Prometheus file-SD document of the cluster.

:class:`HeadMetrics` keeps the few figures that need memory between RPCs (the time of each node's
last heartbeat, for the heartbeat-lag histogram) and builds, at scrape time on the head's event
loop, the cluster-level snapshot: the head process's own recorder (actor creations and deaths,
head scheduling and control-store latency, gRPC latency, event-loop lag, events, dropped
telemetry) plus gauges read from the control store (nodes, actors and jobs by state, the age of
the oldest heartbeat).

Service discovery: :meth:`HeadMetrics.nodes_changed` rewrites
``<session>/prometheus/file_sd.json`` atomically whenever a node joins, leaves or dies; the same
document is served at ``GET /sd`` (Prometheus HTTP SD). Each entry carries the labels
``cluster``, ``node_id`` and ``is_head_node`` and a ``__freight_role`` (``head`` or ``node``) that
the generated scrape configuration uses to split the targets into its two jobs; labels starting
with ``__`` are dropped by Prometheus after relabelling.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import TYPE_CHECKING, Any

from loguru import logger

import freight
from freight.config import HEARTBEAT_INTERVAL_S, settings
from freight.core.nodes import NODE_STATES, node_state
from freight.head.actors import ACTOR_STATES
from freight.observe.catalogue import Source
from freight.observe.exposition import FiguresCollector
from freight.observe.http import MetricsServer, loop_reader
from freight.observe.recorder import RECORDER, Recorder, Snapshot
from freight.protocol.generated import freight_pb2 as pb

if TYPE_CHECKING:
    from freight.head.control_store import ControlStore

SD_DIR = "prometheus"
SD_FILE = "file_sd.json"
ROLE_LABEL = "__freight_role"
KV_NAMESPACE = "freight"
KV_KEY = "metrics"  # {"metrics_address", "file_sd", "cluster_name"}, for `freight metrics`

JOB_STATES = ("RUNNING", "FINISHED", "FAILED")


def sd_path(session_dir: str) -> str:
    """Where the head keeps the cluster's Prometheus file-SD document."""
    return os.path.join(session_dir, SD_DIR, SD_FILE)


def _by_state(g: dict[Any, Any], name: str, baseline: tuple[str, ...], states: list[str]) -> None:
    counts = dict.fromkeys(baseline, 0)
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    for state, n in counts.items():
        g[(name, (state,))] = float(n)


class HeadMetrics:
    """Cluster-level figures of the head, and the file-SD document of the cluster's targets."""

    def __init__(
        self, store: ControlStore, session_dir: str, cluster: str, recorder: Recorder = RECORDER
    ) -> None:
        self.store = store
        self.session_dir = session_dir
        self.cluster = cluster
        self.rec = recorder
        self.address = ""  # host:port of the head's own /metrics, once it serves
        self.version = freight.__version__
        self.sd_document: list[dict[str, Any]] = []
        self._last_beat: dict[str, float] = {}
        self._sd_failed = False

    # ---- hooks called by the head's RPC handlers ---------------------------------------------

    def on_register(self, node: pb.NodeInfo) -> None:
        """Before RegisterNode: a known node id with a new agent start time is an agent restart."""
        known = self.store.get_node(node.node_id)
        if known is not None and known.start_time != node.start_time:
            self.rec.inc("freight_node_agent_restarts_total")
        self._last_beat.pop(node.node_id, None)

    def on_heartbeat(self, node_id: str) -> None:
        """An accepted heartbeat: record the time since the node's previous one."""
        now = time.monotonic()
        last = self._last_beat.get(node_id)
        self._last_beat[node_id] = now
        if last is not None:
            self.rec.observe("freight_node_heartbeat_lag_seconds", (), now - last)

    def nodes_changed(self) -> None:
        """A node joined, left or died: rewrite the file-SD document (atomically)."""
        alive = self.store.list_nodes()
        live_ids = {n.node_id for n in alive}
        for node_id in [n for n in self._last_beat if n not in live_ids]:
            del self._last_beat[node_id]
        groups: list[dict[str, Any]] = []
        if self.address:
            groups.append(
                {"targets": [self.address], "labels": {"cluster": self.cluster, ROLE_LABEL: "head"}}
            )
        for node in alive:
            if not node.metrics_address:
                continue
            labels = {
                "cluster": self.cluster,
                "node_id": node.node_id,
                "is_head_node": "true" if node.is_head_node else "false",
                ROLE_LABEL: "node",
            }
            groups.append({"targets": [node.metrics_address], "labels": labels})
        self.sd_document = groups  # replaced whole: the HTTP thread reads one reference
        path = sd_path(self.session_dir)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(groups, f, indent=1)
            os.replace(tmp, path)
        except OSError as exc:
            if not self._sd_failed:
                self._sd_failed = True
                logger.warning("could not write the Prometheus file-SD document {}: {}", path, exc)

    # ---- scrape ------------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """The head's figures, cumulative; runs on the head's event loop."""
        snap = self.rec.snapshot()
        c, g = snap["c"], snap["g"]
        store = self.store
        nodes = store.list_nodes(include_dead=True)
        states = [node_state(n.state, n.draining) for n in nodes]
        _by_state(g, "freight_nodes", NODE_STATES, states)
        now = time.time()
        ages = [now - n.last_heartbeat for n in nodes if n.state == "ALIVE"]
        g[("freight_node_heartbeat_age_max_seconds", ())] = max(0.0, *ages) if ages else 0.0
        late = max(ages, default=0.0) - HEARTBEAT_INTERVAL_S
        g[("freight_node_heartbeat_overdue_max_seconds", ())] = max(0.0, late)
        actors = store.list_actors(include_dead=True)
        _by_state(g, "freight_actors", ACTOR_STATES, [a.state for a in actors])
        _by_state(g, "freight_jobs", JOB_STATES, [j.state for j in store.list_jobs()])
        # No autoscaler exists yet: both directions are present, at 0.
        for direction in ("up", "down"):
            key = ("freight_autoscaler_scale_events_total", (direction,))
            c[key] = c.get(key, 0.0)
        g[("freight_build_info", (self.version,))] = 1.0
        return snap

    def serve(self, bind: str, port: int, host: str) -> MetricsServer:
        """Start ``/metrics`` and ``/sd`` (call on the head's event loop); record the address."""
        collector = FiguresCollector(
            Source.HEAD,
            loop_reader(asyncio.get_running_loop(), self.snapshot),
            lambda: self.cluster,
            top_n=max(1, settings.metrics_top_n),
        )
        server = MetricsServer([collector], bind=bind, port=port, sd=lambda: self.sd_document)
        server.start()
        self.address = server.address(host)
        info = {
            "metrics_address": self.address,
            "file_sd": sd_path(self.session_dir),
            "cluster_name": self.cluster,
        }
        self.store.kv_put(KV_NAMESPACE, KV_KEY, json.dumps(info).encode())
        self.nodes_changed()
        return server
