"""The catalogue's metrics can be alerted on as they are: SLO thresholds are bucket bounds."""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from freight.config import SETTINGS, settings
from freight.node.metrics import store_state
from freight.objects.store import ObjectEntry
from freight.observe.catalogue import BY_NAME, CATALOGUE, HEALTH_CHECK_REASONS, Source
from freight.observe.exposition import FiguresCollector
from freight.observe.recorder import Recorder, Snapshot

HEALTH = "freight_node_health_check_failures_total"
# snake_case words, or the upper-case state names the runtime shows (ALIVE, PENDING_CREATION)
WORD = re.compile(r"^([a-z0-9]+(_[a-z0-9]+)*|[A-Z]+(_[A-Z]+)*)$")

SLO_SETTINGS = {
    "slo_scheduling_latency_s": (
        "freight_task_scheduling_latency_seconds",
        "freight_head_scheduling_latency_seconds",
    ),
    "slo_control_store_latency_s": ("freight_control_store_operation_seconds",),
}


@pytest.mark.parametrize("key", sorted(SLO_SETTINGS))
def test_each_slo_threshold_default_is_a_bucket_of_its_histograms(key) -> None:
    default = SETTINGS[key].default
    for name in SLO_SETTINGS[key]:
        assert default in BY_NAME[name].buckets, (name, default)


def test_scheduling_latency_counts_a_200_ms_slo_exactly() -> None:
    assert settings.slo_scheduling_latency_s == 0.2
    assert 0.2 in BY_NAME["freight_task_scheduling_latency_seconds"].buckets
    assert 0.2 in BY_NAME["freight_head_scheduling_latency_seconds"].buckets


@pytest.mark.parametrize("key", sorted(SLO_SETTINGS))
def test_every_allowed_threshold_is_a_bucket_of_its_histograms(key) -> None:
    for name in SLO_SETTINGS[key]:
        assert set(SETTINGS[key].choices) <= set(BY_NAME[name].buckets), name


def test_a_threshold_between_buckets_is_refused_with_the_allowed_values(monkeypatch) -> None:
    monkeypatch.setenv("FREIGHT_SLO_SCHEDULING_LATENCY_S", "0.3")
    with pytest.raises(ValueError, match=r"FREIGHT_SLO_SCHEDULING_LATENCY_S='0.3' is not one of"):
        _ = settings.slo_scheduling_latency_s
    monkeypatch.setenv("FREIGHT_SLO_SCHEDULING_LATENCY_S", "0.5")
    assert settings.slo_scheduling_latency_s == 0.5


# -- series exist from the start -------------------------------------------------------------

ZERO_FROM_START = (
    "freight_task_retries_total",
    "freight_memory_monitor_kills_total",
    "freight_object_reconstructions_total",
    "freight_queue_depth",
    "freight_worker_crashes_total",
)


def _scrape(snap: Snapshot, source: Source) -> dict[str, Any]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FiguresCollector(source, lambda: snap, lambda: "c1"))
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _series(fams: dict[str, Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    family = fams[name.removesuffix("_total")]
    return {
        tuple(sorted((k, v) for k, v in s.labels.items() if k != "cluster")): s.value
        for s in family.samples
        if s.name in (name, family.name)
    }


@pytest.mark.parametrize("name", ZERO_FROM_START)
def test_node_counters_and_reason_gauges_are_zero_before_their_first_event(name) -> None:
    rec = Recorder()
    rec.inc("freight_tasks_submitted_total", ("f",))  # a function this node has seen
    got = _series(_scrape(rec.snapshot(), Source.NODE), name)
    m = BY_NAME[name]
    enum = next(x for x in m.labels if m.allowed(x))
    assert sorted(dict(k)[enum] for k in got) == sorted(m.allowed(enum))
    assert set(got.values()) == {0.0}
    if "name" in m.labels:
        assert {dict(k)["name"] for k in got} == {"f"}


def test_health_check_failures_are_zero_on_the_head_before_any_failure() -> None:
    got = _series(_scrape(Recorder().snapshot(), Source.HEAD), HEALTH)
    assert {dict(k)["reason"] for k in got} == set(HEALTH_CHECK_REASONS)
    assert set(got.values()) == {0.0}


def test_a_gauge_at_zero_keeps_its_series() -> None:
    rec = Recorder()
    rec.set("freight_queue_depth", ("infeasible",), 3)
    assert (
        _series(_scrape(rec.snapshot(), Source.NODE), "freight_queue_depth")[
            (("reason", "infeasible"),)
        ]
        == 3
    )
    rec.clear_gauge("freight_queue_depth")  # what the owner does before setting the current ones
    got = _series(_scrape(rec.snapshot(), Source.NODE), "freight_queue_depth")
    assert got[(("reason", "infeasible"),)] == 0


@pytest.mark.parametrize("m", [m for m in CATALOGUE if m.values], ids=lambda m: m.name)
def test_declared_label_values_are_short_words_not_sentences(m) -> None:
    for label, values in m.values:
        assert label in m.labels, (m.name, label)
        for value in values:
            assert WORD.match(value), (m.name, label, value)


def test_unlisted_health_check_verdicts_are_counted_as_error() -> None:
    # every verdict the health check can give is a declared value
    codes = {c.name.lower() for c in grpc.StatusCode if c is not grpc.StatusCode.OK}
    assert codes | {"wrong_node", "wrong_incarnation", "error"} == set(HEALTH_CHECK_REASONS)


# -- object-store states partition the store -------------------------------------------------


def test_each_object_is_in_exactly_one_store_state() -> None:
    cases = {
        "being_written": ObjectEntry(b"a", 10, "o", sealed=False, create_time=0.0),
        "pinned_in_memory": ObjectEntry(b"b", 10, "o", sealed=True, create_time=0.0),
        "restored_in_memory": ObjectEntry(
            b"c", 10, "o", sealed=True, create_time=0.0, spill_path="/s/c"
        ),
        "spilled": ObjectEntry(
            b"d", 10, "o", sealed=True, create_time=0.0, spill_path="/s/d", in_memory=False
        ),
    }
    assert {store_state(e): state for state, e in cases.items()} == {s: s for s in cases}
    assert set(cases) == set(BY_NAME["freight_object_store_bytes"].allowed("state"))


# -- cost names its currency --------------------------------------------------------------------


def test_the_cost_help_names_the_configured_currency() -> None:
    registry = CollectorRegistry(auto_describe=False)
    notes = {"freight_job_cost_total": "Currency: EUR."}
    registry.register(
        FiguresCollector(Source.NODE, lambda: Recorder().snapshot(), lambda: "c1", notes=notes)
    )
    text = generate_latest(registry).decode()
    help_line = next(x for x in text.splitlines() if x.startswith("# HELP freight_job_cost_total"))
    assert help_line.endswith("Currency: EUR.")
    assert "FREIGHT_PRICE_CURRENCY" in BY_NAME["freight_job_cost_total"].help


def test_a_currency_that_is_not_an_iso_code_is_refused(monkeypatch) -> None:
    assert settings.price_currency == "USD"
    monkeypatch.setenv("FREIGHT_PRICE_CURRENCY", "euros")
    with pytest.raises(ValueError, match="FREIGHT_PRICE_CURRENCY='euros' is not valid"):
        _ = settings.price_currency
