"""Lineage: the specs of finished tasks, kept by their owner so lost objects can be rebuilt.

An object that lived in a node's store is lost when that node dies. Its owner rebuilds it by
running the task that made it again (decisions/0026-lineage.md). For that, the owner keeps the
spec of each finished task that may be re-run (a normal task with retries left) and put a
return value in a store, while any of its return values is still referenced, or while a kept
spec takes one of them as an argument: rebuilding an object may need its arguments rebuilt
first, even ones whose values were freed. (An argument passed inline needs no lineage: its
value is in the spec.)

The memory held is bounded (``FREIGHT_LINEAGE_MAX_BYTES``): over the bound the oldest specs
go first, and their objects can no longer be rebuilt. The table does no I/O; the submitter
calls it under the core worker's lock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


class TaskSpec(Protocol):
    """What the table reads of a task spec (freight.client.submitter.TaskSpec)."""

    task_id: bytes
    args: bytes
    arg_refs: list[tuple[bytes, str]]
    return_ids: list[bytes]
    resolved: list[tuple[bytes, str, Any]] | None  # the arguments' values, as sent


# What one kept spec costs beyond its packed arguments (ids, the record, the dict entries).
ENTRY_OVERHEAD = 200
# How many evicted object ids are remembered, to say why one cannot be rebuilt.
EVICTED_MEMORY = 100_000


@dataclass(slots=True)
class Entry:
    spec: Any  # a TaskSpec
    size: int
    args: list[bytes]  # the arguments this owner owns (those it may have to rebuild)
    wanted: set[bytes] = field(default_factory=set)  # return ids whose lineage is still kept
    rebuilds: int = 0


class Lineage:
    def __init__(self, max_bytes: int, owner_prefix: bytes) -> None:
        self.max_bytes = max_bytes
        self.prefix = owner_prefix  # object ids this process owns start with it
        self.by_return: dict[bytes, Entry] = {}
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()  # task id -> entry, oldest first
        self.arg_uses: dict[bytes, int] = {}  # object id -> kept specs that take it
        self.freed: set[bytes] = set()  # kept for a spec that takes it; its value is freed
        self.evicted: deque[bytes] = deque(maxlen=EVICTED_MEMORY)
        self.evicted_set: set[bytes] = set()
        self.bytes = 0

    def keep(self, spec: TaskSpec) -> None:
        """A task finished: keep its spec while its returns (or what they feed) are wanted."""
        if spec.task_id in self.entries:
            self.entries.move_to_end(spec.task_id)  # rebuilt: kept already
            return
        prefix = self.prefix
        n = len(prefix)
        # The arguments this owner may have to rebuild: its own, passed from a store.
        args = [o for o, _, v in spec.resolved or () if o[:n] == prefix and v and v[0] == "s"]
        size = len(spec.args) + ENTRY_OVERHEAD + 40 * (len(spec.arg_refs) + len(spec.return_ids))
        if size > self.max_bytes:
            self._forget(spec.return_ids)
            return
        e = Entry(spec, size, args, set(spec.return_ids))
        self.entries[spec.task_id] = e
        by_return = self.by_return
        for rid in spec.return_ids:
            by_return[rid] = e
        uses = self.arg_uses
        for oid in args:
            uses[oid] = uses.get(oid, 0) + 1
        self.bytes += size
        while self.bytes > self.max_bytes and self.entries:
            self._evict(next(iter(self.entries.values())))

    def spec_of(self, oid: bytes) -> Entry | None:
        return self.by_return.get(oid)

    def why_not(self, oid: bytes) -> str:
        """Why the object has no lineage (for ObjectReconstructionFailedError)."""
        if oid in self.evicted_set:
            return (
                "its lineage was evicted to keep the owner's lineage memory under "
                f"FREIGHT_LINEAGE_MAX_BYTES ({self.max_bytes} bytes); raise it to rebuild more"
            )
        return "it was made by put() (or by an actor call, or a task without retries)"

    def value_freed(self, oid: bytes) -> None:
        """The owner freed the object: drop its lineage unless a kept spec takes it."""
        e = self.by_return.get(oid)
        if e is None:
            return
        if self.arg_uses.get(oid):
            self.freed.add(oid)  # its value is gone but a spec that takes it is kept
            return
        self._drop(oid, e)

    def value_back(self, oid: bytes) -> None:
        """A freed object is referenced again (it is being rebuilt for a task that takes it)."""
        self.freed.discard(oid)

    def _drop(self, oid: bytes, e: Entry) -> None:
        stack = [(oid, e)]
        while stack:
            cur, ce = stack.pop()
            del self.by_return[cur]
            self.freed.discard(cur)
            ce.wanted.discard(cur)
            if ce.wanted:
                continue
            for arg in self._release(ce):
                ae = self.by_return.get(arg)
                if ae is not None:
                    stack.append((arg, ae))

    def _release(self, e: Entry) -> list[bytes]:
        """Forget a spec; return its arguments whose lineage nothing needs any more."""
        del self.entries[e.spec.task_id]
        self.bytes -= e.size
        unneeded = []
        uses = self.arg_uses
        for arg in e.args:
            n = uses[arg] - 1
            if n:
                uses[arg] = n
            else:
                del uses[arg]
                if arg in self.freed:
                    unneeded.append(arg)
        return unneeded

    def _evict(self, e: Entry) -> None:
        for rid in list(e.wanted):
            del self.by_return[rid]
            self.freed.discard(rid)
        self._forget(e.wanted)
        e.wanted = set()
        stack = self._release(e)
        while stack:  # arguments only this spec needed: their own lineage goes too
            arg = stack.pop()
            ae = self.by_return.get(arg)
            if ae is None:
                continue
            del self.by_return[arg]
            self.freed.discard(arg)
            ae.wanted.discard(arg)
            if not ae.wanted:
                stack += self._release(ae)

    def _forget(self, rids: Iterable[bytes]) -> None:
        for rid in rids:
            if len(self.evicted) == self.evicted.maxlen:
                self.evicted_set.discard(self.evicted[0])
            self.evicted.append(rid)
            self.evicted_set.add(rid)

    def statistics(self) -> dict[str, int]:
        return {"specs": len(self.entries), "bytes": self.bytes}
