"""`freight monitoring up|status|down` against a real cluster, Prometheus and Alertmanager.

The on-call pack is the small one in tests/fixtures/oncall (``FREIGHT_ONCALL_DIR``), so the test
checks the command, not the shipped rules (their own tests do that).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from freight.testing import short_temp_dir
from freight.testing import wait_for_condition as wait_until

FREIGHT = str(Path(sys.executable).with_name("freight"))
PACK = Path(__file__).resolve().parent.parent / "fixtures" / "oncall"
BASE_URL = "https://runbooks.example.test/freight"
NEEDED = {
    "prometheus": ("prometheus",),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
}


def _require_servers() -> None:
    missing = [n for n, bins in NEEDED.items() if not any(shutil.which(b) for b in bins)]
    if missing:
        reason = (
            f"{' and '.join(missing)} not installed (scripts/install-system-deps.sh installs "
            "prometheus and prometheus-alertmanager)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def run(temp_dir: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), NO_COLOR="1", COLUMNS="200")
    for key in ("FREIGHT_TOKEN", "FREIGHT_ADDRESS", "FREIGHT_RUNBOOK_BASE_URL"):
        env.pop(key, None)
    env.update({"FREIGHT_ONCALL_DIR": str(PACK), **extra})
    return subprocess.run(
        [FREIGHT, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    _require_servers()
    with short_temp_dir() as temp_dir:
        proc = run(temp_dir, "start", "--head", "--port", "0", "--num-cpus", "1")
        try:
            assert proc.returncode == 0, proc.stderr
            address = re.search(r"address:\s+(\S+)", proc.stdout)
            session = re.search(r"session dir:\s+(\S+)", proc.stdout)
            assert address and session, proc.stdout
            yield {
                "temp_dir": temp_dir,
                "address": address.group(1),
                "session_dir": Path(session.group(1)),
            }
        finally:
            run(temp_dir, "monitoring", "down")
            run(temp_dir, "stop")
            prefix = str(temp_dir) + os.sep
            for p in psutil.process_iter(["cmdline"]):
                if any(a.startswith(prefix) for a in p.info["cmdline"] or ()):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.kill()


def _pids(c: dict[str, Any]) -> list[int]:
    state = json.loads((c["session_dir"] / "monitoring" / "monitoring.json").read_text())
    return [s["process"]["pid"] for s in state]


def test_up_scrapes_the_cluster_with_the_rules_and_routing_then_down_stops_both(cluster) -> None:
    prom_port, am_port = free_port(), free_port()
    up = run(
        cluster["temp_dir"],
        "monitoring",
        "up",
        "--address",
        cluster["address"],
        "--prometheus-port",
        str(prom_port),
        "--alertmanager-port",
        str(am_port),
        "--scrape-interval",
        "1s",
        "--webhook",
        "http://127.0.0.1:9/all",
        "--webhook",
        "heartbeat=http://127.0.0.1:9/heartbeat",
        FREIGHT_RUNBOOK_BASE_URL=BASE_URL,
    )
    assert up.returncode == 0, up.stderr
    prom, am = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
    assert f"prometheus:   {prom}" in up.stdout and f"alertmanager: {am}" in up.stdout
    pids = _pids(cluster)
    try:
        # Both servers listen on loopback only.
        for pid in pids:
            listening = {
                (c.laddr.ip, c.laddr.port)
                for c in psutil.Process(pid).net_connections("tcp")
                if c.status == psutil.CONN_LISTEN
            }
            assert listening and all(ip == "127.0.0.1" for ip, _ in listening), listening

        def targets_up() -> bool:
            active = get_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]
            return sorted((t["labels"]["job"], t["health"]) for t in active) == [
                ("freight-head", "up"),
                ("freight-nodes", "up"),
            ]

        wait_until(targets_up, 60, "Prometheus to scrape the head and the node (health up)")

        groups = get_json(f"{prom}/api/v1/rules")["data"]["groups"]
        assert sorted(g["name"] for g in groups) == ["freight-alerts", "freight-slo"]
        alerts = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
        # runbook_url follows FREIGHT_RUNBOOK_BASE_URL.
        assert alerts["FreightHeadDown"]["annotations"]["runbook_url"] == (
            f"{BASE_URL}/FreightHeadDown.md"
        )
        # Prometheus sends to this Alertmanager, and resends firing alerts every interval (the
        # first send can go out before it has found Alertmanager).
        flags = get_json(f"{prom}/api/v1/status/flags")["data"]
        assert flags["rules.alert.resend-delay"] == "1s", flags
        managers = get_json(f"{prom}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
        assert [m["url"] for m in managers] == [f"{am}/api/v2/alerts"]

        status = get_json(f"{am}/api/v2/status")
        config = yaml.safe_load(status["config"]["original"])
        assert config["route"]["routes"][0]["receiver"] == "heartbeat"
        receivers = {r["name"]: r for r in config["receivers"]}
        assert sorted(receivers) == ["heartbeat", "paging", "ticket"]
        assert receivers["heartbeat"]["webhook_configs"][0]["url"] == "http://127.0.0.1:9/heartbeat"
        for name in ("paging", "ticket"):  # the catch-all --webhook replaced their own
            assert [w["url"] for w in receivers[name]["webhook_configs"]] == [
                "http://127.0.0.1:9/all"
            ]
            assert "pagerduty_configs" not in receivers[name]
        # The Watchdog (always firing) reaches Alertmanager from Prometheus.
        wait_until(
            lambda: any(
                a["labels"]["alertname"] == "FreightWatchdog"
                for a in get_json(f"{am}/api/v2/alerts")
            ),
            60,
            "the Watchdog alert in Alertmanager",
        )

        st = run(cluster["temp_dir"], "monitoring", "status")
        assert st.returncode == 0, st.stdout + st.stderr
        assert re.search(rf"prometheus\s+{prom}\s+running", st.stdout), st.stdout
        assert re.search(rf"alertmanager\s+{am}\s+running", st.stdout), st.stdout

        again = run(cluster["temp_dir"], "monitoring", "up")
        assert again.returncode != 0 and "already running" in again.stderr, again.stderr
    finally:
        down = run(cluster["temp_dir"], "monitoring", "down")
    assert down.returncode == 0, down.stderr
    assert "stopped alertmanager, prometheus" in down.stdout
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
    st = run(cluster["temp_dir"], "monitoring", "status")
    assert st.returncode == 1 and "not running" in st.stdout


def test_a_taken_port_is_named(cluster) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        out = run(cluster["temp_dir"], "monitoring", "up", "--prometheus-port", str(taken))
    assert out.returncode != 0
    assert f"port {taken} on 127.0.0.1 is taken" in out.stderr and "--prometheus-port" in out.stderr
    assert not (cluster["session_dir"] / "monitoring" / "monitoring.json").exists()


def test_an_unknown_webhook_receiver_lists_the_receivers(cluster) -> None:
    out = run(cluster["temp_dir"], "monitoring", "up", "--webhook", "pager=http://127.0.0.1:9/")
    assert out.returncode != 0
    assert "no receiver 'pager'" in out.stderr and "paging, ticket, heartbeat" in out.stderr


def test_pagerduty_options_are_checked_before_anything_starts(cluster, tmp_path) -> None:
    out = run(cluster["temp_dir"], "monitoring", "up", "--pagerduty-url", "events.example")
    assert out.returncode != 0
    assert "--pagerduty-url 'events.example'" in out.stderr and "http(s) URL" in out.stderr
    missing = tmp_path / "no-key"
    out = run(cluster["temp_dir"], "monitoring", "up", "--pagerduty-key-file", str(missing))
    assert out.returncode != 0
    assert f"--pagerduty-key-file {missing}: no readable file" in out.stderr, out.stderr
    assert not (cluster["session_dir"] / "monitoring" / "monitoring.json").exists()


def test_missing_binaries_say_what_to_install(cluster) -> None:
    # A PATH with python's folder only: freight runs, Prometheus is not found.
    out = run(cluster["temp_dir"], "monitoring", "up", PATH=str(Path(sys.executable).parent))
    assert out.returncode != 0
    assert "apt-get install prometheus prometheus-alertmanager" in out.stderr, out.stderr


def test_no_cluster_is_a_clear_error() -> None:
    _require_servers()
    with short_temp_dir() as empty:
        # One message and exit code for every command (status and down find the folder
        # without the head: they work while it is down).
        for command in ("up", "status", "down"):
            out = run(empty, "monitoring", command)
            assert out.returncode == 3, (command, out.returncode, out.stderr)
            assert "no running freight cluster found" in out.stderr, out.stderr


def test_up_loads_the_pack_installed_with_freight(cluster) -> None:
    """The shipped rules and routing (whatever alerts/ holds) load as they are."""
    import freight.alerts

    shipped = Path(freight.alerts.__file__).parent
    groups = sorted(
        g["name"]
        for f in sorted((shipped / "rules").glob("*.yml"))
        for g in (yaml.safe_load(f.read_text()) or {}).get("groups") or []
    )
    prom_port, am_port = free_port(), free_port()
    up = run(
        cluster["temp_dir"],
        "monitoring",
        "up",
        "--prometheus-port",
        str(prom_port),
        "--alertmanager-port",
        str(am_port),
        "--webhook",
        "http://127.0.0.1:9/all",
        FREIGHT_ONCALL_DIR="",  # empty: the pack installed with freight
    )
    try:
        assert up.returncode == 0, up.stderr
        rules = get_json(f"http://127.0.0.1:{prom_port}/api/v1/rules")["data"]["groups"]
        assert sorted(g["name"] for g in rules) == groups
        status = get_json(f"http://127.0.0.1:{am_port}/api/v2/status")
        assert status["config"]["original"]
    finally:
        down = run(cluster["temp_dir"], "monitoring", "down")
    assert down.returncode == 0, down.stderr


def test_a_broken_rule_file_fails_up_with_the_servers_log_and_leaves_nothing(
    cluster, tmp_path
) -> None:
    pack = tmp_path / "pack"
    shutil.copytree(PACK, pack)
    (pack / "alerts" / "rules" / "broken.yml").write_text(
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: up ==\n"
    )
    am_port = free_port()
    out = run(
        cluster["temp_dir"],
        "monitoring",
        "up",
        "--prometheus-port",
        str(free_port()),
        "--alertmanager-port",
        str(am_port),
        FREIGHT_ONCALL_DIR=str(pack),
    )
    assert out.returncode != 0
    assert "prometheus exited with code" in out.stderr and "broken.yml" in out.stderr, out.stderr
    # Alertmanager, started first, was stopped again (this one: its port; other servers may run
    # on the machine).
    left = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if "alertmanager" in " ".join(p.info["cmdline"] or ())
        and f"--web.listen-address=127.0.0.1:{am_port}" in (p.info["cmdline"] or ())
    ]
    assert left == []
    assert not (cluster["session_dir"] / "monitoring" / "monitoring.json").exists()


def test_status_and_down_work_while_the_head_is_down(cluster) -> None:
    """Last in the file: it kills the module's head."""
    up = run(
        cluster["temp_dir"],
        "monitoring",
        "up",
        "--prometheus-port",
        str(free_port()),
        "--alertmanager-port",
        str(free_port()),
    )
    assert up.returncode == 0, up.stderr
    pids = _pids(cluster)
    head = json.loads((cluster["session_dir"] / "head.json").read_text())
    psutil.Process(head["pid"]).kill()
    wait_until(lambda: not psutil.pid_exists(head["pid"]), 30, "the head to exit")
    st = run(cluster["temp_dir"], "monitoring", "status")
    assert st.returncode == 0 and st.stdout.count("running") == 2, st.stdout + st.stderr
    down = run(cluster["temp_dir"], "monitoring", "down", "--address", "auto")
    assert down.returncode == 0 and "stopped alertmanager, prometheus" in down.stdout, down.stderr
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


def test_freight_stop_stops_the_monitoring_of_its_cluster() -> None:
    _require_servers()
    with short_temp_dir() as temp_dir:
        started = run(temp_dir, "start", "--head", "--port", "0", "--num-cpus", "1")
        try:
            assert started.returncode == 0, started.stderr
            up = run(
                temp_dir,
                "monitoring",
                "up",
                "--prometheus-port",
                str(free_port()),
                "--alertmanager-port",
                str(free_port()),
            )
            assert up.returncode == 0, up.stderr
            session = re.search(r"session dir:\s+(\S+)", started.stdout)
            assert session
            pids = _pids({"session_dir": Path(session.group(1))})
        finally:
            stop = run(temp_dir, "stop")
        assert "stopped alertmanager, prometheus (freight monitoring)" in stop.stdout, stop.stdout
        assert not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids
        )
