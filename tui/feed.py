"""The inspector's data layer: one window of a kind's rows, read through :mod:`freight.state` only.

A :class:`Feed` runs in a thread of its own and lists its window every ``refresh`` seconds: at
most ``limit`` rows passing the view's filters, from the row after ``cursor`` (the page's start;
None: the first row), as ``freight list`` pages. Each listing is compared by the kind's id with
the rows held, and the changes gather until the screen takes them as one :class:`Batch`
(``take()``, which never blocks): a row changed ten times between two repaints is drawn once.

Only the window crosses the network and is held, whatever the kind holds (a watch would send
every matching row: 100,000 tasks). The same listing says how many rows match and the kind holds
(``showing N of M``), where the window starts among them, where the next page starts, and whether
the head answers (the stale marker).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from freight import state
from freight.client import access
from freight.core.filters import FilterError


def id_keys(address: str) -> dict[str, str]:
    """The id field of each kind, as the head defines it (one call; it also proves the head
    answers before the screen opens)."""
    return {k: s.id_key for k, s in state.schema(address=address).items()}


LIST_TIMEOUT_S = 5.0

# The field of each kind a bare word in the filter (`/train`) searches as a regular expression.
TEXT_FIELD = {
    "nodes": "hostname",
    "jobs": "entrypoint",
    "tasks": "name",
    "actors": "class_name",
    "objects": "object_id",
    "workers": "worker_id",
    "placement_groups": "name",
    "events": "message",
}


@dataclass
class Batch:
    """What changed since the last ``take()``: ``changes`` maps an id to its new row, or to None
    when the row left the view; the rest describes the feed as of now."""

    changes: dict[str, dict[str, Any] | None]
    synced: bool  # the first listing is complete
    matched: int | None  # rows passing the filters, as the head counts them (None: not known)
    total: int | None  # rows the kind holds
    stale_since: float | None  # when the head stopped answering (None: it answers)
    stale_reason: str
    error: str  # a refusal that stopped the feed (a bad filter, a denied token)
    first: int = 1  # the position of the window's first row among the matching rows (from 1)
    next_cursor: str = ""  # where the next page starts ("": the window reaches the last row)

    # What recording and replay need of a payload of changes (freight.tui.record.Payload).
    def quiet(self) -> Batch:
        return replace(self, changes={})

    @classmethod
    def merge(cls, batches: list[Batch]) -> Batch:
        changes: dict[str, dict[str, Any] | None] = {}
        for b in batches:
            changes.update(b.changes)
        return replace(batches[-1], changes=changes)

    @classmethod
    def nothing(cls, note: str) -> Batch:
        return cls({}, False, None, None, None, "", "")


@dataclass
class _Shared:
    pending: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    synced: bool = False
    matched: int | None = None
    total: int | None = None
    stale_since: float | None = None
    stale_reason: str = ""
    error: str = ""
    first: int = 1
    next_cursor: str = ""


class Feed:
    """The live rows of ``kind`` passing ``filters`` (filter strings, evaluated by the head): at
    most ``limit`` of them, from the row after ``cursor`` (None: from the first), in the head's
    order or by the field ``sort_by`` (``descending`` or not)."""

    def __init__(
        self,
        kind: str,
        filters: list[str],
        *,
        address: str,
        id_key: str,
        refresh: float,
        limit: int,
        cursor: str | None = None,
        sort_by: str = "",
        descending: bool = False,
    ) -> None:
        self.kind = kind
        self.filters = list(filters)
        self.address = address
        self.id_key = id_key
        self.refresh = refresh
        self.limit = limit  # the window: rows listed per round
        self.cursor = cursor
        self.sort_by, self.descending = sort_by, descending  # the head's order ("": its own)
        self._lock = threading.Lock()
        self._shared = _Shared()
        self._rows: dict[str, dict[str, Any]] = {}  # the feed thread's own copy
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._guard(self._poll), daemon=True)]

    # -- the screen's side --------------------------------------------------------------------

    def start(self) -> Feed:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop following (the thread ends at its next round)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def take(self) -> Batch:
        """The changes gathered since the last call, and the feed's state now."""
        with self._lock:
            s = self._shared
            changes, s.pending = s.pending, {}
            return Batch(
                changes,
                s.synced,
                s.matched,
                s.total,
                s.stale_since,
                s.stale_reason,
                s.error,
                s.first,
                s.next_cursor,
            )

    # -- the feed's threads -------------------------------------------------------------------

    def _guard(self, run: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            while not self._stop.is_set():
                try:
                    run()
                    return
                except ConnectionError:
                    self._stop.wait(self.refresh)  # no head to list from (yet): again
                except (access.UsageError, FilterError, PermissionError) as e:
                    self._fail(str(e))  # the request itself was refused: retrying cannot help
                except Exception as e:
                    self._fail(f"the feed stopped: {type(e).__name__}: {e}")
                    raise  # a bug: its traceback goes to the thread's excepthook

        return guarded

    def _fail(self, message: str) -> None:
        with self._lock:
            self._shared.error = message
        self._stop.set()

    def _key(self, row: dict[str, Any]) -> str:
        return str(row.get(self.id_key, ""))

    def _put(self, key: str, row: dict[str, Any] | None) -> None:
        """Record one change (the caller holds the lock)."""
        if row is None:
            self._rows.pop(key, None)
        else:
            self._rows[key] = row
        self._shared.pending[key] = row

    def _shape(self, rows: state.StateList) -> list[dict[str, Any]]:
        """The listed rows as the view shows them (a kind may join more in: objects)."""
        return list(rows)

    def _replace(self, got: state.StateList) -> None:
        """Make the listing ``got`` the feed's rows, recording only what differs, and its
        counts the feed's (at once: a batch never pairs new rows with old counts)."""
        rows = {self._key(r): r for r in self._shape(got)}
        with self._lock:
            for key in [k for k in self._rows if k not in rows]:
                self._put(key, None)
            for key, row in rows.items():
                if self._rows.get(key) != row:
                    self._put(key, row)
            s = self._shared
            s.synced = True
            s.matched, s.total, s.next_cursor = got.matched, got.total, got.next_cursor
            s.first = got.matched - got.remaining - len(got) + 1
            s.stale_since, s.stale_reason = None, ""

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                got = state.list_state(
                    self.kind,
                    self.filters,
                    limit=self.limit,
                    cursor=self.cursor,
                    sort_by=self.sort_by,
                    descending=self.descending,
                    address=self.address,
                    timeout=LIST_TIMEOUT_S,
                )
            except ConnectionError as e:  # the rows held stay on screen, marked stale
                with self._lock:
                    if self._shared.stale_since is None:
                        self._shared.stale_since = time.time()
                    self._shared.stale_reason = str(e)
            else:
                self._replace(got)
            self._stop.wait(self.refresh)
