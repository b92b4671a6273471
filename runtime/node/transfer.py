"""Objects between nodes: a node agent pulls another node's object into its own store.

A process that reads an object whose segment file lies in another node's store asks its own
agent (``FetchObject`` on the data plane). The agent finds the node that holds it by the store
folder the value names, streams it over that agent's ``PullObject`` gRPC stream in chunks into a
reservation of its own store, seals it, and answers with the local path. Many transfers run at
once; a second request for an object already on its way waits for that transfer instead of
starting another. The copy is a secondary one: it is freed with its owner's other copies, or
evicted first when the store needs room.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from grpc import aio
from loguru import logger

from freight.exceptions import ObjectLostError
from freight.objects.spill import damage
from freight.objects.store import ObjectStore
from freight.observe.recorder import RECORDER
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util.grpc_auth import aio_channel

CHUNK_BYTES = 1 << 20  # per gRPC message: 4 MiB measured no faster (benchmarks/cluster.py)
UNKNOWN_STORE_WAIT_S = 3.0  # three heartbeats: how long a node unknown here may take to show


async def serve_chunks(store: ObjectStore, object_id: bytes, offset: int) -> AsyncIterator[Any]:
    """The chunks of a sealed object of ``store``, from ``offset`` (a ``PullObject`` reply)."""
    entry = store.info(object_id)
    if entry is None or not entry.sealed:
        raise FileNotFoundError(f"object {object_id.hex()} is not in this node's store")
    size = entry.size
    path = store.path(object_id)
    # A spill file is checked as a restore checks it: its CRC-32 before the last chunk goes.
    spilled = path == entry.spill_path
    wrong = damage(path, size) if spilled else ""
    if wrong:
        raise OSError(f"object {object_id.hex()}: the node's spill file {path} is {wrong}")
    crc, check = 0, spilled and offset == 0
    # The open file keeps the bytes readable even if the object is freed meanwhile.
    with open(path, "rb") as f:
        f.seek(offset)
        pos, first = offset, True
        while pos < size or first:
            data = f.read(min(CHUNK_BYTES, size - pos))
            if not data and pos < size:
                raise OSError(f"object {object_id.hex()} is shorter than its {size} bytes")
            if check:
                crc = zlib.crc32(data, crc)
                if pos + len(data) >= size and crc != entry.spill_crc:
                    wrong = "corrupted (its bytes changed on disk since they were written)"
                    break
            yield pb.ObjectChunk(data=data, size=size if first else 0)
            pos += len(data)
            first = False
    if wrong:
        raise OSError(f"object {object_id.hex()}: the node's spill file {path} is {wrong}")
    RECORDER.inc("freight_object_transfers_total", ("out",))
    RECORDER.inc("freight_object_transfer_bytes_total", ("out",), size - offset)


class ObjectPuller:
    """Pulls objects from other nodes' agents into ``store``, one transfer per object."""

    def __init__(
        self,
        store: ObjectStore,
        token: str,
        agent_of_store: Callable[[str], str | None],
        next_view: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.token = token
        self.agent_of_store = agent_of_store  # a store folder -> its agent's gRPC address
        self.gone_stores: set[str] = set()  # the stores of nodes that left the cluster
        self.next_view = next_view  # returns when the list of nodes is next refreshed
        # The pull under way of each object, and the store it copies from.
        self.inflight: dict[bytes, tuple[str, asyncio.Future[str]]] = {}
        self._stubs: dict[str, tuple[aio.Channel, pb_grpc.NodeAgentServiceStub]] = {}

    def _stub(self, address: str) -> pb_grpc.NodeAgentServiceStub:
        got = self._stubs.get(address)
        if got is None:
            channel = aio_channel(address, self.token)
            got = self._stubs[address] = (channel, pb_grpc.NodeAgentServiceStub(channel))
        return got[1]

    async def fetch(self, object_id: bytes, size: int, owner: str, source_dir: str) -> str:
        """The local path of ``object_id``, copied from the store at ``source_dir`` if needed."""
        while True:
            entry = self.store.info(object_id)
            if entry is not None and entry.sealed:
                return self.store.path(object_id)
            pending = self.inflight.get(object_id)
            if pending is None:
                break
            if pending[0] == source_dir:
                return await asyncio.shield(pending[1])
            # A pull of the copy in another store: one a reader was handed before the object
            # was lost and rebuilt elsewhere. Its failure says nothing of this copy (taken for
            # this one's, it had the owner rebuild the object again): wait for its end, look again.
            await asyncio.wait([pending[1]])
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.inflight[object_id] = (source_dir, fut)
        try:
            path = await self._pull(object_id, size, owner, source_dir)
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters get it; nobody else must see it unhandled
            raise
        else:
            fut.set_result(path)
            return path
        finally:
            del self.inflight[object_id]

    async def _find(self, source_dir: str) -> str | None:
        """The agent of the store at ``source_dir``; a node that joined a moment ago may be
        missing from this node's list until the next heartbeat, so wait a few of them."""
        address = self.agent_of_store(source_dir)
        if address is None and source_dir in self.gone_stores:
            return None  # its node left the cluster: no use waiting for it
        deadline = time.monotonic() + UNKNOWN_STORE_WAIT_S
        while address is None and self.next_view is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self.next_view(), left)
            except TimeoutError:
                break
            address = self.agent_of_store(source_dir)
        return address

    async def _pull(self, object_id: bytes, size: int, owner: str, source_dir: str) -> str:
        address = await self._find(source_dir)
        if address is None:
            raise ObjectLostError(
                object_id.hex(),
                f"Object {object_id.hex()} lives on a node that is no longer in the cluster "
                f"(store {source_dir}).",
            )
        # Room without disk I/O on the event loop; else spill in a thread (as ReserveObject).
        try:
            path = self.store.try_reserve(object_id, size, owner) or await asyncio.to_thread(
                self.store.reserve, object_id, size, owner
            )
        except ValueError:
            if self.store.info(object_id) is None:
                raise
            # Being made here again, by a task rebuilding it after its node died: the reader
            # asks its owner, which hands out the new value.
            raise ObjectLostError(
                object_id.hex(),
                f"Object {object_id.hex()} is being made again on this node; the copy asked "
                f"for (store {source_dir}) is gone.",
            ) from None
        written = 0
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                stream = self._stub(address).PullObject(pb.PullObjectRequest(object_id=object_id))
                async for chunk in stream:
                    if chunk.size and chunk.size != size:
                        raise ObjectLostError(
                            object_id.hex(),
                            f"Object {object_id.hex()} has {chunk.size} bytes on its node, "
                            f"not the {size} its value names.",
                        )
                    os.pwrite(fd, chunk.data, written)
                    written += len(chunk.data)
            finally:
                os.close(fd)
            if written != size:
                raise ObjectLostError(
                    object_id.hex(),
                    f"The transfer of object {object_id.hex()} ended at {written} of {size} bytes.",
                )
        except aio.AioRpcError as e:
            self.store.abort(object_id)
            raise ObjectLostError(
                object_id.hex(),
                f"Could not copy object {object_id.hex()} from the node at {address}: "
                f"{e.code().name}: {e.details()}",
            ) from None
        except BaseException:
            self.store.abort(object_id)
            raise
        self.store.seal(object_id)
        RECORDER.inc("freight_object_transfers_total", ("in",))
        RECORDER.inc("freight_object_transfer_bytes_total", ("in",), size)
        return path

    async def free_at(self, address: str, object_ids: list[bytes]) -> None:
        """Free objects in the store of the agent at ``address`` (their owner is here)."""
        try:
            await self._stub(address).FreeObjects(
                pb.FreeObjectsRequest(object_ids=object_ids), timeout=10
            )
        except aio.AioRpcError as e:
            logger.warning(
                "could not free {} objects at {}: {}", len(object_ids), address, e.details()
            )

    async def close(self) -> None:
        for channel, _ in self._stubs.values():
            await channel.close()
        self._stubs.clear()
