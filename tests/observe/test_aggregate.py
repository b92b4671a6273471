"""A node's figures: latest snapshot per live reporter, retired totals of reporters that left."""

from __future__ import annotations

import pytest

from freight.observe.aggregate import NodeFigures
from freight.observe.recorder import Recorder

SUBMITTED = "freight_tasks_submitted_total"
EXEC = "freight_task_execution_latency_seconds"
TASKS = "freight_tasks"


def _report(n: int, pending: int) -> tuple[dict, dict]:
    r = Recorder()
    r.inc(SUBMITTED, ("f",), n)
    r.observe(EXEC, ("f",), 0.01)
    r.set(TASKS, ("PENDING_ARGS_AVAIL",), pending)
    return r.snapshot(), {("job1", "CPU"): float(n)}


def test_a_newer_report_replaces_the_older_one() -> None:
    nf = NodeFigures()
    nf.update("w1", *_report(3, 1))
    nf.update("w1", *_report(5, 2))  # cumulative: 5 in all, not 8
    snap, usage = nf.totals()
    assert snap["c"][(SUBMITTED, ("f",))] == 5
    assert snap["g"][(TASKS, ("PENDING_ARGS_AVAIL",))] == 2
    assert usage == {("job1", "CPU"): 5.0}


def test_reporters_are_summed() -> None:
    nf = NodeFigures()
    nf.update("w1", *_report(3, 1))
    nf.update("w2", *_report(4, 1))
    snap, usage = nf.totals()
    assert snap["c"][(SUBMITTED, ("f",))] == 7
    assert sum(snap["h"][(EXEC, ("f",))][:-1]) == 2
    assert snap["g"][(TASKS, ("PENDING_ARGS_AVAIL",))] == 2
    assert usage == {("job1", "CPU"): 7.0}


def test_retiring_keeps_counters_histograms_and_usage_but_drops_gauges() -> None:
    nf = NodeFigures()
    nf.update("w1", *_report(3, 1))
    nf.update("w2", *_report(4, 1))
    before, usage_before = nf.totals()
    nf.retire("w1")
    after, usage_after = nf.totals()
    assert after["c"] == before["c"]
    assert after["h"] == before["h"]
    assert usage_after == usage_before
    assert after["g"][(TASKS, ("PENDING_ARGS_AVAIL",))] == 1  # only w2's live gauge is left
    nf.retire("w2")
    nf.retire("w2")  # twice, or a reporter never seen: nothing happens
    nf.retire("never")
    final, usage_final = nf.totals()
    assert final["c"] == before["c"] and final["h"] == before["h"]
    assert final["g"] == {}
    assert usage_final == usage_before


def test_totals_do_not_alias_the_stored_figures() -> None:
    nf = NodeFigures()
    nf.update("w1", *_report(3, 1))
    nf.retire("w1")
    snap, _ = nf.totals()
    snap["h"][(EXEC, ("f",))][0] += 100
    snap["c"][(SUBMITTED, ("f",))] += 100
    again, _ = nf.totals()
    assert again["c"][(SUBMITTED, ("f",))] == 3
    assert sum(again["h"][(EXEC, ("f",))][:-1]) == 1


def test_own_snapshot_is_added() -> None:
    nf = NodeFigures()
    nf.update("w1", *_report(3, 1))
    own = Recorder()
    own.inc("freight_driver_disconnects_total", ("true",))
    own.inc(SUBMITTED, ("f",))
    snap, _ = nf.totals(own.snapshot())
    assert snap["c"][(SUBMITTED, ("f",))] == 4
    assert snap["c"][("freight_driver_disconnects_total", ("true",))] == 1


@pytest.mark.parametrize(
    "usage", [None, {("job1",): 1.0}, {("job1", "CPU"): "1"}, {("job1", 3): 1.0}]
)
def test_malformed_reports_are_refused_and_change_nothing(usage) -> None:
    nf = NodeFigures()
    nf.update("w1", *_report(3, 1))
    snap, _ = _report(9, 9)
    with pytest.raises(ValueError):
        nf.update("w1", snap, usage)
    with pytest.raises(ValueError):
        nf.update("w1", {"c": {}}, {})
    totals, _ = nf.totals()
    assert totals["c"][(SUBMITTED, ("f",))] == 3
