"""A step's workload driver process (:mod:`freight.chaos.gameday.workload`), as the game day
starts, watches and stops it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from freight.client import access

from . import workload

POLL_S = 0.5  # how often a starting driver's ledger is read
WORKLOAD_START_S = 120.0  # a workload that has no right result back by then did not start
WORKLOAD_STOP_SLACK_S = 30.0  # past its drain, a workload that has not exited is killed


class Driver:
    """One workload driver process of a step, and its ledger."""

    def __init__(self, out_dir: str, step: str, k: int) -> None:
        base = f"{step}-{k + 1}"
        self.ledger = os.path.join(out_dir, "ledgers", f"{base}.jsonl")
        self.stop_file = os.path.join(out_dir, "ledgers", f"{base}.stop")
        self.log = os.path.join(out_dir, "logs", f"{base}.workload.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.drain = 60.0

    def start(self, address: str, spec: Any) -> None:
        self.drain = spec.drain
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "freight.chaos.gameday.workload",
                    "--address",
                    address,
                    "--ledger",
                    self.ledger,
                    "--stop-file",
                    self.stop_file,
                    "--kind",
                    spec.kind,
                    "--concurrency",
                    str(spec.concurrency),
                    "--task-seconds",
                    str(spec.task_seconds),
                    "--drain",
                    str(spec.drain),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the operator's Ctrl-C is the game day's to handle
            )

    @property
    def job_id(self) -> str:
        return self.outcome().job_id

    def outcome(self) -> workload.Outcome:
        return workload.read_ledger(self.ledger)

    def wait_started(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + WORKLOAD_START_S
        while not self.outcome().ok:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise access.CommandFailed(
                    f"the workload driver did not start (no right result within "
                    f"{WORKLOAD_START_S:g} s, or it exited): see {self.log}"
                )
            time.sleep(POLL_S)  # polling its ledger; the deadline above bounds it

    def wait_killed(self) -> bool:
        """Whether the driver exits (the step's fault killed it) within a grace period."""
        assert self.proc is not None
        try:
            self.proc.wait(WORKLOAD_STOP_SLACK_S)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """Ask it to stop submitting and drain, wait for it, and kill it past its drain."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with open(self.stop_file, "w"):
            pass
        try:
            self.proc.wait(self.drain + WORKLOAD_STOP_SLACK_S)
        except subprocess.TimeoutExpired:
            self.kill()
