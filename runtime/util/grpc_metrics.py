"""Instruments of the asyncio servers (head and node agents): gRPC latency and event-loop lag.

- :class:`GrpcMetricsInterceptor` times every unary gRPC call the server handles and records
  ``freight_grpc_request_seconds{service, method, code}``. A request that does not decode is
  refused with INVALID_ARGUMENT and logged (counted there with that code). Install it after the token
  interceptor, so only authenticated calls (whose method names the server knows) are labelled:
  a caller cannot grow the label set by inventing method names.
- :func:`watch_loop_lag` sleeps on the loop's own timers and records how late it woke up in
  ``freight_event_loop_lag_seconds{component}``: a handler that blocks the loop shows up there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from loguru import logger

from freight.observe.recorder import RECORDER, Recorder

GRPC_SECONDS = "freight_grpc_request_seconds"
LOOP_LAG = "freight_event_loop_lag_seconds"
LAG_INTERVAL_S = 0.25


class _Malformed:
    """What a request that would not decode becomes, so the handler can refuse it, named."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as e:
            return _Malformed(e)

    return decode


def _split(method: str) -> tuple[str, str]:
    """``/freight.HeadService/Heartbeat`` -> (``freight.HeadService``, ``Heartbeat``)."""
    _, _, rest = method.partition("/")
    service, _, name = rest.partition("/")
    return service or "unknown", name or method


class GrpcMetricsInterceptor(aio.ServerInterceptor):
    """Records the latency and status code of each unary-unary call."""

    def __init__(self, recorder: Recorder = RECORDER) -> None:
        self._rec = recorder
        # method -> (the server's handler, its timed wrapper); bounded by the served methods.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # unknown method or a streaming one: not timed
        method = handler_call_details.method
        # The generated code builds one handler per method: wrap it once, not per call.
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._wrap(method, handler))
        return cached[1]

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, name = _split(method)
        behavior = handler.unary_unary
        rec = self._rec

        async def timed(request: Any, context: aio.ServicerContext) -> Any:
            start = time.perf_counter()
            code = "OK"
            try:
                if type(request) is _Malformed:
                    peer = context.peer()
                    logger.warning(
                        "refused a malformed {} request from {}: {}", name, peer, request.error
                    )
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"the {name} request could not be decoded ({request.error}); send a "
                        f"{service}.{name} request message",
                    )
                return await behavior(request, context)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except BaseException:
                code = "UNKNOWN"
                raise
            finally:
                try:
                    set_code = context.code()
                except Exception:
                    set_code = None
                if set_code is not None and hasattr(set_code, "name"):
                    code = set_code.name
                rec.observe(GRPC_SECONDS, (service, name, code), time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


async def watch_loop_lag(
    component: str, interval: float = LAG_INTERVAL_S, recorder: Recorder = RECORDER
) -> None:
    """Every ``interval`` s, record how late the loop woke this coroutine (until cancelled)."""
    loop = asyncio.get_running_loop()
    labels = (component,)
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        recorder.observe(LOOP_LAG, labels, max(0.0, loop.time() - due))
