"""The shipped routing on a real Alertmanager: pages, tickets and the heartbeat reach webhooks
this test runs, with their runbook links and the token read from a file, and the inhibitions
hold (head down silences its cluster's node, actor and task alerts; a page silences the ticket
of the same alert). No freight cluster is needed: the alerts are posted to Alertmanager's API as
Prometheus would post them."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from alertfiles import ALERTS

from freight.testing import WebhookReceiver, wait_for_condition

TOKEN = "test-token-7d1"
BASE = "https://freight.example.invalid/runbooks"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp: Path, hooks: WebhookReceiver) -> Path:
    """The shipped config with the receivers pointed at ``hooks``, the secrets in ``tmp``, and
    short group timers (the routing, matchers and inhibitions are left as shipped)."""
    config = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    (tmp / "key").write_text("pd-key\n")
    (tmp / "token").write_text(TOKEN)
    config["route"].update(group_wait="0s", group_interval="1s")
    for receiver in config["receivers"]:
        for pd in receiver.get("pagerduty_configs", []):
            pd.update(routing_key_file=str(tmp / "key"), url=f"{hooks.url}/page")
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = hooks.url + "/" + hook["url"].rsplit("/", 1)[1]
            hook["http_config"]["authorization"]["credentials_file"] = str(tmp / "token")
    # keep the test independent of the clock: the maintenance window never matches
    config["time_intervals"][0]["time_intervals"] = [{"years": ["2000"]}]
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def alertmanager(alertmanager_server: str, tmp_path: Path) -> Iterator[tuple[str, WebhookReceiver]]:
    hooks = WebhookReceiver()
    port = _free_port()
    config = _config(tmp_path, hooks)
    log = open(tmp_path / "alertmanager.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            alertmanager_server,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for_condition(ready, 30, "Alertmanager ready")
        yield url, hooks
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        hooks.stop()


def _alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": severity, **labels},
        "annotations": {"summary": f"{name}.", "runbook_url": f"{BASE}/{name}.md"},
    }


def _post(url: str, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(
        f"{url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def _state(url: str) -> dict[tuple[str, str, str], list[str]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=10) as r:
        alerts = json.load(r)
    return {
        (a["labels"]["alertname"], a["labels"].get("cluster", ""), a["labels"]["severity"]): a[
            "status"
        ]["inhibitedBy"]
        for a in alerts
    }


def test_pages_tickets_heartbeat_and_inhibitions(alertmanager: tuple[str, WebhookReceiver]) -> None:
    url, hooks = alertmanager
    # The sources of inhibition first, then, once Alertmanager's inhibitor holds them (a probe
    # routed nowhere shows as inhibited), the rest: alerts that reach Alertmanager in the same
    # instant as their inhibitor could otherwise be sent before it is known (the shipped
    # group_wait of 30 s covers that in production; this test waits 0 s).
    _post(
        url,
        [
            _alert("FreightHeadDown", "critical", cluster="c1"),
            _alert("FreightTaskErrorBudgetBurn", "critical", cluster="c2", long="1h", short="5m"),
            _alert("FreightNodeProbe", "info", cluster="c1"),
        ],
    )
    wait_for_condition(
        lambda: _state(url).get(("FreightNodeProbe", "c1", "info")),
        30,
        "the inhibitor to hold FreightHeadDown",
    )
    _post(
        url,
        [
            _alert("FreightNodeDead", "warning", cluster="c1"),
            _alert("FreightActorRestartStorm", "warning", cluster="c1", class_name="Counter"),
            _alert("FreightTaskErrorBudgetBurn", "critical", cluster="c1", long="1h", short="5m"),
            _alert("FreightTaskErrorBudgetBurn", "warning", cluster="c2", long="1d", short="2h"),
            _alert("FreightObjectStoreFilling", "warning", cluster="c2", instance="n2:9101"),
            _alert("FreightDriverDisconnectsUnclean", "info", cluster="c2"),
            _alert("FreightWatchdog", "none"),
        ],
    )
    state = wait_for_condition(
        lambda: (s := _state(url)) and len(s) == 10 and s, 30, "Alertmanager to hold the alerts"
    )
    inhibited = {k for k, by in state.items() if by}
    assert inhibited == {
        ("FreightNodeProbe", "c1", "info"),
        ("FreightNodeDead", "c1", "warning"),
        ("FreightActorRestartStorm", "c1", "warning"),
        ("FreightTaskErrorBudgetBurn", "c1", "critical"),  # head down silences task alerts
        ("FreightTaskErrorBudgetBurn", "c2", "warning"),  # the page covers the ticket
    }

    def delivered() -> bool:
        return bool(
            hooks.posts("/ticket") and hooks.posts("/heartbeat") and len(hooks.posts("/page")) >= 2
        )

    wait_for_condition(delivered, 60, "the page, the ticket and the heartbeat")
    pages = {
        (b["payload"]["custom_details"]["cluster"], b["payload"]["custom_details"]["runbook_url"])
        for b in (p.body for p in hooks.posts("/page"))
    }
    assert pages == {
        ("c1", f"{BASE}/FreightHeadDown.md"),
        ("c2", f"{BASE}/FreightTaskErrorBudgetBurn.md"),
    }
    assert {p.body["routing_key"] for p in hooks.posts("/page")} == {"pd-key"}  # read from its file
    tickets = [a["labels"]["alertname"] for p in hooks.posts("/ticket") for a in p.body["alerts"]]
    assert tickets == ["FreightObjectStoreFilling"]
    beats = [a["labels"]["alertname"] for p in hooks.posts("/heartbeat") for a in p.body["alerts"]]
    assert set(beats) == {"FreightWatchdog"}
    hooked = hooks.posts("/ticket") + hooks.posts("/heartbeat")
    assert {p.authorization for p in hooked} == {f"Bearer {TOKEN}"}
