"""Process faults with their safety rules: journalled before they happen, time-boxed, reverted
by the harness at expiry (or by `freight chaos recover` after a harness that died), and never
the cluster's last healthy node.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from typing import Any

import psutil

from freight.client import access
from freight.util.process import is_recorded_process, signal_recorded, wait_exit

from . import journal, reverts, safety, targets
from .safety import hold
from .targets import FaultRefused, ProcessTarget

MAX_PAUSE_S = 3600.0  # a pause is time-boxed: an hour is the longest a run may hold a process
KILL_SIGNALS = ("SIGKILL", "SIGTERM")
KILL_WAIT_S = 10.0  # how long a SIGKILLed process may take to exit

logger = logging.getLogger("chaostoolkit")  # where chaoslib tells what a run does


@dataclass(frozen=True)
class FaultResult:
    """What a fault did, as the experiment's journal records it."""

    fault: str
    target: dict[str, str]
    pid: int
    signal: str
    seconds: float  # how long the fault held (a pause), or how long the process took to go
    result: str  # "killed", "exited", "continued", "gone" (ended while paused)
    injection_id: str
    ended: str = "expired"  # why a held fault ended: "expired", "halted: ...", "aborted: ..."

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            **{f"target_{k}": v for k, v in self.target.items()},
            "pid": self.pid,
            "signal": self.signal,
            "seconds": round(self.seconds, 3),
            "result": self.result,
            "injection_id": self.injection_id,
            "ended": self.ended,
        }


def journal_path(configuration: dict[str, Any] | None) -> str:
    """The write-ahead journal an experiment's faults go to: its ``freight_fault_journal``
    configuration, else :func:`journal.default_path`."""
    return str((configuration or {}).get("freight_fault_journal") or journal.default_path())


def signal_number(name: str, allowed: tuple[str, ...]) -> signal.Signals:
    if name not in allowed:
        raise access.UsageError(f"signal must be one of {', '.join(allowed)}, got {name!r}")
    return signal.Signals[name]


def signal_name(name: str) -> str:
    """``name`` checked as a kill signal (a dry run plans only what would run)."""
    return signal_number(name, KILL_SIGNALS).name


def check_duration(duration: float) -> float:
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise access.UsageError(f"duration must be a number of seconds, got {duration!r}")
    if not 0 < duration <= MAX_PAUSE_S:
        raise access.UsageError(
            f"duration must be more than 0 and at most {MAX_PAUSE_S:g} s, got {duration!r}"
        )
    return float(duration)


def held_node_ids(path: str) -> set[str]:
    """Nodes an open injection of the journal holds (an agent paused, a node cut off or
    starved): not healthy, whatever the head says yet. A fault on a process that has since
    ended holds nothing."""
    return {
        i.target.get("node_id", "")
        for i in journal.open_injections(path)
        if i.target.get("kind") == "node" and (not i.process or is_recorded_process(i.process))
    }


def dry_run(configuration: dict[str, Any] | None) -> bool:
    """Whether the run only plans (``freight_dry_run`` in the configuration, set by
    ``freight chaos run --dry-run``): actions then name their target and blast radius and do
    nothing."""
    return (configuration or {}).get("freight_dry_run") is True


def planned(
    cluster: access.Target, fault: str, target: dict[str, str], **details: Any
) -> dict[str, Any]:
    """What an action returns in a dry run: the fault, the target it would hit (``target``, as
    :meth:`ProcessTarget.describe` gives it), what it would do (``details``) and its blast
    radius from the cluster's state (:func:`safety.blast_radius`), logged as one line; nothing
    journalled, nothing done."""
    plan = {
        "dry_run": True,
        "fault": fault,
        **{f"target_{k}": v for k, v in target.items()},
        **details,
        "blast_radius": safety.blast_radius(cluster, target),
    }
    logger.info(f"dry run: {safety.plan_line(plan)}")
    return plan


def refuse_last_healthy_node(cluster: access.Target, node_id: str, path: str) -> None:
    """Refuse a fault on ``node_id`` that would leave no healthy node: none ALIVE besides it, or
    every other one held paused by a fault in flight."""
    paused = held_node_ids(path)
    others = [
        n["node_id"]
        for n in targets.alive_nodes(cluster)
        if n["node_id"] != node_id and n["node_id"] not in paused
    ]
    if not others:
        raise FaultRefused(
            f"node {node_id} is the cluster's last healthy node (every other node is dead, "
            "draining or held by a fault in flight): a fault on it would take the whole "
            "cluster down, which a chaos experiment never does; add a node first"
        )


def kill(fault: str, target: ProcessTarget, sig_name: str, path: str, grace: float) -> FaultResult:
    """Send ``sig_name`` (SIGKILL or SIGTERM) to ``target``'s process and wait until it is gone:
    a SIGTERM not obeyed within ``grace`` seconds is followed by SIGKILL (the fault is
    time-boxed). Nothing to revert: the runtime replaces what died, and the probes tell whether
    it did."""
    sig = signal_number(sig_name, KILL_SIGNALS)
    injection = journal.Injection(fault, target.describe(), target.process, sig.name, None, 0.0)
    journal.write_injection(path, injection)
    started = time.monotonic()
    if not signal_recorded(target.process, sig):
        journal.write_end(path, injection.id, "gone before the signal")
        raise FaultRefused(f"the {target.kind}'s process {target.pid} ended before the signal")
    result = "killed" if sig == signal.SIGKILL else "exited"
    deadline = started + max(grace, 0.0)
    while not exited(target.process):
        left = deadline - time.monotonic()
        if left > 0:
            wait_exit(target.pid, left)
        elif result != "killed":  # an ignored SIGTERM: the fault is time-boxed
            signal_recorded(target.process, signal.SIGKILL)
            result, deadline = "killed", time.monotonic() + KILL_WAIT_S
        else:
            journal.write_end(path, injection.id, "still running after SIGKILL")
            raise access.CommandFailed(
                f"the {target.kind}'s process {target.pid} still runs {KILL_WAIT_S:g} s after "
                "SIGKILL (stuck in the kernel?): look at it with `ps -o stat,wchan -p "
                f"{target.pid}`"
            )
    journal.write_end(path, injection.id, result)
    return FaultResult(
        fault,
        target.describe(),
        target.pid,
        sig.name,
        time.monotonic() - started,
        result,
        injection.id,
    )


def exited(process: dict[str, Any]) -> bool:
    """Whether the process ``process`` records has exited (a zombie counts: it runs no more),
    or its pid now names another. Not :func:`is_recorded_process`: a process that is exiting
    has already lost its command line while it still runs."""
    try:
        proc = psutil.Process(int(process["pid"]))
        if abs(proc.create_time() - float(process["create_time"])) >= 0.01:
            return True  # the pid was given to another process
        return proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True


def pause(fault: str, target: ProcessTarget, duration: float, path: str) -> FaultResult:
    """SIGSTOP ``target``'s process for ``duration`` seconds, then SIGCONT it: journalled before
    the stop, reverted here at expiry (also when the run is interrupted, halted or aborted), or
    by `freight chaos recover` when the harness died."""
    duration = check_duration(duration)
    expires = time.time() + duration
    injection = journal.Injection(
        fault,
        target.describe(),
        target.process,
        "SIGSTOP",
        {"kind": "signal", "signal": "SIGCONT"},
        expires,
    )
    journal.write_injection(path, injection)
    started = time.monotonic()
    if not signal_recorded(target.process, signal.SIGSTOP):
        journal.write_end(path, injection.id, "gone before the signal")
        raise FaultRefused(f"the {target.kind}'s process {target.pid} ended before the signal")
    result, ended = "gone", "interrupted"
    try:
        ended = hold(duration, path)  # the fault itself: the process stays stopped this long
    finally:
        if signal_recorded(target.process, signal.SIGCONT):
            result = "continued"
        early = ended not in ("expired", "interrupted")  # a halt or an abort ended it
        journal.write_end(path, injection.id, f"{result} ({ended})" if early else result)
    return FaultResult(
        fault,
        target.describe(),
        target.pid,
        "SIGSTOP",
        time.monotonic() - started,
        result,
        injection.id,
        ended,
    )


def halt(path: str, reason: str) -> tuple[safety.Halt, str, list[Recovered]]:
    """`freight chaos halt`: write the halt marker next to the journal at ``path`` (under the
    journal's lock, so an injection is either recorded before it or refused), then revert every
    open injection of the journal. Faults held by other harness processes see the marker and
    end early. Returns the halt, its marker's path and what was reverted."""
    found = safety.halted(path)
    if found is not None:
        raise access.UsageError(
            f"the chaos harness is already {found.describe()}; `freight chaos recover` reverts "
            f"what is still open, {safety.clear_command(path)} lets faults run again"
        )
    record = safety.Halt(reason)
    with journal.locked(path):
        marker = safety.write_marker(path, record)
    return record, marker, recover(path)


@dataclass(frozen=True)
class Recovered:
    """One open injection `freight chaos recover` dealt with."""

    injection: journal.Injection
    result: str  # what its revert did, in words ("sent SIGCONT", "its process had ended")


def recover(path: str) -> list[Recovered]:
    """Revert every open injection of the journal at ``path`` with its recorded undo (a signal
    only to the very process it recorded, never to a later one with its pid) and mark it over.
    Running it again finds nothing open."""
    done = []
    for injection in journal.open_injections(path):
        try:
            result = reverts.undo(injection)
        except journal.JournalError as e:
            raise journal.JournalError(f"{path}: {e}") from None
        journal.write_end(path, injection.id, f"recovered: {result}")
        done.append(Recovered(injection, result))
    return done
