"""Timestamped transitions shared by the lifecycle state machines.

Every state machine in ``freight.core`` records each change as a :class:`Transition` (time, from,
to, cause) and can be asked to ``validate()`` itself; instrumentation and the state API read the
transitions, never private fields.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple


class Transition(NamedTuple):
    time: float
    old: str
    new: str
    cause: str


class InvalidTransition(RuntimeError):
    """A state machine was asked to make a change its rules forbid (a bug, not user error)."""


class TransitionLog:
    """Listeners for transitions of one kind of state machine; failures never propagate."""

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: list[Callable[[Any, Transition], None]] = []

    def subscribe(self, fn: Callable[[Any, Transition], None]) -> None:
        """Call ``fn(key, transition)`` on every change; the key is the machine's record or id."""
        self._listeners.append(fn)

    def listening(self) -> bool:
        """True when any listener is subscribed (callers may skip building keys otherwise)."""
        return bool(self._listeners)

    def emit(self, key: Any, tr: Transition) -> None:
        listeners = self._listeners
        if not listeners:
            return
        for fn in list(listeners):
            try:
                fn(key, tr)
            except Exception as e:
                # Telemetry must never take the runtime down: report once, drop the listener.
                self._listeners.remove(fn)
                print(
                    f"freight: a transition listener failed and was removed: {e!r}", file=sys.stderr
                )


now = time.time
