"""Timestamped transitions shared by the lifecycle state machines.

Every state machine in ``freight.core`` records each change as a :class:`Transition` (time, from,
to, cause) and can be asked to ``validate()`` itself; instrumentation and the state API read the
transitions, never private fields.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple


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
        self._listeners: list[Callable[[str, Transition], None]] = []

    def subscribe(self, fn: Callable[[str, Transition], None]) -> None:
        self._listeners.append(fn)

    def emit(self, key: str, tr: Transition) -> None:
        for fn in list(self._listeners):
            try:
                fn(key, tr)
            except Exception:
                # Telemetry must never take the runtime down: drop the failing listener.
                self._listeners.remove(fn)


now = time.time
