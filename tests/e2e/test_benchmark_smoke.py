"""The microbenchmark runs every workload end to end in smoke mode and reports a figure for each."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "microbenchmark.py"

EXPECTED_ROWS = {
    "single client get calls (Plasma Store)",
    "single client put calls (Plasma Store)",
    "single client put gigabytes",
    "single client tasks sync",
    "single client tasks async",
    "multi client tasks async",
    "1:1 actor calls sync",
    "1:1 actor calls async",
    "1:1 actor calls concurrent",
    "1:1 async-actor calls async",
    "single client wait 1k refs",
    "single client get object containing 10k refs",
}


def test_microbenchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    system = os.environ.get("FREIGHT_TEST_AGAINST", "freight")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--system", system, "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())["results"]
    assert EXPECTED_ROWS.issubset(row["name"] for row in results)
    assert all(row["mean"] > 0 for row in results), results
