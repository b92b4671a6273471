"""Trace spans: cheap helpers for the code that emits them, and the OpenTelemetry SDK setup.

As in opentelemetry-python, the code that emits spans (the submitter, the executor, the gRPC
glue) only calls the small helpers below; :func:`configure` is the SDK half and runs once per
process. Until it has switched tracing on, :data:`ENABLED` is ``False``, no OpenTelemetry module is
even imported, and every caller checks that one boolean before anything else, so the task hot
path costs nothing.

When on, spans go through a bounded :class:`BatchSpanProcessor` to the OTLP gRPC exporter, both
configured by the standard ``OTEL_EXPORTER_OTLP_*`` / ``OTEL_BSP_*`` variables; the sampler comes
from ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` and always follows the parent, so one
trace is sampled the same way in every process. Spans that cannot be queued or exported are
counted in ``freight_telemetry_dropped_total{kind="spans"}``; exporter trouble is logged once.
The W3C context travels as a ``{"traceparent": ...}`` dict (:func:`inject` / ``carrier=``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from loguru import logger

from .recorder import RECORDER

ENABLED = False
"""True once :func:`configure` has set up a tracer provider in this process."""

_tracer: Any = None
_provider: Any = None
_unsettled: Any = None  # the spans ended and not yet exported or counted (_span_export)
_trace: Any = None  # the opentelemetry.trace module
_context: Any = None  # the opentelemetry.context module
_propagator: Any = None
_kinds: dict[str, Any] = {}
_error: Any = None  # StatusCode.ERROR
_status: Any = None  # the Status class
_process_attrs: dict[str, str] = {}
_export_failed = False
_warned = False
_lock = threading.Lock()

ATTEMPT_KEY = "freight-attempt"  # a retry's attempt number, next to traceparent in a carrier
FLUSH_TIMEOUT_S = 2.0
FAILING_FLUSH_TIMEOUT_S = 0.2  # the exporter already failed: do not hold an exiting process up
_OFF = ("off", "0", "false", "no")
_ON = ("on", "1", "true", "yes")


# -- switching on ------------------------------------------------------------------------------


def wanted(mode: str, instrumentation: bool = True, environ: Any = None) -> bool:
    """Whether tracing should be on, from ``FREIGHT_TRACING`` and the OTel environment.

    ``mode`` is ``auto`` (on when an OTLP endpoint or ``OTEL_TRACES_EXPORTER=otlp`` is set),
    ``on`` or ``off``; ``instrumentation=False`` (``FREIGHT_INSTRUMENTATION=0``) and
    ``OTEL_SDK_DISABLED=true`` turn it off. Raises ValueError for any other mode.
    """
    env = os.environ if environ is None else environ
    mode = (mode or "auto").strip().lower()
    if mode not in ("auto", *_OFF, *_ON):
        raise ValueError(
            f"FREIGHT_TRACING={mode!r} is not one of auto, on, off; tracing stays off. "
            "Set FREIGHT_TRACING=on (or set OTEL_EXPORTER_OTLP_ENDPOINT) to export spans."
        )
    if not instrumentation or mode in _OFF:
        return False
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if mode in _ON:
        return True
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or "otlp" in exporters
    )


def configure(
    component: str,
    *,
    mode: str = "auto",
    instrumentation: bool = True,
    node_id: str = "",
    cluster: str = "",
    worker_id: str = "",
) -> bool:
    """Set up tracing for this process (``component``: driver, worker, head or agent).

    Returns whether tracing is on. Does nothing when it is already on or not wanted; a bad
    setting or an SDK that cannot be set up is logged once and leaves tracing off.
    """
    global ENABLED
    with _lock:
        if ENABLED:
            return True
        try:
            if not wanted(mode, instrumentation):
                return False
            _setup_sdk(component, node_id, cluster, worker_id)
        except Exception as e:
            logger.warning("freight: tracing is off: {}", e)
            return False
        ENABLED = True
    atexit.register(shutdown)
    return True


def _setup_sdk(component: str, node_id: str, cluster: str, worker_id: str) -> None:
    global _tracer, _provider, _trace, _context, _propagator, _error, _status, _process_attrs
    global _unsettled
    from opentelemetry import context, trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from ._span_export import CountingExporter, CountingProcessor, OnceHandler, Unsettled

    _quiet_sdk_logging(OnceHandler(_warn_once))
    pid = os.getpid()
    attributes: dict[str, Any] = {
        "service.name": f"freight-{component}",
        "service.instance.id": f"{component}-{worker_id or uuid.uuid4().hex[:12]}-{pid}",
        "process.pid": pid,
        "freight.component": component,
        "freight.node_id": node_id,
        "freight.cluster": cluster,
    }
    if os.environ.get("OTEL_SERVICE_NAME", "").strip() or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        # The user named the service: Resource.create reads their name from the environment
        # (the component stays in freight.component).
        del attributes["service.name"]
    resource = Resource.create(attributes)
    # shutdown_on_exit=False: the SDK's own exit hook may wait for a dead collector for tens
    # of seconds; ours (shutdown) flushes with a short deadline instead.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    if not isinstance(provider.sampler, ParentBased):
        # A root sampler from OTEL_TRACES_SAMPLER decides once per trace; every later span in
        # any process follows its parent, so a trace is never half sampled.
        provider.sampler = ParentBased(provider.sampler)
    unsettled = Unsettled(dropped)
    exporter = CountingExporter(OTLPSpanExporter(), unsettled, _export_failing)
    provider.add_span_processor(CountingProcessor(exporter, unsettled))
    if type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider":
        # Nobody set one: spans that user code makes inside a task then join freight's trace.
        trace.set_tracer_provider(provider)
    _provider, _unsettled = provider, unsettled
    _tracer = provider.get_tracer("freight")
    _trace, _context = trace, context
    _propagator = TraceContextTextMapPropagator()
    _kinds.update(
        internal=trace.SpanKind.INTERNAL,
        client=trace.SpanKind.CLIENT,
        server=trace.SpanKind.SERVER,
        producer=trace.SpanKind.PRODUCER,
        consumer=trace.SpanKind.CONSUMER,
    )
    _error, _status = trace.StatusCode.ERROR, trace.Status
    _process_attrs = {"freight.node_id": node_id}
    if worker_id:
        _process_attrs["freight.worker_id"] = worker_id


# The loggers of the exporter and of the batch processor: a collector that is down makes them
# log a warning per retry and per dropped span.
_NOISY_LOGGERS = ("opentelemetry.exporter.otlp.proto.grpc", "opentelemetry.sdk._shared_internal")


def _quiet_sdk_logging(handler: logging.Handler) -> None:
    """Show the first warning of the exporter and batch processor once, via loguru.

    They log through ``logging``; without this, a collector that is down prints a warning per
    retry on the stderr of the user's program (Python's last-resort handler).
    """
    for name in _NOISY_LOGGERS:
        log = logging.getLogger(name)
        if not any(type(h) is type(handler) for h in log.handlers):
            log.addHandler(handler)
        log.propagate = False


def _warn_once(message: str) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    logger.warning(
        "freight: tracing problem (shown once; spans that cannot be sent are counted in "
        "freight_telemetry_dropped_total): {}",
        message,
    )


def _export_failing(message: str) -> None:
    global _export_failed
    _export_failed = True
    if message:
        _warn_once(message)


def dropped(n: int) -> None:
    """Count ``n`` spans that were dropped (queue full or export failed)."""
    RECORDER.inc("freight_telemetry_dropped_total", ("spans",), n)


def flush(timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
    """Export the spans queued so far; give up after ``timeout_s``. True when all were sent."""
    provider = _provider
    if provider is None:
        return True
    if _export_failed:
        timeout_s = min(timeout_s, FAILING_FLUSH_TIMEOUT_S)
    done = threading.Event()

    def run() -> None:
        try:
            provider.force_flush()
        except Exception:
            pass  # already logged by the processor; the spans are lost, the process is not
        finally:
            done.set()

    # The exporter's own deadline can be long (OTEL_EXPORTER_OTLP_TIMEOUT): wait in a thread.
    threading.Thread(target=run, name="freight-trace-flush", daemon=True).start()
    return done.wait(timeout_s)


def settle(timeout_s: float = FLUSH_TIMEOUT_S) -> None:
    """Export the spans ended so far, waiting at most ``timeout_s``; count those still unsent
    then as dropped at once. A driver does this before its last telemetry report, so the report
    accounts for every span it made: the exporter's retries, or a flush that outlasts the wait,
    cannot move a drop past it (decision 0079)."""
    if not ENABLED or flush(timeout_s):
        return
    unsettled = _unsettled
    if unsettled is not None:
        unsettled.write_off()


def shutdown(timeout_s: float = FLUSH_TIMEOUT_S) -> None:
    """Flush (bounded) at process exit; spans ended later are still queued but may be lost."""
    if ENABLED:
        flush(timeout_s)


# -- spans -------------------------------------------------------------------------------------


class Active:
    """A started span and, when it was made current, the token to restore the context."""

    __slots__ = ("ended", "span", "token")

    def __init__(self, span: Any, token: Any) -> None:
        self.span = span
        self.token = token
        self.ended = False


def start(
    name: str,
    *,
    carrier: dict[str, str] | None = None,
    attributes: dict[str, Any] | None = None,
    kind: str = "internal",
    start_time: int | None = None,
    current: bool = True,
    only_in_trace: bool = False,
) -> Active | None:
    """Start a span (a child of ``carrier``'s context, else of the current span).

    ``current`` makes it the current span until :func:`finish`. With ``only_in_trace`` no span
    is made unless a sampled trace is going on (no stray root spans for background calls).
    Returns None when tracing is off.
    """
    if not ENABLED:
        return None
    parent = _propagator.extract(carrier) if carrier else None
    if only_in_trace:
        span_ctx = _trace.get_current_span(parent).get_span_context()
        if not span_ctx.trace_flags.sampled:  # no trace, or one that is not recorded
            return None
    span = _tracer.start_span(
        name, context=parent, kind=_kinds[kind], attributes=attributes, start_time=start_time
    )
    token = _context.attach(_trace.set_span_in_context(span)) if current else None
    return Active(span, token)


def finish(active: Active | None, error: BaseException | None = None) -> None:
    """End a span from :func:`start`; with ``error``, mark it failed and record the exception.

    Ending it again does nothing (so ``except`` and ``finally`` may both call it).
    """
    if active is None or active.ended:
        return
    active.ended = True
    span = active.span
    if error is not None:
        fail(span, error)
    if active.token is not None:
        _context.detach(active.token)
        active.token = None
    span.end()


def fail(span: Any, error: BaseException) -> None:
    """Mark ``span`` failed (status ERROR) and record ``error`` as an exception event."""
    if span.is_recording():
        span.set_status(_status(_error, f"{type(error).__name__}: {error}"[:500]))
        span.record_exception(error)


@contextlib.contextmanager
def current(active: Active) -> Iterator[None]:
    """Make ``active``'s span the current one in this thread (e.g. a thread doing its work)."""
    token = _context.attach(_trace.set_span_in_context(active.span))
    try:
        yield
    finally:
        _context.detach(token)


def inject(active: Active | None = None) -> dict[str, str]:
    """The W3C context (``traceparent``) of ``active``, or of the current span, as a dict."""
    if not ENABLED:
        return {}
    carrier: dict[str, str] = {}
    ctx = _trace.set_span_in_context(active.span) if active is not None else None
    _propagator.inject(carrier, context=ctx)
    return carrier


def in_span(name: str, fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` inside a child span of the current one (if it is being recorded)."""
    if not ENABLED or not _trace.get_current_span().is_recording():
        return fn(*args)
    active = start(name)
    try:
        result = fn(*args)
    except BaseException as e:
        finish(active, e)
        raise
    finish(active)
    return result


def current_ids() -> tuple[str, str]:
    """Hex trace id and span id of the current span, or ``("", "")`` (for log lines)."""
    if not ENABLED:
        return "", ""
    ctx = _trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "", ""
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


# -- tasks -------------------------------------------------------------------------------------


class TaskTrace:
    """The owner's trace state of one submitted task: its submit span and schedule timing.

    The ``schedule`` span of an attempt runs from submission (or the retry) until the push to a
    worker; it is created when the attempt ends, with explicit times, so that an attempt lost with
    its worker can still be marked failed.
    """

    __slots__ = (
        "active",
        "attempt",
        "carrier",
        "name",
        "pushed_at",
        "reason",
        "recording",
        "scheduled_at",
        "trace_id",
        "worker_id",
    )

    def __init__(self, active: Active | None, name: str, carrier: dict[str, str]) -> None:
        self.active = active
        self.name = name
        self.recording = active is not None and active.span.is_recording()
        self.trace_id = (
            format(active.span.get_span_context().trace_id, "032x")
            if active is not None and self.recording
            else ""
        )
        self.carrier = carrier
        self.scheduled_at = time.time_ns()
        self.pushed_at = 0
        self.reason = ""
        self.worker_id = ""
        self.attempt = 0


def submit_begin(name: str, task_id: bytes, job_id: str, actor_id: str) -> TaskTrace:
    """Start the ``submit`` span of a task or actor call (current until :func:`submit_end`)."""
    parent = _trace.get_current_span().get_span_context()
    if parent.is_valid and not parent.trace_flags.sampled:
        # Inside a trace that was not sampled its children are not either: pass it on, cheaply.
        return TaskTrace(None, name, inject())
    attrs = {"freight.task_id": task_id.hex(), "freight.job_id": job_id}
    if actor_id:
        attrs["freight.actor_id"] = actor_id
    active = start(f"submit {name}", attributes=attrs, kind="producer", current=False)
    assert active is not None, "submit_begin is called only when tracing is on"
    if active.span.is_recording():  # current while submitting: argument fetches are children
        active.token = _context.attach(_trace.set_span_in_context(active.span))
    return TaskTrace(active, name, inject(active))


def submit_end(tt: TaskTrace) -> None:
    if tt.active is not None:
        finish(tt.active)


def pushed(tt: TaskTrace, rec: Any) -> dict[str, str]:
    """The task goes to a worker now: note it, and return the context to send with it."""
    tt.pushed_at = time.time_ns()
    if rec is not None:
        tt.worker_id = rec.worker_id
        tt.attempt = rec.attempt
    if tt.attempt:
        return {**tt.carrier, ATTEMPT_KEY: str(tt.attempt)}
    return tt.carrier


def schedule_done(tt: TaskTrace, error: BaseException | None = None) -> None:
    """An attempt ended (result, error, lost worker): record its ``schedule`` span."""
    if tt.recording and tt.active is not None:
        attrs = {
            "freight.pending_reason": tt.reason,
            "freight.worker_id": tt.worker_id,
            "freight.attempt": tt.attempt,
        }
        span = _tracer.start_span(
            f"schedule {tt.name}",
            context=_trace.set_span_in_context(tt.active.span),
            attributes=attrs,
            start_time=tt.scheduled_at,
        )
        if error is not None:
            fail(span, error)
        span.end(end_time=tt.pushed_at or None)
    tt.scheduled_at = time.time_ns()  # a retry schedules again from here
    tt.pushed_at = 0


def task_begin(
    name: str,
    carrier: dict[str, str],
    task_id: bytes,
    job_id: str,
    actor_id: str,
    span_name: str = "",
) -> Active | None:
    """On a worker: start the ``execute`` span of a task and make it current.

    It is named ``task <function>`` or ``actor <Class.method>`` unless ``span_name`` is given.
    """
    if carrier.get("traceparent", "").endswith("-00"):
        # Not sampled: make no span, but let the task's own submissions know (parent-based).
        ctx = _propagator.extract(carrier)
        return Active(_trace.get_current_span(ctx), _context.attach(ctx))
    attrs: dict[str, Any] = {**_process_attrs, "freight.job_id": job_id}
    if task_id:
        attrs["freight.task_id"] = task_id.hex()
        attrs["freight.attempt"] = int(carrier.get(ATTEMPT_KEY, 0) or 0)
    if actor_id:
        attrs["freight.actor_id"] = actor_id
    if not span_name:
        span_name = f"{'actor' if actor_id else 'task'} {name}"
    return start(span_name, carrier=carrier, attributes=attrs, kind="consumer")


def object_fetch(object_id: str, owner: str) -> Any:
    """Start an ``object fetch`` span; returns the callback that ends it when the value comes.

    Only inside a trace (None otherwise), and not made current: the value arrives on another
    thread.
    """
    active = start(
        "object fetch",
        attributes={"freight.object_id": object_id, "freight.owner": owner},
        kind="client",
        current=False,
        only_in_trace=True,
    )
    if active is None:
        return None
    span = active.span

    def arrived(value: Any) -> None:
        kind = value[0] if value else ""
        span.set_attribute(
            "freight.object_where", {"v": "inline", "s": "shared memory"}.get(kind, "error")
        )
        span.end()

    return arrived


__all__ = [
    "ENABLED",
    "Active",
    "TaskTrace",
    "configure",
    "current",
    "current_ids",
    "fail",
    "finish",
    "flush",
    "in_span",
    "inject",
    "object_fetch",
    "pushed",
    "schedule_done",
    "shutdown",
    "start",
    "submit_begin",
    "submit_end",
    "task_begin",
    "wanted",
]
