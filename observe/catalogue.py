"""Every metric freight emits, declared once: name, type, unit, labels, where it comes from, help.

The exporters, the generated docs table (``docs/metrics.md``) and the checks on dashboards and
alert rules all read :data:`CATALOGUE`. Rules that hold for every entry (and a test enforces):

- names start with ``freight_``; counters end in ``_total``; a unit, when there is one, is the
  name's last word before ``_total`` (Prometheus naming: ``_seconds``, ``_bytes``);
- lifecycle figures are counters or histograms, so ``rate()`` and SLOs work; live figures are
  gauges;
- labels are bounded: function and class names are folded to the top N (``BOUNDED`` labels), and
  no label holds an id. The ``cluster`` label is added to every series by the exporter and is not
  listed here;
- a label whose values are a known set declares them (``values``): short snake_case words (or the
  upper-case state names the runtime uses), never sentences. Every combination of declared values
  is exported at 0 from the start (with each known value of a metric's one bounded label, if it
  has one), so ``rate()`` and ``increase()`` see the first event and no series vanishes at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Type(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Source(StrEnum):
    """Which endpoint serves the metric."""

    NODE = "node"  # each node agent's /metrics (its own figures and its workers' and drivers')
    HEAD = "head"  # the head's /metrics (cluster-level figures)


# Label values that can grow without bound (names chosen by users) are folded to the top N.
BOUNDED = frozenset({"name", "class_name", "error_type", "team", "owner"})
OTHER = "other"
# Bounded labels folded to fewer values than FREIGHT_METRICS_TOP_N: error types multiply the
# per-function series of freight_tasks_finished_total, and ten classes per node are plenty to
# alert on (the rest count under "other"; `freight` state commands name every one).
LABEL_TOP_N = {"error_type": 10}


def top_n_of(label: str, top_n: int) -> int:
    """How many distinct values of the bounded ``label`` keep their name, given the top N."""
    return min(top_n, LABEL_TOP_N.get(label, top_n))


LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
# SLO thresholds are settings whose value must be one of the buckets of their histogram
# (FREIGHT_SLO_SCHEDULING_LATENCY_S in LATENCY_BUCKETS, FREIGHT_SLO_CONTROL_STORE_LATENCY_S in
# FAST_BUCKETS), so `le="<threshold>"` counts the SLO exactly. The buckets are fixed rather than
# moved by the setting: every process of a cluster must agree on them (docs/decisions/0048).

# Declared label values shared with the code that records them.
TASK_FINAL_STATES = ("FINISHED", "FAILED", "CANCELLED")
TASK_LIVE_STATES = ("PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER")
ERROR_KINDS = ("none", "application", "system", "cancelled")
RETRY_ERROR_KINDS = ("application", "system")
PENDING_REASONS = ("waiting_for_args", "waiting_for_resources", "waiting_for_worker", "infeasible")
ACTOR_DEATH_CAUSES = ("killed", "worker_died", "node_died", "creation_failed", "owner_died")
OBJECT_STORE_STATES = ("being_written", "pinned_in_memory", "restored_in_memory", "spilled")
# The node resources measured in bytes; every other resource (CPU, GPU, custom) is a count.
BYTE_RESOURCES = ("memory", "object_store_memory")
# Why a worker exited without being asked to: the signals and exit codes met in practice, in
# lower case; any other signal or code counts as "other" (its WORKER_CRASHED event names it).
WORKER_CRASH_SIGNALS = (
    "sigkill",
    "sigsegv",
    "sigabrt",
    "sigbus",
    "sigill",
    "sigfpe",
    "sigterm",
    "sigint",
    "sighup",
)
WORKER_CRASH_CAUSES = (*WORKER_CRASH_SIGNALS, "exit_code_0", "exit_code_1", OTHER)
TELEMETRY_KINDS = ("task_events", "spans", "task_records", "events", "label_values")
# The gRPC status codes other than OK, in lower case, and the head's own verdicts.
HEALTH_CHECK_REASONS = (
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
    "wrong_node",
    "wrong_incarnation",
    "error",
)


@dataclass(frozen=True)
class Metric:
    name: str
    type: Type
    unit: str  # "seconds", "bytes", "" (a count), "currency"
    labels: tuple[str, ...]
    source: Source
    help: str
    buckets: tuple[float, ...] = ()
    # Allowed values of the labels whose values are a known set: ((label, (value, ...)), ...).
    values: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def allowed(self, label: str) -> tuple[str, ...]:
        """The declared values of ``label``; () when the label is not an enumeration."""
        return dict(self.values).get(label, ())

    def zero_filled(self) -> bool:
        """True if every combination of this metric's labels is exported from the start: all
        its labels are declared enumerations, except at most one bounded label (whose values
        are those the endpoint has seen); histograms only without a bounded label."""
        open_labels = [x for x in self.labels if not self.allowed(x)]
        if not self.labels or not self.values:
            return False
        if not open_labels:
            return True
        return (
            self.type is not Type.HISTOGRAM and len(open_labels) == 1 and open_labels[0] in BOUNDED
        )


C, G, H = Type.COUNTER, Type.GAUGE, Type.HISTOGRAM
NODE, HEAD = Source.NODE, Source.HEAD

CATALOGUE: tuple[Metric, ...] = (
    # -- tasks (recorded by each task's owner and by the worker that runs it) ------------------
    Metric(
        "freight_tasks_submitted_total",
        C,
        "",
        ("name",),
        NODE,
        "Tasks and actor calls submitted, by function or Class.method name.",
    ),
    Metric(
        "freight_tasks_started_total",
        C,
        "",
        ("name",),
        NODE,
        "Task attempts that began to run on a worker.",
    ),
    Metric(
        "freight_tasks_finished_total",
        C,
        "",
        ("name", "state", "error_kind", "error_type"),
        NODE,
        "Tasks that reached a final state. state: FINISHED | FAILED | CANCELLED; error_kind: "
        "none | application (the user's code raised) | system (worker or node died, actor dead, "
        "out of memory) | cancelled; error_type: the exception's class name.",
        values=(("state", TASK_FINAL_STATES), ("error_kind", ERROR_KINDS)),
    ),
    Metric(
        "freight_task_retries_total",
        C,
        "",
        ("name", "error_kind"),
        NODE,
        "Task attempts that failed and were retried.",
        values=(("error_kind", RETRY_ERROR_KINDS),),
    ),
    Metric(
        "freight_object_reconstructions_total",
        C,
        "",
        ("outcome",),
        NODE,
        "Objects lost with their node that their owner set out to rebuild by running the task "
        "that made them again. outcome: started | failed (no lineage, lineage evicted, or the "
        "task's max_retries used up).",
        values=(("outcome", ("started", "failed")),),
    ),
    Metric(
        "freight_task_scheduling_latency_seconds",
        H,
        "seconds",
        ("name",),
        NODE,
        "Time from submission to the start of the attempt that ran (waiting for arguments, "
        "resources and a worker). The buckets include the SLO threshold "
        "FREIGHT_SLO_SCHEDULING_LATENCY_S (0.2 s by default).",
        LATENCY_BUCKETS,
    ),
    Metric(
        "freight_task_execution_latency_seconds",
        H,
        "seconds",
        ("name",),
        NODE,
        "Time the task's code ran on its worker (argument fetch and result store included).",
        LATENCY_BUCKETS,
    ),
    Metric(
        "freight_tasks",
        G,
        "",
        ("state",),
        NODE,
        "Tasks that owners on this node hold right now, by state (PENDING_ARGS_AVAIL, "
        "PENDING_NODE_ASSIGNMENT, SUBMITTED_TO_WORKER).",
        values=(("state", TASK_LIVE_STATES),),
    ),
    Metric(
        "freight_queue_depth",
        G,
        "",
        ("reason",),
        NODE,
        "Tasks that owners on this node hold waiting, by pending reason: waiting_for_args, "
        "waiting_for_resources, waiting_for_worker (to start), infeasible (no node can ever "
        "run it). Every reason is present, at 0 when none waits.",
        values=(("reason", PENDING_REASONS),),
    ),
    # -- objects -----------------------------------------------------------------------------
    Metric(
        "freight_object_store_bytes",
        G,
        "bytes",
        ("state",),
        NODE,
        "Bytes in the node's object store by state; the states partition the bytes (each "
        "object is in exactly one), so sum() over state is the whole store: being_written "
        "(reserved by a write in progress), pinned_in_memory (sealed primary copies in shared "
        "memory, held for a live owner), restored_in_memory (in shared memory again after a "
        "restore, its spill file kept), spilled (on disk only).",
        values=(("state", OBJECT_STORE_STATES),),
    ),
    Metric(
        "freight_object_store_objects",
        G,
        "",
        ("state",),
        NODE,
        "Objects in the node's object store, by the same states as freight_object_store_bytes "
        "(they partition the objects).",
        values=(("state", OBJECT_STORE_STATES),),
    ),
    Metric(
        "freight_object_store_in_memory_bytes",
        G,
        "bytes",
        (),
        NODE,
        "Bytes of the node's object store in shared memory: every state of "
        "freight_object_store_bytes but spilled. Compare with "
        "freight_object_store_capacity_bytes.",
    ),
    Metric(
        "freight_object_store_in_memory_objects",
        G,
        "",
        (),
        NODE,
        "Objects of the node's object store in shared memory (every state but spilled).",
    ),
    Metric(
        "freight_object_store_capacity_bytes",
        G,
        "bytes",
        (),
        NODE,
        "Capacity of the node's shared-memory object store.",
    ),
    Metric(
        "freight_objects_created_total",
        C,
        "",
        ("where",),
        NODE,
        "Objects created by put and task returns, by where they live: inline (in the owner) "
        "or shared_memory.",
        values=(("where", ("inline", "shared_memory")),),
    ),
    Metric(
        "freight_object_spilled_total",
        C,
        "",
        (),
        NODE,
        "Objects taken out of the node's shared memory to its spill folder on disk (an object "
        "spilled again after a restore counts again; its file is kept, so it is not rewritten).",
    ),
    Metric(
        "freight_object_spilled_bytes_total",
        C,
        "bytes",
        (),
        NODE,
        "Bytes of the objects counted by freight_object_spilled_total.",
    ),
    Metric(
        "freight_object_restored_total",
        C,
        "",
        (),
        NODE,
        "Spilled objects copied back into the node's shared memory because a reader asked for "
        "them (concurrent readers of one object make one restore).",
    ),
    Metric(
        "freight_object_restored_bytes_total",
        C,
        "bytes",
        (),
        NODE,
        "Bytes of the objects counted by freight_object_restored_total.",
    ),
    Metric(
        "freight_object_transfer_bytes_total",
        C,
        "bytes",
        ("direction",),
        NODE,
        "Object bytes copied between nodes' stores, direction: in (pulled here) | out (served "
        "to another node).",
        values=(("direction", ("in", "out")),),
    ),
    Metric(
        "freight_object_transfers_total",
        C,
        "",
        ("direction",),
        NODE,
        "Whole objects copied between nodes' stores, direction: in | out.",
        values=(("direction", ("in", "out")),),
    ),
    # -- workers, nodes, drivers -------------------------------------------------------------
    Metric(
        "freight_workers",
        G,
        "",
        ("state",),
        NODE,
        "Worker processes of the node by state (STARTING, IDLE, LEASED, ACTOR, BLOCKED).",
        values=(("state", ("STARTING", "IDLE", "LEASED", "ACTOR", "BLOCKED")),),
    ),
    Metric(
        "freight_workers_starting_max",
        G,
        "",
        (),
        NODE,
        "The most worker processes the node agent has had starting at once since it started; "
        "FREIGHT_MAXIMUM_STARTUP_CONCURRENCY bounds it.",
    ),
    Metric(
        "freight_worker_starts_total",
        C,
        "",
        (),
        NODE,
        "Worker processes the node agent started.",
    ),
    Metric(
        "freight_worker_crashes_total",
        C,
        "",
        ("cause",),
        NODE,
        "Worker processes that exited without being asked to, by cause: the signal that "
        "killed it (sigkill: a kill -9 or the kernel's OOM killer; sigsegv, sigabrt, sigbus, "
        "sigill, sigfpe: a crash in native code; sigterm, sigint, sighup: stopped by something "
        "other than freight), exit_code_0 or exit_code_1 (it exited by itself), or other (any "
        "other signal or exit code; the WORKER_CRASHED event names it).",
        values=(("cause", WORKER_CRASH_CAUSES),),
    ),
    Metric(
        "freight_worker_restarts_total",
        C,
        "",
        (),
        NODE,
        "Worker processes started to replace one that crashed.",
    ),
    Metric(
        "freight_memory_monitor_kills_total",
        C,
        "",
        ("kind",),
        NODE,
        "Workers the node agent's memory monitor killed because the node's memory use was "
        "above FREIGHT_MEMORY_USAGE_THRESHOLD, by what the worker ran (kind: task | actor). "
        "These are not counted as crashes.",
        values=(("kind", ("task", "actor")),),
    ),
    Metric(
        "freight_placement_groups_created_total",
        C,
        "",
        (),
        HEAD,
        "Placement groups whose bundles were all reserved.",
    ),
    Metric(
        "freight_placement_groups_removed_total",
        C,
        "",
        (),
        HEAD,
        "Placement groups removed (by remove_placement_group or with their job).",
    ),
    Metric(
        "freight_lease_spillbacks_total",
        C,
        "",
        (),
        NODE,
        "Lease requests the node agent sent on to another node (no room here, a scheduling "
        "strategy, or a request only another node can run).",
    ),
    Metric(
        "freight_driver_disconnects_total",
        C,
        "",
        ("clean",),
        NODE,
        "Drivers whose connection to the node agent closed; clean=false when the driver did "
        "not shut down (crashed or was killed).",
        values=(("clean", ("true", "false")),),
    ),
    Metric(
        "freight_resources_capacity",
        G,
        "",
        ("resource",),
        NODE,
        "The node's total amount of each counted resource: CPU, GPU and the custom ones. The "
        "resources measured in bytes are in freight_resources_capacity_bytes.",
    ),
    Metric(
        "freight_resources_available",
        G,
        "",
        ("resource",),
        NODE,
        "The node's unclaimed amount of each counted resource (CPU, GPU, custom).",
    ),
    Metric(
        "freight_resources_capacity_bytes",
        G,
        "bytes",
        ("resource",),
        NODE,
        "The node's total of each resource measured in bytes: memory (the logical memory "
        "resource tasks ask for) and object_store_memory (the shared-memory store's capacity).",
        values=(("resource", BYTE_RESOURCES),),
    ),
    Metric(
        "freight_resources_available_bytes",
        G,
        "bytes",
        ("resource",),
        NODE,
        "The node's unclaimed bytes of memory and object_store_memory.",
        values=(("resource", BYTE_RESOURCES),),
    ),
    Metric(
        "freight_gc_pause_seconds",
        H,
        "seconds",
        ("generation",),
        NODE,
        "Python garbage-collector pauses in workers and drivers (gc.callbacks).",
        FAST_BUCKETS,
        values=(("generation", ("0", "1", "2")),),
    ),
    Metric(
        "freight_auth_refused_total",
        C,
        "",
        ("plane",),
        NODE,
        "Connections refused for a wrong or missing token or a malformed greeting "
        "(plane: data | grpc).",
        values=(("plane", ("data", "grpc")),),
    ),
    Metric(
        "freight_protocol_errors_total",
        C,
        "",
        (),
        NODE,
        "Authenticated data-plane connections the node agent closed after a malformed, "
        "truncated or oversized frame or an invalid message (refused greetings count in "
        "freight_auth_refused_total).",
    ),
    Metric(
        "freight_node_agent_restarts_total",
        C,
        "",
        (),
        HEAD,
        "Node agents that registered again under a node id the head already knew.",
    ),
    Metric(
        "freight_nodes",
        G,
        "",
        ("state",),
        HEAD,
        "Nodes in the cluster by state (ALIVE, DRAINING: alive, taking no new work after "
        "`freight drain`, DEAD).",
        values=(("state", ("ALIVE", "DRAINING", "DEAD")),),
    ),
    Metric(
        "freight_node_heartbeat_lag_seconds",
        H,
        "seconds",
        (),
        HEAD,
        "Time between consecutive heartbeats of a node as the head receives them (the agents "
        "send one per second, so this is about 1 s when all is well). For lateness, alert on "
        "freight_node_heartbeat_overdue_max_seconds (head) or "
        "freight_node_heartbeat_overdue_seconds (each node).",
        (0.5, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
    ),
    Metric(
        "freight_node_heartbeat_age_max_seconds",
        G,
        "seconds",
        (),
        HEAD,
        "Age of the oldest last heartbeat among live nodes.",
    ),
    Metric(
        "freight_node_heartbeat_overdue_max_seconds",
        G,
        "seconds",
        (),
        HEAD,
        "How late the most overdue live node's heartbeat is: the age of its last heartbeat "
        "beyond the agents' 1 s interval (0 while every node is on time). Each node's own "
        "figure is freight_node_heartbeat_overdue_seconds on its endpoint.",
    ),
    Metric(
        "freight_node_heartbeat_overdue_seconds",
        G,
        "seconds",
        (),
        NODE,
        "How late this node agent's heartbeats are: the time since the head last accepted one, "
        "beyond the 1 s interval (0 while on time). One series per node through the scrape "
        "target's node_id label; no id label.",
    ),
    Metric(
        "freight_node_health_check_failures_total",
        C,
        "",
        ("reason",),
        HEAD,
        "Health checks (CheckHealth calls from the head to a node agent) that failed. reason: "
        "the gRPC status in lower case (deadline_exceeded, unavailable, ...), wrong_node (a "
        "different agent answered at the node's address), wrong_incarnation (an older or newer "
        "agent of the node answered) or error. The head's log names the node of each failure.",
        values=(("reason", HEALTH_CHECK_REASONS),),
    ),
    # -- actors ------------------------------------------------------------------------------
    Metric(
        "freight_actors",
        G,
        "",
        ("state",),
        HEAD,
        "Actors by state (PENDING_CREATION, ALIVE, RESTARTING, DEAD).",
        values=(("state", ("PENDING_CREATION", "ALIVE", "RESTARTING", "DEAD")),),
    ),
    Metric(
        "freight_actors_created_total",
        C,
        "",
        ("class_name",),
        HEAD,
        "Actor creations requested.",
    ),
    Metric(
        "freight_actor_restarts_total",
        C,
        "",
        ("class_name",),
        HEAD,
        "Actors restarted after their worker or node died.",
    ),
    Metric(
        "freight_actor_checkpoints_total",
        C,
        "",
        (),
        NODE,
        "Actor checkpoints saved (actors that define __freight_checkpoint__).",
    ),
    Metric(
        "freight_actor_checkpoint_bytes_total",
        C,
        "bytes",
        (),
        NODE,
        "Bytes of actor checkpoints saved.",
    ),
    Metric(
        "freight_actor_checkpoint_failures_total",
        C,
        "",
        (),
        NODE,
        "Actor checkpoints that could not be saved (__freight_checkpoint__ raised, or the "
        "disk refused); the next call tries again.",
    ),
    Metric(
        "freight_actor_checkpoint_restores_total",
        C,
        "",
        (),
        NODE,
        "Restarted actors given their last checkpoint.",
    ),
    Metric(
        "freight_actor_deaths_total",
        C,
        "",
        ("class_name", "cause"),
        HEAD,
        "Actors that died, by cause: killed, worker_died, node_died, creation_failed, owner_died.",
        values=(("cause", ACTOR_DEATH_CAUSES),),
    ),
    # -- head --------------------------------------------------------------------------------
    Metric(
        "freight_head_scheduling_latency_seconds",
        H,
        "seconds",
        ("kind",),
        HEAD,
        "Time the head takes to place an actor and start it (kind: actor), or to reserve "
        "every bundle of a placement group (kind: placement_group). The buckets include "
        "FREIGHT_SLO_SCHEDULING_LATENCY_S.",
        LATENCY_BUCKETS,
        values=(("kind", ("actor", "placement_group")),),
    ),
    Metric(
        "freight_control_store_operation_seconds",
        H,
        "seconds",
        ("operation",),
        HEAD,
        "Latency of control-store operations (SQLite WAL), by operation. The buckets include "
        "FREIGHT_SLO_CONTROL_STORE_LATENCY_S (0.1 s by default).",
        FAST_BUCKETS,
    ),
    Metric(
        "freight_grpc_request_seconds",
        H,
        "seconds",
        ("service", "method", "code"),
        NODE,
        "Latency of gRPC requests served by the head and the node agents, by method and "
        "status code. The head's own appear on the head's endpoint.",
        LATENCY_BUCKETS,
    ),
    Metric(
        "freight_event_loop_lag_seconds",
        H,
        "seconds",
        ("component",),
        NODE,
        "How late the asyncio loop of the head or a node agent ran a timer it set "
        "(component: head | agent).",
        FAST_BUCKETS,
        values=(("component", ("head", "agent")),),
    ),
    Metric(
        "freight_jobs",
        G,
        "",
        ("state",),
        HEAD,
        "Jobs by state (RUNNING, FINISHED, FAILED).",
        values=(("state", ("RUNNING", "FINISHED", "FAILED")),),
    ),
    Metric(
        "freight_job_resource_seconds_total",
        C,
        "",
        ("resource", "team", "owner"),
        NODE,
        "Resource-seconds used by jobs' tasks and actors (amount held times time held), by "
        "the job's team and owner labels.",
    ),
    Metric(
        "freight_job_cost_total",
        C,
        "currency",
        ("team", "owner"),
        NODE,
        "Cost of jobs' resource use at FREIGHT_PRICE_CPU_HOUR and FREIGHT_PRICE_GPU_HOUR, in "
        "the currency FREIGHT_PRICE_CURRENCY names (USD by default; each endpoint's help text "
        "states it).",
    ),
    Metric(
        "freight_events_total",
        C,
        "",
        ("severity", "kind"),
        HEAD,
        "Cluster events recorded (node joined/dead, worker crashed, actor restarted, ...).",
    ),
    Metric(
        "freight_autoscaler_scale_events_total",
        C,
        "",
        ("direction",),
        HEAD,
        "Nodes the autoscaler added (direction: up) or removed (down).",
        values=(("direction", ("up", "down")),),
    ),
    Metric(
        "freight_telemetry_dropped_total",
        C,
        "",
        ("kind",),
        NODE,
        "Telemetry records dropped rather than allowed to block or grow without bound (kind: "
        "task_events, spans, task_records, events, label_values). Also on the head's endpoint.",
        values=(("kind", TELEMETRY_KINDS),),
    ),
    Metric(
        "freight_build_info",
        G,
        "",
        ("version",),
        NODE,
        "Always 1; the freight version. Also on the head's endpoint.",
    ),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in CATALOGUE}

# The most series one endpoint may serve at the default FREIGHT_METRICS_TOP_N (50), worst case:
# every bounded label at its top N plus "other", every enumeration complete, histograms at
# their buckets plus +Inf, _sum and _count (freight.observe.budget computes it; a test holds
# it). Today the node's worst case is 23,487 (freight_tasks_finished_total 6,732, gRPC latency
# 6,426 with every agent method, the RPC fault calls included, job resource-seconds 5,202, job
# cost 2,601, task latencies 1,071 each); the head's 14,407 (gRPC latency 13,566: every method
# of its services, Watch, the actions and the RPC fault calls included; each new method adds
# 238 at the head, 357 at a node). A toy load serves a few hundred (docs/metrics.md).
SERIES_BUDGET = {Source.NODE: 24_000, Source.HEAD: 15_000}


def metric(name: str) -> Metric:
    """The catalogue entry for ``name``; KeyError names the missing metric."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not in the metrics catalogue (freight.observe.catalogue)")


def metrics_table() -> str:
    """A Markdown table of the catalogue, for docs/metrics.md."""
    rows = [
        "| metric | type | unit | labels | served by | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for m in CATALOGUE:
        labels = ", ".join(f"`{x}`" for x in ("cluster", *m.labels))
        rows.append(
            f"| `{m.name}` | {m.type.value} | {m.unit or '—'} | {labels} | {m.source.value} "
            f"| {m.help} |"
        )
    return "\n".join(rows)
