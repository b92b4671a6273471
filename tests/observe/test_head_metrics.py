"""The head's figures and the cluster's Prometheus service-discovery document."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from freight.head.control_store import ControlStore
from freight.head.metrics import ROLE_LABEL, HeadMetrics, sd_path
from freight.node.metrics import overdue
from freight.observe.recorder import Recorder
from freight.protocol.generated import freight_pb2 as pb


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ControlStore]:
    with ControlStore(tmp_path / "control.db") as s:
        yield s


def node(node_id: str, state: str = "ALIVE", metrics: str = "", head: bool = False, start=1.0):
    return pb.NodeInfo(
        node_id=node_id,
        state=state,
        metrics_address=metrics,
        is_head_node=head,
        start_time=start,
        last_heartbeat=0.0,
    )


def test_file_sd_lists_the_head_and_live_agents(store: ControlStore, tmp_path: Path) -> None:
    hm = HeadMetrics(store, str(tmp_path), "prod", Recorder())
    hm.address = "127.0.0.1:9000"
    store.upsert_node(node("a" * 32, metrics="127.0.0.1:9001", head=True))
    store.upsert_node(node("b" * 32, metrics="127.0.0.1:9002"))
    store.upsert_node(node("c" * 32, state="DEAD", metrics="127.0.0.1:9003"))
    store.upsert_node(node("d" * 32))  # an agent without a metrics endpoint
    hm.nodes_changed()
    doc = json.loads(Path(sd_path(str(tmp_path))).read_text())
    assert doc == [
        {"targets": ["127.0.0.1:9000"], "labels": {"cluster": "prod", ROLE_LABEL: "head"}},
        {
            "targets": ["127.0.0.1:9001"],
            "labels": {
                "cluster": "prod",
                "node_id": "a" * 32,
                "is_head_node": "true",
                ROLE_LABEL: "node",
            },
        },
        {
            "targets": ["127.0.0.1:9002"],
            "labels": {
                "cluster": "prod",
                "node_id": "b" * 32,
                "is_head_node": "false",
                ROLE_LABEL: "node",
            },
        },
    ]
    assert hm.sd_document == doc
    assert os.listdir(tmp_path / "prometheus") == ["file_sd.json"]  # no temporary file left
    # A node dies: the document is rewritten without it.
    store.upsert_node(node("b" * 32, state="DEAD", metrics="127.0.0.1:9002"))
    hm.nodes_changed()
    doc = json.loads(Path(sd_path(str(tmp_path))).read_text())
    assert [g["targets"] for g in doc] == [["127.0.0.1:9000"], ["127.0.0.1:9001"]]


def test_an_unwritable_sd_folder_is_logged_not_raised(store: ControlStore, tmp_path: Path) -> None:
    (tmp_path / "prometheus").write_text("a file where the folder should be")
    hm = HeadMetrics(store, str(tmp_path), "prod", Recorder())
    hm.address = "127.0.0.1:9000"
    logged: list[str] = []
    sink = logger.add(logged.append, level="WARNING", format="{message}")
    try:
        hm.nodes_changed()
        hm.nodes_changed()
    finally:
        logger.remove(sink)
    assert hm.sd_document[0]["targets"] == ["127.0.0.1:9000"]  # /sd still answers
    assert len(logged) == 1 and "file-SD document" in logged[0], logged


def test_agent_restart_is_a_known_node_with_a_new_start_time(
    store: ControlStore, tmp_path: Path
) -> None:
    rec = Recorder()
    hm = HeadMetrics(store, str(tmp_path), "prod", rec)
    key = ("freight_node_agent_restarts_total", ())
    hm.on_register(node("a" * 32, start=1.0))  # first registration
    store.upsert_node(node("a" * 32, start=1.0))
    hm.on_register(node("a" * 32, start=1.0))  # the same agent registering again
    assert rec.snapshot()["c"].get(key, 0) == 0
    hm.on_register(node("a" * 32, start=2.0))  # a new agent process under the same node id
    assert rec.snapshot()["c"][key] == 1


def test_heartbeat_lag_is_the_time_between_heartbeats(store: ControlStore, tmp_path: Path) -> None:
    rec = Recorder()
    hm = HeadMetrics(store, str(tmp_path), "prod", rec)
    hm.on_heartbeat("n1")
    assert rec.snapshot()["h"] == {}
    hm.on_heartbeat("n1")
    hm.on_heartbeat("n1")
    h = rec.snapshot()["h"][("freight_node_heartbeat_lag_seconds", ())]
    assert sum(h[:-1]) == 2
    hm.on_register(node("n1"))  # a registration starts the count again
    hm.on_heartbeat("n1")
    assert sum(rec.snapshot()["h"][("freight_node_heartbeat_lag_seconds", ())][:-1]) == 2


def test_snapshot_counts_by_state(store: ControlStore, tmp_path: Path) -> None:
    store.upsert_node(node("a" * 32))
    store.upsert_node(node("b" * 32, state="DEAD"))
    store.upsert_job(pb.JobInfo(job_id="00000001", state="RUNNING"))
    store.upsert_job(pb.JobInfo(job_id="00000002", state="FINISHED"))
    store.upsert_actor(pb.ActorInfo(actor_id="x", state="ALIVE", class_name="A"))
    hm = HeadMetrics(store, str(tmp_path), "prod", Recorder())
    snap = asyncio.run(hm.snapshot())
    g, c = snap["g"], snap["c"]
    assert g[("freight_nodes", ("ALIVE",))] == 1 and g[("freight_nodes", ("DEAD",))] == 1
    assert g[("freight_jobs", ("RUNNING",))] == 1 and g[("freight_jobs", ("FAILED",))] == 0
    assert g[("freight_actors", ("ALIVE",))] == 1 and g[("freight_actors", ("DEAD",))] == 0
    assert g[("freight_node_heartbeat_age_max_seconds", ())] > 0
    assert c[("freight_autoscaler_scale_events_total", ("up",))] == 0
    assert c[("freight_autoscaler_scale_events_total", ("down",))] == 0
    assert [k for k in g if k[0] == "freight_build_info"]


def test_heartbeat_overdue_is_the_age_beyond_the_interval(store: ControlStore, tmp_path) -> None:
    now = time.time()
    on_time = node("a" * 32)
    on_time.last_heartbeat = now - 0.5  # within the 1 s interval: not late
    store.upsert_node(on_time)
    hm = HeadMetrics(store, str(tmp_path), "prod", Recorder())
    g = asyncio.run(hm.snapshot())["g"]
    assert g[("freight_node_heartbeat_overdue_max_seconds", ())] == 0
    late = node("b" * 32)
    late.last_heartbeat = now - 7.0  # six seconds late
    store.upsert_node(late)
    dead = node("c" * 32, state="DEAD")
    dead.last_heartbeat = now - 100.0  # a dead node is not late
    store.upsert_node(dead)
    g = asyncio.run(hm.snapshot())["g"]
    assert g[("freight_node_heartbeat_overdue_max_seconds", ())] >= 6.0
    assert g[("freight_node_heartbeat_age_max_seconds", ())] >= 7.0


def test_an_agent_reports_its_own_heartbeat_overdue() -> None:
    assert overdue(100.0, now=100.9) == 0.0
    assert overdue(100.0, now=104.0) == 3.0
