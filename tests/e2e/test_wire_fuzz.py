"""Garbage on the wire: the frame decoders, and a live node agent and head, fed generated inputs.

Issue "Reliability of the wire": malformed or truncated frames, oversized messages and random
bytes sent to the data-plane and gRPC ports close that connection and are logged; the agent keeps
serving. Every input is drawn by hypothesis, ``BATCH`` to an example, so each count below is
``max_examples * BATCH`` (the live barrages also assert how many connections they made):

==============================================  ======
decoders, offline (both readers, every input)   10,000
agent Unix socket, before the greeting           2,000
agent Unix socket, after the greeting            2,500
agent TCP data plane, before the greeting        1,500
agent TCP data plane, after the greeting         2,000
agent and head gRPC ports, raw bytes             1,200
agent and head gRPC, undecodable requests        1,000
agent TCP data plane, reset mid-frame              400
==============================================  ======

Live: 10,600 inputs. One cluster (``freight.init``: a head and one agent) serves them all, and
after each barrage it must still run a task and store an object, from the same agent and head
processes; the agent's ``/metrics`` and log must show one refusal (before the greeting) or one
protocol error (after it) per garbage connection.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import struct
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import freight
from freight.protocol.aio import AioConn
from freight.protocol.frames import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MAX_FRAME,
    MAX_HELLO,
    FrameSocket,
    ProtocolError,
    check_header,
    check_hello,
    decode_message,
    encode,
    encode_hello,
)
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.messages import KIND_OF, MESSAGE_TYPES
from freight.testing import wait_for_condition as wait_until
from freight.util.grpc_auth import sync_channel

TOKEN = "offline-token-0123456789abcdef"
ROLE = ("fuzz", "test_wire_fuzz")  # a role that owns nothing on the agent
DEADLINE = 10.0  # how long a server may keep a garbage connection open

# -- generated inputs -------------------------------------------------------------------------

KINDS = st.integers(0, 255)
# Field values of every type the messages carry. Drawing from a fixed list keeps generation cheap
# (nested one_of strategies cost milliseconds an example, which 20,000 examples cannot afford).
VALUES = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    math.nan,
    b"",
    b"\x01" * 20,
    "",
    "x" * 30,
    [1, "a"],
    {"CPU": 1.0},
    (b"o" * 20, "/tmp/o.sock", b"inline"),
]
FIELDS = st.sampled_from(VALUES)
# A frame of every message kind that decodes (the decoder checks the number of fields only),
# four field mixes each.
CORPUS = [
    encode(kind, tuple(VALUES[(i + shift) % len(VALUES)] for i in range(len(cls._fields))))
    for kind, cls in sorted(MESSAGE_TYPES.items())
    for shift in (0, 3, 7, 11)
]
VALID_FRAMES = st.sampled_from(CORPUS)


@st.composite
def truncated(draw: Any, frames: st.SearchStrategy[bytes] = VALID_FRAMES) -> bytes:
    """A frame cut short: at least one byte, not all of them."""
    frame = draw(frames)
    return frame[: draw(st.integers(1, len(frame) - 1))]


@st.composite
def bit_flipped(draw: Any, frames: st.SearchStrategy[bytes] = VALID_FRAMES) -> bytes:
    """A frame with one to eight of its bits flipped (header included)."""
    frame = bytearray(draw(frames))
    bits = draw(st.lists(st.integers(0, len(frame) * 8 - 1), min_size=1, max_size=8, unique=True))
    for bit in bits:
        frame[bit // 8] ^= 1 << (bit % 8)
    return bytes(frame)


def oversized(limit: int) -> st.SearchStrategy[bytes]:
    """A header announcing a length the reader must refuse (0, or over ``limit``), and a tail."""
    lengths = st.just(0) | st.integers(limit + 1, 2**32 - 1)
    return st.builds(
        lambda n, kind, tail: HEADER.pack(n, kind) + tail, lengths, KINDS, st.binary(max_size=64)
    )


def greeting_garbage(token: str) -> st.SearchStrategy[bytes]:
    """What a peer may send instead of a valid greeting with ``token``."""
    hello = encode_hello(token, ROLE)
    return st.one_of(
        st.binary(min_size=1, max_size=300),
        truncated(st.just(hello)),
        bit_flipped(st.just(hello)),
        st.text(max_size=40).filter(lambda t: t != token).map(lambda t: encode_hello(t, ROLE)),
        oversized(MAX_HELLO),
        VALID_FRAMES,  # a message before the greeting
    )


# What an authenticated peer may send instead of a valid frame.
FRAME_GARBAGE = st.one_of(
    st.binary(min_size=1, max_size=300),
    truncated(),
    bit_flipped(),
    oversized(MAX_FRAME),
    # unknown kinds (a second greeting among them), wrong numbers of fields, fields not a tuple
    st.builds(encode, KINDS, FIELDS | st.lists(FIELDS, max_size=16).map(tuple)),
)

GOOD, BAD, SHORT = "good", "bad", "short"


def verdict(data: bytes, token: str | None = None) -> str:
    """What a server must do with the first frame of ``data`` (the greeting, given ``token``).

    ``bad``: refuse it once it has arrived; ``short``: wait for the rest (so it is refused at the
    end of the stream); ``good``: accept it.
    """
    if len(data) < HEADER_SIZE:
        return SHORT
    length, kind = HEADER.unpack_from(data)
    try:
        check_header(length, MAX_FRAME if token is None else MAX_HELLO)
    except ProtocolError:
        return BAD
    end = HEADER_SIZE + length - 1
    if len(data) < end:
        return SHORT
    try:
        if token is None:
            decode_message(kind, data[HEADER_SIZE:end])
        else:
            check_hello(kind, data[HEADER_SIZE:end], token)
    except ProtocolError:
        return BAD
    return GOOD


# -- the decoders, offline ----------------------------------------------------------------------


def read_threaded(data: bytes) -> list[Any]:
    """What a threaded server (FrameSocket) reads from ``data``: messages, then the end or the
    ProtocolError that closes the connection."""
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(DEADLINE)  # never reached: the stream ends
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        fs = FrameSocket(b)
        out: list[Any] = []
        while True:
            try:
                msg = fs.recv()
            except ProtocolError as exc:
                return [*out, exc]
            if msg is None:
                return out
            out.append(msg)


async def read_asyncio(data: bytes, end: bool = True) -> list[Any]:
    """What the node agent reads from ``data`` (AioConn, as ``serve_connection`` does)."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if end:
        reader.feed_eof()
    conn = AioConn(reader, None)  # type: ignore[arg-type]  # reading needs no writer
    out: list[Any] = []
    while True:
        try:
            frame = await conn.recv_frame()
            if frame is None:
                return out
            out.append(decode_message(*frame))
        except ProtocolError as exc:
            return [*out, exc]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def read_both(loop: asyncio.AbstractEventLoop, data: bytes) -> list[Any]:
    """Read ``data`` with both readers, which must agree; only messages and one final
    ProtocolError may come out (any other exception fails the test)."""
    threaded = read_threaded(data)
    assert [repr(x) for x in threaded] == [
        repr(x) for x in loop.run_until_complete(read_asyncio(data))
    ]
    assert all(type(x) in KIND_OF for x in threaded[:-1])
    assert not threaded or type(threaded[-1]) in KIND_OF or isinstance(threaded[-1], ProtocolError)
    return threaded


def batches(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """``BATCH`` inputs an example: hypothesis's own cost an example (about a millisecond) would
    otherwise be most of the run. A failing input still shrinks, inside its batch."""
    return st.lists(strategy, min_size=BATCH, max_size=BATCH)


BATCH = 10
RANDOM_STREAMS = st.binary(max_size=512) | st.lists(
    VALID_FRAMES | st.binary(max_size=32), max_size=4
).map(b"".join)


@settings(max_examples=2500 // BATCH, deadline=None)
@given(batch=batches(RANDOM_STREAMS))
def test_random_bytes_read_as_messages_then_an_end_or_a_protocol_error(
    loop: asyncio.AbstractEventLoop, batch: list[bytes]
) -> None:
    for data in batch:
        read_both(loop, data)


@settings(max_examples=2500 // BATCH, deadline=None)
@given(batch=batches(st.tuples(st.lists(VALID_FRAMES, max_size=2), truncated())))
def test_a_truncated_frame_never_decodes(
    loop: asyncio.AbstractEventLoop, batch: list[tuple[list[bytes], bytes]]
) -> None:
    for before, cut in batch:
        out = read_both(loop, b"".join(before) + cut)
        assert len(out) == len(before) + 1
        assert isinstance(out[-1], ProtocolError)
        assert "closed inside a frame" in str(out[-1])


@settings(max_examples=2500 // BATCH, deadline=None)
@given(batch=batches(bit_flipped()))
def test_a_bit_flipped_frame_decodes_or_is_refused(
    loop: asyncio.AbstractEventLoop, batch: list[bytes]
) -> None:
    for data in batch:
        assert read_both(loop, data)  # a message or a ProtocolError, never a silent end


@settings(max_examples=1000 // BATCH, deadline=None)
@given(batch=batches(oversized(MAX_FRAME)))
def test_an_impossible_length_is_refused_from_the_header_alone(
    loop: asyncio.AbstractEventLoop, batch: list[bytes]
) -> None:
    for data in batch:
        # The stream does not end: a reader that waited for the announced body would time out.
        out = loop.run_until_complete(asyncio.wait_for(read_asyncio(data, end=False), DEADLINE))
        assert len(out) == 1 and "outside" in str(out[0])
        assert [repr(x) for x in read_threaded(data)] == [repr(out[0])]


@settings(max_examples=1500 // BATCH, deadline=None)
@given(batch=batches(greeting_garbage(TOKEN)))
def test_a_greeting_is_accepted_only_with_the_exact_token(batch: list[bytes]) -> None:
    token = TOKEN.encode()
    for data in batch:
        if verdict(data, TOKEN) == GOOD:  # a bit flipped in the role, say
            body = data[HEADER_SIZE:]
            assert body[:6] == MAGIC + struct.pack("<H", len(token))
            assert body[6 : 6 + len(token)] == token


# -- one live cluster ---------------------------------------------------------------------------


@dataclass
class Live:
    token: str
    hello: bytes
    unix: str  # the agent's data socket
    tcp: tuple[str, int]  # the agent's TCP data plane
    agent_grpc: str
    head_grpc: str
    processes: dict[str, psutil.Process]  # agent and head, as they were at the start
    node_id: str
    metrics_url: str  # the agent's /metrics
    log: str  # the agent's log file (one JSON record a line)
    err: str  # the agent's stderr
    add_one: Any

    def figures(self) -> dict[str, float]:
        """The agent's refusal and protocol-error counters, scraped from its /metrics."""
        with urllib.request.urlopen(self.metrics_url, timeout=DEADLINE) as r:
            text = r.read().decode()
        out = {"refused": 0.0, "malformed": 0.0}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "freight_auth_refused_total" and s.labels.get("plane") == "data":
                    out["refused"] = s.value
                elif s.name == "freight_protocol_errors_total":
                    out["malformed"] = s.value
        return out

    def log_lines(self, text: str) -> int:
        with open(self.log) as fh:
            return sum(text in line for line in fh)

    def assert_counted(
        self, before: dict[str, float], lines_before: dict[str, int], refused: int, malformed: int
    ) -> None:
        """The agent's counters and log grew by exactly ``refused`` and ``malformed``."""
        want = {
            "refused": before["refused"] + refused,
            "malformed": before["malformed"] + malformed,
        }
        wait_until(lambda: self.figures() == want, DEADLINE, f"the agent to count {want}")
        lines = {k: lines_before[k] + n for k, n in ((REFUSED, refused), (MALFORMED, malformed))}
        wait_until(
            lambda: {k: self.log_lines(k) for k in lines} == lines,
            DEADLINE,
            f"the agent to log {lines}",
        )

    def log_counts(self) -> dict[str, int]:
        return {k: self.log_lines(k) for k in (REFUSED, MALFORMED)}

    def still_serves(self) -> None:
        """A task and an object round trip, through the same agent and head processes."""
        assert freight.get(self.add_one.remote(1), timeout=60) == 2
        blob = os.urandom(1 << 20)  # large enough to live in the agent's object store
        assert freight.get(freight.put(blob), timeout=60) == blob
        for name, proc in self.processes.items():
            assert proc.is_running(), f"the {name} process {proc.pid} is gone"
        node = next(n for n in freight.nodes() if n["NodeID"] == self.node_id)
        assert node["Alive"]


REFUSED = "refused data-plane connection"
MALFORMED = "after malformed input"


def _agent_metrics_url(head_metrics: str, node_id: str) -> str | None:
    with urllib.request.urlopen(f"http://{head_metrics}/sd", timeout=DEADLINE) as r:
        groups = json.loads(r.read())
    for g in groups:
        if g["labels"].get("node_id") == node_id:
            return f"http://{g['targets'][0]}/metrics"
    return None


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    freight.init(num_cpus=1)

    # Defined here so that it travels by value to the worker.
    @freight.remote
    def add_one(x: int) -> int:
        return x + 1

    try:
        session = str(freight._api._worker.session_dir)
        with open(os.path.join(session, "token")) as fh:
            token = fh.read().strip()
        with open(os.path.join(session, "head.json")) as fh:
            head = json.load(fh)
        (row,) = freight.nodes()
        node_id = row["NodeID"]
        with open(os.path.join(session, "nodes", f"{node_id}.json")) as fh:
            agent = json.load(fh)
        host, _, port = row["DataAddress"].rpartition(":")
        url = wait_until(
            lambda: _agent_metrics_url(head["metrics_address"], node_id),
            30,
            "the head to list the agent's /metrics",
        )
        logs = os.path.join(session, "logs", f"agent-{node_id[:12]}")
        c = Live(
            token=token,
            hello=encode_hello(token, ROLE),
            unix=row["ObjectStoreSocketName"],
            tcp=(host.strip("[]"), int(port)),
            agent_grpc=agent["agent_address"],
            head_grpc=head["address"],
            processes={"agent": psutil.Process(agent["pid"]), "head": psutil.Process(head["pid"])},
            node_id=node_id,
            metrics_url=url,
            log=logs + ".log",
            err=logs + ".err",
            add_one=add_one,
        )
        c.still_serves()
        yield c
    finally:
        freight.shutdown()


def reply_until_closed(
    address: str | tuple[str, int], data: bytes, *, end_write: bool, timeout: float = DEADLINE
) -> bytes:
    """Send ``data`` (then end our side when ``end_write``); return what the server sent before
    it closed the connection. Fails the test when the server keeps it open for ``timeout``."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        got = b""
        try:
            s.sendall(data)
            if end_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return got  # closed before it read it all
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                pytest.fail(f"{address} kept the connection open {timeout}s after {data[:80]!r}")
            except ConnectionResetError:
                return got  # closed with some of it unread
            if not chunk:
                return got
            got += chunk


LIVE = settings(
    deadline=None,
    database=None,  # inputs depend on this cluster's token: nothing to replay next time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def barrage(n: int, strategy: st.SearchStrategy[Any], send: Callable[[Any], None]) -> None:
    """Pass ``n`` generated inputs to ``send``, in batches of ``BATCH``."""
    sent = 0

    @settings(LIVE, max_examples=n // BATCH)
    @given(batches(strategy))
    def one(batch: list[Any]) -> None:
        nonlocal sent
        for junk in batch:
            send(junk)
            sent += 1

    one()
    assert sent == n


def data_plane_barrage(c: Live, address: str | tuple[str, int], n: int, *, greeted: bool) -> None:
    """``n`` garbage connections to a data-plane ``address``: each is closed unanswered, as soon
    as its first frame is known bad, and counted and logged once."""
    token = None if greeted else c.token  # what the first frame is checked against
    before, lines = c.figures(), c.log_counts()

    def send(junk: bytes) -> None:
        data = c.hello + junk if greeted else junk
        # End our side only when the frame is incomplete: a bad one must be refused without it.
        reply = reply_until_closed(address, data, end_write=verdict(junk, token) == SHORT)
        assert reply == b"", f"{address} answered {junk[:80]!r} with {reply[:80]!r}"

    garbage = FRAME_GARBAGE if greeted else greeting_garbage(c.token)
    # A valid frame (a bit flipped in a string, say) is served, not refused: not garbage.
    barrage(n, garbage.filter(lambda junk: verdict(junk, token) != GOOD), send)
    c.assert_counted(before, lines, refused=0 if greeted else n, malformed=n if greeted else 0)
    c.still_serves()


# -- the data plane -----------------------------------------------------------------------------


def test_unix_socket_refuses_garbage_instead_of_a_greeting(live: Live) -> None:
    data_plane_barrage(live, live.unix, 2000, greeted=False)


def test_unix_socket_closes_on_garbage_after_the_greeting(live: Live) -> None:
    data_plane_barrage(live, live.unix, 2500, greeted=True)


def test_tcp_data_plane_refuses_garbage_instead_of_a_greeting(live: Live) -> None:
    data_plane_barrage(live, live.tcp, 1500, greeted=False)


def test_tcp_data_plane_closes_on_garbage_after_the_greeting(live: Live) -> None:
    data_plane_barrage(live, live.tcp, 2000, greeted=True)


def test_tcp_data_plane_shrugs_off_peers_that_reset_mid_frame(live: Live) -> None:
    # A reset is no input to refuse: nothing is counted for certain (the agent may have read a
    # bad frame before the reset came), but nothing may escape the agent's connection handler.
    with open(live.err) as fh:
        before = fh.read().count("Traceback")

    def send(args: tuple[bool, bytes]) -> None:
        greeted, junk = args
        with socket.create_connection(live.tcp, timeout=DEADLINE) as s:
            s.sendall(live.hello + junk if greeted else junk)
            # Closed with linger 0: a reset, not an end of stream.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    barrage(400, st.tuples(st.booleans(), truncated() | st.binary(max_size=8)), send)
    live.still_serves()
    with open(live.err) as fh:
        assert fh.read().count("Traceback") == before


# -- the gRPC ports -----------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # how every HTTP/2 connection starts


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + stream.to_bytes(4) + payload


H2_FRAMES = st.builds(
    _h2_frame,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 2**31 - 1),
    st.binary(max_size=64),
)
RAW_GRPC = st.one_of(
    # not HTTP/2 at all: refused from the first bytes, without an end of stream
    st.binary(min_size=1, max_size=300).filter(lambda b: not PREFACE.startswith(b[: len(PREFACE)])),
    # HTTP/2 that goes wrong after the preface (followed by the end of our side)
    st.tuples(st.just(PREFACE), st.binary(max_size=300)).map(b"".join),
    st.lists(H2_FRAMES, min_size=1, max_size=4).map(lambda fs: PREFACE + b"".join(fs)),
)


@pytest.mark.parametrize("server", ["agent", "head"])
def test_grpc_port_closes_on_raw_garbage(live: Live, server: str) -> None:
    host, _, port = (live.agent_grpc if server == "agent" else live.head_grpc).rpartition(":")

    def send(junk: bytes) -> None:
        # Not HTTP/2 is refused once the preface is in; what follows a good preface may be a
        # frame still incomplete, so that input ends our side. gRPC may answer (SETTINGS,
        # GOAWAY): what counts is that it hangs up.
        http2 = junk.startswith(PREFACE)
        reply_until_closed((host, int(port)), junk, end_write=http2 or len(junk) < len(PREFACE))

    barrage(600, RAW_GRPC, send)
    live.still_serves()


def _field(number: int, raw: bytes) -> bytes:
    """A length-delimited protobuf field: the text fields of a request, holding any bytes."""
    return bytes([number << 3 | 2, len(raw)]) + raw


GRPC_GARBAGE = st.one_of(
    st.binary(min_size=1, max_size=200),
    st.lists(
        st.builds(_field, st.integers(1, 3), st.binary(max_size=100)), min_size=1, max_size=3
    ).map(b"".join),
    truncated(
        st.builds(
            lambda a, n, ns: pb.GetActorRequest(
                actor_id=a, name=n, namespace=ns
            ).SerializeToString(),
            st.text(max_size=20),
            st.text(max_size=20),
            st.text(min_size=1, max_size=20),
        )
    ),
)
# Methods that only read: a request that happens to decode must not change anything.
GRPC_METHODS = {
    "agent": [
        "NodeAgentService/GetNodeStats",
        "NodeAgentService/CheckHealth",
        "NodeAgentService/ListWorkers",
    ],
    "head": [
        "HeadService/ClusterStatus",
        "HeadService/GetActor",
        "HeadService/KVGet",
        "HeadService/GetJob",
    ],
}
# What a request that does not decode (or names nothing) may end with: an error, not a hang.
REFUSALS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.NOT_FOUND,
}


@pytest.mark.parametrize("server", ["agent", "head"])
def test_grpc_call_with_an_undecodable_request_fails_alone(live: Live, server: str) -> None:
    channel = sync_channel(live.agent_grpc if server == "agent" else live.head_grpc, live.token)
    calls = [channel.unary_unary(f"/freight.v1.{m}") for m in GRPC_METHODS[server]]
    refused = 0

    def send(args: tuple[int, bytes]) -> None:
        nonlocal refused
        which, request = args
        try:
            reply = calls[which](request, timeout=DEADLINE)  # raw bytes both ways
        except grpc.RpcError as exc:
            assert exc.code() in REFUSALS, f"{GRPC_METHODS[server][which]}({request!r}): {exc}"
            refused += 1
        else:
            assert isinstance(reply, bytes)

    try:
        barrage(500, st.tuples(st.integers(0, len(calls) - 1), GRPC_GARBAGE), send)
        # The same channel (one HTTP/2 connection) still serves a well-formed call.
        status = channel.unary_unary(
            "/freight.v1.HeadService/ClusterStatus"
            if server == "head"
            else "/freight.v1.NodeAgentService/CheckHealth"
        )
        assert isinstance(status(b"", timeout=DEADLINE), bytes)
    finally:
        channel.close()
    assert refused > 250, f"only {refused} of 500 garbage requests were refused"
    live.still_serves()


@pytest.mark.parametrize("server", ["agent", "head"])
def test_an_undecodable_grpc_request_is_refused_by_name_and_logged(live: Live, server: str) -> None:
    address = live.agent_grpc if server == "agent" else live.head_grpc
    method = "NodeAgentService/GetNodeStats" if server == "agent" else "HeadService/GetJob"
    log = live.log if server == "agent" else os.path.join(os.path.dirname(live.log), "head.log")
    channel = sync_channel(address, live.token)
    try:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(f"/freight.v1.{method}")(b"\xff\xff\xff", timeout=DEADLINE)
    finally:
        channel.close()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be decoded" in err.value.details()
    name = method.rpartition("/")[2]

    def logged() -> bool:
        with open(log) as fh:
            return any(f"malformed {name} request" in line for line in fh)

    wait_until(logged, 30, f"the {server}'s log to name the refusal")
    live.still_serves()
