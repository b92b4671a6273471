"""The shipped partition game day holds: its plan brings a cluster whose nodes run in network
namespaces of their own (root), cuts one off for 10 s with `partition_node`, and nothing the
workload submitted is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from freight.testing import patched_environ, short_temp_dir
from freight.util import netns

REASON = netns.unavailable_reason()
# Labs of one machine share /run/freight-netns and sweep_stale(): one lab-making file at a time.
pytestmark = pytest.mark.xdist_group("netns")
if REASON is not None and os.environ.get("CI") != "true":
    pytest.skip(f"network namespaces: {REASON}", allow_module_level=True)

FREIGHT = str(Path(sys.executable).with_name("freight"))
PLAN = Path(__file__).resolve().parents[2] / "chaos/gamedays/partition.yaml"


def test_the_shipped_partition_game_day_holds(tmp_path: Path) -> None:
    assert REASON is None, f"CI must run the network tests: {REASON}"
    out = tmp_path / "out"
    with short_temp_dir() as tmp, patched_environ(FREIGHT_TEMP_DIR=str(tmp)):
        run = subprocess.run(
            [FREIGHT, "gameday", "run", str(PLAN), "--yes", "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        left = [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if str(tmp) in " ".join(p.info["cmdline"] or [])
        ]
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    (step,) = json.loads((out / "gameday.json").read_text())["steps"]
    assert (step["status"], step["lost"]) == ("held", {})
    (fault,) = step["faults"]
    assert (fault["fault"], fault["signal"]) == ("partition_node", "iptables")
    assert fault["ended"] is not None  # the rules were removed at expiry
    assert left == []
