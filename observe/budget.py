"""The worst-case number of series an endpoint serves, from the catalogue's label cardinalities.

Each label's cardinality is what bounds it: a bounded label (function and class names, error
types, teams, owners) is folded to the top N plus ``other``; a declared enumeration has its
values; the few remaining labels are bounded by what the runtime serves (gRPC methods of the
endpoint's services, control-store operations, event kinds) or by a stated limit
(:data:`OPEN_LABEL_LIMITS`). A metric's worst case is the product of its labels' cardinalities;
a histogram series is its finite buckets plus ``+Inf``, ``_sum`` and ``_count``. The catalogue
states the budget (:data:`~freight.observe.catalogue.SERIES_BUDGET`) and a test holds it.
"""

from __future__ import annotations

import inspect

import grpc

from .catalogue import BOUNDED, Metric, Source, Type, top_n_of
from .exposition import served_by

# Labels bounded by neither an enumeration nor top-N folding, with the limit the budget assumes.
OPEN_LABEL_LIMITS = {
    # counted node resources: CPU, GPU and the operator's custom ones (bytes ones are declared)
    "resource": 16,
    "version": 1,  # one freight version per process
}

SERVICES = {Source.NODE: ("NodeAgentService",), Source.HEAD: ("HeadService", "StateService")}


def _grpc_methods(source: Source) -> int:
    from freight.protocol.generated import freight_pb2 as pb

    return sum(len(pb.DESCRIPTOR.services_by_name[s].methods) for s in SERVICES[source])


def _control_store_operations() -> int:
    from freight.head.control_store import ControlStore

    return sum(
        1
        for name, fn in vars(ControlStore).items()
        if inspect.isfunction(fn) and not name.startswith("_") and name != "close"
    )


def _event_kinds() -> int:
    from freight.head.events import KINDS

    return len(KINDS)


def cardinality(m: Metric, label: str, source: Source, top_n: int) -> int:
    """The most distinct values ``label`` of ``m`` takes on the endpoint of ``source``."""
    if label in BOUNDED:
        return top_n_of(label, top_n) + 1  # the top N and "other"
    if m.allowed(label):
        return len(m.allowed(label))
    if m.name == "freight_grpc_request_seconds":
        if label == "service":
            return 1  # the method count below is already per service
        if label == "method":
            return _grpc_methods(source)
        if label == "code":
            return len(grpc.StatusCode)
    if label == "operation":
        return _control_store_operations()
    if m.name == "freight_events_total" and label == "kind":
        return _event_kinds()
    if m.name == "freight_events_total" and label == "severity":
        from freight.head.events import SEVERITIES

        return len(SEVERITIES)
    if m.name == "freight_job_resource_seconds_total" and label == "resource":
        return 2  # only CPU and GPU are costed
    return OPEN_LABEL_LIMITS[label]


def worst_case(source: Source, top_n: int) -> dict[str, int]:
    """Per metric the endpoint of ``source`` serves, its worst-case number of series."""
    out: dict[str, int] = {}
    for m in served_by(source):
        n = 1
        for label in m.labels:
            n *= cardinality(m, label, source, top_n)
        if m.type is Type.HISTOGRAM:
            n *= len(m.buckets) + 3
        out[m.name] = n
    return out


def budget_table(top_n: int) -> str:
    """A Markdown summary of each endpoint's worst case and budget, for docs/metrics.md."""
    from .catalogue import SERIES_BUDGET

    rows = [
        f"Worst-case series per endpoint at FREIGHT_METRICS_TOP_N={top_n} (error types fold to "
        "10), and the budget the catalogue states (a test holds it):",
        "",
        "| endpoint | worst case | budget | largest metrics |",
        "|---|---|---|---|",
    ]
    for source in Source:
        per_metric = worst_case(source, top_n)
        top = sorted(per_metric.items(), key=lambda kv: -kv[1])[:3]
        largest = ", ".join(f"`{name}` {n:,}" for name, n in top)
        rows.append(
            f"| {source.value} | {sum(per_metric.values()):,} | {SERIES_BUDGET[source]:,} "
            f"| {largest} |"
        )
    return "\n".join(rows)
