"""The write-ahead journal of fault injections: what was done to which process, and how to undo
it, written to disk before the fault happens, so that a harness that dies mid-fault (SIGKILL, a
lost terminal) leaves enough behind for `freight chaos recover` to undo it.

One JSON object a line, appended under an exclusive lock and flushed to disk before the fault:

- ``{"op": "inject", "id", "time", "fault", "target", "process", "signal", "undo",
  "expires", "by"}``: ``process`` is the signalled process's identity (pid, start time, command
  line, as :func:`freight.util.process.identity` gives it; empty for a fault that signals no
  process), so a revert never reaches a later process that got the same pid; ``signal`` says
  what was done (``SIGSTOP``, ``SIGKILL``, ``iptables``, ...); ``undo`` is the exact revert, a
  mapping whose ``kind`` names one of the fixed handlers of :mod:`freight.chaos.reverts`
  (``{"kind": "signal", "signal": "SIGCONT"}`` after a ``SIGSTOP``), or null when there is
  nothing to undo (a killed process: the runtime replaces what died).
- ``{"op": "end", "id", "time", "result", "by"}``: the fault is over (reverted at expiry,
  recovered, or nothing to undo).

An injection with an ``undo`` and no ``end`` is open: :func:`open_injections` lists them.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from freight.util.private_files import check_owned, make_private_dir

from . import safety

FORMAT = 1


class JournalError(ValueError):
    """The journal cannot be used as it is (damaged, or not this user's): the message says
    which line, and what to do."""


@dataclass(frozen=True)
class Injection:
    """One fault as the journal records it before it happens."""

    fault: str  # the action's name: "pause_node_agent", "kill_worker", ...
    target: dict[str, str]  # what the state API named: kind, id, node_id
    process: dict[str, Any]  # pid, create_time, cmdline of the signalled process
    signal: str  # what was done: "SIGSTOP", "SIGKILL", "SIGTERM", "iptables", ...
    undo: dict[str, Any] | None  # the exact revert (freight.chaos.reverts), None: nothing to undo
    expires: float  # unix time the harness reverts it by (0: nothing to revert)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: float = field(default_factory=time.time)
    by: int = field(default_factory=os.getpid)  # the harness process that injected it


def default_path() -> str:
    """Where the journal is unless an experiment or the command line names another: below
    FREIGHT_TEMP_DIR, next to the sessions of the clusters it touches."""
    return os.path.join(safety.chaos_dir(), "faults.jsonl")


@contextmanager
def locked(path: str) -> Iterator[int]:
    """The journal at ``path`` opened for appending under its exclusive lock (two harnesses
    never interleave their lines; a halt and an injection never cross): its descriptor."""
    folder = os.path.dirname(os.path.abspath(path))
    make_private_dir(folder, "the chaos journal's folder")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        check_owned(path, "the chaos journal")
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing drops the lock


def _write(fd: int, record: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
    os.fsync(fd)  # on disk before the fault happens: that is the journal's point


def _append(path: str, record: dict[str, Any]) -> None:
    with locked(path) as fd:
        _write(fd, record)


def write_injection(path: str, injection: Injection) -> None:
    """Record ``injection`` before it happens; refused (:class:`safety.Halted`, nothing
    written) while the harness is halted. The check is made under the journal's lock, which
    `freight chaos halt` takes to write its marker: an injection is either recorded before the
    halt, and reverted by it, or refused. A fault with a revert first has this process's
    watchdog started, which reverts it should this process die before it does."""
    safety.refuse_if_aborted()
    safety.refuse_if_halted(path)  # first without the lock too: no watchdog for a refusal
    if injection.undo is not None:
        safety.start_watchdog(path)
    with locked(path) as fd:
        safety.refuse_if_halted(path)
        _write(fd, {"op": "inject", "format": FORMAT, **asdict(injection)})


def write_end(path: str, injection_id: str, result: str) -> None:
    """Record that the injection ``injection_id`` is over, and how (``result``)."""
    _append(
        path,
        {"op": "end", "id": injection_id, "time": time.time(), "result": result, "by": os.getpid()},
    )


def read(path: str) -> Iterator[dict[str, Any]]:
    """The journal's records, oldest first; nothing when it does not exist. A line cut short
    by a harness killed mid-write is skipped only when it is the last one."""
    try:
        check_owned(path, "the chaos journal")
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return
    except PermissionError as e:
        raise JournalError(str(e)) from None
    last = max((i for i, text in enumerate(lines) if text.strip()), default=-1)
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
            if not isinstance(record, dict) or record.get("op") not in ("inject", "end"):
                raise ValueError("not a journal record")
        except ValueError as e:
            if number - 1 == last:
                continue  # the harness died while writing its last line: nothing was done yet
            raise JournalError(
                f"{path}, line {number}: {e}. The journal is damaged; move it aside and revert "
                "by hand what its earlier lines name (their pid and revert signal)."
            ) from None
        yield record


def open_injections(path: str) -> list[Injection]:
    """Injections of ``path`` that have an undo and were never marked over, oldest first."""
    injected: dict[str, dict[str, Any]] = {}
    for record in read(path):
        if record["op"] == "inject":
            injected[str(record.get("id"))] = record
        else:
            injected.pop(str(record.get("id")), None)
    out = []
    for record in injected.values():
        if not isinstance(record.get("undo"), dict):
            continue
        out.append(
            Injection(
                fault=str(record.get("fault", "")),
                target=dict(record.get("target") or {}),
                process=dict(record.get("process") or {}),
                signal=str(record.get("signal", "")),
                undo=dict(record["undo"]),
                expires=float(record.get("expires") or 0.0),
                id=str(record.get("id")),
                time=float(record.get("time") or 0.0),
                by=int(record.get("by") or 0),
            )
        )
    return out
