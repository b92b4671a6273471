"""A process's recorder: counters, gauges, per-bucket histograms and top-N label folding."""

from __future__ import annotations

import threading

import pytest

from freight.observe.catalogue import OTHER, metric
from freight.observe.recorder import Recorder, check_snapshot

SUBMITTED = "freight_tasks_submitted_total"
EXEC = "freight_task_execution_latency_seconds"


def test_counters_add_up_per_label_set() -> None:
    r = Recorder()
    for _ in range(3):
        r.inc(SUBMITTED, ("f",))
    r.inc(SUBMITTED, ("g",), 2.5)
    c = r.snapshot()["c"]
    assert c[(SUBMITTED, ("f",))] == 3
    assert c[(SUBMITTED, ("g",))] == 2.5


def test_names_beyond_top_n_fold_into_other_and_stay_folded() -> None:
    r = Recorder(top_n=2)
    for name in ("a", "b", "c", "d", "a", "c"):
        r.inc(SUBMITTED, (name,))
    c = r.snapshot()["c"]
    assert c == {(SUBMITTED, ("a",)): 2, (SUBMITTED, ("b",)): 1, (SUBMITTED, (OTHER,)): 3}
    # The choice is sticky and shared by every metric with the same label.
    r.observe(EXEC, ("c",), 0.1)
    r.observe(EXEC, ("b",), 0.1)
    assert set(r.snapshot()["h"]) == {(EXEC, (OTHER,)), (EXEC, ("b",))}


def test_unbounded_labels_are_not_folded() -> None:
    r = Recorder(top_n=1)
    r.set("freight_tasks", ("PENDING_ARGS_AVAIL",), 1)
    r.set("freight_tasks", ("SUBMITTED_TO_WORKER",), 2)
    assert len(r.snapshot()["g"]) == 2


def test_histogram_counts_per_bucket_with_inf_and_sum() -> None:
    r = Recorder()
    buckets = metric(EXEC).buckets
    r.observe(EXEC, ("f",), buckets[0])  # a value on a bound belongs to that bucket
    r.observe(EXEC, ("f",), buckets[0] * 1.5)
    r.observe(EXEC, ("f",), buckets[-1] * 10)  # beyond the last bound: +Inf
    h = r.snapshot()["h"][(EXEC, ("f",))]
    assert len(h) == len(buckets) + 2
    assert h[0] == 1 and h[1] == 1
    assert h[len(buckets)] == 1
    assert sum(h[:-1]) == 3
    assert h[-1] == pytest.approx(buckets[0] * 2.5 + buckets[-1] * 10)


def test_gauges_set_and_clear() -> None:
    r = Recorder()
    r.set("freight_queue_depth", ("waiting for a worker",), 4)
    r.set("freight_queue_depth", ("waiting for resources",), 1)
    r.clear_gauge("freight_queue_depth")
    r.set("freight_queue_depth", ("waiting for resources",), 2)
    assert r.snapshot()["g"] == {("freight_queue_depth", ("waiting for resources",)): 2}


def test_snapshot_is_a_copy() -> None:
    r = Recorder()
    r.observe(EXEC, ("f",), 0.01)
    snap = r.snapshot()
    r.observe(EXEC, ("f",), 0.01)
    r.inc(SUBMITTED, ("f",))
    assert sum(snap["h"][(EXEC, ("f",))][:-1]) == 1
    assert snap["c"] == {}


def test_a_disabled_recorder_records_nothing() -> None:
    r = Recorder()
    r.enabled = False
    r.inc(SUBMITTED, ("f",))
    r.observe(EXEC, ("f",), 1.0)
    r.set("freight_tasks", ("PENDING_ARGS_AVAIL",), 1)
    assert r.snapshot() == {"c": {}, "g": {}, "h": {}}


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"c": {}, "g": {}},
        {"c": [], "g": {}, "h": {}},
        {"c": {("freight_nope_total", ()): 1}, "g": {}, "h": {}},
        {"c": {(SUBMITTED, ()): 1}, "g": {}, "h": {}},  # wrong number of labels
        {"c": {(SUBMITTED, (1,)): 1}, "g": {}, "h": {}},  # a label value that is not a str
        {"c": {(SUBMITTED, ("f",)): "1"}, "g": {}, "h": {}},
        {"c": {(SUBMITTED, ("f",)): True}, "g": {}, "h": {}},
        {"c": {}, "g": {(SUBMITTED, ("f",)): 1}, "h": {}},  # a counter sent as a gauge
        {"c": {}, "g": {}, "h": {(EXEC, ("f",)): [1, 2]}},  # wrong bucket count
    ],
)
def test_malformed_snapshots_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        check_snapshot(bad)


def test_a_real_snapshot_passes_the_check() -> None:
    r = Recorder()
    r.inc(SUBMITTED, ("f",))
    r.observe(EXEC, ("f",), 0.2)
    r.set("freight_tasks", ("PENDING_ARGS_AVAIL",), 1)
    snap = r.snapshot()
    assert check_snapshot(snap) is snap


def test_hot_path_counter_adds_to_the_snapshot_and_survives_reset() -> None:
    rec = Recorder(top_n=10)
    added = rec.counter("freight_objects_created_total", ("inline",))
    again = rec.counter("freight_objects_created_total", ("inline",))  # the same series
    for _ in range(5):
        added()
    again()
    rec.inc("freight_objects_created_total", ("inline",), 2)
    key = ("freight_objects_created_total", ("inline",))
    assert rec.snapshot()["c"][key] == 8
    assert rec.snapshot()["c"][key] == 8  # reading does not count
    rec.reset()
    assert key not in rec.snapshot()["c"]
    added()
    assert rec.snapshot()["c"][key] == 1


def test_hot_path_counters_lose_nothing_across_threads() -> None:
    rec = Recorder(top_n=10)
    added = rec.counter("freight_tasks_started_total", ("f",))

    def count() -> None:
        for _ in range(20_000):
            added()

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rec.snapshot()["c"][("freight_tasks_started_total", ("f",))] == 80_000
