"""The reference tables of a node's drivers and workers: every object each refers to, and why.

Each driver and worker listens on ``<session>/sockets/<kind>-<id>.sock`` (the node's session
folder); asked with a ``MemoryRequest`` it answers with its reference table (local references,
pending task arguments, containing objects, borrowers, pins). A node agent asks its own
processes with :func:`memory_rows` to answer the ``Memory`` RPC, which is how `freight memory`
reads every node; :func:`reference_types` names each row's reasons the way Ray's `ray memory`
does. The sockets take the admin token only: the agent holds it, a reader never needs it.
"""

from __future__ import annotations

import glob
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from freight.protocol import frames
from freight.protocol import messages as m

# The reference types Ray's `ray memory` shows, from the holder descriptions of the table.
REFERENCE_TYPES = (
    ("local reference", "LOCAL_REFERENCE"),
    ("pending task argument", "USED_BY_PENDING_TASK"),
    ("contained in", "CAPTURED_IN_OBJECT"),
    ("borrowed by", "BORROWED"),
    ("pinned", "PINNED_IN_MEMORY"),
)
ASKED_AT_ONCE = 64  # processes asked concurrently: all of a node's, in one round most often
CONNECT_TIMEOUT_S = 2.0
ANSWER_TIMEOUT_S = 5.0


def reference_types(held_by: list[str]) -> list[str]:
    out = [name for prefix, name in REFERENCE_TYPES if any(h.startswith(prefix) for h in held_by)]
    return out or ["UNREFERENCED"]


def _ask(sock: str, token: str, wait: float) -> Any:
    """One process's ``MemoryReply``, or None if it did not give one (it exited since the
    folder was listed, or it is not a driver or worker)."""
    try:
        fs = frames.connect_unix(sock, token, ("cli", ""), timeout=min(CONNECT_TIMEOUT_S, wait))
    except ConnectionError:
        return None
    try:
        fs.sock.settimeout(wait)
        fs.send(m.MemoryRequest(1))
        reply = fs.recv()
    except (OSError, frames.ProtocolError):
        return None
    finally:
        fs.close()
    return reply if type(reply) is m.MemoryReply else None


def ask_processes(session_dir: str, token: str, wait: float = ANSWER_TIMEOUT_S) -> list[Any]:
    """The ``MemoryReply`` of every driver and worker with a socket in the session folder that
    answers within ``wait`` seconds."""
    socks = [
        s
        for s in sorted(glob.glob(os.path.join(session_dir, "sockets", "*.sock")))
        if not os.path.basename(s).startswith("agent-")
    ]
    if not socks:
        return []
    with ThreadPoolExecutor(min(ASKED_AT_ONCE, len(socks))) as pool:
        replies = list(pool.map(lambda s: _ask(s, token, wait), socks))
    return [r for r in replies if r is not None]


def memory_rows(session_dir: str, token: str) -> list[dict[str, Any]]:
    """One row per object each driver and worker of the session folder refers to."""
    return rows_of(ask_processes(session_dir, token))


def rows_of(replies: list[Any]) -> list[dict[str, Any]]:
    """The rows of processes' ``MemoryReply`` messages."""
    rows: list[dict[str, Any]] = []
    for reply in replies:
        for oid, size, where, owned, holders, site in reply.rows:
            rows.append(
                {
                    "object_id": oid,
                    "size": size,
                    "where": where,
                    "node_id": reply.node_id,
                    "process": f"{reply.role} pid={reply.pid}",
                    "owner": owned,
                    "held_by": holders,
                    "reference_types": reference_types(holders),
                    "call_site": site,
                }
            )
    return rows
