"""The standard gRPC health service (``grpc.health.v1.Health``) of the head and node agents.

Kubernetes gRPC probes and ``grpc_health_probe`` ask ``Check`` for the whole process (service
``""``) or one of the freight services it serves. A process answers NOT_SERVING until it is
ready (the head once it serves, an agent once it has registered with the head), SERVING while it
is, and NOT_SERVING again while it cannot take work: a head that is shutting down, an agent that
is fencing itself or stopping. ``Check`` needs no token, as probes cannot send one, and it says
nothing but that status (docs/decisions/0058-standard-grpc-health.md); ``Watch`` and ``List``
need the token like every other call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HEALTH_SERVICE = "grpc.health.v1.Health"
# The one call TokenAuthInterceptor lets through without a token.
UNAUTHENTICATED_METHODS = frozenset({f"/{HEALTH_SERVICE}/Check"})

# HealthCheckResponse.ServingStatus; the package is imported only by the servers, so that the
# clients which import the token interceptor's module do not load it.
SERVING = 1
NOT_SERVING = 2


class HealthStatus:
    """The health one server reports, for the process (``""``) and each of ``services``.

    Made by :func:`add_health`.
    """

    def __init__(self, servicer: Any, services: Sequence[str]) -> None:
        self._servicer = servicer
        self._services = ("", *services)
        self.serving = False

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING (``True``) or NOT_SERVING for the process and all its services."""
        self.serving = serving
        for service in self._services:
            await self._servicer.set(service, SERVING if serving else NOT_SERVING)

    async def shutting_down(self) -> None:
        """NOT_SERVING from now on, whatever is set later."""
        self.serving = False
        await self._servicer.enter_graceful_shutdown()


async def add_health(server: Any, services: Sequence[str]) -> HealthStatus:
    """Add the health service to ``server`` (before it starts), NOT_SERVING for the process and
    each of ``services`` (full names, such as ``freight.v1.HeadService``) until told."""
    from grpc_health.v1 import health, health_pb2_grpc

    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    status = HealthStatus(servicer, services)
    await status.set_serving(False)
    return status


__all__ = [
    "HEALTH_SERVICE",
    "NOT_SERVING",
    "SERVING",
    "UNAUTHENTICATED_METHODS",
    "HealthStatus",
    "add_health",
]
