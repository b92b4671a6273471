"""The inspector's Overview: which nodes are saturated, what happened in the last ten minutes,
are we burning error budget, what is paging.

Everything on it comes from one :class:`OverviewSource` (see :mod:`freight.tui.source`), whose
threads read:

- the nodes and the newest events through :mod:`freight.state` (a node's CPU and GPU claimed
  out of its total, its memory in use as the memory monitor measures it, its object store);
- the cluster's Prometheus endpoints, scraped here (the targets the head publishes, as
  ``freight metrics targets`` lists them): task throughput, failures and scheduling latency
  are the increase of the counters and histogram buckets between two scrapes;
- the SLOs of ``alerts/rules``: from Prometheus's recording rules over the budget window when
  ``freight monitoring up`` runs, else the same ratios from the scraped counters since each
  endpoint started;
- Alertmanager's firing alerts (``--alertmanager URL``, or the one ``freight monitoring up``
  started).

``take()`` returns an :class:`Overview`, plain fields only, so that what the screen showed can be
recorded and replayed. The arithmetic (increases across counter resets, quantiles from buckets,
budget left) is in plain functions, tested on their own.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from prometheus_client.parser import text_string_to_metric_families
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Sparkline, Static

from freight import state
from freight.client import access

if TYPE_CHECKING:
    from .app import TopApp

OVERVIEW = "overview"  # the command that opens it (`:overview`, `freight top overview`)
HISTORY_S = 600.0  # what the sparklines cover: the last ten minutes
MIN_SCRAPE_S = 1.0  # the endpoints are scraped at most this often, whatever --refresh says
EVENTS_SHOWN = 10
NODES_LISTED = 1000
HTTP_TIMEOUT_S = 5.0
SLOW_BUCKET = 0.2  # the scheduling SLO's threshold: the le="0.2" bucket the rules read
BUDGET_WINDOW = "3d"  # the longest window of the burn-rate rules: a 1x burn over it spends all
# The cluster's own endpoints and a local Prometheus/Alertmanager: never through http_proxy.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Slo:
    """One SLO of alerts/rules (decision 0044): its recording rules' name and its objective."""

    name: str  # as in freight:<name>:ratio_rate<window>
    title: str
    objective: float


SLOS = (
    Slo("task_system_errors", "task success", 0.999),
    Slo("task_scheduling_slow", "scheduling < 200 ms", 0.99),
    Slo("head_unavailable", "head availability", 0.999),
)


# -- what the screen gets (plain fields: recorded and replayed as JSON) -----------------------


@dataclass
class NodeMeters:
    node_id: str
    hostname: str
    state: str  # ALIVE, DRAINING, DEAD
    is_head_node: bool
    cpu_used: float
    cpu_total: float
    gpu_used: float
    gpu_total: float  # 0: the node has no GPU
    memory_used: int  # bytes in use on the node (0 of 0: not reported by its agent)
    memory_total: int
    store_used: int
    store_total: int


@dataclass
class SloFigure:
    name: str
    title: str
    objective: float
    bad_ratio: float | None  # None: no event to judge by yet
    budget_left: float | None  # share of the error budget left (negative: overspent)


@dataclass
class AlertRow:
    name: str
    severity: str
    state: str  # Alertmanager's: active, suppressed
    summary: str
    starts_at: str
    cluster: str


@dataclass
class EventRow:
    time: float
    severity: str
    kind: str
    message: str


@dataclass
class Overview:
    """What the Overview shows at one tick."""

    nodes: list[NodeMeters] = field(default_factory=list)
    nodes_listed: bool = False
    throughput: list[float] = field(default_factory=list)  # tasks finished per second
    failures: list[float] = field(default_factory=list)  # tasks failed per second
    latency_p95: list[float] = field(default_factory=list)  # scheduling latency, seconds
    latency_p50: float | None = None  # the last interval's
    scrapes: int = 0  # scrape rounds so far
    history_points: int = 0  # the sparklines' points from Prometheus, from before the opening
    metrics_note: str = ""  # why the rates are missing or partial
    slos: list[SloFigure] = field(default_factory=list)
    slo_basis: str = ""  # where the ratios come from, said on screen
    alerts: list[AlertRow] = field(default_factory=list)
    alertmanager: str = ""  # the URL read ("" : none known)
    alerts_note: str = ""  # "no Alertmanager", or why it could not be read
    events: list[EventRow] = field(default_factory=list)
    stale_since: float | None = None  # when the head stopped answering
    stale_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (what a recording keeps)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Overview:
        """An overview from :meth:`to_dict`'s data (what a replay shows)."""
        nested = {"nodes": NodeMeters, "slos": SloFigure, "alerts": AlertRow, "events": EventRow}
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in nested:
                values[key] = [nested[key](**x) for x in value]
            elif key in known:
                values[key] = value
        return cls(**values)


# -- the arithmetic ---------------------------------------------------------------------------


@dataclass
class Counts:
    """The counters one endpoint exposes that the overview reads, at one scrape (or their
    increase between two)."""

    finished: float = 0.0  # freight_tasks_finished_total, every state
    failed: float = 0.0  # ... state="FAILED"
    system_errors: float = 0.0  # ... error_kind="system"
    judged: float = 0.0  # ... error_kind!="cancelled": what the task SLO counts
    scheduled: float = 0.0  # freight_task_scheduling_latency_seconds_count
    buckets: dict[float, float] = field(default_factory=dict)  # its cumulative buckets, by le

    @property
    def scheduled_fast(self) -> float:
        return self.buckets.get(SLOW_BUCKET, 0.0)


READ = ("freight_tasks_finished", "freight_task_scheduling_latency_seconds")


def _wanted(line: str) -> bool:
    """A line of the families the overview reads (their samples, # HELP and # TYPE)."""
    if line.startswith("#"):
        words = line.split(" ", 3)
        return len(words) > 2 and words[2].startswith(READ)
    return line.startswith(READ)


def parse_counts(text: str) -> Counts:
    """The overview's counters from one endpoint's exposition text. Only the lines of the
    families read are parsed: an endpoint's whole text takes ten times longer."""
    c = Counts()
    lines = "\n".join(line for line in text.splitlines() if _wanted(line))
    for family in text_string_to_metric_families(lines):
        if family.name == "freight_tasks_finished":
            for s in family.samples:
                if s.name != "freight_tasks_finished_total":
                    continue
                c.finished += s.value
                c.failed += s.value if s.labels.get("state") == "FAILED" else 0.0
                kind = s.labels.get("error_kind")
                c.system_errors += s.value if kind == "system" else 0.0
                c.judged += s.value if kind != "cancelled" else 0.0
        elif family.name == "freight_task_scheduling_latency_seconds":
            for s in family.samples:
                if s.name.endswith("_count"):
                    c.scheduled += s.value
                elif s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    c.buckets[le] = c.buckets.get(le, 0.0) + s.value
    return c


def increase(before: Counts | None, after: Counts) -> Counts:
    """What ``after`` counted since ``before`` at one endpoint, as Prometheus's ``increase``
    sees a counter reset: a counter lower than before restarted from zero (the agent
    restarted), so all of it is new. No ``before`` (a new endpoint): nothing known to be new."""
    if before is None:
        return Counts()

    def inc(a: float, b: float) -> float:
        return b - a if b >= a else b

    out = Counts()
    reset = after.finished < before.finished or after.scheduled < before.scheduled
    for f in fields(Counts):
        if f.name == "buckets":
            continue
        a, b = getattr(before, f.name), getattr(after, f.name)
        setattr(out, f.name, b if reset else inc(a, b))
    out.buckets = {
        le: (n if reset else inc(before.buckets.get(le, 0.0), n)) for le, n in after.buckets.items()
    }
    return out


def add(counts: Iterable[Counts]) -> Counts:
    out = Counts()
    for c in counts:
        for f in fields(Counts):
            if f.name != "buckets":
                setattr(out, f.name, getattr(out, f.name) + getattr(c, f.name))
        for le, n in c.buckets.items():
            out.buckets[le] = out.buckets.get(le, 0.0) + n
    return out


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram (Prometheus's ``histogram_quantile``:
    linear within the bucket; in the +Inf bucket, the highest finite bound). None: empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def ratio(bad: float, of: float) -> float | None:
    return bad / of if of > 0 else None


def budget_left(bad_ratio: float | None, objective: float) -> float | None:
    """The share of the error budget left when ``bad_ratio`` of the events were bad against
    ``objective``: 1 with none bad, 0 at exactly the budget, negative when overspent."""
    if bad_ratio is None:
        return None
    return 1.0 - bad_ratio / (1.0 - objective)


def since_start_ratios(c: Counts, head_scrapes: int, head_failed: int) -> dict[str, float | None]:
    """The SLO ratios from counters alone (no Prometheus): each endpoint's since it started;
    the head's availability from this inspector's own scrapes of it."""
    return {
        "task_system_errors": ratio(c.system_errors, c.judged),
        "task_scheduling_slow": ratio(c.scheduled - c.scheduled_fast, c.scheduled),
        "head_unavailable": ratio(head_failed, head_scrapes),
    }


@dataclass
class Rates:
    """The sparklines' history: one point per scrape interval, the last ``HISTORY_S``."""

    points: deque[tuple[float, float, float, float | None, float | None]] = field(
        default_factory=deque
    )  # (time, finished/s, failed/s, p95, p50)

    def add(self, now: float, seconds: float, inc: Counts) -> None:
        if seconds <= 0:
            return
        self.points.append(
            (
                now,
                inc.finished / seconds,
                inc.failed / seconds,
                quantile(0.95, inc.buckets),
                quantile(0.5, inc.buckets),
            )
        )
        while self.points and self.points[0][0] < now - HISTORY_S:
            self.points.popleft()

    def seed(self, history: list[tuple[float, float, float, float | None, float | None]]) -> None:
        """Points from before the overview opened (Prometheus's), older than any of ours."""
        first = self.points[0][0] if self.points else math.inf
        self.points.extendleft(reversed([p for p in history if p[0] < first]))


# What Prometheus is asked for the sparklines' past, by point field; {c} is the cluster. The
# rate window spans a few scrapes at `freight monitoring up`'s default 15 s interval.
HISTORY_QUERIES = (
    'sum(rate(freight_tasks_finished_total{{cluster="{c}"}}[1m]))',
    'sum(rate(freight_tasks_finished_total{{cluster="{c}",state="FAILED"}}[1m]))',
    "histogram_quantile(0.95, sum by (le) "
    '(rate(freight_task_scheduling_latency_seconds_bucket{{cluster="{c}"}}[1m])))',
    "histogram_quantile(0.5, sum by (le) "
    '(rate(freight_task_scheduling_latency_seconds_bucket{{cluster="{c}"}}[1m])))',
)
HISTORY_STEP_S = 5.0
PROMETHEUS_EVERY_S = 5.0  # its ratios over days move slowly: asked this often, not per scrape


def merge_history(
    series: list[list[list[Any]]],
) -> list[tuple[float, float, float, float | None, float | None]]:
    """The sparklines' points from the answers to :data:`HISTORY_QUERIES` (each a matrix's
    ``values``, ``[[time, "value"], ...]``), by time: no task finished is 0/s, no scheduling
    no latency."""
    by_time: dict[float, list[float | None]] = {}
    for i, values in enumerate(series):
        for t, v in values:
            value = float(v)
            by_time.setdefault(float(t), [None] * len(series))[i] = (
                None if math.isnan(value) else value
            )
    return [(t, row[0] or 0.0, row[1] or 0.0, row[2], row[3]) for t, row in sorted(by_time.items())]


# -- reading the cluster ----------------------------------------------------------------------


def meters(row: dict[str, Any]) -> NodeMeters:
    """A node row of the state API as the overview's meters."""
    total, free = row.get("resources_total") or {}, row.get("resources_available") or {}

    def used(name: str) -> float:
        return max(0.0, float(total.get(name, 0.0)) - float(free.get(name, 0.0)))

    return NodeMeters(
        node_id=str(row.get("node_id", "")),
        hostname=str(row.get("hostname", "")),
        state=str(row.get("state", "")),
        is_head_node=bool(row.get("is_head_node")),
        cpu_used=used("CPU"),
        cpu_total=float(total.get("CPU", 0.0)),
        gpu_used=used("GPU"),
        gpu_total=float(total.get("GPU", 0.0)),
        memory_used=int(row.get("memory_used") or 0),
        memory_total=int(row.get("memory_total") or 0),
        store_used=int(row.get("object_store_used") or 0),
        store_total=int(row.get("object_store_capacity") or 0),
    )


def alert_rows(alerts: list[dict[str, Any]]) -> list[AlertRow]:
    """Alertmanager's ``/api/v2/alerts``, the most severe first, then the oldest."""
    order = {"critical": 0, "warning": 1, "info": 2}
    rows = [
        AlertRow(
            name=str(a.get("labels", {}).get("alertname", "?")),
            severity=str(a.get("labels", {}).get("severity", "")),
            state=str(a.get("status", {}).get("state", "")),
            summary=str(a.get("annotations", {}).get("summary", "")),
            starts_at=str(a.get("startsAt", "")),
            cluster=str(a.get("labels", {}).get("cluster", "")),
        )
        for a in alerts
    ]
    return sorted(rows, key=lambda r: (order.get(r.severity, 3), r.starts_at, r.name))


def _get(url: str) -> bytes:
    with _NO_PROXY.open(url, timeout=HTTP_TIMEOUT_S) as r:
        data: bytes = r.read()
        return data


def _why(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return str(e.reason)
    return str(e) or type(e).__name__


def monitoring_urls(address: str) -> dict[str, str]:
    """The servers ``freight monitoring up`` runs for this cluster (name -> URL), from its
    session folder on this machine; none when it is elsewhere or nothing runs."""
    from freight.cli.monitoring_cmd import read_state

    try:
        session = access.resolve_session(address)
    except (ConnectionError, PermissionError, ValueError):
        return {}
    return {s.name: s.url for s in read_state(session)}


class OverviewSource:
    """The live figures of the Overview (see the module's docstring); three threads, so a slow
    Alertmanager or endpoint never holds the nodes back."""

    def __init__(self, address: str, *, refresh: float, alertmanager: str = "") -> None:
        self.address = address
        self.refresh = refresh
        self.scrape_s = max(refresh, MIN_SCRAPE_S)
        self.alertmanager = alertmanager.rstrip("/")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._out = Overview()
        self._rates = Rates()
        self._threads = [
            threading.Thread(target=self._guard(f), daemon=True, name=f"overview-{f.__name__}")
            for f in (self._state_loop, self._metrics_loop, self._alerts_loop)
        ]

    def start(self) -> OverviewSource:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def take(self) -> Overview:
        with self._lock:
            o = self._out
            p = list(self._rates.points)
            return Overview(
                nodes=list(o.nodes),
                nodes_listed=o.nodes_listed,
                throughput=[x[1] for x in p],
                failures=[x[2] for x in p],
                latency_p95=[x[3] or 0.0 for x in p],
                latency_p50=p[-1][4] if p else None,
                scrapes=o.scrapes,
                history_points=o.history_points,
                metrics_note=o.metrics_note,
                slos=list(o.slos),
                slo_basis=o.slo_basis,
                alerts=list(o.alerts),
                alertmanager=o.alertmanager,
                alerts_note=o.alerts_note,
                events=list(o.events),
                stale_since=o.stale_since,
                stale_reason=o.stale_reason,
            )

    def _guard(self, run: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            try:
                run()
            except Exception as e:
                with self._lock:
                    self._out.metrics_note = f"the overview stopped: {type(e).__name__}: {e}"
                raise  # a bug: its traceback goes to the thread's excepthook

        guarded.__name__ = run.__name__
        return guarded

    # -- nodes and events -----------------------------------------------------------------------

    def _state_loop(self) -> None:
        while not self._stop.is_set():
            try:
                nodes = state.list_state(
                    "nodes", limit=NODES_LISTED, address=self.address, timeout=HTTP_TIMEOUT_S
                )
                events = state.list_state(
                    "events",
                    limit=EVENTS_SHOWN,
                    newest_first=True,
                    address=self.address,
                    timeout=HTTP_TIMEOUT_S,
                )
            except ConnectionError as e:
                with self._lock:
                    if self._out.stale_since is None:
                        self._out.stale_since = time.time()
                    self._out.stale_reason = str(e)
            else:
                with self._lock:
                    self._out.nodes = [meters(r) for r in nodes]
                    self._out.nodes_listed = True
                    self._out.events = [
                        EventRow(
                            time=float(e.get("time") or 0.0),
                            severity=str(e.get("severity", "")),
                            kind=str(e.get("kind", "")),
                            message=str(e.get("message", "")),
                        )
                        for e in events
                    ]
                    self._out.stale_since, self._out.stale_reason = None, ""
            self._stop.wait(self.refresh)

    # -- metrics and SLOs -----------------------------------------------------------------------

    def _metrics_loop(self) -> None:
        from freight.cli.metrics_cmd import ROLE_LABEL, fetch_targets, metrics_info

        info: dict[str, str] | None = None
        last: dict[str, Counts] = {}  # each endpoint's counters at the previous round
        last_time: float | None = None
        head_scrapes = head_failed = 0
        seeded = False
        asked_at = -math.inf  # Prometheus's SLO ratios are asked now and then: when, and what
        answer: tuple[str, dict[str, float | None] | None] = ("", None)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                info = info or metrics_info(self.address)
                groups = fetch_targets(info)
            except (ConnectionError, access.CommandFailed, OSError, ValueError) as e:
                self._note(f"no metrics: {e}")
                info = None  # a restarted head may serve its metrics elsewhere: ask again
                self._stop.wait(self.scrape_s)
                continue
            if not seeded:  # the last ten minutes from Prometheus, once, when it runs
                seeded = True
                history = self._prometheus_history(info.get("cluster_name", ""))
                with self._lock:
                    self._rates.seed(history)
                    self._out.history_points = len(history)
            now: dict[str, Counts] = {}
            failed: list[str] = []
            for group in groups:
                role = group.get("labels", {}).get(ROLE_LABEL)
                for target in group.get("targets", []):
                    try:
                        text = _get(f"http://{target}/metrics").decode()
                        if role == "head":
                            head_scrapes += 1
                        else:
                            now[target] = parse_counts(text)
                    except (OSError, ValueError) as e:
                        if role == "head":
                            head_scrapes, head_failed = head_scrapes + 1, head_failed + 1
                        failed.append(f"{target} ({_why(e)})")
            inc = add(increase(last.get(t), c) for t, c in now.items())
            at = time.monotonic()
            with self._lock:
                if last_time is not None:
                    self._rates.add(time.time(), at - last_time, inc)
                self._out.scrapes += 1
                self._out.metrics_note = f"not scraped: {', '.join(failed)}" if failed else ""
            last, last_time = {**last, **now}, at
            if time.monotonic() - asked_at >= PROMETHEUS_EVERY_S:
                asked_at, answer = time.monotonic(), self._prometheus_ratios(info["cluster_name"])
            basis, ratios = answer
            if ratios is None:
                basis = "since start, no Prometheus" + (f" ({basis})" if basis else "")
                ratios = since_start_ratios(add(last.values()), head_scrapes, head_failed)
            slos = [
                SloFigure(
                    s.name,
                    s.title,
                    s.objective,
                    ratios.get(s.name),
                    budget_left(ratios.get(s.name), s.objective),
                )
                for s in SLOS
            ]
            with self._lock:
                self._out.slos, self._out.slo_basis = slos, basis
            self._stop.wait(max(0.0, self.scrape_s - (time.monotonic() - started)))

    def _note(self, text: str) -> None:
        with self._lock:
            self._out.metrics_note = text

    def _prometheus_history(
        self, cluster: str
    ) -> list[tuple[float, float, float, float | None, float | None]]:
        url = monitoring_urls(self.address).get("prometheus", "")
        if not url:
            return []
        end = time.time()
        series = []
        for query in HISTORY_QUERIES:
            args = {
                "query": query.format(c=cluster),
                "start": end - HISTORY_S,
                "end": end,
                "step": HISTORY_STEP_S,
            }
            try:
                reply = json.loads(_get(f"{url}/api/v1/query_range?{urllib.parse.urlencode(args)}"))
            except (OSError, ValueError):
                return []  # the ratios' query says why Prometheus is missing
            results = reply.get("data", {}).get("result", [])
            series.append(results[0]["values"] if results else [])
        return merge_history(series)

    def _prometheus_ratios(self, cluster: str) -> tuple[str, dict[str, float | None] | None]:
        """The SLO ratios over the budget window from Prometheus's recording rules, when
        ``freight monitoring up`` runs one for this cluster; (why not, None) otherwise."""
        url = monitoring_urls(self.address).get("prometheus", "")
        if not url:
            return "", None
        out: dict[str, float | None] = {}
        for slo in SLOS:
            query = f'freight:{slo.name}:ratio_rate{BUDGET_WINDOW}{{cluster="{cluster}"}}'
            try:
                reply = json.loads(
                    _get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}")
                )
            except (OSError, ValueError) as e:
                return f"Prometheus {url} unreachable: {_why(e)}", None
            results = reply.get("data", {}).get("result", [])
            value = float(results[0]["value"][1]) if results else math.nan
            out[slo.name] = None if math.isnan(value) else value
        return f"Prometheus {url}, over {BUDGET_WINDOW}", out

    # -- alerts ---------------------------------------------------------------------------------

    def _alerts_loop(self) -> None:
        while not self._stop.is_set():
            url = self.alertmanager or monitoring_urls(self.address).get("alertmanager", "")
            alerts: list[AlertRow] = []
            if not url:
                note = "no Alertmanager (give --alertmanager URL, or run freight monitoring up)"
            else:
                try:
                    alerts = alert_rows(json.loads(_get(f"{url}/api/v2/alerts?active=true")))
                    note = ""
                except (OSError, ValueError) as e:
                    note = f"Alertmanager {url} unreachable: {_why(e)}"
            with self._lock:
                self._out.alerts, self._out.alertmanager, self._out.alerts_note = alerts, url, note
            self._stop.wait(self.scrape_s)


# -- the screen -------------------------------------------------------------------------------

BAR_WIDTH = 10


def level(fraction: float) -> str:
    """The meter's colour: green below 70 %, yellow below 90 %, red from 90 %."""
    return "green" if fraction < 0.7 else "yellow" if fraction < 0.9 else "red"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f}"


def bar(used: float, total: float, figures: str = "") -> Text:
    """``used`` of ``total`` as a bar in its threshold colour, its percentage and ``figures``."""
    if total <= 0:
        return Text("-")
    fraction = min(1.0, max(0.0, used / total))
    filled = round(fraction * BAR_WIDTH)
    text = Text("█" * filled + "░" * (BAR_WIDTH - filled), style=level(fraction))
    text.append(f" {fraction:4.0%}", style=level(fraction))
    if figures:
        text.append(f" {figures}")
    return text


def _number(x: float) -> str:
    return f"{x:g}"


NODE_COLUMNS = ("node", "host", "state", "CPU", "GPU", "memory (GiB)", "object store (GiB)")


def node_cells(n: NodeMeters) -> tuple[str | Text, ...]:
    state_style = {"DEAD": "bold red", "DRAINING": "yellow"}.get(n.state, "")
    return (
        n.node_id[:12] + (" (head)" if n.is_head_node else ""),
        n.hostname,
        Text(n.state, style=state_style),
        bar(n.cpu_used, n.cpu_total, f"{_number(n.cpu_used)}/{_number(n.cpu_total)}"),
        bar(n.gpu_used, n.gpu_total, f"{_number(n.gpu_used)}/{_number(n.gpu_total)}"),
        bar(n.memory_used, n.memory_total, f"{_gib(n.memory_used)}/{_gib(n.memory_total)}"),
        bar(n.store_used, n.store_total, f"{_gib(n.store_used)}/{_gib(n.store_total)}"),
    )


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def slo_text(o: Overview) -> Text:
    out = Text("SLOs and error budget left", style="bold")
    out.append(f"  ({o.slo_basis or 'waiting for the first scrape'})\n", style="dim")
    for s in o.slos:
        left = s.budget_left
        style = (
            "dim" if left is None else "green" if left > 0.3 else "yellow" if left > 0 else "red"
        )
        shown = "no events yet" if left is None else f"{left:.0%} left"
        if left is not None and left < 0:
            shown = f"exhausted ({left:.0%})"
        out.append(f"  {s.title:<20} objective {s.objective:.1%}  bad {_percent(s.bad_ratio):>7}  ")
        out.append(shown + "\n", style=style)
    if o.slo_basis.startswith("since start"):
        out.append("  (the head's availability: this view's own scrapes of it)\n", style="dim")
    return out


def alerts_text(o: Overview) -> Text:
    firing = [a for a in o.alerts if a.state == "active"]
    out = Text(f"Alerts firing: {len(firing)}", style="bold")
    if o.alertmanager:
        out.append(f"  ({o.alertmanager})", style="dim")
    out.append("\n")
    if o.alerts_note:
        out.append(f"  {o.alerts_note}\n", style="yellow" if o.alertmanager else "dim")
    style = {"critical": "bold red", "warning": "yellow"}
    for a in o.alerts:
        tag = "" if a.state == "active" else f" ({a.state})"
        out.append(f"  {a.severity or '-':<9}", style=style.get(a.severity, ""))
        out.append(f"{a.name}{tag}  {a.summary}\n")
    return out


def events_text(o: Overview) -> Text:
    out = Text("Recent events", style="bold")
    out.append(" (newest first)\n", style="dim")
    style = {"ERROR": "red", "WARNING": "yellow"}
    for e in o.events:
        when = datetime.fromtimestamp(e.time).strftime("%H:%M:%S") if e.time else "-"
        out.append(f"  {when}  ")
        out.append(f"{e.severity:<8}", style=style.get(e.severity, ""))
        out.append(f" {e.kind:<20} {e.message}\n")
    if not o.events:
        out.append("  none yet\n", style="dim")
    return out


def status_text(o: Overview, address: str) -> str:
    alive = sum(1 for n in o.nodes if n.state != "DEAD")
    parts = [OVERVIEW, f"{alive} of {len(o.nodes)} nodes alive" if o.nodes_listed else "listing..."]
    if o.stale_since is not None:
        when = datetime.fromtimestamp(o.stale_since).strftime("%H:%M:%S")
        parts.append(f"STALE since {when}: {o.stale_reason} (reconnecting)")
    if o.metrics_note:
        parts.append(o.metrics_note)
    parts.append(f"freight top {address}")
    return "  |  ".join(parts)


class OverviewScreen(Screen[None]):
    """``:overview``: the nodes with their meters, the last ten minutes as sparklines, the SLOs'
    budget, the alerts firing and the newest events. Enter on a node opens the nodes view on it;
    esc goes back to the view below."""

    BINDINGS: ClassVar[list[Any]] = [
        Binding("escape", "back", "back"),
        Binding("colon", "command", "command"),
        Binding("question_mark", "app.help", "help"),
        Binding("q", "app.quit", "quit"),
        # The table views' keys mean nothing here; they must not act on the view below.
        Binding("slash,f,s,S,y,c,d", "nothing", show=False),
    ]
    CSS = """
    #ov-status { height: 1; background: $boost; padding: 0 1; }
    #ov-status.stale { background: $error; color: $text; }
    #ov-nodes { height: auto; max-height: 40%; }
    #ov-sparks { height: 5; }
    #ov-sparks Vertical { width: 1fr; padding: 0 1; }
    #ov-sparks Static { height: 1; }
    #ov-sparks Sparkline { height: 3; }
    #ov-bottom { height: auto; }
    #ov-slo, #ov-alerts { width: 1fr; height: auto; padding: 0 1; }
    #ov-events { height: auto; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.last = Overview()
        self.shown: dict[str, tuple[str | Text, ...]] = {}  # the node table's rows, by node id

    @property
    def top(self) -> TopApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(id="ov-status")
        yield DataTable(id="ov-nodes", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="ov-sparks"):
            for name in ("throughput", "failures", "latency"):
                with Vertical():
                    yield Static(id=f"ov-{name}-label")
                    yield Sparkline([], id=f"ov-{name}")
        with Horizontal(id="ov-bottom"):
            yield Static(id="ov-slo")
            yield Static(id="ov-alerts")
        yield Static(id="ov-events")
        yield Footer()

    def on_mount(self) -> None:
        app = self.top
        self.source = app.source(
            OVERVIEW,
            lambda: OverviewSource(
                app.address, refresh=app.refresh_s, alertmanager=app.alertmanager
            ),
        )
        table = self.query_one("#ov-nodes", DataTable)
        for i, title in enumerate(NODE_COLUMNS):
            table.add_column(title, key=str(i))
        table.focus()
        self.ticker = self.set_interval(app.refresh_s, self.tick)
        self.tick()

    def on_unmount(self) -> None:
        self.ticker.stop()
        self.source.stop()

    def tick(self) -> None:
        o: Overview = self.source.take()
        self.last = o
        self.show_nodes(o.nodes)
        for name, data, label in (
            (
                "throughput",
                o.throughput,
                f"tasks finished/s, last {HISTORY_S / 60:.0f} min: {_last(o.throughput, '{:.1f}')}",
            ),
            (
                "failures",
                o.failures,
                f"tasks failed/s: {_last(o.failures, '{:.1f}')}"
                + (" (before opening: Prometheus)" if o.history_points else ""),
            ),
            (
                "latency",
                o.latency_p95,
                "scheduling latency p50/p95: "
                f"{_ms(o.latency_p50)}/{_ms(o.latency_p95[-1] if o.latency_p95 else None)}",
            ),
        ):
            self.query_one(f"#ov-{name}", Sparkline).data = from_zero(data)
            self.query_one(f"#ov-{name}-label", Static).update(Content(label))
        self.query_one("#ov-slo", Static).update(slo_text(o))
        self.query_one("#ov-alerts", Static).update(alerts_text(o))
        self.query_one("#ov-events", Static).update(events_text(o))
        status = self.query_one("#ov-status", Static)
        status.update(Content(status_text(o, self.top.address)))
        status.set_class(o.stale_since is not None, "stale")

    def show_nodes(self, nodes: list[NodeMeters]) -> None:
        """Change the node table row by row, by node id, as the table views do."""
        table = self.query_one("#ov-nodes", DataTable)
        now = {n.node_id: node_cells(n) for n in nodes}
        for key in [k for k in self.shown if k not in now]:
            table.remove_row(key)
            del self.shown[key]
        for key, row in now.items():
            old = self.shown.get(key)
            if old is None:
                table.add_row(*row, key=key)
            else:
                for i, (a, b) in enumerate(zip(old, row, strict=True)):
                    if a != b:
                        table.update_cell(key, str(i), b)
            self.shown[key] = row

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_command(self) -> None:
        """``:`` opens the prompt of the view below (a command leaves the overview)."""
        self.app.pop_screen()
        self.top.action_command()

    def action_nothing(self) -> None:
        self.notify("that key acts on a table view; : opens one (:tasks, :nodes)", timeout=3)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a node: the nodes view on it; esc there comes back here."""
        event.stop()
        node_id = event.row_key.value
        if node_id:
            from .app import View

            app = self.top
            app.pop_screen()
            app.open_view(View("nodes", (f"node_id={node_id}",)))
            app.history.append(View(OVERVIEW))


def from_zero(values: list[float]) -> list[float]:
    """A sparkline's data drawn from zero: Textual scales bars from the smallest value, which
    would draw a steady 200 tasks/s as a flat line at the bottom; a leading 0 anchors them."""
    return [0.0, *values]


def _last(values: list[float], fmt: str) -> str:
    return fmt.format(values[-1]) if values else "-"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"
