"""One record read once (the detail screen's ``get_state``), as a source like every other.

The read runs in a thread; ``take()`` gives a :class:`Lookup` that is not ``done`` until the
head answered (or failed to). Being a source, it is recorded and replayed like the views.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from freight import state

GET_TIMEOUT_S = 10.0


@dataclass
class Lookup:
    """The record as the head gave it (``row`` None: gone), or why it could not be read."""

    done: bool
    row: dict[str, Any] | None = None
    error: str = ""

    @classmethod
    def nothing(cls, note: str) -> Lookup:
        # Before the answer: not done. In a replay that never saw it: done, with the reason.
        return cls(done=bool(note), error=note)


class Get:
    """``state.get_state(kind, key)`` once, in a thread."""

    def __init__(self, kind: str, key: str, *, address: str) -> None:
        self.kind, self.key, self.address = kind, key, address
        self._lock = threading.Lock()
        self._result = Lookup(done=False)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Get:
        self._thread.start()
        return self

    def stop(self) -> None:
        pass  # one read, bounded by its timeout: nothing to let go

    def take(self) -> Lookup:
        with self._lock:
            return replace(self._result)

    def _run(self) -> None:
        try:
            row = state.get_state(self.kind, self.key, address=self.address, timeout=GET_TIMEOUT_S)
        except (ConnectionError, ValueError, PermissionError) as e:
            result = Lookup(done=True, error=str(e))
        else:
            result = Lookup(done=True, row=row)
        with self._lock:
            self._result = result
