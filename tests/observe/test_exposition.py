"""Snapshots rendered for Prometheus, parsed back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from freight.observe.catalogue import CATALOGUE, OTHER, Metric, Source, Type, metric
from freight.observe.exposition import ALSO_ON_HEAD, FiguresCollector, served_by
from freight.observe.http import MetricsServer, loop_reader
from freight.observe.recorder import Recorder, Snapshot

SUBMITTED = "freight_tasks_submitted_total"
FINISHED = "freight_tasks_finished_total"
EXEC = "freight_task_execution_latency_seconds"
DROPPED = "freight_telemetry_dropped_total"


def parse(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def render(
    snap: Snapshot | Callable[[], Snapshot], source: Source = Source.NODE, top_n: int = 50
) -> tuple[FiguresCollector, Callable[[], dict[str, Any]]]:
    read = snap if callable(snap) else (lambda: snap)
    collector = FiguresCollector(source, read, lambda: "c1", top_n=top_n)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return collector, lambda: parse(generate_latest(registry).decode())


def family_name(m: Metric) -> str:
    """The parser names a counter's family without ``_total``."""
    return m.name.removesuffix("_total") if m.type is Type.COUNTER else m.name


def test_every_metric_of_the_source_is_present_with_help_and_type() -> None:
    _, scrape = render(Recorder().snapshot())
    fams = scrape()
    for m in served_by(Source.NODE):
        name = family_name(m)
        assert name in fams, m.name
        assert fams[name].type == m.type.value
        assert fams[name].documentation == m.help
    _, head = render(Recorder().snapshot(), Source.HEAD)
    head_fams = head()
    wanted = {m.name for m in CATALOGUE if m.source is Source.HEAD} | ALSO_ON_HEAD
    assert {family_name(m) for m in served_by(Source.HEAD)} <= set(head_fams)
    assert {m.name for m in served_by(Source.HEAD)} == wanted


def test_label_less_counters_and_gauges_are_zero_before_any_series() -> None:
    _, scrape = render(Recorder().snapshot())
    fams = scrape()
    starts = fams["freight_worker_starts"].samples
    assert [(s.name, s.labels, s.value) for s in starts] == [
        ("freight_worker_starts_total", {"cluster": "c1"}, 0.0)
    ]
    assert fams["freight_object_store_capacity_bytes"].samples[0].value == 0.0
    assert fams[SUBMITTED.removesuffix("_total")].samples == []  # labelled: no series yet


def test_every_series_has_the_cluster_label() -> None:
    r = Recorder()
    r.inc(SUBMITTED, ("f",))
    r.observe(EXEC, ("f",), 0.3)
    r.set("freight_tasks", ("PENDING_ARGS_AVAIL",), 2)
    _, scrape = render(r.snapshot())
    every = [s for f in scrape().values() for s in f.samples]
    assert every
    assert all(s.labels.get("cluster") == "c1" for s in every)


def test_histograms_become_cumulative_buckets_with_sum_and_count() -> None:
    r = Recorder()
    values = [0.0004, 0.003, 0.003, 0.7, 400.0]
    for v in values:
        r.observe(EXEC, ("f",), v)
    _, scrape = render(r.snapshot())
    fam = scrape()[EXEC]
    buckets = {float(s.labels["le"]): s.value for s in fam.samples if s.name == EXEC + "_bucket"}
    bounds = metric(EXEC).buckets
    assert sorted(buckets) == sorted([*bounds, float("inf")])
    for le, count in buckets.items():
        assert count == sum(1 for v in values if v <= le), le
    by_name = {s.name: s.value for s in fam.samples if s.name != EXEC + "_bucket"}
    assert by_name[EXEC + "_count"] == 5
    assert by_name[EXEC + "_sum"] == pytest.approx(sum(values))


def test_counter_values_come_through() -> None:
    r = Recorder()
    r.inc(FINISHED, ("f", "FINISHED", "none", ""), 450)
    r.inc(FINISHED, ("f", "FAILED", "application", "ValueError"), 50)
    _, scrape = render(r.snapshot())
    got = {
        (s.labels["state"], s.labels["error_type"]): s.value
        for s in scrape()["freight_tasks_finished"].samples
    }
    assert got == {("FINISHED", ""): 450, ("FAILED", "ValueError"): 50}


def test_bounded_labels_fold_to_top_n_and_count_what_they_folded() -> None:
    r = Recorder()  # the process keeps all five; the endpoint keeps three
    for i, name in enumerate(["f0", "f1", "f2", "f3", "f4"]):
        r.inc(SUBMITTED, (name,), i + 1)
    _, scrape = render(r.snapshot(), top_n=3)
    fams = scrape()
    got = {s.labels["name"]: s.value for s in fams["freight_tasks_submitted"].samples}
    assert got == {"f0": 1, "f1": 2, "f2": 3, OTHER: 4 + 5}
    dropped = {s.labels["kind"]: s.value for s in fams["freight_telemetry_dropped"].samples}
    # every kind is exported from the start; only label_values counted anything
    assert dropped == {
        "label_values": 2,
        "task_events": 0,
        "spans": 0,
        "task_records": 0,
        "events": 0,
    }


def test_folding_is_sticky_across_scrapes() -> None:
    state = {"snap": Recorder().snapshot()}
    _, scrape = render(lambda: state["snap"], top_n=1)
    first = Recorder()
    first.inc(SUBMITTED, ("early",))
    state["snap"] = first.snapshot()
    scrape()
    first.inc(SUBMITTED, ("late",), 3)
    first.inc(SUBMITTED, ("early",))
    state["snap"] = first.snapshot()
    got = {s.labels["name"]: s.value for s in scrape()["freight_tasks_submitted"].samples}
    assert got == {"early": 2, OTHER: 3}


def test_values_folded_upstream_do_not_take_a_slot() -> None:
    r = Recorder()
    r.inc(SUBMITTED, (OTHER,), 7)
    r.inc(SUBMITTED, ("a",))
    r.inc(SUBMITTED, ("b",))
    _, scrape = render(r.snapshot(), top_n=2)
    fams = scrape()
    got = {s.labels["name"]: s.value for s in fams["freight_tasks_submitted"].samples}
    assert got == {OTHER: 7, "a": 1, "b": 1}
    assert fams["freight_telemetry_dropped"].samples[0].value == 0


def test_a_unit_the_name_does_not_carry_keeps_the_name() -> None:
    r = Recorder()
    r.inc("freight_job_cost_total", ("ml", "alice"), 1.5)
    _, scrape = render(r.snapshot())
    fam = scrape()["freight_job_cost"]
    assert [(s.name, s.value) for s in fam.samples] == [("freight_job_cost_total", 1.5)]


def test_bad_top_n_is_refused() -> None:
    with pytest.raises(ValueError, match="top_n must be at least 1"):
        FiguresCollector(Source.NODE, Recorder().snapshot, lambda: "c", top_n=0)


# ---- the HTTP endpoint --------------------------------------------------------------------------


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


@pytest.fixture
def endpoint() -> Iterator[tuple[MetricsServer, dict[str, Any]]]:
    r = Recorder()
    r.inc(SUBMITTED, ("f",), 3)
    state: dict[str, Any] = {"snap": r.snapshot(), "fail": None, "sd": [{"targets": ["x:1"]}]}

    def read() -> Snapshot:
        if state["fail"]:
            raise state["fail"]
        return state["snap"]

    collector = FiguresCollector(Source.NODE, read, lambda: "c1")
    server = MetricsServer([collector], port=0, sd=lambda: state["sd"]).start()
    try:
        yield server, state
    finally:
        server.stop()


def test_metrics_and_sd_over_http(endpoint) -> None:
    server, state = endpoint
    base = f"http://127.0.0.1:{server.port}"
    assert server.address("127.0.0.1") == f"127.0.0.1:{server.port}"
    status, ctype, body = get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    got = {s.labels["name"]: s.value for s in parse(body)["freight_tasks_submitted"].samples}
    assert got == {"f": 3}
    status, ctype, body = get(base + "/sd")
    assert status == 200 and ctype == "application/json"
    assert json.loads(body) == state["sd"]


def test_unknown_paths_get_404_and_a_failed_read_503_then_it_serves_again(endpoint) -> None:
    server, state = endpoint
    base = f"http://127.0.0.1:{server.port}"
    status, _, body = get(base + "/nope")
    assert status == 404 and "/metrics" in body
    state["fail"] = TimeoutError("the event loop did not produce figures within 5 s")
    status, _, body = get(base + "/metrics")
    assert status == 503
    assert "TimeoutError" in body and "event loop" in body
    state["fail"] = None
    status, _, body = get(base + "/metrics")
    assert status == 200 and "freight_tasks_submitted_total" in body


def test_a_port_in_use_disables_the_endpoint_instead_of_failing() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer([], port=port).start()
        assert server.port == 0
        assert server.address("127.0.0.1") == ""
        assert f"127.0.0.1:{port}" in server.error
        server.stop()


def test_loop_reader_runs_on_the_loop_thread_and_times_out() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:

        async def whose_thread() -> int:
            return threading.get_ident()

        assert loop_reader(loop, whose_thread)() == thread.ident

        async def stuck() -> None:
            await asyncio.Event().wait()

        with pytest.raises(TimeoutError, match="did not produce figures"):
            loop_reader(loop, stuck, timeout=0.05)()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    with pytest.raises(RuntimeError):
        loop_reader(loop, whose_thread)()
