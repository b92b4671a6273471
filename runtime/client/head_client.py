"""A small synchronous client of the head's gRPC ``HeadService``, for drivers, workers and CLI."""

from __future__ import annotations

from typing import Any

import grpc

from freight.observe import tracing
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util.grpc_auth import sync_channel
from freight.util.grpc_tracing import traced_call

_SERVICE = pb.DESCRIPTOR.services_by_name["HeadService"].full_name


class HeadClient:
    def __init__(self, address: str, token: str) -> None:
        self.address = address
        self.channel = sync_channel(address, token)
        self.stub = pb_grpc.HeadServiceStub(self.channel)

    def call(self, method: str, request: Any, timeout: float | None = 30.0) -> Any:
        """Call one HeadService method; turn transport failures into ConnectionError."""
        if tracing.ENABLED:  # a client span, when the call is part of a trace
            return traced_call(
                f"{_SERVICE}/{method}", lambda md: self._call(method, request, timeout, md)
            )
        return self._call(method, request, timeout, None)

    def _call(self, method: str, request: Any, timeout: float | None, metadata: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise PermissionError(exc.details()) from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ConnectionError(
                    f"the freight head at {self.address} is not reachable ({code.name}): "
                    f"{exc.details()}"
                ) from None
            raise

    def ping(self, timeout: float = 5.0) -> pb.ClusterStatusReply:
        return self.call("ClusterStatus", pb.ClusterStatusRequest(), timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def resources_pb(amounts: dict[str, float]) -> pb.ResourceMap:
    rm = pb.ResourceMap()
    rm.amounts.update({k: float(v) for k, v in amounts.items()})
    return rm


pb_module = pb
