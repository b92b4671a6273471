"""The inspector's data layer: the live rows of one kind, read through :mod:`freight.state` only.

A :class:`Feed` runs in a thread of its own. Watchable kinds follow ``state.watch`` (the listing,
then each change); objects and workers, which the head cannot watch, are listed again every
``refresh`` seconds and compared with the rows held. Either way the changes gather, keyed by the
kind's id, until the screen takes them as one :class:`Batch` (``take()``, which never blocks):
a row changed ten times between two repaints is drawn once.

Each round also lists one row of the kind with the view's filters, which is how the inspector
learns how many rows match and the kind holds (``showing N of M``) and whether the head answers
(the stale marker): ``state.watch`` itself waits out an unreachable head silently.
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

# A synced watch is resumed from its cursor after this many seconds, so a feed that was stopped
# (the view changed) lets go of its stream within that time even when nothing changes.
WATCH_SLICE_S = 5.0
LISTING_SLICE_S = 60.0  # a watch still listing (100,000 tasks take seconds) is given longer
PROBE_TIMEOUT_S = 5.0
KEEP_EVENTS = 5_000  # events held by the Events view; older ones leave it as new ones come

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


class Feed:
    """The live rows of ``kind`` passing ``filters`` (filter strings, evaluated by the head)."""

    def __init__(
        self,
        kind: str,
        filters: list[str],
        *,
        address: str,
        id_key: str,
        refresh: float,
        limit: int,
    ) -> None:
        self.kind = kind
        self.filters = list(filters)
        self.address = address
        self.id_key = id_key
        self.refresh = refresh
        self.limit = limit  # rows listed per round for kinds that cannot be watched
        self.watchable = kind in state.WATCH_KINDS
        self._lock = threading.Lock()
        self._shared = _Shared()
        self._rows: dict[str, dict[str, Any]] = {}  # the feed thread's own copy
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._guard(self._probe), daemon=True)]
        main = self._watch if self.watchable else self._poll
        self._threads.append(threading.Thread(target=self._guard(main), daemon=True))

    # -- the screen's side --------------------------------------------------------------------

    def start(self) -> Feed:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop following (the threads end at their next event or round)."""
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
                changes, s.synced, s.matched, s.total, s.stale_since, s.stale_reason, s.error
            )

    # -- the feed's threads -------------------------------------------------------------------

    def _guard(self, run: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            while not self._stop.is_set():
                try:
                    run()
                    return
                except ConnectionError:
                    self._stop.wait(self.refresh)  # the probe shows the head as away; again
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

    def _replace(self, rows: dict[str, dict[str, Any]]) -> None:
        """Make ``rows`` the feed's rows, recording only what differs."""
        with self._lock:
            for key in [k for k in self._rows if k not in rows]:
                self._put(key, None)
            for key, row in rows.items():
                if self._rows.get(key) != row:
                    self._put(key, row)
            self._shared.synced = True

    def _probe(self) -> None:
        while not self._stop.is_set():
            try:
                got = state.list_state(
                    self.kind,
                    self.filters,
                    limit=1,
                    address=self.address,
                    timeout=PROBE_TIMEOUT_S,
                )
            except ConnectionError as e:
                with self._lock:
                    if self._shared.stale_since is None:
                        self._shared.stale_since = time.time()
                    self._shared.stale_reason = str(e)
            else:
                with self._lock:
                    self._shared.matched, self._shared.total = got.matched, got.total
                    self._shared.stale_since, self._shared.stale_reason = None, ""
            self._stop.wait(self.refresh)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                got = state.list_state(
                    self.kind,
                    self.filters,
                    limit=self.limit,
                    address=self.address,
                    timeout=PROBE_TIMEOUT_S,
                )
            except ConnectionError:
                pass  # the probe shows the head as away; the rows held stay on screen
            else:
                self._replace({self._key(r): r for r in got})
            self._stop.wait(self.refresh)

    def _watch(self) -> None:
        cursor: str | None = None  # where a synced watch resumes
        listing: dict[str, dict[str, Any]] | None = None  # a listing again, until SYNCED
        while not self._stop.is_set():
            slice_s = WATCH_SLICE_S if cursor else LISTING_SLICE_S
            if cursor is None and self._rows:
                listing = {}  # a listing cut off, or a fresh one: compare it with what is held
            for ev in state.watch(
                self.kind, self.filters, address=self.address, cursor=cursor, timeout=slice_s
            ):
                if self._stop.is_set():
                    return
                if ev.type == state.RESYNC:
                    cursor, listing = None, {}
                elif ev.type == state.SYNCED:
                    cursor = ev.cursor
                    if listing is not None:
                        self._replace(listing)
                        listing = None
                    else:
                        with self._lock:
                            self._shared.synced = True
                elif ev.row is not None:
                    key = self._key(ev.row)
                    if cursor:
                        cursor = ev.cursor
                    if listing is not None:
                        listing[key] = ev.row
                        continue
                    with self._lock:
                        self._put(key, None if ev.type == state.DELETED else ev.row)
                        if self.kind == "events" and len(self._rows) > KEEP_EVENTS:
                            self._put(next(iter(self._rows)), None)
            # The slice ended: a synced watch resumes from its cursor; one cut off in its
            # listing lists again from the top, compared with the rows held (above).
