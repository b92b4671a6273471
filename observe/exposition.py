"""Turn a metrics snapshot into Prometheus metric families, at scrape time.

The head and every node agent serve ``/metrics`` through :class:`FiguresCollector`, a
prometheus_client custom collector: nothing is updated on the hot path, the collector reads one
snapshot (:mod:`freight.observe.recorder` shape, already summed over the node's processes by
:class:`~freight.observe.aggregate.NodeFigures`) when Prometheus asks, and renders it with the
catalogue's help, type and unit. On the way it

- adds the ``cluster`` label to every series;
- folds bounded labels (function and class names, error types, teams, owners) to the first N
  distinct values per label seen by this endpoint (sticky, so counters stay monotonic); the rest
  become ``other`` and the distinct values folded are counted in
  ``freight_telemetry_dropped_total{kind="label_values"}``;
- turns per-bucket histogram counts into cumulative ``_bucket`` series plus ``_sum``/``_count``;
- emits every catalogue metric of its :class:`~freight.observe.catalogue.Source` even before it
  has a series: label-less counters and gauges as 0, label-less histograms empty, labelled
  families with HELP and TYPE only, so every metric is present on its endpoint from the start;
- emits every combination of a metric's declared label values that has no series yet at 0
  (:meth:`~freight.observe.catalogue.Metric.zero_filled`; a bounded label among them takes each
  value this endpoint has seen for it), so counters exist before their first event and gauges
  do not vanish at 0.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .catalogue import BOUNDED, BY_NAME, CATALOGUE, OTHER, Metric, Source, Type, top_n_of
from .recorder import Snapshot

if TYPE_CHECKING:
    # prometheus_client is loaded at the first scrape: a process that is never scraped (a short
    # program's private cluster) does not pay for it at start-up.
    from prometheus_client.metrics_core import Metric as Family

CLUSTER_LABEL = "cluster"
DROPPED = "freight_telemetry_dropped_total"

# Node-sourced metrics the head serves too (its own figures of the same kind).
ALSO_ON_HEAD = frozenset(
    {
        "freight_telemetry_dropped_total",
        "freight_build_info",
        "freight_grpc_request_seconds",
        "freight_event_loop_lag_seconds",
    }
)

# Remembering every folded value would itself be unbounded: past this many per label the count
# of folded values stops growing (it is then a lower bound).
MAX_REMEMBERED_FOLDS = 10_000


def served_by(source: Source) -> list[Metric]:
    """The catalogue metrics the endpoint of ``source`` serves, in catalogue order."""
    if source is Source.NODE:
        return [m for m in CATALOGUE if m.source is Source.NODE]
    return [m for m in CATALOGUE if m.source is Source.HEAD or m.name in ALSO_ON_HEAD]


class LabelFolder:
    """Sticky top-N folding of bounded label values across one endpoint's scrapes."""

    def __init__(self, top_n: int) -> None:
        if top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {top_n}")
        self.top_n = top_n
        self.kept: dict[str, set[str]] = {}
        self.folded: dict[str, set[str]] = {}
        self._positions = {
            m.name: tuple((i, label) for i, label in enumerate(m.labels) if label in BOUNDED)
            for m in CATALOGUE
        }

    def fold_value(self, label: str, value: str) -> str:
        if value == OTHER:  # already folded upstream: must not take a slot of its own
            return OTHER
        kept = self.kept.setdefault(label, set())
        if value in kept:
            return value
        if len(kept) < top_n_of(label, self.top_n):
            kept.add(value)
            return value
        folded = self.folded.setdefault(label, set())
        if len(folded) < MAX_REMEMBERED_FOLDS:
            folded.add(value)
        return OTHER

    def folded_values(self) -> int:
        """Distinct label values this endpoint has folded into ``other`` so far."""
        return sum(len(v) for v in self.folded.values())

    def fold(self, snap: Snapshot) -> Snapshot:
        """A copy of ``snap`` with bounded labels folded; series that meet are summed."""
        out: Snapshot = {"c": {}, "g": {}, "h": {}}
        for part in ("c", "g", "h"):
            target = out[part]
            for (name, labels), value in snap.get(part, {}).items():
                positions = self._positions.get(name, ())
                if positions:
                    folded = list(labels)
                    for i, label in positions:
                        folded[i] = self.fold_value(label, labels[i])
                    labels = tuple(folded)
                key = (name, labels)
                cur = target.get(key)
                if cur is None:
                    target[key] = list(value) if part == "h" else value
                elif part == "h":
                    for i, v in enumerate(value):
                        cur[i] += v
                else:
                    target[key] = cur + value
        return out


def _family(m: Metric, notes: dict[str, str] | None = None) -> Any:
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    labels = [CLUSTER_LABEL, *m.labels]
    text = m.help + (f" {notes[m.name]}" if notes and m.name in notes else "")
    # OpenMetrics requires the unit to end the name; a unit the name does not carry (a currency)
    # is documented in the catalogue and left out here rather than renaming the metric.
    base = m.name.removesuffix("_total") if m.type is Type.COUNTER else m.name
    unit = m.unit if m.unit and base.endswith("_" + m.unit) else ""
    if m.type is Type.COUNTER:
        return CounterMetricFamily(m.name, text, labels=labels, unit=unit)
    if m.type is Type.GAUGE:
        return GaugeMetricFamily(m.name, text, labels=labels, unit=unit)
    return HistogramMetricFamily(m.name, text, labels=labels, unit=unit)


def _add_histogram(family: Any, m: Metric, labels: list[str], counts: list[float]) -> None:
    from prometheus_client.utils import floatToGoString

    cumulative = 0.0
    buckets: list[tuple[str, float]] = []
    for le, n in zip(m.buckets, counts, strict=False):
        cumulative += n
        buckets.append((floatToGoString(le), cumulative))
    cumulative += counts[len(m.buckets)]
    buckets.append(("+Inf", cumulative))
    family.add_metric(labels, buckets, counts[-1])


def _seen_bounded(snap: Snapshot) -> dict[str, set[str]]:
    """Values of each bounded label among the series of ``snap`` (after folding)."""
    seen: dict[str, set[str]] = {}
    for part in ("c", "g", "h"):
        for name, labels in snap.get(part, {}):
            m = BY_NAME.get(name)
            if m is None:
                continue
            for label, value in zip(m.labels, labels, strict=False):
                if label in BOUNDED:
                    seen.setdefault(label, set()).add(value)
    return seen


def zero_series(m: Metric, seen: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Every label combination of ``m`` exported from the start (empty unless zero-filled)."""
    if not m.zero_filled():
        return []
    axes = [m.allowed(x) or tuple(sorted(seen.get(x, ()))) for x in m.labels]
    return list(itertools.product(*axes))


def to_families(
    snap: Snapshot, metrics: Iterable[Metric], cluster: str, notes: dict[str, str] | None = None
) -> list[Family]:
    """Render ``snap`` as metric families: ``metrics`` always, plus any other it holds.
    ``notes`` adds a sentence to the help text of the metrics it names (a configured value)."""
    by_name: dict[str, list[tuple[str, tuple[str, ...], Any]]] = {}
    for part in ("c", "g", "h"):
        for (name, labels), value in snap.get(part, {}).items():
            by_name.setdefault(name, []).append((part, labels, value))
    wanted = list(metrics)
    names = {m.name for m in wanted}
    wanted += [BY_NAME[n] for n in by_name if n not in names and n in BY_NAME]
    seen = _seen_bounded(snap)
    families: list[Family] = []
    for m in wanted:
        family = _family(m, notes)
        series = by_name.get(m.name, [])
        present = {labels for _, labels, _ in series}
        zero: Any = [0.0] * (len(m.buckets) + 2) if m.type is Type.HISTOGRAM else 0.0
        series = series + [
            ("", labels, zero) for labels in zero_series(m, seen) if labels not in present
        ]
        for _part, labels, value in sorted(series, key=lambda s: s[1]):
            values = [cluster, *labels]
            if m.type is Type.HISTOGRAM:
                _add_histogram(family, m, values, value)
            else:
                family.add_metric(values, float(value))
        if not series and not m.labels:
            if m.type is Type.HISTOGRAM:
                _add_histogram(family, m, [cluster], [0.0] * (len(m.buckets) + 2))
            else:
                family.add_metric([cluster], 0.0)
        families.append(family)
    return families


class FiguresCollector:
    """A prometheus_client collector serving one endpoint's figures from a snapshot reader.

    It has ``collect`` (and no ``describe``), which is all a ``CollectorRegistry`` asks of one.

    ``read`` returns the endpoint's current snapshot (it is called from the HTTP server's
    thread, so it must itself hand the work to whoever owns the state); ``cluster`` returns the
    cluster name for the ``cluster`` label.
    """

    def __init__(
        self,
        source: Source,
        read: Callable[[], Snapshot],
        cluster: Callable[[], str],
        top_n: int = 50,
        notes: dict[str, str] | None = None,
    ) -> None:
        self.source = source
        self.metrics = served_by(source)
        self.read = read
        self.cluster = cluster
        self.folder = LabelFolder(top_n)
        self.notes = notes or {}
        self._lock = threading.Lock()  # scrapes may run concurrently (one thread per request)

    def collect(self) -> Iterator[Family]:
        snap = self.read()
        with self._lock:
            folded = self.folder.fold(snap)
            key = (DROPPED, ("label_values",))
            folded["c"][key] = folded["c"].get(key, 0.0) + self.folder.folded_values()
        yield from to_families(folded, self.metrics, self.cluster(), self.notes)
