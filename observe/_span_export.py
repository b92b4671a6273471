"""The SDK half of tracing: a batch processor and an exporter wrapper that count what they drop.

Imported only by :func:`freight.observe.tracing.configure` once tracing is on, so that a process
with tracing off never loads the OpenTelemetry SDK.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class Unsettled:
    """The spans of one process that ended and are not settled yet: neither exported nor
    counted as dropped (queued, or in an export under way).

    At shutdown a process waits a bounded time for them, then :meth:`write_off` counts the rest
    as dropped at once, so that its last telemetry report has every span it made (decision
    0079). They may still be sent after that; their outcome is then not counted again.
    """

    def __init__(self, on_dropped: Callable[[int], None]) -> None:
        self._lock = threading.Lock()
        self._on_dropped = on_dropped
        self.pending = 0
        self._written_off = 0  # of the oldest pending spans, counted already

    def ended(self) -> None:
        with self._lock:
            self.pending += 1

    def settled(self, n: int, dropped: bool) -> None:
        """``n`` of the oldest pending spans were exported, or dropped when ``dropped``."""
        with self._lock:
            forgiven = min(n, self._written_off)  # the queue is first in, first out
            self._written_off -= forgiven
            self.pending = max(0, self.pending - (n - forgiven))
        if dropped and n > forgiven:
            self._on_dropped(n - forgiven)

    def write_off(self) -> int:
        """Count every pending span as dropped now; return how many."""
        with self._lock:
            n, self.pending = self.pending, 0
            self._written_off += n
        if n:
            self._on_dropped(n)
        return n


class CountingProcessor(BatchSpanProcessor):
    """The SDK's batch processor (bounded queue, never blocks), counting spans it drops.

    The SDK drops the oldest queued span when a new one arrives at a full queue and only logs
    it; ``unsettled`` makes that a metric.
    """

    def __init__(self, exporter: SpanExporter, unsettled: Unsettled) -> None:
        super().__init__(exporter)
        self._unsettled = unsettled
        # The SDK keeps no public handle on its queue; without it drops go uncounted, not wrong.
        self._queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is not None and ctx.trace_flags.sampled:  # (the SDK queues no other span)
            queue = self._queue
            if queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen:
                self._unsettled.settled(1, dropped=True)  # the oldest queued one goes
            self._unsettled.ended()
        super().on_end(span)


class CountingExporter(SpanExporter):
    """Wraps the OTLP exporter: a batch it could not deliver is counted as dropped spans."""

    def __init__(
        self,
        inner: SpanExporter,
        unsettled: Unsettled,
        on_failed: Callable[[str], None],
    ) -> None:
        self.inner = inner
        self._unsettled = unsettled
        self._on_failed = on_failed

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as e:  # an exporter bug must not kill the export thread
            self._on_failed(f"{type(e).__name__}: {e}")
            result = SpanExportResult.FAILURE
        failed = result is not SpanExportResult.SUCCESS
        self._unsettled.settled(len(spans), dropped=failed)
        if failed:
            self._on_failed("")
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class OnceHandler(logging.Handler):
    """Hands the SDK's warnings to ``report`` (which shows the first one only)."""

    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._report(record.getMessage())
        except Exception:
            pass  # a logging problem must not become an export problem
