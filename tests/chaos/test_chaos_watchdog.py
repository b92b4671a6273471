"""The watchdog against real processes, without a cluster: a harness that injects a pause
starts it; it continues the paused process when the harness is SIGKILLed, and when the harness
lives on but holds a fault past its expiry (stopped itself); it exits once nothing of its
harness is open."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from freight.chaos import journal, reverts, watchdog
from freight.testing import wait_for_condition

# A harness that pauses the process it is given with a journalled revert, as faults do, and
# then never reverts it: only the watchdog can.
HARNESS = """
import json, os, signal, sys, time
from freight.chaos import journal, reverts, watchdog
from freight.util.process import identity
victim = int(sys.argv[2])
injection = journal.Injection(
    "pause_worker", {"kind": "worker", "id": "w", "node_id": "n"}, identity(victim), "SIGSTOP",
    {"kind": "signal", "signal": "SIGCONT"}, time.time() + float(sys.argv[3]),
)
journal.write_injection(sys.argv[1], injection)
os.kill(victim, signal.SIGSTOP)
print("paused", flush=True)
sys.stdin.read()  # held until the test kills or stops it
"""


def stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def watchdogs_of(path: Path, harness: int) -> list[psutil.Process]:
    return [psutil.Process(w) for w, h in watchdog.running(str(path)).items() if h == harness]


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


def start_harness(path: Path, victim: int, expires_in: float) -> subprocess.Popen[str]:
    harness = subprocess.Popen(
        [sys.executable, "-c", HARNESS, str(path), str(victim), str(expires_in)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert harness.stdout is not None and harness.stdout.readline() == "paused\n"
    wait_for_condition(lambda: stopped(victim), 30, "the victim stopped")  # signals are async
    return harness


def test_the_watchdog_continues_what_a_killed_harness_left_paused(
    tmp_path: Path, victim: subprocess.Popen[bytes]
) -> None:
    path = tmp_path / "f.jsonl"
    harness = start_harness(path, victim.pid, 600)
    (watchdog,) = wait_for_condition(lambda: watchdogs_of(path, harness.pid), 30, "its watchdog")
    assert os.getsid(watchdog.pid) != os.getsid(harness.pid)  # detached: outlives its harness
    assert stopped(victim.pid)
    harness.kill()
    harness.communicate()
    killed = time.monotonic()
    wait_for_condition(lambda: not stopped(victim.pid), 60, "the watchdog to continue it")
    print(f"continued {time.monotonic() - killed:.3f} s after the harness's SIGKILL")
    (end,) = [r for r in journal.read(str(path)) if r["op"] == "end"]
    assert end["result"] == "watchdog (its harness is gone): sent SIGCONT"
    assert end["by"] == watchdog.pid
    assert journal.open_injections(str(path)) == []
    watchdog.wait(60)  # nothing of its harness is open: it is done
    log = (tmp_path / "watchdog.log").read_text()
    assert "pause_worker on w: sent SIGCONT (its harness is gone)" in log
    assert log.endswith("the harness is gone and none of its faults is open: done\n")


def test_the_watchdog_reverts_a_fault_past_its_expiry_while_the_harness_hangs(
    tmp_path: Path, victim: subprocess.Popen[bytes]
) -> None:
    path = tmp_path / "f.jsonl"
    harness = start_harness(path, victim.pid, 0.5)
    try:
        harness.send_signal(signal.SIGSTOP)  # the harness lives on but does nothing
        wait_for_condition(lambda: not stopped(victim.pid), 60, "the watchdog to continue it")
        (end,) = [r for r in journal.read(str(path)) if r["op"] == "end"]
        assert end["result"] == "watchdog (it is past its expiry): sent SIGCONT"
        (watchdog,) = wait_for_condition(
            lambda: watchdogs_of(path, harness.pid), 30, "its watchdog"
        )
        assert watchdog.is_running()  # its harness still runs: it keeps watching
    finally:
        harness.kill()
        harness.communicate()
    watchdog.wait(60)
    assert (tmp_path / "watchdog.log").read_text().endswith("open: done\n")


def test_a_fault_with_nothing_to_revert_starts_no_watchdog(tmp_path: Path) -> None:
    injection = journal.Injection("kill_worker", {"kind": "worker"}, {}, "SIGKILL", None, 0)
    journal.write_injection(str(tmp_path / "f.jsonl"), injection)
    assert not (tmp_path / "watchdog.log").exists()
    assert json.loads((tmp_path / "f.jsonl").read_text())["undo"] is None


def test_a_watchdog_over_a_damaged_journal_says_so_once_and_ends_with_its_harness(
    tmp_path: Path, victim: subprocess.Popen[bytes]
) -> None:
    path = tmp_path / "f.jsonl"
    harness = start_harness(path, victim.pid, 600)
    (watchdog,) = wait_for_condition(lambda: watchdogs_of(path, harness.pid), 30, "its watchdog")
    with open(path, "a") as f:
        f.write("not json\n{}\n")  # damaged before its last line: nothing can read it
    log = tmp_path / "watchdog.log"
    wait_for_condition(lambda: "line 2: " in log.read_text(), 30, "the damage logged")
    harness.kill()
    harness.communicate()
    watchdog.wait(60)
    text = log.read_text()
    assert text.count("The journal is damaged") == 1
    assert text.endswith(f"the harness is gone; `freight chaos recover {path}` says what is left\n")
    assert stopped(victim.pid)  # left to recover and to a person, as the log says


def test_a_signal_revert_that_records_no_process_is_refused_not_retried(tmp_path: Path) -> None:
    """A journal line with a signal to send and no process to send it to can never be
    reverted: a journal error (the watchdog logs it and moves on; recover says so), never a
    failure the watchdog retries for minutes."""
    undo = {"kind": "signal", "signal": "SIGCONT"}
    injection = journal.Injection("pause_node_agent", {"kind": "node"}, {}, "SIGSTOP", undo, 0)
    with pytest.raises(journal.JournalError, match="records no process"):
        reverts.undo(injection)
    path = str(tmp_path / "f.jsonl")
    journal.write_injection(path, injection)
    gone = {"pid": injection.by, "create_time": 0.0, "cmdline": ["gone"]}  # not this process
    assert watchdog.sweep(path, gone, time.time()) == (0, False)  # nothing left to retry
