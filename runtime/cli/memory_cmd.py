"""`freight memory`: every live object reference, who holds it and why, grouped and sorted.

Every alive node's agent asks its drivers and workers over their owner sockets what they refer
to (their reference tables: local references, pending task arguments, containing objects,
borrowers, pins; the ``Memory`` RPC), so the answer is exact for the whole cluster. Where an
object lies comes from the owner ("inline", "shared memory"), and the stores (through the state
API) say which objects are spilled to disk now. A node that does not answer is named in a
warning; the rest is printed and the exit code is 5 (partial).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.table import Table

from freight.client import access
from freight.client.memory import cluster_rows

from . import common
from .status import _gib

GROUPS = ("node", "callsite", "process", "none")
SPILLED = "spilled to disk"
SPILLED_LIMIT = 1_000_000  # spilled objects asked for (the state API pages through them)
SORTS = ("size", "count", "object")


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
    rows, partial = cluster_rows(target)
    spilled_warning = mark_spilled(rows, target.address) if rows else ""
    warnings = [*partial, *([spilled_warning] if spilled_warning else [])]
    groups = group_rows(rows, args.group_by, args.sort_by)
    for warning in warnings:  # also with -o json: the envelope is for scripts, this for people
        print(f"freight memory: warning: {warning}", file=sys.stderr)
    fmt = common.chosen(args)
    if common.is_structured(fmt):
        items = [{"group": g, "owned_bytes": _owned_bytes(rs), "objects": rs} for g, rs in groups]
        common.dump(
            common.envelope(
                "object_references",
                rows if args.group_by == "none" else items,
                group_by=args.group_by,
                owned_bytes=_owned_bytes(rows),
                partial=bool(partial),
                warnings=warnings,
            ),
            fmt,
        )
        return access.EXIT_PARTIAL if partial else 0
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
    return access.EXIT_PARTIAL if partial else 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "memory", help="every live object of the cluster: size, owner, what keeps it alive"
    )
    common.add_address_option(p)
    p.add_argument("--group-by", choices=GROUPS, default="node")
    p.add_argument("--sort-by", choices=SORTS, default="size")
    common.add_output_option(p)
    p.set_defaults(func=cmd_memory)
