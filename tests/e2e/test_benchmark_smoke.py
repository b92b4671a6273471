"""The benchmark suite runs every workload end to end in smoke mode and reports a figure for each.

No timing is asserted: these tests only keep the benchmarks from rotting.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
BENCH_PYTHON = BENCH.parent / ".bench-venv" / "bin" / "python"
_spec = importlib.util.spec_from_file_location("benchmark_rows", BENCH / "rows.py")
rows = sys.modules["benchmark_rows"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rows)
ROWS = rows.ROWS  # the catalogue of every row the suite reports
WAIT_10K, QUEUE = rows.WAIT_10K, rows.QUEUE


def run_compare(out_dir, *args):
    proc = subprocess.run(
        [sys.executable, str(BENCH / "compare.py"), "--smoke", "--out-dir", str(out_dir), *args],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out_dir / "smoke.json").read_text())
    assert (out_dir / "smoke.md").read_text() == proc.stdout
    return proc.stdout, report


def test_every_row_runs_on_freight_with_instrumentation_on_and_off(tmp_path):
    missing = str(tmp_path / "no-such-python")  # as on a machine without .bench-venv
    table, report = run_compare(tmp_path, "--ray-python", missing, "--dask-python", missing)
    assert report["errors"] == []
    rows = {row["name"]: row for row in report["rows"]}
    assert set(rows) == {row.name for row in ROWS}
    for row in ROWS:
        figures = rows[row.name]["figures"]
        assert figures["freight"]["mean"] > 0, row.name
        assert figures["freight-off"]["mean"] > 0, row.name
        assert "ray" not in figures and "dask" not in figures
        assert rows[row.name]["overhead"] is not None
        assert f"| {row.label} |" in table
    # Every rate row of Ray's, the wait row and the queue also cost CPU per operation, on and off.
    with_cpu = [row for row in report["rows"] if row["cpu_overhead"] is not None]
    assert {WAIT_10K, QUEUE} <= {row["name"] for row in with_cpu}
    assert len(with_cpu) >= 20
    for row in with_cpu:  # tiny rounds may fall under the clock's 10 ms tick: >= 0
        assert row["figures"]["freight"]["cpu_us_per_op"] >= 0, row["name"]
        assert row["figures"]["freight-off"]["cpu_us_per_op"] >= 0, row["name"]
    assert "| CPU µs/op on / off | CPU overhead % |" in table
    assert set(report["variants"]) == {"freight", "freight-off"}
    assert "| row | freight | ± | Ray |" in table
    assert "Ray: not available" in table and "Dask: not available" in table
    assert "make bench" in table


@pytest.mark.skipif(not BENCH_PYTHON.exists(), reason="no .bench-venv (make bench creates it)")
def test_peers_run_beside_freight(tmp_path):
    table, report = run_compare(
        tmp_path,
        "--no-instrumentation-off",
        "--filter",
        "^(single client tasks sync|scheduling latency under load p50)$",
    )
    assert report["errors"] == []
    assert set(report["variants"]) == {"freight", "ray", "dask"}
    for row in report["rows"]:
        for system in ("freight", "ray", "dask"):
            assert row["figures"][system]["mean"] > 0, (row["name"], system)
        assert row["ratio"]["ray"] > 0 and row["ratio"]["dask"] > 0
    assert "ray 2." in table.splitlines()[0]


def test_microbenchmark_runs_alone(tmp_path):
    out = tmp_path / "bench.json"
    system = os.environ.get("FREIGHT_TEST_AGAINST", "freight")
    cmd = [sys.executable, str(BENCH / "microbenchmark.py"), "--system", system, "--smoke"]
    cmd += ["--filter", "^single client (get|put) calls", "--json", str(out)]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())["results"]
    assert {row["name"] for row in results} == {
        "single client get calls (Plasma Store)",
        "single client put calls (Plasma Store)",
    }
    assert all(row["mean"] > 0 for row in results), results


def test_cluster_benchmark_reports_transfer_and_placement_group_rows():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "cluster.py"), "--smoke", "--peers", "none", "--passes", "1"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if "|" in line}
    for row in ("cross-node transfer (GB/s)", "placement group create/removal (ops/s)"):
        figure = float(lines[row].split("|")[2].replace(",", ""))
        assert figure > 0, lines[row]
