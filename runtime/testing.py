"""Helpers for testing programs that use freight (and freight itself)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def wait_for_condition(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.02,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that value.

    Raises ``TimeoutError`` naming ``what`` when ``timeout`` seconds pass first. This is how
    tests wait for another process: never with a bare sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # poll interval; the deadline above bounds the wait


@contextlib.contextmanager
def short_temp_dir() -> Iterator[Path]:
    """A fresh folder for FREIGHT_TEMP_DIR, short enough for the Unix socket paths below it.

    Socket paths are limited to 107 bytes, which pytest's ``tmp_path`` easily exceeds.
    """
    path = tempfile.mkdtemp(prefix="fr-", dir="/tmp")
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as an :class:`OtlpReceiver` received it (ids in hex, as W3C writes them)."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: str  # INTERNAL, SERVER, CLIENT, PRODUCER or CONSUMER
    start_time_ns: int
    end_time_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]  # attributes of the process that sent it (service.name, ...)
    status: str  # UNSET, OK or ERROR
    status_message: str
    events: tuple[tuple[str, dict[str, Any]], ...]


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


class OtlpReceiver:
    """A real OTLP/gRPC trace receiver on 127.0.0.1 (a free port) that keeps what it is sent.

    Point a program at it with ``OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint`` and
    ``OTEL_EXPORTER_OTLP_INSECURE=true``; read :attr:`spans`, or wait for some with
    :meth:`wait_for`. Built on opentelemetry-proto's ``TraceService`` definitions, so the
    exporter talks to it exactly as it talks to a collector. Use it as a context manager.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests = 0  # Export calls received
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        """``http://HOST:PORT``, the value for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far (a copy)."""
        with self._lock:
            return list(self._spans)

    def start(self) -> OtlpReceiver:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        receiver = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._collect(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self._server)
        self.port = self._server.add_insecure_port(f"{self.host}:0")
        if not self.port:
            raise OSError(f"OtlpReceiver: could not listen on {self.host}")
        self._server.start()
        return self

    def _collect(self, request: Any) -> None:
        from opentelemetry.proto.trace.v1 import trace_pb2

        got = []
        for rs in request.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    got.append(
                        ReceivedSpan(
                            trace_id=sp.trace_id.hex(),
                            span_id=sp.span_id.hex(),
                            parent_span_id=sp.parent_span_id.hex(),
                            name=sp.name,
                            kind=trace_pb2.Span.SpanKind.Name(sp.kind).removeprefix("SPAN_KIND_"),
                            start_time_ns=sp.start_time_unix_nano,
                            end_time_ns=sp.end_time_unix_nano,
                            attributes=_attrs(sp.attributes),
                            resource=resource,
                            status=trace_pb2.Status.StatusCode.Name(sp.status.code).removeprefix(
                                "STATUS_CODE_"
                            ),
                            status_message=sp.status.message,
                            events=tuple((e.name, _attrs(e.attributes)) for e in sp.events),
                        )
                    )
        with self._lock:
            self.requests += 1
            self._spans.extend(got)

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedSpan]], Any],
        timeout: float = 30.0,
        what: str = "spans",
    ) -> Any:
        """Wait until ``predicate(spans)`` is truthy and return its value (TimeoutError if not)."""
        return wait_for_condition(lambda: predicate(self.spans), timeout, what)

    def clear(self) -> None:
        """Forget the spans received so far."""
        with self._lock:
            self._spans.clear()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["OtlpReceiver", "ReceivedSpan", "short_temp_dir", "wait_for_condition"]
