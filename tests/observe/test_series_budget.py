"""The worst-case series count of each endpoint stays within the budget the catalogue states."""

from __future__ import annotations

import pytest

from freight.config import SETTINGS
from freight.observe.budget import cardinality, worst_case
from freight.observe.catalogue import OTHER, SERIES_BUDGET, Metric, Source, Type
from freight.observe.exposition import LabelFolder
from freight.observe.recorder import Recorder

TOP_N = SETTINGS["metrics_top_n"].default
FINISHED = "freight_tasks_finished_total"


@pytest.mark.parametrize("source", list(Source))
def test_worst_case_series_fit_the_stated_budget(source) -> None:
    per_metric = worst_case(source, TOP_N)
    total = sum(per_metric.values())
    top = sorted(per_metric.items(), key=lambda kv: -kv[1])[:5]
    assert total <= SERIES_BUDGET[source], f"{source.value}: {total} series worst case; {top}"


def test_a_new_unbounded_label_is_caught() -> None:
    m = Metric("freight_x_total", Type.COUNTER, "", ("path",), Source.NODE, "x")
    with pytest.raises(KeyError):
        cardinality(m, "path", Source.NODE, TOP_N)


def test_a_histogram_counts_its_buckets_inf_sum_and_count() -> None:
    per_metric = worst_case(Source.HEAD, TOP_N)
    # kind: actor | placement_group; 18 buckets + +Inf + _sum + _count
    assert per_metric["freight_head_scheduling_latency_seconds"] == 2 * 21


def test_error_types_fold_to_ten_in_processes_and_on_the_endpoint() -> None:
    rec = Recorder(top_n=50)
    for i in range(12):
        rec.inc(FINISHED, ("f", "FAILED", "application", f"E{i}"))
    kept = {labels[3] for _, labels in rec.snapshot()["c"]}
    assert len(kept - {OTHER}) == 10 and OTHER in kept
    folder = LabelFolder(50)
    snap = {"c": {(FINISHED, ("f", "FAILED", "application", f"E{i}")): 1.0 for i in range(12)}}
    folded = folder.fold({"c": snap["c"], "g": {}, "h": {}})
    assert len({labels[3] for _, labels in folded["c"]}) == 11
    assert folded["c"][(FINISHED, ("f", "FAILED", "application", OTHER))] == 2
