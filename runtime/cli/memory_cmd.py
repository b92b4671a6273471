"""`freight memory`: every live object reference, who holds it and why, grouped and sorted.

Each driver and worker of the session is asked over its owner socket what it refers to (its
reference table: local references, pending task arguments, containing objects, borrowers,
pins), so the answer is exact for this machine's processes. Where an object lies comes from the
owner ("inline", "shared memory"), and the stores (through the state API) say which objects are
spilled to disk now.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Any

from rich.table import Table

from freight.client import access
from freight.protocol import frames
from freight.protocol import messages as m
from freight.util.tokens import read_token_file

from . import common
from .status import _gib, status_report

# The reference types Ray's `ray memory` shows, from the holder descriptions of the table.
REFERENCE_TYPES = (
    ("local reference", "LOCAL_REFERENCE"),
    ("pending task argument", "USED_BY_PENDING_TASK"),
    ("contained in", "CAPTURED_IN_OBJECT"),
    ("borrowed by", "BORROWED"),
    ("pinned", "PINNED_IN_MEMORY"),
)
GROUPS = ("node", "callsite", "process", "none")
SPILLED = "spilled to disk"
SPILLED_LIMIT = 1_000_000  # spilled objects asked for (the state API pages through them)
SORTS = ("size", "count", "object")


def reference_types(held_by: list[str]) -> list[str]:
    out = [name for prefix, name in REFERENCE_TYPES if any(h.startswith(prefix) for h in held_by)]
    return out or ["UNREFERENCED"]


def memory_rows(session_dir: str, token: str) -> list[dict[str, Any]]:
    """Ask every driver and worker of the session what it holds."""
    rows: list[dict[str, Any]] = []
    for sock in sorted(glob.glob(os.path.join(session_dir, "sockets", "*.sock"))):
        if os.path.basename(sock).startswith("agent-"):
            continue
        try:
            fs = frames.connect_unix(sock, token, ("cli", ""), timeout=2)
        except ConnectionError:
            continue  # a process that exited since the listing
        try:
            fs.sock.settimeout(5)
            fs.send(m.MemoryRequest(1))
            reply = fs.recv()
        except (OSError, frames.ProtocolError):
            continue
        finally:
            fs.close()
        if type(reply) is not m.MemoryReply:
            continue
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


def mark_spilled(rows: list[dict[str, Any]], address: str) -> str:
    """Set ``where`` of the rows whose objects a node's store has spilled to disk; a warning
    when the state API could not say (the rows then keep what their owners said)."""
    from freight.state import list_state

    try:
        spilled = list_state("objects", ["spilled=true"], limit=SPILLED_LIMIT, address=address)
    except (ConnectionError, ValueError) as e:
        return f"could not ask which objects are spilled: {e}"
    ids = {r["object_id"] for r in spilled}
    for r in rows:
        if r["where"] == "shared memory" and r["object_id"] in ids:
            r["where"] = SPILLED
    return ""


def group_rows(rows: list[dict[str, Any]], by: str, sort: str) -> list[tuple[str, list[Any]]]:
    """Rows grouped by node, call site or process, groups and rows sorted by ``sort``."""
    key = {"node": "node_id", "callsite": "call_site", "process": "process"}.get(by)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r[key]) if key else "all", []).append(r)
    row_key = {
        "size": lambda r: (-r["size"], r["object_id"]),
        "count": lambda r: (-len(r["held_by"]), r["object_id"]),
        "object": lambda r: r["object_id"],
    }[sort]
    for members in groups.values():
        members.sort(key=row_key)
    if sort == "object":
        return sorted(groups.items())
    if sort == "count":
        return sorted(groups.items(), key=lambda g: (-len(g[1]), g[0]))
    return sorted(groups.items(), key=lambda g: (-_owned_bytes(g[1]), g[0]))


def _owned_bytes(rows: list[dict[str, Any]]) -> int:
    return sum(r["size"] for r in rows if r["owner"])


def cmd_memory(args: argparse.Namespace) -> int:
    target = common.target(args)
    # Asked first: an address that does not answer, or a wrong token, is said as such.
    status_report(target.address, target.token)
    if not target.session_dir:
        raise access.CommandFailed(
            f"the cluster at {target.address} has no session folder on this machine: run "
            "`freight memory` on one of its nodes (it asks this machine's processes)."
        )
    if target.token != read_token_file(target.session_dir):
        raise access.AccessDenied(
            "`freight memory` asks the cluster's processes over their own sockets, which take "
            "the admin token only, and FREIGHT_TOKEN is another (the read-only token?). Unset "
            "it to use the session's admin token."
        )
    rows = memory_rows(target.session_dir, target.token)
    warnings = [mark_spilled(rows, target.address)] if rows else []
    warnings = [w for w in warnings if w]
    groups = group_rows(rows, args.group_by, args.sort_by)
    fmt = common.chosen(args)
    if common.is_structured(fmt):
        items = [{"group": g, "owned_bytes": _owned_bytes(rs), "objects": rs} for g, rs in groups]
        common.dump(
            common.envelope(
                "object_references",
                rows if args.group_by == "none" else items,
                group_by=args.group_by,
                owned_bytes=_owned_bytes(rows),
                warnings=warnings,
            ),
            fmt,
        )
        return 0
    for warning in warnings:
        print(f"freight memory: warning: {warning}", file=sys.stderr)
    console = common.console()
    for name, members in groups:
        title = f"{args.group_by} {name}: " if args.group_by != "none" else ""
        table = Table(
            title=f"{title}{len(members)} reference(s), {_gib(_owned_bytes(members))} owned"
        )
        for col in ("object", "size", "where", "process", "role", "reference type", "call site"):
            table.add_column(col)
        for r in members:
            table.add_row(
                r["object_id"][:20],
                _gib(r["size"]),
                r["where"],
                r["process"],
                "owner" if r["owner"] else "borrower",
                ", ".join(r["reference_types"]),
                r["call_site"],
            )
        console.print(table)
    owned = [r for r in rows if r["owner"]]
    spilled = [r for r in owned if r["where"] == SPILLED]
    print(
        f"total owned: {_gib(_owned_bytes(rows))} in {len(owned)} object(s)"
        + (f", {_gib(_owned_bytes(spilled))} of it in {len(spilled)} spilled" if spilled else "")
    )
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("memory", help="every live object: size, owner, what keeps it alive")
    common.add_address_option(p)
    p.add_argument("--group-by", choices=GROUPS, default="node")
    p.add_argument("--sort-by", choices=SORTS, default="size")
    common.add_output_option(p)
    p.set_defaults(func=cmd_memory)
