"""The authenticated data-plane framing (``freight.protocol.frames``), offline and on live sockets.

The live tests start a real one-CPU cluster in this process and talk raw bytes to its three kinds
of data-plane server: the node agent (asyncio), the driver's owner socket and a worker's socket
(both threaded). Every malformed or unauthenticated input must make the server close the
connection, and the cluster must keep running tasks afterwards.
"""

from __future__ import annotations

import glob
import math
import os
import pickle
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import freight
from freight.protocol import messages as m
from freight.protocol.frames import (
    HEADER,
    HELLO_KIND,
    MAGIC,
    MAX_FRAME,
    AuthenticationError,
    FrameSocket,
    ProtocolError,
    check_header,
    check_hello,
    decode_message,
    decode_payload,
    encode,
    encode_hello,
)
from freight.protocol.messages import KIND_OF, MESSAGE_TYPES, Kind
from freight.testing import wait_for_condition as wait_until

TOKEN = "s3cret-token-0123456789abcdef"

# -- sample values of every message kind ----------------------------------------------------

SAMPLES: dict[Kind, tuple[Any, ...]] = {
    Kind.HELLO_OK: m.HelloOk("peer-1"),
    Kind.ERROR: m.Error(7, "no room", pickle.dumps(ValueError("no room"))),
    Kind.REQUEST_LEASE: m.RequestLease(1, {"CPU": 1.0, "GPU": 0.5}, "/tmp/o.sock", "f"),
    Kind.LEASE_GRANTED: m.LeaseGranted(1, "w1", "/tmp/w1.sock", 4242),
    Kind.LEASE_REJECTED: m.LeaseRejected(1, "infeasible: needs CPU 8", True),
    Kind.RETURN_LEASE: m.ReturnLease("w1", False),
    Kind.CANCEL_LEASE_REQUEST: m.CancelLeaseRequest(3),
    Kind.LEASE_SPILLBACK: m.LeaseSpillback(1, "ab" * 16, "127.0.0.1:4242"),
    Kind.FETCH_OBJECT: m.FetchObject(5, b"\x01" * 16, 1 << 20, "/dev/shm/freight-y"),
    Kind.RESTORE_OBJECT: m.RestoreObject(5, b"\x01" * 16),
    Kind.FREE_ELSEWHERE: m.FreeElsewhere("/dev/shm/freight-y", [b"\x01" * 16]),
    Kind.RESERVE_OBJECT: m.ReserveObject(4, b"\x01" * 20, 1 << 20, "/tmp/o.sock"),
    Kind.RESERVED: m.Reserved(4, "/dev/shm/freight-x/0101"),
    Kind.SEAL_OBJECT: m.SealObject(b"\x01" * 20),
    Kind.FREE_OBJECTS: m.FreeObjects([b"\x01" * 20, b"\x02" * 20]),
    Kind.WORKER_BLOCKED: m.WorkerBlocked("w1"),
    Kind.WORKER_UNBLOCKED: m.WorkerUnblocked("w1"),
    Kind.WORKER_KILLED: m.WorkerKilled("w1", "the node's memory use was above the threshold"),
    Kind.LEASE_WAITING: m.LeaseWaiting(3, "waiting: every feasible node is draining"),
    Kind.RECALL_LEASE: m.RecallLease("w1"),
    Kind.REGISTER_WORKER: m.RegisterWorker("w1", "/tmp/w1.sock", 4242),
    Kind.ACTOR_READY: m.ActorReady("a1", b""),
    Kind.CREATE_ACTOR: m.CreateActor("a1", b"spec-bytes", "job-1"),
    Kind.EXIT_WORKER: m.ExitWorker("asked to exit"),
    Kind.PUSH_TASK: m.PushTask(
        b"t" * 16,
        "job-1",
        "mod.f",
        b"fid",
        b"cloudpickled",
        b"packed-args",
        [(b"o" * 20, "/tmp/o.sock", b"inline"), (b"p" * 20, "/tmp/o.sock", "/dev/shm/x")],
        [b"r" * 20],
        "",
        "",
        b"",
        "/tmp/driver.sock",
        {"traceparent": "00-abc-def-01"},
    ),
    Kind.TASK_DONE: m.TaskDone(
        b"t" * 16,
        [("v", b"packed"), ("s", "/dev/shm/x", 123)],
        b"",
        False,
        [b"o" * 20],
        1.5,
        2.5,
    ),
    Kind.CANCEL_TASK: m.CancelTask(b"t" * 16, True, False),
    Kind.GET_OBJECT: m.GetObject(9, b"o" * 20),
    Kind.OBJECT_VALUE: m.ObjectValue(9, b"o" * 20, ("e", pickle.dumps(KeyError("k")))),
    Kind.BORROW: m.Borrow(10, [b"o" * 20], "/tmp/b.sock"),
    Kind.RELEASE_BORROW: m.ReleaseBorrow([b"o" * 20], "/tmp/b.sock"),
    Kind.BORROW_ACK: m.BorrowAck(10, []),
    Kind.CANCEL_OBJECT: m.CancelObject(b"o" * 20, False, True),
    Kind.CANCEL_OWNED_TASK: m.CancelOwnedTask(b"t" * 16, False, True),
    Kind.LOG_LINES: m.LogLines("(f pid=1)", "stdout", "hello\nworld"),
    Kind.MEMORY_REQUEST: m.MemoryRequest(11),
    Kind.MEMORY_REPLY: m.MemoryReply(
        11,
        4242,
        "driver",
        [("ab" * 10, 100, "inline", True, ["local reference x1"], "x.py:3 in f")],
        "n1",
    ),
    Kind.TELEMETRY: m.Telemetry(
        {"c": {("freight_tasks_submitted_total", ("f",)): 3.0}, "g": {}, "h": {}},
        {("01000000", "CPU"): 1.5},
        m.pack_task_rows(
            [
                (
                    *("ab", "01", "f", "", "", "n", "w", 0, "FINISHED", 1.0, "returned"),
                    *("", "", "none", 0.5, 0.9, "", "/o", ""),
                    [(1.0, "FINISHED", "returned")],
                )
            ]
        ),
        0,
        False,
        1,
    ),
}


def split(frame: bytes) -> tuple[int, bytes]:
    length, kind = HEADER.unpack_from(frame)
    assert length == len(frame) - HEADER.size + 1
    return kind, frame[HEADER.size :]


def test_every_message_kind_has_a_sample() -> None:
    assert set(SAMPLES) == set(MESSAGE_TYPES)
    assert all(type(SAMPLES[k]) is MESSAGE_TYPES[k] for k in SAMPLES)
    assert HELLO_KIND not in MESSAGE_TYPES


@pytest.mark.parametrize("kind", list(SAMPLES), ids=lambda k: k.name)
def test_encode_decode_round_trip(kind: Kind) -> None:
    msg = SAMPLES[kind]
    got_kind, payload = split(encode(kind, tuple(msg)))
    assert got_kind == kind
    out = decode_message(got_kind, payload)
    assert type(out) is type(msg)
    assert out == msg


@pytest.mark.parametrize("kind", list(SAMPLES), ids=lambda k: k.name)
def test_frame_socket_round_trip(kind: Kind) -> None:
    a, b = socket.socketpair()
    with a, b:
        sender, receiver = FrameSocket(a), FrameSocket(b)
        b.settimeout(10)
        sender.send(SAMPLES[kind])
        out = receiver.recv()
        assert out == SAMPLES[kind]
        assert KIND_OF[type(out)] == kind
        sender.close()
        assert receiver.recv() is None


def test_frame_socket_reads_back_to_back_frames() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(10)
        data = b"".join(encode(k, tuple(v)) for k, v in SAMPLES.items())
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        fs = FrameSocket(b)
        got = []
        while (msg := fs.recv()) is not None:
            got.append(msg)
        assert got == list(SAMPLES.values())


def test_large_frame_round_trip() -> None:
    msg = m.Reserved(1, "x" * (3 << 20))
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(10)
        sender = threading.Thread(target=FrameSocket(a).send, args=(msg,))
        sender.start()
        assert FrameSocket(b).recv() == msg
        sender.join(10)


# -- HELLO ----------------------------------------------------------------------------------


def test_check_hello_accepts_the_right_token_and_returns_the_role() -> None:
    kind, payload = split(encode_hello(TOKEN, ("driver", "/tmp/d.sock", "job-1")))
    assert kind == HELLO_KIND
    assert payload.startswith(MAGIC)
    assert check_hello(kind, payload, TOKEN) == ("driver", "/tmp/d.sock", "job-1")
    assert check_hello(kind, memoryview(payload), TOKEN) == ("driver", "/tmp/d.sock", "job-1")


def test_check_hello_rejects_a_wrong_token() -> None:
    kind, payload = split(encode_hello("not-the-token", ("driver",)))
    with pytest.raises(AuthenticationError, match="token"):
        check_hello(kind, payload, TOKEN)


@pytest.mark.parametrize("offered", ["", TOKEN[:-1], TOKEN + "x", TOKEN.upper()])
def test_check_hello_rejects_near_miss_tokens(offered: str) -> None:
    kind, payload = split(encode_hello(offered, ("driver",)))
    with pytest.raises(AuthenticationError):
        check_hello(kind, payload, TOKEN)


def test_check_hello_rejects_a_missing_token() -> None:
    with pytest.raises(AuthenticationError):
        check_hello(HELLO_KIND, MAGIC, TOKEN)
    with pytest.raises(AuthenticationError):
        check_hello(HELLO_KIND, MAGIC + struct.pack("<H", 0), TOKEN)


def test_check_hello_rejects_a_token_length_past_the_end() -> None:
    payload = MAGIC + struct.pack("<H", 500) + TOKEN.encode()
    with pytest.raises(AuthenticationError):
        check_hello(HELLO_KIND, payload, TOKEN)


@pytest.mark.parametrize("magic", [b"", b"FRT", b"FRT2", b"\x00\x00\x00\x00", b"frt1"])
def test_check_hello_rejects_bad_magic(magic: bytes) -> None:
    _, payload = split(encode_hello(TOKEN, ("driver",)))
    with pytest.raises(AuthenticationError, match="magic"):
        check_hello(HELLO_KIND, magic + payload[4:], TOKEN)


@pytest.mark.parametrize("kind", [1, Kind.GET_OBJECT, Kind.PUSH_TASK, 255])
def test_check_hello_rejects_a_first_frame_that_is_not_hello(kind: int) -> None:
    _, payload = split(encode_hello(TOKEN, ("driver",)))
    with pytest.raises(AuthenticationError, match="HELLO"):
        check_hello(kind, payload, TOKEN)


def test_check_hello_rejects_a_role_that_is_not_a_tuple() -> None:
    tok = TOKEN.encode()
    payload = MAGIC + struct.pack("<H", len(tok)) + tok + pickle.dumps(["driver"])
    with pytest.raises(ProtocolError, match="tuple"):
        check_hello(HELLO_KIND, payload, TOKEN)


def test_check_hello_rejects_an_undecodable_role() -> None:
    tok = TOKEN.encode()
    payload = MAGIC + struct.pack("<H", len(tok)) + tok + b"\x80\x05garbage"
    with pytest.raises(ProtocolError):
        check_hello(HELLO_KIND, payload, TOKEN)


def test_authentication_error_is_a_protocol_error() -> None:
    assert issubclass(AuthenticationError, ProtocolError)


# -- malformed input, offline -----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00", b"garbage", b"\x80\x05\x95", pickle.dumps((1, 2))[:-1], b"\xff" * 64],
)
def test_decode_of_garbage_raises_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_message(Kind.GET_OBJECT, payload)


def test_decode_of_an_unknown_kind_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unknown message kind 200"):
        decode_message(200, pickle.dumps((1, 2)))
    with pytest.raises(ProtocolError, match="unknown"):
        decode_message(HELLO_KIND, pickle.dumps(("driver",)))


@pytest.mark.parametrize("fields", [(), (1,), (1, b"x", "", 4), [1, b"x"], {"req_id": 1}, None, 5])
def test_decode_of_the_wrong_shape_raises_protocol_error(fields: Any) -> None:
    with pytest.raises(ProtocolError, match="malformed GetObject"):
        decode_message(Kind.GET_OBJECT, pickle.dumps(fields))


def test_decode_payload_wraps_every_unpickling_failure() -> None:
    with pytest.raises(ProtocolError, match="undecodable"):
        decode_payload(b"cno_such_module_xyz\nthing\n.")


@pytest.mark.parametrize("length", [0, MAX_FRAME + 1, 0xFFFFFFFF])
def test_check_header_rejects_impossible_lengths(length: int) -> None:
    with pytest.raises(ProtocolError):
        check_header(length)


@pytest.mark.parametrize("length", [1, 2, MAX_FRAME])
def test_check_header_accepts_possible_lengths(length: int) -> None:
    check_header(length)


def recv_all(data: bytes) -> list[Any]:
    """Feed ``data`` to a FrameSocket and read until end of stream or a ProtocolError."""
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(10)  # never reached: the stream always ends
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        fs = FrameSocket(b)
        out: list[Any] = []
        while True:
            try:
                msg = fs.recv()
            except ProtocolError as exc:
                out.append(exc)
                return out
            if msg is None:
                return out
            out.append(msg)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x05\x00", "inside a frame header"),
        (HEADER.pack(100, Kind.GET_OBJECT) + b"short", "inside a frame"),
        (HEADER.pack(0, Kind.GET_OBJECT), "outside"),
        (HEADER.pack(0xFFFFFFFF, Kind.GET_OBJECT) + b"x" * 10, "outside"),
        (encode(200, (1,)), "unknown message kind"),
        (encode(Kind.GET_OBJECT, (1,)), "malformed"),
        (HEADER.pack(9, Kind.GET_OBJECT) + b"notpickle", "undecodable"),
    ],
)
def test_frame_socket_turns_bad_streams_into_protocol_error(data: bytes, error: str) -> None:
    out = recv_all(data)
    assert len(out) == 1
    assert isinstance(out[0], ProtocolError)
    assert error in str(out[0])


def test_frame_socket_delivers_good_frames_before_the_bad_one() -> None:
    good = encode(Kind.MEMORY_REQUEST, (1,))
    out = recv_all(good + good + b"\x01")
    assert out[:2] == [m.MemoryRequest(1), m.MemoryRequest(1)]
    assert isinstance(out[2], ProtocolError)


# -- property tests, offline ------------------------------------------------------------------

KINDS = st.integers(min_value=0, max_value=255)
ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.binary(max_size=32),
    st.text(max_size=32),
)
VALUES = st.one_of(
    ATOMS,
    st.lists(ATOMS, max_size=3),
    st.dictionaries(st.text(max_size=8), ATOMS, max_size=3),
)


@settings(max_examples=5000, deadline=None)
@given(kind=KINDS, payload=st.binary(max_size=256))
def test_decode_message_of_random_bytes_only_raises_protocol_error(
    kind: int, payload: bytes
) -> None:
    try:
        msg = decode_message(kind, payload)
    except ProtocolError:
        return
    assert type(msg) is MESSAGE_TYPES[kind]


@settings(max_examples=1500, deadline=None)
@given(kind=KINDS, fields=st.one_of(VALUES, st.lists(VALUES, max_size=14).map(tuple)))
def test_decode_message_of_random_pickles_only_raises_protocol_error(
    kind: int, fields: Any
) -> None:
    try:
        msg = decode_message(kind, pickle.dumps(fields, protocol=5))
    except ProtocolError:
        return
    assert type(msg) is MESSAGE_TYPES[kind]
    # Fields left off the end are the ones with defaults, filled in.
    missing = type(msg)._fields[len(fields) :]
    assert all(f in type(msg)._field_defaults for f in missing)
    assert [getattr(msg, f) for f in missing] == [type(msg)._field_defaults[f] for f in missing]


CHUNKS = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda k, v: encode(k, tuple(v)), st.sampled_from(list(SAMPLES)), st.just(())),
    st.sampled_from(list(SAMPLES)).map(lambda k: encode(k, tuple(SAMPLES[k]))),
    st.builds(lambda n, k: HEADER.pack(n, k), st.integers(0, 2**32 - 1), KINDS),
)


@settings(max_examples=2500, deadline=None)
@given(st.lists(CHUNKS, max_size=6).map(b"".join))
def test_frame_socket_fed_random_bytes_ends_cleanly_or_with_protocol_error(data: bytes) -> None:
    out = recv_all(data)
    for item in out[:-1]:
        assert type(item) in KIND_OF
    if out and type(out[-1]) not in KIND_OF:
        assert isinstance(out[-1], ProtocolError)


@settings(max_examples=1000, deadline=None)
@given(kind=KINDS, payload=st.binary(max_size=128))
def test_check_hello_of_random_bytes_only_raises_protocol_error(kind: int, payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        check_hello(kind, payload, TOKEN)


@settings(max_examples=500, deadline=None)
@given(role=st.binary(max_size=64))
def test_check_hello_with_the_right_token_and_a_random_role(role: bytes) -> None:
    tok = TOKEN.encode()
    payload = MAGIC + struct.pack("<H", len(tok)) + tok + role
    try:
        out = check_hello(HELLO_KIND, payload, TOKEN)
    except ProtocolError:
        return
    assert isinstance(out, tuple)


# -- live sockets ---------------------------------------------------------------------------


@dataclass
class Cluster:
    session: str
    token: str
    add_one: Any

    @property
    def agent(self) -> str:
        path = freight.nodes()[0]["ObjectStoreSocketName"]
        assert isinstance(path, str)
        return path

    @property
    def driver(self) -> str:
        return str(freight._api._worker.unix_path)

    def worker(self) -> str:
        def live_worker() -> str | None:
            for path in sorted(glob.glob(os.path.join(self.session, "sockets", "worker-*.sock"))):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    try:
                        s.connect(path)
                    except OSError:
                        continue
                return path
            return None

        return str(wait_until(live_worker, what="a worker socket"))

    def path(self, target: str) -> str:
        if target == "agent":
            return self.agent
        if target == "driver":
            return self.driver
        return self.worker()

    def leases_returned(self) -> None:
        """Wait until no CPU is leased, so the next task needs a fresh lease from the agent."""
        wait_until(
            lambda: freight.available_resources().get("CPU") == 1.0,
            what="the node's CPU to be free again",
        )

    def still_works(self) -> None:
        assert freight.get(self.add_one.remote(1), timeout=60) == 2


def start_cluster() -> Cluster:
    freight.init(num_cpus=1)

    # Defined here so that it travels by value to the workers.
    @freight.remote
    def add_one(x: int) -> int:
        return x + 1

    session = str(freight._api._worker.session_dir)
    with open(os.path.join(session, "token")) as fh:
        token = fh.read().strip()
    c = Cluster(session, token, add_one)
    c.still_works()
    return c


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = start_cluster()
    try:
        yield c
    finally:
        freight.shutdown()


def exchange(path: str, data: bytes, *, end_write: bool = False, timeout: float = 15.0) -> bytes:
    """Send ``data``; return what the server sent back before it closed the connection.

    Fails the test when the server keeps the connection open past ``timeout``.
    """
    before = set(threading.enumerate())
    got = talk(path, data, end_write, timeout)
    if path == freight._api._worker.unix_path:
        # The server is this process: let the thread that served the connection end here, so
        # that an exception escaping it fails this test and not a later one.
        for t in set(threading.enumerate()) - before:
            if t.name == "freight-inbound":
                t.join(5.0)
    return got


def talk(path: str, data: bytes, end_write: bool, timeout: float) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        got = b""
        try:
            s.sendall(data)
            if end_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return got  # already closed by the server
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                pytest.fail(f"the server at {path} kept the connection open for {timeout}s")
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk


def replies(data: bytes) -> list[Any]:
    fs_out = recv_all(data)
    assert not any(isinstance(x, Exception) for x in fs_out), fs_out
    return fs_out


def hello(c: Cluster) -> bytes:
    return encode_hello(c.token, ("probe", "test_frames"))


def answered_request(target: str) -> bytes:
    """A request the server answers when it accepts it."""
    if target == "agent":
        # A shape no node can run: the agent answers LeaseRejected at once, holding nothing.
        return encode(Kind.REQUEST_LEASE, (1, {"CPU": 1000.0}, "", "probe"))
    return encode(Kind.MEMORY_REQUEST, (1,))


def expected_reply(target: str) -> type:
    return m.LeaseRejected if target == "agent" else m.MemoryReply


TARGETS = ["agent", "driver", "worker"]


@pytest.mark.parametrize("target", TARGETS)
def test_valid_hello_gets_an_answer(cluster: Cluster, target: str) -> None:
    got = replies(
        exchange(cluster.path(target), hello(cluster) + answered_request(target), end_write=True)
    )
    assert [type(x) for x in got] == [expected_reply(target)]


def hello_frame(body: bytes, kind: int = HELLO_KIND) -> bytes:
    return HEADER.pack(len(body) + 1, kind) + body


def hello_body(token: bytes, role: bytes) -> bytes:
    return MAGIC + struct.pack("<H", len(token)) + token + role


PRE_AUTH: dict[str, Callable[[Cluster], bytes]] = {
    "no hello": lambda c: b"",
    "wrong token": lambda c: encode_hello("x" * len(c.token), ("probe",)),
    "missing token": lambda c: encode_hello("", ("probe",)),
    "token prefix": lambda c: encode_hello(c.token[:-1], ("probe",)),
    "token length past the end": lambda c: hello_frame(
        MAGIC + struct.pack("<H", 4000) + c.token.encode()
    ),
    "bad magic": lambda c: hello_frame(b"XXXX" + hello_body(c.token.encode(), b"")[4:]),
    "hello under another kind": lambda c: hello_frame(
        hello_body(c.token.encode(), pickle.dumps(("probe",))), Kind.HELLO_OK
    ),
    "role not a tuple": lambda c: hello_frame(
        hello_body(c.token.encode(), pickle.dumps(["probe"]))
    ),
}


@pytest.mark.parametrize("attack", list(PRE_AUTH))
@pytest.mark.parametrize("target", TARGETS)
def test_unauthenticated_peer_is_disconnected_unanswered(
    cluster: Cluster, target: str, attack: str
) -> None:
    data = PRE_AUTH[attack](cluster) + answered_request(target)
    assert exchange(cluster.path(target), data) == b""
    cluster.still_works()


@pytest.mark.parametrize("target", TARGETS)
def test_peer_that_closes_at_once_is_forgotten(cluster: Cluster, target: str) -> None:
    assert exchange(cluster.path(target), b"", end_write=True) == b""
    assert exchange(cluster.path(target), HEADER.pack(5, HELLO_KIND)[:3], end_write=True) == b""
    cluster.still_works()


@pytest.mark.parametrize("target", TARGETS)
def test_oversized_hello_is_refused_before_it_is_read(cluster: Cluster, target: str) -> None:
    # A HELLO is a few hundred bytes; one announcing a gigabyte is refused without buffering it.
    data = HEADER.pack(MAX_FRAME, HELLO_KIND) + MAGIC + b"\x00" * 1024
    assert exchange(cluster.path(target), data, timeout=5.0) == b""
    cluster.still_works()


def wrong_direction(target: str) -> bytes:
    if target == "agent":
        return encode(Kind.MEMORY_REPLY, (1, 1, "driver", []))
    return encode(Kind.REQUEST_LEASE, (1, {"CPU": 1.0}, "", "probe"))


def ill_typed(target: str) -> bytes:
    if target == "agent":
        return encode(Kind.REQUEST_LEASE, (1, {"CPU": "lots"}, "", "probe"))
    return encode(Kind.BORROW, (1, 5, "probe"))


POST_AUTH: dict[str, tuple[Callable[[str], bytes], bool]] = {
    # name: (bytes after a valid HELLO, whether the client then ends its side of the stream)
    "garbage payload": (lambda t: HEADER.pack(17, Kind.GET_OBJECT) + b"\x00not a pickle!!!", False),
    "truncated pickle": (lambda t: HEADER.pack(4, Kind.GET_OBJECT) + b"\x80\x05\x95", False),
    "truncated frame": (lambda t: HEADER.pack(100, Kind.GET_OBJECT) + b"\x80\x05", True),
    "truncated header": (lambda t: b"\x07\x00\x00", True),
    "absurd length": (lambda t: HEADER.pack(0xFFFFFFFF, Kind.GET_OBJECT) + b"x" * 64, False),
    "zero length": (lambda t: HEADER.pack(0, Kind.GET_OBJECT), False),
    "unknown kind": (lambda t: encode(200, (1, 2)), False),
    "second hello": (lambda t: encode_hello("anything", ("probe",)), False),
    "wrong shape": (lambda t: encode(Kind.GET_OBJECT, (1,)), False),
    "fields not a tuple": (lambda t: encode(Kind.GET_OBJECT, [1, b"x"]), False),
    "message for another server": (wrong_direction, False),
    "ill-typed fields": (ill_typed, False),
}


@pytest.mark.parametrize("attack", list(POST_AUTH))
@pytest.mark.parametrize("target", TARGETS)
def test_authenticated_peer_sending_bad_frames_is_disconnected(
    cluster: Cluster, target: str, attack: str
) -> None:
    build, end_write = POST_AUTH[attack]
    got = exchange(cluster.path(target), hello(cluster) + build(target), end_write=end_write)
    assert got == b""
    if target == "agent":
        cluster.leases_returned()
    cluster.still_works()


@pytest.mark.parametrize("target", TARGETS)
def test_bad_frame_after_good_ones_still_gets_the_good_answers(
    cluster: Cluster, target: str
) -> None:
    data = hello(cluster) + answered_request(target) + encode(200, ())
    got = replies(exchange(cluster.path(target), data))
    assert [type(x) for x in got] == [expected_reply(target)]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(junk=st.binary(min_size=1, max_size=200))
def test_agent_survives_random_bytes_after_hello(cluster: Cluster, junk: bytes) -> None:
    exchange(cluster.agent, hello(cluster) + junk, end_write=True)


def test_cluster_works_after_the_random_bytes(cluster: Cluster) -> None:
    cluster.leases_returned()
    cluster.still_works()


# -- resource amounts that are not numbers ----------------------------------------------------


@pytest.fixture
def disposable_cluster(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The shared cluster, restarted after a test that failed, in case the test broke it (one
    that passed checked last that the cluster still works)."""
    failed_before = request.session.testsfailed
    yield cluster
    if request.session.testsfailed == failed_before:
        return
    freight.shutdown()
    fresh = start_cluster()
    cluster.session, cluster.token, cluster.add_one = fresh.session, fresh.token, fresh.add_one


def first_reply(path: str, data: bytes, timeout: float = 15.0) -> Any:
    """Send ``data``; return the first message back, or None when the server closes first."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        fs = FrameSocket(s)
        try:
            return fs.recv()
        except TimeoutError:
            pytest.fail(f"the server at {path} neither answered nor closed in {timeout}s")
        except (ConnectionResetError, ProtocolError):
            return None


@pytest.mark.parametrize("amount", [math.nan, -1.0, math.inf])
def test_agent_refuses_a_lease_with_an_impossible_amount(
    disposable_cluster: Cluster, amount: float
) -> None:
    c = disposable_cluster
    request = encode(Kind.REQUEST_LEASE, (1, {"CPU": amount}, "", "probe"))
    reply = first_reply(c.agent, hello(c) + request)
    assert reply is None or type(reply) is m.LeaseRejected, f"{{'CPU': {amount}}}: {reply}"
    c.leases_returned()
    c.still_works()


def test_a_peer_gone_before_the_hello_is_a_connection_error_and_the_socket_is_closed(
    tmp_path: Any,
) -> None:
    """A process that exits between our connect and the hello (its listening socket closed
    with our connection still queued): ConnectionError, and no socket left open for the
    collector to find (a ResourceWarning, an error in this suite)."""
    import gc
    import warnings

    from freight.protocol.frames import connect_unix

    path = str(tmp_path / "gone.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    real_connect = socket.socket.connect

    def connect_then_peer_exits(sock: socket.socket, address: Any) -> None:
        real_connect(sock, address)
        server.close()  # the queued connection is reset: the hello cannot be written

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        socket.socket.connect = connect_then_peer_exits  # type: ignore[method-assign]
        try:
            with pytest.raises(ConnectionError, match="closed the connection"):
                connect_unix(path, "token", ("cli", ""), timeout=2)
        finally:
            socket.socket.connect = real_connect  # type: ignore[method-assign]
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
