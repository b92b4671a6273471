"""Asyncio side of the data plane: the server loop used by node agents."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from freight.util.rpc_faults import FAULTS

from .frames import (
    HEADER,
    HEADER_SIZE,
    MAX_FRAME,
    MAX_HELLO,
    AuthenticationError,
    ProtocolError,
    check_header,
    check_hello,
    decode_message,
    frame_of,
)


class AioConn:
    """One authenticated data-plane connection on an asyncio server."""

    _next_id = 0

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        AioConn._next_id += 1
        self.id = AioConn._next_id
        self.reader = reader
        self.writer = writer
        self.role: tuple[Any, ...] = ()
        self.closed = False

    def send(self, msg: tuple[Any, ...]) -> None:
        if self.closed:
            return
        self.writer.write(frame_of(msg))

    async def recv_frame(self, limit: int = MAX_FRAME) -> tuple[int, bytes] | None:
        try:
            head = await self.reader.readexactly(HEADER_SIZE)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ProtocolError("connection closed inside a frame header") from None
            return None
        length, kind = HEADER.unpack(head)
        check_header(length, limit)
        try:
            payload = await self.reader.readexactly(length - 1)
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed inside a frame") from None
        return kind, payload

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    token: str,
    on_open: Callable[[AioConn], None],
    handle: Callable[[AioConn, Any], Awaitable[None] | None],
    on_close: Callable[[AioConn, BaseException | None], None],
    log_refusal: Callable[[str], None],
    log_malformed: Callable[[str], None],
) -> None:
    """Authenticate one connection, then pass each message to ``handle`` until it ends.

    A peer refused at its greeting goes to ``log_refusal``; an authenticated peer disconnected
    for a malformed frame or an invalid message goes to ``log_malformed``. A transport failure
    (a peer that died resets the socket) is neither: ``on_close`` receives it.
    """
    conn = AioConn(reader, writer)
    try:
        first = await asyncio.wait_for(conn.recv_frame(MAX_HELLO), timeout=10)
        if first is None:
            conn.close()
            return
        conn.role = check_hello(first[0], first[1], token)
    except (AuthenticationError, ProtocolError, TimeoutError) as exc:
        log_refusal(f"refused data-plane connection: {exc}")
        conn.close()
        return
    except OSError:
        # Reset before it said who it is (a port scan, a peer that died): nothing to refuse.
        # Escaping here would print asyncio's traceback for every such peer.
        conn.close()
        return
    on_open(conn)
    error: BaseException | None = None
    try:
        while True:
            frame = await conn.recv_frame()
            if frame is None:
                break
            if FAULTS.kinds:  # an RPC fault on a data-plane kind is in force (rarely)
                closing = await FAULTS.admit_message(frame[0])
                if closing:
                    error = ConnectionAbortedError(closing)
                    break
            msg = decode_message(*frame)
            res = handle(conn, msg)
            if res is not None:
                await res
    except ProtocolError as exc:
        error = exc
        log_malformed(f"closed connection {conn.role[:1]} after malformed input: {exc}")
    except OSError as exc:
        error = exc
    except Exception as exc:
        # A well-formed frame whose fields do not fit its message (wrong types, ids, amounts).
        error = exc
        log_malformed(f"closed connection {conn.role[:1]} after an invalid message: {exc!r}")
    finally:
        conn.close()
        on_close(conn, error)
