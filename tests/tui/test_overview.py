"""The inspector's Overview (`:overview`, `freight top overview`) driven by Textual's Pilot
against a real cluster of two nodes and a real Alertmanager: every node with its meters, the
sparklines after tasks run, a firing alert, the newest events, an unreachable Alertmanager named
while the rest keeps working, Enter on a node and esc back. Then the arithmetic on its own:
counter increases across resets, quantiles from buckets, error budget left, threshold colours,
and the SLOs agreeing with the shipped alert rules."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pilot import app_for, run, until
from textual.pilot import Pilot
from textual.widgets import DataTable, Sparkline

import freight
import freight.actions
from freight.cli.top_cmd import add_parsers
from freight.testing import Cluster, connected_cluster, wait_for_condition
from freight.tui import overview as ov
from freight.tui.app import HelpScreen, TopApp, View
from freight.tui.commands import CommandError, parse_command

ROOT = Path(__file__).resolve().parents[2]


@freight.remote
def ov_work(x: int) -> int:
    return x + 1


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    env = {"FREIGHT_HEALTH_CHECK_PERIOD_S": "0.3", "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "2"}
    with connected_cluster({"num_cpus": 2}, {"num_cpus": 1, "num_gpus": 1}, env=env) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Alertmanager (Debian's prometheus-alertmanager) with a config that notifies no
    one: alerts are posted to its API as Prometheus would."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        reason = (
            "prometheus-alertmanager is not installed (scripts/install-system-deps.sh installs it)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("alertmanager")
    config = tmp / "alertmanager.yml"
    config.write_text(
        yaml.safe_dump({"route": {"receiver": "none"}, "receivers": [{"name": "none"}]})
    )
    url = f"http://127.0.0.1:{_free_port()}"
    log = open(tmp / "alertmanager.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for_condition(ready, 30, "Alertmanager ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _post_alert(url: str, name: str) -> None:
    alert = {
        "labels": {"alertname": name, "severity": "critical", "cluster": "c"},
        "annotations": {"summary": f"{name} is firing."},
    }
    req = urllib.request.Request(
        f"{url}/api/v2/alerts",
        data=json.dumps([alert]).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def _screen(app: TopApp) -> ov.OverviewScreen:
    assert isinstance(app.screen, ov.OverviewScreen)
    return app.screen


def _cell_text(table: DataTable[Any], key: str, column: int) -> str:
    return str(table.get_cell(key, str(column)))


def test_the_overview_shows_nodes_rates_slos_alerts_and_events(
    cluster: Cluster, alertmanager: str
) -> None:
    node_ids = {n["node_id"] for n in freight.state.list_nodes()}
    assert len(node_ids) == 2
    _post_alert(alertmanager, "OverviewTestAlert")

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: isinstance(app.screen, ov.OverviewScreen), "the overview")
        screen = _screen(app)
        table = screen.query_one("#ov-nodes", DataTable)
        await until(pilot, lambda: set(screen.shown) == node_ids, "every node in the table")
        await until(
            pilot,
            lambda: all(n.memory_total > 0 for n in screen.last.nodes),
            "the nodes' memory, from their agents",
        )
        for n in screen.last.nodes:
            assert n.store_total > 0 and n.cpu_total in (1.0, 2.0) and n.state == "ALIVE"
            assert 0 < n.memory_used <= n.memory_total
            for column in (3, 5, 6):  # CPU, memory, object store: a bar and a percentage
                assert "%" in _cell_text(table, n.node_id, column)
            gpu = _cell_text(table, n.node_id, 4)
            assert ("%" in gpu) == (n.gpu_total == 1.0), gpu
        # A firing alert from the real Alertmanager, and the newest events.
        await until(
            pilot, lambda: any(a.name == "OverviewTestAlert" for a in screen.last.alerts), "alert"
        )
        alerts = str(screen.query_one("#ov-alerts").render())
        assert "OverviewTestAlert" in alerts and "Alerts firing: 1" in alerts
        await until(pilot, lambda: screen.last.events, "the newest events")
        assert any(
            e.kind == "NODE_ADDED" or "node" in e.message.lower() for e in screen.last.events
        )
        assert "Recent events" in str(screen.query_one("#ov-events").render())
        # Tasks run: the throughput sparkline gets values above zero; the SLOs, no Prometheus
        # here, are the counters' since start.
        await until(pilot, lambda: screen.last.scrapes >= 2, "two scrapes")
        assert freight.get([ov_work.remote(i) for i in range(20)]) == list(range(1, 21))
        await until(pilot, lambda: any(v > 0 for v in screen.last.throughput), "a throughput")
        spark = screen.query_one("#ov-throughput", Sparkline)
        assert spark.data is not None and max(spark.data) > 0
        assert screen.last.slo_basis.startswith("since start, no Prometheus")
        task_slo = next(s for s in screen.last.slos if s.name == "task_system_errors")
        assert task_slo.bad_ratio == 0.0 and task_slo.budget_left == 1.0
        assert "since start, no Prometheus" in str(screen.query_one("#ov-slo").render())
        # Enter on a node: the nodes view on it; esc comes back to the overview, esc again
        # to the nodes view below it.
        table.focus()
        table.move_cursor(row=0)
        first = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, ov.OverviewScreen), "the jump")
        assert app.view == View("nodes", (f"node_id={first}",))
        await until(pilot, lambda: set(app.shown) == {first}, "the node alone")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ov.OverviewScreen), "overview again")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ov.OverviewScreen), "esc")
        assert app.view.kind == "nodes"
        await pilot.press("q")

    app = app_for(cluster, View("overview"), alertmanager=alertmanager)
    run(app, body)
    assert app.return_code == 0


def test_a_draining_node_shows_as_draining(cluster: Cluster) -> None:
    other = next(n["node_id"] for n in freight.state.list_nodes() if not n["is_head_node"])

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: isinstance(app.screen, ov.OverviewScreen), "the overview")
        screen = _screen(app)
        table = screen.query_one("#ov-nodes", DataTable)
        await until(pilot, lambda: other in screen.shown, "the node")
        assert _cell_text(table, other, 2) == "ALIVE"
        freight.actions.drain_node(other, reason="overview test")
        try:
            await until(pilot, lambda: _cell_text(table, other, 2) == "DRAINING", "DRAINING")
            assert table.get_cell(other, "2").style == "yellow"
        finally:
            freight.actions.undrain_node(other, reason="overview test")
        await until(pilot, lambda: _cell_text(table, other, 2) == "ALIVE", "ALIVE again")

    run(app_for(cluster, View("overview")), body)
    wait_for_condition(
        lambda: not any(t.name.startswith("overview-") for t in threading.enumerate()),
        30,
        "the overview's threads to end with the app",
    )


def test_the_table_keys_do_not_act_on_the_rows_under_the_overview(cluster: Cluster) -> None:
    """The overview opens over the nodes view: x (drain), space (mark), a jump or l (logs)
    pressed there must neither act on the hidden table's row nor be offered in the footer."""

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: isinstance(app.screen, ov.OverviewScreen), "the overview")
        await until(pilot, lambda: len(app.shown) == 2, "the nodes view below, listed")
        offered = {b.binding.action for b in app.screen.active_bindings.values()}
        assert not {a for a in offered if a.startswith(("act", "jump", "toggle_mark", "logs"))}
        for key in ("x", "space", "w", "l", "t"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, ov.OverviewScreen), key
        assert not app.marks
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ov.OverviewScreen), "esc")
        offered = {b.binding.action for b in app.screen.active_bindings.values()}
        assert "act('drain_nodes')" in offered and "toggle_mark" in offered

    run(app_for(cluster, View("overview")), body)
    assert all(n["state"] == "ALIVE" for n in freight.state.list_nodes())


def test_an_unreachable_alertmanager_is_named_and_the_rest_still_shows(cluster: Cluster) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: "tasks" in app.status_text(), "the tasks view")
        await pilot.press("colon")
        await until(pilot, lambda: app.prompt_mode == ":", "the prompt")
        app.query_one("#prompt").value = "ov"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ov.OverviewScreen), "the overview")
        screen = _screen(app)
        await until(pilot, lambda: "unreachable" in screen.last.alerts_note, "the note")
        assert dead in screen.last.alerts_note
        assert dead in str(screen.query_one("#ov-alerts").render())
        await until(pilot, lambda: len(screen.shown) == 2 and screen.last.events, "the rest")
        await until(pilot, lambda: screen.last.slos, "the SLOs")
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        assert ":overview" in str(app.screen.query_one("#help").render())
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ov.OverviewScreen), "help closed")
        await pilot.press("colon")  # the prompt of the view below, the overview closed
        await until(pilot, lambda: app.prompt_mode == ":", "the prompt")
        assert not isinstance(app.screen, ov.OverviewScreen)
        app.query_one("#prompt").value = "overview"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ov.OverviewScreen), "the overview")
        await pilot.press("escape")  # back to the view it was opened from
        await until(pilot, lambda: not isinstance(app.screen, ov.OverviewScreen), "esc")
        assert app.view == View("tasks")

    run(app_for(cluster, alertmanager=dead), body)


def test_a_lost_head_shows_as_stale_and_the_overview_recovers(cluster: Cluster) -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: isinstance(app.screen, ov.OverviewScreen), "the overview")
        screen = _screen(app)
        status = screen.query_one("#ov-status")
        await until(pilot, lambda: len(screen.shown) == 2, "the nodes")
        await asyncio.to_thread(cluster.kill_head)
        await until(pilot, lambda: screen.last.stale_since is not None, "the stale marker")
        assert "STALE since" in str(status.render()) and status.has_class("stale")
        assert len(screen.shown) == 2  # the nodes stay, as last seen
        # From this (the main) thread: the head dies with the thread that started it, and the
        # later tests of this module use it.
        cluster.restart_head()
        await until(pilot, lambda: screen.last.stale_since is None, "the marker cleared")
        assert not status.has_class("stale")
        await until(pilot, lambda: len(screen.shown) == 2, "the nodes listed again")

    run(app_for(cluster, View("overview")), body)


# -- without a cluster ------------------------------------------------------------------------


def test_overview_commands_and_the_alertmanager_option() -> None:
    assert parse_command("overview").kind == parse_command("ov").kind == "overview"
    assert parse_command("o").kind == "objects"
    with pytest.raises(CommandError, match="the overview takes no filters"):
        parse_command("overview state=ALIVE")
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    args = parser.parse_args(["top", "overview", "--alertmanager", "http://127.0.0.1:9093/"])
    assert args.view == "overview" and args.alertmanager == "http://127.0.0.1:9093"
    assert parser.parse_args(["top"]).alertmanager == ""
    with pytest.raises(SystemExit):
        parser.parse_args(["top", "--alertmanager", "127.0.0.1:9093"])


EXPOSITION = """\
# HELP freight_tasks_started_total Task attempts that began to run on a worker.
# TYPE freight_tasks_started_total counter
freight_tasks_started_total{cluster="c",name="f"} 1000
# HELP freight_tasks_finished_total Tasks that reached a final state.
# TYPE freight_tasks_finished_total counter
freight_tasks_finished_total{cluster="c",name="f",state="FINISHED",error_kind="none",error_type=""} 90
freight_tasks_finished_total{cluster="c",name="f",state="FAILED",error_kind="application",error_type="E"} 6
freight_tasks_finished_total{cluster="c",name="f",state="FAILED",error_kind="system",error_type="W"} 2
freight_tasks_finished_total{cluster="c",name="f",state="CANCELLED",error_kind="cancelled",error_type=""} 2
# TYPE freight_task_scheduling_latency_seconds histogram
freight_task_scheduling_latency_seconds_bucket{cluster="c",name="f",le="0.1"} 50
freight_task_scheduling_latency_seconds_bucket{cluster="c",name="f",le="0.2"} 90
freight_task_scheduling_latency_seconds_bucket{cluster="c",name="f",le="1.0"} 100
freight_task_scheduling_latency_seconds_bucket{cluster="c",name="f",le="+Inf"} 100
freight_task_scheduling_latency_seconds_count{cluster="c",name="f"} 100
freight_task_scheduling_latency_seconds_sum{cluster="c",name="f"} 12.5
"""


def test_an_overview_goes_through_json_and_back() -> None:
    o = ov.Overview(
        nodes=[ov.meters({"node_id": "n1", "state": "ALIVE", "resources_total": {"CPU": 2.0}})],
        throughput=[1.0, 2.5],
        slos=[ov.SloFigure("head_unavailable", "head availability", 0.999, 0.0, 1.0)],
        alerts=ov.alert_rows([{"labels": {"alertname": "A", "severity": "critical"}}]),
        events=[ov.EventRow(1.5, "INFO", "NODE_JOINED", "node joined")],
        alerts_note="no Alertmanager",
    )
    assert ov.Overview.from_dict(json.loads(json.dumps(o.to_dict()))) == o


def test_counters_parse_and_increase_across_a_reset() -> None:
    c = ov.parse_counts(EXPOSITION)
    assert (c.finished, c.failed, c.system_errors, c.judged) == (100, 8, 2, 98)
    assert c.scheduled == 100 and c.scheduled_fast == 90
    assert c.buckets == {0.1: 50, 0.2: 90, 1.0: 100, math.inf: 100}
    later = ov.Counts(finished=130, failed=9, system_errors=2, judged=128, scheduled=130)
    later.buckets = {0.1: 70, 0.2: 120, 1.0: 130, math.inf: 130}
    inc = ov.increase(c, later)
    assert (inc.finished, inc.failed, inc.scheduled) == (30, 1, 30)
    assert inc.buckets == {0.1: 20, 0.2: 30, 1.0: 30, math.inf: 30}
    # The agent restarted: its counters start again from zero, and all they hold is new.
    restarted = ov.Counts(finished=5, failed=1, judged=5, scheduled=5, buckets={math.inf: 5})
    inc = ov.increase(c, restarted)
    assert (inc.finished, inc.failed, inc.scheduled, inc.buckets) == (5, 1, 5, {math.inf: 5})
    assert ov.increase(None, c).finished == 0  # a new endpoint: nothing known to be new
    both = ov.add([c, restarted])
    assert both.finished == 105 and both.buckets[math.inf] == 105
    rates = ov.Rates()
    rates.add(1000.0, 2.0, ov.increase(c, later))
    assert rates.points[-1][1:3] == (15.0, 0.5)
    rates.add(1000.0 + ov.HISTORY_S + 1, 2.0, ov.Counts())
    assert len(rates.points) == 1  # older than the sparklines' ten minutes: gone


def test_prometheus_history_merges_by_time_and_comes_before_the_live_points() -> None:
    series = [
        [[100, "2"], [105, "3"]],  # finished/s
        [[105, "0.5"]],  # failed/s: no series at 100
        [[100, "NaN"], [105, "0.2"]],  # p95: nothing scheduled at 100
        [],  # p50: no answer
    ]
    history = ov.merge_history(series)
    assert history == [(100.0, 2.0, 0.0, None, None), (105.0, 3.0, 0.5, 0.2, None)]
    rates = ov.Rates()
    rates.add(106.0, 1.0, ov.Counts(finished=4))
    rates.seed([*history, (107.0, 9.0, 0.0, None, None)])  # not older than ours: left out
    assert [p[0] for p in rates.points] == [100.0, 105.0, 106.0]


def test_quantiles_from_buckets() -> None:
    buckets = {0.1: 50.0, 0.2: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert ov.quantile(0.5, buckets) == pytest.approx(0.1)
    assert ov.quantile(0.7, buckets) == pytest.approx(0.15)  # linear within (0.1, 0.2]
    assert ov.quantile(0.95, buckets) == pytest.approx(0.6)
    assert ov.quantile(0.99, {0.1: 1.0, math.inf: 10.0}) == 0.1  # the highest finite bound
    assert ov.quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert ov.quantile(0.5, {}) is None


def test_error_budget_left_and_the_since_start_ratios() -> None:
    assert ov.budget_left(0.0, 0.999) == 1.0
    assert ov.budget_left(0.0005, 0.999) == pytest.approx(0.5)
    assert ov.budget_left(0.001, 0.999) == pytest.approx(0.0)
    assert ov.budget_left(0.003, 0.999) == pytest.approx(-2.0)
    assert ov.budget_left(None, 0.99) is None
    r = ov.since_start_ratios(ov.parse_counts(EXPOSITION), head_scrapes=40, head_failed=1)
    assert r["task_system_errors"] == pytest.approx(2 / 98)
    assert r["task_scheduling_slow"] == pytest.approx(0.1)
    assert r["head_unavailable"] == pytest.approx(0.025)
    assert ov.since_start_ratios(ov.Counts(), 0, 0) == dict.fromkeys(r)


def test_meter_colours_follow_the_thresholds() -> None:
    assert [ov.level(f) for f in (0.0, 0.69, 0.7, 0.89, 0.9, 1.0)] == [
        "green",
        "green",
        "yellow",
        "yellow",
        "red",
        "red",
    ]
    text = ov.bar(1.8, 2.0, "1.8/2")
    assert text.plain == "█████████░  90% 1.8/2" and text.spans[0].style == "red"
    assert ov.bar(1, 0).plain == "-"  # no such resource on the node
    assert ov.from_zero([200.0, 201.0]) == [0.0, 200.0, 201.0] and ov.from_zero([]) == [0.0]
    row = {
        "node_id": "n1",
        "state": "DRAINING",
        "resources_total": {"CPU": 4.0},
        "resources_available": {"CPU": 1.0},
        "memory_used": 3,
        "memory_total": 4,
        "object_store_used": 1,
        "object_store_capacity": 8,
    }
    m = ov.meters(row)
    assert (m.cpu_used, m.cpu_total, m.gpu_total, m.memory_used, m.store_total) == (3, 4, 0, 3, 8)
    assert ov.node_cells(m)[2].plain == "DRAINING"  # type: ignore[union-attr]


def test_the_slos_are_the_alert_rules() -> None:
    """Each SLO's objective is the one freight-alerts.yml burns against, and its recording
    rule over the budget window exists in freight-recording.yml."""
    rules = ROOT / "alerts" / "rules"
    recorded = {
        r["record"]
        for g in yaml.safe_load((rules / "freight-recording.yml").read_text())["groups"]
        for r in g["rules"]
    }
    exprs = [
        r["expr"]
        for g in yaml.safe_load((rules / "freight-alerts.yml").read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    for slo in ov.SLOS:
        assert f"freight:{slo.name}:ratio_rate{ov.BUDGET_WINDOW}" in recorded
        burn = rf"freight:{slo.name}:ratio_rate{ov.BUDGET_WINDOW} > \(1 \* ([0-9.]+)\)"
        found = [m.group(1) for e in exprs if (m := re.search(burn, e))]
        assert found and float(found[0]) == pytest.approx(1 - slo.objective), slo


def test_with_monitoring_up_the_slos_come_from_prometheus_and_the_alerts_from_its_alertmanager(
    cluster: Cluster,
) -> None:
    """`freight monitoring up` runs for the cluster: the overview finds both servers through the
    session's monitoring.json, reads the SLO ratios from Prometheus's recording rules and the
    alerts (the always-firing FreightWatchdog) from that Alertmanager. Last in this file: the
    servers are stopped after it."""
    missing = [b for b in ("prometheus", "prometheus-alertmanager") if shutil.which(b) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (scripts/install-system-deps.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    cli = str(Path(sys.executable).with_name("freight"))
    prom, am = f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"
    up = subprocess.run(
        [
            cli,
            "monitoring",
            "up",
            "--address",
            cluster.address,
            "--prometheus-port",
            prom.rsplit(":", 1)[1],
            "--alertmanager-port",
            am.rsplit(":", 1)[1],
            "--scrape-interval",
            "1s",
            "--webhook",
            "http://127.0.0.1:9/all",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert up.returncode == 0, up.stderr
    try:

        def head_scraped() -> bool:
            query = urllib.parse.urlencode({"query": "freight:head_unavailable:ratio_rate3d"})
            with urllib.request.urlopen(f"{prom}/api/v1/query?{query}", timeout=10) as r:
                return bool(json.load(r)["data"]["result"])

        wait_for_condition(head_scraped, 60, "Prometheus to record the head's availability")

        def has_history() -> bool:
            query = ov.HISTORY_QUERIES[0].format(c="freight")
            now = time.time()
            args = {"query": query, "start": now - 60, "end": now, "step": 1}
            url = f"{prom}/api/v1/query_range?{urllib.parse.urlencode(args)}"
            with urllib.request.urlopen(url, timeout=10) as r:
                return bool(json.load(r)["data"]["result"])

        wait_for_condition(has_history, 60, "Prometheus to hold a rate of finished tasks")

        async def body(pilot: Pilot[None]) -> None:
            app = pilot.app
            assert isinstance(app, TopApp)
            await until(pilot, lambda: isinstance(app.screen, ov.OverviewScreen), "overview")
            screen = _screen(app)
            await until(
                pilot,
                lambda: screen.last.slo_basis == f"Prometheus {prom}, over 3d",
                "the SLOs from Prometheus",
            )
            # The sparklines start with Prometheus's past, before the overview's own points.
            await until(pilot, lambda: screen.last.history_points > 0, "Prometheus's history")
            assert len(screen.last.throughput) >= screen.last.history_points
            head = next(s for s in screen.last.slos if s.name == "head_unavailable")
            assert head.bad_ratio == 0.0 and head.budget_left == 1.0
            assert f"Prometheus {prom}, over 3d" in str(screen.query_one("#ov-slo").render())
            await until(
                pilot,
                lambda: any(a.name == "FreightWatchdog" for a in screen.last.alerts),
                "the Watchdog from monitoring up's Alertmanager",
            )
            assert screen.last.alertmanager == am and not screen.last.alerts_note

        run(app_for(cluster, View("overview")), body)
    finally:
        subprocess.run([cli, "monitoring", "down", "--address", cluster.address], timeout=60)
