"""The inspector's data layer: one window of a kind's rows, read through :mod:`freight.state` only.

A :class:`Feed` lists its window: at most ``limit`` rows passing the view's filters, from the
row after ``cursor`` (the page's start; None: the first row), as ``freight list`` pages. The
listing says how many rows match and the kind holds (``showing N of M``), where the window
starts among them and where the next page starts.

For a kind the head can watch, the feed then follows the watch stream from the listing's
position (its ``watch_cursor``: list, then watch, as Kubernetes does with resourceVersion), in a
second thread: a change of a row in the window changes it by key at once, a new row is added to
the last page while it has room and otherwise counted, a row that leaves is dropped and
uncounted (docs/decisions/0076-the-inspector-follows-the-watch-stream.md). It lists again when
the stream cannot tell it enough: RESYNC, a lost head, rows gone from a page with more after it,
a new row on a full last page (for the next page's cursor), and every :data:`RECONCILE_S` for
the counts no change reports (retention, rows before the window). These listings come at most
once per ``refresh`` seconds. Kinds that cannot be watched (objects, workers) are listed every
``refresh`` seconds and compared by id.

Either way only the window crosses the network and is held, whatever the kind holds (a watch of
the whole kind would send every matching row: 100,000 tasks), and the changes gather until the
screen takes them as one :class:`Batch` (``take()``, which never blocks): a row changed ten
times between two repaints is drawn once. The head's silence marks the rows stale: a failed
listing or stream, or a stream without even the head's bookmark for :data:`SILENT_S`.
"""

from __future__ import annotations

import math
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
# A followed window is listed again this often at least (or every 10 refreshes, if longer): the
# counts no change reports (records dropped by retention, rows before the window) catch up.
RECONCILE_S = 15.0
# The head sends a BOOKMARK on a stream it had nothing to send on for 5 s (the head's
# watch.BOOKMARK_S): a stream silent this long has lost its head.
SILENT_S = 8.0

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
        self.watchable = kind in state.WATCH_KINDS
        self._lock = threading.Lock()
        self._shared = _Shared()
        self._rows: dict[str, dict[str, Any]] = {}  # the feed threads' copy (under the lock)
        self._stop = threading.Event()
        self._relist = threading.Event()  # list before the next reconciling listing is due
        self._listed = threading.Event()  # a listing with a new watch cursor is there to follow
        self._gen = 0  # listings made: the stream of an older one is dropped
        self._watch_from = ""  # the last listing's watch cursor ("": follow nothing, poll)
        self._heard = 0.0  # when the stream last said something (0: no stream open)
        self.resyncs = 0  # times the head could not go on from a cursor (each: a listing)
        self._threads = [threading.Thread(target=self._guard(self._list), daemon=True)]
        if self.watchable:
            self._threads.append(threading.Thread(target=self._guard(self._follow), daemon=True))

    # -- the screen's side --------------------------------------------------------------------

    def start(self) -> Feed:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop following (the threads end at their next round, or the stream's next event)."""
        self._stop.set()
        self._relist.set()
        self._listed.set()

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
        self.stop()

    def _stale(self, reason: str) -> None:
        """The head does not answer: the rows held stay on screen, marked stale."""
        with self._lock:
            if self._shared.stale_since is None:
                self._shared.stale_since = time.time()
            self._shared.stale_reason = reason

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
            # The stream of an older listing is dropped: this one's follows from here.
            self._gen += 1
            self._watch_from = got.watch_cursor
        self._listed.set()

    def _list(self) -> None:
        """List the window when it is due: every ``refresh`` seconds while nothing is followed,
        every reconciling period while the stream is, and (at most once per ``refresh``) when
        the stream asks for it."""
        listed_at = -math.inf
        reconcile = max(RECONCILE_S, 10 * self.refresh)
        while not self._stop.is_set():
            now = time.monotonic()
            heard = self._heard
            if heard and now - heard > SILENT_S:  # not even a bookmark: the head is away
                self._stale(f"the head sent nothing for {SILENT_S:.0f} s")
                self._heard = now  # once per silence; listing again tells whether it answers
                self._relist.set()
            wanted = self._relist.is_set() or not self._watch_from
            due = listed_at + (self.refresh if wanted else reconcile)
            if now < due:
                if wanted:
                    self._stop.wait(due - now)
                else:  # woken by a request, or each second for the silence above
                    self._relist.wait(min(due - now, 1.0))
                continue
            self._relist.clear()
            listed_at = now
            try:
                got = state.list_state(
                    self.kind,
                    self.filters,
                    limit=self.limit,
                    cursor=self.cursor,
                    sort_by=self.sort_by,
                    descending=self.descending,
                    follow=self.watchable,
                    address=self.address,
                    timeout=LIST_TIMEOUT_S,
                )
            except ConnectionError as e:
                self._stale(str(e))
                self._relist.set()  # again after ``refresh`` seconds
            else:
                self._replace(got)

    def _follow(self) -> None:
        """Follow the stream from each listing's watch cursor, changing the rows held."""
        gen = 0
        while not self._stop.is_set():
            self._listed.clear()
            with self._lock:
                new, gen, cursor = self._gen != gen, self._gen, self._watch_from
            if not new or not cursor:
                self._listed.wait()
                continue
            self._heard = time.monotonic()
            events = state.watch(
                self.kind,
                self.filters,
                address=self.address,
                cursor=cursor,
                bookmarks=True,
                reconnect=False,  # the stale marker, then a listing, instead of a silent retry
            )
            try:
                for ev in events:
                    self._heard = time.monotonic()
                    if self._stop.is_set():
                        return
                    with self._lock:
                        if self._gen != gen:
                            break  # a newer listing: follow from its cursor
                        again = self._apply(ev)
                    if again:
                        self._relist.set()
                    if ev.type == state.RESYNC:
                        self.resyncs += 1
                        break  # the head could not go on from the cursor
            except ConnectionError as e:
                self._stale(str(e))
                self._relist.set()
            finally:
                self._heard = 0.0
                events.close()

    def _apply(self, ev: state.WatchEvent) -> bool:
        """Make one event of the stream the feed's (the caller holds the lock); True when the
        window must be listed again to be right."""
        if ev.row is None:
            return ev.type == state.RESYNC  # BOOKMARK: nothing changed
        s = self._shared
        key, row = self._key(ev.row), ev.row
        placed = not self.sort_by  # in the head's own order rows keep their place
        if ev.type == state.DELETED:
            s.matched = max(0, (s.matched or 0) - 1)
            if not self.filters:  # unfiltered, a row gone is gone from the kind
                s.total = max(0, (s.total or 0) - 1)
            if key in self._rows:
                self._put(key, None)
                return bool(s.next_cursor) or not placed  # the next page's first row moves in
            return not placed
        if key in self._rows:  # MODIFIED, or a row this listing had already
            self._put(key, row)
            return not placed  # a sorting field may have changed
        if ev.type == state.MODIFIED:
            return not placed  # a row of another page, still where it was
        # ADDED: a new row comes last; a row that starts matching a filter may belong to an
        # earlier page than this one.
        s.matched = (s.matched or 0) + 1
        if not self.filters:
            s.total = (s.total or 0) + 1
        if not placed or s.next_cursor:
            return not placed
        if self.filters and s.first > 1:
            return True
        if len(self._rows) < self.limit:
            self._put(key, row)
            return False
        return True  # a full last page: a next page begins, its cursor comes from a listing
