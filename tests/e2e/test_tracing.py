"""Tracing end to end: clusters export spans to a real OTLP gRPC receiver started by the test.

Each driver runs in its own process (its environment decides whether tracing is on; its exit
flushes every process of its private cluster), and the receiver collects what they all send.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from freight.observe import tracing
from freight.testing import OtlpReceiver, ReceivedSpan, short_temp_dir, wait_for_condition

FREIGHT = str(Path(sys.executable).with_name("freight"))

# driver -> task parent -> tasks leaf and boom (boom raises), an actor it creates and calls, an
# async and a threaded actor whose methods submit tasks, a task whose worker dies, and a value it
# fetches from the driver. The driver prints what the workload and its processes report.
NESTED = """
    import json, sys
    import freight
    from freight.observe import tracing
    from freight.observe.recorder import RECORDER

    @freight.remote
    def leaf(x):
        return x * 2

    @freight.remote
    def boom():
        raise ValueError("boom from B2")

    @freight.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k):
            self.n += k
            return self.n

    @freight.remote
    def inc_threaded(x):
        return x + 1

    @freight.remote
    def die():
        import os
        os._exit(1)

    @freight.remote
    class Echo:
        async def echo(self, box):
            return (await box[0]) + 1  # fetched from the driver, inside the coroutine

    @freight.remote
    class Pool:
        def run(self, x):
            return freight.get(inc_threaded.remote(x))

    @freight.remote
    def parent(box):
        data = freight.get(box[0])  # fetched from its owner, the driver
        counter = Counter.remote()
        b1, b2 = leaf.remote(data), boom.remote()
        total = freight.get(counter.add.remote(freight.get(b1)))
        try:
            freight.get(b2)
            failed = False
        except ValueError:
            failed = True
        echo, pool = Echo.remote(), Pool.options(max_concurrency=2).remote()
        incs = freight.get([echo.echo.remote(box), pool.run.remote(1)])
        try:
            freight.get(die.options(max_retries=0).remote())
            crashed = False
        except freight.exceptions.WorkerCrashedError:
            crashed = True
        return {
            "total": total,
            "failed": failed,
            "incs": incs,
            "crashed": crashed,
            "ids": tracing.current_ids(),
            "enabled": tracing.ENABLED,
            "sdk_loaded": "opentelemetry.sdk.trace" in sys.modules,
        }

    freight.init(num_cpus=2)
    out = freight.get(parent.remote([freight.put(21)]))
    out["driver_enabled"] = tracing.ENABLED
    out["driver_sdk_loaded"] = "opentelemetry.sdk.trace" in sys.modules
    cw = freight._api._require_worker()
    out["trace_ids"] = sorted({r.trace_id for r in cw.tasks.history})
    if "--count-drops" in sys.argv:
        # While connected: shutdown sends the figures in a last report and starts afresh.
        from freight.testing import wait_for_condition
        key = ("freight_telemetry_dropped_total", ("spans",))
        out["dropped"] = wait_for_condition(
            lambda: RECORDER.snapshot()["c"].get(key, 0), 60, "spans counted as dropped"
        )
    freight.shutdown()
    print("RESULT " + json.dumps(out))
"""

WORKLOAD_SPANS = {
    "submit parent",
    "schedule parent",
    "task parent",
    "object fetch",
    "submit leaf",
    "schedule leaf",
    "task leaf",
    "submit boom",
    "task boom",
    "actor creation Counter",
    "actor creation Counter.__init__",
    "freight.v1.HeadService/CreateActor",
    "submit Counter.add",
    "actor Counter.add",
    "argument fetch",
    "result store",
    "actor Echo.echo",
    "actor Pool.run",
    "task inc_threaded",
    "schedule die",
}


def _env(temp_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "FREIGHT_TRACING"
    }
    env.update(FREIGHT_TEMP_DIR=str(temp_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def run_nested(temp_dir: Path, *args: str, **env: str) -> tuple[dict[str, Any], str]:
    """Run the nested workload in a driver process; return what it reported and its stderr."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NESTED), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(temp_dir, **env),
    )
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), proc.stderr


def otlp_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **extra,
    }


@pytest.fixture(scope="module")
def temp_dir() -> Iterator[Path]:
    with short_temp_dir() as path:
        yield path


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


# -- one traced run, several properties --------------------------------------------------------


@pytest.fixture(scope="module")
def traced(temp_dir: Path) -> Iterator[tuple[dict[str, Any], list[ReceivedSpan]]]:
    with OtlpReceiver() as receiver:
        out, _ = run_nested(temp_dir, **otlp_env(receiver))
        spans = receiver.wait_for(
            lambda s: s if {x.name for x in s} >= WORKLOAD_SPANS else None,
            timeout=60,
            what=f"the spans {sorted(WORKLOAD_SPANS)}",
        )
        yield out, spans


def named(spans: list[ReceivedSpan], name: str, kind: str = "") -> ReceivedSpan:
    found = [s for s in spans if s.name == name and (not kind or s.kind == kind)]
    assert len(found) == 1, f"{len(found)} spans named {name!r}: {found}"
    return found[0]


def ancestors(spans: list[ReceivedSpan], span: ReceivedSpan) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    names = []
    while span.parent_span_id:
        span = by_id[span.parent_span_id]
        names.append(span.name)
    return names


def test_workload_results_are_unchanged_by_tracing(traced: Any) -> None:
    out, _ = traced
    assert out["total"] == 42 and out["failed"] is True
    assert out["incs"] == [22, 2] and out["crashed"] is True
    assert out["enabled"] and out["driver_enabled"]


def test_nested_workload_is_one_trace(traced: Any) -> None:
    out, spans = traced
    trace_ids = {s.trace_id for s in spans}
    assert len(trace_ids) == 1, f"spans of {len(trace_ids)} traces: {sorted(trace_ids)}"
    (trace_id,) = trace_ids
    # The owner's task records (and so its task events) carry the trace id.
    assert out["trace_ids"] == [trace_id]


def test_parent_links_cross_processes(traced: Any) -> None:
    _, spans = traced
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert [r.name for r in roots] == ["submit parent"]
    dangling = [s.name for s in spans if s.parent_span_id and s.parent_span_id not in by_id]
    assert not dangling, f"spans whose parent never arrived: {dangling}"

    assert ancestors(spans, named(spans, "task parent")) == ["submit parent"]
    assert named(spans, "schedule parent").parent_span_id == named(spans, "submit parent").span_id
    for name in ("task leaf", "task boom", "actor Counter.add"):
        assert "task parent" in ancestors(spans, named(spans, name)), name
    fetches = sorted(ancestors(spans, s)[0] for s in spans if s.name == "object fetch")
    assert fetches == ["actor Echo.echo", "task parent"]
    assert ancestors(spans, named(spans, "task leaf"))[:2] == ["submit leaf", "task parent"]
    assert ancestors(spans, named(spans, "actor Counter.add"))[:2] == [
        "submit Counter.add",
        "task parent",
    ]
    # Actor creation: owner span -> CreateActor client -> head server; constructor on its worker.
    creation = named(spans, "actor creation Counter")
    assert ancestors(spans, creation)[0] == "task parent"
    (client,) = [s for s in spans if s.parent_span_id == creation.span_id and s.kind == "CLIENT"]
    assert client.name == "freight.v1.HeadService/CreateActor"
    (server,) = [s for s in spans if s.parent_span_id == client.span_id]
    assert (server.name, server.kind) == (client.name, "SERVER")
    assert server.resource["service.name"] == "freight-head"
    assert ancestors(spans, named(spans, "actor creation Counter.__init__"))[:2] == [
        "actor creation Counter",
        "task parent",
    ]
    # Inside async and threaded actors, the call's context is current too.
    assert ancestors(spans, named(spans, "actor Echo.echo"))[:2] == [
        "submit Echo.echo",
        "task parent",
    ]
    assert ancestors(spans, named(spans, "task inc_threaded"))[:4] == [
        "submit inc_threaded",
        "actor Pool.run",
        "submit Pool.run",
        "task parent",
    ]
    assert all(
        ancestors(spans, s)[0].startswith(("task ", "actor "))
        for s in spans
        if s.name in ("argument fetch", "result store")
    )


def test_spans_come_from_several_processes(traced: Any) -> None:
    _, spans = traced
    services = {s.resource["service.name"] for s in spans}
    assert {"freight-driver", "freight-worker", "freight-head"} <= services
    assert len({s.resource["service.instance.id"] for s in spans}) >= 4
    pid = {n: named(spans, n).resource["process.pid"] for n in ("submit parent", "task parent")}
    pid["task leaf"] = named(spans, "task leaf").resource["process.pid"]
    assert len(set(pid.values())) == 3, pid
    assert all(s.resource["freight.cluster"] == "freight" for s in spans)
    missing = [
        (s.name, s.resource["service.name"])
        for s in spans
        if s.resource["service.name"] != "freight-head" and not s.resource["freight.node_id"]
    ]
    assert not missing, missing


def test_execute_span_attributes_and_current_ids(traced: Any) -> None:
    out, spans = traced
    task = named(spans, "task parent")
    assert out["ids"] == [task.trace_id, task.span_id]
    attrs = task.attributes
    assert len(attrs["freight.task_id"]) == 32 and attrs["freight.job_id"]
    assert attrs["freight.attempt"] == 0
    assert attrs["freight.node_id"] == task.resource["freight.node_id"]
    assert attrs["freight.worker_id"]
    assert named(spans, "actor Counter.add").attributes["freight.actor_id"]
    schedule = named(spans, "schedule leaf").attributes
    assert schedule["freight.pending_reason"] and schedule["freight.worker_id"]


def test_failing_task_span_has_error_status_and_exception(traced: Any) -> None:
    _, spans = traced
    boom = named(spans, "task boom")
    assert boom.status == "ERROR"
    assert "boom from B2" in boom.status_message
    events = [attrs for name, attrs in boom.events if name == "exception"]
    assert len(events) == 1
    assert events[0]["exception.type"] == "ValueError"
    assert "boom from B2" in events[0]["exception.message"]
    ok = [s for s in spans if s.name != "task boom" and s.kind == "CONSUMER"]
    assert ok and all(s.status != "ERROR" for s in ok)


def test_task_lost_with_its_worker_marks_the_owners_schedule_span(traced: Any) -> None:
    _, spans = traced
    schedule = named(spans, "schedule die")
    assert schedule.status == "ERROR"
    assert [a["exception.type"] for n, a in schedule.events if n == "exception"] == [
        "freight.exceptions.WorkerCrashedError"
    ]
    assert not [s for s in spans if s.name == "task die"]  # its worker never sent it


# -- when nothing must be exported ------------------------------------------------------------


def test_sampling_off_exports_nothing(temp_dir: Path, receiver: OtlpReceiver) -> None:
    out, _ = run_nested(temp_dir, **otlp_env(receiver, OTEL_TRACES_SAMPLER="always_off"))
    # Tracing is on in every process; the sampler drops every trace. Each process flushed its
    # exporter before exiting, and the driver has waited for all of them to exit.
    assert out["enabled"] and out["driver_enabled"] and out["total"] == 42
    assert out["trace_ids"] == [""]
    assert receiver.spans == []


def test_tracing_is_off_without_otlp_settings(temp_dir: Path, receiver: OtlpReceiver) -> None:
    out, _ = run_nested(temp_dir)
    assert out["total"] == 42 and out["failed"] is True
    # No tracer provider: the SDK is not even imported, in the driver or in a worker.
    assert not out["enabled"] and not out["driver_enabled"]
    assert not out["sdk_loaded"] and not out["driver_sdk_loaded"]
    assert out["ids"] == ["", ""] and out["trace_ids"] == [""]
    assert receiver.spans == []


def test_bad_tracing_setting_stops_init_with_the_setting_named(
    temp_dir: Path, receiver: OtlpReceiver
) -> None:
    # Like every FREIGHT_* setting, a value that is not valid stops init() before any process
    # starts with it, rather than running untraced.
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NESTED)],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(temp_dir, FREIGHT_TRACING="sometimes", **otlp_env(receiver)),
    )
    assert proc.returncode != 0
    assert "FREIGHT_TRACING='sometimes' is not one of auto, on, off" in proc.stderr
    assert "RESULT " not in proc.stdout
    assert receiver.spans == []


def unreachable_exporter(schedule_delay_ms: int) -> dict[str, str]:
    """OTLP settings that export to a port nobody listens on, each attempt given up after 1 s."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        "OTEL_BSP_SCHEDULE_DELAY": str(schedule_delay_ms),
    }


def test_unreachable_receiver_does_not_break_tasks(temp_dir: Path) -> None:
    env = unreachable_exporter(schedule_delay_ms=100)
    out, stderr = run_nested(temp_dir, "--count-drops", **env)
    assert out["total"] == 42 and out["failed"] is True and out["driver_enabled"]
    assert out["dropped"] >= 1  # the driver's spans that could not be sent are counted
    # Logged once, never a traceback or a warning per retry on the user's stderr.
    assert stderr.count("tracing problem") == 1, stderr
    assert "Traceback" not in stderr


# A driver whose spans are all still queued when it shuts down (the exporter waits a minute
# between batches) to a receiver that is down: it joins a cluster that outlives it.
UNSENT = """
    import json, sys
    import freight
    from freight.observe import tracing
    from freight.observe.recorder import RECORDER

    @freight.remote
    def leaf(x):
        return x * 2

    from opentelemetry.sdk.trace import SpanProcessor

    class Ended(SpanProcessor):  # counts the sampled spans this driver ends
        n = 0

        def on_end(self, span):
            Ended.n += span.context.trace_flags.sampled

    freight.init(address=sys.argv[1])
    tracing._provider.add_span_processor(Ended())
    values = freight.get([leaf.remote(i) for i in range(5)])
    key = ("freight_telemetry_dropped_total", ("spans",))
    out = {"values": values, "counted": RECORDER.snapshot()["c"].get(key, 0), "ended": Ended.n}
    freight.shutdown()
    print("RESULT " + json.dumps(out))
"""


def dropped_spans_on_nodes(tmp: Path, address: str) -> float:
    """freight_telemetry_dropped_total{kind="spans"} summed over the node agents of the cluster
    at ``address`` (each one's /metrics has what its drivers and workers reported)."""
    heads = [json.loads(p.read_text()) for p in tmp.glob("session_*/head.json")]
    (metrics,) = {h["metrics_address"] for h in heads if h["address"] == address}  # (_latest too)
    with urllib.request.urlopen(f"http://{metrics}/sd", timeout=10) as r:
        groups = json.loads(r.read())
    total = 0.0
    for group in groups:
        if group["labels"].get("node_id"):
            with urllib.request.urlopen(f"http://{group['targets'][0]}/metrics", timeout=10) as r:
                text = r.read().decode()
            total += sum(
                s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "freight_telemetry_dropped_total" and s.labels.get("kind") == "spans"
            )
    return total


def test_spans_unsent_at_shutdown_are_counted_in_the_drivers_last_report() -> None:
    env = unreachable_exporter(schedule_delay_ms=600000)
    with started_cluster() as (tmp, addr):
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(UNSENT), addr],
            capture_output=True, text=True, timeout=120, env=_env(tmp, **env),
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        out = json.loads(line.removeprefix("RESULT "))
        assert out["values"] == [0, 2, 4, 6, 8]
        # Nothing was exported, nor counted, before shutdown: every span was still queued.
        assert out["counted"] == 0 and out["ended"] >= 5, out
        # The last report (sent before the driver disconnected) counted each one as dropped;
        # the driver's figures stay on its node's /metrics once it has gone.
        wait_for_condition(
            lambda: dropped_spans_on_nodes(tmp, addr) >= out["ended"],
            30,
            f"the driver's {out['ended']} unsent spans counted on its node",
        )


# -- a cluster started by `freight start`: whose configuration applies ------------------------

JOINING = """
    import json, sys
    import freight
    from freight.observe import tracing

    @freight.remote
    def leaf(x):
        return x * 2

    freight.init(address=sys.argv[1])
    out = {"value": freight.get(leaf.remote(21)), "driver_enabled": tracing.ENABLED}
    freight.shutdown()
    print("RESULT " + json.dumps(out))
"""


@contextlib.contextmanager
def started_cluster(**env: str) -> Iterator[tuple[Path, str]]:
    """A cluster started by `freight start --head` with ``env`` (and no other tracing setting);
    yields its temp folder and address, and stops its processes at the end."""
    with short_temp_dir() as tmp:
        started = subprocess.run(
            [FREIGHT, "start", "--head", "--port", "0", "--num-cpus", "1"],
            capture_output=True, text=True, timeout=120, env=_env(tmp, **env),
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        address = re.search(r"address:\s+(\S+)", started.stdout)
        session = re.search(r"session dir:\s+(\S+)", started.stdout)
        assert address and session, started.stdout
        try:
            yield tmp, address[1]
        finally:
            procs = []
            for path in [Path(session[1]) / "head.json", *Path(session[1]).glob("nodes/*.json")]:
                with contextlib.suppress(OSError, ValueError, psutil.NoSuchProcess):
                    procs.append(psutil.Process(int(json.loads(path.read_text())["pid"])))
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.terminate()
            _, alive = psutil.wait_procs(procs, timeout=10)
            for p in alive:
                p.kill()


def run_joining(tmp: Path, address: str, **env: str) -> tuple[dict[str, Any], str]:
    """Run a driver that joins the cluster at ``address``; return its report and stderr."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(JOINING), address],
        capture_output=True, text=True, timeout=120, env=_env(tmp, **env),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), proc.stderr


def tracing_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("freight: tracing:")]


def test_a_traced_cluster_traces_the_tasks_of_a_driver_without_settings(
    receiver: OtlpReceiver,
) -> None:
    with started_cluster(**otlp_env(receiver, OTEL_SERVICE_NAME="batch-cluster")) as (tmp, addr):
        out, stderr = run_joining(tmp, addr)
        assert out == {"value": 42, "driver_enabled": True}
        assert tracing_warnings(stderr) == []
        spans = receiver.wait_for(
            lambda s: s if {"submit leaf", "task leaf"} <= {x.name for x in s} else None,
            timeout=60,
            what="the driver's and the worker's spans",
        )
    submit, task = named(spans, "submit leaf"), named(spans, "task leaf")
    assert task.trace_id == submit.trace_id
    # OTEL_SERVICE_NAME names the cluster's processes; the component is kept beside it.
    assert task.resource["service.name"] == "batch-cluster"
    assert task.resource["freight.component"] == "worker"
    # The driver's name is its own (it did not set one): the default.
    assert submit.resource["service.name"] == "freight-driver"
    assert submit.resource["freight.component"] == "driver"


def test_a_driver_that_traces_on_an_untraced_cluster_is_told(receiver: OtlpReceiver) -> None:
    with started_cluster() as (tmp, addr):
        out, stderr = run_joining(tmp, addr, **otlp_env(receiver))
        assert out == {"value": 42, "driver_enabled": True}
        (warning,) = tracing_warnings(stderr)
        assert f"this driver exports spans to {receiver.endpoint}" in warning
        assert "has tracing off" in warning and "`freight start`" in warning
        spans = receiver.wait_for(
            lambda s: s if "submit leaf" in {x.name for x in s} else None,
            timeout=60,
            what="the driver's spans",
        )
    # Only the driver traces; the warning said so.
    assert {s.resource["freight.component"] for s in spans} == {"driver"}


def test_a_driver_with_another_exporter_than_its_cluster_is_told(
    receiver: OtlpReceiver,
) -> None:
    with (
        OtlpReceiver() as other,
        started_cluster(**otlp_env(receiver)) as (tmp, addr),
    ):
        out, stderr = run_joining(tmp, addr, **otlp_env(other))
        assert out == {"value": 42, "driver_enabled": True}
        (warning,) = tracing_warnings(stderr)
        assert f"this driver exports spans to {other.endpoint}" in warning
        assert f"exports spans to {receiver.endpoint}" in warning
        assert "unset" in warning
        # Tracing switched off on purpose in a driver: told as well.
        _, stderr = run_joining(tmp, addr, FREIGHT_TRACING="off")
        (off,) = tracing_warnings(stderr)
        assert "this driver has tracing off" in off and "start no trace" in off


# -- the switch, without a cluster ------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "instrumentation", "environ", "on"),
    [
        ("auto", True, {}, False),
        ("auto", True, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4317"}, True),
        ("auto", True, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:4317"}, True),
        ("auto", True, {"OTEL_TRACES_EXPORTER": "console,otlp"}, True),
        ("auto", True, {"OTEL_TRACES_EXPORTER": "none"}, False),
        ("on", True, {}, True),
        ("off", True, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4317"}, False),
        ("on", False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4317"}, False),
        ("on", True, {"OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_when_tracing_is_on(mode: str, instrumentation: bool, environ: dict, on: bool) -> None:
    assert tracing.wanted(mode, instrumentation, environ) is on


def test_bad_mode_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="FREIGHT_TRACING='maybe' is not one of auto, on, off"):
        tracing.wanted("maybe", True, {})
