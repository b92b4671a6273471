"""alerts/alertmanager.yml: amtool accepts it, and each kind of alert reaches the right receiver."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from alertfiles import ALERTS, alerts

CONFIG = ALERTS / "alertmanager.yml"

# (labels of an alert, the receiver it must reach)
ROUTES = [
    ({"alertname": "FreightHeadDown", "severity": "critical", "cluster": "c1"}, "page"),
    (
        {
            "alertname": "FreightTaskErrorBudgetBurn",
            "severity": "critical",
            "cluster": "c1",
            "long": "1h",
            "short": "5m",
        },
        "page",
    ),
    (
        {
            "alertname": "FreightTaskErrorBudgetBurn",
            "severity": "warning",
            "cluster": "c1",
            "long": "1d",
            "short": "2h",
        },
        "ticket",
    ),
    (
        {"alertname": "FreightObjectStoreFilling", "severity": "warning", "instance": "n:9101"},
        "ticket",
    ),
    ({"alertname": "FreightDriverDisconnectsUnclean", "severity": "info", "cluster": "c1"}, "null"),
    ({"alertname": "FreightWatchdog", "severity": "none"}, "heartbeat"),
    # an alert from elsewhere without a severity still reaches a person, as a ticket
    ({"alertname": "SomethingElse"}, "ticket"),
]


def test_amtool_accepts_the_config(amtool: str) -> None:
    out = subprocess.run(
        [amtool, "check-config", str(CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("labels", "receiver"), ROUTES, ids=[r for _, r in ROUTES])
def test_routes(amtool: str, labels: dict[str, str], receiver: str) -> None:
    out = subprocess.run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={CONFIG}",
            f"--verify.receivers={receiver}",
            *(f"{k}={v}" for k, v in labels.items()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"{labels} -> {out.stdout.strip()}, expected {receiver}"


def test_every_severity_the_rules_use_has_a_route(amtool: str) -> None:
    severities = {a["labels"]["severity"] for a in alerts()}
    routed = {
        labels["severity"]
        for labels, _ in ROUTES
        if labels.get("alertname") != "FreightWatchdog" and "severity" in labels
    }
    assert severities - {"none"} <= routed


def test_no_secret_in_the_config() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    for receiver in config["receivers"]:
        for pd in receiver.get("pagerduty_configs", []):
            assert "routing_key" not in pd and "service_key" not in pd, receiver["name"]
            assert pd["routing_key_file"].startswith("/etc/")
        for hook in receiver.get("webhook_configs", []):
            auth = hook.get("http_config", {}).get("authorization", {})
            assert "credentials" not in auth, receiver["name"]


def test_inhibitions() -> None:
    rules = yaml.safe_load(CONFIG.read_text())["inhibit_rules"]
    head = next(r for r in rules if r["source_matchers"] == ['alertname="FreightHeadDown"'])
    assert head["equal"] == ["cluster"]
    page = next(r for r in rules if r["source_matchers"] == ['severity="critical"'])
    assert page["target_matchers"] == ['severity="warning"']
    assert sorted(page["equal"]) == ["alertname", "cluster"]
    # The head-down inhibition reaches the node, actor and task alerts, not the head's own.
    (target,) = head["target_matchers"]
    pattern = re.compile(target.split("=~", 1)[1].strip('"'))
    silenced = {a["alert"] for a in alerts() if pattern.fullmatch(a["alert"])}
    for kept in ("FreightHeadDown", "FreightWatchdog"):
        assert kept not in silenced
    for name in (
        "FreightHeadAvailabilityBudgetBurn",  # the same outage: one page
        "FreightNodeDead",
        "FreightActorRestartStorm",
        "FreightTaskErrorBudgetBurn",
        "FreightTelemetryDropped",  # the agents drop what they cannot forward to the head
    ):
        assert name in silenced
