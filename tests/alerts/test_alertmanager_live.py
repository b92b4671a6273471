"""The shipped routing on a real Alertmanager: pages, tickets and the heartbeat reach webhooks
this test runs, with their runbook links and the token read from a file, and the inhibitions
hold (head down silences its cluster's node, actor and task alerts; a page silences the ticket
of the same alert). No freight cluster is needed: the alerts are posted to Alertmanager's API as
Prometheus would post them."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from alertfiles import ALERTS

from freight.testing import wait_for_condition

TOKEN = "test-token-7d1"
BASE = "https://freight.example.invalid/runbooks"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hooks:
    """A webhook server that keeps every request: (path, Authorization header, JSON body)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, Any]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hooks.received.append(
                    (self.path, self.headers.get("Authorization", ""), json.loads(body))
                )
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[tuple[str, Any]]:
        return [(auth, body) for p, auth, body in self.received if p == path]


def _config(tmp: Path, hooks: Hooks) -> Path:
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
def alertmanager(alertmanager_server: str, tmp_path: Path) -> Iterator[tuple[str, Hooks]]:
    hooks = Hooks()
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
        hooks.server.shutdown()
        hooks.server.server_close()


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


def test_pages_tickets_heartbeat_and_inhibitions(alertmanager: tuple[str, Hooks]) -> None:
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
        return bool(hooks.on("/ticket") and hooks.on("/heartbeat") and len(hooks.on("/page")) >= 2)

    wait_for_condition(delivered, 60, "the page, the ticket and the heartbeat")
    pages = {
        (b["payload"]["custom_details"]["cluster"], b["payload"]["custom_details"]["runbook_url"])
        for _, b in hooks.on("/page")
    }
    assert pages == {
        ("c1", f"{BASE}/FreightHeadDown.md"),
        ("c2", f"{BASE}/FreightTaskErrorBudgetBurn.md"),
    }
    assert {b["routing_key"] for _, b in hooks.on("/page")} == {"pd-key"}  # read from its file
    tickets = [a["labels"]["alertname"] for _, b in hooks.on("/ticket") for a in b["alerts"]]
    assert tickets == ["FreightObjectStoreFilling"]
    beats = [a["labels"]["alertname"] for _, b in hooks.on("/heartbeat") for a in b["alerts"]]
    assert set(beats) == {"FreightWatchdog"}
    assert {auth for auth, _ in hooks.on("/ticket") + hooks.on("/heartbeat")} == {f"Bearer {TOKEN}"}
