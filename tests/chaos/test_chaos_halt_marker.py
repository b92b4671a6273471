"""The halt marker without a cluster: an injection is refused while halted (nothing written),
:func:`faults.hold` returns early on a halt from another process or an abort, and halting twice
or clearing what is not halted is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from freight.chaos import faults, journal, safety
from freight.client import access


def injection() -> journal.Injection:
    return journal.Injection("pause_worker", {"kind": "worker", "id": "w"}, {}, "SIGSTOP", None, 0)


def test_an_injection_is_refused_while_halted_and_runs_once_cleared(tmp_path: Path) -> None:
    path = str(tmp_path / "f.jsonl")
    halt, marker, reverted = faults.halt(path, "payments incident")
    assert (marker, reverted) == (str(tmp_path / "halt.json"), [])
    with pytest.raises(safety.Halted) as refused:
        journal.write_injection(path, injection())
    message = str(refused.value)
    assert f"halted by {halt.user} on {halt.host} (pid {halt.pid})" in message
    assert "(payments incident)" in message and "freight chaos halt --clear" in message
    assert list(journal.read(path)) == []
    assert safety.clear_marker(path) == halt
    journal.write_injection(path, injection())
    assert [r["op"] for r in journal.read(path)] == ["inject"]


def test_halting_twice_is_a_usage_error_naming_the_first_halt(tmp_path: Path) -> None:
    path = str(tmp_path / "f.jsonl")
    faults.halt(path, "first")
    with pytest.raises(access.UsageError, match=r"already halted by .* \(first\).*--clear"):
        faults.halt(path, "second")


def test_a_damaged_marker_still_halts(tmp_path: Path) -> None:
    path = str(tmp_path / "f.jsonl")
    (tmp_path / "halt.json").write_text("{not json")
    with pytest.raises(safety.Halted, match="unreadable"):
        journal.write_injection(path, injection())


HALTER = """
import sys
from freight.chaos import faults
faults.halt(sys.argv[1], "from another process")
"""


def test_hold_returns_early_when_another_process_halts(tmp_path: Path) -> None:
    path = str(tmp_path / "f.jsonl")
    ended: list[str] = []
    holding = threading.Thread(target=lambda: ended.append(faults.hold(600, path)))
    holding.start()
    subprocess.run([sys.executable, "-c", HALTER, path], check=True)
    holding.join(60)
    assert not holding.is_alive()
    assert ended[0].startswith("halted: halted by") and "(from another process)" in ended[0]


def test_hold_returns_early_on_abort_and_at_expiry(tmp_path: Path) -> None:
    path = str(tmp_path / "f.jsonl")
    assert faults.hold(0.01, path) == "expired"
    ended: list[str] = []
    holding = threading.Thread(target=lambda: ended.append(faults.hold(600, path)))
    holding.start()
    try:
        safety.abort("nodes-alive breached")
        holding.join(60)
    finally:
        safety.reset_abort()
    assert ended == ["aborted: nodes-alive breached"]


CHAOS = str(Path(sys.executable).with_name("chaos"))


def test_the_stop_condition_control_interrupts_a_stock_run_while_halted(tmp_path: Path) -> None:
    path = str(tmp_path / "f.jsonl")
    exists = {"type": "python", "module": "os.path", "func": "exists", "arguments": {"path": "/"}}
    probe = {"type": "probe", "name": "root-exists", "tolerance": True, "provider": exists}
    control = {
        "name": "stop-conditions",
        "provider": {
            "type": "python",
            "module": "freight.chaos.controls",
            "arguments": {"stop_when": [probe]},
        },
    }
    experiment = {
        "title": "t",
        "description": "d",
        "configuration": {"freight_fault_journal": path},
        "controls": [control],
        "method": [probe],
    }
    (tmp_path / "e.json").write_text(json.dumps(experiment))
    faults.halt(path, "maintenance")
    argv = [CHAOS, "--no-version-check", "--no-log-file", "run", str(tmp_path / "e.json")]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
    ran = json.loads((tmp_path / "journal.json").read_text())
    assert ran["status"] == "interrupted" and ran["run"] == [], out.stderr
    assert "(maintenance)" in out.stderr and "freight chaos halt --clear" in out.stderr
