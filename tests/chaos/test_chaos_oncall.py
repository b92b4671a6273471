"""The on-call probes (promql, alert_firing, page_received) against the real Prometheus,
Alertmanager and pager sink of `freight monitoring up --time-scale 60 --pager` on a real cluster;
their errors for URLs that do not answer, for a cluster without monitoring, for bad input; the
pager sink itself (both payload kinds, a body that is not JSON); and the drill time scale of
`freight monitoring up` (only durations change, and it is validated).

The first test runs before monitoring is up (tests run in file order; the module's monitoring
fixture starts it for the tests after)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from freight.chaos import actions, journal, pager, probes
from freight.chaos.targets import FaultRefused
from freight.cli import monitoring_cmd, oncall_pack
from freight.client import access
from freight.testing import Cluster, connected_cluster, wait_for_condition
from freight.util.process import is_recorded_process

FREIGHT = str(Path(sys.executable).with_name("freight"))
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with _NO_PROXY.open(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ---- the pager sink and what it reads from a post (no cluster) -------------------------------

PAGERDUTY = {  # as Alertmanager's PagerDuty receiver sends it (the shipped `page` receiver)
    "routing_key": "k",
    "event_action": "trigger",
    "payload": {
        "summary": "The freight head is not answering its scrapes.",
        "custom_details": {
            "cluster": "c",
            "firing": "Labels:\n - alertname = FreightHeadDown\n - cluster = c\n",
            "runbook_url": oncall_pack.runbook_url("FreightHeadDown"),
        },
    },
}
WEBHOOK = {  # Alertmanager's webhook
    "status": "resolved",
    "alerts": [
        {
            "status": "resolved",
            "labels": {"alertname": "FreightNodeDown"},
            "annotations": {"runbook_url": "https://r.example/FreightNodeDown.md"},
        }
    ],
}


def test_the_sink_logs_each_post_and_reads_both_kinds_of_page(tmp_path: Path) -> None:
    log = tmp_path / "pages.jsonl"
    with pager.PagerSink(str(log)) as sink:
        assert post(f"{sink.url}/page", json.dumps(PAGERDUTY).encode()) == (200, {})
        status, answer = post(f"{sink.url}/page", b"{not json")
        assert status == 400 and "not JSON" in answer["error"]  # and it keeps serving:
        assert post(f"{sink.url}/ticket", json.dumps(WEBHOOK).encode()) == (200, {})
        with _NO_PROXY.open(f"{sink.url}/-/ready", timeout=10) as r:
            assert r.status == 200
    logged = pager.read(str(log))
    assert [p.path for p in logged] == ["/page", "/ticket"]
    assert [list(pager.pages(p.body)) for p in logged] == [
        [pager.Page("FreightHeadDown", True, oncall_pack.runbook_url("FreightHeadDown"))],
        [pager.Page("FreightNodeDown", False, "https://r.example/FreightNodeDown.md")],
    ]
    with open(log, "a") as f:
        f.write('{"time": 1, "pa')  # the sink is writing a line: it is not read yet
    assert len(pager.read(str(log))) == 2
    config = {"freight_pager_log": str(log)}
    # The PagerDuty page for the head, since the start of the log: arrived, link checked.
    assert probes.page_received("FreightHeadDown", since="0", configuration=config) > 0
    with pytest.raises(access.CommandFailed, match="carries the runbook link"):
        probes.page_received(
            "FreightHeadDown", since="0", runbook_url="https://x/y.md", configuration=config
        )
    # A resolved notification, or one at another receiver, is no page; none: -1.
    assert probes.page_received("FreightNodeDown", since="0", configuration=config) == -1.0
    assert (
        probes.page_received("FreightNodeDown", since="0", receiver="", configuration=config)
        == -1.0
    )


def test_page_received_since_a_fault_and_its_input_errors(tmp_path: Path) -> None:
    log, faults = tmp_path / "pages.jsonl", tmp_path / "faults.jsonl"
    config = {"freight_pager_log": str(log), "freight_fault_journal": str(faults)}
    # No kill_head in the journal: nothing to page for.
    assert (
        probes.page_received("FreightHeadDown", since="fault:kill_head", configuration=config)
        == 0.0
    )
    kill = journal.Injection("kill_head", {"kind": "head"}, {}, "SIGKILL", None, 0.0)
    journal.write_injection(str(faults), kill)
    with pager.PagerSink(str(log)) as sink:
        post(f"{sink.url}/page", json.dumps(PAGERDUTY).encode())
    seconds = probes.page_received("FreightHeadDown", since="fault:kill_head", configuration=config)
    assert seconds == round(pager.read(str(log))[0].time - kill.time, 3) and seconds >= 0
    for kwargs, message in [
        ({"alertname": "no such alert!"}, "alertname must be an alert's name"),
        ({"alertname": "A", "since": "yesterday"}, "since: 'yesterday' is not a time"),
        ({"alertname": "A", "timeout": -1}, "timeout must be 0 to 3600 s"),
        ({"alertname": "A", "timeout": "soon"}, "timeout must be a number of seconds"),
        (
            {"alertname": "A", "pager_log": str(tmp_path / "nowhere" / "p.jsonl")},
            "its folder does not exist",
        ),
    ]:
        with pytest.raises(access.UsageError, match=message):
            probes.page_received(**kwargs, configuration=config)  # type: ignore[arg-type]
    (tmp_path / "other.jsonl").write_text("not a log\n")
    with pytest.raises(access.UsageError, match="is not a pager sink's log"):
        probes.page_received("A", pager_log=str(tmp_path / "other.jsonl"), configuration=config)


# ---- the drill time scale of `freight monitoring up` (no cluster) ----------------------------


def test_time_scale_divides_every_duration_and_changes_nothing_else(tmp_path: Path) -> None:
    shipped = monitoring_cmd.alertmanager_config([])
    drill = monitoring_cmd.alertmanager_config([], time_scale=60)
    assert drill["global"]["resolve_timeout"] == "5s"
    assert (drill["route"]["group_wait"], drill["route"]["group_interval"]) == ("500ms", "5s")
    assert drill["route"]["repeat_interval"] == "240s"
    page = next(r for r in drill["route"]["routes"] if r["receiver"] == "page")
    assert page["repeat_interval"] == "60s"
    for doc in (shipped, drill):  # the rest is the shipped routing
        for route in [doc["route"], *doc["route"]["routes"]]:
            for key in ("group_wait", "group_interval", "repeat_interval"):
                route.pop(key, None)
        doc["global"].pop("resolve_timeout")
    assert drill == shipped

    def rules(scale: float) -> list[dict[str, Any]]:
        folder = tmp_path / f"x{scale:g}"
        files = monitoring_cmd._rules(str(folder), scale)
        return [
            r
            for f in files
            for g in yaml.safe_load(Path(f).read_text())["groups"]
            for r in g["rules"]
        ]

    plain, fast = rules(1), rules(60)
    head_down = next(r for r in fast if r.get("alert") == "FreightHeadDown")
    assert head_down["for"] == "1s"
    assert [{k: v for k, v in r.items() if k != "for"} for r in fast] == [
        {k: v for k, v in r.items() if k != "for"} for r in plain
    ]
    assert oncall_pack.rule_files()  # the shipped pack was the one scaled
    assert monitoring_cmd.scale_duration("1h30m", 60) == "90s"
    assert monitoring_cmd.scale_duration("0s", 60) == "0s"
    assert monitoring_cmd.scale_duration("1s", 10_000) == "1ms"  # never zero


@pytest.mark.parametrize(
    "options, message",
    [
        (["--time-scale", "0"], "--time-scale 0: give a positive number"),
        (["--time-scale", "-60"], "--time-scale -60: give a positive number"),
        (["--time-scale", "inf"], "--time-scale inf: give a positive number"),
        (["--time-scale", "fast"], "argument --time-scale: invalid float value: 'fast'"),
        (["--pager", "--pagerduty-url", "https://x.test/v2/enqueue"], "give one of them"),
        (
            ["--pager", "--pager-port", "9093"],
            "--prometheus-port, --alertmanager-port, --pager-port must differ",
        ),
        (["--pager", "--pager-port", "0"], "--pager-port 0 is not a TCP port"),
    ],
)
def test_bad_drill_options_are_refused_saying_what_to_give(
    tmp_path: Path, options: list[str], message: str
) -> None:
    out = subprocess.run(
        [FREIGHT, "monitoring", "up", "--address", "127.0.0.1:1", *options],
        capture_output=True,
        text=True,
        env={**os.environ, "FREIGHT_TEMP_DIR": str(tmp_path)},
    )
    assert out.returncode != 0
    assert message in out.stderr


# ---- against a real cluster with its Prometheus, Alertmanager and pager ----------------------


def _require_servers() -> None:
    try:
        monitoring_cmd._binary("prometheus")
        monitoring_cmd._binary("alertmanager")
    except SystemExit as e:
        if os.environ.get("CI") == "true":
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    _require_servers()
    with connected_cluster({"num_cpus": 1}) as c:
        yield c


@pytest.fixture(scope="module")
def monitoring(cluster: Cluster) -> Iterator[dict[str, str]]:
    ports = {"prometheus": free_port(), "alertmanager": free_port(), "pager": free_port()}
    up = subprocess.run(
        [
            FREIGHT, "monitoring", "up", "--address", cluster.address,
            "--prometheus-port", str(ports["prometheus"]),
            "--alertmanager-port", str(ports["alertmanager"]),
            "--pager", "--pager-port", str(ports["pager"]),
            "--scrape-interval", "1s", "--time-scale", "60",
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    assert 'alerts carry drill="time-scale 60"' in up.stdout
    try:
        yield {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    finally:
        subprocess.run([FREIGHT, "monitoring", "down", "--address", cluster.address], timeout=120)


@pytest.fixture
def config(cluster: Cluster, tmp_path: Path) -> dict[str, Any]:
    return {"freight_address": cluster.address, "freight_fault_journal": str(tmp_path / "f.jsonl")}


def test_without_monitoring_the_probes_say_how_to_start_it(config: dict[str, Any]) -> None:
    for probe, kwargs in [
        (probes.promql, {"query": "up"}),
        (probes.alert_firing, {"alertname": "FreightHeadDown"}),
        (probes.page_received, {"alertname": "FreightHeadDown"}),
    ]:
        with pytest.raises(access.CommandFailed, match="`freight monitoring up") as e:
            probe(**kwargs, configuration=config)  # type: ignore[operator]
        assert config["freight_address"] in str(e.value) or "session_" in str(e.value)


def test_promql_answers_from_the_live_prometheus(
    monitoring: dict[str, str], config: dict[str, Any]
) -> None:
    wait_for_condition(
        lambda: probes.promql('min(up{job="freight-head"})', configuration=config) == 1.0,
        60,
        "Prometheus to scrape the head",
    )
    assert probes.promql('up{job="no-such-job"}', configuration=config) == 0.0  # no series
    assert probes.promql("scalar(vector(2.5))", configuration=config) == 2.5
    given = {**config, "freight_prometheus_url": monitoring["prometheus"]}
    assert probes.promql("vector(3)", configuration=given) == 3.0
    with pytest.raises(access.UsageError, match=r"refused the request \(400\): .*parse error"):
        probes.promql("up{", configuration=config)
    with pytest.raises(access.UsageError, match="gives a matrix, not a number"):
        probes.promql("up[1m]", configuration=config)


def test_alert_firing_counts_what_alertmanager_holds(
    monitoring: dict[str, str], config: dict[str, Any]
) -> None:
    # FreightWatchdog always fires; in a drill, it carries the drill's label.
    wait_for_condition(
        lambda: probes.alert_firing("FreightWatchdog", configuration=config) == 1,
        60,
        "Alertmanager to hold the watchdog alert",
    )
    drill = ['drill="time-scale 60"']
    assert probes.alert_firing("FreightWatchdog", matchers=drill, configuration=config) == 1
    assert (
        probes.alert_firing("FreightWatchdog", matchers=['drill="no"'], configuration=config) == 0
    )
    assert probes.alert_firing("FreightHeadDown", configuration=config) == 0
    with pytest.raises(access.UsageError, match=r"Alertmanager at .* refused the request \(400\)"):
        probes.alert_firing("FreightWatchdog", matchers=['drill=~"("'], configuration=config)
    with pytest.raises(access.UsageError, match="matchers must be a list of label matchers"):
        probes.alert_firing("FreightWatchdog", matchers=[1], configuration=config)  # type: ignore[list-item]


def test_page_received_reads_the_pager_sink_monitoring_runs(
    monitoring: dict[str, str], cluster: Cluster, config: dict[str, Any]
) -> None:
    # The heartbeat receiver gets the watchdog every second (repeat_interval 1m / 60), at the
    # sink's /heartbeat; its runbook link is the shipped one.
    seconds = probes.page_received(
        "FreightWatchdog", receiver="heartbeat", timeout=30, configuration=config
    )
    assert 0 <= seconds <= 30
    # Nothing pages (no critical alert fires): at /page, none.
    assert probes.page_received("FreightWatchdog", configuration=config) == -1.0
    status = subprocess.run(
        [FREIGHT, "monitoring", "status", "--address", cluster.address],
        capture_output=True,
        text=True,
    )
    assert "pager" in status.stdout and "drill: every alert duration divided by 60" in status.stdout


def test_urls_that_do_not_answer_are_named_with_what_to_do(
    monitoring: dict[str, str], config: dict[str, Any]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(access.CommandFailed, match=f"Prometheus at {dead} does not answer"):
        probes.promql("up", prometheus_url=dead, configuration=config)
    with pytest.raises(access.CommandFailed, match=f"Alertmanager at {dead} does not answer"):
        probes.alert_firing(
            "FreightHeadDown", configuration={**config, "freight_alertmanager_url": dead}
        )
    with pytest.raises(access.UsageError, match=r"is not an http\(s\) URL"):
        probes.promql("up", prometheus_url="localhost:9090", configuration=config)
    # A server `freight monitoring up` started that has since died: said so. (Last in the
    # file: monitoring stays down after.)
    (prometheus,) = [
        s
        for s in monitoring_cmd.read_state(access.resolve_session(config["freight_address"]))
        if s.name == "prometheus"
    ]
    os.kill(prometheus.process["pid"], signal.SIGTERM)
    wait_for_condition(
        lambda: not is_recorded_process(prometheus.process), 60, "Prometheus to stop"
    )
    with pytest.raises(access.CommandFailed, match="is not running; start it again"):
        probes.promql("up", configuration=config)


def test_restart_head_leaves_a_running_head_alone_and_starts_a_dead_one_in_its_session(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    """(The loop test restarts a head `freight start --head --storage` started.) This cluster's
    head was started by a program, without `freight start`: restart_head refuses a store it did
    not run on, and starts it again in its session folder, on its own store and port."""
    assert actions.restart_head(configuration=config)["result"] == "running"
    cluster.kill_head()
    with pytest.raises(FaultRefused, match="was not started by `freight start --head"):
        actions.restart_head(storage="/nonexistent/other.db", configuration=config)
    assert list(journal.read(config["freight_fault_journal"])) == []  # nothing journalled
    done = actions.restart_head(configuration=config)
    assert done["result"] == "started" and done["address"] == cluster.address, done
    assert done["nodes_alive"] == len(cluster.nodes)
    assert probes.nodes_alive(configuration=config) == len(cluster.nodes)
