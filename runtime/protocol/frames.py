"""The data-plane wire format: authenticated, length-prefixed frames over stream sockets.

Within a node the sockets are Unix-domain; between nodes they are TCP. A process's data-plane
address is ``<unix path>|<host>:<port>`` (just the path when it has no TCP listener):
:func:`connect` takes the Unix path when the caller is on the same node, TCP otherwise.

A frame is ``[u32 length][u8 kind][payload]`` where ``length`` counts the kind byte and the
payload. The payload of every kind but HELLO is a pickle (protocol 5) of the tuple of that kind's
message (``freight.protocol.messages``). The first frame of a connection must be HELLO, whose
payload is raw bytes (``MAGIC``, u16 token length, token, then a pickled role tuple); it is
checked before anything else is decoded, so an unauthenticated peer never reaches the unpickler.
"""

from __future__ import annotations

import hmac
import os
import pickle
import socket
import struct
import threading
import traceback
from collections.abc import Callable
from typing import Any

from freight.config import settings

from .messages import KIND_OF, build

MAGIC = b"FRT1"
HEADER = struct.Struct("<IB")
HEADER_SIZE = HEADER.size
MAX_HELLO = 64 * 1024  # the unauthenticated first frame is small; never buffer more
HELLO_KIND = 0
_TOKEN_LEN = struct.Struct("<H")


# Read once: every process of a cluster starts with the same environment. The setting's
# declaration keeps it between 1 MiB and the 32 bits of the frame header.
MAX_FRAME: int = settings.max_frame_bytes


class ProtocolError(Exception):
    """A peer sent something that is not a valid frame; the connection is closed."""


CALL_HINT = (
    "Arguments over FREIGHT_INLINE_MAX_BYTES already go through the object store: what is "
    "left is the function itself (values its closure captures) or a great many small values. "
    "put() large values and pass the references instead."
)


class FrameTooLargeError(ValueError):
    """A message is larger than a frame may be; it was not sent (the connection is intact)."""

    def __init__(self, size: int, what: str = "a message", hint: str = CALL_HINT) -> None:
        super().__init__(
            f"{what} takes {size} bytes, more than the data-plane frame limit of {MAX_FRAME} "
            f"bytes (FREIGHT_MAX_FRAME_BYTES), so it was not sent. {hint}"
        )
        self.size = size

    def __reduce__(self) -> Any:  # raised again in the caller's process, message and all
        return _rebuild_too_large, (self.args[0], self.size)


def _rebuild_too_large(message: str, size: int) -> FrameTooLargeError:
    error = FrameTooLargeError.__new__(FrameTooLargeError)
    ValueError.__init__(error, message)
    error.size = size
    return error


def frame_of(msg: tuple[Any, ...]) -> bytes:
    """Encode one typed message as a frame; FrameTooLargeError when it would exceed the limit
    (a receiver would refuse it and close the connection)."""
    payload = pickle.dumps(tuple(msg), protocol=5)
    if len(payload) + 1 > MAX_FRAME:
        raise FrameTooLargeError(len(payload) + 1, f"a {type(msg).__name__} message")
    return HEADER.pack(len(payload) + 1, KIND_OF[type(msg)]) + payload


class AuthenticationError(ProtocolError):
    """A peer's HELLO frame carried a wrong or missing token."""


def encode(kind: int, message: tuple[Any, ...]) -> bytes:
    """Encode one frame."""
    payload = pickle.dumps(message, protocol=5)
    return HEADER.pack(len(payload) + 1, kind) + payload


def encode_hello(token: str, role: tuple[Any, ...]) -> bytes:
    """The first frame a client sends: magic, token, and who it is."""
    tok = token.encode()
    body = MAGIC + _TOKEN_LEN.pack(len(tok)) + tok + pickle.dumps(role, protocol=5)
    return HEADER.pack(len(body) + 1, HELLO_KIND) + body


def check_hello(kind: int, payload: bytes | memoryview, token: str) -> tuple[Any, ...]:
    """Verify a HELLO frame against the cluster token; return the peer's role tuple."""
    if kind != HELLO_KIND:
        raise AuthenticationError(f"first frame must be HELLO, got kind {kind}")
    payload = bytes(payload)
    if payload[:4] != MAGIC or len(payload) < 6:
        raise AuthenticationError("not a freight peer (bad magic in HELLO)")
    (n,) = _TOKEN_LEN.unpack_from(payload, 4)
    offered = payload[6 : 6 + n]
    if len(offered) != n or not hmac.compare_digest(offered, token.encode()):
        raise AuthenticationError("wrong or missing cluster token")
    role = decode_payload(payload[6 + n :])
    if not isinstance(role, tuple):
        raise ProtocolError("HELLO role is not a tuple")
    return role


def decode_payload(payload: bytes | memoryview) -> Any:
    """Unpickle a frame's payload, turning every decoding failure into ProtocolError."""
    try:
        return pickle.loads(payload)
    except Exception as exc:
        raise ProtocolError(f"undecodable payload: {type(exc).__name__}: {exc}") from None


def decode_message(kind: int, payload: bytes | memoryview) -> Any:
    """Decode a frame into its typed message, or raise ProtocolError."""
    fields = decode_payload(payload)
    try:
        return build(kind, fields)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def check_header(length: int, limit: int = MAX_FRAME) -> None:
    """Reject frame lengths that cannot be valid."""
    if length < 1 or length > limit:
        raise ProtocolError(f"frame length {length} outside 1..{limit}")


RECV_CHUNK = 65536  # bytes a reader asks the kernel for at once (whatever has arrived)


class FrameSocket:
    """A blocking socket speaking frames; ``send`` is thread-safe, ``recv`` is for one reader."""

    __slots__ = ("_buf", "_chunk", "_lock", "closed", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._chunk: memoryview | None = None  # the reader's receive buffer, made on first use
        self.closed = False

    def send(self, msg: tuple[Any, ...]) -> None:
        """Send one typed message (a NamedTuple of ``freight.protocol.messages``); raise
        FrameTooLargeError, sending nothing, when it is larger than a frame may be."""
        data = frame_of(msg)
        with self._lock:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def _fill(self, n: int) -> bool:
        buf = self._buf
        while len(buf) < n:
            need = n - len(buf)
            if need > RECV_CHUNK:
                chunk = self.sock.recv(need)  # the body of a large frame: one read of its size
                if not chunk:
                    return False
                buf += chunk
                continue
            # Small reads go through one reused buffer: recv(size) would allocate size bytes
            # per call, which glibc serves with mmap/mremap/munmap once it is large.
            view = self._chunk
            if view is None:
                view = self._chunk = memoryview(bytearray(RECV_CHUNK))
            got = self.sock.recv_into(view)
            if not got:
                return False
            buf += view[:got]
        return True

    def recv_raw(self, limit: int = MAX_FRAME) -> tuple[int, memoryview] | None:
        """Read one frame; return (kind, payload) or None at a clean end of stream."""
        if not self._fill(HEADER_SIZE):
            if self._buf:
                raise ProtocolError("connection closed inside a frame header")
            return None
        length, kind = HEADER.unpack_from(self._buf)
        check_header(length, limit)
        total = HEADER_SIZE + length - 1
        if not self._fill(total):
            raise ProtocolError("connection closed inside a frame")
        payload = bytes(self._buf[HEADER_SIZE:total])
        del self._buf[:total]
        return kind, memoryview(payload)

    def recv(self) -> Any:
        """Read one typed message; None at a clean end of stream; ProtocolError if malformed."""
        got = self.recv_raw()
        if got is None:
            return None
        kind, payload = got
        return decode_message(kind, payload)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def connect_unix(
    path: str, token: str, role: tuple[Any, ...], timeout: float = 10.0
) -> FrameSocket:
    """Connect to a data-plane socket and authenticate; raise ConnectionError when it fails."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ConnectionError(f"cannot connect to freight socket {path}: {exc}") from None
    sock.settimeout(None)
    return _hello(FrameSocket(sock), token, role, path)


def split_address(address: str) -> tuple[str, str]:
    """``(unix_path, "host:port")`` of a data-plane address; either part may be empty."""
    path, _, tcp = address.partition("|")
    if not tcp and ":" in path and not path.startswith("/"):
        return "", path  # a bare host:port (a node agent's TCP data plane)
    return path, tcp


def connect_tcp(
    host_port: str, token: str, role: tuple[Any, ...], timeout: float = 10.0
) -> FrameSocket:
    """Connect to a TCP data-plane listener and authenticate; ConnectionError when it fails."""
    host, _, port = host_port.rpartition(":")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"cannot connect to freight at {host_port}: {exc}") from None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # frames are whole messages
    return _hello(FrameSocket(sock), token, role, host_port)


def _hello(fs: FrameSocket, token: str, role: tuple[Any, ...], where: str) -> FrameSocket:
    """Send the hello on a new connection; the peer may be gone already (it exited between
    our connect and this write): then the socket is closed here, not left to the collector."""
    try:
        fs.send_raw(encode_hello(token, role))
    except OSError as exc:
        fs.close()
        raise ConnectionError(f"freight at {where} closed the connection: {exc}") from None
    return fs


def connect(
    address: str,
    token: str,
    role: tuple[Any, ...],
    local_dir: str | None = None,
    timeout: float = 10.0,
) -> FrameSocket:
    """Connect to a data-plane ``address``: over its Unix socket when that lies in
    ``local_dir`` (this node's socket folder; with None, when the path exists here), else over
    TCP."""
    path, tcp = split_address(address)
    if path and (
        not tcp
        or (os.path.dirname(path) == local_dir if local_dir is not None else os.path.exists(path))
    ):
        return connect_unix(path, token, role, timeout)
    if not tcp:
        raise ConnectionError(f"no route to freight address {address!r}")
    return connect_tcp(tcp, token, role, timeout)


def serve_reader(
    fs: FrameSocket,
    handle: Callable[[Any], None],
    on_close: Callable[[BaseException | None], None],
) -> threading.Thread:
    """Start a daemon thread that reads frames from ``fs`` and passes each to ``handle``."""

    def run() -> None:
        error: BaseException | None = None
        try:
            while True:
                msg = fs.recv()
                if msg is None:
                    break
                try:
                    handle(msg)
                except (OSError, ProtocolError):
                    raise
                except Exception:
                    # A failing handler is a bug in this process; keep the connection serving.
                    traceback.print_exc()
        except (OSError, ProtocolError) as exc:
            error = exc
        finally:
            fs.close()
            on_close(error)

    t = threading.Thread(target=run, name="freight-reader", daemon=True)
    t.start()
    return t
