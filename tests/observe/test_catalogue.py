"""The metrics catalogue follows Prometheus naming and freight's label rules."""

from __future__ import annotations

import re

import pytest

from freight.observe.catalogue import BOUNDED, BY_NAME, CATALOGUE, Source, Type, metric

NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# Prometheus base units that must appear in the name. A currency is not one: the price unit is
# configurable, so freight_job_cost_total cannot carry it (the docs table states the unit).
NAMED_UNITS = {"seconds", "bytes"}
KNOWN_UNITS = NAMED_UNITS | {"", "currency"}
# A known departure from the conventions, kept visible here (see the catalogue):
# resource-seconds are amount x seconds, so the name says seconds without the unit.
SECONDS_NOT_UNIT = {"freight_job_resource_seconds_total"}


def test_names_are_unique() -> None:
    assert len(BY_NAME) == len(CATALOGUE)


@pytest.mark.parametrize("m", CATALOGUE, ids=lambda m: m.name)
def test_name_has_the_prefix_and_valid_characters(m) -> None:
    assert m.name.startswith("freight_"), m.name
    assert NAME.match(m.name), m.name


@pytest.mark.parametrize("m", CATALOGUE, ids=lambda m: m.name)
def test_counters_and_only_counters_end_in_total(m) -> None:
    if m.type is Type.COUNTER:
        assert m.name.endswith("_total"), m.name
    else:
        assert not m.name.endswith("_total"), m.name


@pytest.mark.parametrize("m", CATALOGUE, ids=lambda m: m.name)
def test_unit_is_the_last_word_of_the_name(m) -> None:
    assert m.unit in KNOWN_UNITS, f"{m.name}: unknown unit {m.unit!r}"
    base = m.name.removesuffix("_total")
    if m.unit in NAMED_UNITS:
        assert base.endswith("_" + m.unit), f"{m.name} has unit {m.unit} but not in its name"
    for unit in NAMED_UNITS:
        if base.endswith("_" + unit) and m.name not in SECONDS_NOT_UNIT:
            assert m.unit == unit, f"{m.name} names {unit} but declares unit {m.unit!r}"


@pytest.mark.parametrize("m", CATALOGUE, ids=lambda m: m.name)
def test_labels_hold_no_ids_and_no_cluster(m) -> None:
    for label in m.labels:
        assert NAME.match(label) and not label.startswith("__"), label
        assert label != "id" and not label.endswith("_id"), f"{m.name} has an id label {label}"
        assert label not in {"task", "object", "worker", "actor", "node", "job", "le"}, label
    assert "cluster" not in m.labels, "the exporter adds the cluster label itself"
    assert len(set(m.labels)) == len(m.labels)


@pytest.mark.parametrize("m", CATALOGUE, ids=lambda m: m.name)
def test_histograms_and_only_histograms_have_sorted_buckets(m) -> None:
    if m.type is Type.HISTOGRAM:
        assert m.buckets, m.name
        assert list(m.buckets) == sorted(set(m.buckets)), m.name
        assert m.buckets[0] > 0
    else:
        assert m.buckets == (), m.name


@pytest.mark.parametrize("m", CATALOGUE, ids=lambda m: m.name)
def test_every_metric_is_explained(m) -> None:
    assert len(m.help) > 20 and m.help[0].isupper(), m.name
    assert isinstance(m.source, Source)


def test_user_chosen_names_are_bounded_labels() -> None:
    assert {"name", "class_name", "error_type"} <= BOUNDED
    labels = {label for m in CATALOGUE for label in m.labels}
    assert {"name", "class_name", "error_type", "team", "owner"} <= labels


def test_seed_measures_exist() -> None:
    """DESIGN.md's list of measures that must exist, by the metric carrying each."""
    for name in (
        "freight_tasks_finished_total",  # task success rate
        "freight_task_scheduling_latency_seconds",
        "freight_task_execution_latency_seconds",
        "freight_object_store_bytes",
        "freight_head_scheduling_latency_seconds",
        "freight_node_heartbeat_lag_seconds",
        "freight_autoscaler_scale_events_total",
        "freight_actor_restarts_total",
        "freight_driver_disconnects_total",
        "freight_job_cost_total",
        "freight_queue_depth",
        "freight_object_transfer_bytes_total",
        "freight_worker_restarts_total",
        "freight_node_agent_restarts_total",
        "freight_gc_pause_seconds",
    ):
        assert name in BY_NAME, name


def test_unknown_metric_is_named_in_the_error() -> None:
    assert metric("freight_tasks_submitted_total").type is Type.COUNTER
    with pytest.raises(KeyError, match="freight_nope_total is not in the metrics catalogue"):
        metric("freight_nope_total")
