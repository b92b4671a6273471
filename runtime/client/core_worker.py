"""The core worker: the part of every driver and worker that owns objects and submits work.

It serves the process's owner socket (borrowers fetch values, register and release borrows;
workers receive pushed tasks), keeps the reference table and the in-process memory store, and
talks to the local node agent for leases and shared-memory reservations.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import itertools
import operator
import os
import pickle
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from freight import exceptions as exc
from freight.config import settings
from freight.core.refcount import ReferenceTable
from freight.core.task_state import TaskTable
from freight.objects import serialization as ser
from freight.objects.shm import read_segment, segment_dir, write_segment
from freight.objects.store import ObjectExistsError
from freight.observe import tracing
from freight.observe.recorder import RECORDER
from freight.protocol import frames
from freight.protocol import messages as m

from . import refs as refs_mod
from .refs import ObjectRef, handle_actor

_new_ref = object.__new__
_ref_id = operator.attrgetter("_id")
_slot_value = operator.attrgetter("value")
_is_none = functools.partial(operator.is_, None)

# A stored value: ("v", packed) inline | ("s", path, size) shared memory | ("e", pickled error)
Value = tuple[Any, ...]


@dataclass(slots=True, eq=False)  # identity equality: `None in slots` stays at C speed
class Slot:
    value: Value | None = None
    callbacks: list[Callable[[Value], None]] | None = None
    # Refs inside the value, owned elsewhere (a shared empty tuple until there are some).
    foreign: Sequence[tuple[bytes, str]] = ()
    fetching: bool = False


# How often a get waits for a lost object to be rebuilt before it gives up.
_REBUILD_WAITS = 5
_CREATED_INLINE = RECORDER.counter("freight_objects_created_total", ("inline",))
_CREATED_SHARED = RECORDER.counter("freight_objects_created_total", ("shared_memory",))

# get() of at most this many missing values waits on a lock of its own (see _wait_waiter).
_WAITER_MAX = 16
FETCH_TIMEOUT_S = 600.0  # a copy from another node: 1 GiB takes seconds, not minutes
_READ_ATTEMPTS = 3  # maps of a shared-memory object whose segment may be spilled meanwhile


def _get_timeout(timeout: float | None, missing: int, total: int) -> exc.GetTimeoutError:
    return exc.GetTimeoutError(
        f"get() timed out after {timeout} s: {missing} of {total} object(s) are not ready yet."
    )


class _Waiter:
    """Releases its lock when the last of ``n`` values has arrived (a slot callback)."""

    __slots__ = ("count", "lock", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = itertools.count(1)  # next() is atomic: exactly one call sees n
        self.lock = threading.Lock()
        self.lock.acquire()

    def __call__(self, value: Value) -> None:
        if next(self.count) == self.n:
            self.lock.release()


_current_task: contextvars.ContextVar[Any] = contextvars.ContextVar("freight_task", default=None)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def call_site() -> str:
    """``file:line in function`` of the nearest caller outside freight (FREIGHT_RECORD_CALL_SITES)."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_PACKAGE_DIR):
        f = f.f_back  # type: ignore[assignment]
    if f is None:
        return "(unknown)"
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno} in {f.f_code.co_name}"


class Peer:
    """An outbound connection to another core worker (a leased worker, an actor, an owner)."""

    def __init__(self, address: str, fs: frames.FrameSocket) -> None:
        self.address = address
        self.fs = fs
        self.sent_functions: set[bytes] = set()
        self.alive = True


class CoreWorker:
    def __init__(
        self,
        *,
        session_dir: str,
        node_id: str,
        agent_socket: str,
        head_address: str,
        token: str,
        job_id: str,
        worker_id: str,
        is_driver: bool,
        namespace: str = "",
        log_to_driver: bool = True,
        job_labels: dict[str, str] | None = None,
        node_ip: str = "",
    ) -> None:
        self.session_dir = session_dir
        self.session_name = os.path.basename(os.path.normpath(session_dir))
        self.store_dir = segment_dir(settings.shm_dir, self.session_name)  # this node's store
        self.node_id = node_id
        self.head_address = head_address
        self.token = token
        self.job_id = job_id
        self.worker_id = worker_id
        self.is_driver = is_driver
        self.namespace = namespace
        self.log_to_driver = log_to_driver
        kind = "driver" if is_driver else "worker"
        self.unix_path = os.path.join(session_dir, "sockets", f"{kind}-{worker_id[:16]}.sock")
        self.socket_dir = os.path.dirname(self.unix_path)
        self.node_ip = node_ip
        self.address = self.unix_path  # gains "|host:port" once the TCP listener is up
        self.lock = threading.RLock()
        self.cv = threading.Condition(self.lock)
        validate = settings.validate_state
        self.refs = ReferenceTable(validate=validate)
        self.tasks = TaskTable(validate=validate)
        self.slots: dict[bytes, Slot] = {}
        self._prefix = os.urandom(8)
        self._counter = itertools.count(1)
        self._req = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self.peers: dict[str, Peer] = {}
        self._peer_lock = threading.Lock()
        self.inline_max = settings.inline_max_bytes
        # Where each owned object was created, for `freight memory --group-by callsite`.
        self.record_call_sites = settings.record_call_sites
        self.call_sites: dict[bytes, str] = {}
        self.closed = False
        self.driver_address = self.address if is_driver else ""
        self.on_push: Callable[[frames.FrameSocket, Any, str], None] | None = None
        self.on_agent_message: Callable[[Any], None] | None = None
        self._borrow_buf = threading.local()
        # Processes that borrowed from this one over their own connection (see _borrower_gone).
        self._borrowers: set[str] = set()
        self._head: Any = None
        self._listeners = self._listen()
        # Agents of other nodes this owner holds leases from, by their TCP data address.
        self.remote_agents: dict[str, frames.FrameSocket] = {}
        self.job_labels: dict[str, str] = dict(job_labels or {})
        role: tuple[Any, ...] = (
            ("driver", self.address, job_id, self.job_labels)
            if is_driver
            else ("worker", worker_id)
        )
        self.agent = frames.connect_unix(agent_socket, token, role)
        frames.serve_reader(self.agent, self._on_agent, self._agent_closed)
        from .submitter import ActorSubmitter, TaskSubmitter

        self.submitter = TaskSubmitter(self)
        self.actors = ActorSubmitter(self)
        from .telemetry import Telemetry

        self.telemetry = Telemetry(self)
        refs_mod._worker = self
        threading.Thread(target=self._janitor, name="freight-janitor", daemon=True).start()

    # -- ids ---------------------------------------------------------------------------------

    @property
    def current_task(self) -> Any:
        """The task this thread (or asyncio task) is running, or None."""
        return _current_task.get()

    @staticmethod
    def set_current_task(task: Any) -> Any:
        return _current_task.set(task)

    @staticmethod
    def reset_current_task(token: Any) -> None:
        _current_task.reset(token)

    def new_id(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(8, "little")

    def next_req(self) -> int:
        return next(self._req)

    # -- server side -------------------------------------------------------------------------

    def _listen(self) -> list[socket.socket]:
        """Listen on this node's Unix socket and, with a node address, on TCP for processes of
        other nodes; both serve the same protocol after the same HELLO check."""
        path = self.unix_path
        os.makedirs(self.socket_dir, exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        os.chmod(path, 0o600)
        srv.listen(128)
        listeners = [srv]
        if self.node_ip:
            tcp = socket.socket(socket.AF_INET6 if ":" in self.node_ip else socket.AF_INET)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((self.node_ip, 0))
            tcp.listen(128)
            listeners.append(tcp)
            host = f"[{self.node_ip}]" if ":" in self.node_ip else self.node_ip
            self.address = f"{path}|{host}:{tcp.getsockname()[1]}"
        for sock in listeners:
            threading.Thread(
                target=self._accept, args=(sock,), name="freight-accept", daemon=True
            ).start()
        return listeners

    def _accept(self, srv: socket.socket) -> None:
        while not self.closed:
            try:
                sock, _ = srv.accept()
            except OSError:
                return
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(
                target=self._serve_inbound, args=(sock,), name="freight-inbound", daemon=True
            ).start()

    def _serve_inbound(self, sock: socket.socket) -> None:
        fs = frames.FrameSocket(sock)
        caller = ""
        try:
            sock.settimeout(10)  # an unauthenticated peer gets 10 s and 64 KiB to say HELLO
            got = fs.recv_raw(frames.MAX_HELLO)
            if got is None:
                fs.close()
                return
            role = frames.check_hello(got[0], got[1], self.token)
            sock.settimeout(None)
            caller = str(role[1]) if len(role) > 1 else ""
            while True:
                msg = fs.recv()
                if msg is None:
                    break
                self._on_inbound(fs, msg, caller)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the peer went away (it exited or was killed): not bad input
        except (frames.ProtocolError, OSError) as e:
            self._bad_peer(f"closed a connection after bad input: {e}")
        except Exception as e:
            # A well-formed frame whose fields do not fit its message: drop that peer only.
            self._bad_peer(f"closed a connection after an invalid message: {e!r}")
        finally:
            fs.close()
            if caller and caller in self._borrowers and not self.closed:
                self._borrower_gone(caller)

    def _bad_peer(self, what: str) -> None:
        """Note a peer this process dropped: in a worker's log (its stderr). A driver's stderr
        is its user's terminal, where a stranger's bad connection is noise: it is not printed
        there."""
        if not self.is_driver:
            print(f"freight: {what}", file=sys.stderr)

    def _borrower_gone(self, borrower: str) -> None:
        """The connection of a process that borrowed objects from this one closed: it exited
        (or was killed), so what it held is no longer held (as Ray's owners do when a borrower
        dies): its objects may be freed, and actors whose handles it kept destroyed."""
        with self.lock:
            self._borrowers.discard(borrower)
            freed = self.refs.remove_borrower_everywhere(borrower)
        self._free(freed)

    def _on_inbound(self, fs: frames.FrameSocket, msg: Any, caller: str = "") -> None:
        t = type(msg)
        if t is m.PushTask or t is m.CancelTask:
            if self.on_push is None:
                raise frames.ProtocolError("this process does not run tasks")
            self.on_push(fs, msg, caller)
        elif t is m.GetObject:
            self._serve_get(fs, msg)
        elif t is m.Borrow:
            with self.lock:
                missing = self.refs.add_borrowers(msg.object_ids, msg.borrower)
                if msg.borrower == caller:  # borrowing for itself: its hang-up releases them
                    self._borrowers.add(caller)
            fs.send(m.BorrowAck(msg.req_id, missing))
        elif t is m.ReleaseBorrow:
            with self.lock:
                freed = self.refs.remove_borrowers(msg.object_ids, msg.borrower)
            self._free(freed)
        elif t is m.CancelObject:
            self.submitter.cancel_asked(msg.object_id, msg.force, msg.recursive)
        elif t is m.MemoryRequest:
            fs.send(
                m.MemoryReply(
                    msg.req_id,
                    os.getpid(),
                    "driver" if self.is_driver else "worker",
                    self.memory_rows(),
                    self.node_id,
                )
            )
        elif t is m.LogLines:
            if not self.log_to_driver:
                return
            stream = sys.stderr if msg.stream == "stderr" else sys.stdout
            # One write per batch, newlines included: print() writes text and end separately,
            # and the driver's own prints in other threads would land between them.
            stream.write("".join(f"{msg.prefix} {line}\n" for line in msg.text.splitlines()))
            stream.flush()
        else:
            raise frames.ProtocolError(f"unexpected {t.__name__} on an owner socket")

    def _serve_get(self, fs: frames.FrameSocket, msg: m.GetObject) -> None:
        def reply(value: Value) -> None:
            try:
                fs.send(m.ObjectValue(msg.req_id, msg.object_id, value))
            except OSError:
                pass

        if msg.lost:
            self._lost_at(msg.object_id, msg.lost)
        with self.lock:
            slot = self.slots.get(msg.object_id)
            if slot is None:
                err = exc.ObjectLostError(
                    msg.object_id.hex(),
                    f"Object {msg.object_id.hex()} was already freed by its owner "
                    f"(no reference to it remained).",
                )
                value: Value | None = ("e", pickle.dumps(err))
            else:
                value = slot.value
                if value is None:
                    if slot.callbacks is None:
                        slot.callbacks = []
                    slot.callbacks.append(reply)
        if value is not None:
            reply(value)

    # -- agent -------------------------------------------------------------------------------

    def _on_agent(self, msg: Any) -> None:
        t = type(msg)
        if t is m.Reserved or t is m.Error:
            self._resolve(msg.req_id, msg)
        elif t is m.LeaseGranted or t is m.LeaseRejected or t is m.LeaseSpillback:
            self.submitter.on_lease_reply(msg)
        elif t is m.LeaseWaiting:
            self.submitter.on_lease_waiting(msg)
        elif t is m.RecallLease:
            self.submitter.on_lease_recalled(msg)
        elif t is m.WorkerKilled:
            self.submitter.on_worker_killed(msg)
        elif t is m.CancelOwnedTask:
            self.submitter.cancel_owned(msg.task_id, msg.force, msg.recursive)
        elif self.on_agent_message is not None:
            self.on_agent_message(msg)

    def _agent_closed(self, error: BaseException | None) -> None:
        if not self.closed:
            print("freight: lost the connection to the node agent", file=sys.stderr)
            if not self.is_driver:
                os._exit(1)

    def request(self, fs: frames.FrameSocket, build: Callable[[int], Any], timeout: float) -> Any:
        req = self.next_req()
        fut: Future[Any] = Future()
        self._pending[req] = fut
        try:
            fs.send(build(req))
            return fut.result(timeout)
        finally:
            self._pending.pop(req, None)

    def _resolve(self, req_id: int, value: Any) -> None:
        fut = self._pending.pop(req_id, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    # -- peers -------------------------------------------------------------------------------

    def peer(self, address: str) -> Peer:
        p = self.peers.get(address)
        if p is not None and p.alive:
            return p
        with self._peer_lock:
            p = self.peers.get(address)
            if p is not None and p.alive:
                return p
            fs = frames.connect(address, self.token, ("peer", self.address), self.socket_dir)
            p = Peer(address, fs)
            self.peers[address] = p
            frames.serve_reader(
                fs, lambda msg, p=p: self._on_peer(p, msg), lambda e, p=p: self._peer_closed(p)
            )
            return p

    def remote_agent(self, data_address: str) -> frames.FrameSocket:
        """A connection to another node's agent (its TCP data plane), for leases there."""
        fs = self.remote_agents.get(data_address)
        if fs is not None and not fs.closed:
            return fs
        with self._peer_lock:
            fs = self.remote_agents.get(data_address)
            if fs is not None and not fs.closed:
                return fs
            fs = frames.connect_tcp(data_address, self.token, ("owner", self.address))
            self.remote_agents[data_address] = fs

            def handle(msg: Any) -> None:
                t = type(msg)
                if t is m.LeaseGranted or t is m.LeaseRejected or t is m.LeaseSpillback:
                    self.submitter.on_lease_reply(msg, fs)
                elif t is m.LeaseWaiting:
                    self.submitter.on_lease_waiting(msg)
                elif t is m.RecallLease:
                    self.submitter.on_lease_recalled(msg, fs)
                elif t is m.WorkerKilled:
                    self.submitter.on_worker_killed(msg, fs)
                else:
                    raise frames.ProtocolError(f"unexpected {t.__name__} from a node agent")

            def closed(error: BaseException | None, fs: frames.FrameSocket = fs) -> None:
                with self._peer_lock:
                    if self.remote_agents.get(data_address) is fs:
                        del self.remote_agents[data_address]
                if not self.closed:
                    self.submitter.on_agent_closed(fs)

            frames.serve_reader(fs, handle, closed)
            return fs

    def _on_peer(self, peer: Peer, msg: Any) -> None:
        t = type(msg)
        if t is m.TaskDone:
            self.submitter.on_task_done(peer, msg)
        elif t is m.ObjectValue:
            self.store_value(msg.object_id, msg.value)
        elif t is m.BorrowAck:
            self._resolve(msg.req_id, msg)
        elif t in (m.LogLines, m.GetObject, m.Borrow, m.ReleaseBorrow, m.CancelObject):
            self._on_inbound(peer.fs, msg)
        else:
            raise frames.ProtocolError(f"unexpected {t.__name__} from a peer")

    def _peer_closed(self, peer: Peer) -> None:
        peer.alive = False
        with self._peer_lock:
            if self.peers.get(peer.address) is peer:
                del self.peers[peer.address]
        if not self.closed:
            self.submitter.on_peer_closed(peer)
            self._fetch_again_from(peer.address)

    def _fetch_again_from(self, owner: str) -> None:
        """A connection to an owner closed: ask again, on a new one, for the values still
        awaited from it (an owner that is gone answers OwnerDiedError, not silence)."""
        with self.lock:
            waiting = [
                (oid, slot)
                for oid, who in self.submitter.borrowed_owner.items()
                if who == owner
                and (slot := self.slots.get(oid)) is not None
                and slot.fetching
                and slot.value is None
            ]
            for oid, slot in waiting:
                self._fetch(oid, owner, slot)

    # -- references --------------------------------------------------------------------------

    def ref_created(self, oid: bytes, owner: str) -> None:
        with self.lock:
            self.refs.add_local(oid, owner == self.address)

    def ref_unpickled(self, oid: bytes, owner: str) -> ObjectRef:
        """Rebuild a reference that arrived pickled: count it here, and register this process
        as a borrower of a foreign one (batched per :meth:`deserialize`)."""
        ref = _new_ref(ObjectRef)  # ObjectRef.__init__ would count it a second way round
        ref._id = oid
        ref._owner = owner
        mine = owner == self.address
        with self.lock:
            self.refs.add_local(oid, mine)
        if not mine:
            buf = getattr(self._borrow_buf, "by_owner", None)
            if buf is not None:
                # Grouped by owner as they come: no tuple per reference to allocate.
                oids = buf.get(owner)
                if oids is None:
                    buf[owner] = [oid]
                else:
                    oids.append(oid)
            else:
                self.borrow([(oid, owner)], self.address)
        return ref

    def deserialize(self, fn: Callable[[], Any]) -> Any:
        """Run an unpickling step, then register this process as borrower of new foreign refs."""
        outer = getattr(self._borrow_buf, "by_owner", None)
        self._borrow_buf.by_owner = {}
        try:
            value = fn()
        finally:
            by_owner, self._borrow_buf.by_owner = self._borrow_buf.by_owner, outer
        if by_owner:
            self.borrow_from(by_owner, self.address)
        return value

    def borrow(self, items: list[tuple[bytes, str]], borrower: str) -> None:
        """Register ``borrower`` with the owners of ``items`` and wait for their answers."""
        by_owner: dict[str, list[bytes]] = {}
        for oid, owner in items:
            by_owner.setdefault(owner, []).append(oid)
        self.borrow_from(by_owner, borrower)

    def borrow_from(self, by_owner: dict[str, list[bytes]], borrower: str) -> None:
        """``borrow`` with the ids already grouped by owner (one ``Borrow`` per owner)."""
        if borrower == self.address:
            # Remember whom to tell when the last local reference goes (see _free).
            borrowed_owner = self.submitter.borrowed_owner
            for owner, oids in by_owner.items():
                borrowed_owner.update(dict.fromkeys(oids, owner))
        for owner, oids in by_owner.items():
            if owner == self.address:
                with self.lock:
                    self.refs.add_borrowers(oids, borrower)
                continue
            try:
                peer = self.peer(owner)
                self.request(peer.fs, lambda r, o=oids: m.Borrow(r, o, borrower), timeout=30)
            except (ConnectionError, OSError, TimeoutError):
                pass  # the owner is gone: get() will report OwnerDiedError

    def release_borrow(self, oids: list[bytes], owner: str, borrower: str) -> None:
        """Tell ``owner`` that ``borrower`` dropped ``oids`` (one message for all of them)."""
        if owner == self.address:
            with self.lock:
                freed = self.refs.remove_borrowers(oids, borrower)
            self._free(freed)
            return
        try:
            self.peer(owner).fs.send(m.ReleaseBorrow(oids, borrower))
        except (ConnectionError, OSError):
            pass

    def drain_dropped(self) -> None:
        dropped = refs_mod.dropped
        if not dropped:
            return
        popleft = dropped.popleft
        with self.lock:
            batch: list[bytes] = []
            while dropped:
                try:
                    batch.append(popleft())
                except IndexError:
                    break
            freed = self.refs.remove_locals(batch)
        if freed:
            self._free(freed)

    def _free(self, freed: list[bytes]) -> None:
        if not freed:
            return
        shm: list[bytes] = []
        elsewhere: dict[str, list[bytes]] = {}  # other nodes' stores -> ids (task returns)
        # (owner, borrower) -> ids: one ReleaseBorrow per owner and borrower key.
        releases: dict[tuple[str, str], list[bytes]] = {}
        prefix = self._prefix
        slots_pop = self.slots.pop
        borrowed_pop = self.submitter.borrowed_owner.pop
        gone_actors: list[str] = []  # actors created here whose last handle just went
        with self.lock:
            owned_handles = self.actors.owned_handles
            if owned_handles:
                for oid in freed:
                    actor_id = owned_handles.pop(oid, None)
                    if actor_id is not None:
                        gone_actors.append(actor_id)
            if self.call_sites:
                for oid in freed:
                    self.call_sites.pop(oid, None)
            lineage = self.submitter.lineage
            if lineage.by_return:
                for oid in freed:
                    if oid in lineage.by_return:
                        lineage.value_freed(oid)
            for oid in freed:
                slot = slots_pop(oid, None)
                owned = oid[:8] == prefix
                if slot is not None:
                    value = slot.value
                    if owned and value is not None and value[0] == "s":
                        shm.append(oid)  # also drops a copy pulled here
                        where = os.path.dirname(value[1])
                        if where != self.store_dir:
                            elsewhere.setdefault(where, []).append(oid)
                    if slot.foreign:
                        who = f"{self.address}#{oid.hex()}"
                        for inner, owner in slot.foreign:
                            releases.setdefault((owner, who), []).append(inner)
                if not owned:
                    owner = borrowed_pop(oid, None)
                    if owner:
                        releases.setdefault((owner, self.address), []).append(oid)
        if shm:
            try:
                self.agent.send(m.FreeObjects(shm))
                for where, oids in elsewhere.items():
                    self.agent.send(m.FreeElsewhere(where, oids))
            except OSError:
                pass
        for (owner, who), oids in releases.items():
            self.release_borrow(oids, owner, who)
        if gone_actors:
            self.actors.handles_gone(gone_actors)

    def _janitor(self) -> None:
        while not self.closed:
            time.sleep(0.05)  # periodic housekeeping, not synchronisation
            try:
                self.drain_dropped()
                self.submitter.return_idle_leases()
            except Exception as e:  # never let housekeeping kill the process
                print(f"freight: housekeeping failed: {e!r}", file=sys.stderr)

    # -- values ------------------------------------------------------------------------------

    def store_value(self, oid: bytes, value: Value, foreign: list[tuple[bytes, str]] = ()) -> None:
        """Record a ready value for an object and wake whoever waits for it."""
        with self.lock:
            callbacks = self.store_locked(oid, value, foreign)
        for cb in callbacks or ():
            cb(value)

    def store_locked(
        self, oid: bytes, value: Value, foreign: list[tuple[bytes, str]] = ()
    ) -> list[Callable[[Value], None]] | None:
        """:meth:`store_value` for a caller that holds the lock: returns the callbacks that
        are waiting for the value, for the caller to run once it has let go of the lock."""
        slot = self.slots.get(oid)
        if slot is None:
            if oid[:8] == self._prefix and oid not in self.refs.entries:
                # Every reference was dropped before the value arrived.
                if value[0] == "s":
                    self.agent.send(m.FreeObjects([oid]))
                return None
            slot = self.slots[oid] = Slot()
        slot.value = value
        if foreign:
            slot.foreign = list(foreign)
        callbacks, slot.callbacks = slot.callbacks, None
        self.cv.notify_all()
        return callbacks

    def on_ready(self, oid: bytes, owner: str, cb: Callable[[Value], None]) -> None:
        """Call ``cb(value)`` once the object is ready (fetching it from its owner if needed)."""
        with self.lock:
            slot = self.slots.get(oid)
            if slot is None:
                slot = self.slots[oid] = Slot()
            if slot.value is not None:
                value = slot.value
            else:
                if slot.callbacks is None:
                    slot.callbacks = []
                slot.callbacks.append(cb)
                value = None
                if owner != self.address and not slot.fetching:
                    self._fetch(oid, owner, slot)
        if value is not None:
            cb(value)

    def _fetch(self, oid: bytes, owner: str, slot: Slot, lost: str = "") -> None:
        slot.fetching = True
        if tracing.ENABLED:  # an "object fetch" span, ended when the value arrives
            arrived = tracing.object_fetch(oid.hex(), owner)
            if arrived is not None:
                if slot.callbacks is None:
                    slot.callbacks = []
                slot.callbacks.append(arrived)
        self.submitter.borrowed_owner[oid] = owner
        try:
            self.peer(owner).fs.send(m.GetObject(0, oid, lost))
        except (ConnectionError, OSError):
            err = exc.OwnerDiedError(
                oid.hex(),
                f"The owner of object {oid.hex()} ({owner}) has died or is unreachable, "
                "so its value is lost.",
            )
            threading.Thread(
                target=self.store_value, args=(oid, ("e", pickle.dumps(err))), daemon=True
            ).start()

    def ensure_local(self, ref: ObjectRef) -> Slot:
        with self.lock:
            slot = self.slots.get(ref._id)
            if slot is None:
                slot = self.slots[ref._id] = Slot()
            if slot.value is None and ref._owner != self.address and not slot.fetching:
                self._fetch(ref._id, ref._owner, slot)
            return slot

    def decode(self, value: Value) -> Any:
        kind = value[0]
        if kind == "v":
            return self.deserialize(lambda: ser.unpack(value[1]))
        if kind == "s":
            return self.deserialize(lambda: self._read_shared(value[1], value[2]))
        err = pickle.loads(value[1])
        if isinstance(err, exc.RayTaskError):
            raise err.as_instanceof_cause()
        raise err

    def _read_shared(self, path: str, size: int) -> Any:
        """Map and unpack the object at ``path``: copied here first when it lies in another
        node's store, and restored first when its node spilled it to disk (its segment is
        gone: a spilled object's path names where it comes back)."""
        here = os.path.dirname(path) == self.store_dir
        for attempt in range(1, _READ_ATTEMPTS + 1):
            local = path if here else self._copy_here(path, size)
            try:
                return read_segment(local)
            except FileNotFoundError:
                if attempt == _READ_ATTEMPTS:
                    raise
            # Spilled (restored and spilled again before this open, at worst), or a copy
            # evicted before it was mapped, which _copy_here pulls again.
            if here:
                self._restore(path)
        raise AssertionError("unreachable")

    def _restore(self, path: str) -> None:
        """Have this node's agent bring a spilled object back into its segment at ``path``;
        the ``FileNotFoundError`` of a freed object when the store no longer holds it."""
        oid = bytes.fromhex(os.path.basename(path))
        reply = self.request(self.agent, lambda r: m.RestoreObject(r, oid), timeout=FETCH_TIMEOUT_S)
        if type(reply) is m.Error:
            if reply.exc:
                raise pickle.loads(reply.exc)
            raise FileNotFoundError(
                errno.ENOENT,
                "object segment not found (the object was freed, or is not on this node)",
                path,
            )

    def _copy_here(self, path: str, size: int) -> str:
        """The path of a copy in this node's store of the object at ``path`` in another node's
        store (this node's agent pulls it, once, however many ask)."""
        oid = bytes.fromhex(os.path.basename(path))
        source = os.path.dirname(path)
        reply = self.request(
            self.agent, lambda r: m.FetchObject(r, oid, size, source), timeout=FETCH_TIMEOUT_S
        )
        if type(reply) is m.Error:
            raise (
                pickle.loads(reply.exc)
                if reply.exc
                else exc.ObjectLostError(oid.hex(), reply.message)
            )
        return str(reply.path)

    # -- put ---------------------------------------------------------------------------------

    def encode(self, so: ser.SerializedObject, oid: bytes, owner: str = "") -> Value:
        """Place a serialized object: inline bytes, or a shared-memory segment via the agent.

        ``owner`` is the process that will own the object (a task's caller for its returns).
        """
        size = so.total_size
        if size <= self.inline_max:
            _CREATED_INLINE()
            return ("v", ser.pack(so))
        _CREATED_SHARED()
        owner = owner or self.address
        wait_s = settings.object_reserve_timeout_s
        try:
            reply = self.request(
                self.agent, lambda r: m.ReserveObject(r, oid, size, owner), timeout=wait_s
            )
        except TimeoutError:
            # A stalled agent answers once it runs again: give that late reservation back (the
            # agent reads this after the request), so the object can be stored again.
            try:
                self.agent.send(m.FreeObjects([oid]))
            except OSError:
                pass
            raise TimeoutError(
                f"the node agent did not reserve room for object {oid.hex()} ({size} bytes) "
                f"within {wait_s:g} s (FREIGHT_OBJECT_RESERVE_TIMEOUT_S): it is stalled or "
                "overloaded"
            ) from None
        if type(reply) is m.Error:
            error = pickle.loads(reply.exc) if reply.exc else None
            if isinstance(error, ObjectExistsError):
                return ("s", error.path, error.size)  # stored already by an earlier run of it
            raise error or exc.ObjectStoreFullError(reply.message)
        try:
            write_segment(reply.path, so)
        except BaseException:
            try:
                self.agent.send(m.FreeObjects([oid]))  # give the reservation back
            except OSError:
                pass
            raise
        self.agent.send(m.SealObject(oid))
        return ("s", reply.path, size)

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError(
                "put() of an ObjectRef is not allowed: the reference is already in the object "
                "store. Pass the ObjectRef itself instead."
            )
        self.drain_dropped()
        try:
            so = ser.serialize(value)
        except Exception as e:
            raise TypeError(f"put(): the value could not be serialized: {e!r}") from e
        return self.put_serialized(so, "put")

    def put_serialized(self, so: ser.SerializedObject, what: str) -> ObjectRef:
        """Store a serialized value this process owns; ``what`` made it (for call sites)."""
        oid = self.new_id()
        stored = self.encode(so, oid)
        ref = ObjectRef(oid, self.address)
        if self.record_call_sites:
            self.call_sites[oid] = f"{what} at {call_site()}"
        with self.lock:
            self.slots[oid] = Slot(stored)
            self.refs.set_contains(oid, [r._id for r in so.contained_refs])
        return ref

    # -- get / wait --------------------------------------------------------------------------

    def wait_values(self, refs: list[ObjectRef], timeout: float | None) -> list[Value]:
        self.drain_dropped()
        deadline = None if timeout is None else time.monotonic() + timeout
        slots, values = self.local_values(refs)
        if None not in values:
            return values  # type: ignore[return-value]
        blocked = self.notify_blocked(True)
        try:
            if values.count(None) <= _WAITER_MAX:
                self._wait_waiter(slots, deadline, timeout)
                return [s.value for s in slots]  # type: ignore[misc]
            with self.cv:
                for s in slots:
                    while s.value is None:
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            missing = sum(x.value is None for x in slots)
                            raise _get_timeout(timeout, missing, len(slots))
                        self.cv.wait(left)
        finally:
            if blocked:
                self.notify_blocked(False)
        return [s.value for s in slots]  # type: ignore[misc]

    def _wait_waiter(
        self, slots: list[Slot], deadline: float | None, timeout: float | None
    ) -> None:
        """Wait for a few values on a lock of this call's own, released by the last value's
        callback: the thread that stores the values wakes this one once, after it has let go
        of the store's lock (a wait on the condition would wake and then block on that lock)."""
        with self.lock:
            pending = [s for s in slots if s.value is None]
            if not pending:
                return
            waiter = _Waiter(len(pending))
            for s in pending:
                if s.callbacks is None:
                    s.callbacks = []
                s.callbacks.append(waiter)
        if deadline is None:
            waiter.lock.acquire()
            return
        if waiter.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return
        with self.lock:
            missing = sum(s.value is None for s in slots)
            for s in pending:
                if s.callbacks is not None and waiter in s.callbacks:
                    s.callbacks.remove(waiter)
        if missing:
            raise _get_timeout(timeout, missing, len(slots))

    def notify_blocked(self, blocked: bool) -> bool:
        """Tell the agent a task blocked in get/wait (its CPU can run other tasks meanwhile)."""
        if self.is_driver or self.current_task is None:
            return False
        try:
            msg = m.WorkerBlocked if blocked else m.WorkerUnblocked
            self.agent.send(msg(self.worker_id))
        except OSError:
            return False
        return True

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        values = self.wait_values(refs, timeout)
        try:
            return [self.decode(v) for v in values]
        except (exc.ObjectLostError, TypeError):
            # A copy that is gone, or a value a rebuild has just taken back (None): else the
            # error is the task's, or the value's own.
            if None not in values and all(v[0] != "s" for v in values):
                raise
        return [self._get_rebuilding(ref, deadline, timeout) for ref in refs]

    def _get_rebuilding(self, ref: ObjectRef, deadline: float | None, timeout: float | None) -> Any:
        """``get`` of one object that may have been lost with its node: its owner rebuilds it
        (decisions/0026-lineage.md) and this waits for the new value."""
        losses = 0
        while losses < _REBUILD_WAITS:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = self.wait_values([ref], left)[0]
            if value is None:
                continue  # a rebuild took it back after the wait: wait for the new one
            try:
                return self.decode(value)
            except exc.ObjectLostError as lost:
                if value[0] != "s":
                    raise
                losses += 1
                if ref._owner == self.address:
                    err = self._lost_at(ref._id, value[1], str(lost))
                    if err is not None:
                        raise err from None
                    continue
                with self.lock:  # ask the owner, which rebuilds it, for the new value
                    slot = self.slots.get(ref._id)
                    if slot is not None and slot.value is value:
                        slot.value = None
                        self._fetch(ref._id, ref._owner, slot, value[1])
        raise exc.ObjectReconstructionFailedError(
            ref.hex(),
            f"Object {ref.hex()} was lost and rebuilt {_REBUILD_WAITS} times, "
            "and lost again each time.",
        )

    def _lost_at(self, oid: bytes, path: str, cause: str = "") -> exc.ObjectLostError | None:
        """An object this process owns could not be read at ``path`` (lost with its node, or
        ``cause`` says how): rebuild it unless that is under way or done; the error if it
        cannot be rebuilt."""
        with self.lock:
            slot = self.slots.get(oid)
            value = None if slot is None else slot.value
            if value is None or value[0] != "s" or value[1] != path:
                return None  # being rebuilt, or rebuilt already (elsewhere)
        err = self.submitter.rebuild(oid, cause, value)
        if err is not None:
            self.store_value(oid, ("e", pickle.dumps(err)))  # every waiter hears why
        return err

    def future_of(self, ref: ObjectRef) -> Future[Any]:
        fut: Future[Any] = Future()

        def done(value: Value) -> None:
            try:
                try:
                    result = self.decode(value)
                except exc.ObjectLostError:
                    if value[0] != "s":
                        raise
                    result = self._get_rebuilding(ref, None, None)  # lost with its node
                fut.set_result(result)
            except BaseException as e:
                fut.set_exception(e)

        self.on_ready(
            ref._id,
            ref._owner,
            lambda v: threading.Thread(target=done, args=(v,), daemon=True).start(),
        )
        return fut

    def local_values(
        self, refs: list[ObjectRef], ids: list[bytes] | None = None
    ) -> tuple[list[Slot], list[Value | None]]:
        """The slots of ``refs`` and their current values (None: not ready yet), creating the
        missing slots (and fetching foreign values).

        Runs at C speed when every slot exists: a caller that waits on the same long list
        many times (``wait`` in a loop) must not pay Python work per reference and call. A
        slot that exists but holds no value is either owned here or already being fetched
        (every place that creates one for a foreign object starts the fetch).
        """
        slots: list[Any] = list(map(self.slots.get, map(_ref_id, refs) if ids is None else ids))
        try:
            return slots, list(map(_slot_value, slots))
        except AttributeError:  # None has no .value: some slot is missing
            for i, slot in enumerate(slots):
                if slot is None:
                    slots[i] = self.ensure_local(refs[i])
            return slots, list(map(_slot_value, slots))

    def wait(
        self,
        refs: list[ObjectRef],
        num_returns: int,
        timeout: float | None,
        ids: list[bytes] | None = None,
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        """Split ``refs`` into (first ``num_returns`` ready, the rest), both in input order.

        ``ids`` are the refs' object ids when the caller has them already.
        """
        self.drain_dropped()
        deadline = None if timeout is None else time.monotonic() + timeout
        slots, values = self.local_values(refs, ids)
        n = len(refs)
        # Values are non-empty tuples or None: count and select without a Python loop.
        ready = n - values.count(None)
        if ready < num_returns:
            blocked = False
            try:
                with self.cv:
                    while True:
                        # Read under the lock, so no value stored meanwhile goes unnoticed.
                        values = list(map(_slot_value, slots))
                        ready = n - values.count(None)
                        if ready >= num_returns:
                            break
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            break
                        if not blocked:
                            blocked = self.notify_blocked(True)
                        self.cv.wait(left)
            finally:
                if blocked:
                    self.notify_blocked(False)
        if ready <= num_returns:
            done_list = list(itertools.compress(refs, values))
            if not done_list:
                return done_list, list(refs)
            return done_list, list(itertools.compress(refs, map(_is_none, values)))
        picked = list(itertools.islice(itertools.compress(range(n), values), num_returns))
        done_list = [refs[i] for i in picked]
        if num_returns <= 16:
            rest = list(refs)
            for i in reversed(picked):
                del rest[i]
        else:
            keep = [True] * n
            for i in picked:
                keep[i] = False
            rest = list(itertools.compress(refs, keep))
        return done_list, rest

    def memory_rows(self) -> list[tuple[str, int, str, bool, list[str], str]]:
        """Every object this process refers to: size, where it lives, what holds it, call site."""
        rows = []
        sites = self.call_sites
        unknown = "" if self.record_call_sites else "(set FREIGHT_RECORD_CALL_SITES=1)"
        with self.lock:
            for oid, entry in self.refs.entries.items():
                slot = self.slots.get(oid)
                value = slot.value if slot is not None else None
                if handle_actor(oid):
                    where, size = "actor handle", 0
                elif value is None:
                    where, size = "pending", 0
                elif value[0] == "v":
                    where, size = "inline", len(value[1])
                elif value[0] == "s":
                    where, size = "shared memory", int(value[2])
                else:
                    where, size = "error", len(value[1])
                owned = oid[:8] == self._prefix or oid in self.actors.owned_handles
                site = sites.get(oid, unknown) if owned else "(borrowed)"
                rows.append((oid.hex(), size, where, owned, entry.holders(), site))
        return rows

    # -- head --------------------------------------------------------------------------------

    @property
    def head(self) -> Any:
        if self._head is None:
            from .head_client import HeadClient

            if not self.head_address:  # a worker that started before the head served
                import json

                # The head's session folder has head.json; another node's agent writes the
                # head's address into its node file once it has registered.
                try:
                    with open(os.path.join(self.session_dir, "head.json")) as f:
                        self.head_address = str(json.load(f)["address"])
                except FileNotFoundError:
                    node_file = os.path.join(self.session_dir, "nodes", f"{self.node_id}.json")
                    with open(node_file) as f:
                        self.head_address = str(json.load(f)["head_address"])
            self._head = HeadClient(self.head_address, self.token)
        return self._head

    # -- shutdown ----------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.telemetry.close()
        self.closed = True
        refs_mod._worker = None
        with self.lock:
            owned_shm = [
                oid
                for oid, slot in self.slots.items()
                if oid[:8] == self._prefix and slot.value is not None and slot.value[0] == "s"
            ]
        if owned_shm:
            try:
                self.agent.send(m.FreeObjects(owned_shm))  # this owner's objects go with it
            except OSError:
                pass
        for sock in self._listeners:
            try:
                sock.close()
            except OSError:
                pass
        for p in list(self.peers.values()):
            p.fs.close()
        for fs in list(self.remote_agents.values()):
            fs.close()
        self.agent.close()
        if self._head is not None:
            self._head.close()
        try:
            os.unlink(self.unix_path)
        except OSError:
            pass
