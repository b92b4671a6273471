"""Chaos Toolkit probes: what a steady-state hypothesis checks on a freight cluster.

Each returns a plain number for a tolerance to compare (``{"type": "range", "range": [2, 64]}``,
or an exact value). Counts come from the state API, counted by the head after its filters
(``since``: only tasks that ended since then, ``-5m`` or a unix time, as `freight list` takes).
The cluster is the configuration's ``freight_address``, else ``FREIGHT_ADDRESS``, else the newest
cluster on this machine.

Type hints are real types here (no postponed annotations): Chaos Toolkit's discovery reads
them to describe each argument.
"""

import math
import time
from typing import Any

from freight import state

from . import targets

__all__ = [
    "actor_restarts",
    "alert_firing",
    "canary_task_latency",
    "held_by_ended_drivers",
    "nodes_alive",
    "nodes_gone_unnoticed",
    "objects_lost",
    "page_received",
    "promql",
    "rpc_faults_in_force",
    "scheduling_latency_p95",
    "task_success_ratio",
    "tasks_pending",
]

Configuration = dict[str, Any]

# The errors of a task whose argument or result was lost (freight.exceptions.ObjectLostError and
# its kinds), as the task records name them.
LOST_OBJECT_ERRORS = "ObjectLost|OwnerDied|ObjectReconstructionFailed|ObjectFetchTimedOut"


def _count(kind: str, filters: list[Any], configuration: Configuration | None) -> int:
    rows = state.list_state(kind, filters, limit=1, address=targets.cluster(configuration))
    return int(rows.matched)


def _ended_since(since: str) -> list[Any]:
    return [("end_time", ">=", since)] if since else []


def nodes_alive(configuration: Configuration | None = None) -> int:
    """Nodes the head lists as ALIVE (not dead, not draining)."""
    return len(targets.alive_nodes(targets.cluster(configuration)))


def tasks_pending(name: str = "", configuration: Configuration | None = None) -> int:
    """Tasks waiting for their arguments or for a node (of the function `name`, if given)."""
    filters: list[Any] = [("state", "~", "^PENDING_")]
    if name:
        filters.append(("name", "=", name))
    return _count("tasks", filters, configuration)


def task_success_ratio(
    name: str = "", since: str = "", configuration: Configuration | None = None
) -> float:
    """Of the tasks that ended (of `name`, ended since `since`), the share that finished:
    1.0 when none failed, and when none ended."""
    base: list[Any] = [*(_ended_since(since)), *([("name", "=", name)] if name else [])]
    finished = _count("tasks", [*base, ("state", "=", "FINISHED")], configuration)
    failed = _count("tasks", [*base, ("state", "=", "FAILED")], configuration)
    return 1.0 if finished + failed == 0 else finished / (finished + failed)


def actor_restarts(
    name: str = "", class_name: str = "", configuration: Configuration | None = None
) -> int:
    """Restarts of the actors named `name` / of class `class_name` (every actor if neither),
    summed."""
    filters = [(k, "=", v) for k, v in (("name", name), ("class_name", class_name)) if v]
    rows = state.list_state(
        "actors", filters, limit=state.PAGE_MAX, address=targets.cluster(configuration)
    )
    return sum(int(r.get("num_restarts") or 0) for r in rows)


def objects_lost(since: str = "", configuration: Configuration | None = None) -> int:
    """Tasks that failed because an object they needed (an argument, a result) was lost."""
    filters = [
        *_ended_since(since),
        ("state", "=", "FAILED"),
        ("error_type", "~", LOST_OBJECT_ERRORS),
    ]
    return _count("tasks", filters, configuration)


def _canary() -> int:
    return 1


def canary_task_latency(
    timeout: float = 30.0, num_cpus: float = 0.0, configuration: Configuration | None = None
) -> float:
    """Seconds a tiny task takes from submission to its result (it needs `num_cpus`, none by
    default, so a cluster busy with work still answers). This process connects to the cluster
    as a driver to submit it, unless it already is one. A task that takes over `timeout` s
    fails the probe."""
    import freight

    if not freight.is_initialized():
        cluster = targets.cluster(configuration)
        freight.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    canary = freight.remote(num_cpus=num_cpus, max_retries=0)(_canary)
    started = time.monotonic()
    freight.get(canary.remote(), timeout=timeout)
    return time.monotonic() - started


def scheduling_latency_p95(
    since: str = "", name: str = "", configuration: Configuration | None = None
) -> float:
    """Seconds from submission to start that 95 % of the tasks that started (since `since`; of
    `name`, if given) waited at most: the nearest-rank 95th percentile over the head's task
    records, the newest 10,000 of the window. 0.0 when no task started in it."""
    filters: list[Any] = [("start_time", ">=", since) if since else ("start_time", ">", "0")]
    if name:
        filters.append(("name", "=", name))
    rows = state.list_state(
        "tasks",
        filters,
        limit=state.PAGE_MAX,
        sort_by="start_time",
        descending=True,
        address=targets.cluster(configuration),
    )
    waits = sorted(
        max(0.0, float(r["start_time"]) - float(r["submit_time"]))
        for r in rows
        if r.get("submit_time")
    )
    if not waits:
        return 0.0
    return waits[max(0, math.ceil(0.95 * len(waits)) - 1)]


# ---- the on-call side: Prometheus, Alertmanager, the pager (freight.chaos.oncall) -------------


def promql(
    query: str, prometheus_url: str = "", configuration: Configuration | None = None
) -> float:
    """The value of the PromQL instant query `query` now: a scalar's, or the first sample of a
    vector (aggregate it to one series for a definite answer); 0.0 when no series matched.
    Prometheus is `prometheus_url`, else the configuration's freight_prometheus_url, else the
    one `freight monitoring up` runs for the cluster."""
    from . import oncall

    return oncall.promql(query, prometheus_url, configuration)


def alert_firing(
    alertname: str,
    alertmanager_url: str = "",
    matchers: list[str] | None = None,
    silenced: bool = False,
    inhibited: bool = False,
    configuration: Configuration | None = None,
) -> int:
    """How many alerts `alertname` Alertmanager holds active whose labels match every matcher
    (like 'cluster="prod"'); silenced or inhibited ones count only when asked. Alertmanager is
    `alertmanager_url`, else freight_alertmanager_url, else `freight monitoring up`'s."""
    from . import oncall

    return oncall.alert_firing(
        alertname, alertmanager_url, matchers, silenced, inhibited, configuration
    )


def page_received(
    alertname: str,
    since: str = "",
    timeout: float = 0.0,
    receiver: str = "page",
    runbook_url: str = "",
    pager_log: str = "",
    configuration: Configuration | None = None,
) -> float:
    """Seconds from `since` to the first page for `alertname` at the pager sink (waiting up to
    `timeout` s for it), -1.0 when none came. `since`: "" the probe's start, "fault:kill_head"
    the newest such fault of the fault journal (0.0 when there is none: nothing to page for),
    or a time as `freight list` takes it. The page must carry the alert's runbook link. The
    sink's log is `pager_log`, else freight_pager_log, else `freight monitoring up --pager`'s."""
    from . import oncall

    return oncall.page_received(
        alertname, since, timeout, receiver, runbook_url, pager_log, configuration
    )


def rpc_faults_in_force(configuration: Configuration | None = None) -> int:
    """How many RPC faults (fail_rpc, delay_rpc) are in force on the head and every live node
    now: 0 once every one has expired or been cleared. A node that does not answer fails the
    probe (what it holds is unknown)."""
    from freight import actions  # the operator API's reader (the read-only token may ask)

    found, unreachable = actions.list_rpc_faults(
        all_nodes=True, address=targets.cluster(configuration)
    )
    if unreachable:
        raise RuntimeError(f"nodes {', '.join(unreachable)} did not say which RPC faults they hold")
    return len(found)


def held_by_ended_drivers(configuration: Configuration | None = None) -> int:
    """Actors still alive and workers still leased for drivers whose job is over: 0 when the
    cluster freed what each dead driver held."""
    from .gameday import processes

    return processes.held_by_ended_drivers(targets.cluster(configuration))


def nodes_gone_unnoticed(configuration: Configuration | None = None) -> int:
    """Nodes of this machine the head lists ALIVE whose agent process has ended: 0 once the
    head has declared every lost node dead."""
    from .gameday import processes

    return processes.nodes_gone_unnoticed(targets.cluster(configuration))
