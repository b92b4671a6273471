"""Cluster-token authentication for the gRPC control plane.

Every call carries the metadata ``x-freight-token: <token>``. Servers install
:class:`TokenAuthInterceptor`, which refuses a call whose token is wrong or missing before the
request is decoded or any handler runs. Clients build their channels with :func:`aio_channel` or
:func:`sync_channel`, which attach the token to every call, over TLS when ``FREIGHT_USE_TLS`` is
on (:mod:`freight.util.grpc_tls`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import grpc
from grpc import aio
from loguru import logger

from freight.observe.recorder import RECORDER
from freight.util.grpc_health import UNAUTHENTICATED_METHODS
from freight.util.grpc_tls import channel_credentials, channel_options
from freight.util.tokens import TOKEN_FILE, create_token, read_token, readonly_token

TOKEN_METADATA_KEY = "x-freight-token"
# An action's caller and reason (binary: a reason may be any text), for its cluster event.
BY_METADATA_KEY = "x-freight-by"
REASON_METADATA_KEY = "x-freight-reason-bin"
MAX_CALLER_TEXT = 1000
ADMIN = "admin"
READ_ONLY = "read-only"

# Control-plane messages can carry pickled creation specs and object chunks.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A restarted head is back in well under a second: reconnect soon after it (gRPC's
    # defaults wait 1 s, then up to 120 s), with backoff still, capped at 5 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5000),
    # gRPC dials through `grpc_proxy` / `https_proxy` / `http_proxy` when one is set. A freight
    # channel always goes to a process of its own cluster, which a proxy meant for the user's
    # outbound traffic cannot (and must not) reach; user code keeps the variables for its own use.
    ("grpc.enable_http_proxy", 0),
]

_REFUSAL_MESSAGE = (
    "freight: the cluster token is wrong or missing. Use the token of the cluster you connect to: "
    "set FREIGHT_TOKEN, or read the 'token' file in the cluster's session directory."
)

__all__ = [
    "ADMIN",
    "CHANNEL_OPTIONS",
    "READ_ONLY",
    "READ_ONLY_METHODS",
    "TOKEN_FILE",
    "TOKEN_METADATA_KEY",
    "Caller",
    "TokenAuthInterceptor",
    "action_metadata",
    "aio_channel",
    "caller",
    "create_token",
    "read_token",
    "sync_channel",
]


# ---- server side -------------------------------------------------------------


def _peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5555`` -> ``ipv4:127.0.0.1`` (one log line per host, not per port)."""
    head, sep, _port = peer.rpartition(":")
    return head if sep and head else peer


# Calls the read-only token may make: reading state, watching it, reading jobs and their logs,
# the key/value reads service discovery uses, node figures, a node's logs and its processes'
# reference tables (ids, sizes and reasons; never object data). Every other call changes the cluster
# (or runs code, or reads object data) and needs the admin token.
READ_ONLY_METHODS = frozenset(
    {
        "/freight.v1.StateService/List",
        "/freight.v1.StateService/Get",
        "/freight.v1.StateService/Summary",
        "/freight.v1.StateService/Watch",
        "/freight.v1.StateService/Schema",
        "/freight.v1.HeadService/ClusterStatus",
        "/freight.v1.HeadService/ListNodes",
        "/freight.v1.HeadService/ListJobs",
        "/freight.v1.HeadService/GetJob",
        "/freight.v1.HeadService/JobLogs",
        "/freight.v1.HeadService/ListActors",
        "/freight.v1.HeadService/GetActor",
        "/freight.v1.HeadService/GetPlacementGroup",
        "/freight.v1.HeadService/ListPlacementGroups",
        "/freight.v1.HeadService/KVGet",
        "/freight.v1.HeadService/ListRpcFaults",  # the RPC faults in force (chaos probes)
        "/freight.v1.NodeAgentService/GetNodeStats",
        "/freight.v1.NodeAgentService/ListObjects",
        "/freight.v1.NodeAgentService/ListWorkers",
        "/freight.v1.NodeAgentService/ReadLogs",
        "/freight.v1.NodeAgentService/Memory",
    }
)
_READ_ONLY_REFUSAL = (
    "freight: {method} changes the cluster, and this is the cluster's read-only token (it reads "
    "state, events, jobs and logs). Use the admin token: the 'token' file of the session "
    "folder, not 'token.readonly'."
)


def _role_of(metadata: Any, admin: bytes, readonly: bytes) -> str:
    for key, value in metadata or ():
        if key == TOKEN_METADATA_KEY:
            given = value.encode() if isinstance(value, str) else bytes(value)
            if hmac.compare_digest(given, admin):
                return ADMIN
            if hmac.compare_digest(given, readonly):
                return READ_ONLY
            return ""
    return ""


class Caller(NamedTuple):
    """Who made a call that acts on the cluster, as its cluster event records it."""

    role: str  # "admin" or "read-only": the role of the token the call carried
    by: str  # what the client says it is: "freight cancel (alice@host1)", "job 01000000"
    reason: str  # the reason the client gave ("" when none)


def caller(metadata: Any, token: str) -> Caller:
    """The :class:`Caller` of a call that the interceptor let through, from its metadata."""
    role = _role_of(metadata, token.encode(), readonly_token(token).encode())
    by = reason = ""
    for key, value in metadata or ():
        if key == BY_METADATA_KEY:
            by = value if isinstance(value, str) else bytes(value).decode(errors="replace")
        elif key == REASON_METADATA_KEY:
            raw = value.encode() if isinstance(value, str) else bytes(value)
            reason = raw.decode(errors="replace")
    return Caller(role, by[:MAX_CALLER_TEXT], reason[:MAX_CALLER_TEXT])


def action_metadata(by: str, reason: str) -> list[tuple[str, str | bytes]]:
    """The metadata a client sends with an action: who it is and why (``--reason``)."""
    md: list[tuple[str, str | bytes]] = [(BY_METADATA_KEY, by.encode("ascii", "replace").decode())]
    if reason:
        md.append((REASON_METADATA_KEY, reason.encode()))
    return md


class TokenAuthInterceptor(aio.ServerInterceptor):
    """Refuses calls whose ``x-freight-token`` metadata is neither ``token`` (the admin token)
    nor, for the calls of :data:`READ_ONLY_METHODS`, the cluster's read-only token
    (:func:`freight.util.tokens.readonly_token`).

    The check runs before the request is deserialized. A wrong or missing token ends the call
    with ``UNAUTHENTICATED``, the read-only token on any other call with ``PERMISSION_DENIED``;
    each refusing peer is logged once, and :attr:`refused` counts them all.
    The standard health check (``grpc.health.v1.Health/Check``) needs no token: Kubernetes
    probes cannot send one, and it answers only SERVING or NOT_SERVING
    (docs/decisions/0058-standard-grpc-health.md).
    """

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("TokenAuthInterceptor needs a non-empty token")
        self._token = token.encode()
        self._readonly = readonly_token(token).encode()
        self.refused = 0
        self._logged_peers: set[str] = set()

    def _role(self, metadata: Any) -> str:
        """``admin``, ``read-only`` or "" (refused) for the token the call carries."""
        return _role_of(metadata, self._token, self._readonly)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method in UNAUTHENTICATED_METHODS:
            return await continuation(handler_call_details)
        role = self._role(handler_call_details.invocation_metadata)
        if role == ADMIN or (role == READ_ONLY and method in READ_ONLY_METHODS):
            return await continuation(handler_call_details)
        if role == READ_ONLY:
            message = _READ_ONLY_REFUSAL.format(method=method.rpartition("/")[2])
            return self._refusal(method, grpc.StatusCode.PERMISSION_DENIED, message)
        return self._refusal(method, grpc.StatusCode.UNAUTHENTICATED, _REFUSAL_MESSAGE)

    def _refusal(self, method: str, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
        async def refuse(_request: Any, context: aio.ServicerContext) -> None:
            self.refused += 1
            RECORDER.inc("freight_auth_refused_total", ("grpc",))
            host = _peer_host(context.peer() or "unknown")
            if host not in self._logged_peers:
                self._logged_peers.add(host)
                logger.warning(
                    "refused a gRPC call: {}",
                    "read-only token"
                    if code == grpc.StatusCode.PERMISSION_DENIED
                    else "wrong or missing token",
                    peer=host,
                    method=method,
                )
            await context.abort(code, message)

        # No request deserializer: the refused payload is never decoded. A unary handler also
        # ends a streaming call with the same status.
        return grpc.unary_unary_rpc_method_handler(refuse)


# ---- client side -------------------------------------------------------------


def _with_token(metadata: Any, token: str) -> list[tuple[str, str | bytes]]:
    items = [(k, v) for k, v in (metadata or ()) if k != TOKEN_METADATA_KEY]
    items.append((TOKEN_METADATA_KEY, token))
    return items


class _AioToken:
    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, d: aio.ClientCallDetails) -> aio.ClientCallDetails:
        return aio.ClientCallDetails(
            d.method,
            d.timeout,
            aio.Metadata(*_with_token(d.metadata, self._token)),
            d.credentials,
            d.wait_for_ready,
        )


# One class per call type: grpc.aio files an interceptor under the first of the four kinds it
# is an instance of, so a single class for all four would leave streaming calls without token.
class _AioUnaryUnary(_AioToken, aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[override]
        return await continuation(self._details(client_call_details), request)


class _AioUnaryStream(_AioToken, aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[override]
        return await continuation(self._details(client_call_details), request)


class _AioStreamUnary(_AioToken, aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return await continuation(self._details(client_call_details), request_iterator)


class _AioStreamStream(_AioToken, aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return await continuation(self._details(client_call_details), request_iterator)


class _SyncCallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _SyncTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        details = _SyncCallDetails(
            d.method,
            d.timeout,
            _with_token(d.metadata, self._token),
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )
        return details  # type: ignore[return-value]

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[override]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[override]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return continuation(self._details(client_call_details), request_iterator)


def aio_channel(address: str, token: str) -> aio.Channel:
    """An asyncio channel to ``address`` that sends ``token`` with every call (over TLS when
    ``FREIGHT_USE_TLS`` is on).

    Close it with ``await channel.close()``.
    """
    kinds = (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)
    interceptors = [kind(token) for kind in kinds]
    credentials = channel_credentials()
    options = channel_options(CHANNEL_OPTIONS)
    if credentials is None:
        return aio.insecure_channel(address, options=options, interceptors=interceptors)
    return aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


def sync_channel(address: str, token: str) -> grpc.Channel:
    """A blocking channel to ``address`` that sends ``token`` with every call (over TLS when
    ``FREIGHT_USE_TLS`` is on).

    Close it with ``channel.close()``.
    """
    credentials = channel_credentials()
    options = channel_options(CHANNEL_OPTIONS)
    if credentials is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials, options=options)
    return grpc.intercept_channel(channel, _SyncTokenInterceptor(token))
