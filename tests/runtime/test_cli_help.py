"""`freight --help` and every command's help are plain text; the settings have their own command.

No cluster: help and `freight settings` only read the declarations and the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from freight.cli.main import build_parser
from freight.config import SETTINGS

FREIGHT = str(Path(sys.executable).with_name("freight"))

# reST that a terminal would show as it is: ``literals``, roles (:func:`x`), `interpreted text`.
RST_MARKUP = re.compile(r"``|:[a-z:]+:`|`[^`\n]+`")


def _every_parser() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    todo = [("freight", build_parser())]
    while todo:
        path, parser = todo.pop()
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{path} {name}", sub) for name, sub in action.choices.items()]


def freight(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FREIGHT_")}
    return subprocess.run(
        [FREIGHT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "COLUMNS": "200", **env},
        stdin=subprocess.DEVNULL,
    )


def test_no_command_help_shows_rest_markup() -> None:
    parsers = dict(_every_parser())
    assert {"freight logs", "freight events", "freight job submit", "freight settings"} <= set(
        parsers
    )
    marked = {
        path: RST_MARKUP.findall(parser.format_help())
        for path, parser in parsers.items()
        if RST_MARKUP.search(parser.format_help())
    }
    assert marked == {}


def test_top_level_help_is_short_and_points_at_freight_settings() -> None:
    out = freight("--help")
    assert out.returncode == 0, out.stderr
    assert "FREIGHT_INLINE_MAX_BYTES" not in out.stdout  # no table of settings any more
    assert "'freight settings' lists every FREIGHT_* variable" in out.stdout
    assert len(out.stdout.splitlines()) < 40


def test_freight_settings_lists_every_setting_with_its_value_in_effect() -> None:
    out = freight("settings", FREIGHT_LEASE_PIPELINE="4", FREIGHT_TOKEN="s3cret")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["VARIABLE", "VALUE", "DEFAULT", "MEANING"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {s.env for s in SETTINGS.values()}
    assert rows["FREIGHT_LEASE_PIPELINE"][1:3] == ["4", "16"]  # set: its value, then the default
    assert rows["FREIGHT_INLINE_MAX_BYTES"][1:3] == ["-", "102400"]  # unset: the default applies
    assert rows["FREIGHT_TOKEN"][1] == "(hidden)"
    assert "s3cret" not in out.stdout


def test_freight_settings_json_and_one_setting_in_full() -> None:
    out = freight("settings", "-o", "json", "use_tls", "FREIGHT_TOKEN", FREIGHT_USE_TLS="yes")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)["items"]
    assert [r["variable"] for r in records] == ["FREIGHT_USE_TLS", "FREIGHT_TOKEN"]
    assert records[0]["value"] is True and records[0]["default"] is False and records[0]["set"]
    assert records[0]["accepted"].startswith("a boolean")
    assert records[1]["value"] == "" and not records[1]["set"]

    out = freight("settings", "lease_pipeline")
    assert out.stdout.splitlines()[:4] == [
        "FREIGHT_LEASE_PIPELINE",
        "  value:    16 (default)",
        "  default:  16",
        "  accepted: an integer >= 1",
    ]


def test_freight_settings_refuses_an_unknown_name() -> None:
    out = freight("settings", "inline_max_byte")
    assert out.returncode == 2
    assert out.stderr == (
        "freight settings: no setting named 'inline_max_byte'; 'freight settings' lists them all\n"
    )
