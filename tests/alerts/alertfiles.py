"""Paths of the alerting pack and its rules, read once for the alert tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts"
RULE_FILES = sorted((ALERTS / "rules").glob("*.yml"))
UNIT_TEST_FILES = sorted((ALERTS / "tests").glob("*.test.yml"))
RUNBOOKS = ROOT / "runbooks"


@cache
def rules() -> tuple[dict[str, Any], ...]:
    """Every rule of every rule file (recording rules and alerts)."""
    out: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return tuple(out)


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def records() -> list[dict[str, Any]]:
    return [r for r in rules() if "record" in r]


@cache
def unit_tests() -> tuple[dict[str, Any], ...]:
    """Every test group of every promtool unit-test file."""
    out: list[dict[str, Any]] = []
    for path in UNIT_TEST_FILES:
        out.extend(yaml.safe_load(path.read_text())["tests"])
    return tuple(out)
