"""The watchdog: a process of its own, started detached by a harness's first fault that needs a
revert, that reverts the harness's faults when the harness disappears (SIGKILL, a lost
terminal, an OOM kill) and any fault still open past its expiry, without anyone calling
`freight chaos recover`.

It watches the harness by identity (pid, start time, command line: a later process given the
same pid is not the harness), woken at once by the harness's exit through a pidfd and every
:data:`WATCH_S` for expiries. Reverts go through :func:`freight.chaos.reverts.undo`, the same
table `recover` uses, each followed by the journal's ``end`` record. It exits once the harness
is gone and none of its faults is open.

Run as ``python -m freight.chaos.watchdog JOURNAL HARNESS`` (``HARNESS`` the harness's
identity as JSON); :func:`freight.chaos.safety.start_watchdog` starts it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import psutil

from freight.util.process import is_recorded_process, wait_exit

from . import journal, reverts

WATCH_S = 1.0  # how often expiries are checked; the harness's exit wakes the watchdog at once
# The harness reverts a fault at its expiry itself: the watchdog steps in only this much later,
# so that both do not race for the same revert when all is well.
EXPIRY_GRACE_S = 2.0
GIVE_UP_S = 300.0  # a revert still failing this long after the harness went is left to a person


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"[{stamp}] freight chaos watchdog: {message}", file=sys.stderr, flush=True)


def sweep(path: str, harness: dict[str, Any], now: float) -> tuple[int, bool]:
    """Revert the open injections of ``path`` whose harness is gone or whose expiry (with its
    grace) has passed. Returns how many faults of the harness are still open and revertable
    (a revert that failed for a reason that may pass), and whether the harness still runs."""
    alive = is_recorded_process(harness)
    mine = 0
    for injection in journal.open_injections(path):
        ours = injection.by == harness["pid"]
        overdue = 0 < injection.expires < now - EXPIRY_GRACE_S
        if not ((ours and not alive) or overdue):
            mine += ours
            continue
        why = "its harness is gone" if ours and not alive else "it is past its expiry"
        try:
            result = reverts.undo(injection)
        except journal.JournalError as e:  # the journal names no revert it can make: never will
            _log(f"cannot revert {injection.fault} ({injection.id}): {e}")
            continue
        except Exception as e:  # a revert that failed now (a busy iptables lock): try again
            _log(f"reverting {injection.fault} ({injection.id}) failed, will try again: {e}")
            mine += ours
            continue
        journal.write_end(path, injection.id, f"watchdog ({why}): {result}")
        _log(f"{injection.fault} on {injection.target.get('id')}: {result} ({why})")
    return mine, alive


def watch(path: str, harness: dict[str, Any]) -> int:
    """Watch the harness ``harness`` and the journal at ``path`` until the harness is gone and
    none of its faults is open; the exit status (1: some were left to `freight chaos
    recover`)."""
    _log(f"watching harness pid {harness['pid']} and {path}")
    gone_since, damaged = 0.0, ""
    while True:
        try:
            mine, alive = sweep(path, harness, time.time())
        except journal.JournalError as e:  # a damaged journal: nothing here can read it
            if str(e) != damaged:
                damaged = str(e)
                _log(damaged)
            if not is_recorded_process(harness):
                _log(f"the harness is gone; `freight chaos recover {path}` says what is left")
                return 1
            wait_exit(int(harness["pid"]), WATCH_S)  # it may be mended while the harness runs
            continue
        if alive:
            wait_exit(int(harness["pid"]), WATCH_S)
            continue
        if mine == 0:
            _log("the harness is gone and none of its faults is open: done")
            return 0
        gone_since = gone_since or time.monotonic()
        if time.monotonic() - gone_since > GIVE_UP_S:
            _log(f"giving up: `freight chaos recover {path}` reverts what is left")
            return 1
        time.sleep(WATCH_S)  # the retry period of a revert that failed, not a synchronisation


def running(journal_path: str) -> dict[int, int]:
    """The watchdogs of this machine over the journal at ``journal_path``: their pid -> the pid
    of the harness each watches."""
    path = os.path.abspath(journal_path)
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if argv[1:4] == ["-m", __name__, path] and len(argv) == 5:
            try:
                found[proc.pid] = int(json.loads(argv[4])["pid"])
            except (ValueError, KeyError, TypeError):
                continue
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m freight.chaos.watchdog JOURNAL HARNESS_JSON", file=sys.stderr)
        return 2
    return watch(argv[0], json.loads(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
