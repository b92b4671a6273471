"""The catalogue of the suite: workloads, the rows each one reports, units and targets.

Plain Python only (no freight, Ray or Dask), so the driver of the suite (``compare.py``) and the
subprocess that measures one system (``suite.py``) read the same list. A workload is what one
subprocess runs; it reports one row (Ray's microbenchmark workloads) or several (the task queue
reports a rate and two memory peaks, the latency workload three percentiles).
"""

from __future__ import annotations

from dataclasses import dataclass

RATIO = "ratio"  # freight must be at least `value` times better than Ray
AT_MOST = "at most"  # freight's own figure must not exceed `value`

TASK_SYSTEMS = frozenset({"freight", "ray", "dask"})
RAY_SYSTEMS = frozenset({"freight", "ray"})


@dataclass(frozen=True)
class Target:
    """What the issue asks of freight on one row."""

    kind: str  # RATIO or AT_MOST
    value: float
    text: str


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure per system, in one unit."""

    name: str
    unit: str = "ops/s"
    lower_is_better: bool = False
    target: Target | None = None

    @property
    def label(self) -> str:
        """The row's name in the table, with its unit unless it is Ray's plain ops/s."""
        if self.lower_is_better:
            return f"{self.name} ({self.unit}, lower is better)"
        return self.name if self.unit == "ops/s" else f"{self.name} ({self.unit})"


@dataclass(frozen=True)
class Workload:
    """What one subprocess measures on one system; ``fresh`` ones get a subprocess of their own."""

    name: str
    rows: tuple[Row, ...]
    systems: frozenset[str] = RAY_SYSTEMS
    fresh: bool = False
    timeout_s: float = 0.0  # 0: the suite's --row-timeout


def ratio(x: float) -> Target:
    return Target(RATIO, x, f">= {x:g}x Ray")


def _ray_row(name: str, unit: str = "ops/s", target: Target | None = None, systems=RAY_SYSTEMS):
    return Workload(name, (Row(name, unit, target=target),), systems)


# Ray's `ray microbenchmark` rows, in its order, with the targets of DESIGN.md.
RAY_WORKLOADS = (
    _ray_row("single client get calls (Plasma Store)", target=ratio(1.5)),
    _ray_row("single client put calls (Plasma Store)", target=ratio(3)),
    _ray_row("multi client put calls (Plasma Store)"),
    _ray_row("single client put gigabytes", "GB/s", ratio(2)),
    _ray_row("single client tasks and get batch", systems=TASK_SYSTEMS),
    _ray_row("multi client put gigabytes", "GB/s"),
    _ray_row("single client get object containing 10k refs", target=ratio(1)),
    _ray_row("single client wait 1k refs", target=ratio(2)),
    _ray_row("single client tasks sync", target=ratio(5), systems=TASK_SYSTEMS),
    _ray_row("single client tasks async", target=ratio(4), systems=TASK_SYSTEMS),
    _ray_row("multi client tasks async", target=ratio(4), systems=TASK_SYSTEMS),
    _ray_row("1:1 actor calls sync", target=ratio(3)),
    _ray_row("1:1 actor calls async", target=ratio(2)),
    _ray_row("1:1 actor calls concurrent", target=ratio(2)),
    _ray_row("1:n actor calls async"),
    _ray_row("n:n actor calls async"),
    _ray_row("n:n actor calls with arg async", target=ratio(3)),
    _ray_row("1:1 async-actor calls sync"),
    _ray_row("1:1 async-actor calls async", target=ratio(3)),
    _ray_row("1:1 async-actor calls with args async"),
    _ray_row("1:n async-actor calls async"),
    _ray_row("n:n async-actor calls async"),
)

START = "start to first task result"
SHUTDOWN = "shutdown after the first result"
QUEUE = "1M-task queue from one driver"
QUEUE_RSS_AGENT = "1M-task queue peak RSS, driver+agent"
QUEUE_RSS_TREE = "1M-task queue peak RSS, whole process tree"
WAIT_10K = "10,000 tasks with wait"
ACTORS_100 = "100 concurrent actors"
LATENCY = "scheduling latency under load"

EXTRA_WORKLOADS = (
    Workload(
        START,
        (
            Row(START, "s", True, Target(AT_MOST, 1.0, "<= 1 s")),
            Row(SHUTDOWN, "s", True),
        ),
        TASK_SYSTEMS,
        fresh=True,
    ),
    Workload(WAIT_10K, (Row(WAIT_10K, "tasks/s"),), TASK_SYSTEMS),
    Workload(ACTORS_100, (Row(ACTORS_100, "actors/s"),), TASK_SYSTEMS, timeout_s=900),
    Workload(
        LATENCY,
        tuple(Row(f"{LATENCY} p{p}", "ms", True) for p in (50, 95, 99)),
        TASK_SYSTEMS,
    ),
    Workload(
        QUEUE,
        (
            Row(QUEUE, "tasks/s"),
            Row(QUEUE_RSS_AGENT, "GiB", True, Target(AT_MOST, 2.0, "< 2 GiB")),
            Row(QUEUE_RSS_TREE, "GiB", True),
        ),
        TASK_SYSTEMS,
        fresh=True,
    ),
)

WORKLOADS = RAY_WORKLOADS + EXTRA_WORKLOADS
BY_NAME = {w.name: w for w in WORKLOADS}
ROWS = tuple(row for w in WORKLOADS for row in w.rows)

# Rows whose figure depends on the number of tasks; across different sizes only rates compare.
SIZED_ROWS = frozenset({QUEUE_RSS_AGENT, QUEUE_RSS_TREE})

OVERHEAD_TARGET = 0.05  # instrumentation may cost at most 5% on every row
