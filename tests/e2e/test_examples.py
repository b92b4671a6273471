"""Every example program runs to completion and prints its final line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Example file -> the start of the last line it prints.
FINAL_LINES = {
    "pi.py": "pi is approximately 3.1",
    "actors_counter.py": "counter reached 100",
    "large_objects.py": "moved 96 MiB of arrays through the object store",
    "pipeline.py": "counted 144 words in 12 documents",
}


@pytest.mark.parametrize("name", sorted(FINAL_LINES))
def test_example_runs(name):
    script = Path(os.environ.get("FREIGHT_EXAMPLES_DIR", EXAMPLES)) / name
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=script.parent,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr[-4000:]
    assert lines[-1].startswith(FINAL_LINES[name]), proc.stdout[-2000:]


def test_every_example_is_checked():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(FINAL_LINES)
