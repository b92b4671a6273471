"""The SDK half of tracing: a batch processor and an exporter wrapper that count what they drop.

Imported only by :func:`freight.observe.tracing.configure` once tracing is on, so that a process
with tracing off never loads the OpenTelemetry SDK.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class CountingProcessor(BatchSpanProcessor):
    """The SDK's batch processor (bounded queue, never blocks), counting spans it drops.

    The SDK drops the oldest queued span when a new one arrives at a full queue and only logs
    it; ``on_dropped(n)`` makes that a metric.
    """

    def __init__(self, exporter: SpanExporter, on_dropped: Callable[[int], None]) -> None:
        super().__init__(exporter)
        self._on_dropped = on_dropped
        # The SDK keeps no public handle on its queue; without it drops go uncounted, not wrong.
        self._queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        queue = self._queue
        if (
            queue is not None
            and ctx is not None
            and ctx.trace_flags.sampled
            and queue.maxlen is not None
            and len(queue) >= queue.maxlen
        ):
            self._on_dropped(1)
        super().on_end(span)


class CountingExporter(SpanExporter):
    """Wraps the OTLP exporter: a batch it could not deliver is counted as dropped spans."""

    def __init__(
        self,
        inner: SpanExporter,
        on_dropped: Callable[[int], None],
        on_failed: Callable[[str], None],
    ) -> None:
        self.inner = inner
        self._on_dropped = on_dropped
        self._on_failed = on_failed

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as e:  # an exporter bug must not kill the export thread
            self._on_failed(f"{type(e).__name__}: {e}")
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._on_dropped(len(spans))
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
