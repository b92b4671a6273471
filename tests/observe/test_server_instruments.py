"""gRPC latency by method and status, refusal counting, and event-loop lag, on real servers."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc import aio

from freight.observe.recorder import RECORDER, Recorder
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util.grpc_auth import TokenAuthInterceptor, aio_channel
from freight.util.grpc_metrics import GrpcMetricsInterceptor, watch_loop_lag

SECONDS = "freight_grpc_request_seconds"
SERVICE = pb.DESCRIPTOR.services_by_name["NodeAgentService"].full_name


class Servicer(pb_grpc.NodeAgentServiceServicer):
    async def KillWorker(self, request, context):
        return pb.KillWorkerReply(killed=True)

    async def GetNodeStats(self, request, context):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no such node")

    async def ListObjects(self, request, context):
        raise RuntimeError("the handler crashed")


def _count(rec: Recorder, method: str, code: str) -> float:
    h = rec.snapshot()["h"].get((SECONDS, (SERVICE, method, code)))
    return sum(h[:-1]) if h else 0


async def _exercise(rec: Recorder) -> None:
    server = aio.server(interceptors=[TokenAuthInterceptor("right"), GrpcMetricsInterceptor(rec)])
    pb_grpc.add_NodeAgentServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    good = aio_channel(f"127.0.0.1:{port}", "right")
    bad = aio_channel(f"127.0.0.1:{port}", "wrong")
    try:
        stub = pb_grpc.NodeAgentServiceStub(good)
        for _ in range(3):
            assert (await stub.KillWorker(pb.KillWorkerRequest(), timeout=10)).killed
        with pytest.raises(aio.AioRpcError) as e:
            await stub.GetNodeStats(pb.GetNodeStatsRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(aio.AioRpcError) as e:
            await stub.ListObjects(pb.ListObjectsRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNKNOWN
        # A method nobody serves, and a caller without the token: neither becomes a label.
        invented = good.unary_unary(
            f"/{SERVICE}/Invented",
            request_serializer=pb.KillWorkerRequest.SerializeToString,
            response_deserializer=pb.KillWorkerReply.FromString,
        )
        with pytest.raises(aio.AioRpcError) as e:
            await invented(pb.KillWorkerRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(aio.AioRpcError) as e:
            await pb_grpc.NodeAgentServiceStub(bad).KillWorker(pb.KillWorkerRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await good.close()
        await bad.close()
        await server.stop(None)


def test_grpc_latency_by_method_and_code_and_refusals_counted() -> None:
    rec = Recorder()
    refused_key = ("freight_auth_refused_total", ("grpc",))
    refused_before = RECORDER.snapshot()["c"].get(refused_key, 0)
    asyncio.run(_exercise(rec))
    assert _count(rec, "KillWorker", "OK") == 3
    assert _count(rec, "GetNodeStats", "INVALID_ARGUMENT") == 1
    assert _count(rec, "ListObjects", "UNKNOWN") == 1
    labels = {key[1] for key in rec.snapshot()["h"]}
    assert labels == {
        (SERVICE, "KillWorker", "OK"),
        (SERVICE, "GetNodeStats", "INVALID_ARGUMENT"),
        (SERVICE, "ListObjects", "UNKNOWN"),
    }
    assert RECORDER.snapshot()["c"].get(refused_key, 0) == refused_before + 1


def test_loop_lag_records_how_long_the_loop_was_blocked() -> None:
    rec = Recorder()

    async def main() -> None:
        watcher = asyncio.create_task(watch_loop_lag("head", interval=0.01, recorder=rec))
        await asyncio.sleep(0)  # let the watcher set its timer
        time.sleep(0.2)  # block the loop: the watcher's timer is overdue by at least this much
        while "freight_event_loop_lag_seconds" not in {k[0] for k in rec.snapshot()["h"]}:
            await asyncio.sleep(0.01)
        watcher.cancel()

    asyncio.run(main())
    h = rec.snapshot()["h"][("freight_event_loop_lag_seconds", ("head",))]
    assert h[-1] >= 0.19 - 0.01  # the sum of the lags covers the blocked time
    assert sum(h[:-1]) >= 1
