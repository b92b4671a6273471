"""Build freight's Grafana dashboards as code and write the committed JSON and provisioning files.

Run ``make dashboards`` (or ``python dashboards/generate.py``) after changing a panel or the
metrics catalogue; a test fails while the committed JSON differs from what this produces.

Every metric name comes from ``freight.observe.catalogue`` through :func:`m`, so a metric renamed
or removed there makes generation fail instead of shipping a panel that shows nothing. Every
panel is made by :func:`panel`, which requires a description and a unit, and every selector by
:func:`sel`, which always filters on ``cluster=~"$cluster"``.

:func:`panel_queries` returns every (dashboard, panel title, expr) triple and :func:`concrete`
replaces the Grafana variables in an expression, for checks that run the queries against a live
Prometheus.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import gauge as gauge_b
from grafana_foundation_sdk.builders import heatmap as heatmap_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import heatmap as heatmap_m
from grafana_foundation_sdk.models import prometheus as prom_m

from freight.cli.metrics_cmd import JOBS
from freight.observe.catalogue import BYTE_RESOURCES, Type, metric

HERE = Path(__file__).resolve().parent
DATASOURCE_UID = "freight-prometheus"
DATASOURCE = dash_m.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
PROMETHEUS_URL = "http://localhost:9090"
HEAD_JOB = next(job for job, role in JOBS if role == "head")
# Target label the cluster's service discovery puts on each node agent's series.
NODE_LABEL = "node_id"


# -- service-level objectives ---------------------------------------------------------------
@dataclass(frozen=True)
class Slo:
    name: str
    objective: float  # the fraction of good events promised over WINDOW


SLO_WINDOW = "30d"
TASK_SUCCESS = Slo("task success (system errors only)", 0.999)
SCHEDULING = Slo("task scheduling latency", 0.99)
HEAD_AVAILABILITY = Slo("head availability", 0.999)
# A scheduling attempt is good when it started within this many seconds. It must be one of the
# histogram's buckets, or the good events cannot be counted exactly (checked below).
SCHEDULING_THRESHOLD_SECONDS = 0.2


# -- metric names and selectors ---------------------------------------------------------------
def m(name: str, suffix: Literal["", "_bucket", "_sum", "_count"] = "") -> str:
    """``name`` as the catalogue declares it (KeyError otherwise), with a histogram suffix."""
    entry = metric(name)
    if suffix and entry.type is not Type.HISTOGRAM:
        raise ValueError(f"{name} is a {entry.type.value}, not a histogram: no {suffix} series")
    return entry.name + suffix


def sel(name: str, *matchers: str, node: bool = False, fn: bool = False) -> str:
    """``name{cluster=~"$cluster", ...}``; ``node``/``fn`` add the debug dashboard's filters."""
    parts = ['cluster=~"$cluster"', *matchers]
    if node:
        parts.append(f'{NODE_LABEL}=~"$node"')
    if fn:
        parts.append('name=~"$name"')
    return name + "{" + ", ".join(parts) + "}"


def eq(label: str, value: str) -> str:
    """A matcher ``label="value"``."""
    return f'{label}="{value}"'


def rate(name: str, *matchers: str, node: bool = False, fn: bool = False) -> str:
    return f"rate({sel(name, *matchers, node=node, fn=fn)}[$__rate_interval])"


def quantile(q: float, hist: str, by: Sequence[str] = (), *matchers: str, **kw: bool) -> str:
    labels = ", ".join(("le", *by))
    return (
        f"histogram_quantile({q}, sum by ({labels}) ({rate(m(hist, '_bucket'), *matchers, **kw)}))"
    )


def _le(value: float) -> str:
    """A bucket bound as the exporter writes it in ``le`` (Go's float formatting)."""
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(value))


if SCHEDULING_THRESHOLD_SECONDS not in metric("freight_task_scheduling_latency_seconds").buckets:
    raise ValueError(
        f"the scheduling SLO threshold {SCHEDULING_THRESHOLD_SECONDS}s is not a bucket of "
        "freight_task_scheduling_latency_seconds; add it to the catalogue's buckets"
    )


# -- SLO expressions (shared by the executive dashboard; one place to change them) ------------
def task_success_ratio(window: str) -> str:
    """Good over total, as the SLO's recording rules count (cancelled tasks left out). Not
    ``1 - bad / total``: a function's series of a system error appear with its first one, so on
    a cluster that never had one, the bad sum has no series and the panel would show no data."""
    finished = m("freight_tasks_finished_total")
    good = sel(finished, 'error_kind!~"system|cancelled"')
    total = sel(finished, 'error_kind!="cancelled"')
    return f"sum(increase({good}[{window}])) / sum(increase({total}[{window}]))"


def scheduling_good_ratio(window: str) -> str:
    name = "freight_task_scheduling_latency_seconds"
    le = _le(SCHEDULING_THRESHOLD_SECONDS)
    good = f"sum(increase({sel(m(name, '_bucket'), eq('le', le))}[{window}]))"
    total = f"sum(increase({sel(m(name, '_count'))}[{window}]))"
    return f"{good} / {total}"


def head_availability_ratio(window: str) -> str:
    return f"avg(avg_over_time({sel('up', eq('job', HEAD_JOB))}[{window}]))"


def budget_left(ratio: str, slo: Slo) -> str:
    """The share of the error budget not yet spent: 1 - (bad share / allowed bad share)."""
    return f"1 - ((1 - ({ratio})) / {1 - slo.objective:.6g})"


# -- panels -----------------------------------------------------------------------------------
Kind = Literal["timeseries", "stat", "gauge", "heatmap", "table"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    heatmap: bool = False


def _target(q: Query, ref: str) -> prom_b.Dataquery:
    t = prom_b.Dataquery().expr(q.expr).ref_id(ref).datasource(DATASOURCE)
    if q.legend:
        t = t.legend_format(q.legend)
    if q.heatmap:
        t = t.format(prom_m.PromQueryFormat.HEATMAP)
    if q.instant:
        t = t.instant().format(prom_m.PromQueryFormat.TABLE)
    return t


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dash_m.ThresholdsMode.ABSOLUTE)
        .steps([dash_m.Threshold(value=v, color=c) for v, c in steps])
    )


def above_bad(line: float, warn: float | None = None) -> list[tuple[float | None, str]]:
    """Green below the line, red at or above it (amber from ``warn``)."""
    steps: list[tuple[float | None, str]] = [(None, "green")]
    if warn is not None:
        steps.append((warn, "orange"))
    return [*steps, (line, "red")]


def below_bad(line: float) -> list[tuple[float | None, str]]:
    """Red below the line (an SLO objective), green at or above it."""
    return [(None, "red"), (line, "green")]


def panel(
    kind: Kind,
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
    width: int = 12,
    height: int = 8,
    lo: float | None = None,
    hi: float | None = None,
) -> Any:
    """One panel; every panel of every dashboard is made here (description and unit required)."""
    if not description or not unit:
        raise ValueError(f"panel {title!r} needs a description and a unit")
    builder: Any
    if kind == "timeseries":
        builder = ts_b.Panel().legend(
            common_b.VizLegendOptions()
            .display_mode(common_m.LegendDisplayMode.TABLE)
            .placement(common_m.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        if len(thresholds) > 1:
            builder = builder.thresholds_style(
                common_b.GraphThresholdsStyleConfig().mode(common_m.GraphTresholdsStyleMode.DASHED)
            )
    elif kind == "stat":
        builder = stat_b.Panel().reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
    elif kind == "gauge":
        builder = gauge_b.Panel().reduce_options(
            common_b.ReduceDataOptions().calcs(["lastNotNull"])
        )
    elif kind == "heatmap":
        # The histogram's own buckets, not buckets Grafana would compute from samples.
        # Buckets are the histogram's `le` bounds (upper bounds), shown on the y axis in the
        # panel's unit.
        builder = (
            heatmap_b.Panel()
            .calculate(False)
            .rows_frame(heatmap_b.RowsHeatmapOptions().layout(common_m.HeatmapCellLayout.LE))
            .y_axis(heatmap_b.YAxisConfig().unit(unit))
            .color(
                heatmap_b.HeatmapColorOptions()
                .mode(heatmap_m.HeatmapColorMode.SCHEME)
                .scheme("Spectral")
                .scale(heatmap_m.HeatmapColorScale.EXPONENTIAL)
                .exponent(0.5)
                .fill("dark-orange")
                .steps(64)
            )
            .show_tooltip()
            .show_legend()
        )
    else:
        builder = table_b.Panel().show_header(True)
    builder = (
        builder.title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .thresholds(_thresholds(thresholds))
    )
    if lo is not None:
        builder = builder.min(lo)
    if hi is not None:
        builder = builder.max(hi)
    for i, q in enumerate(queries):
        builder = builder.with_target(_target(q, chr(ord("A") + i)))
    return builder


def row(title: str) -> dash_b.Row:
    return dash_b.Row(title)


def _variable(name: str, label: str, query: str, description: str) -> dash_b.QueryVariable:
    return (
        dash_b.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dash_m.VariableOption(selected=True, text="All", value="$__all"))
    )


CLUSTER_VAR = _variable(
    "cluster",
    "cluster",
    f"label_values({m('freight_build_info')}, cluster)",
    "The freight cluster(s) to show (every series carries a cluster label).",
)
NODE_VAR = _variable(
    "node",
    "node",
    f'label_values({m("freight_workers")}{{cluster=~"$cluster"}}, {NODE_LABEL})',
    "The node agent(s) to show, by node id (a target label from the cluster's service discovery).",
)
NAME_VAR = _variable(
    "name",
    "function",
    f'label_values({m("freight_tasks_submitted_total")}{{cluster=~"$cluster"}}, name)',
    "Task function or Class.method name (the top names; the rest are folded into 'other').",
)


def _dashboard(
    uid: str, title: str, description: str, items: Sequence[Any], variables: Sequence[Any]
) -> dash_b.Dashboard:
    d = (
        dash_b.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["freight"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
    )
    for v in variables:
        d = d.with_variable(v)
    # Fixed ids keep the JSON stable between runs and panel links working.
    for i, item in enumerate(items, start=1):
        item = item.id(i)
        d = d.with_row(item) if isinstance(item, dash_b.Row) else d.with_panel(item)
    return d


# -- executive ------------------------------------------------------------------------------
def executive() -> dash_b.Dashboard:
    finished = m("freight_tasks_finished_total")
    cost = m("freight_job_cost_total")
    w = SLO_WINDOW
    slos = (
        (
            TASK_SUCCESS,
            task_success_ratio(w),
            'a task that failed with error_kind="system" '
            "(worker or node died, actor dead, out of memory) is bad; application errors are the "
            "user's and count as good; cancelled tasks are left out",
        ),
        (
            SCHEDULING,
            scheduling_good_ratio(w),
            f"a task attempt that started within "
            f"{SCHEDULING_THRESHOLD_SECONDS:g}s of submission is good",
        ),
        (
            HEAD_AVAILABILITY,
            head_availability_ratio(w),
            "the share of scrapes of the head's metrics endpoint that succeeded",
        ),
    )
    items: list[Any] = [
        row("Availability"),
        panel(
            "stat",
            "Head up",
            "1 when Prometheus reached the head's metrics endpoint at its last scrape, 0 when not.",
            "bool_yes_no",
            [Query(f"min({sel('up', eq('job', HEAD_JOB))})")],
            below_bad(1),
            width=6,
            height=5,
        ),
        panel(
            "stat",
            "Nodes alive",
            "Node agents the head counts as alive, drained ones (freight drain) included.",
            "short",
            [Query("sum(" + sel(m("freight_nodes"), 'state=~"ALIVE|DRAINING"') + ")")],
            below_bad(1),
            width=6,
            height=5,
        ),
        panel(
            "stat",
            "Nodes dead",
            "Node agents the head has declared dead (missed heartbeats or failed health checks).",
            "short",
            [Query(f"sum({sel(m('freight_nodes'), eq('state', 'DEAD'))})")],
            above_bad(1),
            width=6,
            height=5,
        ),
        panel(
            "stat",
            "Task throughput",
            "Tasks reaching a final state per second, all outcomes.",
            "ops",
            [Query(f"sum({rate(finished)})")],
            width=6,
            height=5,
        ),
        row(f"SLOs ({w} window)"),
    ]
    for slo, ratio, meaning in slos:
        items.append(
            panel(
                "stat",
                f"SLO attainment: {slo.name}",
                f"Share of good events over {w} ({meaning}); objective {slo.objective:.3%} "
                "(the threshold line).",
                "percentunit",
                [Query(ratio)],
                below_bad(slo.objective),
                width=8,
                height=5,
            )
        )
    for slo, ratio, meaning in slos:
        items.append(
            panel(
                "gauge",
                f"Error budget left: {slo.name}",
                f"Share of the {w} error budget ({1 - slo.objective:.3%} bad events allowed; "
                f"{meaning}) not yet spent. Below 0 the SLO is broken.",
                "percentunit",
                [Query(budget_left(ratio, slo))],
                [(None, "red"), (0.0, "orange"), (0.25, "green")],
                width=8,
                height=6,
                lo=0,
                hi=1,
            )
        )
    items += [
        panel(
            "timeseries",
            "Task success ratio (system errors only)",
            "Over the last hour, share of finished tasks (cancelled ones left out) that did not "
            "fail with a system error, "
            f"against the {TASK_SUCCESS.objective:.3%} objective.",
            "percentunit",
            [Query(task_success_ratio("1h"), "success")],
            below_bad(TASK_SUCCESS.objective),
            width=12,
        ),
        panel(
            "timeseries",
            "Scheduling within threshold",
            f"Over the last hour, share of task attempts that started within "
            f"{SCHEDULING_THRESHOLD_SECONDS:g}s, against the {SCHEDULING.objective:.3%} objective.",
            "percentunit",
            [Query(scheduling_good_ratio("1h"), "within threshold")],
            below_bad(SCHEDULING.objective),
            width=12,
        ),
        row("Spend"),
        panel(
            "timeseries",
            "Spend per team",
            "Cost of jobs' resource use per hour, by the job's team label, at "
            "FREIGHT_PRICE_CPU_HOUR and FREIGHT_PRICE_GPU_HOUR (in the currency of those prices).",
            "short",
            [Query(f"sum by (team) ({rate(cost)}) * 3600", "{{team}}")],
            width=12,
        ),
        panel(
            "timeseries",
            "Spend per owner",
            "Cost of jobs' resource use per hour, by the job's owner label (currency of "
            "FREIGHT_PRICE_CPU_HOUR).",
            "short",
            [Query(f"sum by (owner) ({rate(cost)}) * 3600", "{{owner}}")],
            width=12,
        ),
        panel(
            "table",
            "Top consumers (cost over the time range)",
            "The ten team/owner pairs that spent the most over the dashboard's time range.",
            "short",
            [
                Query(
                    f"topk(10, sum by (team, owner) (increase({sel(cost)}[$__range])))",
                    instant=True,
                )
            ],
            width=12,
        ),
        panel(
            "table",
            "Top consumers (resource-seconds over the time range)",
            "The ten team/owner/resource triples that held the most resource-seconds (amount held "
            "times time held) over the dashboard's time range.",
            "short",
            [
                Query(
                    "topk(10, sum by (team, owner, resource) (increase("
                    f"{sel(m('freight_job_resource_seconds_total'))}[$__range])))",
                    instant=True,
                )
            ],
            width=12,
        ),
    ]
    return _dashboard(
        "freight-executive",
        "freight / executive",
        "Is the platform up, are the SLOs met, what does it cost and who spends it.",
        items,
        [CLUSTER_VAR],
    )


# -- on-call --------------------------------------------------------------------------------
def oncall() -> dash_b.Dashboard:
    finished = m("freight_tasks_finished_total")
    threshold = SCHEDULING_THRESHOLD_SECONDS
    items: list[Any] = [
        row("Alerts and failures"),
        panel(
            "table",
            "Firing alerts",
            "Alerts Prometheus is firing for this cluster right now, with their labels.",
            "short",
            [Query(sel("ALERTS", eq("alertstate", "firing")), instant=True)],
            width=24,
            height=6,
        ),
        panel(
            "timeseries",
            "Failed tasks by error kind and type",
            "Tasks that ended FAILED per second, by error_kind (system is the platform's, "
            "application the user's code) and error_type (the exception class).",
            "ops",
            [
                Query(
                    f"sum by (error_kind, error_type) ({rate(finished, eq('state', 'FAILED'))})",
                    "{{error_kind}} {{error_type}}",
                )
            ],
        ),
        panel(
            "timeseries",
            "Task retries by error kind",
            "Task attempts that failed and were retried, per second.",
            "ops",
            [
                Query(
                    f"sum by (error_kind) ({rate(m('freight_task_retries_total'))})",
                    "{{error_kind}}",
                )
            ],
        ),
        row("Latency"),
        panel(
            "timeseries",
            "Task scheduling latency",
            "p50/p95/p99 of the time from submission to the start of the attempt that ran; the "
            f"line is the SLO threshold ({threshold:g}s).",
            "s",
            [
                Query(quantile(q, "freight_task_scheduling_latency_seconds"), f"p{int(q * 100)}")
                for q in (0.5, 0.95, 0.99)
            ],
            above_bad(threshold),
        ),
        panel(
            "timeseries",
            "Head placement latency (actors, placement groups)",
            "p50/p95/p99 of the time the head takes to place and start an actor or to reserve "
            "every bundle of a placement group, by kind.",
            "s",
            [
                Query(
                    quantile(q, "freight_head_scheduling_latency_seconds", ("kind",)),
                    f"{{{{kind}}}} p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            above_bad(threshold),
        ),
        panel(
            "timeseries",
            "Control-store latency",
            "p99 of the head's control-store (SQLite WAL) operations, by operation. Slow writes "
            "here slow every scheduling decision.",
            "s",
            [
                Query(
                    quantile(0.99, "freight_control_store_operation_seconds", ("operation",)),
                    "{{operation}} p99",
                )
            ],
            above_bad(0.1, 0.025),
        ),
        panel(
            "timeseries",
            "Heartbeat lateness",
            "How late each node's heartbeats are beyond the 1 s interval (its own endpoint), "
            "the head's count of the most overdue node (it also sees a node that cannot be "
            "scraped), and the p99 gap between consecutive heartbeats the head received. "
            "FreightNodeHeartbeatAgeHigh fires above 10 s.",
            "s",
            [
                Query(
                    f"max by ({NODE_LABEL}) ({sel(m('freight_node_heartbeat_overdue_seconds'))})",
                    f"{{{{{NODE_LABEL}}}}} overdue",
                ),
                Query(
                    f"max({sel(m('freight_node_heartbeat_overdue_max_seconds'))})",
                    "most overdue (head)",
                ),
                Query(quantile(0.99, "freight_node_heartbeat_lag_seconds"), "gap p99"),
            ],
            above_bad(10.0, 2.0),
        ),
        row("Node saturation"),
        panel(
            "timeseries",
            "CPU claimed per node",
            "Share of each node's CPU resource claimed by leases and actors.",
            "percentunit",
            [Query(_claimed("CPU"), f"{{{{{NODE_LABEL}}}}}")],
            above_bad(1.0, 0.9),
            lo=0,
            hi=1,
        ),
        panel(
            "timeseries",
            "Memory claimed per node",
            "Share of each node's logical memory resource claimed by leases and actors (what "
            "tasks asked for, not the memory the node's processes use).",
            "percentunit",
            [Query(_claimed("memory"), f"{{{{{NODE_LABEL}}}}}")],
            above_bad(1.0, 0.9),
            lo=0,
            hi=1,
        ),
        panel(
            "timeseries",
            "Object store use per node",
            "Bytes of each node's shared-memory object store in use (in memory, pinned or "
            "not) over its capacity; lines at 70% and 90%.",
            "percentunit",
            [Query(_store_use(), f"{{{{{NODE_LABEL}}}}}")],
            above_bad(0.9, 0.7),
            lo=0,
            hi=1,
        ),
        panel(
            "timeseries",
            "Object store bytes by state",
            "Bytes in the object stores by state, summed over nodes; each byte is in one "
            "state, so the states add up to the whole store.",
            "bytes",
            [
                Query(f"sum by (state) ({sel(m('freight_object_store_bytes'))})", "{{state}}"),
                Query(f"sum({sel(m('freight_object_store_capacity_bytes'))})", "capacity"),
            ],
        ),
        panel(
            "timeseries",
            "Queue depth by pending reason",
            "Tasks and lease requests waiting, by why they wait (arguments, resources, a worker "
            "to start, infeasible).",
            "short",
            [Query(f"sum by (reason) ({sel(m('freight_queue_depth'))})", "{{reason}}")],
        ),
        panel(
            "timeseries",
            "Workers by state",
            "Worker processes by state, summed over nodes.",
            "short",
            [Query(f"sum by (state) ({sel(m('freight_workers'))})", "{{state}}")],
        ),
        row("Kills, crashes, restarts"),
        panel(
            "timeseries",
            "Memory-monitor kills",
            "Workers the memory monitor killed because the node's memory use was above "
            "FREIGHT_MEMORY_USAGE_THRESHOLD, per second, by what they ran.",
            "ops",
            [Query(f"sum by (kind) ({rate(m('freight_memory_monitor_kills_total'))})", "{{kind}}")],
            above_bad(0.01),
        ),
        panel(
            "timeseries",
            "Worker crashes",
            "Worker processes that exited without being asked to, per second, by exit code or "
            "signal.",
            "ops",
            [Query(f"sum by (cause) ({rate(m('freight_worker_crashes_total'))})", "{{cause}}")],
            above_bad(0.01),
        ),
        panel(
            "timeseries",
            "Actor restarts",
            "Actors restarted after their worker or node died, per second, by class.",
            "ops",
            [
                Query(
                    f"sum by (class_name) ({rate(m('freight_actor_restarts_total'))})",
                    "{{class_name}}",
                )
            ],
        ),
        panel(
            "timeseries",
            "Actor deaths by cause",
            "Actors that died per second, by cause (killed, worker_died, node_died, "
            "creation_failed, owner_died).",
            "ops",
            [Query(f"sum by (cause) ({rate(m('freight_actor_deaths_total'))})", "{{cause}}")],
        ),
        panel(
            "timeseries",
            "Unclean driver disconnects",
            "Drivers whose connection closed without a shutdown (crashed or killed), per second.",
            "ops",
            [
                Query(
                    f"sum({rate(m('freight_driver_disconnects_total'), eq('clean', 'false'))})",
                    "unclean",
                )
            ],
            above_bad(0.01),
        ),
        panel(
            "timeseries",
            "Node health-check failures",
            "Failed health checks from the head to node agents, per second, by reason.",
            "ops",
            [
                Query(
                    f"sum by (reason) ({rate(m('freight_node_health_check_failures_total'))})",
                    "{{reason}}",
                )
            ],
        ),
    ]
    return _dashboard(
        "freight-oncall",
        "freight / on-call",
        "What is failing, how slow it is, which nodes are saturated, what was killed or "
        "restarted, and which alerts fire.",
        items,
        [CLUSTER_VAR],
    )


def _claimed(resource: str, node: bool = False) -> str:
    unit = "_bytes" if resource in BYTE_RESOURCES else ""  # memory-like resources count bytes
    cap = sel(m(f"freight_resources_capacity{unit}"), eq("resource", resource), node=node)
    avail = sel(m(f"freight_resources_available{unit}"), eq("resource", resource), node=node)
    return f"1 - (max by ({NODE_LABEL}) ({avail}) / max by ({NODE_LABEL}) ({cap}))"


def _store_use(node: bool = False) -> str:
    used = sel(m("freight_object_store_in_memory_bytes"), node=node)
    cap = sel(m("freight_object_store_capacity_bytes"), node=node)
    return f"max by ({NODE_LABEL}) ({used}) / max by ({NODE_LABEL}) ({cap})"


# -- debug ----------------------------------------------------------------------------------
def debug() -> dash_b.Dashboard:
    n = f"{{{{{NODE_LABEL}}}}}"
    fn: dict[str, bool] = {"node": True, "fn": True}
    nd: dict[str, bool] = {"node": True}
    items: list[Any] = [
        row("Functions ($name)"),
        panel(
            "timeseries",
            "Submitted, started, finished per function",
            "Tasks and actor calls submitted, attempts started and tasks finished per second, "
            "by function name.",
            "ops",
            [
                Query(
                    f"sum by (name) ({rate(m('freight_tasks_submitted_total'), **fn)})",
                    "{{name}} submitted",
                ),
                Query(
                    f"sum by (name) ({rate(m('freight_tasks_started_total'), **fn)})",
                    "{{name}} started",
                ),
                Query(
                    f"sum by (name, state) ({rate(m('freight_tasks_finished_total'), **fn)})",
                    "{{name}} {{state}}",
                ),
            ],
            width=24,
        ),
        panel(
            "timeseries",
            "Failures per function",
            "Failed tasks per second by function, error kind and exception type.",
            "ops",
            [
                Query(
                    "sum by (name, error_kind, error_type) "
                    f"({rate(m('freight_tasks_finished_total'), eq('state', 'FAILED'), **fn)})",
                    "{{name}} {{error_kind}} {{error_type}}",
                )
            ],
        ),
        panel(
            "timeseries",
            "Execution latency p95 per function",
            "p95 of the time each function's code ran on its worker (argument fetch and result "
            "store included).",
            "s",
            [
                Query(
                    quantile(0.95, "freight_task_execution_latency_seconds", ("name",), **fn),
                    "{{name}}",
                )
            ],
        ),
        panel(
            "heatmap",
            "Execution latency",
            "Distribution of task execution time for the selected functions and nodes, from the "
            "histogram's buckets.",
            "s",
            [
                Query(
                    f"sum by (le) ({rate(m('freight_task_execution_latency_seconds', '_bucket'), **fn)})",
                    "{{le}}",
                    heatmap=True,
                )
            ],
        ),
        panel(
            "heatmap",
            "Scheduling latency",
            "Distribution of the time from submission to the start of the attempt that ran, for "
            "the selected functions and nodes.",
            "s",
            [
                Query(
                    f"sum by (le) ({rate(m('freight_task_scheduling_latency_seconds', '_bucket'), **fn)})",
                    "{{le}}",
                    heatmap=True,
                )
            ],
        ),
        row("Jobs"),
        panel(
            "timeseries",
            "Jobs by state",
            "Jobs the head knows, by state.",
            "short",
            [Query(f"sum by (state) ({sel(m('freight_jobs'))})", "{{state}}")],
        ),
        panel(
            "timeseries",
            "Resource use per team and owner",
            "Resource-seconds held per second (the average amount held) by jobs, by team, "
            "owner and resource.",
            "short",
            [
                Query(
                    f"sum by (team, owner, resource) ({rate(m('freight_job_resource_seconds_total'))})",
                    "{{team}}/{{owner}} {{resource}}",
                )
            ],
        ),
        row("Objects ($node)"),
        panel(
            "timeseries",
            "Object store bytes by state per node",
            "Bytes in each node's object store by state (each byte in one state).",
            "bytes",
            [
                Query(
                    f"sum by ({NODE_LABEL}, state) ({sel(m('freight_object_store_bytes'), **nd)})",
                    f"{n} {{{{state}}}}",
                )
            ],
        ),
        panel(
            "timeseries",
            "Object store objects by state per node",
            "Objects in each node's object store by state.",
            "short",
            [
                Query(
                    f"sum by ({NODE_LABEL}, state) ({sel(m('freight_object_store_objects'), **nd)})",
                    f"{n} {{{{state}}}}",
                )
            ],
        ),
        panel(
            "timeseries",
            "Spill and restore throughput",
            "Bytes per second spilled from shared memory to disk and restored back, per node.",
            "Bps",
            [
                Query(
                    f"sum by ({NODE_LABEL}) ({rate(m('freight_object_spilled_bytes_total'), **nd)})",
                    f"{n} spilled",
                ),
                Query(
                    f"sum by ({NODE_LABEL}) ({rate(m('freight_object_restored_bytes_total'), **nd)})",
                    f"{n} restored",
                ),
            ],
        ),
        panel(
            "timeseries",
            "Cross-node transfer bytes",
            "Object bytes per second pulled into (in) and served from (out) each node's store.",
            "Bps",
            [
                Query(
                    "sum by (" + NODE_LABEL + ", direction) "
                    f"({rate(m('freight_object_transfer_bytes_total'), **nd)})",
                    f"{n} {{{{direction}}}}",
                )
            ],
        ),
        panel(
            "timeseries",
            "Lineage reconstructions",
            "Lost objects whose owner set out to rebuild them (started) or could not (failed), "
            "per second.",
            "ops",
            [
                Query(
                    f"sum by (outcome) ({rate(m('freight_object_reconstructions_total'), **nd)})",
                    "{{outcome}}",
                )
            ],
        ),
        row("Runtime internals"),
        panel(
            "timeseries",
            "gRPC latency by method and code",
            "p99 of gRPC requests served by the head and the node agents, by method and status "
            "code.",
            "s",
            [
                Query(
                    quantile(0.99, "freight_grpc_request_seconds", ("method", "code"), **nd),
                    "{{method}} {{code}}",
                )
            ],
            width=24,
        ),
        panel(
            "timeseries",
            "gRPC requests by code",
            "gRPC requests per second served by the head and node agents, by status code.",
            "reqps",
            [
                Query(
                    f"sum by (code) ({rate(m('freight_grpc_request_seconds', '_count'), **nd)})",
                    "{{code}}",
                )
            ],
        ),
        panel(
            "timeseries",
            "Event-loop lag",
            "p99 of how late the asyncio loop of the head or a node agent ran a timer it set.",
            "s",
            [
                Query(
                    quantile(0.99, "freight_event_loop_lag_seconds", ("component",), **nd),
                    "{{component}} p99",
                )
            ],
            above_bad(0.1, 0.025),
        ),
        panel(
            "timeseries",
            "GC pauses",
            "p99 of Python garbage-collector pauses in workers and drivers, by generation.",
            "s",
            [
                Query(
                    quantile(0.99, "freight_gc_pause_seconds", ("generation",), **nd),
                    "gen {{generation}} p99",
                )
            ],
        ),
        panel(
            "timeseries",
            "Telemetry dropped",
            "Telemetry records dropped rather than allowed to block or grow, per second, by kind.",
            "ops",
            [
                Query(
                    f"sum by (kind) ({rate(m('freight_telemetry_dropped_total'), **nd)})",
                    "{{kind}}",
                )
            ],
            above_bad(1.0),
        ),
        panel(
            "timeseries",
            "Auth refusals and protocol errors",
            "Connections refused for a wrong or missing token or malformed greeting (by plane), "
            "and authenticated data-plane connections closed for a malformed frame, per second.",
            "ops",
            [
                Query(
                    f"sum by (plane) ({rate(m('freight_auth_refused_total'), **nd)})",
                    "refused {{plane}}",
                ),
                Query(f"sum({rate(m('freight_protocol_errors_total'), **nd)})", "protocol errors"),
            ],
        ),
    ]
    return _dashboard(
        "freight-debug",
        "freight / debug",
        "Drill down by cluster, node and function: latency distributions, the object store, "
        "spilling and transfers, gRPC, event loops, GC and telemetry.",
        items,
        [CLUSTER_VAR, NODE_VAR, NAME_VAR],
    )


DASHBOARDS = {"freight-executive": executive, "freight-oncall": oncall, "freight-debug": debug}


# -- output ---------------------------------------------------------------------------------
def render(builder: dash_b.Dashboard) -> str:
    """The dashboard as the committed JSON text.

    The builder's output is read back through the SDK's typed model (panel options and
    queries decoded by their plugins) and written again, so the committed file is exactly what
    the SDK's decoder reads: its defaults filled in, nothing it would drop or change.
    """
    register_default_plugins()
    built = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    model = dash_m.Dashboard.from_json(built)
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def datasource_yaml(url: str = PROMETHEUS_URL) -> str:
    return (
        "# Grafana provisioning: the Prometheus every freight dashboard panel queries (by uid).\n"
        "# Generated by `make dashboards`; change PROMETHEUS_URL in dashboards/generate.py or\n"
        "# edit the url here for another Prometheus.\n"
        "apiVersion: 1\n"
        "datasources:\n"
        "  - name: freight-prometheus\n"
        "    type: prometheus\n"
        f"    uid: {DATASOURCE_UID}\n"
        "    access: proxy\n"
        f"    url: {url}\n"
        "    isDefault: true\n"
        "    editable: true\n"
    )


def provider_yaml() -> str:
    return (
        "# Grafana provisioning: load the freight dashboards from the folder that holds them.\n"
        "# Generated by `make dashboards`. Point `path` at your copy of the repository's\n"
        "# dashboards/ folder when Grafana runs elsewhere (mount it at this path in a container).\n"
        "apiVersion: 1\n"
        "providers:\n"
        "  - name: freight\n"
        "    folder: freight\n"
        "    type: file\n"
        "    disableDeletion: false\n"
        "    allowUiUpdates: false\n"
        "    updateIntervalSeconds: 30\n"
        "    options:\n"
        "      path: /etc/grafana/dashboards/freight\n"
        "      foldersFromFilesStructure: false\n"
    )


def outputs() -> dict[Path, str]:
    """Every file this script writes, path → text."""
    files = {HERE / f"{name}.json": render(build()) for name, build in DASHBOARDS.items()}
    files[HERE / "provisioning" / "datasources" / "freight.yml"] = datasource_yaml()
    files[HERE / "provisioning" / "dashboards" / "freight.yml"] = provider_yaml()
    return files


def _panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in model.get("panels", []):
        if p.get("type") == "row":
            yield from p.get("panels", [])
        else:
            yield p


def panel_queries() -> list[tuple[str, str, str]]:
    """Every (dashboard, panel title, expr) triple of every dashboard, in order."""
    out = []
    for name, build in DASHBOARDS.items():
        model = json.loads(render(build()))
        for p in _panels(model):
            for t in p.get("targets", []):
                out.append((name, p["title"], t["expr"]))
    return out


def concrete(
    expr: str,
    cluster: str = ".*",
    node: str = ".*",
    name: str = ".*",
    rate_interval: str = "1m",
    time_range: str = "1h",
) -> str:
    """``expr`` with Grafana's variables replaced, ready for Prometheus's HTTP API or promtool.

    Longest names first, so ``$__range`` is not taken for a prefix of another variable.
    """
    values = {
        "$__rate_interval": rate_interval,
        "$__range": time_range,
        "$cluster": cluster,
        "$node": node,
        "$name": name,
    }
    for var in sorted(values, key=len, reverse=True):
        expr = expr.replace(var, values[var])
    if "$" in expr:
        raise ValueError(f"a Grafana variable is left in {expr!r}; add it to concrete()")
    return expr


def main() -> int:
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
