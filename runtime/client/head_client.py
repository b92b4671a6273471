"""A small synchronous client of the head's gRPC ``HeadService``, for drivers, workers and CLI."""

from __future__ import annotations

from typing import Any

import grpc

from freight.client import access
from freight.config import settings
from freight.observe import tracing
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util.grpc_auth import sync_channel
from freight.util.grpc_tracing import traced_call

_SERVICE = pb.DESCRIPTOR.services_by_name["HeadService"].full_name


class HeadUnavailable(access.ClusterUnreachable):
    """The head could not be reached (it is down, restarting, or went away during the call)."""


class HeadClient:
    def __init__(self, address: str, token: str, source: str = "") -> None:
        self.address = address
        # How the address was found ("FREIGHT_ADDRESS"...), named in messages (access.Target).
        self.target: access.Target | str = (
            access.Target(address, "", "", source) if source else address
        )
        self.channel = sync_channel(address, token)
        self.stub = pb_grpc.HeadServiceStub(self.channel)

    def call(
        self,
        method: str,
        request: Any,
        timeout: float | None = 30.0,
        wait: bool = False,
        metadata: list[tuple[str, str | bytes]] | None = None,
    ) -> Any:
        """Call one HeadService method; turn transport failures into ConnectionError.

        ``wait``: while the head is unreachable, wait for it (up to ``timeout``) instead of
        failing at once (gRPC's wait_for_ready). ``metadata``: sent along (an action's caller
        and reason, :func:`freight.util.grpc_auth.action_metadata`)."""
        extra = list(metadata or ())
        if tracing.ENABLED:  # a client span, when the call is part of a trace
            return traced_call(
                f"{_SERVICE}/{method}",
                lambda md: self._call(
                    method, request, timeout, [*(md or ()), *extra] or None, wait
                ),
            )
        return self._call(method, request, timeout, extra or None, wait)

    def _call(
        self, method: str, request: Any, timeout: float | None, metadata: Any, wait: bool
    ) -> Any:
        try:
            return getattr(self.stub, method)(
                request, timeout=timeout, metadata=metadata, wait_for_ready=wait
            )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise HeadUnavailable(str(access.rpc_error(exc, self.target))) from None
            if code in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ):
                raise access.rpc_error(exc, self.target) from None
            raise  # the caller's to handle (NOT_FOUND, INVALID_ARGUMENT, ...)

    def call_through_restarts(self, method: str, request: Any, timeout: float | None = 30.0) -> Any:
        """Call a method that is safe to repeat, riding out a head restart: wait for the head
        (through the channel's reconnection backoff) and call again when the call broke off
        because the head went away. ConnectionError once the head has been unreachable for
        ``FREIGHT_HEAD_RECONNECT_TIMEOUT_S`` in a row."""
        while True:
            try:
                return self.call(method, request, timeout)
            except HeadUnavailable:
                pass  # down, or it went away during the call: wait for it to be back
            wait_s = settings.head_reconnect_timeout_s
            try:
                self.call("ClusterStatus", pb.ClusterStatusRequest(), wait_s, wait=True)
            except ConnectionError:
                raise ConnectionError(
                    f"the freight head at {self.address} has not been reachable for {wait_s:g} s "
                    "(FREIGHT_HEAD_RECONNECT_TIMEOUT_S); is it running?"
                ) from None

    def ping(self, timeout: float = 5.0) -> pb.ClusterStatusReply:
        return self.call("ClusterStatus", pb.ClusterStatusRequest(), timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def resources_pb(amounts: dict[str, float]) -> pb.ResourceMap:
    rm = pb.ResourceMap()
    rm.amounts.update({k: float(v) for k, v in amounts.items()})
    return rm


pb_module = pb
