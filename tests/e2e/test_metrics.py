"""Metrics end to end: a CLI cluster does known work; its endpoints must show exactly that.

The endpoints are scraped over HTTP and parsed with prometheus_client's parser; drivers are
separate processes (a fresh recorder each), connected with ``init(address=...)``. A real
Prometheus server scrapes the cluster with the generated configuration at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from freight import _launcher
from freight.observe.catalogue import (
    BOUNDED,
    BYTE_RESOURCES,
    CATALOGUE,
    PENDING_REASONS,
    SERIES_BUDGET,
    Source,
    Type,
)
from freight.observe.exposition import served_by, zero_series
from freight.testing import short_temp_dir
from freight.testing import wait_for_condition as wait_until

FREIGHT = str(Path(sys.executable).with_name("freight"))
CLUSTER = "metrics-e2e"
PRICE_CPU_HOUR = 3.6
PROMETHEUS = "/usr/bin/prometheus"


# ---- helpers ------------------------------------------------------------------------------------


def cli_env(temp_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), NO_COLOR="1", COLUMNS="200")
    for key in ("FREIGHT_TOKEN", "FREIGHT_ADDRESS", "FREIGHT_JOB_LABELS", "FREIGHT_METRICS_TOP_N"):
        env.pop(key, None)
    env.update(extra)
    return env


def freight_cli(temp_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FREIGHT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(temp_dir, **env),
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def cli_cluster(temp_dir: Path, *args: str, **env: str) -> Iterator[dict[str, Any]]:
    """``freight start --head`` with ``args``; ``freight stop`` (and no leftovers) afterwards."""
    proc = freight_cli(temp_dir, "start", "--head", "--port", "0", *args, **env)
    try:
        assert proc.returncode == 0, proc.stderr
        address = re.search(r"address:\s+(\S+)", proc.stdout)
        session = re.search(r"session dir:\s+(\S+)", proc.stdout)
        assert address and session, proc.stdout
        session_dir = Path(session.group(1))
        head = json.loads((session_dir / "head.json").read_text())
        yield {
            "temp_dir": temp_dir,
            "address": address.group(1),
            "session_dir": session_dir,
            "head_metrics": f"http://{head['metrics_address']}/metrics",
            "head_sd": f"http://{head['metrics_address']}/sd",
        }
    finally:
        freight_cli(temp_dir, "stop")
        prefix = str(temp_dir) + os.sep
        for p in psutil.process_iter(["cmdline"]):
            if any(a.startswith(prefix) for a in p.info["cmdline"] or ()):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def head_node(c: dict[str, Any]) -> tuple[str, str] | None:
    """(node id, /metrics URL) of the agent on the head node, once the SD document lists it."""
    for g in get_json(c["head_sd"]):
        if g["labels"].get("is_head_node") == "true":
            return g["labels"]["node_id"], f"http://{g['targets'][0]}/metrics"
    return None


LAST_SCRAPE: dict[str, list[Any]] = {}


def scrape(url: str) -> list[Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    LAST_SCRAPE[url] = samples
    return samples


def wait_figures(predicate: Any, timeout: float, what: str) -> Any:
    """wait_until for figures; on a timeout, the message shows the last scrape of each endpoint."""
    LAST_SCRAPE.clear()
    try:
        return wait_until(predicate, timeout, what)
    except TimeoutError as e:
        shown = {
            url: [(x.name, x.labels, x.value) for x in samples if not x.name.endswith("_bucket")]
            for url, samples in LAST_SCRAPE.items()
        }
        raise AssertionError(f"{e}; last scrapes: {shown}") from None


def value(samples: list[Any], metric: str, /, **labels: str) -> float:
    """The sum of the samples called ``metric`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples
        if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
    )


def run_driver(c: dict[str, Any], script: str, **env: str) -> str:
    """Run a driver program to completion; return its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        env=cli_env(c["temp_dir"], FREIGHT_ADDRESS=c["address"], **env),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def start_driver(
    c: dict[str, Any], script: str, out: Path, stdin: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """Start a driver program in the background; its output goes to ``out``."""
    with open(out, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)],
            stdin=stdin,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=cli_env(c["temp_dir"], FREIGHT_ADDRESS=c["address"], PYTHONUNBUFFERED="1"),
        )


def reached(url: str, metric: str, want: float, /, **labels: str) -> bool:
    return value(scrape(url), metric, **labels) == want


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with (
        short_temp_dir() as temp_dir,
        cli_cluster(
            temp_dir,
            "--num-cpus",
            "2",
            "--cluster-name",
            CLUSTER,
            FREIGHT_PRICE_CPU_HOUR=str(PRICE_CPU_HOUR),
            FREIGHT_PRICE_CURRENCY="EUR",
        ) as c,
    ):
        c["node_id"], c["node_metrics"] = wait_until(
            lambda: head_node(c), 30, "the head node's target"
        )
        yield c


# ---- every metric on its endpoint ---------------------------------------------------------------


def _families(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return {f.name: f for f in text_string_to_metric_families(r.read().decode())}


def test_every_catalogue_metric_is_on_its_endpoint_with_the_cluster_label(cluster) -> None:
    for source, url in (
        (Source.NODE, cluster["node_metrics"]),
        (Source.HEAD, cluster["head_metrics"]),
    ):
        fams = _families(url)
        for m in CATALOGUE:
            if m.source is source:
                family = m.name.removesuffix("_total") if m.type is Type.COUNTER else m.name
                assert family in fams, f"{m.name} is missing from {url}"
                assert fams[family].type == m.type.value
        samples = [s for f in fams.values() for s in f.samples]
        assert samples
        assert {s.labels.get("cluster") for s in samples} == {CLUSTER}, url
        assert value(samples, "freight_build_info") == 1


def test_declared_label_values_are_series_from_the_start(cluster) -> None:
    """Counters before their first event and gauges at 0 are series, on the live endpoints."""
    for source, url in (
        (Source.NODE, cluster["node_metrics"]),
        (Source.HEAD, cluster["head_metrics"]),
    ):
        samples = [s for f in _families(url).values() for s in f.samples]
        have = {(s.name, tuple(sorted(s.labels.items()))) for s in samples}
        for m in served_by(source):
            if not m.zero_filled() or any(x in BOUNDED for x in m.labels):
                continue
            series = m.name + ("_count" if m.type is Type.HISTOGRAM else "")
            for combo in zero_series(m, {}):
                labels = tuple(
                    sorted({"cluster": CLUSTER, **dict(zip(m.labels, combo, strict=True))}.items())
                )
                assert (series, labels) in have, f"{series}{dict(labels)} is missing from {url}"
    node = scrape(cluster["node_metrics"])
    assert value(node, "freight_memory_monitor_kills_total", kind="task") == 0


def test_resource_gauges_keep_bytes_and_counts_in_separate_metrics(cluster) -> None:
    """A series name holds one unit: CPU counts never share a metric with memory bytes."""
    node = scrape(cluster["node_metrics"])
    for name in ("freight_resources_capacity", "freight_resources_available"):
        counted = {s.labels["resource"] for s in node if s.name == name}
        in_bytes = {s.labels["resource"] for s in node if s.name == f"{name}_bytes"}
        assert "CPU" in counted, (name, counted)
        assert counted.isdisjoint(BYTE_RESOURCES), f"{name} mixes bytes in: {counted}"
        assert in_bytes == set(BYTE_RESOURCES), f"{name}_bytes: {in_bytes}"
    assert value(node, "freight_resources_capacity", resource="CPU") == 2
    assert value(node, "freight_resources_capacity_bytes", resource="memory") > 2**20
    assert value(node, "freight_resources_capacity_bytes", resource="object_store_memory") == (
        value(node, "freight_object_store_capacity_bytes")
    )


# ---- counts against work done -------------------------------------------------------------------

WORKLOAD = """
import time
import freight

freight.init()

@freight.remote(num_cpus=1)
class MCounter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n

@freight.remote
def m_square(i):
    time.sleep(0.002)
    if i % 10 == 0:
        raise ValueError(f"task {i} fails on purpose")
    return i * i

counter = MCounter.remote()
assert freight.get([counter.incr.remote() for _ in range(20)])[-1] == 20
refs = [m_square.remote(i) for i in range(500)]
failed = 0
for ref in refs:
    try:
        freight.get(ref)
    except Exception as e:
        assert "ValueError" in repr(e) or isinstance(e, ValueError), repr(e)
        failed += 1
print("failed", failed)
freight.shutdown()
"""


def test_task_counts_match_the_work_done(cluster) -> None:
    node, head = cluster["node_metrics"], cluster["head_metrics"]
    clean_before = value(scrape(node), "freight_driver_disconnects_total", clean="true")
    out = run_driver(cluster, WORKLOAD, FREIGHT_JOB_LABELS="team=ml,owner=alice")
    assert "failed 50" in out, out
    # The driver's final report and its workers' next reports reach the agent shortly after.
    wait_figures(
        lambda: (
            reached(node, "freight_tasks_started_total", 500, name="m_square")
            and reached(node, "freight_tasks_started_total", 20, name="MCounter.incr")
            and reached(node, "freight_driver_disconnects_total", clean_before + 1, clean="true")
        ),
        30,
        "the workload's figures on the node's /metrics",
    )
    s = scrape(node)
    sq = {"name": "m_square"}
    assert value(s, "freight_tasks_submitted_total", **sq) == 500
    assert value(s, "freight_tasks_started_total", **sq) == 500
    assert value(s, "freight_tasks_finished_total", **sq) == 500
    assert (
        value(
            s,
            "freight_tasks_finished_total",
            **sq,
            state="FINISHED",
            error_kind="none",
            error_type="",
        )
        == 450
    )
    assert (
        value(
            s,
            "freight_tasks_finished_total",
            **sq,
            state="FAILED",
            error_kind="application",
            error_type="ValueError",
        )
        == 50
    )
    assert value(s, "freight_task_retries_total", **sq) == 0
    for hist in (
        "freight_task_scheduling_latency_seconds",
        "freight_task_execution_latency_seconds",
    ):
        assert value(s, hist + "_count", **sq) == 500, hist
        assert value(s, hist + "_bucket", **sq, le="+Inf") == 500, hist
        assert value(s, hist + "_sum", **sq) > 0, hist
    # The task slept 2 ms: at least 2 ms of execution each (1 s in all).
    assert value(s, "freight_task_execution_latency_seconds_sum", **sq) >= 500 * 0.002
    calls = {"name": "MCounter.incr"}
    assert value(s, "freight_tasks_submitted_total", **calls) == 20
    assert value(s, "freight_tasks_finished_total", **calls, state="FINISHED") == 20
    # Cost: resource-seconds of the job's tasks and of its actor (1 CPU while it lived).
    cpu_seconds = value(
        s, "freight_job_resource_seconds_total", resource="CPU", team="ml", owner="alice"
    )
    cost = value(s, "freight_job_cost_total", team="ml", owner="alice")
    assert "Currency: EUR." in _families(cluster["node_metrics"])["freight_job_cost"].documentation
    assert cpu_seconds >= 500 * 0.002
    assert cost > 0
    assert cost == pytest.approx(cpu_seconds / 3600 * PRICE_CPU_HOUR, rel=1e-9)

    h = scrape(head)
    assert value(h, "freight_actors_created_total", class_name="MCounter") == 1
    # shutdown() finished the job, which killed its actor.
    wait_figures(
        lambda: reached(
            head, "freight_actor_deaths_total", 1, class_name="MCounter", cause="owner_died"
        ),
        30,
        "the actor's death on the head's /metrics",
    )
    h = scrape(head)
    assert value(h, "freight_head_scheduling_latency_seconds_count", kind="actor") >= 1
    assert value(h, "freight_jobs", state="FINISHED") >= 1
    assert value(h, "freight_grpc_request_seconds_count", method="CreateActor", code="OK") >= 1
    assert value(h, "freight_control_store_operation_seconds_count", operation="upsert_actor") >= 2
    assert value(h, "freight_node_heartbeat_lag_seconds_count") >= 1
    assert value(h, "freight_event_loop_lag_seconds_count", component="head") >= 1


def _workers(session_dir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if "freight.worker" in cmd and str(session_dir) in cmd and p.info["status"] != "zombie":
            found.append(p)
    return found


def test_the_toy_load_serves_far_fewer_series_than_the_budget(cluster) -> None:
    """After the workload above (one function, one actor class), count the series served."""
    for source, url in (
        (Source.NODE, cluster["node_metrics"]),
        (Source.HEAD, cluster["head_metrics"]),
    ):
        served = len(scrape(url))
        print(f"series on the {source.value} endpoint after a toy load: {served}")
        assert 0 < served <= SERIES_BUDGET[source]


def test_counts_of_workers_that_died_stay_and_replacements_count(cluster) -> None:
    node = cluster["node_metrics"]
    wait_figures(
        lambda: reached(node, "freight_tasks_started_total", 500, name="m_square"),
        30,
        "the workload of the previous test",
    )
    before = scrape(node)
    crashes = value(before, "freight_worker_crashes_total")
    restarts = value(before, "freight_worker_restarts_total")
    victims = _workers(cluster["session_dir"])
    assert victims, "the node has no worker processes"
    for p in victims:
        p.send_signal(signal.SIGKILL)
    wait_figures(
        lambda: reached(node, "freight_worker_crashes_total", crashes + len(victims)),
        30,
        "the killed workers counted as crashes",
    )
    after = scrape(node)
    assert value(after, "freight_worker_crashes_total", cause="sigkill") >= len(victims)
    for name in (
        "freight_tasks_started_total",
        "freight_tasks_submitted_total",
        "freight_tasks_finished_total",
        "freight_task_execution_latency_seconds_count",
        "freight_task_execution_latency_seconds_sum",
    ):
        assert value(after, name, name="m_square") == value(before, name, name="m_square"), name
    # The next work needs workers again: they replace the ones that crashed.
    out = run_driver(
        cluster,
        """
        import freight
        freight.init()

        @freight.remote
        def m_after():
            return 7

        print("got", freight.get(m_after.remote()))
        freight.shutdown()
        """,
    )
    assert "got 7" in out
    s = scrape(node)
    replaced = value(s, "freight_worker_restarts_total") - restarts
    assert 1 <= replaced <= len(victims)
    assert (
        value(s, "freight_worker_starts_total") >= value(before, "freight_worker_starts_total") + 1
    )


def test_a_worker_killed_under_its_task_is_a_system_failure_and_a_crash(cluster, tmp_path) -> None:
    node = cluster["node_metrics"]
    crashes = value(scrape(node), "freight_worker_crashes_total", cause="sigkill")
    pid_file = tmp_path / "pid"
    driver = start_driver(
        cluster,
        f"""
        import os, time
        import freight
        freight.init()

        @freight.remote(max_retries=0)
        def m_victim(path):
            with open(path + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(path + ".tmp", path)
            time.sleep(300)

        try:
            freight.get(m_victim.remote({str(pid_file)!r}))
            print("no error")
        except Exception as e:
            print("error", type(e).__name__)
        freight.shutdown()
        """,
        tmp_path / "out",
    )
    try:
        wait_until(pid_file.exists, 60, "the task to write its worker's pid")
        # Once the worker has reported the start, its count must survive its death.
        wait_figures(
            lambda: reached(node, "freight_tasks_started_total", 1, name="m_victim"),
            30,
            "the worker's report of the task's start",
        )
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        assert driver.wait(timeout=60) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert "error WorkerCrashedError" in (tmp_path / "out").read_text()
    labels = {"name": "m_victim", "state": "FAILED", "error_kind": "system"}
    wait_figures(
        lambda: (
            reached(node, "freight_tasks_finished_total", 1, **labels)
            and value(scrape(node), "freight_worker_crashes_total", cause="sigkill") > crashes
        ),
        30,
        "the crash on the node's /metrics",
    )
    s = scrape(node)
    assert value(s, "freight_worker_crashes_total", cause="sigkill") == crashes + 1, [
        x for x in s if "worker" in x.name
    ]
    assert value(s, "freight_tasks_finished_total", **labels, error_type="WorkerCrashedError") == 1
    assert value(s, "freight_tasks_started_total", name="m_victim") == 1


def test_a_killed_driver_is_an_unclean_disconnect(cluster, tmp_path) -> None:
    node = cluster["node_metrics"]
    before = scrape(node)
    unclean = value(before, "freight_driver_disconnects_total", clean="false")
    clean = value(before, "freight_driver_disconnects_total", clean="true")
    out = tmp_path / "out"
    driver = start_driver(
        cluster,
        """
        import threading
        import freight
        freight.init()

        @freight.remote
        def m_once():
            return 1

        print("ready", freight.get(m_once.remote()))
        threading.Event().wait()
        """,
        out,
    )
    try:
        wait_until(lambda: "ready 1" in out.read_text(), 60, "the driver to run its task")
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    wait_figures(
        lambda: reached(node, "freight_driver_disconnects_total", unclean + 1, clean="false"),
        30,
        "the unclean disconnect",
    )
    assert value(scrape(node), "freight_driver_disconnects_total", clean="true") == clean


def test_refused_connections_are_counted_per_plane(cluster) -> None:
    import grpc

    from freight.protocol import frames
    from freight.protocol.generated import freight_pb2 as pb
    from freight.protocol.generated import freight_pb2_grpc as pb_grpc
    from freight.util.grpc_auth import sync_channel

    node = cluster["node_metrics"]
    before = scrape(node)
    info = json.loads((cluster["session_dir"] / "nodes" / f"{cluster['node_id']}.json").read_text())
    channel = sync_channel(info["agent_address"], "not-the-token")
    try:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.NodeAgentServiceStub(channel).GetNodeStats(pb.GetNodeStatsRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        channel.close()
    fs = frames.connect_unix(info["data_socket"], "not-the-token", ("driver", "x"))
    try:
        assert fs.recv() is None  # the agent hangs up without a word
    except OSError:
        pass
    finally:
        fs.close()
    for plane in ("grpc", "data"):
        want = value(before, "freight_auth_refused_total", plane=plane) + 1
        wait_figures(
            lambda plane=plane, want=want: reached(
                node, "freight_auth_refused_total", want, plane=plane
            ),
            30,
            f"the {plane}-plane refusal",
        )


def test_unknown_paths_get_a_clear_404(cluster) -> None:
    url = cluster["head_metrics"].replace("/metrics", "/nothing-here")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 404
    assert "/metrics and /sd" in e.value.read().decode()
    assert scrape(cluster["head_metrics"])  # still serving


def test_live_gauges_follow_what_the_cluster_holds(cluster, tmp_path) -> None:
    node, head = cluster["node_metrics"], cluster["head_metrics"]
    created = value(scrape(node), "freight_objects_created_total", where="shared_memory")
    out = tmp_path / "out"
    driver = start_driver(
        cluster,
        """
        import gc, sys
        import freight
        freight.init()

        @freight.remote(num_cpus=1)
        class MHolder:
            def ping(self):
                return "pong"

        @freight.remote(resources={"unobtainium": 1})
        def m_never():
            return 0

        holder = MHolder.remote()
        assert freight.get(holder.ping.remote()) == "pong"
        big = freight.put(bytes(3 * 1024 * 1024))
        pending = m_never.remote()
        gc.collect()
        print("holding")
        sys.stdin.read()
        freight.shutdown()
        """,
        out,
        stdin=subprocess.PIPE,
    )
    try:
        wait_until(lambda: "holding" in out.read_text(), 60, "the driver to hold its objects")

        def holding(s: list[Any]) -> bool:
            return (
                value(s, "freight_workers", state="ACTOR") == 1
                and value(s, "freight_object_store_objects", state="pinned_in_memory") == 1
                and value(s, "freight_tasks", state="PENDING_NODE_ASSIGNMENT") == 1
                and value(s, "freight_gc_pause_seconds_count") >= 1
            )

        wait_figures(lambda: holding(scrape(node)), 30, "the driver's holdings on /metrics")
        s = scrape(node)
        assert value(s, "freight_resources_capacity", resource="CPU") == 2
        assert value(s, "freight_resources_available", resource="CPU") == 1  # the actor's CPU
        assert value(s, "freight_object_store_bytes", state="pinned_in_memory") >= 3 * 1024 * 1024
        assert value(s, "freight_object_store_in_memory_bytes") >= 3 * 1024 * 1024
        assert value(s, "freight_object_store_in_memory_objects") == 1
        assert value(s, "freight_object_store_bytes", state="spilled") == 0
        # the states partition the store: their sum counts the one object once
        assert value(s, "freight_object_store_objects") == 1
        assert value(s, "freight_object_store_bytes") == value(
            s, "freight_object_store_in_memory_bytes"
        ) + value(s, "freight_object_store_bytes", state="spilled")
        capacity = value(s, "freight_object_store_capacity_bytes")
        assert capacity == value(
            s, "freight_resources_capacity_bytes", resource="object_store_memory"
        )
        assert value(s, "freight_objects_created_total", where="shared_memory") == created + 1
        assert value(s, "freight_queue_depth", reason="infeasible") == 1
        h = scrape(head)
        assert value(h, "freight_actors", state="ALIVE") == 1
        assert value(h, "freight_nodes", state="ALIVE") == 1
        assert 0 <= value(h, "freight_node_heartbeat_age_max_seconds") < 30
        # lag beyond the 1 s interval: the head and the agent both see this node on time
        assert 0 <= value(h, "freight_node_heartbeat_overdue_max_seconds") < 30
        assert 0 <= value(s, "freight_node_heartbeat_overdue_seconds") < 30
    finally:
        assert driver.stdin is not None
        driver.stdin.close()  # the driver shuts down
        try:
            driver.wait(timeout=60)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    assert driver.returncode == 0, out.read_text()[-3000:]
    # The driver is gone: its object is freed, its actor's worker exits, its gauges go.
    wait_figures(
        lambda: (
            reached(node, "freight_object_store_in_memory_objects", 0)
            and reached(node, "freight_workers", 0, state="ACTOR")
            and reached(node, "freight_tasks", 0, state="PENDING_NODE_ASSIGNMENT")
        ),
        30,
        "the node's gauges after the driver exited",
    )


# ---- service discovery --------------------------------------------------------------------------


def _sd_file(c: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads((c["session_dir"] / "prometheus" / "file_sd.json").read_text())


def test_file_sd_lists_the_head_and_every_agent_and_follows_changes(cluster) -> None:
    from freight.client.head_client import HeadClient
    from freight.client.head_client import pb_module as pb
    from freight.util.grpc_auth import read_token

    session = cluster["session_dir"]
    head_info = json.loads((session / "head.json").read_text())
    doc = _sd_file(cluster)
    assert doc == get_json(cluster["head_sd"])
    roles = {g["labels"]["__freight_role"]: g for g in doc}
    assert roles["head"]["targets"] == [head_info["metrics_address"]]
    assert roles["head"]["labels"]["cluster"] == CLUSTER
    client = HeadClient(cluster["address"], read_token(str(session)))
    try:
        nodes = client.call("ListNodes", pb.ListNodesRequest()).nodes
    finally:
        client.close()
    assert len(nodes) == 1 and nodes[0].metrics_address
    assert [g for g in doc if g["labels"]["__freight_role"] == "node"] == [
        {
            "targets": [nodes[0].metrics_address],
            "labels": {
                "cluster": CLUSTER,
                "node_id": nodes[0].node_id,
                "is_head_node": "true",
                "__freight_role": "node",
            },
        }
    ]
    out = freight_cli(cluster["temp_dir"], "metrics", "targets", "--address", cluster["address"])
    assert out.returncode == 0, out.stderr
    assert head_info["metrics_address"] in out.stdout and nodes[0].metrics_address in out.stdout
    assert "freight-head" in out.stdout and "freight-nodes" in out.stdout

    # A second node joins: it is listed. Its agent is killed and restarted under the same node
    # id: the head counts an agent restart. It stops: it is no longer listed.
    head = cluster["head_metrics"]
    agent_restarts = value(scrape(head), "freight_node_agent_restarts_total")
    env = dict(os.environ)
    proc, node_id = _launcher.start_agent(
        str(session), cluster["address"], num_cpus=1, head_node=False
    )
    try:
        wait_until(lambda: len(_sd_file(cluster)) == 3, 30, "the new node in the SD document")
        second = next(g for g in _sd_file(cluster) if g["labels"].get("node_id") == node_id)
        assert second["labels"]["is_head_node"] == "false"
        assert scrape(f"http://{second['targets'][0]}/metrics")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc, _ = _launcher.start_agent(
            str(session), cluster["address"], num_cpus=1, head_node=False, node_id=node_id
        )
        wait_figures(
            lambda: reached(head, "freight_node_agent_restarts_total", agent_restarts + 1),
            30,
            "the agent restart on the head's /metrics",
        )
        assert len(_sd_file(cluster)) == 3
    finally:
        _launcher.stop_processes([proc])
    assert env == dict(os.environ)
    wait_until(lambda: len(_sd_file(cluster)) == 2, 30, "the node gone from the SD document")
    assert get_json(cluster["head_sd"]) == _sd_file(cluster)
    wait_figures(lambda: reached(head, "freight_nodes", 1, state="DEAD"), 30, "a DEAD node")


def test_prometheus_config_is_valid_yaml(cluster, tmp_path) -> None:
    out = freight_cli(
        cluster["temp_dir"], "metrics", "prometheus-config", "--address", cluster["address"]
    )
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"freight-head", "freight-nodes"}
    files = jobs["freight-nodes"]["file_sd_configs"][0]["files"]
    assert files == [str(cluster["session_dir"] / "prometheus" / "file_sd.json")]
    out = freight_cli(
        cluster["temp_dir"],
        "metrics",
        "prometheus-config",
        "--http-sd",
        "--address",
        cluster["address"],
    )
    assert out.returncode == 0, out.stderr
    url = yaml.safe_load(out.stdout)["scrape_configs"][0]["http_sd_configs"][0]["url"]
    assert get_json(url) == _sd_file(cluster)
    out = freight_cli(
        cluster["temp_dir"], "metrics", "prometheus-config", "--scrape-interval", "soon"
    )
    assert out.returncode != 0
    assert "not a Prometheus duration" in out.stderr and "Traceback" not in out.stderr


# ---- a real Prometheus server -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        data = get_json(url)
    except OSError:
        return []  # not listening yet
    return data["data"]["result"] if data.get("status") == "success" else []


def test_a_real_prometheus_scrapes_the_cluster(cluster, tmp_path) -> None:
    if not os.access(PROMETHEUS, os.X_OK):
        reason = f"{PROMETHEUS} is not installed (scripts/install-system-deps.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    config = tmp_path / "prometheus.yml"
    out = freight_cli(
        cluster["temp_dir"],
        "metrics",
        "prometheus-config",
        "--address",
        cluster["address"],
        "--scrape-interval",
        "1s",
        "--file",
        str(config),
    )
    assert out.returncode == 0, out.stderr
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run(
            [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
    port = _free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    prom = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def both_up() -> bool:
            if prom.poll() is not None:
                pytest.fail((tmp_path / "prometheus.log").read_text()[-3000:])
            up = _query(port, "up")
            return sorted((r["metric"]["job"], r["value"][1]) for r in up) == [
                ("freight-head", "1"),
                ("freight-nodes", "1"),
            ]

        wait_until(both_up, 60, "Prometheus to scrape both freight targets (up == 1)")
        series = wait_until(
            lambda: _query(port, 'freight_tasks_submitted_total{name="m_square"}'),
            60,
            "freight_tasks_submitted_total in Prometheus",
        )
        assert float(series[0]["value"][1]) == 500
        labels = series[0]["metric"]
        assert labels["cluster"] == CLUSTER and labels["job"] == "freight-nodes"
        assert labels["is_head_node"] == "true" and labels["node_id"]
        head = _query(port, "freight_nodes")
        assert head and all(r["metric"]["job"] == "freight-head" for r in head)
        # the queries alerting rules make work as written: a 200 ms SLO counts an exact
        # bucket, counters without events exist at 0, the store's states add up once
        slo = _query(
            port, 'freight_task_scheduling_latency_seconds_bucket{name="m_square",le="0.2"}'
        )
        assert slo and 0 <= float(slo[0]["value"][1]) <= 500
        kills = _query(port, "sum by (cluster) (freight_memory_monitor_kills_total)")
        assert [float(r["value"][1]) for r in kills] == [0.0]
        reasons = _query(port, "freight_queue_depth")
        assert {r["metric"]["reason"] for r in reasons} == set(PENDING_REASONS)
        store = _query(
            port,
            "sum(freight_object_store_bytes) - sum(freight_object_store_in_memory_bytes)"
            ' - sum(freight_object_store_bytes{state="spilled"})',
        )
        assert [float(r["value"][1]) for r in store] == [0.0]
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        log.close()


# ---- top-N folding on a cluster of its own -------------------------------------------------------


def test_names_beyond_top_n_fold_into_other_on_the_node() -> None:
    with (
        short_temp_dir() as temp_dir,
        cli_cluster(temp_dir, "--num-cpus", "1", FREIGHT_METRICS_TOP_N="3") as c,
    ):
        _, node = wait_until(lambda: head_node(c), 30, "the head node's target")
        # The driver keeps every name (its own top N is the default); the node keeps three.
        out = run_driver(
            c,
            """
            import freight
            freight.init()
            fns = []
            for i in range(5):
                def f(i=i):
                    return i
                f.__name__ = f.__qualname__ = f"m_fn{i}"
                fns.append(freight.remote(f))
            print("sum", sum(freight.get([fn.remote() for fn in fns])))
            freight.shutdown()
            """,
        )
        assert "sum 10" in out, out
        wait_figures(
            lambda: (
                reached(node, "freight_tasks_submitted_total", 5)
                and reached(node, "freight_tasks_started_total", 5)
            ),
            30,
            "the five tasks on the node's /metrics",
        )
        s = scrape(node)
        submitted = {
            x.labels["name"]: x.value for x in s if x.name == "freight_tasks_submitted_total"
        }
        kept = set(submitted) - {"other"}
        assert len(kept) == 3 and kept <= {f"m_fn{i}" for i in range(5)}, submitted
        assert submitted["other"] == 2
        for metric in ("freight_tasks_started_total", "freight_tasks_finished_total"):
            names = {x.labels["name"] for x in s if x.name == metric}
            assert names <= kept | {"other"}, (metric, names)
        assert value(s, "freight_telemetry_dropped_total", kind="label_values") == 2


def test_a_bad_metrics_port_is_refused_before_anything_starts() -> None:
    with short_temp_dir() as temp_dir:
        proc = freight_cli(temp_dir, "start", "--head", "--port", "0", "--metrics-port", "70000")
        assert proc.returncode != 0
        assert "--metrics-port must be a port number" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert not list(Path(temp_dir).glob("session_*"))
