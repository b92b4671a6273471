"""The exact reverts the journal records, and the one place that carries them out.

An injection's ``undo`` is a mapping whose ``kind`` names one of :data:`HANDLERS`, a fixed table
in this module: a journal decides what runs as the harness's user, so it can name a handler but
never a module or a command. Each handler takes the injection and returns what it did
("sent SIGCONT", "removed chain FREIGHT-…", "its process had ended", ...); it must be safe to call twice and when the fault already
ended by itself (a second revert finds nothing and says so), because `freight chaos recover`,
`freight chaos halt`, the watchdog and the harness at expiry may all reach the same fault.
"""

from __future__ import annotations

import importlib
import signal
from collections.abc import Callable

from freight.util.process import signal_recorded

from .journal import Injection, JournalError

Handler = Callable[[Injection], str]


def undo_signal(injection: Injection) -> str:
    """Send the recorded signal (``SIGCONT`` after a pause) to the recorded process, only if
    that very process still runs."""
    assert injection.undo is not None
    if not injection.process.get("pid"):
        raise JournalError(
            f"injection {injection.id} ({injection.fault}) has a signal to send but records no "
            "process to send it to; nothing can be reverted for it: move the journal aside"
        )
    sig = signal.Signals.__members__.get(str(injection.undo.get("signal", "")))
    if sig is None:
        raise JournalError(
            f"injection {injection.id} names the revert signal {injection.undo.get('signal')!r}, "
            f"which is no signal; revert pid {injection.process.get('pid')} by hand, then move "
            "the journal aside"
        )
    if signal_recorded(injection.process, sig):
        return f"sent {sig.name}"
    return "its process had ended"


# kind -> "module:function" (imported on first use, so a revert needs only its own module)
HANDLERS: dict[str, str] = {
    "signal": "freight.chaos.reverts:undo_signal",
    "iptables": "freight.chaos.network:undo_rules",
    "file": "freight.chaos.resources:undo_file",
    "rpc": "freight.chaos.rpc:undo_rpc_fault",
}


def handler(kind: str) -> Handler:
    spec = HANDLERS.get(kind)
    if spec is None:
        raise JournalError(
            f"the journal names the revert kind {kind!r}, which this freight does not know "
            f"(known: {', '.join(sorted(HANDLERS))}); revert it by hand with what its line "
            "records, then move the journal aside"
        )
    module, _, name = spec.partition(":")
    fn: Handler = getattr(importlib.import_module(module), name)
    return fn


def undo(injection: Injection) -> str:
    """Carry out ``injection``'s recorded revert; what it did."""
    if injection.undo is None:
        return "nothing to undo"
    return handler(str(injection.undo.get("kind", "")))(injection)
