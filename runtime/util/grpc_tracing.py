"""The runtime's tracing glue: per-process setup, and spans around control-plane gRPC calls.

Clients wrap a call in :func:`traced_call` (a ``client`` span, its W3C context sent as gRPC
metadata ``traceparent``); servers install :func:`server_interceptors`, which continue that
trace in a ``server`` span. Both act only inside a trace that is already going on: heartbeats
and polling loops do not each start a trace of their own.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from freight.config import settings
from freight.observe import tracing
from freight.observe.tracing_env import TracingConfig, current, reconcile

if TYPE_CHECKING:
    import grpc
    from grpc import aio

_T = TypeVar("_T")
_CONTEXT_KEYS = ("traceparent", "tracestate")
# Where the head publishes its tracing configuration in the control store's KV.
KV_NAMESPACE, KV_KEY = "freight", "tracing"


def setup(
    component: str,
    session_dir: str,
    node_id: str = "",
    worker_id: str = "",
    cluster: str | None = None,
    background: bool = False,
    mode: str | None = None,
) -> bool:
    """Switch tracing on for this process if the settings ask for it (see FREIGHT_TRACING).

    The cluster name comes from ``head.json`` in the session directory unless given. With
    ``background`` the SDK is loaded on a thread (about 0.2 s, off a server's start-up path);
    spans asked for meanwhile are not made. Returns whether tracing is (being switched) on.
    """
    if not settings.instrumentation:
        return False
    mode = settings.tracing if mode is None else mode
    if background:
        try:
            if not tracing.wanted(mode):
                return False
        except ValueError:
            pass  # configure() below reports it
        threading.Thread(
            target=setup,
            args=(component, session_dir, node_id, worker_id, cluster, False, mode),
            name="freight-tracing-setup",
            daemon=True,
        ).start()
        return True
    if cluster is None:
        cluster = cluster_name(session_dir)
    return tracing.configure(
        component,
        mode=mode,
        instrumentation=settings.instrumentation,
        node_id=node_id,
        cluster=cluster,
        worker_id=worker_id,
    )


def cluster_name(session_dir: str) -> str:
    """The cluster's name: FREIGHT_CLUSTER_NAME, else ``head.json`` of the session, else ""."""
    if settings.cluster_name:
        return settings.cluster_name
    try:
        with open(os.path.join(session_dir, "head.json"), encoding="utf-8") as f:
            return str(json.load(f).get("cluster_name", ""))
    except (OSError, ValueError, AttributeError):
        return ""  # the cluster name is a resource attribute; tracing works without it


def published_config() -> bytes:
    """This process's tracing configuration as the head publishes it for drivers."""
    return current(os.environ, settings.instrumentation).to_json().encode()


def setup_driver(head: Any, session_dir: str, node_id: str, worker_id: str, joined: bool) -> bool:
    """Switch tracing on for a driver: its own settings, or (with none) those of the cluster it
    ``joined``, whose head publishes them; a driver whose own settings differ from the
    cluster's is told so in one line on stderr (decision 0057)."""
    mode = None
    if joined and settings.instrumentation:
        try:
            reply = head.call("KVGet", _kv_get_request(), timeout=5)
            published = TracingConfig.from_json(reply.value) if reply.found else None
        except Exception:  # a head that publishes none, or does not answer: own settings
            published = None
        if published is not None:
            got = reconcile(os.environ, published, cluster_name(session_dir))
            if got.warning:
                print(got.warning, file=sys.stderr)
            for key, value in got.adopt.items():
                os.environ.setdefault(key, value)
            mode = got.adopt.get("FREIGHT_TRACING")
    return setup("driver", session_dir, node_id, worker_id, mode=mode)


def _kv_get_request() -> Any:
    from freight.protocol.generated import freight_pb2 as pb

    return pb.KVGetRequest(ns=KV_NAMESPACE, key=KV_KEY)


def traced_call(method: str, call: Callable[[list[tuple[str, str]] | None], _T]) -> _T:
    """Run ``call(metadata)`` in a client span named ``method`` when a trace is going on."""
    active = tracing.start(
        method,
        kind="client",
        attributes={"rpc.system": "grpc", "rpc.method": method},
        only_in_trace=True,
    )
    if active is None:
        return call(None)
    metadata = list(tracing.inject(active).items())
    try:
        result = call(metadata)
    except BaseException as e:
        tracing.finish(active, e)
        raise
    tracing.finish(active)
    return result


@cache
def _interceptor_class() -> type[aio.ServerInterceptor]:
    # Built on first use: setup() and traced_call() serve processes that never load gRPC
    # (workers), and only a server that traces needs this class.
    import grpc
    from grpc import aio

    class TracingServerInterceptor(aio.ServerInterceptor):
        """Continues a caller's trace in a ``server`` span around each unary RPC carrying one."""

        async def intercept_service(
            self,
            continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            details: grpc.HandlerCallDetails,
        ) -> grpc.RpcMethodHandler:
            handler = await continuation(details)
            if handler is None or handler.unary_unary is None or not tracing.ENABLED:
                return handler
            carrier = {
                k: v
                for k, v in details.invocation_metadata or ()
                if k in _CONTEXT_KEYS and isinstance(v, str)
            }
            if not carrier:
                return handler
            behavior = handler.unary_unary
            name = details.method.lstrip("/")

            async def traced(request: Any, context: aio.ServicerContext) -> Any:
                active = tracing.start(
                    name,
                    carrier=carrier,
                    kind="server",
                    attributes={"rpc.system": "grpc", "rpc.method": name},
                )
                try:
                    reply = await behavior(request, context)
                except BaseException as e:
                    tracing.finish(active, e)
                    raise
                tracing.finish(active)
                return reply

            return grpc.unary_unary_rpc_method_handler(
                traced,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

    return TracingServerInterceptor


def server_interceptors() -> list[aio.ServerInterceptor]:
    """The interceptors a gRPC server adds for tracing (none when tracing is off)."""
    try:
        wanted = settings.instrumentation and tracing.wanted(settings.tracing)
    except ValueError:
        wanted = False
    return [_interceptor_class()()] if wanted else []


__all__ = ["server_interceptors", "setup", "traced_call"]
