"""The state API: list, get and summarize what a freight cluster holds (like ``ray.util.state``).

Every function talks to the head's ``StateService``. ``address`` is ``None`` (the cluster this
process is connected to, else ``FREIGHT_ADDRESS``, else the newest cluster started on this
machine), ``"auto"`` or ``"host:port"``.

Filters are ``"key=value"`` strings or ``(key, op, value)`` triples, with ``op`` one of
``= != ~ !~ > < >= <=`` (``~`` is a regular-expression search, ``!~`` its negation; numbers and
times compare numerically; times are unix seconds, ISO-8601 or relative like ``-5m``). They are
applied by the head before truncation. Lists come back as :class:`StateList`, a list of plain dicts that also
says how complete it is::

    failed = freight.state.list_tasks(filters=["state=FAILED"], limit=50)
    if failed.truncated:
        print(f"{failed.remaining} more; next page: cursor={failed.next_cursor!r}")
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator, Iterable
from typing import Any, NamedTuple

import grpc

from freight.client import access
from freight.core.filters import normalize
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util.grpc_auth import sync_channel

DEFAULT_LIMIT = 100
PAGE_MAX = 10_000  # rows the head sends per reply; larger limits are fetched page by page
KINDS = ("nodes", "jobs", "tasks", "actors", "objects", "workers", "placement_groups", "events")


class StateList(list):  # type: ignore[type-arg]
    """Rows (dicts) of a state listing, with how complete the listing is.

    ``total``: rows of this kind the cluster holds; ``matched``: rows passing the filters;
    ``remaining``: matched rows after this page; ``truncated``: ``remaining > 0``;
    ``next_cursor``: pass it as ``cursor=`` for the next page (``""`` on the last one);
    ``warnings``: why the answer may be incomplete; ``dropped``: records of this kind that
    retention dropped; ``partial``: some node did not answer; ``watch_cursor``: with
    ``follow=True``, where :func:`watch` resumes to get every change after this listing
    (``""`` for kinds that cannot be watched).
    """

    def __init__(self, rows: Iterable[dict[str, Any]] = (), **meta: Any) -> None:
        super().__init__(rows)
        self.kind: str = meta.get("kind", "")
        self.total: int = meta.get("total", 0)
        self.matched: int = meta.get("matched", 0)
        self.remaining: int = meta.get("remaining", 0)
        self.next_cursor: str = meta.get("next_cursor", "")
        self.warnings: list[str] = list(meta.get("warnings", ()))
        self.dropped: int = meta.get("dropped", 0)
        self.partial: bool = meta.get("partial", False)
        self.watch_cursor: str = meta.get("watch_cursor", "")

    @property
    def truncated(self) -> bool:
        """True when more matching rows exist after these."""
        return self.remaining > 0

    def meta(self) -> dict[str, Any]:
        """The completeness figures as a dict (for JSON output)."""
        return {
            "kind": self.kind,
            "total": self.total,
            "matched": self.matched,
            "returned": len(self),
            "remaining": self.remaining,
            "truncated": self.truncated,
            "next_cursor": self.next_cursor,
            "warnings": self.warnings,
            "dropped": self.dropped,
            "partial": self.partial,
        }


class StateSummary(dict):  # type: ignore[type-arg]
    """A summary (plain dict) with ``warnings`` and ``partial`` like :class:`StateList`."""

    def __init__(self, data: dict[str, Any], warnings: list[str], partial: bool) -> None:
        super().__init__(data)
        self.warnings = warnings
        self.partial = partial


# -- connection -------------------------------------------------------------------------------

_lock = threading.Lock()
_clients: dict[tuple[str, str], tuple[grpc.Channel, pb_grpc.StateServiceStub]] = {}


def _stub(address: str | access.Target | None) -> tuple[access.Target, pb_grpc.StateServiceStub]:
    # A Target is a cluster already found (the CLI's), kept whole so messages say how.
    if isinstance(address, access.Target):
        target = address
    else:
        target = access.resolve(address, flag="address=")
    with _lock:
        got = _clients.get((target.address, target.token))
        if got is None:
            channel = sync_channel(target.address, target.token)
            got = _clients[(target.address, target.token)] = (
                channel,
                pb_grpc.StateServiceStub(channel),
            )
    return target, got[1]


def close() -> None:
    """Close the connections this module opened (they are reopened on the next call)."""
    with _lock:
        for channel, _ in _clients.values():
            channel.close()
        _clients.clear()


def _call(address: str | access.Target | None, method: str, request: Any, timeout: float) -> Any:
    target, stub = _stub(address)
    return access.call(target, getattr(stub, method), request, timeout)


def _filters(filters: Any) -> list[pb.Filter]:
    if filters is None:
        return []
    if isinstance(filters, (str, tuple)):
        filters = [filters]  # one filter given on its own
    return [pb.Filter(key=f.key, op=f.op, value=f.value) for f in map(normalize, filters)]


def _kind(kind: str) -> str:
    plural = kind if kind in KINDS else f"{kind}s"
    if plural not in KINDS:
        raise access.UsageError(f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return plural


# -- the API ----------------------------------------------------------------------------------


def list_state(
    kind: str,
    filters: Any = None,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    detail: bool = False,
    newest_first: bool = False,
    sort_by: str = "",
    descending: bool = False,
    follow: bool = False,
    address: str | access.Target | None = None,
    timeout: float = 30.0,
) -> StateList:
    """Rows of ``kind`` passing ``filters``: the first ``limit`` after ``cursor``, oldest first
    or ``newest_first``, or ordered by the field ``sort_by`` (``descending``: largest first; rows
    without a value come last, equal values in the default order); a cursor pages on in the
    order of the listing it came from.

    ``follow``: the result's ``watch_cursor`` resumes a :func:`watch` right after this listing
    (list, then watch: Kubernetes' resourceVersion), for the kinds that can be watched; the head
    keeps the changes for a while (a later watch gets RESYNC: list again). ``limit`` larger than
    one reply holds is fetched page by page (the cursor is the first page's: later pages may
    already show some of the changes after it). Raises ``ValueError`` for a bad kind, filter or
    cursor (with what is valid), ``ConnectionError`` when the head is away.
    """
    kind = _kind(kind)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise access.UsageError(f"limit must be a positive int, got {limit!r}")
    pb_filters = _filters(filters)
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    reply = None
    next_cursor = cursor or ""
    partial = False
    watch_cursor = ""
    while True:
        want = min(PAGE_MAX, limit - len(rows))
        request = pb.ListStateRequest(
            kind=kind,
            filters=pb_filters,
            limit=want,
            cursor=next_cursor,
            detail=detail,
            newest_first=newest_first,
            sort_by=sort_by,
            descending=descending,
            follow=follow and not watch_cursor,
        )
        reply = _call(address, "List", request, timeout)
        watch_cursor = watch_cursor or reply.watch_cursor
        rows += [json.loads(r) for r in reply.rows]
        partial = partial or reply.partial
        warnings += [
            w for w in reply.warnings if w not in warnings and not w.startswith("truncated")
        ]
        next_cursor = reply.next_cursor
        if not next_cursor or len(rows) >= limit:
            break
    out = StateList(
        rows,
        kind=kind,
        total=reply.total,
        matched=reply.matched,
        remaining=reply.remaining,
        next_cursor=next_cursor,
        warnings=warnings,
        dropped=reply.dropped,
        partial=partial,
        watch_cursor=watch_cursor,
    )
    if out.truncated:
        out.warnings.append(
            f"truncated: {len(out)} of {out.matched} matching {kind} returned, "
            f"{out.remaining} more (pass cursor=next_cursor, or a larger limit)"
        )
    return out


def get_state(
    kind: str, id: str, *, address: str | access.Target | None = None, timeout: float = 30.0
) -> dict[str, Any] | None:
    """The row of ``kind`` whose id is ``id`` (or starts with it), with detail; None if unknown.

    An ambiguous prefix raises ``ValueError`` naming the candidates.
    """
    kind = _kind(kind)
    if not isinstance(id, str) or not id.strip():
        raise access.UsageError(f"give the id (or a unique prefix) of the {kind[:-1]}, got {id!r}")
    reply = _call(address, "Get", pb.GetStateRequest(kind=kind, id=id.strip()), timeout)
    return json.loads(reply.row) if reply.found else None


def summarize(
    kind: str,
    filters: Any = None,
    *,
    address: str | access.Target | None = None,
    timeout: float = 30.0,
) -> StateSummary:
    """Counts of tasks (by name, state, job, error type, pending reason), actors or objects."""
    kind = _kind(kind)
    reply = _call(
        address, "Summary", pb.SummaryRequest(kind=kind, filters=_filters(filters)), timeout
    )
    return StateSummary(json.loads(reply.summary), list(reply.warnings), reply.partial)


class FieldSchema(NamedTuple):
    """One filterable field of a kind."""

    name: str
    type: str  # text | number | time | bool
    choices: tuple[str, ...]  # the values an enumeration takes (empty: any)


class KindSchema(NamedTuple):
    """What a kind's rows can be filtered on, and what serves it."""

    kind: str
    id_key: str  # the field get_state() takes (an id or a unique prefix of one)
    fields: tuple[FieldSchema, ...]
    watchable: bool
    summarizable: bool


def schema(
    kind: str | None = None, *, address: str | access.Target | None = None, timeout: float = 30.0
) -> dict[str, KindSchema]:
    """The filterable fields of ``kind`` (None: of every kind), as the head defines them; rows
    carry more fields (resources, labels, ...) that filters cannot name."""
    name = _kind(kind) if kind is not None else ""
    reply = _call(address, "Schema", pb.SchemaRequest(kind=name), timeout)
    return {
        k.kind: KindSchema(
            k.kind,
            k.id_key,
            tuple(FieldSchema(f.name, f.type, tuple(f.choices)) for f in k.fields),
            k.watchable,
            k.summarizable,
        )
        for k in reply.kinds
    }


def _lister(kind: str) -> Any:
    def lister(
        filters: Any = None,
        *,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        detail: bool = False,
        newest_first: bool = False,
        sort_by: str = "",
        descending: bool = False,
        address: str | access.Target | None = None,
        timeout: float = 30.0,
    ) -> StateList:
        return list_state(
            kind,
            filters,
            limit=limit,
            cursor=cursor,
            detail=detail,
            newest_first=newest_first,
            sort_by=sort_by,
            descending=descending,
            address=address,
            timeout=timeout,
        )

    lister.__name__ = lister.__qualname__ = f"list_{kind}"
    lister.__doc__ = f"The cluster's {kind.replace('_', ' ')}: ``list_state({kind!r}, ...)``."
    return lister


def _getter(kind: str) -> Any:
    def getter(
        id: str, *, address: str | access.Target | None = None, timeout: float = 30.0
    ) -> Any:
        return get_state(kind, id, address=address, timeout=timeout)

    name = kind[:-1]
    getter.__name__ = getter.__qualname__ = f"get_{name}"
    getter.__doc__ = f"One {name} by id or unique id prefix: ``get_state({kind!r}, id)``."
    return getter


def _summarizer(kind: str) -> Any:
    def summarizer(
        filters: Any = None, *, address: str | access.Target | None = None, timeout: float = 30.0
    ) -> StateSummary:
        return summarize(kind, filters, address=address, timeout=timeout)

    summarizer.__name__ = summarizer.__qualname__ = f"summarize_{kind}"
    summarizer.__doc__ = f"Counts of the cluster's {kind}: ``summarize({kind!r}, ...)``."
    return summarizer


# -- watching ---------------------------------------------------------------------------------

WATCH_KINDS = ("nodes", "jobs", "tasks", "actors", "placement_groups", "events")
ADDED, MODIFIED, DELETED, SYNCED, RESYNC = "ADDED", "MODIFIED", "DELETED", "SYNCED", "RESYNC"
BOOKMARK = "BOOKMARK"  # given only with watch(bookmarks=True)
_RECONNECT_S = (0.1, 2.0)  # first and longest wait between two attempts to reach the head


class WatchEvent(NamedTuple):
    """One event of :func:`watch`.

    ``type`` is ``ADDED``, ``MODIFIED`` or ``DELETED`` (``row`` is the row, for DELETED its
    last state), ``SYNCED`` (every row that existed when the watch began has been sent) or
    ``RESYNC`` (forget the rows held: the head lists them again as ADDED, then SYNCED;
    ``message`` says why), or with ``bookmarks=True`` ``BOOKMARK`` (nothing changed; the
    head answers). ``cursor`` resumes a later watch right after this event.
    """

    type: str
    row: dict[str, Any] | None
    cursor: str
    message: str = ""


def watch(
    kind: str,
    filters: Any = None,
    *,
    address: str | access.Target | None = None,
    cursor: str | None = None,
    timeout: float | None = None,
    bookmarks: bool = False,
    reconnect: bool = True,
) -> Generator[WatchEvent, None, None]:
    """The rows of ``kind`` passing ``filters`` as they are now, then every change to them.

    Without ``cursor`` the events begin with one ADDED per row and SYNCED; with the cursor of
    an event received before, they resume after it. The connection is remade after the head
    was unreachable, from the last cursor; when the head can no longer serve it (it restarted,
    or this watcher fell too far behind) a RESYNC event comes, then the listing again. A row
    that stops matching the filters comes as DELETED. ``timeout``: stop after this many seconds
    (None: never). ``bookmarks``: also give the BOOKMARK events the head sends when it had
    nothing to send for a few seconds, so that a quiet stream can be told from a head that stopped
    answering. ``reconnect=False``: raise ``ConnectionError`` when the head is unreachable,
    instead of trying again (the caller resumes with the last cursor, or lists again). Kinds:
    nodes, jobs, tasks, actors, placement_groups, events. Raises ``ValueError`` (a bad kind,
    filter or cursor) or ``PermissionError`` (a refused token) when iterated::

        for event in freight.state.watch("tasks", ["state=FAILED"]):
            print(event.type, event.row["task_id"], event.row["error_type"])
    """
    kind = _kind(kind)
    if kind not in WATCH_KINDS:
        raise access.UsageError(
            f"{kind} cannot be watched (the node agents hold them; list them again instead); "
            f"watchable kinds: {', '.join(WATCH_KINDS)}"
        )
    if cursor is not None and not isinstance(cursor, str):
        raise TypeError(f"cursor must be the cursor string of an event, got {cursor!r}")
    if timeout is not None and not timeout > 0:
        raise access.UsageError(
            f"timeout must be a positive number of seconds or None, got {timeout!r}"
        )
    pb_filters = _filters(filters)
    deadline = None if timeout is None else time.monotonic() + timeout
    return _watch(kind, pb_filters, address, cursor or "", deadline, bookmarks, reconnect)


def _watch(
    kind: str,
    filters: list[pb.Filter],
    address: str | access.Target | None,
    cursor: str,
    deadline: float | None,
    bookmarks: bool,
    reconnect: bool,
) -> Generator[WatchEvent, None, None]:
    synced = bool(cursor)  # a cursor stands after a listing; without one, the listing comes
    listed = 0  # rows of an unfinished listing already given out
    delay = _RECONNECT_S[0]
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        target, stub = _stub(address)
        call = stub.Watch(pb.WatchRequest(kind=kind, filters=filters, cursor=cursor), timeout=left)
        try:
            for reply in call:
                delay = _RECONNECT_S[0]
                for ev in reply.events:
                    if ev.type == BOOKMARK:
                        cursor = ev.cursor if synced else cursor
                        if bookmarks and synced:
                            yield WatchEvent(BOOKMARK, None, ev.cursor)
                    elif ev.type == RESYNC:
                        cursor, synced, listed = "", False, 0
                        yield WatchEvent(RESYNC, None, "", ev.message)
                    elif ev.type == SYNCED:
                        cursor, synced, listed = ev.cursor, True, 0
                        yield WatchEvent(SYNCED, None, ev.cursor)
                    else:
                        if synced:
                            cursor = ev.cursor
                        else:
                            listed += 1
                        yield WatchEvent(ev.type, json.loads(ev.row), ev.cursor)
            # The stream ended without an error: the head is stopping, or it sent RESYNC.
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                return
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise access.ClusterUnreachable(
                    f"the freight head at {target.address} does not serve watches"
                ) from None
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise access.rpc_error(exc, target) from None
            if not reconnect:
                raise access.ClusterUnreachable(
                    f"the watch of {kind} from the freight head at {target.address} was cut "
                    f"({code.name if code else 'no code'}); list {kind} again or resume from "
                    "the last cursor"
                ) from None
            time.sleep(delay)  # the head is away: try again, less and less often
            delay = min(delay * 2, _RECONNECT_S[1])
        finally:
            call.cancel()
        if listed:  # cut off in the middle of a listing: it starts again from the top
            cursor, synced, listed = "", False, 0
            yield WatchEvent(RESYNC, None, "", "the connection was lost during the listing")


list_nodes = _lister("nodes")
list_jobs = _lister("jobs")
list_tasks = _lister("tasks")
list_actors = _lister("actors")
list_objects = _lister("objects")
list_workers = _lister("workers")
list_placement_groups = _lister("placement_groups")
list_events = _lister("events")
get_node = _getter("nodes")
get_job = _getter("jobs")
get_task = _getter("tasks")
get_actor = _getter("actors")
get_object = _getter("objects")
get_worker = _getter("workers")
get_placement_group = _getter("placement_groups")
summarize_tasks = _summarizer("tasks")
summarize_actors = _summarizer("actors")
summarize_objects = _summarizer("objects")

__all__ = [
    "FieldSchema",
    "KindSchema",
    "StateList",
    "StateSummary",
    "WatchEvent",
    "close",
    "get_actor",
    "get_job",
    "get_node",
    "get_object",
    "get_placement_group",
    "get_state",
    "get_task",
    "get_worker",
    "list_actors",
    "list_events",
    "list_jobs",
    "list_nodes",
    "list_objects",
    "list_placement_groups",
    "list_state",
    "list_tasks",
    "list_workers",
    "schema",
    "summarize",
    "summarize_actors",
    "summarize_objects",
    "summarize_tasks",
    "watch",
]
