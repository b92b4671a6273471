"""The harness's brakes: the halt marker (`freight chaos halt`) that makes every new injection
refuse and every fault in flight end early, and :func:`hold`, the one wait a fault holds its
effect with, which returns early on a halt or when the run aborts (a breached stop condition).

The marker is ``halt.json`` in the fault journal's folder: the default journal's folder
(``$FREIGHT_TEMP_DIR/chaos``) halts every journal on this machine, another folder halts the
journals kept there. It records who halted (user, host, pid), when and why, and stays until
`freight chaos halt --clear`. This module depends on nothing else of freight.chaos but the
refusal type, so the journal can check the marker under its own lock.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from freight.config import settings
from freight.util.private_files import check_owned, make_private_dir, write_private_file

from .targets import FaultRefused

MARKER = "halt.json"
POLL_S = 0.1  # how often a held fault looks at the marker: a halt ends it within this


class Halted(FaultRefused):
    """An injection refused because the harness is halted: nothing was done."""


@dataclass(frozen=True)
class Halt:
    """Who halted the harness, when and why, as the marker records it."""

    reason: str
    user: str = field(default_factory=getpass.getuser)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    time: float = field(default_factory=time.time)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.time))
        why = f" ({self.reason})" if self.reason else ""
        return f"halted by {self.user} on {self.host} (pid {self.pid}) at {when}{why}"


def chaos_dir() -> str:
    """The folder of the default fault journal and of the machine-wide halt marker."""
    return os.path.join(settings.temp_dir, "chaos")


def marker_path(journal_path: str) -> str:
    """The halt marker that `freight chaos halt` writes for the journal at ``journal_path``."""
    return os.path.join(os.path.dirname(os.path.abspath(journal_path)), MARKER)


def _markers(journal_path: str) -> Iterator[str]:
    own = marker_path(journal_path)
    yield own
    machine = os.path.join(chaos_dir(), MARKER)
    if os.path.abspath(machine) != own:
        yield machine


def read_marker(path: str) -> Halt | None:
    """The halt the marker at ``path`` records, None when there is none. A marker that cannot
    be read still halts (a broken brake must not release faults): it reads as a halt saying
    what is wrong with it."""
    try:
        check_owned(path, "the chaos halt marker")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return Halt(
            reason=str(data.get("reason", "")),
            user=str(data.get("user", "?")),
            host=str(data.get("host", "?")),
            pid=int(data.get("pid") or 0),
            time=float(data.get("time") or 0.0),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError) as e:
        return Halt(reason=f"the marker {path} is unreadable ({e}); remove it to clear", pid=0)


def halted(journal_path: str) -> Halt | None:
    """The halt in force for the journal at ``journal_path`` (its folder's marker, or the
    machine-wide one), None when faults may run."""
    for path in _markers(journal_path):
        found = read_marker(path)
        if found is not None:
            return found
    return None


def refuse_if_halted(journal_path: str) -> None:
    """Raise :class:`Halted` when a halt is in force for ``journal_path``."""
    found = halted(journal_path)
    if found is not None:
        where = next(p for p in _markers(journal_path) if read_marker(p) is not None)
        raise Halted(
            f"the chaos harness is {found.describe()}: no fault runs until it is cleared with "
            f"`freight chaos halt --clear` (marker {where})"
        )


def write_marker(journal_path: str, halt: Halt) -> str:
    """Write ``halt`` as the marker of ``journal_path``'s folder; its path."""
    path = marker_path(journal_path)
    make_private_dir(os.path.dirname(path), "the chaos journal's folder")
    write_private_file(path, json.dumps(asdict(halt), indent=1) + "\n")
    return path


def clear_marker(journal_path: str) -> Halt | None:
    """Remove the marker of ``journal_path``'s folder; the halt it held, None if none."""
    path = marker_path(journal_path)
    found = read_marker(path)
    if found is not None:
        os.unlink(path)
    return found


# A breached stop condition aborts this process's run: faults held here end at once.
_abort = threading.Event()
_abort_reason: list[str] = []


def abort(reason: str) -> None:
    """End every fault this process holds now (their waits return), and say why."""
    _abort_reason[:] = [reason]
    _abort.set()


def aborted() -> str | None:
    """Why this process's run was aborted, None while it was not."""
    return _abort_reason[0] if _abort.is_set() and _abort_reason else None


def reset_abort() -> None:
    """A new run starts: a past abort no longer ends its faults."""
    _abort.clear()
    _abort_reason.clear()


def hold(duration: float, journal_path: str) -> str:
    """Wait ``duration`` seconds while a fault holds its effect, returning early when the
    harness is halted or the run aborted. Returns why it returned: ``"expired"``,
    ``"halted: ..."`` or ``"aborted: ..."``, for the fault's ``end`` record."""
    deadline = time.monotonic() + duration
    while True:
        found = halted(journal_path)
        if found is not None:
            return f"halted: {found.describe()}"
        left = deadline - time.monotonic()
        if left <= 0:
            return "expired"
        if _abort.wait(min(left, POLL_S)):
            return f"aborted: {aborted() or 'the run was aborted'}"
